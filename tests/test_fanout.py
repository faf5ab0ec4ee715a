"""map_bounded: every item once, results in order, never more than the limit at once, a bounded
number of tasks however many items."""

import asyncio
import random

import pytest

from reconciler.registry.fanout import map_bounded


def test_every_item_once_in_order_never_more_than_the_limit_at_once():
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    delays = [rng.random() / 1000 for _ in range(500)]
    running, most, seen = 0, 0, []

    async def work(index: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        seen.append(index)
        await asyncio.sleep(delays[index])
        running -= 1
        return index * 2

    results = asyncio.run(map_bounded(work, range(500), 7))

    assert results == [index * 2 for index in range(500)], f"seed {seed}"
    assert sorted(seen) == list(range(500)), f"seed {seed}"
    assert most == 7, f"seed {seed}"


def test_ten_thousand_items_make_no_more_tasks_than_the_limit():
    most_tasks = 0

    async def work(index: int) -> int:
        nonlocal most_tasks
        most_tasks = max(most_tasks, len(asyncio.all_tasks()))
        await asyncio.sleep(0)
        return index

    async def run() -> list[int]:
        return await map_bounded(work, range(10_000), 64)

    assert asyncio.run(run()) == list(range(10_000))
    assert most_tasks <= 64 + 1  # the workers and the run itself


def test_no_items_no_work():
    async def work(index: int) -> int:
        raise AssertionError("called")

    assert asyncio.run(map_bounded(work, [], 4)) == []


def test_a_failure_reaches_the_caller():
    async def work(index: int) -> int:
        if index == 3:
            raise ValueError("item 3")
        return index

    with pytest.raises(ValueError, match="item 3"):
        asyncio.run(map_bounded(work, range(10), 2))
