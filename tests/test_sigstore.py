"""verify_bundle (issue 23): Sigstore bundles made by sigstore-js against a private, offline
Sigstore (tests/harness/sigstore.py) and one real bundle of cosign's, verified keyless by
sigstore-python or with a key, their statement's subject checked against the image digest;
every refusal one line. Offline: signing runs Node once per fixture, verifying reads files.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Callable

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler.oci.digest import Digest
from reconciler.oci.mediatypes import BUNDLE_MEDIA_TYPE
from reconciler.oci.signature import SignatureProof
from reconciler.registry import sigstore as module
from reconciler.registry.errors import SignatureRefused
from reconciler.registry.sigstore import Trust, key_fingerprint, verify_bundle
from tests.harness import sigstore as harness
from tests.harness.sigstore import (
    COSIGN_SIGN_PREDICATE, PrivateSigstore, SignRequest, statement, tamper_payload,
)

IMAGE = Digest.of(b"image")
OTHER = Digest.of(b"other image")
WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0.0"
GITHUB = harness.GITHUB_ISSUER
EMAIL = "dev@example.com"
EMAIL_ISSUER = "https://accounts.example.com"
EMPTY_IMAGE = Digest("sha256", harness.EMPTY_IMAGE_DIGEST)


@pytest.fixture(scope="module")
def private() -> PrivateSigstore:
    return PrivateSigstore("test-sigstore")


@pytest.fixture(scope="module")
def bundles(private) -> dict[str, bytes]:
    """Every bundle of the private Sigstore the tests use, made in one Node run."""
    key = private.signing_key()
    made = {
        "keyless": SignRequest(statement(IMAGE.hex), identity=WORKFLOW, issuer=GITHUB),
        "keyless_tsa": SignRequest(statement(IMAGE.hex), identity=EMAIL, issuer=EMAIL_ISSUER, tsa=True),
        "keyless_other": SignRequest(statement(OTHER.hex), identity=WORKFLOW, issuer=GITHUB),
        "keyless_attestation": SignRequest(
            statement(IMAGE.hex, predicate_type="https://slsa.dev/provenance/v1"), identity=WORKFLOW, issuer=GITHUB
        ),
        "key_logged": SignRequest(statement(IMAGE.hex), key=key, tlog=True),
        "key_only": SignRequest(statement(IMAGE.hex), key=key, tlog=False),
        "key_other": SignRequest(statement(OTHER.hex), key=key, tlog=False),
    }
    return dict(zip(made, private.sign_many(list(made.values()))))


@pytest.fixture(scope="module")
def stranger_bundle() -> bytes:
    """A sound bundle for IMAGE from another Sigstore, whose CA our trusted root does not hold."""
    return PrivateSigstore("a stranger's sigstore").sign_image(IMAGE.hex, WORKFLOW, GITHUB)


@pytest.fixture(scope="module")
def root(private, bundles, tmp_path_factory) -> Path:
    return private.write_trusted_root(tmp_path_factory.mktemp("sigstore") / "trusted_root.json")


@pytest.fixture(scope="module")
def workflow(root) -> Trust:
    return Trust(issuer=GITHUB, identity=WORKFLOW, trusted_root=root)


@pytest.fixture(scope="module")
def key(private) -> ec.EllipticCurvePublicKey:
    return private.signing_key().public_key()


def refusal(bundle: bytes, digest: Digest, trust: Trust) -> str:
    with pytest.raises(SignatureRefused) as refused:
        verify_bundle(bundle, digest, trust)
    message = str(refused.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def edited(bundle: bytes, edit: Callable[[dict], object]) -> bytes:
    document = json.loads(bundle)
    edit(document)
    return json.dumps(document).encode()


def integrated_time(bundle: bytes) -> int:
    return int(json.loads(bundle)["verificationMaterial"]["tlogEntries"][0]["integratedTime"])


# ---- keyless -------------------------------------------------------------------------------


def test_keyless_bundle_proves_its_identity_issuer_and_logged_time(bundles, workflow):
    material = json.loads(bundles["keyless"])["verificationMaterial"]
    assert "timestampVerificationData" not in material or not material["timestampVerificationData"].get(
        "rfc3161Timestamps"), "the signed entry timestamp alone dates this bundle"
    assert verify_bundle(bundles["keyless"], IMAGE, workflow) == SignatureProof(
        identity=WORKFLOW, issuer=GITHUB, integrated_time=integrated_time(bundles["keyless"]),
        predicate_type=COSIGN_SIGN_PREDICATE,
    )


def test_email_identity_with_an_rfc3161_timestamp(bundles, root):
    trust = Trust(issuer=EMAIL_ISSUER, identity=EMAIL, trusted_root=root)
    proof = verify_bundle(bundles["keyless_tsa"], IMAGE, trust)
    assert (proof.identity, proof.issuer, proof.key) == (EMAIL, EMAIL_ISSUER, None)


def test_a_log_time_without_its_signed_promise_is_not_recorded(bundles, root):
    """Dated by the RFC 3161 timestamp alone, the entry's integratedTime is signed by nobody."""
    bundle = edited(bundles["keyless_tsa"],
                    lambda doc: doc["verificationMaterial"]["tlogEntries"][0].pop("inclusionPromise"))
    trust = Trust(issuer=EMAIL_ISSUER, identity=EMAIL, trusted_root=root)
    assert verify_bundle(bundle, IMAGE, trust).integrated_time is None


def test_any_predicate_type_counts_as_cosign_verify_has_it(bundles, workflow):
    assert verify_bundle(bundles["keyless_attestation"], IMAGE, workflow).identity == WORKFLOW


@pytest.mark.parametrize(
    "pattern, matches",
    [
        (r"^https://github\.com/acme/", True),
        (r"github\.com/acme/app/", True),
        (r"@refs/tags/v1\.0\.0$", True),
        (r"^https://github\.com/acme/app$", False),
        (r"^github\.com/acme/", False),
        (r"^https://github\.com/other/", False),
    ],
    ids=["anchored-start", "searched-not-matched", "anchored-end", "prefix-anchored-both-ends", "anchored-elsewhere",
         "other-owner"],
)
def test_identity_regexp_is_searched(bundles, root, pattern, matches):
    trust = Trust(issuer=GITHUB, identity_regexp=pattern, trusted_root=root)
    if matches:
        assert verify_bundle(bundles["keyless"], IMAGE, trust).identity == WORKFLOW
    else:
        assert refusal(bundles["keyless"], IMAGE, trust) == f'identity "{WORKFLOW}" does not match /{pattern}/'


def test_identity_regexp_still_requires_the_issuer(bundles, root):
    trust = Trust(issuer=EMAIL_ISSUER, identity_regexp="acme", trusted_root=root)
    assert refusal(bundles["keyless"], IMAGE, trust) == f'issuer "{GITHUB}" is not "{EMAIL_ISSUER}"'


def test_identity_regexp_that_is_no_regexp(bundles, root):
    trust = Trust(issuer=GITHUB, identity_regexp="(acme", trusted_root=root)
    assert refusal(bundles["keyless"], IMAGE, trust).startswith("verify: identityRegexp /(acme/: ")


@pytest.mark.parametrize("identity", [WORKFLOW + "x", "https://github.com/acme/", WORKFLOW.upper()],
                         ids=["longer", "prefix", "case"])
def test_wrong_identity(bundles, root, identity):
    trust = Trust(issuer=GITHUB, identity=identity, trusted_root=root)
    assert refusal(bundles["keyless"], IMAGE, trust) == f'identity "{WORKFLOW}" is not "{identity}"'


def test_wrong_issuer(bundles, root):
    trust = Trust(issuer="https://accounts.google.com", identity=WORKFLOW, trusted_root=root)
    assert refusal(bundles["keyless"], IMAGE, trust) == f'issuer "{GITHUB}" is not "https://accounts.google.com"'


def test_certificate_of_a_ca_outside_the_trusted_root(stranger_bundle, workflow):
    assert refusal(stranger_bundle, IMAGE, workflow).startswith("certificate not issued by a CA of the trusted root")


def test_tampered_payload(bundles, workflow):
    message = refusal(tamper_payload(bundles["keyless"], OTHER.hex), OTHER, workflow)
    assert message.startswith("signature does not verify with the certificate's key")


def test_tampered_log_entry(bundles, workflow):
    def later(doc):
        entry = doc["verificationMaterial"]["tlogEntries"][0]
        entry["integratedTime"] = str(int(entry["integratedTime"]) + 60)

    assert refusal(edited(bundles["keyless"], later), IMAGE, workflow).startswith("transparency log entry invalid: ")


def test_keyless_bundle_for_another_digest(bundles, workflow):
    assert refusal(bundles["keyless_other"], IMAGE, workflow) == f"signed digest {OTHER} is another image's"


def test_keyless_bundle_when_only_a_key_is_trusted(bundles, key):
    assert refusal(bundles["keyless"], IMAGE, Trust(key=key)) == (
        f"signed keyless, but verify: asks for the key {key_fingerprint(key)}"
    )


def test_keyless_identity_without_an_issuer_is_refused(bundles, root):
    assert refusal(bundles["keyless"], IMAGE, Trust(identity=WORKFLOW, trusted_root=root)) == (
        "verify: names a keyless identity but no issuer"
    )


def test_a_trusted_root_that_cannot_be_read(bundles, tmp_path):
    (tmp_path / "root.json").write_text("{}")
    for path in (tmp_path / "root.json", tmp_path / "absent.json"):
        trust = Trust(issuer=GITHUB, identity=WORKFLOW, trusted_root=path)
        assert refusal(bundles["keyless"], IMAGE, trust).startswith(f"trusted root {path} cannot be used: ")


def test_the_verifier_of_a_root_is_loaded_once(bundles, workflow, monkeypatch):
    from sigstore.models import TrustedRoot

    loads = []
    original = TrustedRoot.from_file
    monkeypatch.setattr(TrustedRoot, "from_file", lambda path: loads.append(path) or original(path))
    module._verifier.cache_clear()
    for _ in range(3):
        verify_bundle(bundles["keyless"], IMAGE, workflow)
    assert loads == [str(workflow.trusted_root)]


# ---- cosign's real bundle, signed by the public-good Sigstore -----------------------------


@pytest.mark.parametrize("trusted_root", [harness.COSIGN_TRUSTED_ROOT, None], ids=["cosign's-root", "shipped-root"])
def test_cosign_public_good_bundle(trusted_root):
    trust = Trust(issuer=harness.COSIGN_ISSUER, identity=harness.COSIGN_IDENTITY, trusted_root=trusted_root)
    bundle = harness.COSIGN_BUNDLE.read_bytes()
    assert verify_bundle(bundle, EMPTY_IMAGE, trust) == SignatureProof(
        identity=harness.COSIGN_IDENTITY, issuer=harness.COSIGN_ISSUER, integrated_time=integrated_time(bundle),
        predicate_type="https://cosign.sigstore.dev/attestation/v1",
    )
    assert refusal(bundle, IMAGE, trust) == f"signed digest {EMPTY_IMAGE} is another image's"


def test_cosign_bundle_against_a_private_root(root):
    trust = Trust(issuer=harness.COSIGN_ISSUER, identity=harness.COSIGN_IDENTITY, trusted_root=root)
    message = refusal(harness.COSIGN_BUNDLE.read_bytes(), EMPTY_IMAGE, trust)
    assert message.startswith("certificate not issued by a CA of the trusted root")


# ---- signed with a key -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["key_logged", "key_only"])
def test_key_bundle_with_or_without_a_log_entry(bundles, key, name):
    assert bool(json.loads(bundles[name])["verificationMaterial"].get("tlogEntries")) is (name == "key_logged")
    assert verify_bundle(bundles[name], IMAGE, Trust(key=key)) == SignatureProof(
        key=key_fingerprint(key), predicate_type=COSIGN_SIGN_PREDICATE)


def test_key_bundle_log_entry_is_not_read(bundles, key):
    """The key alone decides: its log entry, verified by nobody, neither helps nor hinders."""
    bundle = edited(bundles["key_logged"],
                    lambda doc: doc["verificationMaterial"]["tlogEntries"][0].update(integratedTime="nonsense"))
    assert verify_bundle(bundle, IMAGE, Trust(key=key)).integrated_time is None


def test_key_fingerprint_is_the_digest_of_the_public_key_info(key):
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key_fingerprint(key) == str(Digest.of(der))


def test_key_bundle_with_another_key(bundles, private):
    other = private.signing_key("other").public_key()
    assert refusal(bundles["key_only"], IMAGE, Trust(key=other)) == (
        f"signature does not verify with the key {key_fingerprint(other)}"
    )


def test_key_bundle_tampered(bundles, key):
    message = refusal(tamper_payload(bundles["key_only"], OTHER.hex), OTHER, Trust(key=key))
    assert message.startswith("signature does not verify with the key")


def test_key_bundle_for_another_digest(bundles, key):
    assert refusal(bundles["key_other"], IMAGE, Trust(key=key)) == f"signed digest {OTHER} is another image's"


def test_key_bundle_when_a_keyless_identity_is_asked(bundles, workflow):
    assert refusal(bundles["key_only"], IMAGE, workflow) == (
        "signed with a key, but verify: asks for a keyless identity"
    )


def test_key_other_than_p256(bundles):
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    assert refusal(bundles["key_only"], IMAGE, Trust(key=p384)).startswith("verify: key is not ECDSA P-256")


@pytest.mark.parametrize("name", ["keyless", "key_only"])
def test_with_both_a_key_and_an_identity_either_form_satisfies(bundles, key, root, name):
    trust = Trust(key=key, issuer=GITHUB, identity=WORKFLOW, trusted_root=root)
    assert verify_bundle(bundles[name], IMAGE, trust).key == (key_fingerprint(key) if name == "key_only" else None)


# ---- the signed statement -----------------------------------------------------------------
# Key bundles signed here, over payloads of our choosing: what is tested is the reading of
# the statement, not the signature (sigstore-js's key bundles above cover that).

SIGNER = ec.derive_private_key(7, ec.SECP256R1())


def key_bundle(payload: bytes, payload_type: str = "application/vnd.in-toto+json") -> bytes:
    pae = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)
    signature = SIGNER.sign(pae, ec.ECDSA(hashes.SHA256()))
    return json.dumps({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": ""}},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": payload_type,
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
        },
    }).encode()


def test_own_key_bundle_verifies():
    assert verify_bundle(key_bundle(statement(IMAGE.hex)), IMAGE, Trust(key=SIGNER.public_key())).key


def test_statement_v01_with_the_image_among_several_subjects():
    payload = json.dumps({
        "_type": "https://in-toto.io/Statement/v0.1",
        "subject": [{"name": "other", "digest": {"sha256": OTHER.hex}}, {"name": "app", "digest": {"sha256": IMAGE.hex}}],
        "predicateType": "https://example.com/anything",
    }).encode()
    assert verify_bundle(key_bundle(payload), IMAGE, Trust(key=SIGNER.public_key())).key


def test_an_index_is_named_by_its_own_digest():
    index = Digest.of(b"an image index")
    assert verify_bundle(key_bundle(statement(index.hex)), index, Trust(key=SIGNER.public_key())).key
    assert refusal(key_bundle(statement(IMAGE.hex)), index, Trust(key=SIGNER.public_key())) == (
        f"signed digest {IMAGE} is another image's"
    )


def _statement_with(**members) -> bytes:
    document = {"_type": "https://in-toto.io/Statement/v1", "subject": [{"digest": {"sha256": IMAGE.hex}}],
                "predicateType": "x"}
    document.update(members)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "payload, payload_type, message",
    [
        (statement(IMAGE.hex), "application/json", 'payload type "application/json" is not application/vnd.in-toto+json'),
        (b"not json", None, "the signed payload is not JSON"),
        (b"\xff\xfe", None, "the signed payload is not JSON"),
        (b"[" * 100 + b"]" * 100, None, "the signed payload is not JSON"),
        (b"[]", None, "the signed payload is not an in-toto statement"),
        (_statement_with(_type="https://in-toto.io/Statement/v2"), None, "the signed payload is not an in-toto statement"),
        (_statement_with(_type=None), None, "the signed payload is not an in-toto statement"),
        (_statement_with(subject=None), None, "the signed statement has no subject list"),
        (_statement_with(subject={"digest": {"sha256": IMAGE.hex}}), None, "the signed statement has no subject list"),
        (_statement_with(subject=[]), None, "the signed statement names no sha256 digest"),
        (_statement_with(subject=["x", 5, None]), None, "the signed statement names no sha256 digest"),
        (_statement_with(subject=[{"digest": "sha256:" + IMAGE.hex}]), None, "the signed statement names no sha256 digest"),
        (_statement_with(subject=[{"digest": {"sha512": IMAGE.hex}}]), None, "the signed statement names no sha256 digest"),
        (_statement_with(subject=[{"digest": {"sha256": 5}}]), None, "the signed statement names no sha256 digest"),
        (_statement_with(subject=[{"digest": {"sha256": IMAGE.hex.upper()}}]), None,
         f"signed digest sha256:{IMAGE.hex.upper()} is another image's"),
        (_statement_with(subject=[{"digest": {"sha256": "sha256:" + IMAGE.hex}}]), None,
         f"signed digest sha256:sha256:{IMAGE.hex} is another image's"),
        (_statement_with(subject=[{"digest": {"sha256": "a\nb"}}]), None, "signed digest sha256:a b is another image's"),
        (_statement_with(subject=[{"digest": {"sha256": "f" * 10_000}}]), None,
         f"signed digest sha256:{'f' * 79}… is another image's"),
        (_statement_with(subject=[{"digest": {"sha256": OTHER.hex}}, {"digest": {"sha256": "x"}}]), None,
         f"signed digest {OTHER} (and 1 more) is another image's"),
    ],
    ids=["payload-type", "not-json", "not-utf8", "deep", "array", "type-v2", "type-null", "no-subject",
         "subject-object", "subject-empty", "subject-not-objects", "digest-string", "digest-sha512", "digest-number",
         "digest-uppercase", "digest-prefixed", "digest-lines", "digest-long", "other-digests"],
)
def test_statement_refused(payload, payload_type, message):
    bundle = key_bundle(payload, payload_type or "application/vnd.in-toto+json")
    assert refusal(bundle, IMAGE, Trust(key=SIGNER.public_key())) == message


# ---- hostile bundles ------------------------------------------------------------------------


def _envelope(edit):
    return lambda doc: edit(doc["dsseEnvelope"])


@pytest.mark.parametrize(
    "bundle, message",
    [
        (b"not json", "not a Sigstore bundle: not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b'{"a": "\xff"}', "not a Sigstore bundle: not JSON: 'utf-8' codec can't decode byte 0xff in position 7: "
                          "invalid start byte"),
        (b"", "not a Sigstore bundle: not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b'{"a":' * 70 + b"1" + b"}" * 70, "not a Sigstore bundle: not JSON: JSON nested deeper than 64 levels"),
        (b"[]", "not a Sigstore bundle: not a JSON object"),
        (b'"text"', "not a Sigstore bundle: not a JSON object"),
        (b"{}", "not a Sigstore bundle: mediaType is null"),
        (b'{"mediaType": 3}', "not a Sigstore bundle: mediaType is a number"),
        (b'{"mediaType": "application/json"}', 'not a Sigstore bundle: mediaType is "application/json"'),
        (b'{"mediaType": "a\\nb"}', 'not a Sigstore bundle: mediaType is "a b"'),
        (b'{"mediaType": "%s"}' % BUNDLE_MEDIA_TYPE.encode(), "not a Sigstore bundle: no verificationMaterial object"),
        (b'{"mediaType": "%s", "verificationMaterial": []}' % BUNDLE_MEDIA_TYPE.encode(),
         "not a Sigstore bundle: no verificationMaterial object"),
        (b'{"mediaType": "%s", "verificationMaterial": {}}' % BUNDLE_MEDIA_TYPE.encode(),
         "not a Sigstore bundle: verificationMaterial holds neither a public key nor a certificate, or both"),
    ],
    ids=["text", "not-utf8", "empty", "deep", "array", "string", "no-media-type", "media-type-number",
         "media-type-other", "media-type-lines", "no-material", "material-array", "material-empty"],
)
def test_not_a_bundle(bundle, message, workflow, key):
    for trust in (workflow, Trust(key=key)):
        assert refusal(bundle, IMAGE, trust) == message


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda doc: doc.pop("dsseEnvelope"), "bundle has no dsseEnvelope"),
        (lambda doc: doc.update(dsseEnvelope=[]), "bundle.dsseEnvelope is an array, not an object"),
        (_envelope(lambda env: env.pop("payload")), "dsseEnvelope has no payload"),
        (_envelope(lambda env: env.update(payload=5)), "dsseEnvelope.payload is a number, not a string"),
        (_envelope(lambda env: env.update(payload="%%%")), "dsseEnvelope.payload is not base64"),
        (_envelope(lambda env: env.update(payloadType=None)), "dsseEnvelope.payloadType is null, not a string"),
        (_envelope(lambda env: env.update(signatures={})), "dsseEnvelope.signatures is an object, not an array"),
        (_envelope(lambda env: env.update(signatures=[])), "the DSSE envelope holds 0 signatures, not one"),
        (_envelope(lambda env: env.update(signatures=["x"])), "the DSSE envelope holds 1 signatures, not one"),
        (_envelope(lambda env: env["signatures"].append(env["signatures"][0])),
         "the DSSE envelope holds 2 signatures, not one"),
        (_envelope(lambda env: env["signatures"][0].pop("sig")), "dsseEnvelope.signatures[0] has no sig"),
        (_envelope(lambda env: env["signatures"][0].update(sig=True)),
         "dsseEnvelope.signatures[0].sig is a boolean, not a string"),
        (_envelope(lambda env: env["signatures"][0].update(sig="not base64!")),
         "dsseEnvelope.signatures[0].sig is not base64"),
        (lambda doc: doc["verificationMaterial"].update(certificate={"rawBytes": ""}),
         "verificationMaterial holds neither a public key nor a certificate, or both"),
    ],
    ids=["no-envelope", "envelope-array", "no-payload", "payload-number", "payload-garbage", "type-null",
         "signatures-object", "no-signature", "signature-string", "two-signatures", "no-sig", "sig-boolean",
         "sig-garbage", "key-and-certificate"],
)
def test_hostile_key_bundle(bundles, key, edit, message):
    bundle = edited(bundles["key_only"], edit)
    assert refusal(bundle, IMAGE, Trust(key=key)) == f"not a Sigstore bundle: {message}"


def _first_entry(edit):
    return lambda doc: edit(doc["verificationMaterial"]["tlogEntries"][0])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda doc: doc["verificationMaterial"]["certificate"].update(rawBytes="!!!"), "not a Sigstore bundle: "),
        (lambda doc: doc["verificationMaterial"]["certificate"].update(rawBytes=base64.b64encode(b"0").decode()),
         "not a Sigstore bundle: "),
        (lambda doc: doc["verificationMaterial"].update(certificate=[]), "not a Sigstore bundle: "),
        (lambda doc: doc.update(extra=1), "not a Sigstore bundle: "),
        (lambda doc: doc.pop("dsseEnvelope"), "not a Sigstore bundle: "),
        (_envelope(lambda env: env.update(payload=5)), "not a Sigstore bundle: "),
        (_envelope(lambda env: env.update(signatures=[])), "not a Sigstore bundle: "),
        (_first_entry(lambda entry: entry.update(integratedTime="abc")), "not a Sigstore bundle: "),
        (_first_entry(lambda entry: entry.update(logIndex="99999999999999999999")), "not a Sigstore bundle: "),
        (_first_entry(lambda entry: entry.update(kindVersion={"kind": "dsse", "version": "9"})),
         "not a Sigstore bundle: "),
        (_first_entry(lambda entry: entry.pop("inclusionProof")), "not a Sigstore bundle: "),
        (_first_entry(lambda entry: entry["inclusionProof"].update(hashes=["AAAA"])),
         "transparency log entry invalid: "),
        (_first_entry(lambda entry: entry["inclusionProof"]["checkpoint"].update(envelope="x")),
         "transparency log entry invalid: "),
        (_first_entry(lambda entry: entry.update(canonicalizedBody=base64.b64encode(b"{}").decode())),
         "transparency log entry invalid: "),
        (lambda doc: doc["verificationMaterial"].update(
            timestampVerificationData={"rfc3161Timestamps": [{"signedTimestamp": "AAAA"}]}),
         "Sigstore verification failed: "),
    ],
    ids=["certificate-not-base64", "certificate-not-der", "certificate-array", "unknown-member", "no-envelope",
         "payload-number", "no-signature", "time-text", "index-huge", "entry-version", "no-inclusion-proof",
         "proof-hashes", "checkpoint-garbage", "body-other", "timestamp-garbage"],
)
def test_hostile_keyless_bundle(bundles, workflow, edit, message):
    assert refusal(edited(bundles["keyless"], edit), IMAGE, workflow).startswith(message)


# ---- cost ----------------------------------------------------------------------------------


def test_sigstore_python_is_imported_only_for_a_keyless_bundle(bundles, key, tmp_path):
    """Its import takes a quarter of a second: a run that verifies no keyless bundle skips it."""
    (tmp_path / "bundle.json").write_bytes(bundles["key_only"])
    (tmp_path / "key.pem").write_bytes(
        key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    script = f"""
import sys
from datetime import datetime
from pathlib import Path
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from reconciler.oci.digest import Digest
from reconciler.registry.sigstore import Trust, verify_bundle
path = Path({str(tmp_path)!r})
trust = Trust(key=load_pem_public_key((path / "key.pem").read_bytes()))
verify_bundle((path / "bundle.json").read_bytes(), Digest("sha256", {IMAGE.hex!r}), trust)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("sigstore", "pydantic")))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"


# ---- what a certificate says -----------------------------------------------------------------


def certificate_with(extensions: dict[str, bytes]):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = ec.derive_private_key(11, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(1).not_valid_before(datetime(2025, 1, 1)).not_valid_after(datetime(2026, 1, 1)))
    for oid, value in extensions.items():
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), False)
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize(
    "extensions, issuer",
    [
        ({module.FULCIO_ISSUER_V2: b"\x0c\x0bhttps://new", module.FULCIO_ISSUER_V1: b"https://old"}, "https://new"),
        ({module.FULCIO_ISSUER_V1: b"https://old"}, "https://old"),
        ({module.FULCIO_ISSUER_V2: b"not DER", module.FULCIO_ISSUER_V1: b"https://old"}, "https://old"),
        ({}, None),
    ],
    ids=["v2-first", "v1-alone", "v2-broken", "none"],
)
def test_the_issuer_a_proof_records(extensions, issuer):
    assert module._issuer(certificate_with(extensions)) == issuer


@pytest.mark.parametrize("predicate_type", ["x" * 501, "https://example.com/\nv1", ""], ids=["long", "newline", "empty"])
def test_a_predicate_type_the_lock_could_not_hold_readably_is_recorded_as_none(private, key, predicate_type):
    bundle = private.sign_many([SignRequest(statement(IMAGE.hex, predicate_type=predicate_type),
                                            key=private.signing_key(), tlog=False)])[0]

    assert verify_bundle(bundle, IMAGE, Trust(key=key)).predicate_type is None
