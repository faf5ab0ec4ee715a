"""A blob's upload, the distribution spec's way: a cross-repository mount where the registry can,
else one upload session, sent whole or in fixed-size chunks, checked when committed.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Callable

import httpx

from reconciler.oci.digest import Digest, DigestMismatch
from reconciler.oci.manifest import Descriptor
from reconciler.registry.auth import push_scopes
from reconciler.registry.exchange import Exchange, parse_header_digest
from reconciler.registry.limiter import lending_slot
from reconciler.registry.origin import follow
from reconciler.registry.transport import with_query

log = logging.getLogger("reconciler.registry")


class BlobTransfer(enum.Enum):
    MOUNTED = "mounted"
    UPLOADED = "uploaded"


async def upload(
    exchange: Exchange,
    path: str,
    descriptor: Descriptor,
    chunks: Callable[[], contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]],
    mount_from: str | None,
    chunk_size: int | None,
) -> BlobTransfer:
    """One attempt at placing the blob (``RegistryClient.upload_blob`` says how); ``chunk_size``: None sends it whole."""
    location = await _start(exchange, path, descriptor.digest, mount_from)
    if location is None:
        return BlobTransfer.MOUNTED
    async with chunks() as stream:
        with lending_slot():
            if chunk_size:
                await _upload_in_chunks(exchange, path, location, descriptor, stream, chunk_size)
            else:
                await _upload_whole(exchange, path, location, descriptor, stream)
    return BlobTransfer.UPLOADED


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
    exchange: Exchange, path: str, location: str, descriptor: Descriptor, stream: AsyncIterator[bytes]
) -> None:
    response = await exchange.send(
        "PUT", with_query(location, {"digest": str(descriptor.digest)}), push_scopes(path),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(descriptor.size)},
        content=stream,
    )
    await _check_committed(exchange, response, path, descriptor.digest)


async def _upload_in_chunks(
    exchange: Exchange, path: str, location: str, descriptor: Descriptor, stream: AsyncIterator[bytes],
    chunk_size: int,
) -> None:
    """PATCH fixed-size chunks for registries that refuse or cap monolithic uploads."""
    offset = 0
    buffer = bytearray()

    async def send_chunk(data: bytes) -> None:
        nonlocal location, offset
        response = await exchange.send(
            "PATCH", location, push_scopes(path),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(data)),
                "Content-Range": f"{offset}-{offset + len(data) - 1}",
            },
            content=data,
        )
        if response.status_code != 202 or "Location" not in response.headers:
            raise await exchange.failure(response, path, "blobs/uploads/ (chunk)")
        location = _session_url(exchange, response, path)
        offset += len(data)

    async for chunk in stream:
        buffer.extend(chunk)
        while len(buffer) >= chunk_size:
            await send_chunk(bytes(buffer[:chunk_size]))
            del buffer[:chunk_size]
    if buffer:
        await send_chunk(bytes(buffer))
    response = await exchange.send(
        "PUT", with_query(location, {"digest": str(descriptor.digest)}), push_scopes(path),
        headers={"Content-Length": "0"},
    )
    await _check_committed(exchange, response, path, descriptor.digest)


async def _check_committed(exchange: Exchange, response: httpx.Response, path: str, digest: Digest) -> None:
    if response.status_code != 201:
        raise await exchange.failure(response, path, f"blobs/uploads/ (commit {digest})")
    stored = parse_header_digest(response.headers.get("Docker-Content-Digest"), exchange.host, path)
    if stored and stored != digest:
        raise DigestMismatch(digest, stored, f"{exchange.host}/{path}: stored blob")
