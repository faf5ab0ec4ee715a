"""Apply a plan: copy exactly the locked digests, tag last, never overwrite a tag."""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

import attrs

from reconciler.bounded import bugs_fail_this_image
from reconciler.config import DesiredImage
from reconciler.errors import first_and_count
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.oci.digest import Digest
from reconciler.oci.errors import OCIError
from reconciler.oci.manifest import Manifest
from reconciler.oci.platforms import SubsetChanged
from reconciler.oci.reference import Reference
from reconciler.oci.referrer import in_levels
from reconciler.plan import Action, Plan, PlannedImage, lock_digest, plan_image
from reconciler.planfile import SavedPlan, first_difference, restored
from reconciler.prune import AppliedDeletion, DeletionAction, PlannedDeletion, apply_deletions, skipped
from reconciler.pulls import PullBudgets
from reconciler.registry.registries import Registries
from reconciler.registry.copy import Copier, CopyStats
from reconciler.registry.layout.reader import Layout
from reconciler.registry.repository import RemoteRepository
from reconciler.registry.errors import PullLimitReached, RegistryError, ResponseError
from reconciler.registry.referrers import ReferrerRefused, ReferrerWriter
from reconciler.runtime import Interrupted, Interruption
from reconciler.shard import Shard, lock_part
from reconciler.signatures import Unsigned, check_pinned

class Outcome(enum.Enum):
    COPIED = "copied"
    UNCHANGED = "unchanged"
    REFUSED = "refused"
    FAILED = "failed"
    DEFERRED = "deferred"
    """Left for a later run: the source's pull limit would not cover it."""
    INTERRUPTED = "interrupted"


@attrs.frozen
class AppliedImage:
    source: Reference
    target: Reference
    digest: str
    outcome: Outcome
    message: str | None = None


@attrs.frozen
class Report:
    images: tuple[AppliedImage, ...]
    stats: CopyStats
    seconds: float = 0.0
    """How long applying took: from the first target asked (or, for a saved plan, its first copy) to the last tag."""
    deletions: tuple[AppliedDeletion, ...] = ()
    """What prune deleted (or refused, or skipped), sorted by target."""

    @property
    def copied_all(self) -> bool:
        return all(image.outcome in (Outcome.COPIED, Outcome.UNCHANGED) for image in self.images)

    @property
    def ok(self) -> bool:
        return self.copied_all and all(deletion.ok for deletion in self.deletions)

    def count(self, outcome: Outcome) -> int:
        return sum(image.outcome is outcome for image in self.images)


class StalePlan(RegistryError):
    """A saved plan no longer describes the world; apply refuses it whole, as Terraform does."""


async def check_fresh(registries: Registries, saved: SavedPlan, lock: Lockfile, shard: Shard | None,
                      prune: bool = False) -> Plan:
    """The plan a saved one stands for, unless it says other than planning the lock now gives:
    every image as planning its pin gives it (a plan is a file that travels between jobs, so it
    is input), and every target tag still holding what it held when planned.

    A plan made with ``--shard`` is compared with that shard's part of the lock only, so a
    re-pin in another shard leaves it fresh; it is refused unless applied with the same shard.
    """
    if saved.shard != shard:
        made = f"with --shard {saved.shard}" if saved.shard else "without --shard"
        raise StalePlan(f"saved plan was made {made}: apply it {made}")
    lock = lock_part(shard, lock)
    if saved.lock_digest != lock_digest(lock):
        raise StalePlan("saved plan is stale: the lock file changed since it was made; run `image-syncer plan` again")
    if (difference := first_difference(saved, lock, prune)) is not None:
        raise StalePlan(f"saved plan does not match the lock file: {difference}; run `image-syncer plan` again")

    plan = restored(saved, lock, prune)

    async def changed(planned: tuple[Reference, Digest | None]) -> str | None:
        target, held = planned
        now = await registries.resolve_digest(target)
        return f"{target} now holds {now or 'nothing'}" if now != held else None

    targets = [*((image.locked.target, image.target_digest) for image in plan.images),
               *((deletion.removed.target, deletion.target_digest) for deletion in plan.deletions)]
    moved = [line for line in await registries.map(changed, targets) if line]
    if moved:
        raise StalePlan(f"saved plan is stale: {first_and_count(moved)}; run `image-syncer plan` again")
    return plan


class TooManyDeletions(OCIError):
    """More deletions than ``--max-deletes`` allows: apply is refused whole, before anything is copied."""


def check_deletions(deletions: Sequence[PlannedDeletion], max_deletes: int) -> None:
    count = sum(deletion.action is DeletionAction.DELETE for deletion in deletions)
    if count > max_deletes:
        raise TooManyDeletions(f"{count} deletions planned, over --max-deletes {max_deletes}: nothing copied or "
                               f"deleted; review them with `image-syncer plan`, then apply with --max-deletes {count}")


async def delete_after(registries: Registries, report: Report, deletions: Sequence[PlannedDeletion],
                       interruption: Interruption) -> Report:
    """The deletions, once every copy of the run has succeeded; else none is tried, each reported skipped."""
    if not report.copied_all:
        failed = sum(image.outcome not in (Outcome.COPIED, Outcome.UNCHANGED) for image in report.images)
        return attrs.evolve(report, deletions=skipped(
            deletions, f"not tried: {failed} image(s) of this run were not copied, and deletions run only after "
                       "every copy succeeded"))
    try:
        done = await interruption.run(apply_deletions(registries, deletions), "")
    except Interrupted:
        done = skipped(deletions, "stopped while deleting: deleted or not, `image-syncer plan` tells")
    return attrs.evolve(report, deletions=done)


class ApplyObserver(Protocol):
    """Progress for the user while apply runs; the report comes at the end."""

    def started(self, total: int) -> None: ...

    def image_done(self, image: AppliedImage) -> None: ...

    def bytes_sent(self, count: int) -> None: ...


async def apply_plan(
    registries: Registries,
    plan: Plan,
    observer: ApplyObserver | None = None,
    interruption: Interruption | None = None,
    signed: Mapping[Reference, DesiredImage] = MappingProxyType({}),
    layout: Layout | None = None,
    budget_shares: int = 1,
) -> Report:
    """Exactly what a plan says (a saved one checked fresh first). ``signed``: by target, the
    images whose source must still carry a valid signature right before it is copied.
    ``layout``: an export of the lock to read every source from instead of the registries.
    ``budget_shares``: how many shards split each source's pull budget."""
    async def as_planned(index: int) -> PlannedImage:
        return plan.images[index]

    _, report = await _apply(registries, [image.locked for image in plan.images], as_planned, observer,
                             interruption, signed, layout, budget_shares)
    return report


async def plan_and_apply(
    registries: Registries,
    lock: Lockfile,
    observer: ApplyObserver | None = None,
    interruption: Interruption | None = None,
    signed: Mapping[Reference, DesiredImage] = MappingProxyType({}),
    layout: Layout | None = None,
    budget_shares: int = 1,
) -> tuple[list[PlannedImage | None], Report]:
    """Each image is copied as soon as its target tag is found lacking it, not after every
    image was planned: over a slow network no registry sits idle meanwhile. The plan comes
    back too, image by image (None for an image a stop kept from starting)."""
    async def planned(index: int) -> PlannedImage:
        return await plan_image(registries, lock.images[index], ask_source=False)

    return await _apply(registries, lock.images, planned, observer, interruption, signed, layout, budget_shares)


async def _apply(
    registries: Registries,
    images: Sequence[LockedImage],
    decide: Callable[[int], Coroutine[Any, Any, PlannedImage]],
    observer: ApplyObserver | None,
    interruption: Interruption | None,
    signed: Mapping[Reference, DesiredImage],
    layout: Layout | None = None,
    budget_shares: int = 1,
) -> tuple[list[PlannedImage | None], Report]:
    started = time.monotonic()
    copier = Copier(registries, on_bytes=observer.bytes_sent if observer else None)
    interruption = interruption or Interruption()
    budgets = PullBudgets(registries, images, budget_shares) if layout is None else None  # a layout counts no pulls
    writer = ReferrerWriter(registries, copier)

    def source_of(image: LockedImage) -> RemoteRepository | Layout:
        return layout if layout is not None else registries.repository(image.source.repository)

    async def apply_one(index: int) -> tuple[PlannedImage | None, AppliedImage]:
        image, planned = images[index], None
        try:
            with bugs_fail_this_image():
                planned = await interruption.run(decide(index), "not started")
                result = await _apply_image(registries, copier, writer, planned, source_of(image), interruption,
                                            functools.partial(admit_copy, source_of(image), budgets, index, image,
                                                              signed.get(image.target)))
        except (Interrupted, OCIError) as error:
            result = ended_by(image, error)
        finally:
            if budgets is not None:
                budgets.skip(index)  # unless admitted: then its pulls are counted already
        if observer:
            observer.image_done(result)
        return planned, result

    if observer:
        observer.started(len(images))
    async with copier:
        done = await registries.map(apply_one, range(len(images)))
    report = Report(images=tuple(result for _, result in done), stats=copier.stats,
                    seconds=time.monotonic() - started)
    return [planned for planned, _ in done], report


async def admit_copy(
    source: RemoteRepository | Layout, budgets: PullBudgets | None, index: int, image: LockedImage,
    signed: DesiredImage | None,
) -> AppliedImage | None:
    """None when the image may be copied now from ``source``: within the pull budget (where
    there is one), and still signed if it must be."""
    if budgets is not None and (deferred := await budgets.admit(index)) is not None:
        return applied(image, Outcome.DEFERRED, deferred)
    if signed is not None:
        try:
            await check_pinned(source, signed, image)
        except Unsigned as refusal:
            return applied(image, Outcome.REFUSED, str(refusal))
    return None


def ended_by(image: LockedImage, error: Interrupted | OCIError) -> AppliedImage:
    """The outcome of an image whose work stopped on ``error``: a stop, a pull limit met, or a failure."""
    if isinstance(error, Interrupted):
        return applied(image, Outcome.INTERRUPTED, str(error))
    if isinstance(error, PullLimitReached):
        return applied(image, Outcome.DEFERRED, error.deferral)
    return applied(image, Outcome.FAILED, str(error))


def applied(image: LockedImage, outcome: Outcome, message: str | None = None) -> AppliedImage:
    return AppliedImage(image.source, image.target, str(image.pushed_digest), outcome, message)


async def _apply_image(
    registries: Registries, copier: Copier, writer: ReferrerWriter, image: PlannedImage,
    source: RemoteRepository | Layout, interruption: Interruption,
    admit: Callable[[], Coroutine[Any, Any, AppliedImage | None]],
) -> AppliedImage:
    """The image, then its locked referrers (their subject must be in the target first)."""
    result = await _copy_image(registries, copier, image, source, interruption, admit)
    locked = image.locked
    if result.outcome not in (Outcome.COPIED, Outcome.UNCHANGED) or not locked.referrers:
        return result
    try:
        with bugs_fail_this_image():  # the image is there: its line says so, whatever failed after
            await interruption.run(_write_referrers(writer, source, locked),
                                   f"{result.outcome.value}, but stopped before its referrers were written")
    except ReferrerRefused as refusal:
        return applied(locked, Outcome.REFUSED, f"{result.outcome.value}, but a referrer was refused: {refusal}")
    except OCIError as error:
        return applied(locked, Outcome.FAILED, f"{result.outcome.value}, but its referrers failed: {error}")
    return result


async def _write_referrers(writer: ReferrerWriter, source: RemoteRepository | Layout, image: LockedImage) -> None:
    """Level by level: a referrer of a referrer (a signature of an SBOM) after its subject."""
    for level in in_levels(image.referrers):
        await asyncio.gather(*(writer.write(source, image.target.repository, referrer) for referrer in level))


async def _copy_image(
    registries: Registries, copier: Copier, image: PlannedImage, source: RemoteRepository | Layout,
    interruption: Interruption, admit: Callable[[], Coroutine[Any, Any, AppliedImage | None]],
) -> AppliedImage:
    locked = image.locked
    if image.action is Action.UNCHANGED:
        return applied(locked, Outcome.UNCHANGED)
    if image.action is not Action.CREATE:
        return applied(locked, Outcome.REFUSED if image.action is Action.CONFLICT else Outcome.FAILED, image.message)
    if (held_back := await interruption.run(admit(), "not started")) is not None:
        return held_back
    target = locked.target
    try:
        manifest = await interruption.run(
            copier.copy_referenced(source, locked.digest, registries.repository(target.repository), locked.subset),
            "stopped while copying; its tag was not pushed")
    except SubsetChanged as refusal:
        return applied(locked, Outcome.REFUSED, str(refusal))
    held = await interruption.run(registries.resolve_digest(target), "copied, but stopped before its tag was pushed")
    if held is not None and held != locked.pushed_digest:
        return applied(locked, Outcome.REFUSED,
                       f"target tag was set to {held} while copying; refusing to overwrite")
    if held is None:
        return await interruption.run(
            _push_tag(registries, locked, manifest),
            "copied, but stopped while its tag was pushed: the tag holds this image or what it held before",
            grace=registries.options.timeout)
    return applied(locked, Outcome.COPIED)


async def _push_tag(registries: Registries, image: LockedImage, manifest: Manifest) -> AppliedImage:
    """The manifest under the target tag, and proof that the tag holds it."""
    target = image.target
    try:
        held = await registries.repository(target.repository).put_manifest(str(target.tag), manifest)
    except ResponseError as refusal:
        # An immutable tag (Artifact Registry, ECR, Harbor, Quay) that another writer set
        # after our re-check: the registry's refusal is what keeps it, so it is a conflict.
        if refusal.transient:
            raise
        held = await registries.resolve_digest(target)
        if held is None:
            raise
        if held != image.pushed_digest:
            return applied(image, Outcome.REFUSED, f"target tag was set to {held} while copying, and "
                                                   f"the registry refused to overwrite it (HTTP {refusal.status})")
    if held is None:  # the registry did not say what it stored: ask
        held = await registries.resolve_digest(target)
    if held != image.pushed_digest:
        return applied(image, Outcome.FAILED,
                       f"after pushing, target tag holds {held or 'nothing'}, not {image.pushed_digest}")
    return applied(image, Outcome.COPIED)
