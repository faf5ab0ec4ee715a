"""Copy one image (or index) by digest between repositories, in an order that keeps the target safe.

Blobs first, then child manifests by digest; the caller pushes the top manifest
under its tag last, so a tag never points at something incomplete. Each blob is
copied at most once per run and registry: later repositories mount it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable

import attrs

from reconciler.oci.digest import Digest
from reconciler.oci.errors import OCIError
from reconciler.oci.manifest import Descriptor, Manifest
from reconciler.oci.platforms import PlatformSubset
from reconciler.registry.layout.reader import Layout
from reconciler.registry.registries import Registries
from reconciler.registry.repository import RemoteRepository
from reconciler.registry.errors import RegistryError
from reconciler.registry.retry import retrying
from reconciler.registry.upload import BlobTransfer, Source


_READING = "reading the source"
_WRITING = "writing the target"


class BlobTransferFailed(RegistryError):
    """A blob transfer that failed, naming the side: reading the source or writing the target."""

    def __init__(self, side: str, error: OCIError) -> None:
        super().__init__(f"{side}: {error}")
        self.transient = error.transient
        self.retry_after = error.retry_after


@attrs.define
class CopyStats:
    """What a copy did, for reports and for tests that check work was not repeated."""

    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_uploaded: int = 0


@attrs.frozen
class _BlobKey:
    host: str
    path: str
    digest: Digest


class Copier:
    """Copies images for a whole run, sharing what it learns about blob locations."""

    def __init__(self, registries: Registries, on_bytes: Callable[[int], None] | None = None) -> None:
        self._on_bytes = on_bytes
        self._registries = registries
        # A placement's task is kept while it runs or after it failed; once it succeeded only that
        # is kept (None): 10,000 images' finished tasks would otherwise hold tens of MiB.
        self._blob_tasks: dict[_BlobKey, asyncio.Task[None] | None] = {}
        self._first_placements: dict[tuple[str, Digest], tuple[asyncio.Task[None] | None, str]] = {}
        # A transfer holds a source and a target connection; half the slots keeps a
        # same-registry copy from waiting on itself.
        self._transfer_slots = asyncio.Semaphore(max(1, registries.options.max_connections // 2))
        self.stats = CopyStats()

    async def __aenter__(self) -> Copier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop transfers nobody waits for any more (their image failed) before clients close.

        Every transfer's outcome is collected, also of those that failed after their image
        had already given up on them: that failure belongs to the image's report, not to
        asyncio's "exception was never retrieved".
        """
        tasks = [task for task in self._blob_tasks.values() if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def copy_referenced(
        self, source: RemoteRepository, digest: Digest, target: RemoteRepository, subset: PlatformSubset | None = None
    ) -> Manifest:
        """Put into ``target`` everything ``source@digest`` references; return that manifest.
        With ``subset``, the manifest returned is that subset of the index, rebuilt and
        refused unless it has the expected digest, and only what it references is copied.

        The manifest itself is left to the caller, who checks right before pushing it
        under its tag that nobody claimed the tag meanwhile: one PUT then stores and tags it.
        """
        manifest = await source.get_manifest(digest)
        if subset is not None:
            manifest = subset.rebuild(manifest)
        await self._copy_references(source, target, manifest)
        return manifest

    async def _copy_references(self, source: RemoteRepository, target: RemoteRepository, manifest: Manifest) -> None:
        if manifest.is_index:
            await _gather(self._copy_child(source, target, child.digest) for child in manifest.children())
        else:
            await _gather(self._copy_blob(source, target, blob) for blob in manifest.blobs())

    async def _copy_child(self, source: RemoteRepository, target: RemoteRepository, digest: Digest) -> None:
        """A child the target already has is complete (a registry checks references on PUT)."""
        if await target.head_manifest(str(digest)) is not None:
            return
        manifest = await source.get_manifest(digest)
        await self._copy_references(source, target, manifest)
        await target.put_manifest(str(digest), manifest)

    async def _copy_blob(self, source: RemoteRepository, target: RemoteRepository, blob: Descriptor) -> None:
        """Concurrent requests for one blob in one repository share a single placement."""
        key = _BlobKey(target.host, target.path, blob.digest)
        if key not in self._blob_tasks:
            task = asyncio.ensure_future(self._place_blob(source, target, blob))
            self._blob_tasks[key] = task
            task.add_done_callback(functools.partial(self._forget_if_placed, key))
        elif (task := self._blob_tasks[key]) is None:
            return  # placed already
        await asyncio.shield(task)

    def _forget_if_placed(self, key: _BlobKey, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        self._blob_tasks[key] = None
        first_task, mount_from = self._first_placements[(key.host, key.digest)]
        if first_task is task:
            self._first_placements[(key.host, key.digest)] = (None, mount_from)

    async def _place_blob(self, source: RemoteRepository, target: RemoteRepository, blob: Descriptor) -> None:
        """The first repository of a registry to need a blob gets it; the others wait, then mount it.

        With nothing to mount from, the first one mounts from itself: a registry that
        already holds the blob there answers 201, else opens the upload, in one request.
        (That write can make a concurrent writer's manifest PUT fail for an instant, as
        any blob write into a repository that has the blob does; such an answer is retried.
        A HEAD first costs 4 more requests per image and did not prevent it.)
        """
        same_registry = source.path if source.host == target.host else None
        first = self._first_placements.get((target.host, blob.digest))
        if first is None:
            self._first_placements[(target.host, blob.digest)] = (asyncio.current_task(), target.path)
            mount_from = same_registry or target.path
        else:
            first_task, mount_from = first
            try:
                if first_task is not None:
                    await asyncio.shield(first_task)
            except OCIError:
                mount_from = same_registry
        await self._transfer(source, target, blob, mount_from)

    async def _transfer(
        self, source: RemoteRepository | Layout, target: RemoteRepository, blob: Descriptor, mount_from: str | None
    ) -> None:
        # A registry's blob is read by one reader over every try, so a try that goes on from
        # an offset reads the source from there (a Range), not from byte 0; a layout's file is local.
        open_blob = source.blob_reader(blob).open if isinstance(source, RemoteRepository) else _skipping(source, blob)

        @contextlib.asynccontextmanager
        async def open_source(offset: int = 0) -> AsyncIterator[AsyncIterator[bytes]]:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    chunks = await stack.enter_async_context(open_blob(offset))
                except OCIError as error:
                    raise BlobTransferFailed(_READING, error) from None
                yield self._from_source(chunks)

        async with self._transfer_slots:
            # One retry budget for the whole transfer: its source reads going on after a cut,
            # and its uploads, each going on in its session or starting whole in a new one.
            try:
                result = await retrying(
                    self._registries.options.retry,
                    lambda: target.upload_blob(blob, open_source, mount_from=mount_from),
                    f"{target.host}/{target.path}: blob {blob.digest}",
                )
            except BlobTransferFailed:
                raise
            except OCIError as error:
                raise BlobTransferFailed(_WRITING, error) from None
        if result is BlobTransfer.MOUNTED and mount_from == target.path:
            self.stats.blobs_present += 1
        elif result is BlobTransfer.MOUNTED:
            self.stats.blobs_mounted += 1
        else:
            self.stats.blobs_uploaded += 1
            self.stats.bytes_uploaded += blob.size

    async def _from_source(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The source's bytes, counted for progress; a failure says it was the source's."""
        try:
            async for chunk in chunks:
                if self._on_bytes:
                    self._on_bytes(len(chunk))
                yield chunk
        except OCIError as error:
            raise BlobTransferFailed(_READING, error) from None


def _skipping(layout: Layout, blob: Descriptor) -> Source:
    """A layout's blob from an offset: read whole from its local file (verified), the bytes before the offset dropped."""

    @contextlib.asynccontextmanager
    async def open_at(offset: int = 0) -> AsyncIterator[AsyncIterator[bytes]]:
        async def after_offset(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            skip = offset
            async for chunk in chunks:
                if skip < len(chunk):
                    yield chunk[skip:]
                skip = max(0, skip - len(chunk))

        async with layout.open_blob(blob) as chunks:
            yield after_offset(chunks)

    return open_at


async def _gather(coroutines) -> None:
    """Run all; on the first failure cancel the rest so no orphan keeps uploading."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
