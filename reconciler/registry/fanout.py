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
    """``work`` on every item, at most ``limit`` at once; the results in the items' order.

    ``limit`` workers take the items in turn, so 10,000 images make ``limit`` tasks, not
    10,000 (each with its coroutine held until its turn: about 10 KiB an image)."""
    todo = list(items)
    results: list[Result] = [None] * len(todo)  # type: ignore[list-item]  # every slot is filled below
    turns = iter(range(len(todo)))

    async def worker() -> None:
        for index in turns:
            results[index] = await work(todo[index])

    await asyncio.gather(*(worker() for _ in range(min(limit, len(todo)))))
    return results
