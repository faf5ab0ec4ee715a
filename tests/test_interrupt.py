"""A stop (SIGINT/SIGTERM, as CI cancels a job): nothing new starts, no tag on an incomplete image, a report."""

from __future__ import annotations

import asyncio
import signal

from reconciler import config, workflow
from reconciler.apply import Interruption, Outcome, apply_plan
from reconciler.registry.client import Registries
from reconciler.registry.transport import TransportOptions
from tests.harness.rawhttp import RawRegistry
from tests.helpers_cli import write_images


def test_a_stop_abandons_copies_before_their_tags_and_starts_nothing_new(
    tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    pushed = [push_image(kind) for kind in ("oci", "docker", "oci-index")]
    source = fault_proxy(plain_registry)
    source.delay("GET", "/blobs/", seconds=2.0, times=None)
    mirror = unique_repo("mirror")
    write_images(tmp_path, f"{second_plain_registry.host}/{mirror}/",
                 [{"source": f"{source.host}/{image.repo}:v1"} for image in pushed])
    loaded = config.load(tmp_path / "images.yaml")
    lock_path = tmp_path / "images.lock"

    async def interrupted_then_again():
        async with Registries(TransportOptions(), lambda registry: None) as regs:
            assert not (await workflow.lock(regs, loaded, lock_path)).errors
            plan = await workflow.plan(regs, loaded, lock_path)
            interruption = Interruption()
            asyncio.get_running_loop().call_later(0.5, interruption.request, signal.SIGTERM)
            stopped = await apply_plan(regs, plan, concurrency=1, interruption=interruption)
        with RawRegistry(second_plain_registry) as raw:
            tagged = [raw.head_manifest(image.target.split("/", 1)[1].rsplit(":", 1)[0], "v1").status_code
                      for image in plan.images]
        source.clear_rules()
        async with Registries(TransportOptions(), lambda registry: None) as regs:
            _, again = await workflow.apply(regs, loaded, lock_path)
        return interruption, stopped, tagged, again

    interruption, stopped, tagged, again = asyncio.run(interrupted_then_again())

    assert interruption.signal is signal.SIGTERM
    assert [(image.outcome, image.message) for image in stopped.images] == [
        (Outcome.INTERRUPTED, "stopped while copying; its tag was not pushed"),
        (Outcome.INTERRUPTED, "not started"),
        (Outcome.INTERRUPTED, "not started"),
    ]
    assert not stopped.ok
    assert tagged == [404] * len(pushed)  # no tag on anything incomplete
    assert [image.outcome for image in again.images] == [Outcome.COPIED] * len(pushed)
