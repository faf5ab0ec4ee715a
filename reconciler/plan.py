"""The plan: what apply would do for each locked image, decided by asking the registries.

A plan is a plain value. It can be rendered for review (render.py), saved (planfile.py) and
applied later; apply refuses a saved plan once the lock or a target has changed since, or
when it says anything else than planning the lock gives.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from reconciler import documents
from reconciler.bounded import bugs_fail_this_image
from reconciler.config import ReferrersRule
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.oci.digest import Digest
from reconciler.oci.errors import OCIError
from reconciler.oci.reference import Reference
from reconciler.oci.referrer import Referrer
from reconciler.prune import DeletionAction, PlannedDeletion, plan_deletions
from reconciler.registry import referrers
from reconciler.registry.registries import Registries
from reconciler.resolve import TagListings
from reconciler.shard import Shard, lock_part

PLAN_VERSION = 1


class Action(enum.Enum):
    CREATE = "create"
    UNCHANGED = "unchanged"
    CONFLICT = "conflict"
    SOURCE_MISSING = "source-missing"
    ERROR = "error"

    @property
    def refused(self) -> bool:
        return self in (Action.CONFLICT, Action.SOURCE_MISSING, Action.ERROR)


@attrs.frozen
class PlannedImage:
    """A pin and what planning decided for it."""

    locked: LockedImage
    action: Action
    target_digest: Digest | None = None
    """What the target tag held when planned: a saved plan is stale once this changes."""
    moved_to: Digest | None = None
    """Where the source tag points now, when that is no longer the locked digest."""
    message: str | None = None
    new_referrers: tuple[Referrer, ...] = ()
    """Referrers the source has now that the lock does not pin (``lock --upgrade`` pins them); not copied."""


@attrs.frozen
class SourcePulls:
    """A source registry's pull budget (Docker Hub's) against what applying the plan would pull."""

    registry: str
    needed: int
    """Manifest GETs of the images to create, at most (see ``pulls_needed``)."""
    remaining: int
    limit: int


def pulls_needed(image: LockedImage) -> int:
    """Manifest GETs to copy an image, at most: its own, one per platform of an index copied (Docker
    Hub counts no more; a single image whose platform the lock records counts one too many, as the
    plan does not say which it is) and one per pinned referrer."""
    return 1 + len(image.pushed_platforms) + len(image.referrers)


@attrs.frozen
class Summary:
    create: int
    unchanged: int
    refused: int
    """Images and deletions refused."""
    moved: int
    delete: int = attrs.field(default=0, metadata=documents.OMITTED_WHEN_DEFAULT)


@attrs.frozen
class Plan:
    lock_digest: str
    images: tuple[PlannedImage, ...]
    version: int = PLAN_VERSION
    shard: Shard | None = None
    """Made with ``--shard``: applied only with the same one; ``lock_digest`` is then of the shard's part."""
    pulls: tuple[SourcePulls, ...] = ()
    """Only for sources that state a pull budget; a plan that asked no source has none."""
    deletions: tuple[PlannedDeletion, ...] = ()
    """The lock's ``removed:`` as the targets answered, sorted by target; none unless images.yaml
    says ``prune: true``."""

    @property
    def summary(self) -> Summary:
        actions = [image.action for image in self.images]
        return Summary(
            create=actions.count(Action.CREATE),
            unchanged=actions.count(Action.UNCHANGED),
            refused=sum(action.refused for action in actions) + sum(
                deletion.action.refused for deletion in self.deletions),
            moved=sum(image.moved_to is not None for image in self.images),
            delete=self.delete_count,
        )

    @property
    def delete_count(self) -> int:
        return sum(deletion.action is DeletionAction.DELETE for deletion in self.deletions)

    @property
    def has_changes(self) -> bool:
        return any(image.action is Action.CREATE for image in self.images) or self.delete_count > 0

    @property
    def has_refusals(self) -> bool:
        return (any(image.action.refused for image in self.images)
                or any(deletion.action.refused for deletion in self.deletions))


_pins = documents.converter()
"""Not the lock file's own converter: the digest of the same pins must stay what saved plans hold."""


def lock_digest(lock: Lockfile) -> str:
    """Identifies the exact pins a plan was made from, whatever the lock file's layout."""
    pins = json.dumps(_pins.unstructure(lock), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(pins.encode()).hexdigest()


async def make_plan(
    registries: Registries, lock: Lockfile, ask_sources: bool = True, shard: Shard | None = None,
    referrer_rules: Mapping[Reference, ReferrersRule] = MappingProxyType({}), prune: bool = False,
) -> Plan:
    """With ``shard`` only its part of the lock is planned. ``referrer_rules`` (by target): for
    those, the sources are asked what refers to them now, for a note on what the lock lacks.
    ``prune``: the lock's ``removed:`` is planned too."""
    lock = lock_part(shard, lock)
    upstream = _UpstreamReferrers(registries, referrer_rules)
    images, deletions = await asyncio.gather(
        registries.map(lambda locked: plan_image(registries, locked, ask_sources, upstream), lock.images),
        plan_deletions(registries, lock.removed if prune else ()))
    return Plan(lock_digest=lock_digest(lock), images=tuple(images), shard=shard, pulls=_pulls(registries, images),
                deletions=deletions)


def _pulls(registries: Registries, images: list[PlannedImage]) -> tuple[SourcePulls, ...]:
    """What the HEADs of planning learnt of pull budgets (a HEAD costs no pull)."""
    needed: dict[str, int] = {}
    sources = {}
    for image in images:
        repository = image.locked.source.repository
        sources[repository.api_host] = registries.repository(repository)
        if image.action is Action.CREATE:
            needed[repository.api_host] = needed.get(repository.api_host, 0) + pulls_needed(image.locked)
    return tuple(
        SourcePulls(registry=host, needed=needed.get(host, 0), remaining=source.pull_limit.remaining,
                    limit=source.pull_limit.limit)
        for host, source in sorted(sources.items()) if source.pull_limit is not None
    )


class _UpstreamReferrers:
    """What refers to each source now; one tags list per source repository and run."""

    def __init__(self, registries: Registries, rules: Mapping[Reference, ReferrersRule]) -> None:
        self._registries = registries
        self._rules = rules
        self._listings = TagListings(registries)

    async def new_since(self, locked: LockedImage) -> tuple[Referrer, ...]:
        rule = self._rules.get(locked.target)
        if rule is None or not rule.copied:
            return ()
        # A subset is a new index: what refers to the source index does not travel with it.
        own = () if locked.subset else (locked.digest,)
        subjects = sorted({*own, *(referrer.subject for referrer in locked.referrers)}, key=str)
        if not subjects:
            return ()
        repository = locked.source.repository
        types = frozenset(rule.artifact_types) if rule.artifact_types is not None else None
        return await referrers.find(self._registries.repository(repository), subjects, types,
                                    tags=await self._listings.tags(repository),
                                    pinned={referrer.digest for referrer in locked.referrers})


async def plan_image(
    registries: Registries, locked: LockedImage, ask_source: bool = True, upstream: _UpstreamReferrers | None = None
) -> PlannedImage:
    """Without ``ask_source`` only the target is asked: apply needs no moved warnings, and
    a copy finds out by itself whether the source still has the digest. A registry's
    failure is this image's ERROR, not the plan's."""
    asking = asyncio.ensure_future(upstream.new_since(locked)) if upstream is not None and ask_source else None
    try:
        with bugs_fail_this_image():
            planned = await _plan_image(registries, locked, ask_source)
            if asking is not None:
                planned = attrs.evolve(planned, new_referrers=await asking)
        return planned
    except BaseException as error:
        if asking is not None:  # stopped, or its outcome (even a failure) collected
            asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)
        if not isinstance(error, OCIError):
            raise
        return PlannedImage(locked, Action.ERROR, message=str(error))


async def _plan_image(registries: Registries, locked: LockedImage, ask_source: bool) -> PlannedImage:
    """One HEAD on the target tag, one on the source; a second source HEAD only if its tag moved."""
    source = locked.source
    follows_tag = source.digest is None
    if ask_source:
        target_digest, source_digest = await asyncio.gather(
            registries.resolve_digest(locked.target), registries.resolve_digest(source))
    else:
        target_digest, source_digest = await registries.resolve_digest(locked.target), None
    moved_to = source_digest if follows_tag and source_digest not in (None, locked.digest) else None
    has_digest = None
    if target_digest is None and ask_source:
        has_digest = source_digest == locked.digest or (follows_tag and await registries.repository(
            source.repository).resolve_digest(str(locked.digest)) is not None)
    return decide(locked, target_digest, has_digest, moved_to)


def decide(
    locked: LockedImage, target_digest: Digest | None, source_has_digest: bool | None, moved_to: Digest | None = None
) -> PlannedImage:
    """The plan's rule, over what the registries answered: the target tag's digest, and whether
    the source still has the locked digest (None when it was not asked)."""

    def planned(action: Action, message: str | None = None) -> PlannedImage:
        return PlannedImage(locked, action, target_digest=target_digest, moved_to=moved_to, message=message)

    if target_digest == locked.pushed_digest:
        return planned(Action.UNCHANGED)
    if target_digest is not None:
        return planned(
            Action.CONFLICT,
            f"target tag holds {target_digest}, not the locked {locked.pushed_digest}: refusing to overwrite "
            f"(choose another target tag for this entry in images.yaml, or remove the entry)",
        )
    if source_has_digest is False:
        return planned(Action.SOURCE_MISSING, f"locked digest {locked.digest} is gone from {locked.source.repository}")
    return planned(Action.CREATE)
