"""Cosign key pairs and ``.sig`` signature manifests, made as cosign's SIGNATURE_SPEC describes.

Independent of the code under test: keys and ECDSA signatures come from ``cryptography``,
payloads are serialized as cosign does (compact JSON, its member order, ``"optional":null``),
and the signature manifest is pushed with RawRegistry: an OCI image manifest tagged
``sha256-<hex>.sig`` with a small config and one simple signing layer per signature, its
signature in the layer's ``dev.cosignproject.cosign/signature`` annotation.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.harness.images import OCI_CONFIG, OCI_MANIFEST, canonical_json, sha256_digest
from tests.harness.rawhttp import RawRegistry

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_TYPE = "cosign container image signature"
# Any digest no test image has, for payloads that sign something else.
OTHER_DIGEST = "sha256:" + "0123456789abcdef" * 4


def new_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """A P-256 key, cosign's default, unless another curve is asked for."""
    return ec.generate_private_key(curve or ec.SECP256R1())


def write_public_key(key, path: Path) -> Path:
    """The public half as PEM ``PUBLIC KEY`` (PKIX), as in cosign's ``cosign.pub``; any key type."""
    path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def payload(digest: str, reference: str = "registry.test/signed/app", kind: str = COSIGN_TYPE) -> bytes:
    return json.dumps({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": kind,
        },
        "optional": None,
    }, separators=(",", ":")).encode()


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    """Base64 of the ASN.1 DER ECDSA signature over ``data`` with SHA-256."""
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


@dataclass(frozen=True)
class Signature:
    payload: bytes
    signature: str | None  # None: the layer carries no signature annotation

    def layer(self) -> dict:
        descriptor = {"mediaType": SIMPLE_SIGNING, "digest": sha256_digest(self.payload), "size": len(self.payload)}
        if self.signature is not None:
            descriptor["annotations"] = {SIGNATURE_ANNOTATION: self.signature}
        return descriptor


def signature_by(key: ec.EllipticCurvePrivateKey, digest: str, *, signs: str | None = None,
                 tampered: bool = False, kind: str = COSIGN_TYPE) -> Signature:
    """A signature of ``digest`` by ``key``.

    ``signs``: the (validly signed) payload names that digest instead; ``tampered``: the key
    signed a payload for OTHER_DIGEST, which was then rewritten to name ``digest``, the
    signature kept; ``kind``: the payload's ``critical.type``.
    """
    signed = payload(OTHER_DIGEST if tampered else signs or digest, kind=kind)
    served = payload(digest, kind=kind) if tampered else signed
    return Signature(served, sign(key, signed))


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def push_signatures(raw: RawRegistry, repo: str, digest: str, signatures: Sequence[Signature]) -> str:
    """The ``.sig`` manifest of ``digest`` holding ``signatures``; returns the manifest's digest."""
    config = canonical_json({
        "architecture": "", "os": "", "config": {}, "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(s.payload) for s in signatures]},
    })
    raw.push_blob(repo, config)
    for signature in signatures:
        raw.push_blob(repo, signature.payload)
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [signature.layer() for signature in signatures],
    })
    answer = raw.put_manifest(repo, signature_tag(digest), manifest, OCI_MANIFEST)
    assert answer.status_code == 201, answer.text
    return sha256_digest(manifest)
