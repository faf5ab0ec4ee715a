"""limiter.py: requests in flight per registry, grown and cut as TCP does (AIMD).

First the rule itself over plain values (a clock the test moves), then the rule at work
against a real registry behind the fault proxy: it grows while answers come quickly,
stays under the ceiling, and settles near what a registry that sheds load will take.
"""

from __future__ import annotations

import asyncio
import statistics

import pytest

from reconciler import config, workflow
from reconciler.oci import reference
from reconciler.registry.limiter import INITIAL, AdaptiveLimit, lending_slot
from reconciler.registry.options import TransportOptions
from reconciler.registry.registries import Registries
from tests.harness.rawhttp import RawRegistry
from tests.helpers_cli import write_images
from tests.helpers_clients import run


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _fill(limit: AdaptiveLimit) -> list:
    """Acquire every slot that is free now."""
    slots = []
    while limit.in_flight < int(limit.limit):
        slots.append(await limit.acquire())
    return slots


def test_slow_start_doubles_the_limit_per_round_of_answers():
    async def main():
        limit = AdaptiveLimit(64, clock=Clock())
        assert limit.limit == INITIAL
        seen = []
        for _ in range(3):
            slots = await _fill(limit)
            for slot in slots:
                slot.answered(200)
                slot.release()
            seen.append(int(limit.limit))
        return seen

    assert run(main()) == [2 * INITIAL, 4 * INITIAL, 64]  # the ceiling caps it


def test_an_idle_limit_does_not_grow():
    async def main():
        limit = AdaptiveLimit(64, clock=Clock())
        for _ in range(50):  # one request at a time never reaches the limit
            slot = await limit.acquire()
            slot.answered(200)
            slot.release()
        return limit.limit

    assert run(main()) == INITIAL


def test_overload_halves_the_limit_once_per_round_then_it_grows_by_one_per_round():
    async def main():
        limit = AdaptiveLimit(64, clock=Clock())
        slots = await _fill(limit)
        for slot in slots[:5]:  # five 429s from one round: one cut
            slot.answered(429)
        cut_once = limit.limit
        for slot in slots:
            slot.release()
        after = []
        for _ in range(3):
            slots = await _fill(limit)
            for slot in slots:
                slot.answered(200)
            for slot in slots:
                slot.release()
            after.append(limit.limit)
        lost = await limit.acquire()
        lost.lost()
        lost.release()
        return cut_once, limit.cuts, after, limit.limit

    cut_once, cuts, after, last = run(main())
    assert cut_once == INITIAL / 2 and cuts == 2
    assert [round(value) for value in after] == [INITIAL // 2 + 1, INITIAL // 2 + 2, INITIAL // 2 + 3]
    assert last == after[-1] / 2


def test_answers_slowing_down_count_as_overload_after_a_round():
    async def main():
        clock = Clock()
        limit = AdaptiveLimit(64, clock=clock)
        cuts = []
        for latency in [0.010] * 20 + [0.5] * 11:
            slot = await limit.acquire()
            clock.now += latency
            slot.answered(200)
            slot.release()
            cuts.append(limit.cuts)
        return cuts

    cuts = run(main())
    # The second slow answer tips the average: a cut to 8; the next is judged after 8 more answers.
    assert cuts[20:] == [0] + [1] * 9 + [2]


def test_a_waiting_request_gets_the_slot_a_cancelled_one_leaves():
    async def main():
        limit = AdaptiveLimit(1, clock=Clock())
        held = await limit.acquire()
        cancelled = asyncio.ensure_future(limit.acquire())
        waiting = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0)
        cancelled.cancel()
        held.release()
        slot = await asyncio.wait_for(waiting, 1)
        return limit.in_flight, slot

    in_flight, _ = run(main())
    assert in_flight == 1


def test_an_upload_streaming_from_a_held_answer_waits_only_for_the_ceiling():
    """A copy within one registry whose limit was cut to 1: its upload must not wait for itself."""

    async def main():
        limit = AdaptiveLimit(1, clock=Clock())
        source_answer = await limit.acquire()
        with lending_slot():
            upload = await asyncio.wait_for(limit.acquire(), 1)
        blocked = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0.05)
        waited = not blocked.done()
        upload.release()
        source_answer.release()
        (await blocked).release()
        return waited, limit.peak

    waited, peak = run(main())
    assert waited and peak == 2


# -- against a registry ---------------------------------------------------------------

TAGS = 150


@pytest.fixture(scope="module")
def many_tags(plain_registry):
    """One small image under TAGS tags: a lock of TAGS entries is TAGS manifest HEADs."""
    from tests.harness import images as harness_images

    pushed = harness_images.push_image(harness_images.build_image("oci", seed="limiter"), plain_registry,
                                       "limiter/many", "t0")
    with RawRegistry(plain_registry) as raw:
        for number in range(1, TAGS):
            assert raw.put_manifest("limiter/many", f"t{number}", pushed.manifest, pushed.media_type).status_code == 201
    return pushed


def _lock_through(proxy, tmp_path, options: TransportOptions):
    write_images(tmp_path, "127.0.0.1:1/mirror/", [{"source": f"{proxy.host}/limiter/many:t{number}"}
                                                  for number in range(TAGS)])
    loaded = config.load(tmp_path / "images.yaml")

    async def main():
        async with Registries(options, lambda registry: None) as regs:
            result = await workflow.lock(regs, loaded, tmp_path / "images.lock")
            limit = regs.repository(reference.parse(f"{proxy.host}/limiter/many:t0").repository).limit
            return result, limit.peak, limit.cuts

    return run(main())


def test_concurrency_grows_past_its_start_and_never_passes_the_ceiling(
    tmp_path, many_tags, plain_registry, fault_proxy
):
    proxy = fault_proxy(plain_registry)
    proxy.delay("HEAD", "/manifests/", seconds=0.2, times=None)

    result, peak, _ = _lock_through(proxy, tmp_path, TransportOptions(max_connections=40))

    assert not result.errors
    assert INITIAL < peak <= 40  # (a loaded machine slows the proxy's answers: cuts may come, not the point here)
    assert proxy.in_flight_peak > INITIAL  # what the registry saw, too


def test_concurrency_settles_near_what_a_registry_that_sheds_load_takes(
    tmp_path, many_tags, plain_registry, fault_proxy
):
    takes = 6
    proxy = fault_proxy(plain_registry)
    proxy.delay("HEAD", "/manifests/", seconds=0.05, times=None)
    proxy.overload(takes)

    result, peak, cuts = _lock_through(proxy, tmp_path, TransportOptions(max_connections=64))

    assert not result.errors  # every shed request was tried again
    assert cuts >= 1 and proxy.shed >= 1
    assert proxy.shed <= len(proxy.requests) // 5, (proxy.shed, len(proxy.requests))  # no storm of 429s
    later = proxy.in_flight_samples[len(proxy.in_flight_samples) // 2:]
    assert 2 <= statistics.median(later) <= takes, later
