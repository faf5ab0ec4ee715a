"""The referrer record the lock stores: what refers to a digest, and how it was found.

``FoundBy`` is also how a referrer is written where the target lacks the referrers API:
under cosign's tag, or listed in the spec's fallback index.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

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


def in_levels(referrers: Iterable[Referrer]) -> list[tuple[Referrer, ...]]:
    """``referrers`` in the order they can be written: first those whose subject is none of
    them (the image's), then those whose subject is in an earlier level (a signature of an SBOM)."""
    remaining = list(referrers)
    pending = {referrer.digest for referrer in remaining}
    levels = []
    while remaining:
        level = tuple(referrer for referrer in remaining if referrer.subject not in pending)
        if not level:  # only a cycle is left, which content addressing cannot make: write it as it is
            level = tuple(remaining)
        levels.append(level)
        pending -= {referrer.digest for referrer in level}
        remaining = [referrer for referrer in remaining if referrer not in level]
    return levels
