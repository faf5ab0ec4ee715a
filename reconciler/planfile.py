"""The saved plan: the JSON that ``plan --out`` writes and ``apply PLANFILE`` reads.

It is also what ``plan --format json`` prints (schemas/plan.schema.json): what you review is
what applies. A saved plan travels between CI jobs, so it is input: read strictly, and
compared field by field with what planning the lock gives before anything is applied.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from reconciler import documents, files
from reconciler.documents import YamlDocument
from reconciler.errors import shorten
from reconciler.lockfile import LockedImage, Lockfile, RemovedImage
from reconciler.oci.digest import Digest
from reconciler.oci.platforms import PlatformSubset
from reconciler.oci.reference import Reference
from reconciler.oci.referrer import Referrer
from reconciler.plan import PLAN_VERSION, Action, Plan, PlannedImage, SourcePulls, Summary, decide
from reconciler.prune import DeletionAction, PlannedDeletion, decide_deletion
from reconciler.shard import Shard


@attrs.frozen(kw_only=True)
class SavedImage:
    """A planned image as the file writes it: the pin's fields a reviewer reads, then what planning
    decided. What only the lock holds (media type, referrers rule, signing key) is not written:
    applying takes the pins from the lock, once the file is found to agree with it."""

    source: Reference
    target: Reference
    digest: Digest
    action: Action
    target_digest: Digest | None = None
    moved_to: Digest | None = None
    message: str | None = None
    platforms: tuple[str, ...] = ()
    referrers: tuple[Referrer, ...] = ()
    new_referrers: tuple[Referrer, ...] = ()
    subset: PlatformSubset | None = None
    rule: str | None = None


@attrs.frozen(kw_only=True)
class SavedDeletion:
    """A candidate of the lock's ``removed:`` and what planning decided for it."""

    target: Reference
    digest: Digest
    action: DeletionAction
    target_digest: Digest | None = None
    message: str | None = None


@attrs.frozen(kw_only=True)
class SavedPlan:
    version: int
    lock_digest: str
    shard: Shard | None = None
    images: tuple[SavedImage, ...]
    deletions: tuple[SavedDeletion, ...] = attrs.field(default=(), metadata=documents.OMITTED_WHEN_DEFAULT)
    pulls: tuple[SourcePulls, ...] = ()
    summary: Summary


_converter = documents.converter()
_converter.register_unstructure_hook(Action, lambda action: action.value)
_converter.register_structure_hook(Action, lambda value, _: Action(_converter.structure(value, str)))
_converter.register_unstructure_hook(DeletionAction, lambda action: action.value)
_converter.register_structure_hook(DeletionAction,
                                   lambda value, _: DeletionAction(_converter.structure(value, str)))
_converter.register_unstructure_hook(Shard, str)
_converter.register_structure_hook(Shard, lambda value, _: Shard.parse(_converter.structure(value, str)))


def dumps(plan: Plan) -> str:
    document = SavedPlan(
        version=plan.version, lock_digest=plan.lock_digest, shard=plan.shard,
        images=tuple(_saved(image) for image in plan.images), deletions=tuple(map(_saved_deletion, plan.deletions)),
        pulls=plan.pulls, summary=plan.summary,
    )
    return json.dumps(_converter.unstructure(document), indent=2) + "\n"


def _saved(image: PlannedImage) -> SavedImage:
    locked = image.locked
    return SavedImage(
        source=locked.source, target=locked.target, digest=locked.digest, action=image.action,
        target_digest=image.target_digest, moved_to=image.moved_to, message=image.message,
        platforms=locked.platforms, referrers=locked.referrers, new_referrers=image.new_referrers,
        subset=locked.subset, rule=locked.rule,
    )


def _saved_deletion(deletion: PlannedDeletion) -> SavedDeletion:
    return SavedDeletion(target=deletion.removed.target, digest=deletion.removed.digest, action=deletion.action,
                         target_digest=deletion.target_digest, message=deletion.message)


def save(path: Path, plan: Plan) -> None:
    files.write_atomic(path, dumps(plan))


def load(path: Path) -> SavedPlan:
    """Read a saved plan strictly; a damaged or foreign file is refused with its name and line."""
    document = YamlDocument.read(path, entry_key="target", if_missing="saved plan not found")
    if not isinstance(document.data, dict) or document.data.get("version") != PLAN_VERSION:
        raise document.error((), f"not a saved plan of version {PLAN_VERSION}")
    return document.structure(_converter, SavedPlan)


def first_difference(saved: SavedPlan, lock: Lockfile, prune: bool = False) -> str | None:
    """Where a saved plan first says other than planning ``lock`` again would: the image's target,
    the field and both values. Every field is compared, as the plan file writes it, so whatever
    apply acts on (action, digests, subset, referrers, platforms) is the lock's. Deletions are
    the lock's ``removed:`` when ``prune`` (images.yaml's ``prune: true``), else none."""
    if len(saved.images) != len(lock.images):
        return f"it has {len(saved.images)} images, the lock {len(lock.images)} pins"
    removed = lock.removed if prune else ()
    if len(saved.deletions) != len(removed):
        return f"it has {len(saved.deletions)} deletions, planning the lock gives {len(removed)}"
    pairs = [*((image, _saved(_replanned(locked, image)), locked.target)
               for image, locked in zip(saved.images, lock.images)),
             *((deletion, _saved_deletion(_redecided(candidate, deletion)), candidate.target)
               for deletion, candidate in zip(saved.deletions, removed))]
    for written, replanned, target in pairs:
        difference = _first_change("", _converter.unstructure(written), _converter.unstructure(replanned))
        if difference is not None:
            return f"{target}: {difference}"
    return None


def restored(saved: SavedPlan, lock: Lockfile, prune: bool = False) -> Plan:
    """The plan a saved one stands for, over the pins of ``lock`` (which ``first_difference`` found it agrees with)."""
    return Plan(lock_digest=saved.lock_digest, images=tuple(map(_replanned, lock.images, saved.images)),
                version=saved.version, shard=saved.shard, pulls=saved.pulls,
                deletions=tuple(map(_redecided, lock.removed if prune else (), saved.deletions)))


def _redecided(removed: RemovedImage, saved: SavedDeletion) -> PlannedDeletion:
    """What planning ``removed`` gives with its target tag holding what ``saved`` says it held."""
    return decide_deletion(removed, saved.target_digest)


def _replanned(locked: LockedImage, saved: SavedImage) -> PlannedImage:
    """What planning ``locked`` gives with the target tag holding what ``saved`` says it held
    (apply asks the target again). What only the source could say comes from ``saved``, since
    apply asks no source before copying: that the image was refused for its source (it stays
    refused), where the source tag moved, and what else refers to it upstream."""
    decided = decide(locked, saved.target_digest, None, saved.moved_to)
    if decided.action is Action.CREATE and saved.action in (Action.SOURCE_MISSING, Action.ERROR):
        decided = attrs.evolve(decided, action=saved.action, message=saved.message)
    return attrs.evolve(decided, new_referrers=saved.new_referrers)


def _first_change(path: str, written: object, planned: object) -> str | None:
    """The first value of the plan file (by its path, such as ``referrers[0].digest``) that planning does not give."""
    if isinstance(written, dict) and isinstance(planned, dict):
        changes = (_first_change(f"{path}.{key}" if path else key, written.get(key), planned.get(key))
                   for key in dict.fromkeys([*planned, *written]))
    elif isinstance(written, list) and isinstance(planned, list):
        if len(written) != len(planned):
            return f"{path} lists {len(written)} in the plan, but planning the lock gives {len(planned)}"
        changes = (_first_change(f"{path}[{index}]", *pair) for index, pair in enumerate(zip(written, planned)))
    else:
        return None if written == planned else (
            f"{path} is {_shown(written)} in the plan, but planning the lock gives {_shown(planned)}")
    return next((change for change in changes if change is not None), None)


def _shown(value: object) -> str:
    return shorten(json.dumps(value, separators=(",", ":"), ensure_ascii=False), _SHOWN)


_SHOWN = 200
"""Characters of a value shown in the refusal: enough for a subset, and two of them well within a line."""
