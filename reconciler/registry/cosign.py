"""Cosign's key-based image signatures, as its SIGNATURE_SPEC lays them out in a registry.

The signatures of ``repo@sha256:<hex>`` are the layers of the image manifest tagged
``sha256-<hex>.sig`` in the same repository. A layer of media type ``SIMPLE_SIGNING`` is a
simple signing payload naming the signed digest; its ``SIGNATURE_ANNOTATION`` holds the
base64 of an ASN.1 DER ECDSA signature, with SHA-256, over the payload's exact bytes.
Keyless signing in this form (Fulcio certificates, Rekor bundles in annotations) is not
verified: those annotations are ignored, so such a signature counts only if it also
verifies with the key. Finding the tag is referrers.find's (cosign's kinds among them).
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

import attrs
import cattrs
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from reconciler.oci import limits
from reconciler.oci.digest import Digest
from reconciler.oci.manifest import Descriptor, Manifest
from reconciler.registry.errors import SignatureRefused
from reconciler.registry.repository import RemoteRepository
from reconciler.files import Unusable, read_named

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"


class InvalidKey(ValueError):
    """A key file unfit for verifying; the message leaves naming the file to the caller."""


class InvalidSignature(ValueError):
    """One signature that does not vouch for the digest; the message says why in a few words."""


def load_public_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePublicKey:
    """A PEM (PKIX) public key, as ``cosign generate-key-pair`` writes; only ECDSA P-256 is taken."""
    try:
        text = read_named(path, not_text="not a PEM public key")
    except Unusable as error:
        raise InvalidKey(str(error)) from None
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidKey("not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        raise InvalidKey("an RSA key, not ECDSA P-256")
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidKey("not an ECDSA P-256 key")
    if not isinstance(key.curve, ec.SECP256R1):
        raise InvalidKey(f"an ECDSA {key.curve.name} key, not P-256")
    return key


def check_signature(payload: bytes, signature: str, digest: Digest, key: ec.EllipticCurvePublicKey) -> None:
    """Raise InvalidSignature unless ``signature`` is the key's over ``payload`` and the payload names ``digest``.

    The payload is parsed only once the signature holds, as simple signing requires.
    """
    try:
        der = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature("signature is not valid base64") from None
    try:
        key.verify(der, payload, ec.ECDSA(hashes.SHA256()))
    except _CryptoInvalidSignature:
        raise InvalidSignature("signature does not verify with the key") from None
    signed = _signed_digest(payload)
    if signed != digest:
        raise InvalidSignature(f"payload signs {signed} not {digest}")


async def verify(repository: RemoteRepository, manifest: Manifest, digest: Digest,
                 key: ec.EllipticCurvePublicKey) -> None:
    """Raise SignatureRefused unless a simple-signing layer of ``manifest`` (the ``.sig`` tag's)
    holds a signature of ``digest`` by ``key``; one among several suffices."""
    layers = [layer for layer in manifest.layers() if layer.media_type == SIMPLE_SIGNING]
    if not layers:
        raise SignatureRefused("no cosign signature (no simple signing layer)")
    first_failure: InvalidSignature | None = None
    for layer in layers:
        try:
            await _check_layer(repository, layer, digest, key)
        except InvalidSignature as failure:
            first_failure = first_failure or failure
        else:
            return
    raise SignatureRefused(f"no valid cosign signature: {len(layers)} checked, the first: {first_failure}")


async def _check_layer(
    repository: RemoteRepository, layer: Descriptor, digest: Digest, key: ec.EllipticCurvePublicKey
) -> None:
    signature = layer.annotations.get(SIGNATURE_ANNOTATION)
    if signature is None:
        raise InvalidSignature(f"no {SIGNATURE_ANNOTATION} annotation")
    check_signature(await repository.read_blob(layer), signature, digest, key)


# -- the simple signing payload ----------------------------------------------------------
# Parsed strictly, as its specification asks: an unknown member outside ``optional``, a
# wrong type or a repeated member refuses the payload.


@attrs.frozen
class _Identity:
    docker_reference: str  # cosign ignores it: the digest is what is signed


@attrs.frozen
class _Image:
    docker_manifest_digest: Digest


@attrs.frozen
class _Critical:
    identity: _Identity
    image: _Image
    type: str


@attrs.frozen
class _SimpleSigning:
    critical: _Critical
    optional: dict[str, Any] | None = None


def _exact_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _make_payload_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_structure_hook(str, _exact_str)
    converter.register_structure_hook(Digest, lambda value, _: Digest.parse(_exact_str(value, str)))
    renames = {
        _Identity: {"docker_reference": "docker-reference"},
        _Image: {"docker_manifest_digest": "docker-manifest-digest"},
    }
    for cls in (_Identity, _Image, _Critical, _SimpleSigning):
        overrides = {field: cattrs.gen.override(rename=name) for field, name in renames.get(cls, {}).items()}
        converter.register_structure_hook(
            cls, cattrs.gen.make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True, **overrides)
        )
    return converter


_payload_converter = _make_payload_converter()


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("a member is repeated")
    return members


def _signed_digest(payload: bytes) -> Digest:
    not_simple_signing = InvalidSignature("payload is not a cosign simple signing payload")
    try:
        members = limits.parse_json(payload, object_pairs_hook=_unique_members)
        if not isinstance(members, dict):
            raise not_simple_signing
        document = _payload_converter.structure(members, _SimpleSigning)
    except (ValueError, cattrs.BaseValidationError):
        raise not_simple_signing from None
    if document.critical.type != SIGNATURE_TYPE:
        raise not_simple_signing
    return document.critical.image.docker_manifest_digest
