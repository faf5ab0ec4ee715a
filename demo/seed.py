"""The demo's "upstream" images, built byte for byte by the test harness's builder
(``tests/harness/images.py``), without the code under test.

Fixed tar metadata, stored gzip and sorted-key JSON make the digests the same on
every run and machine, which keeps the committed images.lock valid.

    python demo/seed.py      print each image and its digest
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests.harness

from tests.harness.images import Image, Manifest, build_index, build_manifest, layer, linux, push_image, seeded_bytes
from tests.harness.registry import Registry

KiB = 1024


def filler(seed: str, size: int) -> bytes:
    """Incompressible stand-in for a binary."""
    return seeded_bytes(f"image-syncer-demo:{seed}", size)


def _manifest(name: str, layers: list[dict[str, bytes]], arch: str = "amd64",
              variant: str | None = None) -> Manifest:
    return build_manifest([layer(files) for files in layers], linux(arch, variant),
                          {"config": {"Cmd": ["/bin/sh"], "Labels": {"demo.image": name}}})


def build_images() -> dict[str, Image]:
    """``repository:tag`` -> image."""
    # A distroless-like base layer shared by both cert-manager images: apply copies it
    # once and mounts it into the second repository.
    base = {
        "etc/os-release": b'PRETTY_NAME="Demo distroless"\nID=demo\n',
        "etc/passwd": b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n",
        "usr/share/doc/base.bin": filler("distroless-base", 96 * KiB),
    }

    def alpine(arch: str) -> list[dict[str, bytes]]:
        return [{"etc/alpine-release": b"3.20.0\n", "bin/busybox": filler(f"alpine-3.20-{arch}", 128 * KiB)}]

    singles = {
        "library/busybox:1.36": [{"bin/busybox": filler("busybox-1.36", 160 * KiB)}],
        "jetstack/cert-manager-controller:v1.15.1":
            [base, {"app/cmd/controller": filler("cert-manager-controller-v1.15.1", 256 * KiB)}],
        "jetstack/cert-manager-webhook:v1.15.1":
            [base, {"app/cmd/webhook": filler("cert-manager-webhook-v1.15.1", 192 * KiB)}],
    }
    images = {name: Image.single(_manifest(name, layers)) for name, layers in singles.items()}
    alpine_name = "library/alpine:3.20"
    images[alpine_name] = build_index([_manifest(alpine_name, alpine("amd64")),
                                       _manifest(alpine_name, alpine("arm64"), "arm64", "v8")])
    # A repository with many tags, for a tag rule: lock picks the versions it selects.
    for tag in ("1.22.5", "1.23.3", "1.23.4", "1.23.4-alpine", "1.24rc1", "latest"):
        name = f"library/golang:{tag}"
        images[name] = Image.single(_manifest(name, [{"usr/local/go/VERSION": tag.encode(),
                                                      "usr/local/go/bin/go": filler(f"go-{tag}", 64 * KiB)}]))
    # Three platforms upstream, two of them wanted: lock pins the source index and the subset.
    nginx_name = "library/nginx:1.27"
    images[nginx_name] = build_index([
        _manifest(nginx_name, [{"usr/sbin/nginx": filler(f"nginx-1.27-{arch}", 96 * KiB)}], arch, variant)
        for arch, variant in (("amd64", None), ("arm", "v7"), ("arm64", "v8"))])
    return images


def seed(registry: Registry) -> None:
    """Push every image with skopeo and check the registry serves exactly our bytes."""
    for name, image in build_images().items():
        repo, tag = name.split(":")
        pushed = push_image(image, registry, repo, tag)
        print(f"  seeded {pushed.ref}  {pushed.digest}")


if __name__ == "__main__":
    for name, image in build_images().items():
        print(f"{name}  {image.digest}")
