"""Blob uploads (reconciler/registry/upload.py): a session's chunks and commit over a recording exchange,
and whole copies through a refused mount and in chunks against real docker-registry processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from reconciler.oci.digest import Digest
from reconciler.oci.manifest import Descriptor
from reconciler.registry.upload import BlobTransfer, upload
from tests.harness.rawhttp import RawRegistry
from tests.helpers_clients import assert_same_image, mirror

BLOB = b"abcdefg"
DIGEST = Digest.of(BLOB)


class RecordingExchange:
    """Answers an upload as a registry does, recording each request: method, URL and Content-Range."""

    host = "registry.example"

    def __init__(self, mount_status: int = 202) -> None:
        self.mount_status = mount_status
        self.sent: list[tuple[str, str, str | None]] = []

    async def url(self, path: str, suffix: str) -> str:
        return f"https://{self.host}/v2/{path}/{suffix}"

    async def send(self, method: str, url: str, scopes: tuple[str, ...], *, headers=None, content=None,
                   **_) -> httpx.Response:
        if isinstance(content, AsyncIterator):
            content = b"".join([chunk async for chunk in content])
        self.sent.append((method, url, (headers or {}).get("Content-Range")))
        request = httpx.Request(method, url)
        if method == "POST" and "mount=" in url:
            return httpx.Response(self.mount_status, headers={"Location": "/v2/app/blobs/uploads/1"}, request=request)
        if method in ("POST", "PATCH"):
            return httpx.Response(202, headers={"Location": f"/v2/app/blobs/uploads/{len(self.sent)}"},
                                  request=request)
        return httpx.Response(201, headers={"Docker-Content-Digest": str(DIGEST)}, request=request)

    async def failure(self, response: httpx.Response, path: str, what: str, transient_codes=frozenset()):
        raise AssertionError(f"{what}: HTTP {response.status_code}")


@contextlib.asynccontextmanager
async def source() -> AsyncIterator[AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        yield BLOB[:4]
        yield BLOB[4:]

    yield chunks()


def uploaded(exchange: RecordingExchange, chunk_size: int | None, mount_from: str | None = None) -> BlobTransfer:
    descriptor = Descriptor("application/octet-stream", DIGEST, len(BLOB))
    return asyncio.run(upload(exchange, "app", descriptor, source, mount_from, chunk_size))


def test_chunks_are_patched_in_order_with_their_ranges_then_committed_by_digest():
    exchange = RecordingExchange()
    assert uploaded(exchange, chunk_size=3) is BlobTransfer.UPLOADED
    base = f"https://{exchange.host}/v2/app/blobs/uploads/"
    assert exchange.sent == [
        ("POST", base, None),
        ("PATCH", f"{base}1", "0-2"),
        ("PATCH", f"{base}2", "3-5"),
        ("PATCH", f"{base}3", "6-6"),
        ("PUT", f"{base}4?digest={str(DIGEST).replace(':', '%3A')}", None),
    ]


def test_without_a_chunk_size_the_blob_goes_whole_in_one_put():
    exchange = RecordingExchange()
    assert uploaded(exchange, chunk_size=None) is BlobTransfer.UPLOADED
    assert [method for method, _, _ in exchange.sent] == ["POST", "PUT"]


def test_a_mount_answered_201_placed_the_blob_with_no_upload():
    exchange = RecordingExchange(mount_status=201)
    assert uploaded(exchange, chunk_size=3, mount_from="other") is BlobTransfer.MOUNTED
    assert [method for method, _, _ in exchange.sent] == ["POST"]


@pytest.mark.parametrize("status", [403, 404, 405])
def test_a_refused_mount_falls_back_to_a_plain_upload(status, push_image, fault_proxy, plain_registry,
                                                       second_plain_registry, unique_repo):
    pushed = push_image("oci")
    target = fault_proxy(second_plain_registry)
    target.fail("POST", "mount=", status=status, times=None)
    target_repo = unique_repo()

    copier, _ = mirror(f"{plain_registry.host}/{pushed.repo}:v1", f"{target.host}/{target_repo}:v1")
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    assert copier.stats.blobs_uploaded == len(pushed.blobs)
    assert target.count("POST", "mount=") == len(pushed.blobs)


def test_chunked_upload_path(push_image, second_plain_registry, unique_repo):
    pushed = push_image("large")
    target_repo = unique_repo()

    copier, _ = mirror(pushed.ref, f"{second_plain_registry.host}/{target_repo}:v1", chunk_size=3 * 1024 * 1024)
    assert copier.stats.blobs_uploaded == len(pushed.blobs)
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    with RawRegistry(second_plain_registry) as raw:
        for digest in pushed.blobs:
            assert raw.head_blob(target_repo, digest).status_code == 200
