"""Deterministic fixture images, built without the code under test.

Everything here is computed from bytes we write ourselves: tar layers with
fixed metadata, gzip members with mtime=0 and *stored* (uncompressed)
deflate blocks so the bytes do not depend on the local zlib build, JSON
serialised with sorted keys.  The same seed gives the same digests on every
run and machine.  Images are pushed with ``skopeo copy --all
--preserve-digests oci:<layout>:<tag> docker://...`` and the result is
checked against ``skopeo inspect --raw``.  Docker media types go through
skopeo's ``dir:`` transport instead (``oci:`` only accepts OCI types).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

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
MiB = 1024 * 1024


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------- bytes
def seeded_bytes(seed: str, size: int) -> bytes:
    """``size`` pseudo-random bytes, a pure function of ``seed`` (SHAKE-256)."""
    return hashlib.shake_256(f"harness:{seed}".encode()).digest(size)


def make_tar(files: dict[str, bytes]) -> bytes:
    """A USTAR archive of ``files`` (path -> content) with fixed metadata."""
    buf = io.BytesIO()
    dirs: set[str] = set()
    for path in files:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        entries = [(d, None) for d in dirs] + [(p.strip("/"), c) for p, c in files.items()]
        for name, content in sorted(entries, key=lambda e: e[0]):
            ti = tarfile.TarInfo(name)
            ti.mtime = FIXED_MTIME
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if content is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            else:
                ti.mode = 0o644
                ti.size = len(content)
                tf.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


def gzip_stored(data: bytes) -> bytes:
    """A gzip member (mtime=0, no name) holding ``data`` in stored deflate blocks."""
    out = bytearray(b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff")
    n = len(data)
    pos = 0
    while True:
        chunk = data[pos:pos + 65535]
        pos += len(chunk)
        final = pos >= n
        out += bytes([1 if final else 0])
        out += struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF)
        out += chunk
        if final:
            break
    out += struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, n & 0xFFFFFFFF)
    return bytes(out)


# ------------------------------------------------------------------ records
@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str
    data: bytes = field(repr=False, compare=False)
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
    platform: dict | None = None

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    def descriptor(self) -> dict:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            d["platform"] = self.platform
        return d


@dataclass(frozen=True)
class Image:
    """A locally built image or index; ``raw``/``digest`` are the top level."""

    kind: str                       # "oci", "docker", "oci-index", "docker-list", "large"
    media_type: str
    raw: bytes = field(repr=False)
    digest: str
    manifests: tuple[Manifest, ...]  # one for an image, the children for an index

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
        out: dict[str, Blob] = {}
        for m in self.manifests:
            for b in m.blobs:
                out[b.digest] = b
        return out

    @property
    def blob_sizes(self) -> dict[str, int]:
        return {d: b.size for d, b in self.blobs.items()}

    def manifest_bytes(self) -> dict[str, bytes]:
        """Digest -> raw bytes for the top level and every child manifest."""
        out = {self.digest: self.raw}
        for m in self.manifests:
            out[m.digest] = m.raw
        return out

    def write_oci_layout(self, directory: str | Path, tag: str = "latest") -> Path:
        """Write an OCI image layout holding this image under ``tag``."""
        d = Path(directory)
        blobs_dir = d / "blobs" / "sha256"
        blobs_dir.mkdir(parents=True, exist_ok=True)
        (d / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

        def put(digest: str, data: bytes) -> None:
            p = blobs_dir / digest.split(":", 1)[1]
            if not p.exists():
                p.write_bytes(data)

        for digest, data in self.manifest_bytes().items():
            put(digest, data)
        for b in self.blobs.values():
            put(b.digest, b.data)
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


@dataclass(frozen=True)
class ChildManifest:
    digest: str
    media_type: str
    size: int
    platform: dict | None
    raw: bytes = field(repr=False)
    blobs: dict[str, int] = field(repr=False)  # config + layers: digest -> size


@dataclass(frozen=True)
class PushedImage:
    """What was pushed where: a plain record for assertions."""

    host: str                 # "127.0.0.1:PORT"
    repo: str
    tag: str
    digest: str               # top-level manifest / index digest
    media_type: str
    manifest: bytes = field(repr=False)  # top-level raw bytes as pushed & served
    children: tuple[ChildManifest, ...] = ()
    blobs: dict[str, int] = field(default_factory=dict, repr=False)  # all config+layer blobs
    image: Image | None = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.repo}:{self.tag}"

    @property
    def digest_ref(self) -> str:
        return f"{self.host}/{self.repo}@{self.digest}"

    @property
    def child_digests(self) -> tuple[str, ...]:
        return tuple(c.digest for c in self.children)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def size(self) -> int:
        return len(self.manifest)

    def manifest_bytes(self) -> dict[str, bytes]:
        out = {self.digest: self.manifest}
        for c in self.children:
            out[c.digest] = c.raw
        return out


# ----------------------------------------------------------------- builders
def _layer(seed: str, files: dict[str, bytes], media_type: str) -> Blob:
    tar = make_tar(files)
    return Blob.of(gzip_stored(tar), media_type, diff_id=sha256_digest(tar))


def _platform(os_: str, arch: str, variant: str | None) -> dict:
    p = {"architecture": arch, "os": os_}
    if variant:
        p["variant"] = variant
    return p


def _build_manifest(seed: str, *, docker: bool, os_: str = "linux", arch: str = "amd64",
                    variant: str | None = None, layers: int = 2,
                    large_layer_size: int | None = None, platform_in_descriptor: bool = False
                    ) -> Manifest:
    layer_mt = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
    tag = f"{seed}/{os_}/{arch}{'/' + variant if variant else ''}"
    layer_blobs: list[Blob] = []
    if large_layer_size:
        layer_blobs.append(_layer(seed, {"data/big.bin": seeded_bytes(tag + ":big", large_layer_size)}, layer_mt))
    for i in range(layers):
        layer_blobs.append(_layer(seed, {
            f"harness/layer{i}.txt": f"layer {i} of {tag}\n".encode(),
            f"harness/random{i}.bin": seeded_bytes(f"{tag}:{i}", 512),
        }, layer_mt))
    config = {
        "architecture": arch,
        "os": os_,
        "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/usr/bin:/bin", f"HARNESS_SEED={seed}"], "Cmd": ["/bin/true"],
                   "Labels": {"harness.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in layer_blobs]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": f"harness layer {i}"}
                    for i in range(len(layer_blobs))],
    }
    if variant:
        config["variant"] = variant
    config_blob = Blob.of(canonical_json(config), DOCKER_CONFIG if docker else OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in layer_blobs],
    }
    raw = json.dumps(manifest, sort_keys=True, indent=3).encode()
    return Manifest(
        digest=sha256_digest(raw),
        media_type=manifest["mediaType"],
        raw=raw,
        config=config_blob,
        layers=tuple(layer_blobs),
        platform=_platform(os_, arch, variant) if platform_in_descriptor else None,
    )


def build_oci_image(seed: str = "oci", *, layers: int = 2, arch: str = "amd64") -> Image:
    m = _build_manifest(seed, docker=False, arch=arch, layers=layers)
    return Image("oci", m.media_type, m.raw, m.digest, (m,))


def build_docker_image(seed: str = "docker", *, layers: int = 2, arch: str = "amd64") -> Image:
    m = _build_manifest(seed, docker=True, arch=arch, layers=layers)
    return Image("docker", m.media_type, m.raw, m.digest, (m,))


def build_large_image(seed: str = "large", *, size: int = 8 * MiB, docker: bool = False) -> Image:
    """An image whose first layer holds ``size`` bytes of seeded random data."""
    m = _build_manifest(seed, docker=docker, layers=1, large_layer_size=size)
    return Image("large", m.media_type, m.raw, m.digest, (m,))


DEFAULT_PLATFORMS: tuple[tuple[str, str, str | None], ...] = (
    ("linux", "amd64", None),
    ("linux", "arm64", "v8"),
)


def _build_index(seed: str, docker: bool, platforms: Sequence[tuple[str, str, str | None]],
                 layers: int) -> Image:
    children = tuple(
        _build_manifest(seed, docker=docker, os_=o, arch=a, variant=v, layers=layers,
                        platform_in_descriptor=True)
        for o, a, v in platforms
    )
    mt = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
    index = {"schemaVersion": 2, "mediaType": mt, "manifests": [c.descriptor() for c in children]}
    raw = json.dumps(index, sort_keys=True, indent=3).encode()
    return Image("docker-list" if docker else "oci-index", mt, raw, sha256_digest(raw), children)


def build_oci_index(seed: str = "oci-index", *, platforms=DEFAULT_PLATFORMS, layers: int = 2) -> Image:
    return _build_index(seed, False, platforms, layers)


def build_docker_manifest_list(seed: str = "docker-list", *, platforms=DEFAULT_PLATFORMS,
                               layers: int = 2) -> Image:
    return _build_index(seed, True, platforms, layers)


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
def pushed_record(image: Image, host: str, repo: str, tag: str) -> PushedImage:
    return PushedImage(
        host=host, repo=repo, tag=tag, digest=image.digest, media_type=image.media_type,
        manifest=image.raw,
        children=tuple(
            ChildManifest(m.digest, m.media_type, m.size, m.platform, m.raw,
                          {b.digest: b.size for b in m.blobs})
            for m in image.manifests
        ) if image.is_index else (),
        blobs=image.blob_sizes,
        image=image,
    )


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
    record = pushed_record(image, host, repo, tag)
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
