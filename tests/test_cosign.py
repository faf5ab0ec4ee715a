"""Cosign key-based signature verification against signatures pushed to a real docker-registry."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from reconciler.oci import reference
from reconciler.registry.cosign import InvalidKey, InvalidSignature, check_signature, load_public_key, verify
from reconciler.registry.errors import SignatureRefused
from reconciler.oci.digest import Digest
from reconciler.oci.manifest import parse
from reconciler.oci.referrer import FoundBy
from tests.harness import cosign
from tests.harness.images import OCI_CONFIG, OCI_MANIFEST
from tests.harness.rawhttp import RawRegistry
from tests.helpers_clients import registries, run


@pytest.fixture(scope="module")
def key_a():
    return cosign.new_key()


@pytest.fixture(scope="module")
def key_b():
    return cosign.new_key()


@pytest.fixture
def public_key_a(key_a, tmp_path):
    return load_public_key(cosign.write_public_key(key_a, tmp_path / "cosign.pub"))


@pytest.fixture
def signed_image(push_image, plain_registry):
    """``signed_image(*signatures)``: a fresh image whose ``.sig`` tag holds ``signatures(digest)``,
    each a function of the image's digest. Returns (image, .sig manifest digest)."""

    def make(*signatures):
        image = push_image("oci")
        with RawRegistry(plain_registry) as raw:
            sig_manifest = cosign.push_signatures(
                raw, image.repo, image.digest, [signature(image.digest) for signature in signatures]
            )
        return image, sig_manifest

    return make


def verified(image, key) -> Digest:
    async def main() -> Digest:
        async with registries() as regs:
            repository = regs.repository(reference.parse(image.ref).repository)
            manifest = await repository.get_manifest(cosign.signature_tag(image.digest))
            await verify(repository, manifest, Digest.parse(image.digest), key)
            return manifest.digest

    return run(main())


def refusal(image, key) -> str:
    with pytest.raises(SignatureRefused) as refused:
        verified(image, key)
    return str(refused.value)


# -- verify against the registry ----------------------------------------------------------------


def test_signature_by_the_key_is_accepted_and_its_manifest_named(signed_image, key_a, public_key_a):
    image, sig_manifest = signed_image(lambda digest: cosign.signature_by(key_a, digest))
    assert verified(image, public_key_a) == Digest.parse(sig_manifest)


def test_one_valid_signature_among_others_is_enough(signed_image, key_a, key_b, public_key_a):
    image, sig_manifest = signed_image(
        lambda digest: cosign.signature_by(key_b, digest), lambda digest: cosign.signature_by(key_a, digest)
    )
    assert verified(image, public_key_a) == Digest.parse(sig_manifest)


def test_signature_by_another_key_is_refused(signed_image, key_b, public_key_a):
    image, _ = signed_image(lambda digest: cosign.signature_by(key_b, digest))
    assert refusal(image, public_key_a) == (
        "no valid cosign signature: 1 checked, the first: signature does not verify with the key"
    )


def test_payload_for_another_digest_is_refused(signed_image, key_a, public_key_a):
    image, _ = signed_image(lambda digest: cosign.signature_by(key_a, digest, signs=cosign.OTHER_DIGEST))
    assert refusal(image, public_key_a) == (
        f"no valid cosign signature: 1 checked, the first: payload signs {cosign.OTHER_DIGEST} not {image.digest}"
    )


def test_tampered_payload_is_refused(signed_image, key_a, public_key_a):
    """The payload names the right digest, but it is not the payload the key signed."""
    image, _ = signed_image(lambda digest: cosign.signature_by(key_a, digest, tampered=True))
    assert refusal(image, public_key_a) == (
        "no valid cosign signature: 1 checked, the first: signature does not verify with the key"
    )


def test_refusal_counts_every_signature_and_names_the_first_failure(signed_image, key_a, key_b, public_key_a):
    image, _ = signed_image(
        lambda digest: cosign.signature_by(key_a, digest, signs=cosign.OTHER_DIGEST),
        lambda digest: cosign.signature_by(key_b, digest),
        lambda digest: cosign.Signature(cosign.payload(digest), None),
    )
    assert refusal(image, public_key_a) == (
        f"no valid cosign signature: 3 checked, the first: payload signs {cosign.OTHER_DIGEST} not {image.digest}"
    )


def test_layer_without_signature_annotation_is_refused(signed_image, public_key_a):
    image, _ = signed_image(lambda digest: cosign.Signature(cosign.payload(digest), None))
    assert refusal(image, public_key_a) == (
        "no valid cosign signature: 1 checked, the first: no dev.cosignproject.cosign/signature annotation"
    )


def test_signature_manifest_without_simple_signing_layer_is_refused(signed_image, public_key_a):
    image, _ = signed_image()
    assert refusal(image, public_key_a) == "no cosign signature (no simple signing layer)"


def test_signature_tag_follows_the_spec():
    digest = "sha256:" + "97fc222cee7991b5b061d4d4afdb5f3428fcb0c9054e1690313786befa1e4e36"
    assert FoundBy.COSIGN_SIGNATURE.tag(Digest.parse(digest)) == (
        "sha256-97fc222cee7991b5b061d4d4afdb5f3428fcb0c9054e1690313786befa1e4e36.sig"
    )


# -- one signature ----------------------------------------------------------------------------

DIGEST = Digest.parse("sha256:" + "ab" * 32)


def test_valid_signature_passes(key_a, public_key_a):
    signature = cosign.signature_by(key_a, str(DIGEST))
    assert check_signature(signature.payload, signature.signature, DIGEST, public_key_a) is None


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda text: text[:-4] + "!!!!", "signature is not valid base64"),
        (lambda text: text + "\n", "signature is not valid base64"),
        (lambda text: "", "signature does not verify with the key"),
        (lambda text: text[:20], "signature does not verify with the key"),
    ],
)
def test_mangled_signature_is_refused(key_a, public_key_a, mangle, why):
    signature = cosign.signature_by(key_a, str(DIGEST))
    with pytest.raises(InvalidSignature, match=f"^{why}$"):
        check_signature(signature.payload, mangle(signature.signature), DIGEST, public_key_a)


@pytest.mark.parametrize(
    "payload",
    [
        cosign.payload(str(DIGEST), kind="atomic container signature"),
        cosign.payload(str(DIGEST)).replace(b"docker-manifest-digest", b"Docker-manifest-digest"),
        cosign.payload(str(DIGEST)).replace(b'"type"', b'"extra":1,"type"'),
        cosign.payload(str(DIGEST)).replace(  # the last one would name DIGEST
            b'"image":{', b'"image":{"docker-manifest-digest":"%s",' % cosign.OTHER_DIGEST.encode()
        ),
        cosign.payload("sha256:abc"),
        b"[]",
        b"not json",
        b"[" * 10_000 + b"]" * 10_000,
        cosign.payload(str(DIGEST)).replace(b"null", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
    ],
    ids=["atomic-type", "capitalized-member", "unknown-critical-member", "repeated-member", "bad-digest",
         "array", "not-json", "nested-10000-deep", "optional-nested-10000-deep"],
)
def test_validly_signed_payload_that_is_not_simple_signing_is_refused(key_a, public_key_a, payload):
    with pytest.raises(InvalidSignature, match="^payload is not a cosign simple signing payload$"):
        check_signature(payload, cosign.sign(key_a, payload), DIGEST, public_key_a)


def test_optional_claims_are_accepted(key_a, public_key_a):
    payload = cosign.payload(str(DIGEST)).replace(b'"optional":null', b'"optional":{"creator":"ci","n":1}')
    assert check_signature(payload, cosign.sign(key_a, payload), DIGEST, public_key_a) is None


# -- the key file -----------------------------------------------------------------------------


def test_public_key_is_loaded(key_a, tmp_path):
    loaded = load_public_key(cosign.write_public_key(key_a, tmp_path / "cosign.pub"))
    assert loaded.public_numbers() == key_a.public_key().public_numbers()


@pytest.mark.parametrize(
    ("write", "why"),
    [
        (None, "no such file"),
        (lambda path: path.write_text("not a key\n"), "not a PEM public key"),
        (lambda path: path.write_bytes(b"\xff\xfe"), "not a PEM public key"),
        (lambda path: path.write_bytes(cosign.new_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
         "not a PEM public key"),
        (lambda path: cosign.write_public_key(rsa.generate_private_key(65537, 2048), path),
         "an RSA key, not ECDSA P-256"),
        (lambda path: cosign.write_public_key(cosign.new_key(ec.SECP384R1()), path),
         "an ECDSA secp384r1 key, not P-256"),
        (lambda path: cosign.write_public_key(ed25519.Ed25519PrivateKey.generate(), path),
         "not an ECDSA P-256 key"),
        (lambda path: path.mkdir(), "cannot be read: Is a directory"),
    ],
    ids=["missing", "not-pem", "not-utf8", "private-key", "rsa", "p384", "ed25519", "directory"],
)
def test_unfit_key_file_is_refused_without_naming_it(tmp_path, write, why):
    path = tmp_path / "secret-name.pub"
    if write:
        write(path)
    with pytest.raises(InvalidKey) as refused:
        load_public_key(path)
    assert str(refused.value) == why
    assert "secret-name" not in str(refused.value)


def test_layer_annotations_are_read_and_a_null_map_is_none():
    """Go registries store ``"annotations": null`` (a nil map); it must not make a manifest malformed."""
    def layer(annotations):
        return {"mediaType": cosign.SIMPLE_SIGNING, "digest": str(DIGEST), "size": 1, "annotations": annotations}

    data = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": str(DIGEST), "size": 1, "annotations": None},
        "layers": [layer({cosign.SIGNATURE_ANNOTATION: "c2ln"}), layer(None)],
    }).encode()
    manifest = parse(data, OCI_MANIFEST, Digest.of(data))
    assert [layer.annotations for layer in manifest.layers()] == [{cosign.SIGNATURE_ANNOTATION: "c2ln"}, {}]
    assert [blob.digest for blob in manifest.blobs()] == [DIGEST] * 3
