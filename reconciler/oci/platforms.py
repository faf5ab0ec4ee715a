"""A platform subset of an image index, the same bytes every time.

``platforms: {only: [linux/amd64, linux/arm64]}`` mirrors a new index that lists only
those platforms' manifests. It is a new artifact with its own digest: signatures made
for the source index do not cover it (referrers of the kept children still apply).
``lock`` pins its digest and ``apply`` rebuilds it, so it must come out byte for byte
the same from the same source index and platforms:

- the children are kept in the source index's order, each descriptor whole (size,
  annotations, platform fields such as ``os.version``), whatever order the platforms
  are asked in;
- every other field of the index (``schemaVersion``, ``mediaType``, ``artifactType``,
  ``annotations``, ``subject``, …) is kept as it is, so the media type stays an OCI
  index or a Docker manifest list;
- ``os/arch`` keeps every child of that OS and architecture whatever its variant
  (``linux/arm64`` keeps ``linux/arm64`` and ``linux/arm64/v8``); ``os/arch/variant``
  keeps only that variant (``linux/arm/v7``, not ``linux/arm/v6``);
- the attestation manifests docker buildx adds (annotation
  ``vnd.docker.reference.type: attestation-manifest``) are kept exactly when the child
  their ``vnd.docker.reference.digest`` names is kept;
- the JSON is written one fixed way: keys sorted, no insignificant whitespace
  (``","`` and ``":"`` as separators), UTF-8 without ASCII escaping, no trailing newline
  (Python: ``json.dumps(index, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``).

A platform asked for that the index lacks is refused, naming what the index has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import attrs

from reconciler.oci import limits
from reconciler.oci.digest import Digest
from reconciler.oci.errors import OCIError
from reconciler.oci.manifest import Descriptor, Manifest, Platform

_REFERENCE_TYPE = "vnd.docker.reference.type"
_REFERENCE_DIGEST = "vnd.docker.reference.digest"
_ATTESTATION = "attestation-manifest"


class PlatformSubsetRefused(OCIError):
    """The subset cannot be made from this manifest: it is no index, or lacks a platform."""


def subset(index: Manifest, platforms: Sequence[str]) -> Manifest:
    """A new index of ``index``'s children for ``platforms`` (``os/arch`` or ``os/arch/variant``)."""
    if not index.is_index:
        raise PlatformSubsetRefused(
            f"manifest {index.digest} is a single image ({index.media_type}), not an index of platforms to choose from"
        )
    wanted = [_parse_platform(platform) for platform in platforms]
    if not wanted:
        raise PlatformSubsetRefused(f"index {index.digest}: no platforms asked for")
    children = index.children()
    images = [child for child in children if not _is_attestation(child)]
    missing = [str(platform) for platform in wanted if not any(_matches(platform, child) for child in images)]
    if missing:
        available = sorted({str(child.platform) for child in images if child.platform})
        raise PlatformSubsetRefused(
            f"index {index.digest} has no {', '.join(missing)}; it has {', '.join(available) or 'no platforms listed'}"
        )
    kept = {str(child.digest) for child in images if any(_matches(platform, child) for platform in wanted)}
    body = limits.parse_json(index.data)
    body["manifests"] = [
        entry for entry, child in zip(body["manifests"], children, strict=True)
        if str(child.digest) in kept or (_is_attestation(child) and child.annotations.get(_REFERENCE_DIGEST) in kept)
    ]
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return Manifest(media_type=index.media_type, digest=Digest.of(data), data=data)


def _parse_platform(text: str) -> Platform:
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise PlatformSubsetRefused(f"{text!r} is not a platform: write os/arch or os/arch/variant")
    return Platform(*parts)


def _is_attestation(child: Descriptor) -> bool:
    return child.annotations.get(_REFERENCE_TYPE) == _ATTESTATION


def _matches(wanted: Platform, child: Descriptor) -> bool:
    return _fits(wanted, child.platform)


def _fits(wanted: Platform, found: Platform | None) -> bool:
    """``os/arch`` is any variant of it (``linux/arm64`` is ``linux/arm64/v8``); a variant only itself."""
    return (
        found is not None
        and (found.os, found.architecture) == (wanted.os, wanted.architecture)
        and wanted.variant in (None, found.variant)
    )


def missing(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """The platforms of ``wanted`` that none of ``available`` is, matched as ``subset`` matches them."""
    have = [_parse_platform(platform) for platform in available]
    return [platform for platform in wanted if not any(_fits(_parse_platform(platform), found) for found in have)]


class SubsetChanged(PlatformSubsetRefused):
    """The subset rebuilt from the source index is not the one pinned."""


@attrs.frozen
class PlatformSubset:
    """A pinned subset of an index: the platforms asked for (sorted) and the digest it had."""

    platforms: tuple[str, ...]
    digest: Digest

    def rebuild(self, index: Manifest) -> Manifest:
        """The subset made again from ``index``, refused unless it has the pinned digest."""
        rebuilt = subset(index, self.platforms)
        if rebuilt.digest != self.digest:
            raise SubsetChanged(f"the index of {', '.join(self.platforms)} rebuilt from {index.digest} is "
                                f"{rebuilt.digest}, not the locked {self.digest}")
        return rebuilt
