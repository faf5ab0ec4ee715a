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
from reconciler.lockfile import Lockfile
from reconciler.plan import PLAN_VERSION, Action, Plan, PlannedImage, SourcePulls, Summary, replanned
from reconciler.shard import Shard


@attrs.frozen(kw_only=True)
class _PlanDocument:
    version: int
    lock_digest: str
    shard: Shard | None = None
    images: tuple[PlannedImage, ...]
    pulls: tuple[SourcePulls, ...] = ()
    summary: Summary


_converter = documents.converter()
_converter.register_unstructure_hook(Action, lambda action: action.value)
_converter.register_structure_hook(Action, lambda value, _: Action(_converter.structure(value, str)))
_converter.register_unstructure_hook(Shard, str)
_converter.register_structure_hook(Shard, lambda value, _: Shard.parse(_converter.structure(value, str)))


def dumps(plan: Plan) -> str:
    document = _PlanDocument(
        version=plan.version, lock_digest=plan.lock_digest, shard=plan.shard, images=plan.images,
        pulls=plan.pulls, summary=plan.summary,
    )
    return json.dumps(_converter.unstructure(document), indent=2) + "\n"


def save(path: Path, plan: Plan) -> None:
    files.write_atomic(path, dumps(plan))


def load(path: Path) -> Plan:
    """Read a saved plan strictly; a damaged or foreign file is refused with its name and line."""
    document = YamlDocument.read(path, entry_key="target", if_missing="saved plan not found")
    if not isinstance(document.data, dict) or document.data.get("version") != PLAN_VERSION:
        raise document.error((), f"not a saved plan of version {PLAN_VERSION}")
    saved = document.structure(_converter, _PlanDocument)
    return Plan(lock_digest=saved.lock_digest, images=saved.images, version=saved.version, shard=saved.shard,
                pulls=saved.pulls)


def first_difference(plan: Plan, lock: Lockfile) -> str | None:
    """Where a saved plan first says other than planning ``lock`` again would: the image's target,
    the field and both values. Every field is compared, as the plan file writes it, so whatever
    apply acts on (action, digests, subset, referrers, platforms) is the lock's."""
    if len(plan.images) != len(lock.images):
        return f"it has {len(plan.images)} images, the lock {len(lock.images)} pins"
    for saved, locked in zip(plan.images, lock.images):
        difference = _first_change("", _converter.unstructure(saved), _converter.unstructure(replanned(locked, saved)))
        if difference is not None:
            return f"{locked.target}: {difference}"
    return None


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
