"""The referrer record the lock stores: what refers to a digest, and how it was found.

``FoundBy`` is also how a referrer is written where the target lacks the referrers API:
under cosign's tag, or listed in the spec's fallback index.
"""

from __future__ import annotations

import enum

import attrs

from reconciler.oci.digest import Digest


class FoundBy(enum.Enum):
    """How a referrer was found, which is also how it is written where the target lacks the API."""

    API = "referrers-api"
    INDEX_TAG = "referrers-tag"
    COSIGN_SIGNATURE = "cosign-sig"
    COSIGN_ATTESTATION = "cosign-att"
    COSIGN_SBOM = "cosign-sbom"

    def tag(self, subject: Digest) -> str | None:
        """The tag that holds it (cosign) or lists it (the spec's fallback), for ``subject``."""
        base = f"{subject.algorithm}-{subject.hex}"
        suffix = _COSIGN_SUFFIXES.get(self)
        if suffix is not None:
            return f"{base}.{suffix}"
        return base if self is FoundBy.INDEX_TAG else None


_COSIGN_SUFFIXES = {FoundBy.COSIGN_SIGNATURE: "sig", FoundBy.COSIGN_ATTESTATION: "att", FoundBy.COSIGN_SBOM: "sbom"}
COSIGN_ARTIFACT_TYPES = {
    FoundBy.COSIGN_SIGNATURE: "application/vnd.dev.cosign.artifact.sig.v1+json",
    FoundBy.COSIGN_ATTESTATION: "application/vnd.dev.cosign.artifact.att.v1+json",
    FoundBy.COSIGN_SBOM: "application/vnd.dev.cosign.artifact.sbom.v1+json",
}
"""Cosign's tags carry no artifact type; these are the ones cosign gives the same kinds in OCI 1.1 mode."""


@attrs.frozen
class Referrer:
    subject: Digest
    digest: Digest
    media_type: str
    artifact_type: str | None
    found_by: FoundBy
