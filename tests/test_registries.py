"""A run's registries (reconciler/registry/registries.py): one client per API host, repositories bound to
them, and the fan-out bounded by the ceiling of requests; no request is sent."""

from __future__ import annotations

import asyncio

from reconciler.oci.reference import Repository
from reconciler.registry.options import TransportOptions
from reconciler.registry.registries import Registries


def test_repositories_of_one_api_host_share_its_client():
    async def main():
        async with Registries(TransportOptions(), lambda registry: None) as regs:
            hub = regs.repository(Repository("docker.io", "library/busybox"))
            also_hub = regs.repository(Repository("registry-1.docker.io", "library/alpine"))
            other = regs.repository(Repository("quay.io", "org/app"))
            assert hub.client is also_hub.client is regs.repository(Repository("docker.io", "x")).client
            assert hub.limit is also_hub.limit
            assert other.client is not hub.client and other.limit is not hub.limit
            assert (hub.host, hub.path, hub.repository) == (
                "registry-1.docker.io", "library/busybox", Repository("docker.io", "library/busybox"))
            assert other.host == "quay.io"

    asyncio.run(main())


def test_map_works_on_as_many_items_at_once_as_the_ceiling_of_requests_and_keeps_their_order():
    at_once, peak = 0, 0

    async def work(item: int) -> int:
        nonlocal at_once, peak
        at_once += 1
        peak = max(peak, at_once)
        await asyncio.sleep(0.001 * (5 - item % 5))  # later items finish first
        at_once -= 1
        return item * 10

    async def main():
        async with Registries(TransportOptions(max_connections=3), lambda registry: None) as regs:
            return await regs.map(work, range(12))

    assert asyncio.run(main()) == [item * 10 for item in range(12)]
    assert peak == 3
