"""Benchmark images, generated deterministically and pushed with raw HTTP.

Independent of ``reconciler`` (the code under test): plain httpx, monolithic
``POST`` + ``PUT`` uploads, cross-repository mounts for the shared base layer,
a thread pool for concurrency.

Image ``i`` of profile ``oci`` is one OCI image manifest with a config and
three layers, each a tar of one file wrapped in gzip at level 0 (stored, not
compressed: cheap to make, and a ``tar+gzip`` media type so that neither tool
recompresses it; skopeo gzips plain ``tar`` layers pushed to a registry, which
changes the digests): the base layer (4 MiB payload, the same bytes in
every image) and two layers of 512 KiB payload unique to the image.  Profile
``index`` is an OCI index of two such manifests (linux/amd64, linux/arm64),
each platform with its own shared base layer and its own two unique layers.
Layer payloads are seeded pseudo-random bytes; sizes are payload sizes (each
blob is about 2 KiB larger: tar header and trailer, gzip framing).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

MiB = 1024 * 1024
BASE_SIZE = 4 * MiB
UNIQUE_SIZE = 512 * 1024
UNIQUE_LAYERS = 2

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = (f"{OCI_INDEX}, {OCI_MANIFEST}, application/vnd.docker.distribution.manifest.list.v2+json, "
          "application/vnd.docker.distribution.manifest.v2+json")

PLATFORMS = {"oci": [("linux", "amd64")], "index": [("linux", "amd64"), ("linux", "arm64")]}
SEED = 20240601


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _tar_tail(size: int) -> bytes:
    return b"\0" * ((-size) % 512) + b"\0" * 1024


def _stored_gzip() -> zlib._Compress:
    return zlib.compressobj(level=0, wbits=31)  # gzip framing, stored deflate blocks


def tar_layer(name: str, payload: bytes) -> tuple[bytes, str]:
    """(gzip-0 blob, diff_id) of a tar holding one file."""
    tar = _tar_header(name, len(payload)) + payload + _tar_tail(len(payload))
    gz = _stored_gzip()
    return gz.compress(tar) + gz.flush(), digest_of(tar)


def repo_name(i: int) -> str:
    return f"bench/img-{i:05d}"


TAG = "v1"


@dataclass
class Blob:
    digest: str
    data: bytes
    media_type: str
    diff_id: str = ""

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass
class Manifest:
    data: bytes
    media_type: str
    platform: tuple[str, str] | None = None

    @property
    def digest(self) -> str:
        return digest_of(self.data)


@dataclass
class Image:
    repo: str
    blobs: list[Blob] = field(default_factory=list)          # unique to this image
    children: list[Manifest] = field(default_factory=list)   # index profile: pushed by digest
    top: Manifest | None = None                              # pushed by tag

    @property
    def digest(self) -> str:
        assert self.top is not None
        return self.top.digest


def base_layers(profile: str) -> dict[tuple[str, str], Blob]:
    out = {}
    for os_, arch in PLATFORMS[profile]:
        rng = random.Random(f"{SEED}-base-{os_}-{arch}")
        data, diff_id = tar_layer(f"base-{arch}.bin", rng.randbytes(BASE_SIZE))
        out[(os_, arch)] = Blob(digest_of(data), data, OCI_LAYER, diff_id)
    return out


def _canonical(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def make_image(profile: str, i: int, bases: dict[tuple[str, str], Blob]) -> Image:
    image = Image(repo_name(i))
    manifests = []
    for os_, arch in PLATFORMS[profile]:
        rng = random.Random(f"{SEED}-{profile}-{i}-{arch}")
        layers = [bases[(os_, arch)]]
        for n in range(UNIQUE_LAYERS):
            data, diff_id = tar_layer(f"img-{i}-{n}.bin", rng.randbytes(UNIQUE_SIZE))
            layers.append(Blob(digest_of(data), data, OCI_LAYER, diff_id))
        config = _canonical({
            "architecture": arch, "os": os_, "created": "2024-01-01T00:00:00Z",
            "config": {"Labels": {"bench.image": str(i)}},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        })
        config_blob = Blob(digest_of(config), config, OCI_CONFIG)
        image.blobs += [config_blob, *layers[1:]]
        manifests.append(Manifest(_canonical({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": config_blob.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }), OCI_MANIFEST, (os_, arch)))
    if profile == "oci":
        image.top = manifests[0]
    else:
        image.children = manifests
        image.top = Manifest(_canonical({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": m.media_type, "digest": m.digest, "size": len(m.data),
                 "platform": {"os": m.platform[0], "architecture": m.platform[1]}}
                for m in manifests
            ],
        }), OCI_INDEX)
    return image


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

    def put_manifest(self, repo: str, reference: str, manifest: Manifest) -> None:
        self._check(self.client.put(f"{self.base_url}/v2/{repo}/manifests/{reference}",
                                    content=manifest.data, headers={"Content-Type": manifest.media_type}), 201)

    def head_manifest(self, repo: str, reference: str) -> str | None:
        response = self.client.head(f"{self.base_url}/v2/{repo}/manifests/{reference}",
                                    headers={"Accept": ACCEPT})
        self.requests += 1
        if response.status_code != 200:
            return None
        return response.headers.get("Docker-Content-Digest")

    # ------------------------------------------------------------ images
    def push_image(self, image: Image, bases: dict[tuple[str, str], Blob], base_repo: str) -> None:
        if image.repo != base_repo:
            for base in bases.values():
                self.mount(image.repo, base, base_repo)
        for blob in image.blobs:
            self.upload(image.repo, blob)
        for child in image.children:
            self.put_manifest(image.repo, child.digest, child)
        assert image.top is not None
        self.put_manifest(image.repo, TAG, image.top)

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
            self.push_image(image, bases, base_repo)
            return image.digest

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, range(count)))


def generate_all(profile: str, count: int) -> list[Image]:
    bases = base_layers(profile)
    return [make_image(profile, i, bases) for i in range(count)]


def unique_bytes(profile: str, images: list[Image]) -> int:
    return sum(len(b.data) for b in base_layers(profile).values()) + sum(
        len(b.data) for image in images for b in image.blobs)


# --------------------------------------------------------------- big image
def push_big_image(pusher: Pusher, repo: str, payload_size: int) -> str:
    """One image whose only layer is a tar of ``payload_size`` random bytes, streamed, never in memory."""
    tar_hash = hashlib.sha256()

    def tar() -> Iterator[bytes]:
        rng = random.Random(f"{SEED}-big")
        yield _tar_header("big.bin", payload_size)
        left = payload_size
        while left:
            n = min(left, MiB)
            yield rng.randbytes(n)
            left -= n
        yield _tar_tail(payload_size)

    def chunks() -> Iterator[bytes]:
        gz = _stored_gzip()
        for piece in tar():
            tar_hash.update(piece)
            yield gz.compress(piece)
        yield gz.flush()

    digest, size = pusher.upload_stream(repo, chunks())
    layer = {"mediaType": OCI_LAYER, "digest": digest, "size": size}
    config = _canonical({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + tar_hash.hexdigest()]}})
    config_blob = Blob(digest_of(config), config, OCI_CONFIG)
    pusher.upload(repo, config_blob)
    manifest = Manifest(_canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                    "config": config_blob.descriptor(), "layers": [layer]}), OCI_MANIFEST)
    pusher.put_manifest(repo, TAG, manifest)
    return manifest.digest


def _selftest() -> None:  # pragma: no cover - quick manual check
    import gzip

    image = make_image("index", 3, base_layers("index"))
    assert len(image.children) == 2 and image.top is not None
    layer = image.blobs[1]
    tar = gzip.decompress(layer.data)
    assert digest_of(tar) == layer.diff_id
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        assert archive.getmembers()[0].size == UNIQUE_SIZE


if __name__ == "__main__":
    _selftest()
    print("ok")
