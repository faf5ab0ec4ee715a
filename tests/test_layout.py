"""OCI image layouts (reconciler/registry/layout/): written from a real registry through the Copier and
read back by skopeo, read when skopeo wrote them, packed into a tar and read in place, resumed after
an interrupted write. Damaged and hostile layouts: tests/test_layout_hostile.py."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tarfile
from pathlib import Path

import pytest

from reconciler import files
from reconciler.oci import reference
from reconciler.oci.digest import Digest, DigestMismatch
from reconciler.oci.manifest import Descriptor, Manifest
from reconciler.registry.copy import Copier
from reconciler.registry.layout import open_layout
from reconciler.registry.layout.archive import TarLayout, pack
from reconciler.registry.layout.directory import DirectoryLayout
from reconciler.registry.layout.format import IndexEntry, LayoutError
from reconciler.registry.upload import BlobTransfer
from tests.harness import images
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import run_skopeo, skopeo_copy, skopeo_inspect_raw
from tests.helpers_clients import registries, run
from tests.helpers_layout import blob_descriptor, chunks_of, manifest_descriptor, one_line_naming, read_all

SEED = int(os.environ.get("LAYOUT_TEST_SEED", "2024"))


def _export(pushed_images: list[images.PushedImage], directory: Path, ref_names: list[str]) -> list[Manifest]:
    """Each pushed image into the layout through the real Copier (the layout duck-typed as its target), then index.json."""

    async def main() -> list[Manifest]:
        layout = DirectoryLayout.create(directory)
        manifests = []
        async with registries() as regs, Copier(regs) as copier:
            for pushed in pushed_images:
                source = regs.repository(reference.parse(pushed.ref).repository)
                manifest = await copier.copy_referenced(source, Digest.parse(pushed.digest), layout)
                await layout.put_manifest(str(manifest.digest), manifest)
                manifests.append(manifest)
        layout.write_index([IndexEntry(manifest_descriptor(manifest), name) for manifest, name in zip(manifests, ref_names)])
        return manifests

    return run(main())


def _blob_files(directory: Path) -> dict[str, bytes]:
    return {f"sha256:{path.name}": path.read_bytes() for path in (directory / "blobs" / "sha256").iterdir()}


def _expected_contents(pushed: images.PushedImage) -> set[str]:
    return set(pushed.blobs) | set(pushed.image.manifest_bytes())


# -- written by us, read by skopeo ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["oci-index", "oci"])
def test_written_layout_is_read_and_pushed_by_skopeo(kind, push_image, plain_registry, unique_repo, tmp_path):
    pushed = push_image(kind)
    ref_name = f"{plain_registry.host}/mirror/{kind}:v1"
    _export([pushed], tmp_path / "layout", [ref_name])

    files = _blob_files(tmp_path / "layout")
    assert set(files) == _expected_contents(pushed)
    assert all(name == "sha256:" + hashlib.sha256(data).hexdigest() for name, data in files.items())
    assert json.loads((tmp_path / "layout" / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    assert skopeo_inspect_raw(f"oci:{tmp_path / 'layout'}:{ref_name}") == pushed.manifest

    target = unique_repo("from-layout")
    skopeo_copy(f"oci:{tmp_path / 'layout'}:{ref_name}", f"docker://{plain_registry.host}/{target}:v1")
    with RawRegistry(plain_registry) as raw:
        assert raw.head_manifest(target, "v1").headers["Docker-Content-Digest"] == pushed.digest
        assert raw.get_manifest(target, "v1").content == pushed.manifest


def test_images_sharing_a_layer_store_it_once(push_image, tmp_path):
    shared = images.layer({"base/os-release": b"ID=shared\n"})
    built = [images.Image.single(images.build_manifest(
        [shared, images.layer({"app/name": name.encode()})], images.linux("amd64"), {"config": {"Cmd": [name]}}))
        for name in ("first", "second")]
    first, second = push_image(built[0]), push_image(built[1])

    manifests = _export([first, second], tmp_path / "layout", ["a:1", "b:1"])

    files = _blob_files(tmp_path / "layout")
    assert set(files) == _expected_contents(first) | _expected_contents(second)
    assert len(files) == len(_expected_contents(first)) + len(_expected_contents(second)) - 1
    assert [entry.ref_name for entry in open_layout(tmp_path / "layout").index()] == ["a:1", "b:1"]
    assert [str(manifest.digest) for manifest in manifests] == [first.digest, second.digest]


def test_index_is_written_in_one_order_whatever_the_order_given(tmp_path):
    layout = DirectoryLayout.create(tmp_path / "layout")
    entries = [IndexEntry(Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.of(name.encode()), 3), name)
               for name in ("c:1", "a:1", "b:1")]
    layout.write_index(entries)
    once = (tmp_path / "layout" / "index.json").read_bytes()
    layout.write_index(list(reversed(entries)))
    assert (tmp_path / "layout" / "index.json").read_bytes() == once
    assert [entry.ref_name for entry in layout.index()] == ["a:1", "b:1", "c:1"]


# -- written by skopeo, read by us ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["oci-index", "oci"])
def test_layout_written_by_skopeo_reads_and_verifies(kind, push_image, tmp_path):
    pushed = push_image(kind)
    skopeo_copy(f"docker://{pushed.ref}", f"oci:{tmp_path / 'skopeo'}:release")

    layout = open_layout(tmp_path / "skopeo")
    assert run(layout.resolve_digest("release")) == Digest.parse(pushed.digest)
    assert run(layout.resolve_digest("absent")) is None
    read = run(read_all(layout, Digest.parse(pushed.digest)))
    assert set(read) == _expected_contents(pushed)
    assert all(digest == "sha256:" + hashlib.sha256(data).hexdigest() for digest, data in read.items())
    assert run(layout.get_manifest("release")).data == pushed.manifest


@pytest.mark.parametrize("packed", [False, True], ids=["directory", "tar"])
def test_layout_as_the_copiers_source_pushes_the_same_digests(packed, push_image, plain_registry, unique_repo, tmp_path):
    """What apply --from will do: the Copier reads the layout (duck-typed as its source) and writes a registry."""
    pushed = push_image("oci-index")
    _export([pushed], tmp_path / "layout", ["mirror/app:v1"])
    if packed:
        pack(tmp_path / "layout", tmp_path / "layout.tar")
    target = unique_repo("applied")

    async def main():
        with open_layout(tmp_path / ("layout.tar" if packed else "layout")) as layout:
            async with registries() as regs, Copier(regs) as copier:
                repository = regs.repository(reference.parse(f"{plain_registry.host}/{target}").repository)
                manifest = await copier.copy_referenced(layout, await layout.resolve_digest("mirror/app:v1"), repository)
                await repository.put_manifest("v1", manifest)
                return copier.stats

    stats = run(main())
    assert stats.blobs_uploaded == len(pushed.blobs)
    with RawRegistry(plain_registry) as raw:
        assert raw.get_manifest(target, "v1").content == pushed.manifest
        for digest, size in pushed.blobs.items():
            assert int(raw.head_blob(target, digest).headers["Content-Length"]) == size


# -- tar ------------------------------------------------------------------------------


def test_tar_is_deterministic_and_read_in_place(push_image, tmp_path):
    pushed = push_image("oci-index")
    _export([pushed], tmp_path / "layout", ["mirror/app:v1"])
    (tmp_path / "layout" / "images.lock").write_text("images: []\n")

    pack(tmp_path / "layout", tmp_path / "first.tar")
    pack(tmp_path / "layout", tmp_path / "second.tar")
    assert (tmp_path / "first.tar").read_bytes() == (tmp_path / "second.tar").read_bytes()
    with tarfile.open(tmp_path / "first.tar") as tar:
        members = tar.getmembers()
    assert [member.name for member in members] == sorted(member.name for member in members)
    assert {(member.mtime, member.uid, member.gid, member.uname, member.gname) for member in members} == {(0, 0, 0, "", "")}

    with open_layout(tmp_path / "first.tar") as layout:
        assert isinstance(layout, TarLayout)
        assert run(layout.resolve_digest("mirror/app:v1")) == Digest.parse(pushed.digest)
        assert run(read_all(layout, Digest.parse(pushed.digest))) == run(
            read_all(open_layout(tmp_path / "layout"), Digest.parse(pushed.digest)))
    assert not list(tmp_path.glob(f".*{files.TEMPORARY_SUFFIX}"))
    archive = run_skopeo(["inspect", "--raw", f"oci-archive:{tmp_path / 'first.tar'}:mirror/app:v1"])
    assert archive.stdout == pushed.manifest.decode()


# -- resumable writing ------------------------------------------------------------------


def test_interrupted_write_leaves_nothing_and_a_later_one_completes(tmp_path):
    data = b"resumable bytes of a layer" * 10
    layout = DirectoryLayout.create(tmp_path / "layout")
    final = tmp_path / "layout" / "blobs" / "sha256" / Digest.of(data).hex

    with pytest.raises(OSError, match="went away"):
        run(layout.upload_blob(blob_descriptor(data), chunks_of(data, fail_after=3)))
    assert not final.exists()
    assert os.listdir(final.parent) == []

    assert run(layout.upload_blob(blob_descriptor(data), chunks_of(data))) is BlobTransfer.UPLOADED
    assert final.read_bytes() == data


def test_bytes_not_matching_their_digest_are_not_kept(tmp_path):
    data = b"the bytes the digest names"
    layout = DirectoryLayout.create(tmp_path / "layout")
    with pytest.raises(DigestMismatch) as raised:
        run(layout.upload_blob(blob_descriptor(data), chunks_of(data.replace(b"the", b"thE"))))
    one_line_naming(raised.value, str(Digest.of(data)))
    assert os.listdir(tmp_path / "layout" / "blobs" / "sha256") == []
    with pytest.raises(LayoutError, match="more than the"):
        run(layout.upload_blob(blob_descriptor(data), chunks_of(data + b"!")))
    assert os.listdir(tmp_path / "layout" / "blobs" / "sha256") == []


def test_a_correct_blob_is_kept_and_a_corrupt_one_replaced(tmp_path):
    print(f"LAYOUT_TEST_SEED={SEED}")  # shown by pytest when the test fails
    rng = random.Random(SEED)
    data = rng.randbytes(5000)
    DirectoryLayout.create(tmp_path / "layout")
    run(DirectoryLayout.create(tmp_path / "layout").upload_blob(blob_descriptor(data), chunks_of(data)))
    final = tmp_path / "layout" / "blobs" / "sha256" / Digest.of(data).hex
    before = final.stat()

    rerun = DirectoryLayout.create(tmp_path / "layout")  # a new run hashes it again, once
    assert run(rerun.upload_blob(blob_descriptor(data), chunks_of(data, fail_after=0))) is BlobTransfer.MOUNTED
    after = final.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    damaged = bytearray(data)
    position = rng.randrange(len(damaged))
    damaged[position] ^= 0x40
    final.write_bytes(bytes(damaged))
    rerun = DirectoryLayout.create(tmp_path / "layout")
    assert run(rerun.upload_blob(blob_descriptor(data), chunks_of(data))) is BlobTransfer.UPLOADED, f"seed {SEED}"
    assert final.read_bytes() == data, f"seed {SEED}, byte {position}"


def test_abandoned_temporaries_are_removed_when_the_layout_is_opened_to_write(tmp_path):
    DirectoryLayout.create(tmp_path / "layout")
    abandoned = tmp_path / "layout" / "blobs" / "sha256" / f".abc.x1{files.TEMPORARY_SUFFIX}"
    abandoned.parent.mkdir()
    abandoned.write_bytes(b"half")
    DirectoryLayout.create(tmp_path / "layout")
    assert not abandoned.exists()
