"""The commands as functions: config → lock → plan → apply, and the lockless sync.

Each returns a value for the CLI to render; none prints. Whatever reads files
fails with InputError before any registry is contacted.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Collection
from pathlib import Path

import attrs

from reconciler import config as config_file
from reconciler import files, lockfile, tagwriters
from reconciler.apply import (
    ApplyObserver, Outcome, Report, apply_plan, check_deletions, check_fresh, delete_after, plan_and_apply,
)
from reconciler.config import Config, DesiredImage
from reconciler.export import export_lock
from reconciler.errors import InputError, first_and_count
from reconciler.lockfile import Lockfile
from reconciler.oci.reference import Reference
from reconciler.plan import Action, Plan, PlannedImage, make_plan
from reconciler.planfile import SavedPlan
from reconciler.prune import DEFAULT_MAX_DELETES, DeletionAction, PlannedDeletion, plan_deletions, still_ours
from reconciler.registry.layout import open_layout
from reconciler.registry.layout.reader import Layout
from reconciler.registry.registries import Registries
from reconciler.resolve import TagListings, resolve_all, select_tags
from reconciler.runtime import Interruption
from reconciler.shard import Shard, budget_shares, lock_part
from reconciler.verify import Verification, verify_lock


def load_config(images_file: Path) -> Config:
    """images.yaml as every command reads it: an entry still asking for amd64Only is told it is ignored."""
    loaded = config_file.load(images_file)
    for image in loaded.desired:
        if image.amd64_only:
            logging.getLogger("reconciler").warning(
                "%s:%s: amd64Only is obsolete and ignored: the whole index of %s is copied",
                images_file, image.line, image.source.as_written,
            )
    return loaded


@attrs.frozen
class LockResult:
    lock: Lockfile
    written: bool
    resolved: tuple[str, ...]
    dropped: tuple[str, ...]
    errors: tuple[str, ...]
    """One line per source that could not be resolved; when any, nothing is written."""
    forgotten: tuple[str, ...] = ()
    """Candidates for deletion that left ``removed:``, one line each saying why."""


def _forgotten(deletion: PlannedDeletion) -> str:
    if deletion.action is DeletionAction.GONE:
        return f"{deletion.removed.target}: gone from the target; nothing left to delete"
    return f"{deletion.removed.target}: {(deletion.message or '').removesuffix('; kept')}; no longer ours to delete"


async def lock(
    registries: Registries,
    config: Config,
    lock_path: Path,
    *,
    upgrade_all: bool = False,
    upgrade_names: Collection[str] = (),
) -> LockResult:
    """Resolve new, changed or upgraded entries, keep the other pins, write only on success."""
    existing = lockfile.load(lock_path, missing_ok=True)
    listings = TagListings(registries)
    selected, rule_errors = await select_tags(registries, listings, config, existing,
                                              lambda rule: lockfile.upgrades(rule, upgrade_all, upgrade_names))
    work = lockfile.pending(config, existing, selected, upgrade_all=upgrade_all, upgrade_names=upgrade_names)
    resolved, errors = await resolve_all(registries, listings, list(work.to_resolve))
    dropped = tuple(str(image.target) for image in work.dropped)
    if errors or rule_errors:
        lines = tuple(f"{refused.source.as_written}: {refused.message}" for refused in rule_errors) + tuple(
            f"{target}: {message}" for target, message in sorted(errors.items(), key=lambda item: str(item[0])))
        return LockResult(existing, False, (), dropped, lines)
    new_lock = lockfile.merge(config, work.kept, resolved, selected)
    if conflicts := tagwriters.conflict_lines(config, new_lock):
        return LockResult(existing, False, (), dropped, (first_and_count(conflicts),))
    if config.prune:
        candidates, no_longer_ours = await still_ours(
            registries, lockfile.removal_candidates(existing, work.dropped, new_lock))
        forgotten = tuple(map(_forgotten, no_longer_ours))
    else:
        candidates = ()
        forgotten = tuple(f"{removed.target}: not to be deleted: prune is off in images.yaml"
                          for removed in existing.removed)
    new_lock = attrs.evolve(new_lock, removed=candidates)
    text = lockfile.dumps_readable(new_lock, lock_path)
    current = files.read_text(lock_path) if lock_path.exists() else None
    if text != current:
        files.write_atomic(lock_path, text)
    previous = {image.target: image for image in existing.images}
    changed = tuple(sorted(str(target) for target, pin in resolved.items() if previous.get(target) != pin))
    return LockResult(new_lock, text != current, changed, dropped, (), forgotten)


def lock_problems(config: Config, lock_path: Path) -> list[str]:
    """What is wrong with the lock for images.yaml, one line each (what `lock --check` lists):
    pins that do not match the file, then tags two pins would write with different content."""
    current = lockfile.load(lock_path)
    return lockfile.differences(config, current) + tagwriters.conflict_lines(config, current)


def matching_lock(config: Config, lock_path: Path) -> Lockfile:
    """The lock, refused unless it pins exactly what images.yaml asks for."""
    current = lockfile.load(lock_path)
    lines = lockfile.differences(config, current)
    if lines:
        described = first_and_count([line.lstrip("+-~ ") for line in lines])
        raise InputError(lock_path, f"does not match {config.path}: {described}; run `image-syncer lock`")
    if conflicts := tagwriters.conflict_lines(config, current):
        raise InputError(lock_path, first_and_count(conflicts))
    return current


async def plan(
    registries: Registries, config: Config, lock_path: Path, shard: Shard | None = None, from_path: Path | None = None,
) -> Plan:
    """``from_path``: an export of the lock, to apply from: then only the targets are asked."""
    current = matching_lock(config, lock_path)
    if from_path is not None:
        with _export_of(from_path, lock_path):
            return await make_plan(registries, current, ask_sources=False, shard=shard, prune=config.prune)
    rules = {image.target: image.referrers for image in lockfile.every_desired(config, current)}
    return await make_plan(registries, current, shard=shard, referrer_rules=rules, prune=config.prune)


def _export_of(path: Path, lock_path: Path) -> Layout:
    """The layout at ``path``, opened to read, when it is an export of the lock at ``lock_path``."""
    layout = open_layout(path)
    try:
        if layout.lock_text() != files.read_text(lock_path):
            raise InputError(path, f"holds an export of another lock than {lock_path}; export again, or use its lock")
    except BaseException:
        layout.close()
        raise
    return layout


async def apply(
    registries: Registries,
    config: Config,
    lock_path: Path,
    saved_plan: SavedPlan | None = None,
    observer: ApplyObserver | None = None,
    interruption: Interruption | None = None,
    shard: Shard | None = None,
    from_path: Path | None = None,
    max_deletes: int = DEFAULT_MAX_DELETES,
) -> Report:
    """Apply a saved plan after checking it is still fresh, or plan and apply image by image;
    ``from_path``: reading every source from that export of the lock, not from the registries.
    Deletions (``prune: true``) come last, once every copy succeeded; more than ``max_deletes``
    refuse the whole run before anything is copied."""
    current = matching_lock(config, lock_path)
    signed = _signed(config, current)
    interruption = interruption or Interruption()
    with _export_of(from_path, lock_path) if from_path is not None else contextlib.nullcontext() as layout:
        if saved_plan is not None:
            fresh = await interruption.run(check_fresh(registries, saved_plan, current, shard, config.prune),
                                           "stopped before copying")
            deletions = fresh.deletions
            check_deletions(deletions, max_deletes)
            report = await apply_plan(registries, fresh, observer=observer, interruption=interruption, signed=signed,
                                      layout=layout, budget_shares=budget_shares(shard))
        else:
            part = lock_part(shard, current)
            deletions = await interruption.run(plan_deletions(registries, part.removed if config.prune else ()),
                                               "stopped before copying")
            check_deletions(deletions, max_deletes)
            _, report = await plan_and_apply(registries, part, observer=observer, interruption=interruption,
                                             signed=signed, layout=layout, budget_shares=budget_shares(shard))
        return await delete_after(registries, report, deletions, interruption)


async def export(
    registries: Registries,
    config: Config,
    lock_path: Path,
    path: Path,
    observer: ApplyObserver | None = None,
    interruption: Interruption | None = None,
    shard: Shard | None = None,
) -> Report:
    """The lock's images (or a shard's) into one OCI image layout at ``path``, the lock file beside them."""
    current = matching_lock(config, lock_path)
    return await export_lock(registries, lock_part(shard, current), files.read_text(lock_path), path,
                             observer=observer, interruption=interruption, signed=_signed(config, current),
                             budget_shares=budget_shares(shard))


def _signed(config: Config, lock: Lockfile) -> dict[Reference, DesiredImage]:
    """By target, the images whose pinned signature is checked again before they are copied."""
    return {image.target: image for image in lockfile.every_desired(config, lock) if image.signature is not None}


async def verify(registries: Registries, config: Config, lock_path: Path, shard: Shard | None = None) -> Verification:
    """Only the target registry is asked: a scheduled check that our mirror was not tampered with."""
    return await verify_lock(registries, matching_lock(config, lock_path), shard)


class SyncStatus(enum.Enum):
    """The original image-syncer's verdicts, worded as its users' logs expect."""

    COPYING = "target does not exist – copying"
    DRY_RUN = "dry-run – copy skipped"
    EQUAL = "digests are equal – nothing to do"
    DIFFER = "digests differ – source image was probably changed"
    FAILED = "failed"


@attrs.frozen
class SyncedImage:
    source: Reference
    target: Reference
    digest: str | None
    status: SyncStatus
    message: str | None = None


@attrs.frozen
class SyncResult:
    images: tuple[SyncedImage, ...]
    report: Report | None
    """None for a dry run: nothing was applied."""

    @property
    def ok(self) -> bool:
        return all(image.status is not SyncStatus.FAILED and image.status is not SyncStatus.DIFFER
                   for image in self.images) and (self.report is None or self.report.ok)


async def sync(
    registries: Registries,
    config: Config,
    dry_run: bool,
    observer: ApplyObserver | None = None,
    interruption: Interruption | None = None,
) -> SyncResult:
    """The original tool's run: resolve each source now, copy what the target lacks.

    It is plan and apply over a lock that lives only in memory, so it refuses to
    overwrite exactly as apply does.
    """
    interruption = interruption or Interruption()
    listings = TagListings(registries)
    selected, rule_errors = await interruption.run(
        select_tags(registries, listings, config, Lockfile(inputs_hash="", images=()), lambda rule: True),
        "stopped before copying")
    desired = sorted((*config.desired, *selected), key=lambda image: str(image.target))
    resolved, errors = await interruption.run(resolve_all(registries, listings, desired), "stopped before copying")
    pins = Lockfile(inputs_hash=lockfile.inputs_hash(config), images=tuple(
        resolved[image.target] for image in desired if image.target in resolved
    ))
    report = None
    if dry_run:
        planned: list[PlannedImage | None] = list((await make_plan(registries, pins, ask_sources=False)).images)
    else:  # the sources were just resolved: only the targets are asked
        planned, report = await plan_and_apply(registries, pins, observer=observer, interruption=interruption)
    images = [
        SyncedImage(image.source, image.target, None, SyncStatus.FAILED, errors[image.target])
        for image in desired if image.target in errors
    ] + [SyncedImage(refused.source, refused.target, None, SyncStatus.FAILED, refused.message)
         for refused in rule_errors]
    for index, pinned in enumerate(pins.images):
        applied = report.images[index] if report else None
        status, message = _sync_status(planned[index], dry_run) if planned[index] else (SyncStatus.FAILED, None)
        if applied is not None and applied.outcome in _NOT_DONE and status is not SyncStatus.DIFFER:
            status, message = SyncStatus.FAILED, applied.message
        images.append(SyncedImage(pinned.source, pinned.target, str(pinned.digest), status, message))
    return SyncResult(tuple(sorted(images, key=lambda image: str(image.target))), report)


_NOT_DONE = (Outcome.FAILED, Outcome.REFUSED, Outcome.DEFERRED, Outcome.INTERRUPTED)


def _sync_status(planned: PlannedImage, dry_run: bool) -> tuple[SyncStatus, str | None]:
    if planned.action is Action.CREATE:
        return (SyncStatus.DRY_RUN if dry_run else SyncStatus.COPYING), None
    if planned.action is Action.UNCHANGED:
        return SyncStatus.EQUAL, None
    if planned.action is Action.CONFLICT:
        return SyncStatus.DIFFER, f"target holds {planned.target_digest}"
    return SyncStatus.FAILED, planned.message
