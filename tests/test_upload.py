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
from reconciler.registry.upload import BlobTransfer, Uploads
from tests.harness.images import build_large_image
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_clients import assert_same_image, largest_blob, mirror

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
async def source(offset: int = 0) -> AsyncIterator[AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        yield BLOB[:4]
        yield BLOB[4:]

    yield chunks()


def uploaded(exchange: RecordingExchange, chunk_size: int | None, mount_from: str | None = None) -> BlobTransfer:
    descriptor = Descriptor("application/octet-stream", DIGEST, len(BLOB))
    return asyncio.run(Uploads(exchange, chunk_size).upload("app", descriptor, source, mount_from))


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


MiB = 1024 * 1024


def layer_reads(proxy, layer: str) -> list:
    return proxy.requests_matching("GET", f"/blobs/sha256:{layer}")


def test_a_chunked_upload_cut_short_goes_on_from_the_offset_the_registry_reports(
        push_image, fault_proxy, plain_registry, second_plain_registry, unique_repo):
    """The PATCH from 12 MiB is cut before the registry got a byte of it: the session goes on from 12 MiB,
    the source read again from the checkpoint at 8 MiB (hashed, not sent, up to 12 MiB)."""
    pushed = push_image(build_large_image("resume-chunked", size=20 * MiB))
    layer = largest_blob(pushed)
    size = pushed.blobs[f"sha256:{layer}"]
    source = fault_proxy(plain_registry)
    target = fault_proxy(second_plain_registry)
    target.cut_request("PATCH", "/blobs/uploads/", after_bytes=0, header=("Content-Range", f"^{12 * MiB}-"))
    target_repo = unique_repo()

    mirror(f"{source.host}/{pushed.repo}:v1", f"{target.host}/{target_repo}:v1", chunk_size=4 * MiB)
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    assert skopeo_inspect_raw(f"{second_plain_registry.host}/{target_repo}@{pushed.digest}") == pushed.manifest
    with RawRegistry(second_plain_registry) as raw:
        assert raw.head_blob(target_repo, f"sha256:{layer}").status_code == 200
    asked = target.requests_matching("GET", "/blobs/uploads/")
    assert [(r.status, r.action) for r in asked] == [(204, "pass")]
    patches = [r.headers["Content-Range"] for r in target.requests_matching("PATCH") if r.action == "pass"]
    assert patches.count(f"{12 * MiB}-{16 * MiB - 1}") == 1 and patches.count(f"{8 * MiB}-{12 * MiB - 1}") == 1
    assert target.count("POST") == len(pushed.blobs), "no new session"
    first, then = layer_reads(source, layer)
    assert (then.headers["Range"], then.status, then.response_bytes) == (f"bytes={8 * MiB}-", 206, size - 8 * MiB)
    assert first.response_bytes + then.response_bytes < 2 * size


def test_a_whole_upload_cut_short_starts_whole_where_docker_registry_forgets_the_session(
        push_image, fault_proxy, plain_registry, second_plain_registry, unique_repo):
    """docker-registry 2.8 cancels a session whose bytes outgrew its state token (a body cut midway):
    it answers the GET on the upload URL 404, and the next try starts whole in a new session."""
    pushed = push_image("large")
    layer = largest_blob(pushed)
    source = fault_proxy(plain_registry)
    target = fault_proxy(second_plain_registry)
    target.cut_request("PUT", f"digest=sha256%3A{layer}", after_bytes=3 * MiB)
    target_repo = unique_repo()

    mirror(f"{source.host}/{pushed.repo}:v1", f"{target.host}/{target_repo}:v1")
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    asked = target.requests_matching("GET", "/blobs/uploads/")
    assert [r.status for r in asked] == [404]
    puts = target.requests_matching("PUT", f"digest=sha256%3A{layer}")
    assert [r.action for r in puts] == ["cut_request", "pass"] and puts[0].request_bytes == 3 * MiB
    assert puts[0].url_path == asked[0].url_path != puts[1].url_path
    assert [r.headers.get("Range") for r in layer_reads(source, layer)] == [None, None]


@pytest.mark.parametrize("status, headers", [
    (404, {}),
    (204, {"Range": f"0-{8 * MiB}", "Location": "/v2/elsewhere/blobs/uploads/beyond-what-was-sent"}),
    (204, {"Range": "bytes=0-100", "Location": "/v2/elsewhere/blobs/uploads/malformed"}),
    (204, {"Location": "/v2/elsewhere/blobs/uploads/no-range"}),
    (204, {"Range": "0-99"}),
], ids=["404", "beyond-what-was-sent", "malformed", "no-range", "no-location"])
def test_a_session_whose_offset_is_not_told_starts_whole(status, headers, push_image, fault_proxy, plain_registry,
                                                        second_plain_registry, unique_repo):
    """The PATCH from 4 MiB (8 MiB sent at most) cut; the registry's answer about the session says no usable offset."""
    pushed = push_image("large")
    target = fault_proxy(second_plain_registry)
    target.cut_request("PATCH", "/blobs/uploads/", after_bytes=0, header=("Content-Range", f"^{4 * MiB}-"))
    target.fail("GET", "/blobs/uploads/", status=status, headers=headers)
    target_repo = unique_repo()

    mirror(f"{plain_registry.host}/{pushed.repo}:v1", f"{target.host}/{target_repo}:v1", chunk_size=4 * MiB)
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    assert [r.action for r in target.requests_matching("GET", "/blobs/uploads/")] == ["respond"]
    assert target.count("POST") == len(pushed.blobs) + 1, "one new session"
    assert target.count(None, "/v2/elsewhere/") == 0


def test_a_session_reported_at_another_origin_gets_no_credentials(push_image, fault_proxy, plain_registry,
                                                                 htpasswd_registry, unique_repo):
    """The GET on a cut session answers a Location at another origin: the rest goes there without the target's
    Authorization (the origin rule of every upload Location); refused there (an answer, not a cut), the blob
    starts whole in a new session at the target."""
    pushed = push_image("large")
    target = fault_proxy(htpasswd_registry)
    elsewhere = fault_proxy(htpasswd_registry)
    target.cut_request("PATCH", "/blobs/uploads/", after_bytes=0, header=("Content-Range", f"^{4 * MiB}-"))
    target.redirect("GET", "/blobs/uploads/", lambda path: elsewhere.url + path, status=204,
                    headers={"Range": f"0-{4 * MiB - 1}"})
    target_repo = unique_repo()

    mirror(f"{plain_registry.host}/{pushed.repo}:v1", f"{target.host}/{target_repo}:v1",
           {target.host: htpasswd_registry.credentials}, chunk_size=4 * MiB)
    assert_same_image(pushed, htpasswd_registry.host, target_repo, creds=htpasswd_registry.credentials)
    went_on = elsewhere.requests_matching("PATCH")
    assert [r.headers["Content-Range"] for r in went_on] == [f"{4 * MiB}-{8 * MiB - 1}"]
    assert "Authorization" not in went_on[0].headers
    assert all("Authorization" in r.headers for r in target.requests_matching("PATCH"))
    sessions = [r for r in target.requests_matching("POST", "/blobs/uploads/") if r.status == 202]
    assert len(sessions) == len(pushed.blobs) + 1


def test_a_session_cut_before_its_first_byte_goes_on_from_0(push_image, fault_proxy, plain_registry,
                                                            second_plain_registry, unique_repo):
    """docker-registry reports an empty session as ``Range: 0-0`` (as it does one of 1 byte): read as 0 bytes held."""
    pushed = push_image("large")
    target = fault_proxy(second_plain_registry)
    target.cut_request("PATCH", "/blobs/uploads/", after_bytes=0, header=("Content-Range", f"^0-{4 * MiB - 1}$"))
    target_repo = unique_repo()

    mirror(f"{plain_registry.host}/{pushed.repo}:v1", f"{target.host}/{target_repo}:v1", chunk_size=4 * MiB)
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    asked = target.requests_matching("GET", "/blobs/uploads/")
    assert [r.status for r in asked] == [204]
    assert target.count("POST") == len(pushed.blobs), "no new session"
    first_chunks = [r for r in target.requests_matching("PATCH") if r.headers["Content-Range"] == f"0-{4 * MiB - 1}"]
    assert [r.action for r in first_chunks] == ["cut_request", "pass"]
    assert first_chunks[0].url_path == first_chunks[1].url_path == asked[0].url_path
