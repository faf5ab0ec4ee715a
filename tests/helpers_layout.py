"""Layouts as the tests build and read them (tests/test_layout*.py): small images written with the
layout's own API, blob streams that fail on cue, everything reachable read back."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from reconciler.oci.digest import Digest
from reconciler.oci.manifest import Descriptor, Manifest
from reconciler.registry.layout.directory import DirectoryLayout
from reconciler.registry.layout.format import IndexEntry
from reconciler.registry.layout.reader import Layout
from tests.helpers_clients import run


def manifest_descriptor(manifest: Manifest) -> Descriptor:
    return Descriptor(manifest.media_type, manifest.digest, len(manifest.data))


async def read_all(layout: Layout, digest: Digest) -> dict[str, bytes]:
    """Every manifest and blob reachable from ``digest``, as the layout serves them (verified)."""
    found: dict[str, bytes] = {}
    manifest = await layout.get_manifest(digest)
    found[str(digest)] = manifest.data
    for child in manifest.children():
        found |= await read_all(layout, child.digest)
    for blob in manifest.blobs():
        async with layout.open_blob(blob) as chunks:
            found[str(blob.digest)] = b"".join([chunk async for chunk in chunks])
    return found


def one_line_naming(error: BaseException, *words: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    for word in words:
        assert word in message, (word, message)


def chunks_of(data: bytes, fail_after: int | None = None):
    """An opener as upload_blob takes it: ``data`` in 4-byte chunks, an error after ``fail_after`` of them."""

    @contextlib.asynccontextmanager
    async def opened():
        async def chunks():
            for number, start in enumerate(range(0, len(data), 4)):
                if number == fail_after:
                    raise OSError("the source went away")
                yield data[start:start + 4]
        yield chunks()

    return opened


def blob_descriptor(data: bytes) -> Descriptor:
    return Descriptor("application/octet-stream", Digest.of(data), len(data))


def small_layout(directory: Path) -> tuple[Digest, DirectoryLayout]:
    """An image of one config and one layer, written with the layout's own API."""
    layout = DirectoryLayout.create(directory)
    config, blob = b"{}", b"a blob of the test\n"
    for data in (config, blob):
        run(layout.upload_blob(blob_descriptor(data), chunks_of(data)))
    manifest_bytes = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(Digest.of(config)),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(Digest.of(blob)),
                    "size": len(blob)}],
    }).encode()
    manifest = Manifest("application/vnd.oci.image.manifest.v1+json", Digest.of(manifest_bytes), manifest_bytes)
    run(layout.put_manifest("v1", manifest))
    layout.write_index([IndexEntry(manifest_descriptor(manifest), "test:v1")])
    return manifest.digest, layout
