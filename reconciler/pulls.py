"""Pull budgets: copy what a registry's pull limit allows, in lock order, and defer the rest.

Docker Hub counts manifest GETs against a budget per 6 hours and answers 429 once it is
spent; a run that meets the limit half-way would fail image after image. So before an
image's first GET from such a registry, its pulls are counted against the budget the
registry last stated: when the whole run fits, nothing waits; when it does not, images
are admitted in lock order while they fit (a rerun goes on from there), and the others
are deferred without a request. What an image counts is ``plan.pulls_needed``.

N shards run at once from one address share one budget: each plans for its share alone,
``remaining // N`` of what the registry states when it first asks, so that together they
never spend more than it had (a shard that starts later asks later and sees what is left).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import attrs

from reconciler.lockfile import LockedImage
from reconciler.oci.errors import OCIError
from reconciler.plan import pulls_needed
from reconciler.registry.registries import Registries
from reconciler.registry.ratelimit import PullLimit, deferral, registry_name

log = logging.getLogger("reconciler")


class PullBudgets:
    """For one apply: each image's pulls, decided in lock order per source registry."""

    def __init__(self, registries: Registries, images: Sequence[LockedImage], shares: int = 1) -> None:
        """``shares``: how many runs split each budget (``shard.budget_shares``)."""
        self._registries = registries
        self._images = images
        self._shares = shares
        self._pulls: dict[int, int] = {}
        """Each decided image's pulls."""
        self._used_through = [asyncio.get_running_loop().create_future() for _ in images]
        """Pulls of the image's source registry used by it and every image before it in lock order."""
        self._previous: list[int | None] = [None] * len(images)
        self._next: list[int | None] = [None] * len(images)
        self._worst_case: dict[str, int] = {}
        last: dict[str, int] = {}
        for index, image in enumerate(images):
            host = image.source.repository.api_host
            if host in last:
                self._previous[index], self._next[last[host]] = last[host], index
            last[host] = index
            self._worst_case[host] = self._worst_case.get(host, 0) + pulls_needed(image)
        self._budgets: dict[str, asyncio.Task[PullLimit | None]] = {}

    def skip(self, index: int) -> None:
        """The image pulls nothing (unchanged, refused, failed or not started); later ones may go on."""
        self._decide(index, 0)

    async def admit(self, index: int) -> str | None:
        """None when the image may pull, else why it is deferred."""
        image = self._images[index]
        host = image.source.repository.api_host
        limit = await self._budget(host, image)
        needed = pulls_needed(image)
        if limit is None or self._worst_case[host] <= limit.remaining:
            self._decide(index, needed)
            return None
        previous = self._previous[index]
        used = 0 if previous is None else await self._used_through[previous]
        if used + needed <= limit.remaining:
            self._decide(index, needed)
            return None
        self._decide(index, 0)
        return deferral(host, limit, left=limit.remaining - used)

    def _decide(self, index: int, pulls: int) -> None:
        """Record the image's pulls; running totals settle forward as far as every earlier image is decided."""
        if index in self._pulls:
            return
        self._pulls[index] = pulls
        at: int | None = index
        while at is not None and at in self._pulls:
            previous = self._previous[at]
            if previous is not None and not self._used_through[previous].done():
                return
            before = 0 if previous is None else self._used_through[previous].result()
            self._used_through[at].set_result(before + self._pulls[at])
            at = self._next[at]

    async def _budget(self, host: str, image: LockedImage) -> PullLimit | None:
        """The budget the registry states; learnt once per run, with a HEAD (which costs no pull)."""
        task = self._budgets.get(host)
        if task is None:
            task = self._budgets[host] = asyncio.ensure_future(self._ask(host, image))
        return await asyncio.shield(task)

    async def _ask(self, host: str, image: LockedImage) -> PullLimit | None:
        source = self._registries.repository(image.source.repository)
        if source.pull_limit is None:
            try:
                await source.head_manifest(str(image.digest))
            except OCIError:
                return None  # the copy will meet the same failure and report it
        limit = source.pull_limit
        if limit is None:
            return None
        stated = limit.remaining
        limit = attrs.evolve(limit, remaining=stated // self._shares)
        if self._worst_case[host] > limit.remaining:
            share = "" if self._shares == 1 else f" (this shard's share: {limit.remaining}, 1/{self._shares} of them)"
            log.warning("%s: %d of %d pulls left%s, and this run may need up to %d: images are copied in lock "
                        "order while pulls are left; the others are deferred to a later run",
                        registry_name(host), stated, limit.limit, share, self._worst_case[host])
        return limit
