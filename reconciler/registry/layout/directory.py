"""An OCI image layout directory, read and written: the target side of ``RemoteRepository``'s methods.

Written to be resumed: a blob goes to a temporary name beside its final one and is renamed
only once its digest and size check out and it is on disk, so nothing half-written ever
sits under a blob's name. A blob found already there is hashed once per run; one whose
bytes do not match is removed and written again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

from reconciler import files
from reconciler.oci.digest import Digest, DigestMismatch
from reconciler.oci.manifest import Descriptor, Manifest
from reconciler.registry.layout.format import (
    INDEX_FILE, LAYOUT_FILE, LAYOUT_FILE_BYTES, IndexEntry, LayoutError, blob_name, index_bytes,
)
from reconciler.registry.layout.reader import Layout, Region, hash_region
from reconciler.registry.upload import BlobTransfer

class DirectoryLayout(Layout):
    """A layout directory: a source as ``Layout`` reads one, and a target its writer fills."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._checked: set[Digest] = set()
        self._writable = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> DirectoryLayout:
        """An existing layout, its ``oci-layout`` checked."""
        layout = cls(os.fspath(path))
        if not os.path.isdir(layout.path):
            raise LayoutError(f"{layout.path}: not a directory")
        layout.check_version()
        return layout

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> DirectoryLayout:
        """The layout at ``path`` to write into: made where absent, else checked and its abandoned temporaries removed."""
        layout = cls(os.fspath(path))
        layout._writable = True
        if os.path.exists(layout.path) and not os.path.isdir(layout.path):
            raise LayoutError(f"{layout.path}: not a directory")
        with writing(layout.path):
            os.makedirs(os.path.join(layout.path, "blobs"), exist_ok=True)
            if os.path.exists(os.path.join(layout.path, LAYOUT_FILE)):
                layout.check_version()
            else:
                files.replace(Path(layout.path, LAYOUT_FILE), LAYOUT_FILE_BYTES)
            _remove_abandoned_temporaries(Path(layout.path, "blobs"))
        return layout

    @contextlib.contextmanager
    def _locate(self, name: str) -> Iterator[Region | None]:
        try:
            descriptor = os.open(os.path.join(self.path, name), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            yield None
            return
        except OSError as error:
            reason = "a symbolic link" if error.errno == errno.ELOOP else error.strerror or str(error)
            raise LayoutError(f"{self.where(name)}: cannot be read: {reason}") from None
        try:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode):
                raise LayoutError(f"{self.where(name)}: not a regular file")
            yield Region(descriptor, 0, status.st_size)
        finally:
            os.close(descriptor)

    # -- a target's operations ---------------------------------------------------------

    async def has_blob(self, descriptor: Descriptor) -> bool:
        """Whether the blob is there with the right bytes, hashed once per run; a wrong file is removed."""
        return await self._holds(descriptor.digest, descriptor.size)

    async def _holds(self, digest: Digest, size: int = -1) -> bool:
        """A layout opened to read is never changed: there, a file that is present is held (and verified as read)."""
        if not self._writable:
            return await super()._holds(digest)
        if digest in self._checked:
            return True
        name = blob_name(digest)
        with self._locate(name) as region:
            if region is None:
                return False
            intact = (size < 0 or region.size == size) and await asyncio.to_thread(hash_region, region, digest) == digest
        if not intact:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.path, name))
            return False
        self._checked.add(digest)
        return True

    async def upload_blob(
        self,
        descriptor: Descriptor,
        chunks: Callable[[], contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]],
        mount_from: str | None = None,
    ) -> BlobTransfer:
        """Write the blob unless it is there already (MOUNTED, as a registry's mount answers;
        ``mount_from`` is a registry's notion, not used). ``chunks`` is opened only to write."""
        if await self.has_blob(descriptor):
            return BlobTransfer.MOUNTED
        async with chunks() as stream:
            await self._write_blob(descriptor, stream)
        return BlobTransfer.UPLOADED

    async def put_manifest(self, identifier: str, manifest: Manifest) -> Digest:
        """Store the manifest as the blob of its digest; a tag is the index's business (``write_index``)."""
        manifest.digest.verify(manifest.data, f"{self.path}: manifest {identifier}")
        descriptor = Descriptor(manifest.media_type, manifest.digest, len(manifest.data))
        if not await self.has_blob(descriptor):
            await self._write_blob(descriptor, _one_chunk(manifest.data))
        return manifest.digest

    def write_index(self, entries: Iterable[IndexEntry]) -> None:
        """Replace ``index.json`` at once with ``entries`` in their fixed order (``format.index_bytes``)."""
        with writing(self.where(INDEX_FILE)):
            files.replace(Path(self.path, INDEX_FILE), index_bytes(entries))
        self._index = None

    async def _write_blob(self, descriptor: Descriptor, stream: AsyncIterator[bytes]) -> None:
        """Only our own file operations' failures say "cannot write"; the stream's pass as they are."""
        digest, name = descriptor.digest, blob_name(descriptor.digest)
        final, where = Path(self.path, name), self.where(name)
        hasher = digest.hasher()
        with contextlib.ExitStack() as stack:
            with writing(where):
                final.parent.mkdir(exist_ok=True)
                file, temporary = stack.enter_context(files.temporary_beside(final))
            async for chunk in stream:
                hasher.update(chunk)
                if hasher.size > descriptor.size:
                    raise LayoutError(f"{where}: blob {digest}: more than the {descriptor.size} bytes expected")
                with writing(where):
                    await asyncio.to_thread(files.write_all, file, chunk)
            if hasher.digest() != digest:
                raise DigestMismatch(digest, hasher.digest(), f"{where}: blob {digest}")
            if hasher.size != descriptor.size:
                raise LayoutError(f"{where}: blob {digest}: {hasher.size} bytes, expected {descriptor.size}")
            with writing(where):
                await asyncio.to_thread(files.commit, file, temporary, final)
        self._checked.add(digest)


@contextlib.contextmanager
def writing(where: str) -> Iterator[None]:
    """A failure of the disk, said as one line naming ``where``."""
    try:
        yield
    except OSError as error:
        raise LayoutError(f"{where}: cannot write: {error.strerror or error}") from None


def _remove_abandoned_temporaries(blobs: Path) -> None:
    """Temporaries of a killed writer in ``blobs/<alg>/``."""
    files.remove_abandoned(blobs.glob(f"*/.*{files.TEMPORARY_SUFFIX}"))


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data
