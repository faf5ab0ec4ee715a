"""Content digests, and hashing that checks bytes against the digest they claim."""

from __future__ import annotations

import hashlib
import re

import attrs

from reconciler.oci.errors import OCIError

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")


class InvalidDigest(OCIError, ValueError):
    """A string that is not a supported content digest."""


class DigestMismatch(OCIError):
    """Bytes whose hash is not the digest they were fetched or pushed as."""

    def __init__(self, expected: Digest, actual: Digest, what: str) -> None:
        super().__init__(f"{what}: expected digest {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


@attrs.frozen(order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        match = _DIGEST.fullmatch(text or "")
        if not match:
            raise InvalidDigest(f"invalid digest {text!r}")
        algorithm, value = match.groups()
        length = _ALGORITHMS.get(algorithm)
        if length is None:
            raise InvalidDigest(f"unsupported digest algorithm {algorithm!r}")
        if len(value) != length or not re.fullmatch(r"[a-f0-9]+", value):
            raise InvalidDigest(f"invalid {algorithm} digest {text!r}")
        return cls(algorithm, value)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Hasher:
        return Hasher(self.algorithm)

    def verify(self, data: bytes, what: str) -> None:
        actual = Digest.of(data, self.algorithm)
        if actual != self:
            raise DigestMismatch(self, actual, what)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class Hasher:
    """Incremental hash over streamed chunks, so no layer is ever held whole."""

    def __init__(self, algorithm: str = "sha256") -> None:
        self._algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def digest(self) -> Digest:
        return Digest(self._algorithm, self._hash.hexdigest())

    def copy(self) -> Hasher:
        """This state, to go on from later: a resumed read hashes on from a checkpoint, not from byte 0."""
        twin = Hasher(self._algorithm)
        twin._hash = self._hash.copy()
        twin.size = self.size
        return twin
