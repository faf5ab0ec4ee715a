"""OCI image layouts (reconciler/registry/layout/): written from a real registry through the Copier and
read back by skopeo, read when skopeo wrote them, packed into a tar and read in place, resumed after
an interrupted write, and refused with one line when damaged or hostile."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import tarfile
from pathlib import Path

import pytest

from reconciler.oci import reference
from reconciler.oci.digest import Digest, DigestMismatch
from reconciler.oci.manifest import Descriptor, Manifest
from reconciler.registry.copy import Copier
from reconciler.registry.layout import open_layout
from reconciler.registry.layout.archive import TarLayout, pack
from reconciler.registry.layout.directory import DirectoryLayout
from reconciler.registry.layout.format import IndexEntry, LayoutError, MissingFromLayout
from reconciler.registry.layout.reader import Layout
from reconciler.registry.upload import BlobTransfer
from tests.harness import images
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import run_skopeo, skopeo_copy, skopeo_inspect_raw
from tests.helpers_clients import registries, run

SEED = int(os.environ.get("LAYOUT_TEST_SEED", "2024"))


def _export(pushed_images: list[images.PushedImage], directory: Path, ref_names: list[str]) -> list[Manifest]:
    """Each pushed image into the layout through the real Copier (the layout duck-typed as its target), then index.json."""

    async def main() -> list[Manifest]:
        layout = DirectoryLayout.create(directory)
        manifests = []
        async with registries() as regs, Copier(regs) as copier:
            for pushed in pushed_images:
                source = regs.repository(reference.parse(pushed.ref).repository)
                manifest = await source.get_manifest(Digest.parse(pushed.digest))
                await copier._copy_references(source, layout, manifest)  # the wiring will open this up
                await layout.put_manifest(str(manifest.digest), manifest)
                manifests.append(manifest)
        layout.write_index([IndexEntry(_descriptor(manifest), name) for manifest, name in zip(manifests, ref_names)])
        return manifests

    return run(main())


def _descriptor(manifest: Manifest) -> Descriptor:
    return Descriptor(manifest.media_type, manifest.digest, len(manifest.data))


def _blob_files(directory: Path) -> dict[str, bytes]:
    return {f"sha256:{path.name}": path.read_bytes() for path in (directory / "blobs" / "sha256").iterdir()}


def _expected_contents(pushed: images.PushedImage) -> set[str]:
    return set(pushed.blobs) | set(pushed.image.manifest_bytes())


async def _read_all(layout: Layout, digest: Digest) -> dict[str, bytes]:
    """Every manifest and blob reachable from ``digest``, as the layout serves them (verified)."""
    found: dict[str, bytes] = {}
    manifest = await layout.get_manifest(digest)
    found[str(digest)] = manifest.data
    for child in manifest.children():
        found |= await _read_all(layout, child.digest)
    for blob in manifest.blobs():
        async with layout.open_blob(blob) as chunks:
            found[str(blob.digest)] = b"".join([chunk async for chunk in chunks])
    return found


def _one_line_naming(error: BaseException, *words: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    for word in words:
        assert word in message, (word, message)


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
    read = run(_read_all(layout, Digest.parse(pushed.digest)))
    assert set(read) == _expected_contents(pushed)
    assert all(digest == "sha256:" + hashlib.sha256(data).hexdigest() for digest, data in read.items())
    assert run(layout.get_manifest("release")).data == pushed.manifest


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
        assert run(_read_all(layout, Digest.parse(pushed.digest))) == run(
            _read_all(open_layout(tmp_path / "layout"), Digest.parse(pushed.digest)))
    assert not list(tmp_path.glob(".*partial"))
    archive = run_skopeo(["inspect", "--raw", f"oci-archive:{tmp_path / 'first.tar'}:mirror/app:v1"])
    assert archive.stdout == pushed.manifest.decode()


def test_corrupt_blob_in_tar_fails_naming_it(tmp_path):
    digest, layout = _small_layout(tmp_path / "layout")
    pack(layout.path, tmp_path / "layout.tar")
    data = bytearray((tmp_path / "layout.tar").read_bytes())
    blob = b"a blob of the test\n"
    data[data.index(blob)] ^= 1
    (tmp_path / "layout.tar").write_bytes(bytes(data))
    with open_layout(tmp_path / "layout.tar") as opened, pytest.raises(DigestMismatch) as raised:
        run(_read_all(opened, digest))
    _one_line_naming(raised.value, str(tmp_path / "layout.tar"), str(Digest.of(blob)))


# -- resumable writing ------------------------------------------------------------------


def _chunks_of(data: bytes, fail_after: int | None = None):
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


def _blob(data: bytes) -> Descriptor:
    return Descriptor("application/octet-stream", Digest.of(data), len(data))


def test_interrupted_write_leaves_nothing_and_a_later_one_completes(tmp_path):
    data = b"resumable bytes of a layer" * 10
    layout = DirectoryLayout.create(tmp_path / "layout")
    final = tmp_path / "layout" / "blobs" / "sha256" / Digest.of(data).hex

    with pytest.raises(OSError, match="went away"):
        run(layout.upload_blob(_blob(data), _chunks_of(data, fail_after=3)))
    assert not final.exists()
    assert os.listdir(final.parent) == []

    assert run(layout.upload_blob(_blob(data), _chunks_of(data))) is BlobTransfer.UPLOADED
    assert final.read_bytes() == data


def test_bytes_not_matching_their_digest_are_not_kept(tmp_path):
    data = b"the bytes the digest names"
    layout = DirectoryLayout.create(tmp_path / "layout")
    with pytest.raises(DigestMismatch) as raised:
        run(layout.upload_blob(_blob(data), _chunks_of(data.replace(b"the", b"thE"))))
    _one_line_naming(raised.value, str(Digest.of(data)))
    assert os.listdir(tmp_path / "layout" / "blobs" / "sha256") == []
    with pytest.raises(LayoutError, match="more than the"):
        run(layout.upload_blob(_blob(data), _chunks_of(data + b"!")))
    assert os.listdir(tmp_path / "layout" / "blobs" / "sha256") == []


def test_a_correct_blob_is_kept_and_a_corrupt_one_replaced(tmp_path):
    rng = random.Random(SEED)
    data = rng.randbytes(5000)
    DirectoryLayout.create(tmp_path / "layout")
    run(DirectoryLayout.create(tmp_path / "layout").upload_blob(_blob(data), _chunks_of(data)))
    final = tmp_path / "layout" / "blobs" / "sha256" / Digest.of(data).hex
    before = final.stat()

    rerun = DirectoryLayout.create(tmp_path / "layout")  # a new run hashes it again, once
    assert run(rerun.upload_blob(_blob(data), _chunks_of(data, fail_after=0))) is BlobTransfer.MOUNTED
    after = final.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    damaged = bytearray(data)
    position = rng.randrange(len(damaged))
    damaged[position] ^= 0x40
    final.write_bytes(bytes(damaged))
    rerun = DirectoryLayout.create(tmp_path / "layout")
    assert run(rerun.upload_blob(_blob(data), _chunks_of(data))) is BlobTransfer.UPLOADED, f"seed {SEED}"
    assert final.read_bytes() == data, f"seed {SEED}, byte {position}"


def test_abandoned_temporaries_are_removed_when_the_layout_is_opened_to_write(tmp_path):
    DirectoryLayout.create(tmp_path / "layout")
    abandoned = tmp_path / "layout" / "blobs" / "sha256" / ".abc.x1.partial"
    abandoned.parent.mkdir()
    abandoned.write_bytes(b"half")
    DirectoryLayout.create(tmp_path / "layout")
    assert not abandoned.exists()


# -- damaged and hostile layouts ------------------------------------------------------------


def _small_layout(directory: Path) -> tuple[Digest, DirectoryLayout]:
    """An image of one config and one layer, written with the layout's own API."""
    layout = DirectoryLayout.create(directory)
    config, blob = b"{}", b"a blob of the test\n"
    for data in (config, blob):
        run(layout.upload_blob(_blob(data), _chunks_of(data)))
    manifest_bytes = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(Digest.of(config)),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(Digest.of(blob)),
                    "size": len(blob)}],
    }).encode()
    manifest = Manifest("application/vnd.oci.image.manifest.v1+json", Digest.of(manifest_bytes), manifest_bytes)
    run(layout.put_manifest("v1", manifest))
    layout.write_index([IndexEntry(_descriptor(manifest), "test:v1")])
    return manifest.digest, layout


def test_corrupt_or_missing_blob_fails_naming_it(tmp_path):
    rng = random.Random(SEED)
    digest, layout = _small_layout(tmp_path / "layout")
    blob = next(iter(run(layout.get_manifest(digest)).blobs()[1:]))
    path = tmp_path / "layout" / "blobs" / "sha256" / blob.digest.hex
    data = bytearray(path.read_bytes())
    data[rng.randrange(len(data))] ^= 1
    path.write_bytes(bytes(data))

    with pytest.raises(DigestMismatch) as raised:
        run(_read_all(open_layout(tmp_path / "layout"), digest))
    _one_line_naming(raised.value, str(path.parent.parent.parent), str(blob.digest))
    assert path.read_bytes() == bytes(data), f"seed {SEED}: a reader changed the layout"

    path.unlink()
    with pytest.raises(MissingFromLayout) as missing:
        run(_read_all(open_layout(tmp_path / "layout"), digest))
    _one_line_naming(missing.value, str(blob.digest), "missing")


def test_corrupt_manifest_fails_naming_it(tmp_path):
    digest, _ = _small_layout(tmp_path / "layout")
    path = tmp_path / "layout" / "blobs" / "sha256" / digest.hex
    path.write_bytes(path.read_bytes().replace(b"schemaVersion", b"schemaversion"))
    with pytest.raises(DigestMismatch) as raised:
        run(open_layout(tmp_path / "layout").get_manifest("test:v1"))
    _one_line_naming(raised.value, str(digest))


@pytest.mark.parametrize("index, problem", [
    (b"{" * 10_000 + b"}" * 10_000, "nested deeper"),
    (b"not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"schemaVersion": 2, "manifests": {}}', "manifests is not a list"),
    (b'{"schemaVersion": "2", "manifests": []}', "schemaVersion"),
    (b'{"schemaVersion": 2, "mediaType": "text/plain", "manifests": []}', "mediaType"),
    (b'{"schemaVersion": 2, "manifests": [{"mediaType": "a/b", "digest": "sha256:00", "size": 1}]}', "digest"),
    (b'{"schemaVersion": 2, "manifests": [{"mediaType": "a/b", "digest": "sha256:' + b"0" * 64 +
     b'", "size": "1"}]}', "size"),
    (b'{"schemaVersion": 2, "manifests": [{"mediaType": "a/b", "digest": "sha256:' + b"0" * 64 +
     b'", "size": 1, "annotations": {"org.opencontainers.image.ref.name": 7}}]}', "annotations"),
    (b'{"schemaVersion": 2, "manifests": [7]}', "manifests[0]"),
])
def test_bad_index_is_one_line(tmp_path, index, problem):
    _small_layout(tmp_path / "layout")
    (tmp_path / "layout" / "index.json").write_bytes(index)
    with pytest.raises(LayoutError) as raised:
        run(open_layout(tmp_path / "layout").resolve_digest("test:v1"))
    _one_line_naming(raised.value, str(tmp_path / "layout"), "index.json", problem)


def test_huge_index_is_refused_unread(tmp_path):
    _small_layout(tmp_path / "layout")
    with open(tmp_path / "layout" / "index.json", "wb") as index:
        index.truncate(5 * 1024 * 1024)
    with pytest.raises(LayoutError) as raised:
        open_layout(tmp_path / "layout").index()
    _one_line_naming(raised.value, "index.json", "over the 4 MiB limit")


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"), (b'{"imageLayoutVersion": "2.0.0"}', "2.0.0"), (b"[1]", "not a JSON object"),
])
def test_oci_layout_file_missing_or_of_another_version(tmp_path, content, problem):
    _small_layout(tmp_path / "layout")
    if content is None:
        (tmp_path / "layout" / "oci-layout").unlink()
    else:
        (tmp_path / "layout" / "oci-layout").write_bytes(content)
    # A missing oci-layout is a new layout to the writer, which makes it: only the reader refuses.
    for opening in (open_layout,) if content is None else (open_layout, DirectoryLayout.create):
        with pytest.raises(LayoutError) as raised:
            opening(tmp_path / "layout")
        _one_line_naming(raised.value, str(tmp_path / "layout"), problem)


def test_a_file_where_the_layout_directory_is_wanted(tmp_path):
    (tmp_path / "file").write_text("x")
    for opening in (open_layout, DirectoryLayout.create):
        with pytest.raises(LayoutError) as raised:
            opening(tmp_path / "file")
        _one_line_naming(raised.value, str(tmp_path / "file"), "not a directory")


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
    _one_line_naming(raised.value, str(tmp_path / "hostile.tar"), problem)


@pytest.mark.parametrize("content", [b"", b"not a tar at all" * 100])
def test_a_file_that_is_no_tar_is_refused(tmp_path, content):
    (tmp_path / "layout.tar").write_bytes(content)
    with pytest.raises(LayoutError) as raised:
        open_layout(tmp_path / "layout.tar")
    _one_line_naming(raised.value, str(tmp_path / "layout.tar"))


def test_pack_refuses_a_stranger_in_the_layout(tmp_path):
    _small_layout(tmp_path / "layout")
    (tmp_path / "layout" / "notes.txt").write_text("hello")
    with pytest.raises(LayoutError) as raised:
        pack(tmp_path / "layout", tmp_path / "layout.tar")
    _one_line_naming(raised.value, "notes.txt", "not packed")
    assert not (tmp_path / "layout.tar").exists()
    assert not list(tmp_path.glob(".layout.tar*"))

