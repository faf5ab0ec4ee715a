"""Benchmark images, built by the test harness's builder (``tests/harness/images.py``) and pushed
with raw HTTP.

Independent of ``reconciler`` (the code under test): plain httpx, monolithic
``POST`` + ``PUT`` uploads, cross-repository mounts for the shared base layer,
a thread pool for concurrency.

Image ``i`` of profile ``oci`` is one OCI image manifest with a config and
three layers, each a tar of one file in a stored (uncompressed) gzip member
(cheap to make, and a ``tar+gzip`` media type so that neither tool
recompresses it; skopeo gzips plain ``tar`` layers pushed to a registry, which
changes the digests): the base layer (4 MiB payload, the same bytes in
every image) and two layers of 512 KiB payload unique to the image.  Profile
``index`` is an OCI index of two such manifests (linux/amd64, linux/arm64),
each platform with its own shared base layer and its own two unique layers.
Layer payloads are seeded pseudo-random bytes; sizes are payload sizes (each
blob is a few KiB larger: tar header and padding, gzip framing).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests.harness

from tests.harness.images import (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MiB, OCI_INDEX, OCI_LAYER_GZIP,
                                  OCI_MANIFEST, Blob, Image, Manifest, build_index, build_manifest, layer, linux,
                                  seeded_bytes, stream_gzip_stored, stream_tar)

BASE_SIZE = 4 * MiB
UNIQUE_SIZE = 512 * 1024
UNIQUE_LAYERS = 2

ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))

ARCHITECTURES = {"oci": ("amd64",), "index": ("amd64", "arm64")}
SEED = 20240601
TAG = "v1"


def repo_name(i: int) -> str:
    return f"bench/img-{i:05d}"


def base_layers(profile: str) -> dict[str, Blob]:
    """Architecture -> the base layer every image of ``profile`` shares."""
    return {arch: layer({f"base-{arch}.bin": seeded_bytes(f"bench:{SEED}-base-{arch}", BASE_SIZE)})
            for arch in ARCHITECTURES[profile]}


def make_image(profile: str, i: int, bases: dict[str, Blob]) -> Image:
    manifests = [
        build_manifest(
            [bases[arch]] + [layer({f"img-{i}-{n}.bin": seeded_bytes(f"bench:{SEED}-{profile}-{i}-{arch}-{n}",
                                                                     UNIQUE_SIZE)})
                             for n in range(UNIQUE_LAYERS)],
            linux(arch), {"config": {"Labels": {"bench.image": str(i)}}})
        for arch in ARCHITECTURES[profile]
    ]
    return Image.single(manifests[0]) if profile == "oci" else build_index(manifests)


# ------------------------------------------------------------------ pushing
class Pusher:
    """Raw registry API calls against ``base_url`` (``http://host:port``)."""

    def __init__(self, base_url: str, concurrency: int = 16) -> None:
        self.base_url = base_url
        self.concurrency = concurrency
        self.client = httpx.Client(
            timeout=httpx.Timeout(300, connect=10),
            limits=httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2),
        )
        self.requests = 0

    def close(self) -> None:
        self.client.close()

    def _location(self, response: httpx.Response) -> str:
        location = response.headers["Location"]
        return location if location.startswith("http") else self.base_url + location

    def _check(self, response: httpx.Response, *ok: int) -> httpx.Response:
        self.requests += 1
        if response.status_code not in ok:
            raise RuntimeError(f"{response.request.method} {response.request.url}: "
                               f"{response.status_code} {response.text[:300]}")
        return response

    def upload(self, repo: str, blob: Blob) -> None:
        started = self._check(self.client.post(f"{self.base_url}/v2/{repo}/blobs/uploads/"), 202)
        url = self._location(started)
        sep = "&" if "?" in url else "?"
        self._check(self.client.put(f"{url}{sep}digest={blob.digest}", content=blob.data,
                                    headers={"Content-Type": "application/octet-stream"}), 201)

    def upload_stream(self, repo: str, chunks: Iterator[bytes]) -> tuple[str, int]:
        """Stream a blob of unknown digest: one PATCH with a chunked body, then PUT ?digest=."""
        hasher = hashlib.sha256()
        size = 0

        def body() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                hasher.update(chunk)
                size += len(chunk)
                yield chunk

        started = self._check(self.client.post(f"{self.base_url}/v2/{repo}/blobs/uploads/"), 202)
        patched = self._check(self.client.patch(self._location(started), content=body(),
                                                headers={"Content-Type": "application/octet-stream"}), 202)
        url = self._location(patched)
        digest = "sha256:" + hasher.hexdigest()
        sep = "&" if "?" in url else "?"
        self._check(self.client.put(f"{url}{sep}digest={digest}"), 201)
        return digest, size

    def mount(self, repo: str, blob: Blob, from_repo: str) -> None:
        self._check(self.client.post(f"{self.base_url}/v2/{repo}/blobs/uploads/",
                                     params={"mount": blob.digest, "from": from_repo}), 201)

    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> None:
        self._check(self.client.put(f"{self.base_url}/v2/{repo}/manifests/{reference}",
                                    content=raw, headers={"Content-Type": media_type}), 201)

    def head_manifest(self, repo: str, reference: str) -> str | None:
        response = self.client.head(f"{self.base_url}/v2/{repo}/manifests/{reference}",
                                    headers={"Accept": ACCEPT})
        self.requests += 1
        if response.status_code != 200:
            return None
        return response.headers.get("Docker-Content-Digest")

    # ------------------------------------------------------------ images
    def push_image(self, repo: str, image: Image, bases: dict[str, Blob], base_repo: str) -> None:
        """The base layers are mounted from ``base_repo`` (where they already are), the rest uploaded."""
        shared = {base.digest for base in bases.values()}
        for blob in image.blobs.values():
            if blob.digest not in shared:
                self.upload(repo, blob)
            elif repo != base_repo:
                self.mount(repo, blob, base_repo)
        for child in image.manifests if image.is_index else ():
            self.put_manifest(repo, child.digest, child.raw, child.media_type)
        self.put_manifest(repo, TAG, image.raw, image.media_type)

    def push_all(self, profile: str, count: int, images: list[Image] | None = None) -> list[str]:
        """Push ``count`` images (generated on the fly unless given); returns their digests.

        The base layers go once into the first repository; every other
        repository mounts them from there, so each distinct blob is uploaded
        exactly once.
        """
        bases = base_layers(profile)
        base_repo = repo_name(0)
        for base in bases.values():
            self.upload(base_repo, base)

        def one(i: int) -> str:
            image = images[i] if images is not None else make_image(profile, i, bases)
            self.push_image(repo_name(i), image, bases, base_repo)
            return image.digest

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, range(count)))


def generate_all(profile: str, count: int) -> list[Image]:
    bases = base_layers(profile)
    return [make_image(profile, i, bases) for i in range(count)]


def unique_bytes(images: list[Image]) -> int:
    """Bytes of the distinct blobs (the shared base layers count once)."""
    return sum({digest: blob.size for image in images for digest, blob in image.blobs.items()}.values())


# --------------------------------------------------------------- big image
def push_big_image(pusher: Pusher, repo: str, payload_size: int) -> str:
    """One image whose only layer is a tar of ``payload_size`` random bytes, streamed, never in memory."""
    return push_streamed_image(pusher, repo, [payload_size]).digest


def push_streamed_image(pusher: Pusher, repo: str, payload_sizes: list[int]) -> Manifest:
    """One image with a layer per payload size, each a tar of that many random bytes (seeded by the
    layer's index) streamed into ``repo``, never whole in memory; returns its manifest."""
    layers = [_push_streamed_layer(pusher, repo, index, size) for index, size in enumerate(payload_sizes)]
    manifest = build_manifest(layers, linux("amd64"), {})
    pusher.upload(repo, manifest.config)
    pusher.put_manifest(repo, TAG, manifest.raw, manifest.media_type)
    return manifest


def _push_streamed_layer(pusher: Pusher, repo: str, index: int, payload_size: int) -> Blob:
    tar_hash = hashlib.sha256()
    seed = f"bench:{SEED}-big-" + (f"{index}-" if index else "")

    def tar() -> Iterator[bytes]:
        payload = (seeded_bytes(f"{seed}{offset}", min(MiB, payload_size - offset))
                   for offset in range(0, payload_size, MiB))
        for piece in stream_tar(f"big-{index}.bin", payload_size, payload):
            tar_hash.update(piece)
            yield piece

    digest, size = pusher.upload_stream(repo, stream_gzip_stored(tar()))
    return Blob(digest, size, OCI_LAYER_GZIP, None, "sha256:" + tar_hash.hexdigest())
