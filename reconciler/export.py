"""Export the lock's images into one OCI image layout: what carries them across an air gap.

The layout holds each locked manifest (the pinned subset index, for a subset), everything
it references and every pinned referrer, each blob once however many images share it,
every byte verified against its digest on the way. ``index.json`` lists one descriptor per
lock entry, annotated with the entry's target reference; the lock itself lies beside it.
Only the sources are read. An image's own manifest is written last, so one that is there
says the rest is too: running an interrupted (even killed) export again keeps what it
finds, once its digest checks, and finishes the rest. A ``.tar`` is built as a directory
beside it (``PATH.partial``), packed with the same bytes for the same lock once complete,
and the directory removed.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from reconciler import files
from reconciler.apply import AppliedImage, ApplyObserver, Outcome, Report, admit_copy, applied, ended_by
from reconciler.bounded import bugs_fail_this_image
from reconciler.config import DesiredImage
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.oci.errors import OCIError
from reconciler.oci.digest import Digest
from reconciler.oci.manifest import Descriptor, Manifest
from reconciler.oci.reference import Reference
from reconciler.oci.referrer import in_levels
from reconciler.pulls import PullBudgets
from reconciler.registry.copy import Copier, CopyStats
from reconciler.registry.layout.archive import TarLayout, pack
from reconciler.registry.layout.directory import DirectoryLayout
from reconciler.registry.layout.format import LOCK_FILE, IndexEntry, LayoutError
from reconciler.registry.registries import Registries
from reconciler.registry.repository import RemoteRepository
from reconciler.runtime import Interrupted, Interruption

PARTIAL = ".partial"
"""The directory a tar is built in, beside it: ``mirror.tar.partial``."""


async def export_lock(
    registries: Registries,
    lock: Lockfile,
    lock_text: str,
    path: Path,
    observer: ApplyObserver | None = None,
    interruption: Interruption | None = None,
    signed: Mapping[Reference, DesiredImage] = MappingProxyType({}),
    budget_shares: int = 1,
) -> Report:
    """``lock``'s images into the layout at ``path`` (a directory, or a ``.tar``), the lock file's
    ``lock_text`` beside them. ``signed``: by target, the images whose pinned signature is
    checked again before they are read. ``budget_shares``: how many shards split each source's
    pull budget."""
    started = time.monotonic()
    interruption = interruption or Interruption()
    wanted = [_entry_name(image) for image in lock.images]
    if path.suffix == ".tar" and _holds(path, lock_text, wanted):
        return _report([applied(image, Outcome.UNCHANGED) for image in lock.images], CopyStats(), started)
    directory = path.with_name(path.name + PARTIAL) if path.suffix == ".tar" else path
    layout = DirectoryLayout.create(directory)
    copier = Copier(registries, on_bytes=observer.bytes_sent if observer else None)
    budgets = PullBudgets(registries, lock.images, budget_shares)

    async def export_one(index: int) -> tuple[IndexEntry | None, AppliedImage]:
        image, entry = lock.images[index], None
        admit = functools.partial(admit_copy, registries.repository(image.source.repository), budgets, index, image,
                                  signed.get(image.target))
        try:
            with bugs_fail_this_image():
                entry, result = await interruption.run(_export_image(registries, copier, layout, image, admit),
                                                       "stopped while exporting")
        except (Interrupted, OCIError) as error:
            result = ended_by(image, error)
        finally:
            budgets.skip(index)
        if observer:
            observer.image_done(result)
        return entry, result

    if observer:
        observer.started(len(lock.images))
    async with copier:
        done = await registries.map(export_one, range(len(lock.images)))
    layout.write_index(entry for entry, _ in done if entry is not None)
    files.write_atomic(directory / LOCK_FILE, lock_text)
    report = _report([result for _, result in done], copier.stats, started)
    if path.suffix == ".tar" and report.ok:
        pack(directory, path)
        shutil.rmtree(directory)
    return report


def _report(images: list[AppliedImage], stats: CopyStats, started: float) -> Report:
    return Report(images=tuple(images), stats=stats, seconds=time.monotonic() - started)


def _entry_name(image: LockedImage) -> str:
    """How ``index.json`` names a lock entry: its full target reference, as a ref name."""
    return str(image.target)


def _holds(tar: Path, lock_text: str, wanted: list[str]) -> bool:
    """Whether the tar is this lock's whole export already: its lock, and an entry for each image."""
    if not tar.exists():
        return False
    try:
        with TarLayout.open(tar) as layout:
            return layout.lock_text() == lock_text and sorted(
                entry.ref_name or "" for entry in layout.index()) == sorted(wanted)
    except LayoutError:
        return False


async def _export_image(
    registries: Registries, copier: Copier, layout: DirectoryLayout, image: LockedImage,
    admit: Callable[[], Coroutine[Any, Any, AppliedImage | None]],
) -> tuple[IndexEntry | None, AppliedImage]:
    """The image's references and referrers, then its own manifest, whose presence says the rest is there."""
    if await layout.resolve_digest(str(image.pushed_digest)) is not None:
        return _indexed(image, await layout.get_manifest(image.pushed_digest)), applied(image, Outcome.UNCHANGED)
    if (held_back := await admit()) is not None:
        return None, held_back
    source = registries.repository(image.source.repository)
    manifest = await copier.copy_referenced(source, image.digest, layout, image.subset)
    for level in in_levels(image.referrers):
        await asyncio.gather(*(_export_referrer(copier, source, layout, referrer.digest) for referrer in level))
    await layout.put_manifest(str(manifest.digest), manifest)
    return _indexed(image, manifest), applied(image, Outcome.COPIED)


def _indexed(image: LockedImage, manifest: Manifest) -> IndexEntry:
    return IndexEntry(Descriptor(manifest.media_type, manifest.digest, len(manifest.data)), _entry_name(image))


async def _export_referrer(copier: Copier, source: RemoteRepository, layout: DirectoryLayout, digest: Digest) -> None:
    if await layout.head_manifest(str(digest)) is None:
        manifest = await copier.copy_referenced(source, digest, layout)
        await layout.put_manifest(str(manifest.digest), manifest)
