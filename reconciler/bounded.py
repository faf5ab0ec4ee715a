"""Concurrent work over a list, a bounded number at a time: how lock, plan, verify and apply fan out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def images_at_once(requests_per_registry: int) -> int:
    """Images worked on together: as many as a registry's ceiling of requests, so that the
    ceiling stays reachable; each registry's adaptive limit decides what is really sent."""
    return requests_per_registry


async def map_bounded(
    work: Callable[[Item], Awaitable[Result]], items: Iterable[Item], limit: int
) -> list[Result]:
    """``work`` on every item, at most ``limit`` at once; the results in the items' order."""
    slots = asyncio.Semaphore(limit)

    async def one(item: Item) -> Result:
        async with slots:
            return await work(item)

    return await asyncio.gather(*(one(item) for item in items))
