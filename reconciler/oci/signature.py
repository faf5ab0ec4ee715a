"""The signature record the lock stores: which manifest signed an image, and what it proved."""

from __future__ import annotations

import enum

import attrs

from reconciler.oci.digest import Digest


class SignatureForm(enum.Enum):
    BUNDLE = "bundle"
    """A Sigstore bundle stored as a referrer of the image (cosign v3's default)."""
    COSIGN_TAG = "cosign-tag"
    """cosign's legacy simple-signing layers under the ``sha256-<hex>.sig`` tag."""


@attrs.frozen
class SignatureProof:
    """Who signed, as a verified signature proves it: a certificate's identity and issuer, or a key."""

    identity: str | None = None
    issuer: str | None = None
    key: str | None = None
    """``sha256:<hex>`` of the public key's DER SubjectPublicKeyInfo, for a signature made with a key."""
    integrated_time: int | None = None
    """When the transparency log recorded the signature (seconds since the epoch); None without a log entry."""
    predicate_type: str | None = None
    """What the signed in-toto statement attests (its ``predicateType``); None for a legacy ``.sig``."""


@attrs.frozen
class PinnedSignature:
    """The signature that satisfied images.yaml's ``verify:`` when the image was locked; apply
    checks these exact bytes again, offline, before copying."""

    digest: Digest
    """The signature's manifest: the bundle's referrer, or the ``.sig`` tag's manifest."""
    form: SignatureForm
    proof: SignatureProof
