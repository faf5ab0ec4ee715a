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
import os
import re
from collections.abc import Mapping, Sequence

import attrs

from reconciler import tagwriters
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.tagwriters import TargetTag

_SHARD = re.compile(r"(\d+)/(\d+)")
_AUTO = re.compile(r"auto/(\d+)")
INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
"""What a Kubernetes Indexed Job sets in each pod: 0 to completions - 1."""


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

    @classmethod
    def from_argument(cls, text: str, environ: Mapping[str, str] = os.environ) -> Shard:
        """``K/N``, or ``auto/N``: K is ``JOB_COMPLETION_INDEX`` + 1, as an Indexed Job of N
        completions numbers its pods from 0. The ValueError's message is what the user reads."""
        match = _AUTO.fullmatch(text.strip())
        if not match:
            return cls.parse(text)
        count = int(match[1])
        if count < 1:
            raise ValueError(f"{text!r}: N must be at least 1")
        index = environ.get(INDEX_VARIABLE)
        if index is None:
            raise ValueError(f"{text!r}: auto takes K from {INDEX_VARIABLE} (set by a Kubernetes Indexed Job), "
                             "which is not set")
        if not (index.isascii() and index.isdigit() and len(index) < 20 and int(index) < count):
            raise ValueError(f"{text!r}: {INDEX_VARIABLE} is {index!r}, not a number from 0 to {count - 1}")
        return cls(int(index) + 1, count)

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


def budget_shares(shard: Shard | None) -> int:
    """How many runs share one pull budget: N shards, run at once from one address, split it."""
    return 1 if shard is None else shard.count


def select(shard: Shard | None, images: Sequence[LockedImage]) -> tuple[LockedImage, ...]:
    """The images whose group is in ``shard``; all of them without one."""
    if shard is None:
        return tuple(images)
    return tuple(image for image, key in zip(images, group_keys(images), strict=True) if shard.holds(key))


def lock_part(shard: Shard | None, lock: Lockfile) -> Lockfile:
    """The pins of ``shard``: what a sharded plan is made from, and what its saved form is checked against.
    A candidate for deletion goes by its own target, as an image alone does."""
    if shard is None:
        return lock
    return attrs.evolve(lock, images=select(shard, lock.images),
                        removed=tuple(removed for removed in lock.removed if shard.holds(str(removed.target))))
