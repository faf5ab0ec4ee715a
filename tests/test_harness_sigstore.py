"""The private Sigstore harness (issue 23): its bundles, made by sigstore-js and checked by
@sigstore/verify as they are made, verify with sigstore-python offline against the trusted
root it writes, for the right identity only; a real cosign bundle verifies against its
public-good root. Offline and seeded; these tests check the fixtures, not the product.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import json
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from sigstore.errors import VerificationError
from sigstore.models import Bundle, InvalidBundle, TrustedRoot
from sigstore.verify import Verifier, policy

from tests.harness import sigstore as harness
from tests.harness.sigstore import PrivateSigstore, SignRequest, bundle_statement, statement, tamper_payload

IMAGE = hashlib.sha256(b"image").hexdigest()
OTHER = hashlib.sha256(b"other image").hexdigest()
WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0.0"
GITHUB = harness.GITHUB_ISSUER
EMAIL = "dev@example.com"
EMAIL_ISSUER = "https://accounts.example.com"
COSIGN_IDENTITY = harness.COSIGN_IDENTITY
COSIGN_ISSUER = harness.COSIGN_ISSUER


@pytest.fixture(scope="module")
def private() -> tuple[PrivateSigstore, dict[str, bytes]]:
    """One PrivateSigstore, its bundles made in one Node run."""
    sigstore = PrivateSigstore("test-harness-sigstore")
    key = sigstore.signing_key()
    made = sigstore.sign_many(
        [
            SignRequest(statement(IMAGE), identity=WORKFLOW, issuer=GITHUB),
            SignRequest(statement(IMAGE), identity=EMAIL, issuer=EMAIL_ISSUER, tsa=True),
            SignRequest(statement(OTHER), identity=WORKFLOW, issuer=GITHUB),
            SignRequest(statement(IMAGE), key=key, tlog=True),
            SignRequest(statement(IMAGE), key=key, tlog=False),
            SignRequest(statement(IMAGE), key=key, tlog=True, tsa=True),
        ]
    )
    names = ["keyless", "keyless_tsa", "other_digest", "key_tlog", "key_only", "key_tlog_tsa"]
    return sigstore, dict(zip(names, made))


@pytest.fixture(scope="module")
def verifier(private, tmp_path_factory) -> Verifier:
    path = private[0].write_trusted_root(tmp_path_factory.mktemp("root") / "trusted_root.json")
    return Verifier(trusted_root=TrustedRoot.from_file(str(path)))


def verify(verifier: Verifier, bundle: bytes, identity: str, issuer: str) -> dict:
    payload_type, payload = verifier.verify_dsse(
        Bundle.from_json(bundle), policy.Identity(identity=identity, issuer=issuer)
    )
    assert payload_type == harness.IN_TOTO_PAYLOAD_TYPE
    return json.loads(payload)


# ---- keyless bundles with sigstore-python ------------------------------------------


def test_keyless_bundle_verifies_for_its_identity_and_names_the_image(private, verifier):
    got = verify(verifier, private[1]["keyless"], WORKFLOW, GITHUB)
    assert got == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": harness.DEFAULT_NAME, "digest": {"sha256": IMAGE}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }


def test_email_identity_with_rfc3161_timestamp_verifies(private, verifier):
    bundle = json.loads(private[1]["keyless_tsa"])
    assert bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    verify(verifier, private[1]["keyless_tsa"], EMAIL, EMAIL_ISSUER)


@pytest.mark.parametrize(
    "identity, issuer",
    [
        ("https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0.1", GITHUB),
        ("https://github.com/acme/", GITHUB),
        (WORKFLOW, "https://accounts.google.com"),
    ],
    ids=["other-identity", "identity-prefix", "other-issuer"],
)
def test_wrong_identity_or_issuer_fails(private, verifier, identity, issuer):
    with pytest.raises(VerificationError):
        verify(verifier, private[1]["keyless"], identity, issuer)


def verifier_for(sigstore: PrivateSigstore, tmp_path: Path) -> Verifier:
    path = sigstore.write_trusted_root(tmp_path / "trusted_root.json")
    return Verifier(trusted_root=TrustedRoot.from_file(str(path)))


def test_bundle_from_another_ca_fails(private, verifier, tmp_path):
    stranger = PrivateSigstore("another private sigstore")
    bundle = stranger.sign_image(IMAGE, WORKFLOW, GITHUB)
    # it is sound under its own root...
    verify(verifier_for(stranger, tmp_path), bundle, WORKFLOW, GITHUB)
    # ...and refused under ours
    with pytest.raises(VerificationError):
        verify(verifier, bundle, WORKFLOW, GITHUB)


def test_tampered_payload_fails(private, verifier):
    with pytest.raises(VerificationError):
        verify(verifier, tamper_payload(private[1]["keyless"], OTHER), WORKFLOW, GITHUB)


def test_tampered_log_entry_fails(private, verifier):
    doc = json.loads(private[1]["keyless"])
    doc["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = str(
        int(doc["verificationMaterial"]["tlogEntries"][0]["integratedTime"]) + 60
    )
    with pytest.raises(VerificationError):
        verify(verifier, json.dumps(doc).encode(), WORKFLOW, GITHUB)


def _entry_edit(bundle: bytes, edit) -> bytes:
    doc = json.loads(bundle)
    edit(doc["verificationMaterial"]["tlogEntries"][0], doc["verificationMaterial"])
    return json.dumps(doc).encode()


def _zero_first_hash(entry, _):
    entry["inclusionProof"]["hashes"][0] = base64.b64encode(bytes(32)).decode()


def _other_checkpoint_origin(entry, _):
    checkpoint = entry["inclusionProof"]["checkpoint"]
    checkpoint["envelope"] = checkpoint["envelope"].replace(" - ", " - 1", 1)


@pytest.mark.parametrize(
    "edit",
    [
        lambda entry, _: entry.pop("inclusionProof"),
        lambda entry, _: entry["inclusionProof"].pop("checkpoint"),
        _zero_first_hash,
        _other_checkpoint_origin,
        lambda entry, _: entry.pop("inclusionPromise"),
        lambda _, material: material.__setitem__("tlogEntries", []),
        # a signing time after the 10-minute certificate expired
        lambda entry, _: entry.__setitem__("integratedTime", str(int(entry["integratedTime"]) + 3600)),
    ],
    ids=["no-inclusion-proof", "no-checkpoint", "wrong-proof-hash", "checkpoint-signature", "no-SET-no-TSA",
         "no-log-entry", "time-outside-cert"],
)
def test_sigstore_python_insists_on(private, verifier, edit):
    """What the harness must provide: a log entry with an inclusion proof, a checkpoint
    signed by the log, a timestamp (SET or RFC 3161), a time within the certificate's life."""
    with pytest.raises((VerificationError, InvalidBundle)):
        verify(verifier, _entry_edit(private[1]["keyless"], edit), WORKFLOW, GITHUB)


def test_rfc3161_timestamp_stands_in_for_the_set(private, verifier):
    bundle = _entry_edit(private[1]["keyless_tsa"], lambda entry, _: entry.pop("inclusionPromise"))
    verify(verifier, bundle, EMAIL, EMAIL_ISSUER)


def test_bundle_for_another_digest_verifies_but_names_that_digest(private, verifier):
    """sigstore-python does not look at the statement's subject: the product must."""
    got = verify(verifier, private[1]["other_digest"], WORKFLOW, GITHUB)
    assert [s["digest"]["sha256"] for s in got["subject"]] == [OTHER]
    assert bundle_statement(private[1]["other_digest"])["subject"][0]["digest"]["sha256"] != IMAGE


def test_bundles_of_separate_runs_verify_against_one_root(tmp_path):
    """One PrivateSigstore keeps its CA certificates and its log from run to run."""
    sigstore = PrivateSigstore("separate runs")
    first = sigstore.sign_image(IMAGE, WORKFLOW, GITHUB)
    second = sigstore.sign_image(OTHER, EMAIL, EMAIL_ISSUER, tsa=True)
    verifier = verifier_for(sigstore, tmp_path)
    verify(verifier, first, WORKFLOW, GITHUB)
    verify(verifier, second, EMAIL, EMAIL_ISSUER)
    indexes = [json.loads(b)["verificationMaterial"]["tlogEntries"][0]["logIndex"] for b in (first, second)]
    assert indexes == [str(sigstore.filler), str(sigstore.filler + 1)]


def test_signing_and_verifying_need_no_network(monkeypatch, tmp_path):
    """Every request of the harness goes to in-process interceptors, and sigstore-python
    verifies from the trusted root alone: a proxy on a closed port changes nothing."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sigstore = PrivateSigstore("offline")
    bundle = sigstore.sign_image(IMAGE, WORKFLOW, GITHUB, tsa=True)
    verify(verifier_for(sigstore, tmp_path), bundle, WORKFLOW, GITHUB)


class _IdentityPattern:
    """A policy of one's own (sigstore-python's VerificationPolicy protocol: verify(cert)
    raising VerificationError), searched in the SAN URIs as cosign's
    --certificate-identity-regexp is: sigstore-python has no regex policy."""

    def __init__(self, pattern: str):
        self.pattern = pattern

    def verify(self, cert: x509.Certificate) -> None:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if not any(re.search(self.pattern, uri) for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)):
            raise VerificationError(f"no identity matches {self.pattern}")


@pytest.mark.parametrize(
    "pattern, ok", [(r"^https://github\.com/acme/", True), (r"^https://github\.com/other/", False)]
)
def test_an_own_policy_combines_with_the_issuer(private, verifier, pattern, ok):
    combined = policy.AllOf([policy.OIDCIssuer(GITHUB), _IdentityPattern(pattern)])
    bundle = Bundle.from_json(private[1]["keyless"])
    if ok:
        verifier.verify_dsse(bundle, combined)
    else:
        with pytest.raises(VerificationError):
            verifier.verify_dsse(bundle, combined)


# ---- what the fixtures are made of ----------------------------------------------------


def test_keyless_bundle_has_the_shape_cosign_v3_writes(private):
    doc = json.loads(private[1]["keyless"])
    assert doc["mediaType"] == harness.BUNDLE_MEDIA_TYPE
    assert doc["dsseEnvelope"]["payloadType"] == harness.IN_TOTO_PAYLOAD_TYPE
    material = doc["verificationMaterial"]
    assert set(material) >= {"certificate", "tlogEntries"}
    (entry,) = material["tlogEntries"]
    assert entry["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    assert entry["inclusionPromise"]["signedEntryTimestamp"]
    proof = entry["inclusionProof"]
    assert int(proof["treeSize"]) > 1 and proof["hashes"], "a real inclusion proof, not a one-leaf tree"
    assert proof["checkpoint"]["envelope"].split("\n")[1] == proof["treeSize"]

    # Rekor's canonical dsse entry: hashes of envelope and payload, signature and verifier
    body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
    payload = base64.b64decode(doc["dsseEnvelope"]["payload"])
    assert set(body["spec"]) == {"envelopeHash", "payloadHash", "signatures"}
    assert body["spec"]["payloadHash"] == {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}
    assert base64.b64decode(entry["canonicalizedBody"]) == json.dumps(
        body, sort_keys=True, separators=(",", ":")
    ).encode()


def test_certificate_chain_and_fulcio_extensions(private):
    sigstore, bundles = private
    root = json.loads(sigstore.trusted_root_json())
    assert root["mediaType"] == harness.TRUSTED_ROOT_MEDIA_TYPE
    chain = [
        x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"]))
        for c in root["certificateAuthorities"][0]["certChain"]["certificates"]
    ]
    intermediate, ca_root = chain
    assert intermediate.issuer == ca_root.subject != intermediate.subject
    assert intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    leaf = x509.load_der_x509_certificate(
        base64.b64decode(json.loads(bundles["keyless"])["verificationMaterial"]["certificate"]["rawBytes"])
    )
    assert leaf.issuer == intermediate.subject
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    ) == [WORKFLOW]
    assert leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")).value.value == (
        GITHUB.encode()
    )
    assert GITHUB.encode() in leaf.extensions.get_extension_for_oid(
        x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
    ).value.value
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CODE_SIGNING]
    )
    scts = leaf.extensions.get_extension_for_oid(ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS).value
    ct_key = base64.b64decode(root["ctlogs"][0]["publicKey"]["rawBytes"])
    assert [s.log_id for s in scts] == [hashlib.sha256(ct_key).digest()]


def test_same_seed_same_keys(private):
    again = json.loads(PrivateSigstore("test-harness-sigstore").trusted_root_json())
    first = json.loads(private[0].trusted_root_json())
    for part in ("tlogs", "ctlogs"):
        assert again[part] == first[part]
    assert again["certificateAuthorities"][0]["subject"] == first["certificateAuthorities"][0]["subject"]


def test_trusted_root_without_tsa(tmp_path):
    """The signed entry timestamp alone establishes the signing time."""
    sigstore = PrivateSigstore("no tsa", tsa_in_root=False)
    bundle = sigstore.sign_image(IMAGE, WORKFLOW, GITHUB)
    assert json.loads(sigstore.trusted_root_json())["timestampAuthorities"] == []
    verify(verifier_for(sigstore, tmp_path), bundle, WORKFLOW, GITHUB)
    with pytest.raises(ValueError):
        sigstore.sign_image(IMAGE, WORKFLOW, GITHUB, tsa=True)


# ---- key-signed bundles --------------------------------------------------------------


def _dsse_signature_checks(bundle: bytes, public_key: ec.EllipticCurvePublicKey) -> None:
    envelope = json.loads(bundle)["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    kind = envelope["payloadType"].encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)
    (sig,) = envelope["signatures"]
    public_key.verify(base64.b64decode(sig["sig"]), pae, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("name, logged", [("key_tlog", True), ("key_only", False), ("key_tlog_tsa", True)])
def test_key_signed_bundle(private, name, logged):
    sigstore, bundles = private
    doc = json.loads(bundles[name])
    material = doc["verificationMaterial"]
    key_der = sigstore.signing_key().public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert "certificate" not in material
    assert material["publicKey"]["hint"] == base64.b64encode(hashlib.sha256(key_der).digest()).decode()
    assert bool(material.get("timestampVerificationData", {}).get("rfc3161Timestamps")) is (name == "key_tlog_tsa")
    assert bool(material.get("tlogEntries")) is logged
    key = sigstore.signing_key().public_key()
    _dsse_signature_checks(bundles[name], key)
    with pytest.raises(Exception):
        _dsse_signature_checks(tamper_payload(bundles[name], OTHER), key)
    # sigstore-python loads only bundles with a certificate (the product checks these itself)
    with pytest.raises(InvalidBundle):
        Bundle.from_json(bundles[name])
    if logged:
        (entry,) = material["tlogEntries"]
        body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
        (signature,) = body["spec"]["signatures"]
        assert base64.b64decode(signature["verifier"]) == key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # the signed entry timestamp, over the canonical entry, with the log's key
        signed = json.dumps(
            {
                "body": entry["canonicalizedBody"],
                "integratedTime": int(entry["integratedTime"]),
                "logID": base64.b64decode(entry["logId"]["keyId"]).hex(),
                "logIndex": int(entry["logIndex"]),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        sigstore.rekor_key().verify(
            base64.b64decode(entry["inclusionPromise"]["signedEntryTimestamp"]), signed, ec.ECDSA(hashes.SHA256())
        )


# ---- a real bundle from cosign's test data ------------------------------------------------


def test_cosign_public_good_bundle_verifies_offline():
    verifier = Verifier(trusted_root=TrustedRoot.from_file(str(harness.COSIGN_TRUSTED_ROOT)))
    bundle = harness.COSIGN_BUNDLE.read_bytes()
    got = verify(verifier, bundle, COSIGN_IDENTITY, COSIGN_ISSUER)
    assert [s["digest"]["sha256"] for s in got["subject"]] == [harness.EMPTY_IMAGE_DIGEST]
    with pytest.raises(VerificationError):
        verify(verifier, bundle, "someone@example.com", COSIGN_ISSUER)


def test_cosign_bundle_verifies_with_the_root_sigstore_python_ships():
    """The product's default root: the public-good trusted_root.json in sigstore-python's
    package, read as a file (no TUF)."""
    shipped = importlib.resources.files("sigstore") / "_store" / "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
    verifier = Verifier(trusted_root=TrustedRoot.from_file(str(shipped / "trusted_root.json")))
    verify(verifier, harness.COSIGN_BUNDLE.read_bytes(), COSIGN_IDENTITY, COSIGN_ISSUER)


def test_cosign_bundle_names_the_rebuilt_empty_image():
    assert len(harness.EMPTY_IMAGE_MANIFEST) == 264
    assert hashlib.sha256(harness.EMPTY_IMAGE_MANIFEST).hexdigest() == harness.EMPTY_IMAGE_DIGEST
    (subject,) = bundle_statement(harness.COSIGN_BUNDLE.read_bytes())["subject"]
    assert subject["digest"] == {"sha256": harness.EMPTY_IMAGE_DIGEST}


# ---- the harness itself --------------------------------------------------------------------


def test_missing_node_modules_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(harness, "SIGSTORE_JS", tmp_path)
    with pytest.raises(harness.SigstoreHarnessError, match=r"bash scripts/dev setup"):
        PrivateSigstore("missing").trusted_root_json()
