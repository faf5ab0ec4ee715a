"""Which tags each pin writes in its target repository, and what it wants each to hold (no network).

``apply`` writes a pin's own target tag, its cosign referrers under ``sha256-<hex>.sig``,
``.att`` and ``.sbom``, and lists its other referrers in the spec's fallback index under
``sha256-<hex>`` (where the target lacks the referrers API: the lock cannot know, so it
counts). Two pins that want different manifests under one tag would overwrite each other by
timing, so such a lock is refused; pins that share a tag are applied by one shard (shard.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from reconciler import lockfile
from reconciler.config import Config
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.oci.digest import Digest
from reconciler.oci.reference import Repository
from reconciler.oci.referrer import COSIGN_ARTIFACT_TYPES, FoundBy, Referrer


@attrs.frozen(order=True)
class TargetTag:
    repository: Repository
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


@attrs.frozen
class Write:
    tag: TargetTag
    digest: Digest | None
    """The manifest the tag must hold; None for the fallback index, which every referrer of its
    subject extends: pins listing into one index share it by design, they never disagree on it."""


@attrs.frozen
class Conflict:
    """Two pins that want different content under one tag."""

    tag: TargetTag
    first: LockedImage
    first_wants: Digest | None
    second: LockedImage
    second_wants: Digest | None


def writes(image: LockedImage) -> tuple[Write, ...]:
    """Every tag ``image``'s apply writes in its target repository, its referrers' included."""
    repository = image.target.repository
    own = (Write(TargetTag(repository, image.target.tag), image.pushed_digest),) if image.target.tag else ()
    return own + tuple(_referrer_write(repository, referrer) for referrer in image.referrers)


def _referrer_write(repository: Repository, referrer: Referrer) -> Write:
    if referrer.found_by in COSIGN_ARTIFACT_TYPES:
        return Write(TargetTag(repository, str(referrer.found_by.tag(referrer.subject))), referrer.digest)
    return Write(TargetTag(repository, str(FoundBy.INDEX_TAG.tag(referrer.subject))), None)


def conflicts(images: Iterable[LockedImage]) -> tuple[Conflict, ...]:
    """Each tag that two pins want to hold different content, with the first pin and the first that disagrees."""
    first_writer: dict[TargetTag, tuple[LockedImage, Digest | None]] = {}
    found: dict[TargetTag, Conflict] = {}
    for image in images:
        for write in writes(image):
            earlier, wanted = first_writer.setdefault(write.tag, (image, write.digest))
            if wanted != write.digest and write.tag not in found:
                found[write.tag] = Conflict(write.tag, earlier, wanted, image, write.digest)
    return tuple(found.values())


def conflict_lines(config: Config, lock: Lockfile) -> list[str]:
    """One line per conflict in ``lock``, naming both entries by target and images.yaml line; empty when none."""
    lines = {image.target: image.line for image in lockfile.every_desired(config, lock)}

    def entry(image: LockedImage) -> str:
        line = lines.get(image.target)
        return f"{image.target} ({config.path}:{line})" if line else str(image.target)

    return [f"{entry(conflict.first)} and {entry(conflict.second)} want different manifests under their "
            f"repository's tag {conflict.tag.tag} ({_content(conflict.first_wants)} and "
            f"{_content(conflict.second_wants)}): re-pin both together (`image-syncer lock --upgrade` naming them), "
            "or mirror them to different repositories"
            for conflict in conflicts(lock.images)]


def _content(digest: Digest | None) -> str:
    return str(digest) if digest else "a referrers index"
