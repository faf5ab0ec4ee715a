"""A blob read over as many requests as it takes: an answer cut short goes on with a Range request.

The digest is computed over the whole stream, whatever requests carried it, and the
last chunk is held back until it checks out, so an upload fed from here never commits
bytes that do not match. A source that ignores Range (200) is read again from byte 0,
passing on only what was not passed on yet, and only if its first bytes hash as before.
Hash states kept at checkpoints let an upload go on from the offset its target confirmed:
the bytes from the checkpoint to that offset are read and hashed again, not passed on.
Each request after the first spends a try from the running operation's retry budget.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import attrs
import httpx

from reconciler.oci.digest import DigestMismatch, Hasher
from reconciler.oci.limits import MiB
from reconciler.oci.manifest import Descriptor
from reconciler.registry.errors import RegistryError
from reconciler.registry.retry import Budget, RetryPolicy, TransientError, running_budget

CHUNK_BYTES = 1024 * 1024
CHECKPOINT_BYTES = 8 * MiB
"""How far apart hash states are kept: at most this much is read again to go on from a target's offset."""
CHECKPOINTS_KEPT = 4
"""The latest checkpoints kept besides byte 0: a target confirms about what was sent, minus what was in flight."""


@attrs.frozen
class _Checkpoint:
    hasher: Hasher

    @property
    def offset(self) -> int:
        return self.hasher.size


class BlobReader:
    """One blob's bytes from its source, in order, verified, however many answers they take.

    ``fetch(start)`` asks the source for the blob from byte ``start`` (a Range past 0)
    and returns its answer, a 200 or a 206, body unread; it raises for anything else.
    """

    def __init__(
        self, descriptor: Descriptor, fetch: Callable[[int], Awaitable[httpx.Response]], policy: RetryPolicy, what: str
    ) -> None:
        self._descriptor = descriptor
        self._fetch = fetch
        self._policy = policy
        self._what = f"{what} {descriptor.digest}"
        self._hasher = descriptor.digest.hasher()
        self._checkpoints = [_Checkpoint(self._hasher.copy())]
        self._delivered = 0  # bytes passed on, the held-back chunk included
        self._pending: bytes | None = None
        self._before_pending: Hasher | None = None
        self._passed_on_state: Hasher | None = None  # after a 200 to a Range: the state the new bytes must meet
        self._response: httpx.Response | None = None
        self._budget: Budget | None = None

    @contextlib.asynccontextmanager
    async def open(self, offset: int = 0) -> AsyncIterator[AsyncIterator[bytes]]:
        """The bytes from ``offset`` on (0, or what an upload's target confirmed it holds), the first answer awaited."""
        self._rewind(offset)
        self._budget = running_budget(self._policy)
        try:
            await self._request()
            yield self._chunks()
        finally:
            await self._close()

    def _rewind(self, offset: int) -> None:
        """Go back to the latest checkpoint at or before ``offset``; the bytes up to it will be hashed, not passed on."""
        passed_on = self._delivered - len(self._pending or b"")
        if offset > passed_on:
            raise RegistryError(f"{self._what}: asked to go on from byte {offset}, past the {passed_on} bytes passed on")
        self._checkpoints = [point for point in self._checkpoints if point.offset <= offset]
        self._hasher = self._checkpoints[-1].hasher.copy()
        self._delivered = offset
        self._pending = None
        self._before_pending = None
        self._passed_on_state = None  # the target's commit checks what it holds

    async def _request(self) -> None:
        start = self._hasher.size
        response = await self._fetch(start)
        try:
            if response.status_code == 200 and start:
                self._start_over()
            elif response.status_code == 206 and start:
                expected = f"bytes {start}-{self._descriptor.size - 1}/{self._descriptor.size}"
                if response.headers.get("Content-Range") != expected:
                    raise RegistryError(f"{self._what}: asked for bytes {start}- and answered with Content-Range "
                                        f"{response.headers.get('Content-Range', '(none)')[:100]!r}, "
                                        f"not {expected!r}; refused")
            elif response.status_code != 200:
                raise RegistryError(f"{self._what}: HTTP {response.status_code} to a GET without Range; refused")
        except BaseException:
            await response.aclose()
            raise
        self._response = response

    def _start_over(self) -> None:
        """The source ignored Range: hash from byte 0 again; what was passed on must hash as it did."""
        if self._pending is not None:
            self._delivered -= len(self._pending)
            self._pending = None
            self._passed_on_state = self._before_pending
        elif self._hasher.size == self._delivered:
            self._passed_on_state = self._hasher.copy()
        self._hasher = self._checkpoints[0].hasher.copy()
        del self._checkpoints[1:]

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                if self._response is None:
                    await self._request()
                async for chunk in self._response.aiter_raw(CHUNK_BYTES):
                    for piece in self._pieces(chunk):
                        if self._hasher.size < self._delivered:
                            self._hasher.update(piece)
                            self._check_passed_on()
                        else:
                            if self._pending is not None:
                                yield self._pending
                            self._before_pending = self._hasher.copy()
                            self._hasher.update(piece)
                            self._pending = piece
                            self._delivered += len(piece)
                        if self._hasher.size % CHECKPOINT_BYTES == 0:
                            kept = [*self._checkpoints[1:], _Checkpoint(self._hasher.copy())]
                            self._checkpoints[1:] = kept[-CHECKPOINTS_KEPT:]
                if self._hasher.size == self._descriptor.size:
                    break
                raise TransientError(f"{self._what}: the answer ended at byte {self._hasher.size} "
                                     f"of {self._descriptor.size}")
            except RegistryError as error:
                await self._close()
                if error.transient and self._budget.spent:
                    raise TransientError(f"{self._what}: {self._hasher.size} of {self._descriptor.size} bytes read "
                                         f"in {self._budget.tries} tries, the retry budget; the last: {error}") from None
                await self._budget.try_again(error, self._what)
        actual = self._hasher.digest()
        if actual != self._descriptor.digest:
            raise DigestMismatch(self._descriptor.digest, actual, self._what)
        if self._pending is not None:
            yield self._pending

    def _pieces(self, chunk: bytes) -> Iterator[bytes]:
        """``chunk`` cut where a checkpoint falls and where the bytes passed on end (each piece hashed before the next is cut)."""
        while chunk:
            at = self._hasher.size
            if at + len(chunk) > self._descriptor.size:
                raise RegistryError(f"{self._what}: more than the {self._descriptor.size} bytes expected")
            cut = min(len(chunk), CHECKPOINT_BYTES - at % CHECKPOINT_BYTES)
            if at < self._delivered:
                cut = min(cut, self._delivered - at)
            yield chunk[:cut]
            chunk = chunk[cut:]

    def _check_passed_on(self) -> None:
        if self._hasher.size == self._delivered and self._passed_on_state is not None:
            if self._hasher.digest() != self._passed_on_state.digest():
                raise RegistryError(f"{self._what}: the source answered the same bytes differently "
                                    f"when asked again; refused")
            self._passed_on_state = None

    async def _close(self) -> None:
        if self._response is not None:
            self._response, response = None, self._response
            await response.aclose()
