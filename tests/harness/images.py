"""Deterministic images for the tests, the demo and the benchmark, built without the code under test.

Everything here is computed from bytes we write ourselves: tar layers with
fixed metadata, gzip members with mtime=0 and *stored* (uncompressed)
deflate blocks so the bytes do not depend on the local zlib build (and, as a
``tar+gzip`` media type, no tool recompresses them), JSON serialised with
sorted keys.  The same seed gives the same digests on every run and machine
(the demo's committed images.lock relies on it).  The tests push with
``skopeo copy --all --preserve-digests oci:<layout>:<tag> docker://...`` and
check the result with ``skopeo inspect --raw``; Docker media types go through
skopeo's ``dir:`` transport instead (``oci:`` only accepts OCI types).  The
benchmark pushes with raw HTTP (``bench/_images.py``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .skopeo import skopeo_copy, skopeo_inspect_raw

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
FIXED_MTIME = 1700000000
CREATED = "2023-11-14T22:13:20Z"  # FIXED_MTIME
EXECUTABLE_DIRS = ("bin/", "app/")  # files under these get mode 0755, as binaries in a real image
MiB = 1024 * 1024


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj, indent: int | None = None) -> bytes:
    """Sorted keys, compact; with ``indent`` a pretty form no tool would re-serialise to."""
    return json.dumps(obj, sort_keys=True, indent=indent,
                      separators=None if indent else (",", ":")).encode()


# --------------------------------------------------------------------- bytes
def seeded_bytes(seed: str, size: int) -> bytes:
    """``size`` pseudo-random (incompressible) bytes, a pure function of ``seed`` (SHAKE-256)."""
    return hashlib.shake_256(seed.encode()).digest(size)


def _tar_header(name: str, size: int | None) -> bytes:
    """The USTAR header of a file of ``size`` bytes, or of a directory for None."""
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = FIXED_MTIME, 0, 0, "root", "root"
    if size is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.mode, info.size = 0o755 if name.startswith(EXECUTABLE_DIRS) else 0o644, size
    return info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")


def _tar_padding(length: int) -> bytes:
    """Zeros up to the next 512-byte block."""
    return b"\0" * (-length % tarfile.BLOCKSIZE)


def _tar_end(length: int) -> bytes:
    """After ``length`` bytes of members: two zero blocks, then zeros to a whole record (as tarfile writes)."""
    return b"\0" * (2 * tarfile.BLOCKSIZE + -(length + 2 * tarfile.BLOCKSIZE) % tarfile.RECORDSIZE)


def make_tar(files: dict[str, bytes]) -> bytes:
    """A USTAR archive of ``files`` (path -> content) and their parent directories, with fixed metadata."""
    dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    entries = sorted([(d, None) for d in dirs] + list(files.items()))
    members = b"".join(
        _tar_header(name, None) if content is None
        else _tar_header(name, len(content)) + content + _tar_padding(len(content))
        for name, content in entries)
    return members + _tar_end(len(members))


def stream_tar(name: str, size: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A tar of one file of ``size`` bytes arriving in ``chunks``, never whole in memory."""
    header = _tar_header(name, size)
    yield header
    yield from chunks
    yield _tar_padding(size) + _tar_end(len(header) + size + len(_tar_padding(size)))


_STORED_BLOCK = 0xFFFF


def _stored_block(data: bytes | memoryview, final: bool) -> bytes:
    return bytes([final]) + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data


def stream_gzip_stored(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """A gzip member (mtime=0, no name) holding ``pieces`` in stored deflate blocks of 64 KiB - 1."""
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    crc = size = 0
    pending = b""  # the last block is held back until we know it is final
    for piece in pieces:
        crc, size = zlib.crc32(piece, crc), size + len(piece)
        data = memoryview(pending + piece)
        cut = max(0, len(data) - 1) // _STORED_BLOCK * _STORED_BLOCK
        for start in range(0, cut, _STORED_BLOCK):
            yield _stored_block(data[start:start + _STORED_BLOCK], final=False)
        pending = bytes(data[cut:])
    yield _stored_block(pending, final=True)
    yield struct.pack("<II", crc, size & 0xFFFFFFFF)


def gzip_stored(data: bytes) -> bytes:
    return b"".join(stream_gzip_stored([data]))


# ------------------------------------------------------------------ records
@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str
    data: bytes | None = field(repr=False, compare=False)  # None: streamed to a registry, never held
    diff_id: str | None = None  # for layers: sha256 of the uncompressed tar

    @classmethod
    def of(cls, data: bytes, media_type: str, diff_id: str | None = None) -> "Blob":
        return cls(sha256_digest(data), len(data), media_type, data, diff_id)

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    """An image manifest (not an index)."""

    digest: str
    media_type: str
    raw: bytes = field(repr=False)
    config: Blob
    layers: tuple[Blob, ...]
    platform: dict

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    def descriptor(self) -> dict:
        """As an index lists it."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size,
                "platform": self.platform}


@dataclass(frozen=True)
class Image:
    """A locally built image or index; ``raw``/``digest`` are the top level."""

    media_type: str
    raw: bytes = field(repr=False)
    digest: str
    manifests: tuple[Manifest, ...]  # one for an image, the children for an index

    @classmethod
    def single(cls, manifest: Manifest) -> "Image":
        return cls(manifest.media_type, manifest.raw, manifest.digest, (manifest,))

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def child_digests(self) -> tuple[str, ...]:
        return tuple(m.digest for m in self.manifests) if self.is_index else ()

    @property
    def blobs(self) -> dict[str, Blob]:
        """Every config and layer blob, by digest."""
        return {b.digest: b for m in self.manifests for b in m.blobs}

    @property
    def blob_sizes(self) -> dict[str, int]:
        return {d: b.size for d, b in self.blobs.items()}

    def manifest_bytes(self) -> dict[str, bytes]:
        """Digest -> raw bytes for the top level and every child manifest."""
        return {self.digest: self.raw} | {m.digest: m.raw for m in self.manifests}

    def write_oci_layout(self, directory: str | Path, tag: str = "latest") -> Path:
        """Write an OCI image layout holding this image under ``tag``."""
        d = Path(directory)
        blobs_dir = d / "blobs" / "sha256"
        blobs_dir.mkdir(parents=True, exist_ok=True)
        (d / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        files = self.manifest_bytes() | {b.digest: b.data for b in self.blobs.values()}
        for digest, data in files.items():
            (blobs_dir / digest.split(":", 1)[1]).write_bytes(data)
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": self.media_type,
                "digest": self.digest,
                "size": self.size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        }
        (d / "index.json").write_bytes(canonical_json(index))
        return d

    def write_dir_layout(self, directory: str | Path) -> Path:
        """Write skopeo's ``dir:`` layout (used for Docker media types, which
        the ``oci:`` transport refuses): ``manifest.json``, child manifests as
        ``<hex>.manifest.json`` and blobs as ``<hex>``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "version").write_text("Directory Transport Version: 1.1\n")
        (d / "manifest.json").write_bytes(self.raw)
        if self.is_index:
            for m in self.manifests:
                (d / (m.digest.split(":", 1)[1] + ".manifest.json")).write_bytes(m.raw)
        for b in self.blobs.values():
            (d / b.digest.split(":", 1)[1]).write_bytes(b.data)
        return d

    def source_ref(self, directory: str | Path, tag: str = "latest") -> str:
        """Write the image under ``directory`` and return a skopeo source ref."""
        if self.media_type in (OCI_MANIFEST, OCI_INDEX):
            return f"oci:{self.write_oci_layout(Path(directory) / 'oci', tag)}:{tag}"
        return f"dir:{self.write_dir_layout(Path(directory) / 'dir')}"


def _of_image(name: str) -> property:
    return property(lambda pushed: getattr(pushed.image, name))


@dataclass(frozen=True)
class PushedImage:
    """What was pushed where: a plain record for assertions."""

    host: str  # "127.0.0.1:PORT"
    repo: str
    tag: str
    image: Image = field(repr=False)

    # the image's, for short
    digest = _of_image("digest")
    media_type = _of_image("media_type")
    manifest = _of_image("raw")  # the top level's bytes, as pushed and served
    size = _of_image("size")
    child_digests = _of_image("child_digests")
    blobs = _of_image("blob_sizes")  # every config and layer blob: digest -> size

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.repo}:{self.tag}"

    @property
    def children(self) -> tuple[Manifest, ...]:
        return self.image.manifests if self.image.is_index else ()


# ----------------------------------------------------------------- builders
def layer(files: dict[str, bytes], *, docker: bool = False) -> Blob:
    """A gzip (stored) tar layer of ``files``."""
    tar = make_tar(files)
    return Blob.of(gzip_stored(tar), DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP,
                   diff_id=sha256_digest(tar))


def linux(arch: str, variant: str | None = None) -> dict:
    """The platform of a manifest (in its config and its index descriptor)."""
    return {"architecture": arch, "os": "linux"} | ({"variant": variant} if variant else {})


def build_manifest(layers: Sequence[Blob], platform: dict, config_fields: dict, *,
                   docker: bool = False, indent: int | None = None) -> Manifest:
    """An image manifest of ``layers`` whose config holds ``platform``, a fixed creation time,
    the layers' diff_ids and ``config_fields``."""
    config = platform | {"created": CREATED,
                         "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in layers]}} | config_fields
    config_blob = Blob.of(canonical_json(config), DOCKER_CONFIG if docker else OCI_CONFIG)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    raw = canonical_json({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in layers],
    }, indent)
    return Manifest(sha256_digest(raw), media_type, raw, config_blob, tuple(layers), platform)


def build_index(children: Sequence[Manifest], *, docker: bool = False, indent: int | None = None) -> Image:
    media_type = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
    raw = canonical_json({"schemaVersion": 2, "mediaType": media_type,
                          "manifests": [c.descriptor() for c in children]}, indent)
    return Image(media_type, raw, sha256_digest(raw), tuple(children))


# ----------------------------------------------------- the tests' fixtures
# Manifests are indented, so that a tool re-serialising them cannot pass for preserving them.
_INDENT = 3


def _fixture_manifest(seed: str, *, docker: bool, platform: dict, layers: int = 2,
                      large_layer_size: int | None = None) -> Manifest:
    name = "/".join(filter(None, (seed, platform["os"], platform["architecture"], platform.get("variant"))))
    blobs = []
    if large_layer_size:
        blobs.append(layer({"data/big.bin": seeded_bytes(f"harness:{name}:big", large_layer_size)}, docker=docker))
    blobs += [layer({f"harness/layer{i}.txt": f"layer {i} of {name}\n".encode(),
                     f"harness/random{i}.bin": seeded_bytes(f"harness:{name}:{i}", 512)}, docker=docker)
              for i in range(layers)]
    return build_manifest(blobs, platform, {
        "config": {"Env": ["PATH=/usr/bin:/bin", f"HARNESS_SEED={seed}"], "Cmd": ["/bin/true"],
                   "Labels": {"harness.seed": seed}},
        "history": [{"created": CREATED, "created_by": f"harness layer {i}"} for i in range(len(blobs))],
    }, docker=docker, indent=_INDENT)


def build_oci_image(seed: str = "oci", *, layers: int = 2, arch: str = "amd64") -> Image:
    return Image.single(_fixture_manifest(seed, docker=False, platform=linux(arch), layers=layers))


def build_docker_image(seed: str = "docker", *, layers: int = 2, arch: str = "amd64") -> Image:
    return Image.single(_fixture_manifest(seed, docker=True, platform=linux(arch), layers=layers))


def build_large_image(seed: str = "large", *, size: int = 8 * MiB, docker: bool = False) -> Image:
    """An image whose first layer holds ``size`` bytes of seeded random data."""
    return Image.single(_fixture_manifest(seed, docker=docker, platform=linux("amd64"), layers=1,
                                          large_layer_size=size))


DEFAULT_PLATFORMS = (linux("amd64"), linux("arm64", "v8"))


def build_oci_index(seed: str = "oci-index", *, platforms=DEFAULT_PLATFORMS, layers: int = 2) -> Image:
    return build_index([_fixture_manifest(seed, docker=False, platform=p, layers=layers) for p in platforms],
                       indent=_INDENT)


def build_docker_manifest_list(seed: str = "docker-list", *, platforms=DEFAULT_PLATFORMS,
                               layers: int = 2) -> Image:
    return build_index([_fixture_manifest(seed, docker=True, platform=p, layers=layers) for p in platforms],
                       docker=True, indent=_INDENT)


BUILDERS = {
    "oci": build_oci_image,
    "docker": build_docker_image,
    "oci-index": build_oci_index,
    "docker-list": build_docker_manifest_list,
    "large": build_large_image,
}


def build_image(kind: str, seed: str | None = None, **kwargs) -> Image:
    """``build_image("oci-index", seed="x")``; kinds: see ``BUILDERS``."""
    builder = BUILDERS[kind]
    return builder(seed, **kwargs) if seed is not None else builder(**kwargs)


# -------------------------------------------------------------------- push
def push_image(image: Image, registry, repo: str, tag: str = "latest", *,
               host: str | None = None, creds: tuple[str, str] | None | bool = True,
               verify: bool = True, workdir: str | Path | None = None) -> PushedImage:
    """Push ``image`` to ``registry`` (a harness Registry) as ``repo:tag`` with skopeo.

    ``host`` overrides the address (e.g. a fault proxy's host);
    ``creds=True`` uses ``registry.credentials``, None/False pushes anonymously.
    With ``verify`` the served manifests are checked byte-for-byte with
    ``skopeo inspect --raw`` (top level, and every child by digest).
    """
    host = host or registry.host
    if creds is True:
        creds = registry.credentials
    elif creds is False:
        creds = None
    tls = registry.ca_file is not None
    tmp = Path(tempfile.mkdtemp(prefix="harness-oci-", dir=workdir))
    try:
        skopeo_copy(image.source_ref(tmp, tag), f"docker://{host}/{repo}:{tag}",
                    dest_tls_verify=tls, dest_creds=creds, dest_cert_dir=registry.cert_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record = PushedImage(host, repo, tag, image)
    if verify:
        verify_pushed(record, registry, creds=creds)
    return record


def verify_pushed(record: PushedImage, registry, creds=None) -> None:
    """Assert the registry serves exactly the bytes we built."""
    tls = registry.ca_file is not None
    kw = dict(tls_verify=tls, creds=creds, cert_dir=registry.cert_dir)
    got = skopeo_inspect_raw(f"docker://{record.ref}", **kw)
    if got != record.manifest:
        raise AssertionError(
            f"{record.ref}: served manifest {sha256_digest(got)} != built {record.digest}")
    for child in record.children:
        got = skopeo_inspect_raw(f"docker://{record.host}/{record.repo}@{child.digest}", **kw)
        if got != child.raw:
            raise AssertionError(
                f"{record.repo}@{child.digest}: served {sha256_digest(got)} differs")
