"""Damaged and hostile OCI image layouts (reconciler/registry/layout/): each refused in one line naming
the path and what is wrong, and a reader never changes the layout it reads."""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
from pathlib import Path

import pytest

from reconciler.oci import reference
from reconciler.oci.digest import Digest, DigestMismatch
from reconciler.registry.copy import BlobTransferFailed, Copier
from reconciler.registry.layout import open_layout
from reconciler.registry.layout.archive import pack
from reconciler.registry.layout.directory import DirectoryLayout
from reconciler.registry.layout.format import LayoutError, MissingFromLayout
from tests.harness.rawhttp import RawRegistry
from tests.helpers_clients import registries, run
from tests.helpers_layout import one_line_naming, read_all, small_layout

SEED = int(os.environ.get("LAYOUT_TEST_SEED", "2024"))


def test_corrupt_blob_in_tar_fails_naming_it(tmp_path):
    digest, layout = small_layout(tmp_path / "layout")
    pack(layout.path, tmp_path / "layout.tar")
    data = bytearray((tmp_path / "layout.tar").read_bytes())
    blob = b"a blob of the test\n"
    data[data.index(blob)] ^= 1
    (tmp_path / "layout.tar").write_bytes(bytes(data))
    with open_layout(tmp_path / "layout.tar") as opened, pytest.raises(DigestMismatch) as raised:
        run(read_all(opened, digest))
    one_line_naming(raised.value, str(tmp_path / "layout.tar"), str(Digest.of(blob)))


def test_corrupt_or_missing_blob_fails_naming_it(tmp_path):
    print(f"LAYOUT_TEST_SEED={SEED}")  # shown by pytest when the test fails
    rng = random.Random(SEED)
    digest, layout = small_layout(tmp_path / "layout")
    blob = run(layout.get_manifest(digest)).blobs()[1]
    path = tmp_path / "layout" / "blobs" / "sha256" / blob.digest.hex
    data = bytearray(path.read_bytes())
    data[rng.randrange(len(data))] ^= 1
    path.write_bytes(bytes(data))

    with pytest.raises(DigestMismatch) as raised:
        run(read_all(open_layout(tmp_path / "layout"), digest))
    one_line_naming(raised.value, str(path.parent.parent.parent), str(blob.digest))
    assert path.read_bytes() == bytes(data), f"seed {SEED}: a reader changed the layout"

    path.unlink()
    with pytest.raises(MissingFromLayout) as missing:
        run(read_all(open_layout(tmp_path / "layout"), digest))
    one_line_naming(missing.value, str(blob.digest), "missing")

    (tmp_path / "layout" / "blobs" / "sha256" / digest.hex).unlink()
    assert run(open_layout(tmp_path / "layout").resolve_digest(str(digest))) is None
    with pytest.raises(MissingFromLayout) as listed:
        run(open_layout(tmp_path / "layout").resolve_digest("test:v1"))
    one_line_naming(listed.value, str(digest), "missing")


def test_corrupt_manifest_fails_naming_it(tmp_path):
    digest, _ = small_layout(tmp_path / "layout")
    path = tmp_path / "layout" / "blobs" / "sha256" / digest.hex
    path.write_bytes(path.read_bytes().replace(b"schemaVersion", b"schemaversion"))
    with pytest.raises(DigestMismatch) as raised:
        run(open_layout(tmp_path / "layout").get_manifest("test:v1"))
    one_line_naming(raised.value, str(digest))


_ZEROS = "sha256:" + "0" * 64


def _index_of(descriptor: dict) -> bytes:
    return json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "a/b", "digest": _ZEROS, "size": 1} | descriptor]}).encode()


@pytest.mark.parametrize("index, problem", [
    (b"{" * 10_000 + b"}" * 10_000, "nested deeper"),
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"schemaVersion": 2, "manifests": {}}', "manifests is not a list"),
    (b'{"schemaVersion": "2", "manifests": []}', "schemaVersion"),
    (b'{"schemaVersion": 2, "mediaType": "text/plain", "manifests": []}', "mediaType"),
    (b'{"schemaVersion": 2, "manifests": [7]}', "manifests[0]"),
    (_index_of({"digest": "sha256:00"}), "not a sha256 or sha512 digest"),
    (_index_of({"digest": "x" * 100_000}), "not a sha256 or sha512 digest"),
    (_index_of({"size": "1"}), "size"),
    (_index_of({"size": -1}), "size"),
    (_index_of({"mediaType": ["a/b"]}), "mediaType"),
    (_index_of({"annotations": {"org.opencontainers.image.ref.name": 7}}), "annotations"),
])
def test_bad_index_is_one_line(tmp_path, index, problem):
    small_layout(tmp_path / "layout")
    (tmp_path / "layout" / "index.json").write_bytes(index)
    with pytest.raises(LayoutError) as raised:
        run(open_layout(tmp_path / "layout").resolve_digest("test:v1"))
    one_line_naming(raised.value, str(tmp_path / "layout"), "index.json", problem)


def test_huge_index_is_refused_unread(tmp_path):
    small_layout(tmp_path / "layout")
    with open(tmp_path / "layout" / "index.json", "wb") as index:
        index.truncate(5 * 1024 * 1024)
    with pytest.raises(LayoutError) as raised:
        open_layout(tmp_path / "layout").index()
    one_line_naming(raised.value, "index.json", "over the 4 MiB limit")


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"), (b'{"imageLayoutVersion": "2.0.0"}', "2.0.0"), (b"[1]", "not a JSON object"),
])
def test_oci_layout_file_missing_or_of_another_version(tmp_path, content, problem):
    small_layout(tmp_path / "layout")
    if content is None:
        (tmp_path / "layout" / "oci-layout").unlink()
    else:
        (tmp_path / "layout" / "oci-layout").write_bytes(content)
    # A missing oci-layout is a new layout to the writer, which makes it: only the reader refuses.
    for opening in (open_layout,) if content is None else (open_layout, DirectoryLayout.create):
        with pytest.raises(LayoutError) as raised:
            opening(tmp_path / "layout")
        one_line_naming(raised.value, str(tmp_path / "layout"), problem)


def test_a_file_where_the_layout_directory_is_wanted(tmp_path):
    (tmp_path / "file").write_text("x")
    for opening in (open_layout, DirectoryLayout.create):
        with pytest.raises(LayoutError) as raised:
            opening(tmp_path / "file")
        one_line_naming(raised.value, str(tmp_path / "file"), "not a directory")


def _hostile_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                              ("index.json", b'{"schemaVersion":2,"manifests":[]}')):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member, problem", [
    (_member("../x"), "leaves the layout"),
    (_member("blobs/../../x"), "leaves the layout"),
    (_member("/etc/passwd"), "absolute name"),
    (_member("blobs/sha256/" + "0" * 64, tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
    (_member("index.json.bak", tarfile.LNKTYPE, "index.json"), "is a link"),
    (_member("blobs/sha256/" + "1" * 64, tarfile.CHRTYPE), "not a regular file"),
    (_member("blobs/sha256/" + "2" * 64, tarfile.FIFOTYPE), "not a regular file"),
    (_member("blobs/sha256/not-a-digest"), "blobs/<algorithm>/<digest>"),
    (_member("blobs/sha256/" + "3" * 63), "blobs/<algorithm>/<digest>"),
    (_member("blobs/md5/" + "4" * 32), "blobs/<algorithm>/<digest>"),
    (_member("etc", tarfile.DIRTYPE), "directory no OCI layout has"),
    (_member("index.json"), "appears twice"),
])
def test_hostile_tar_is_refused_in_one_line(tmp_path, member, problem):
    _hostile_tar(tmp_path / "hostile.tar", member)
    with pytest.raises(LayoutError) as raised:
        open_layout(tmp_path / "hostile.tar")
    one_line_naming(raised.value, str(tmp_path / "hostile.tar"), problem)


@pytest.mark.parametrize("content", [b"", b"not a tar at all" * 100])
def test_a_file_that_is_no_tar_is_refused(tmp_path, content):
    (tmp_path / "layout.tar").write_bytes(content)
    with pytest.raises(LayoutError) as raised:
        open_layout(tmp_path / "layout.tar")
    one_line_naming(raised.value, str(tmp_path / "layout.tar"))


def test_pack_refuses_a_stranger_in_the_layout(tmp_path):
    small_layout(tmp_path / "layout")
    (tmp_path / "layout" / "notes.txt").write_text("hello")
    with pytest.raises(LayoutError) as raised:
        pack(tmp_path / "layout", tmp_path / "layout.tar")
    one_line_naming(raised.value, "notes.txt", "not packed")
    assert not (tmp_path / "layout.tar").exists()
    assert not list(tmp_path.glob(".layout.tar*"))


def test_corrupt_blob_fails_a_copy_from_the_layout_and_reaches_no_registry(plain_registry, unique_repo, tmp_path):
    digest, layout = small_layout(tmp_path / "layout")
    blob = run(layout.get_manifest(digest)).blobs()[1]
    path = tmp_path / "layout" / "blobs" / "sha256" / blob.digest.hex
    path.write_bytes(path.read_bytes().upper())
    target = unique_repo("applied")

    async def main():
        async with registries() as regs, Copier(regs) as copier:
            repository = regs.repository(reference.parse(f"{plain_registry.host}/{target}").repository)
            source = open_layout(tmp_path / "layout")
            await copier.copy_referenced(source, await source.resolve_digest("test:v1"), repository)

    with pytest.raises(BlobTransferFailed) as raised:
        run(main())
    one_line_naming(raised.value, "reading the source", str(path), str(blob.digest))
    with RawRegistry(plain_registry) as raw:
        assert raw.head_blob(target, str(blob.digest)).status_code == 404
