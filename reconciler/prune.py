"""Prune: delete from the targets what left images.yaml, and only what the lock recorded we wrote there.

A candidate is a target tag and the digest we pushed under it (the lock's ``removed:``). Right
before deleting, the tag must still hold that digest, and nothing else may go with it: the tag
is deleted where the registry deletes tags; where it deletes only by digest (docker-registry
2.8), the digest goes only when no other tag of the repository holds it or an index that lists
it. The protocol has no conditional DELETE: a tag set on the digest between that listing and the
DELETE goes with it. Referrers of a deleted digest stay behind, dangling, for the registry's
garbage collection.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence

import attrs

from reconciler.bounded import bugs_fail_this_image
from reconciler.lockfile import RemovedImage
from reconciler.oci import mediatypes
from reconciler.oci.digest import Digest
from reconciler.oci.errors import OCIError
from reconciler.oci.reference import Reference
from reconciler.registry.client import Deletion
from reconciler.registry.registries import Registries
from reconciler.registry.repository import RemoteRepository

DEFAULT_MAX_DELETES = 10


class DeletionAction(enum.Enum):
    DELETE = "delete"
    GONE = "gone"
    """The tag is absent already: nothing to do."""
    REFUSED = "refused"
    """The tag holds another digest: no longer ours, kept."""
    ERROR = "error"

    @property
    def refused(self) -> bool:
        return self in (DeletionAction.REFUSED, DeletionAction.ERROR)


@attrs.frozen
class PlannedDeletion:
    removed: RemovedImage
    action: DeletionAction
    target_digest: Digest | None = None
    """What the target tag held when planned: a saved plan is stale once this changes."""
    message: str | None = None


class DeletionOutcome(enum.Enum):
    DELETED = "deleted"
    GONE = "gone"
    REFUSED = "refused"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not tried: an image of the run was not copied, and deletions run only after every copy succeeded."""


@attrs.frozen
class AppliedDeletion:
    target: Reference
    digest: Digest
    outcome: DeletionOutcome
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in (DeletionOutcome.DELETED, DeletionOutcome.GONE)


def decide_deletion(removed: RemovedImage, held: Digest | None) -> PlannedDeletion:
    """The rule, over what the target tag holds now."""
    if held is None:
        return PlannedDeletion(removed, DeletionAction.GONE)
    if held != removed.digest:
        return PlannedDeletion(removed, DeletionAction.REFUSED, held, not_ours(removed, held))
    return PlannedDeletion(removed, DeletionAction.DELETE, held)


def not_ours(removed: RemovedImage, held: Digest) -> str:
    return f"now holds {held}, not the {removed.digest} we wrote; kept"


async def plan_deletions(registries: Registries, removed: Sequence[RemovedImage]) -> tuple[PlannedDeletion, ...]:
    """One HEAD per candidate; a registry's failure is that candidate's ERROR."""

    async def plan_one(candidate: RemovedImage) -> PlannedDeletion:
        try:
            with bugs_fail_this_image():
                return decide_deletion(candidate, await registries.resolve_digest(candidate.target))
        except OCIError as error:
            return PlannedDeletion(candidate, DeletionAction.ERROR, message=str(error))

    return tuple(await registries.map(plan_one, removed))


async def still_ours(
    registries: Registries, candidates: Sequence[RemovedImage]
) -> tuple[tuple[RemovedImage, ...], tuple[PlannedDeletion, ...]]:
    """``lock``'s check, one HEAD each: the candidates whose tag still holds what we wrote (or that
    could not be asked), and the others, no longer ours to delete: gone, or re-pointed by someone else."""
    checked = await plan_deletions(registries, candidates)
    kept = tuple(deletion.removed for deletion in checked
                 if deletion.action in (DeletionAction.DELETE, DeletionAction.ERROR))
    return kept, tuple(deletion for deletion in checked if deletion.action in (DeletionAction.GONE,
                                                                                DeletionAction.REFUSED))


async def apply_deletions(registries: Registries, planned: Sequence[PlannedDeletion]) -> tuple[AppliedDeletion, ...]:
    """Every candidate as planned; those planned for deletion checked again right before. Candidates
    of one repository and digest go together: deleting the digest takes all of their tags at once."""
    chosen = sorted((deletion.removed for deletion in planned if deletion.action is DeletionAction.DELETE),
                    key=_group_key)
    groups = [tuple(group) for _, group in itertools.groupby(chosen, key=_group_key)]
    done = await registries.map(lambda group: _delete_group(registries, group), groups)
    return _by_target([*_not_to_delete(planned), *(result for results in done for result in results)])


def skipped(planned: Sequence[PlannedDeletion], why: str) -> tuple[AppliedDeletion, ...]:
    """Every candidate as planned, those planned for deletion reported as not tried."""
    return _by_target([*_not_to_delete(planned), *(
        _result(deletion.removed, DeletionOutcome.SKIPPED, why)
        for deletion in planned if deletion.action is DeletionAction.DELETE)])


_AS_PLANNED = {DeletionAction.GONE: DeletionOutcome.GONE, DeletionAction.REFUSED: DeletionOutcome.REFUSED,
               DeletionAction.ERROR: DeletionOutcome.FAILED}


def _not_to_delete(planned: Sequence[PlannedDeletion]) -> list[AppliedDeletion]:
    return [_result(deletion.removed, _AS_PLANNED[deletion.action], deletion.message)
            for deletion in planned if deletion.action is not DeletionAction.DELETE]


def _by_target(results: list[AppliedDeletion]) -> tuple[AppliedDeletion, ...]:
    return tuple(sorted(results, key=lambda result: str(result.target)))


def _group_key(removed: RemovedImage) -> tuple[str, str]:
    return str(removed.target.repository), str(removed.digest)


def _result(removed: RemovedImage, outcome: DeletionOutcome, message: str | None = None) -> AppliedDeletion:
    return AppliedDeletion(removed.target, removed.digest, outcome, message)


async def _delete_group(registries: Registries, group: tuple[RemovedImage, ...]) -> list[AppliedDeletion]:
    try:
        with bugs_fail_this_image():
            return await _Group(registries, group).delete()
    except OCIError as error:
        return [_result(removed, DeletionOutcome.FAILED, str(error)) for removed in group]


class _Group:
    """Candidates of one repository that hold one digest."""

    def __init__(self, registries: Registries, group: tuple[RemovedImage, ...]) -> None:
        self._registries = registries
        self._group = group
        self._digest = group[0].digest
        self._repository: RemoteRepository = registries.repository(group[0].target.repository)

    async def delete(self) -> list[AppliedDeletion]:
        checked = [decide_deletion(removed, await self._registries.resolve_digest(removed.target))
                   for removed in self._group]
        results = [_result(deletion.removed, DeletionOutcome.GONE if deletion.action is DeletionAction.GONE
                           else DeletionOutcome.REFUSED, deletion.message)
                   for deletion in checked if deletion.action is not DeletionAction.DELETE]
        ours = [deletion.removed for deletion in checked if deletion.action is DeletionAction.DELETE]
        by_digest = []
        for removed in ours:
            if await self._delete_tag(removed):
                results.append(_result(removed, DeletionOutcome.DELETED))
            else:
                by_digest.append(removed)
        if by_digest:
            results += await self._delete_digest(by_digest)
        return results

    async def _delete_tag(self, removed: RemovedImage) -> bool:
        """Whether the tag itself is gone now; a registry's word that it deleted is checked with a HEAD."""
        if await self._repository.delete_manifest(str(removed.target.tag)) is Deletion.UNSUPPORTED:
            return False
        return await self._registries.resolve_digest(removed.target) != self._digest

    async def _delete_digest(self, ours: list[RemovedImage]) -> list[AppliedDeletion]:
        """Only when nothing but our tags holds the digest, nor lists it as an index's child."""
        if (holder := await self._other_holder({str(removed.target.tag) for removed in ours})) is not None:
            return [_result(removed, DeletionOutcome.REFUSED, holder) for removed in ours]
        answer = await self._repository.delete_manifest(str(self._digest))
        if answer is Deletion.UNSUPPORTED:
            why = (f"{self._repository.host} does not allow deleting manifests (docker-registry needs "
                   "storage.delete.enabled: true; other registries the delete permission); kept")
            return [_result(removed, DeletionOutcome.REFUSED, why) for removed in ours]
        outcome = DeletionOutcome.DELETED if answer is Deletion.DELETED else DeletionOutcome.GONE
        return [_result(removed, outcome) for removed in ours]

    async def _other_holder(self, ours: set[str]) -> str | None:
        """Why deleting the digest would take more than ``ours`` with it, or None."""
        others = sorted(set(await self._repository.tags()) - ours)
        reasons = await self._registries.map(self._holds, others)
        return next((reason for reason in reasons if reason is not None), None)

    async def _holds(self, tag: str) -> str | None:
        head = await self._repository.head_manifest(tag)
        if head is None:
            return None
        digest = head.digest or (await self._repository.get_manifest(tag)).digest
        if digest == self._digest:
            return f"{self._digest} is also tagged {tag}; deleting it by digest would remove that tag too; kept"
        if head.media_type in mediatypes.INDEX_TYPES or head.media_type is None:
            index = await self._repository.get_manifest(digest)
            if any(child.digest == self._digest for child in index.children()):
                return (f"{self._digest} is listed by the index tagged {tag}; deleting it by digest would "
                        "break that index; kept")
        return None
