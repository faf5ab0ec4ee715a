"""A repository bound to its registry's client (reconciler/registry/repository.py): every operation is the
client's, with the repository's path put first, over a client that records what it is asked."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.oci import limits
from reconciler.oci.digest import Digest
from reconciler.oci.manifest import Descriptor, Manifest
from reconciler.oci.reference import Repository
from reconciler.registry.repository import RemoteRepository

DIGEST = Digest.of(b"x")
DESCRIPTOR = Descriptor("application/octet-stream", DIGEST, 1)
MANIFEST = Manifest("application/vnd.oci.image.manifest.v1+json", DIGEST, b"x")


class RecordingClient:
    host = "registry-1.docker.io"
    limit = "its adaptive limit"
    pull_limit = "its pull budget"

    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple]] = []

    def open_blob(self, *args):
        self.asked.append(("open_blob", args))

    def __getattr__(self, operation: str):
        async def asked(*args):
            self.asked.append((operation, args))

        return asked


def chunks():
    raise AssertionError("not opened by the view")


@pytest.mark.parametrize(("operation", "args", "passed"), [
    ("head_manifest", ("v1",), ("v1",)),
    ("resolve_digest", ("v1",), ("v1",)),
    ("get_manifest", (DIGEST,), (DIGEST,)),
    ("put_manifest", ("v1", MANIFEST), ("v1", MANIFEST)),
    ("tags", (), (1000,)),
    ("tags", (2,), (2,)),
    ("referrers", (DIGEST,), (DIGEST,)),
    ("offers_referrers_api", (DIGEST,), (DIGEST,)),
    ("read_blob", (DESCRIPTOR,), (DESCRIPTOR, limits.MANIFEST_BYTES)),
    ("upload_blob", (DESCRIPTOR, chunks), (DESCRIPTOR, chunks, None)),
    ("upload_blob", (DESCRIPTOR, chunks, "library/other"), (DESCRIPTOR, chunks, "library/other")),
])
def test_each_operation_is_the_client_s_with_the_path_first(operation, args, passed):
    client = RecordingClient()
    asyncio.run(getattr(RemoteRepository(Repository("docker.io", "library/busybox"), client), operation)(*args))
    assert client.asked == [(operation, ("library/busybox", *passed))]


def test_a_blob_is_opened_with_the_path_first():
    client = RecordingClient()
    RemoteRepository(Repository("docker.io", "library/busybox"), client).open_blob(DESCRIPTOR)
    assert client.asked == [("open_blob", ("library/busybox", DESCRIPTOR))]


def test_the_host_and_limits_are_the_client_s_the_path_the_repository_s():
    remote = RemoteRepository(Repository("docker.io", "library/busybox"), RecordingClient())
    assert (remote.host, remote.path) == ("registry-1.docker.io", "library/busybox")
    assert (remote.limit, remote.pull_limit) == ("its adaptive limit", "its pull budget")
