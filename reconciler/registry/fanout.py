"""Concurrent work over a list, a bounded number at a time: how a run fans out over images and referrers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


async def map_bounded(
    work: Callable[[Item], Awaitable[Result]], items: Iterable[Item], limit: int
) -> list[Result]:
    """``work`` on every item, at most ``limit`` at once; the results in the items' order."""
    slots = asyncio.Semaphore(limit)

    async def one(item: Item) -> Result:
        async with slots:
            return await work(item)

    return await asyncio.gather(*(one(item) for item in items))
