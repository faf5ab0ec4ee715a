"""An answer's body, never trusted for its size: read whole within a cap, or streamed while
holding the host's slot until it is closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import httpx

from reconciler.oci import limits
from reconciler.registry.errors import RegistryError


async def read_body(response: httpx.Response, limit: int | None, where: str) -> None:
    """Read the body into ``response.content`` within bounds, then close the response.

    A successful answer whose body the caller uses (``limit`` given) is refused past
    ``limit``, before reading when Content-Length says so. Any other body is read only
    for its message: up to ``limits.ERROR_BODY_BYTES``, the rest left unread (the
    connection is closed, not drained). The bytes are taken as sent, never decoded (we
    ask for no Content-Encoding), so nothing grows past the cap after it is counted.
    """
    used = limit is not None and response.is_success
    cap = limit if used else limits.ERROR_BODY_BYTES
    try:
        length = limits.header_number(response.headers.get("Content-Length"))
        if used and length is not None and length > cap:
            raise RegistryError(f"{where}: the answer is {length} bytes, over the {limits.size(cap)} limit")
        body = bytearray()
        async with contextlib.aclosing(response.aiter_raw()) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > cap:
                    if used:
                        raise RegistryError(f"{where}: the answer is over the {limits.size(cap)} limit")
                    del body[cap:]
                    break
        response._content = bytes(body)  # what aread() would have set, had it read this far
    finally:
        await response.aclose()


class ReleasingStream(httpx.AsyncByteStream):
    """A streamed body that gives its slot back when closed, and fails as a RegistryError."""

    def __init__(
        self,
        stream: httpx.AsyncByteStream,
        release: Callable[[], None],
        failure: Callable[[httpx.TransportError], RegistryError],
    ) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release
        self._failure = failure

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpx.TransportError as error:
            raise self._failure(error) from None

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._release is not None:
                self._release, release = None, self._release
                release()
