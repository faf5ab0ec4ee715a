"""Shards: N parallel CI jobs split the images between them, and never write the same tag.

Images that write a common tag (one source digest mirrored under two tags of one target
repository writes one cosign ``.sig`` tag twice, and lists into one fallback index) form a
group, joined through any chain of such tags, and a group's shard depends on its least
target string alone. An image alone is keyed by its own target, so it stays put when
unrelated images are added or removed, and every job computes the same split from the lock
without talking to the others.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import attrs

from reconciler import tagwriters
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.tagwriters import TargetTag

_SHARD = re.compile(r"(\d+)/(\d+)")


@attrs.frozen
class Shard:
    number: int
    """1-based, as CI matrices count."""
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``K/N``; the ValueError's message is what the user reads."""
        match = _SHARD.fullmatch(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not K/N (for example 1/4)")
        number, count = int(match[1]), int(match[2])
        if count < 1 or not 1 <= number <= count:
            raise ValueError(f"{text!r}: K must be 1 to N, and N at least 1")
        return cls(number, count)

    def holds(self, key: str) -> bool:
        """Whether the group keyed by ``key`` (see ``group_keys``) is in this shard."""
        # sha256 rather than hash(): Python salts str hashes per process, and every job must agree.
        position = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % self.count
        return position + 1 == self.number

    def __str__(self) -> str:
        return f"{self.number}/{self.count}"


def group_keys(images: Sequence[LockedImage]) -> list[str]:
    """Each image's shard key: the least target string of its group, the images joined by a tag they write."""
    parent = list(range(len(images)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    first_writer: dict[TargetTag, int] = {}
    for index, image in enumerate(images):
        for write in tagwriters.writes(image):
            parent[root(index)] = root(first_writer.setdefault(write.tag, index))
    least: dict[int, str] = {}
    for index, image in enumerate(images):
        group = root(index)
        least[group] = min(least.get(group, str(image.target)), str(image.target))
    return [least[root(index)] for index in range(len(images))]


def select(shard: Shard | None, images: Sequence[LockedImage]) -> tuple[LockedImage, ...]:
    """The images whose group is in ``shard``; all of them without one."""
    if shard is None:
        return tuple(images)
    return tuple(image for image, key in zip(images, group_keys(images), strict=True) if shard.holds(key))


def lock_part(shard: Shard | None, lock: Lockfile) -> Lockfile:
    """The pins of ``shard``: what a sharded plan is made from, and what its saved form is checked against."""
    return lock if shard is None else attrs.evolve(lock, images=select(shard, lock.images))
