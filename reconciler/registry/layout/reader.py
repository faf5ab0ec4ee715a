"""An OCI image layout read as a registry repository is: the methods of ``RemoteRepository`` a copy
needs from its source, every manifest and blob verified against its digest as it is read.

Where the bytes live (files of a directory, or members of a tar read in place) is the
subclass's; each answers ``_locate`` with a ``Region`` of an open file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import attrs

from reconciler.oci import limits
from reconciler.oci.digest import Digest, DigestMismatch, InvalidDigest
from reconciler.oci.manifest import Descriptor, Manifest, parse
from reconciler.registry.client import CHUNK_BYTES, ManifestHead
from reconciler.registry.layout.format import (
    HOST, INDEX_FILE, LAYOUT_FILE, LOCK_FILE, IndexEntry, LayoutError, MissingFromLayout, blob_name,
    check_layout_file,
    parse_index,
)


@attrs.frozen
class Region:
    """``size`` bytes of the open file ``descriptor`` from ``start``: a file whole, or a tar member."""

    descriptor: int
    start: int
    size: int

    def read(self, offset: int, length: int) -> bytes:
        """Bytes at ``offset``; fewer than asked only where the file was cut short under us."""
        return os.pread(self.descriptor, min(length, self.size - offset), self.start + offset)


class Layout:
    """A layout's manifests and blobs, addressed as a repository's are (by digest, or by a ref name of index.json)."""

    host = HOST

    def __init__(self, path: str) -> None:
        self.path = path
        self._index: tuple[IndexEntry, ...] | None = None

    def close(self) -> None:
        """Release what the layout holds open (a tar's file); a directory holds nothing between reads."""

    def __enter__(self) -> Layout:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- where the bytes are: the subclass's ----------------------------------------

    def _locate(self, name: str) -> contextlib.AbstractContextManager[Region | None]:
        """The file ``name`` of the layout (``index.json``, ``blobs/sha256/…``) while the block runs; None if absent."""
        raise NotImplementedError

    def where(self, name: str) -> str:
        """``name`` of this layout as a message shows it."""
        return f"{self.path}/{name}"

    # -- the layout's own files -------------------------------------------------------

    def check_version(self) -> None:
        """Refuse a directory or tar that is no layout of the version this reader knows."""
        check_layout_file(self._read_small(LAYOUT_FILE, limits.ERROR_BODY_BYTES), self.path)

    def index(self) -> tuple[IndexEntry, ...]:
        """``index.json``'s descriptors with their ref names, read once."""
        if self._index is None:
            self._index = parse_index(self._read_small(INDEX_FILE, limits.MANIFEST_BYTES), self.path)
        return self._index

    def lock_text(self) -> str:
        """The copy of images.lock an export put beside the index: what the layout holds, and for which lock."""
        try:
            return self._read_small(LOCK_FILE, limits.FILE_BYTES).decode()
        except UnicodeDecodeError:
            raise LayoutError(f"{self.where(LOCK_FILE)}: not UTF-8 text") from None

    def _read_small(self, name: str, limit: int) -> bytes:
        with self._locate(name) as region:
            if region is None:
                raise MissingFromLayout(f"{self.where(name)}: no such file: not an OCI image layout")
            if region.size > limit:
                raise LayoutError(f"{self.where(name)}: {region.size} bytes, over the {limits.size(limit)} limit")
            data = region.read(0, region.size)
        if len(data) != region.size:
            raise LayoutError(f"{self.where(name)}: cut short while read")
        return data

    # -- a repository's operations ----------------------------------------------------

    async def resolve_digest(self, identifier: str) -> Digest | None:
        """A digest whose manifest the layout holds, or the digest index.json names ``identifier``; else None."""
        head = await self.head_manifest(identifier)
        return head.digest if head else None

    async def head_manifest(self, identifier: str) -> ManifestHead | None:
        """What ``identifier`` names, read and verified; None where the layout does not hold it.
        A ref name index.json lists whose manifest is gone is a damaged layout, not an absence."""
        digest, _ = self._find(identifier)
        if digest is None or (str(digest) == identifier and not await self._holds(digest)):
            return None
        manifest = await self.get_manifest(identifier)
        return ManifestHead(manifest.media_type, manifest.digest)

    async def get_manifest(self, identifier: str | Digest) -> Manifest:
        """The manifest by digest or ref name, its bytes (at most ``limits.MANIFEST_BYTES``) checked against the digest."""
        digest, media_type = self._find(identifier)
        if digest is None:
            raise MissingFromLayout(f"{self.where(INDEX_FILE)}: no manifest named {str(identifier)!r}")
        descriptor = Descriptor(media_type or "", digest, -1)
        data = await self.read_blob(descriptor, limits.MANIFEST_BYTES)
        return parse(data, media_type, digest)

    @contextlib.asynccontextmanager
    async def open_blob(self, descriptor: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob's bytes streamed from its file; the last chunk held back until digest and size check out."""
        name = blob_name(descriptor.digest)
        with self._locate(name) as region:
            if region is None:
                raise MissingFromLayout(f"{self.where(name)}: blob {descriptor.digest} is missing")
            if descriptor.size >= 0 and region.size != descriptor.size:
                raise LayoutError(f"{self.where(name)}: blob {descriptor.digest} is {region.size} bytes, "
                                  f"expected {descriptor.size}")
            yield _verified(region, descriptor.digest, self.where(name))

    async def read_blob(self, descriptor: Descriptor, limit: int = limits.MANIFEST_BYTES) -> bytes:
        """A small blob (a manifest, an image config) read whole and verified; a size of -1: as the file's."""
        name = blob_name(descriptor.digest)
        with self._locate(name) as region:
            size = region.size if region else 0
        if max(size, descriptor.size) > limit:
            raise LayoutError(f"{self.where(name)}: blob {descriptor.digest} is over {limits.size(limit)}")
        async with self.open_blob(descriptor) as chunks:
            return b"".join([chunk async for chunk in chunks])

    # -- helpers for subclasses ---------------------------------------------------------

    async def _holds(self, digest: Digest) -> bool:
        """Whether the blob is there (a writer also checks its bytes)."""
        with self._locate(blob_name(digest)) as region:
            return region is not None

    def _find(self, identifier: str | Digest) -> tuple[Digest | None, str | None]:
        """The digest ``identifier`` names, and the media type index.json gives it where looked up by ref name."""
        if isinstance(identifier, Digest):
            digest = identifier
        else:
            try:
                digest = Digest.parse(identifier)
            except InvalidDigest:
                return self._named(identifier)
        return digest, None  # a manifest's body states its type (only OCI's may omit it, and its shape tells)

    def _named(self, ref_name: str) -> tuple[Digest | None, str | None]:
        entries = [entry.descriptor for entry in self.index() if entry.ref_name == ref_name]
        if len({descriptor.digest for descriptor in entries}) > 1:
            raise LayoutError(f"{self.where(INDEX_FILE)}: ref name {ref_name!r} names {len(entries)} manifests")
        return (entries[0].digest, entries[0].media_type) if entries else (None, None)


async def _verified(region: Region, digest: Digest, where: str) -> AsyncIterator[bytes]:
    """The region's bytes in chunks, hashed; the last one leaves only once the digest matches."""
    hasher = digest.hasher()
    pending: bytes | None = None
    for offset in range(0, region.size, CHUNK_BYTES):
        chunk = await asyncio.to_thread(region.read, offset, CHUNK_BYTES)
        if not chunk:
            raise LayoutError(f"{where}: blob {digest} cut short while read")
        hasher.update(chunk)
        if pending is not None:
            yield pending
        pending = chunk
    actual = hasher.digest()
    if actual != digest:
        raise DigestMismatch(digest, actual, f"{where}: blob {digest}")
    if pending is not None:
        yield pending


def hash_region(region: Region, digest: Digest) -> Digest:
    """The digest of a region's bytes, in ``digest``'s algorithm, read in chunks (for a thread)."""
    hasher = digest.hasher()
    for offset in range(0, region.size, CHUNK_BYTES):
        hasher.update(region.read(offset, CHUNK_BYTES))
    return hasher.digest()

