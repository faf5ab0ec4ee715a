"""The demo's "upstream" images, built byte for byte here, without the code under test.

Layers are tar archives with fixed names, modes, owners and mtimes, wrapped in
gzip members with mtime=0 and *stored* deflate blocks (so no zlib version can
change a byte); JSON is written with sorted keys. The digests are therefore the
same on every run and machine, which keeps the committed images.lock valid.

    python demo/seed.py                  print each image and its digest
    python demo/seed.py 127.0.0.1:5801   push them there with skopeo
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MTIME = 1700000000  # 2023-11-14T22:13:20Z
CREATED = "2023-11-14T22:13:20Z"
KiB = 1024


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def filler(seed: str, size: int) -> bytes:
    """Incompressible stand-in for a binary: a pure function of ``seed``."""
    return hashlib.shake_256(f"image-syncer-demo:{seed}".encode()).digest(size)


def make_tar(files: dict[str, bytes]) -> bytes:
    """A USTAR archive of ``files`` and their parent directories, with fixed metadata."""
    dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    entries = sorted([(d, None) for d in dirs] + list(files.items()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o755 if name.startswith(("bin/", "app/")) else 0o644, len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def gzip_stored(data: bytes) -> bytes:
    """A gzip member (mtime=0, no name) holding ``data`` in stored (uncompressed) deflate blocks."""
    out = bytearray(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
    chunks = [data[i:i + 0xFFFF] for i in range(0, len(data), 0xFFFF)] or [b""]
    for i, chunk in enumerate(chunks):
        out += bytes([i == len(chunks) - 1]) + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + chunk
    return bytes(out + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF))


@dataclass
class Image:
    """One tag of the upstream registry: a manifest or an index, and every blob under it."""

    repo: str
    tag: str
    blobs: dict[str, bytes] = field(default_factory=dict, repr=False)  # digest -> bytes
    top: dict = field(default_factory=dict)  # descriptor of the manifest or index

    @property
    def digest(self) -> str:
        return self.top["digest"]

    def put(self, data: bytes, media_type: str) -> dict:
        self.blobs[sha256(data)] = data
        return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}

    def add_manifest(self, layers: list[dict[str, bytes]], arch: str = "amd64", variant: str | None = None) -> dict:
        platform = {"os": "linux", "architecture": arch} | ({"variant": variant} if variant else {})
        tars = [make_tar(files) for files in layers]
        config = platform | {
            "created": CREATED,
            "config": {"Cmd": ["/bin/sh"], "Labels": {"demo.image": f"{self.repo}:{self.tag}"}},
            "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in tars]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.put(canonical_json(config), OCI_CONFIG),
            "layers": [self.put(gzip_stored(t), OCI_LAYER) for t in tars],
        }
        return self.put(canonical_json(manifest), OCI_MANIFEST) | {"platform": platform}

    def write_oci_layout(self, directory: Path) -> str:
        """Write an OCI image layout; return skopeo's source reference for it."""
        (directory / "blobs" / "sha256").mkdir(parents=True)
        (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        for digest, data in self.blobs.items():
            (directory / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
        ref = self.top | {"annotations": {"org.opencontainers.image.ref.name": self.tag}}
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [ref]}
        (directory / "index.json").write_bytes(canonical_json(index))
        return f"oci:{directory}:{self.tag}"


def single(repo: str, tag: str, layers: list[dict[str, bytes]]) -> Image:
    image = Image(repo, tag)
    image.top = image.add_manifest(layers)
    image.top.pop("platform")
    return image


def multi(repo: str, tag: str, platforms: dict[tuple[str, str | None], list[dict[str, bytes]]]) -> Image:
    image = Image(repo, tag)
    children = [image.add_manifest(layers, arch, variant) for (arch, variant), layers in platforms.items()]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    image.top = image.put(canonical_json(index), OCI_INDEX)
    return image


def build_images() -> list[Image]:
    # A distroless-like base layer shared by both cert-manager images: apply copies it
    # once and mounts it into the second repository.
    base = {
        "etc/os-release": b'PRETTY_NAME="Demo distroless"\nID=demo\n',
        "etc/passwd": b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n",
        "usr/share/doc/base.bin": filler("distroless-base", 96 * KiB),
    }

    def alpine(arch: str) -> list[dict[str, bytes]]:
        return [{"etc/alpine-release": b"3.20.0\n", "bin/busybox": filler(f"alpine-3.20-{arch}", 128 * KiB)}]

    return [
        single("library/busybox", "1.36", [{"bin/busybox": filler("busybox-1.36", 160 * KiB)}]),
        multi("library/alpine", "3.20", {("amd64", None): alpine("amd64"), ("arm64", "v8"): alpine("arm64")}),
        single("jetstack/cert-manager-controller", "v1.15.1",
               [base, {"app/cmd/controller": filler("cert-manager-controller-v1.15.1", 256 * KiB)}]),
        single("jetstack/cert-manager-webhook", "v1.15.1",
               [base, {"app/cmd/webhook": filler("cert-manager-webhook-v1.15.1", 192 * KiB)}]),
    ]


def skopeo(*args: str, policy: Path) -> bytes:
    """Run skopeo with an accept-anything policy and no credentials (loopback demo registries)."""
    cmd = ["skopeo", "--policy", str(policy), *args]
    result = subprocess.run(cmd, check=False, capture_output=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stderr.decode(errors='replace')}")
    return result.stdout


def seed(host: str) -> None:
    """Push every image to ``host`` and check the registry serves exactly our bytes."""
    with tempfile.TemporaryDirectory(prefix="image-syncer-demo-seed-") as tmp:
        policy = Path(tmp, "policy.json")
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        for image in build_images():
            ref = f"{host}/{image.repo}:{image.tag}"
            source = image.write_oci_layout(Path(tmp, image.repo.replace("/", "_")))
            skopeo("copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false",
                   "--dest-no-creds", source, f"docker://{ref}", policy=policy)
            served = skopeo("inspect", "--raw", "--tls-verify=false", "--no-creds", f"docker://{ref}", policy=policy)
            if sha256(served) != image.digest:
                sys.exit(f"{ref}: the registry serves {sha256(served)}, we built {image.digest}")
            print(f"  seeded {ref}  {image.digest}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        seed(sys.argv[1])
    else:
        for image in build_images():
            print(f"{image.repo}:{image.tag}  {image.digest}")
