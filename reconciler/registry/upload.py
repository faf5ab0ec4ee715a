"""A blob's upload, the distribution spec's way: a cross-repository mount where the registry can,
else one upload session, sent whole or in fixed-size chunks, checked when committed.

A try cut short (no answer) leaves its session to the next try of the same blob, which asks
the registry how far it got (a GET on the session's URL: ``Range: 0-<last>``, the spec's
"Resuming an upload") and sends only the rest, read from the source from that offset. Where
the registry cannot say (docker-registry forgets a session cut mid-body: its state token no
longer matches), reports more than was sent, or answered the request at all, the next try
starts whole in a new session.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
from collections.abc import AsyncIterator, Callable

import attrs
import httpx

from reconciler.oci.digest import Digest, DigestMismatch
from reconciler.oci.manifest import Descriptor
from reconciler.registry.auth import push_scopes
from reconciler.registry.exchange import Exchange, parse_header_digest
from reconciler.registry.limiter import lending_slot
from reconciler.registry.origin import follow
from reconciler.registry.retry import TransientError
from reconciler.registry.transport import with_query

log = logging.getLogger("reconciler.registry")

Source = Callable[[int], contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]]
"""The blob's bytes from an offset on (0: all), opened only when an upload needs them."""
_HELD_RANGE = re.compile(r"0-([0-9]{1,18})")


class BlobTransfer(enum.Enum):
    MOUNTED = "mounted"
    UPLOADED = "uploaded"


@attrs.define
class _Session:
    """An upload session: where it goes on, the bytes the registry confirmed, and the most it may hold."""

    location: str
    offset: int = 0
    sent: int = 0


class Uploads:
    """One registry's uploads; a session cut short is kept for the next try of its blob."""

    def __init__(self, exchange: Exchange, chunk_size: int | None) -> None:
        self._exchange = exchange
        self._chunk_size = chunk_size
        self._cut: dict[tuple[str, Digest], _Session] = {}

    async def upload(
        self, path: str, descriptor: Descriptor, chunks: Source, mount_from: str | None
    ) -> BlobTransfer:
        """One try at placing the blob (``RegistryClient.upload_blob`` says how)."""
        exchange, key = self._exchange, (path, descriptor.digest)
        cut = self._cut.pop(key, None)
        session = await _resumed(exchange, path, cut) if cut else None
        if session is None:
            location = await _start(exchange, path, descriptor.digest, mount_from)
            if location is None:
                return BlobTransfer.MOUNTED
            session = _Session(location)
        async with chunks(session.offset) as stream:
            with lending_slot():
                try:
                    if self._chunk_size or session.offset:
                        await _patch_then_commit(exchange, path, session, descriptor, stream, self._chunk_size)
                    else:
                        await _upload_whole(exchange, path, session, descriptor, stream)
                except TransientError:
                    self._cut[key] = session
                    raise
        return BlobTransfer.UPLOADED


async def _resumed(exchange: Exchange, path: str, cut: _Session) -> _Session | None:
    """The cut session as the registry reports it; None where it cannot say, and the try starts whole."""
    response = await exchange.send("GET", cut.location, push_scopes(path))
    held = _held_bytes(response.headers.get("Range")) if response.status_code == 204 else None
    if held is None or held > cut.sent or "Location" not in response.headers:
        log.debug("%s/%s: the upload cut short answered HTTP %s with Range %.40r after %d bytes sent; "
                  "starting whole in a new session", exchange.host, path, response.status_code,
                  response.headers.get("Range"), cut.sent)
        return None
    return _Session(_session_url(exchange, response, path), offset=held, sent=held)


def _held_bytes(value: str | None) -> int | None:
    """``Range: 0-<last>`` as a count; ``0-0`` is 0 (docker-registry says it for 0 bytes and for 1)."""
    match = _HELD_RANGE.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    last = int(match[1])
    return last + 1 if last else 0


async def _start(exchange: Exchange, path: str, digest: Digest, mount_from: str | None) -> str | None:
    """The upload session's URL, or None when the mount placed the blob.

    A mount the registry refuses in any other way (no access to the other
    repository, mounting not offered) falls back to a plain upload session.
    An unused session is harmless, so the POST may be sent again.
    """
    url = await exchange.url(path, "blobs/uploads/")
    if mount_from:
        response = await exchange.send(
            "POST", with_query(url, {"mount": str(digest), "from": mount_from}), push_scopes(path, mount_from),
            headers={"Content-Length": "0"}, idempotent=True,
        )
        if response.status_code == 201:
            return None
        if response.status_code == 202 and "Location" in response.headers:
            return _session_url(exchange, response, path)
        log.debug("%s/%s: mount of %s from %s answered HTTP %s; uploading instead",
                  exchange.host, path, digest, mount_from, response.status_code)
    response = await exchange.send("POST", url, push_scopes(path), headers={"Content-Length": "0"}, idempotent=True)
    if response.status_code != 202 or "Location" not in response.headers:
        raise await exchange.failure(response, path, "blobs/uploads/")
    return _session_url(exchange, response, path)


def _session_url(exchange: Exchange, response: httpx.Response, path: str) -> str:
    """Where an upload goes on: its ``Location``. On another origin it gets no credentials (``origin.py``)."""
    return str(follow(response.request.url, response.headers["Location"], f"{exchange.host}/{path}: upload Location"))


async def _upload_whole(
    exchange: Exchange, path: str, session: _Session, descriptor: Descriptor, stream: AsyncIterator[bytes]
) -> None:
    response = await exchange.send(
        "PUT", with_query(session.location, {"digest": str(descriptor.digest)}), push_scopes(path),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(descriptor.size)},
        content=_counted(stream, session),
    )
    await _check_committed(exchange, response, path, descriptor.digest)


async def _patch_then_commit(
    exchange: Exchange, path: str, session: _Session, descriptor: Descriptor, stream: AsyncIterator[bytes],
    chunk_size: int | None,
) -> None:
    """PATCH the bytes from the session's offset on, then commit by digest: in fixed-size chunks (for registries
    that refuse or cap monolithic uploads), else the rest in one streamed request."""
    if chunk_size is None:
        rest = descriptor.size - session.offset
        if rest:
            await _patch(exchange, path, session, stream, rest)
        else:
            async for _ in stream:  # nothing left to send; the bytes are still read for the digest check
                pass
    else:
        buffer = bytearray()
        async for chunk in stream:
            buffer.extend(chunk)
            while len(buffer) >= chunk_size:
                await _patch(exchange, path, session, bytes(buffer[:chunk_size]), chunk_size)
                del buffer[:chunk_size]
        if buffer:
            await _patch(exchange, path, session, bytes(buffer), len(buffer))
    response = await exchange.send(
        "PUT", with_query(session.location, {"digest": str(descriptor.digest)}), push_scopes(path),
        headers={"Content-Length": "0"},
    )
    await _check_committed(exchange, response, path, descriptor.digest)


async def _patch(
    exchange: Exchange, path: str, session: _Session, content: bytes | AsyncIterator[bytes], length: int
) -> None:
    if isinstance(content, bytes):
        session.sent = session.offset + length
    else:
        content = _counted(content, session)
    response = await exchange.send(
        "PATCH", session.location, push_scopes(path),
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            "Content-Range": f"{session.offset}-{session.offset + length - 1}",
        },
        content=content,
    )
    if response.status_code != 202 or "Location" not in response.headers:
        raise await exchange.failure(response, path, "blobs/uploads/ (chunk)")
    session.location = _session_url(exchange, response, path)
    session.offset += length


async def _counted(stream: AsyncIterator[bytes], session: _Session) -> AsyncIterator[bytes]:
    """The stream as sent into the session, counted: a registry cannot hold more than that."""
    session.sent = session.offset
    async for chunk in stream:
        session.sent += len(chunk)
        yield chunk


async def _check_committed(exchange: Exchange, response: httpx.Response, path: str, digest: Digest) -> None:
    if response.status_code != 201:
        raise await exchange.failure(response, path, f"blobs/uploads/ (commit {digest})")
    stored = parse_header_digest(response.headers.get("Docker-Content-Digest"), exchange.host, path)
    if stored and stored != digest:
        raise DigestMismatch(digest, stored, f"{exchange.host}/{path}: stored blob")
