"""Shards: N parallel CI jobs split the images between them, and never touch the same target.

An image's shard depends on its target alone, so it stays put when other images are
added or removed, and every job computes the same split without talking to the others.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Protocol, TypeVar

import attrs

from reconciler.lockfile import Lockfile

_SHARD = re.compile(r"(\d+)/(\d+)")


class _Targeted(Protocol):
    @property
    def target(self) -> str: ...


T = TypeVar("T", bound=_Targeted)


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

    def holds(self, target: str) -> bool:
        # sha256 rather than hash(): Python salts str hashes per process, and every job must agree.
        position = int.from_bytes(hashlib.sha256(target.encode()).digest()[:8], "big") % self.count
        return position + 1 == self.number

    def __str__(self) -> str:
        return f"{self.number}/{self.count}"


def select(shard: Shard | None, images: Iterable[T]) -> tuple[T, ...]:
    """The images whose target is in ``shard``; all of them without one."""
    return tuple(image for image in images if shard is None or shard.holds(str(image.target)))


def lock_part(shard: Shard | None, lock: Lockfile) -> Lockfile:
    """The pins of ``shard``: what a sharded plan is made from, and what its saved form is checked against."""
    return lock if shard is None else attrs.evolve(lock, images=select(shard, lock.images))
