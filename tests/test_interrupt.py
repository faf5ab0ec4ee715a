"""A stop (SIGINT/SIGTERM, as CI cancels a job): nothing new starts, no tag on an incomplete image, a report."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import pytest
import yaml

from reconciler import config, workflow
from reconciler.apply import Outcome, apply_plan
from reconciler.runtime import Interruption
from tests.helpers_clients import registries, run
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import SkopeoError, skopeo_inspect_raw
from tests.helpers_cli import cli_env, run_cli, write_images


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
        async with registries() as regs:
            assert not (await workflow.lock(regs, loaded, lock_path)).errors
            plan = await workflow.plan(regs, loaded, lock_path)
            interruption = Interruption()
            asyncio.get_running_loop().call_later(0.5, interruption.request, signal.SIGTERM)
        async with registries(max_connections=1) as regs:  # one image at a time
            stopped = await apply_plan(regs, plan, interruption=interruption)
        with RawRegistry(second_plain_registry) as raw:
            tagged = [raw.head_manifest(str(image.target).split("/", 1)[1].rsplit(":", 1)[0], "v1").status_code
                      for image in plan.images]
        source.clear_rules()
        async with registries() as regs:
            again = await workflow.apply(regs, loaded, lock_path)
        return interruption, stopped, tagged, again

    interruption, stopped, tagged, again = run(interrupted_then_again())

    assert interruption.signal is signal.SIGTERM
    assert [(image.outcome, image.message) for image in stopped.images] == [
        (Outcome.INTERRUPTED, "stopped while copying; its tag was not pushed"),
        (Outcome.INTERRUPTED, "not started"),
        (Outcome.INTERRUPTED, "not started"),
    ]
    assert not stopped.ok
    assert tagged == [404] * len(pushed)  # no tag on anything incomplete
    assert [image.outcome for image in again.images] == [Outcome.COPIED] * len(pushed)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_apply_ends_with_the_report_and_a_rerun_converges(
    signum, tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    pushed = [push_image(kind) for kind in ("oci", "docker-list")]
    source = fault_proxy(plain_registry)
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/",
                 [{"source": f"{source.host}/{image.repo}:v1"} for image in pushed])
    assert run_cli(tmp_path, "lock").code == 0
    source.delay("GET", "/blobs/", seconds=3.0, times=None)

    apply = subprocess.Popen([sys.executable, "-m", "reconciler", "apply"], cwd=tmp_path, env=cli_env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not source.requests_matching("GET", "/blobs/") and time.monotonic() < deadline:
        time.sleep(0.05)  # copying has begun
    apply.send_signal(signum)
    stdout, stderr = apply.communicate(timeout=30)

    assert apply.returncode == 128 + signum, stdout + stderr
    assert "Traceback" not in stderr
    assert stdout.splitlines()[-1].startswith(f"Apply: 0 copied, 0 unchanged, 0 refused, 0 failed, {len(pushed)} interrupted")
    assert stderr.splitlines()[-1].startswith("interrupted")
    for line in yaml.safe_load((tmp_path / "images.lock").read_text())["images"]:
        assert skopeo_tag_absent(line["target"])

    source.clear_rules()
    again = run_cli(tmp_path, "apply")
    assert again.code == 0, str(again)
    assert again.stdout_lines[-1].startswith(f"Apply: {len(pushed)} copied")


def skopeo_tag_absent(target: str) -> bool:
    try:
        skopeo_inspect_raw(target)
    except SkopeoError as error:
        return "manifest unknown" in error.stderr or "not found" in error.stderr.lower()
    return False


STALL = 10.0
"""How long each registry holds a manifest HEAD: a stop must not wait for it."""


@pytest.mark.parametrize("command", [("apply",), ("plan",), ("verify",), ("lock", "--upgrade"),
                                     ("sync", "-i", "images.yaml", "--dry-run=false")])
def test_ctrl_c_abandons_stalled_reads_at_once(
    command, tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    """Nothing is being written while the registries' HEADs stall, so nothing is waited for:
    the run has ended before any stalled HEAD was answered."""
    pushed = [push_image(kind) for kind in ("oci", "docker")]
    source, target = fault_proxy(plain_registry), fault_proxy(second_plain_registry)
    write_images(tmp_path, f"{target.host}/{unique_repo('mirror')}/",
                 [{"source": f"{source.host}/{image.repo}:v1"} for image in pushed])
    assert run_cli(tmp_path, "lock").code == 0
    for proxy in (source, target):
        proxy.clear()
        proxy.delay("HEAD", "/manifests/", seconds=STALL, times=None)

    def stalled():
        return [*source.requests_matching("HEAD", "/manifests/"), *target.requests_matching("HEAD", "/manifests/")]

    process = subprocess.Popen([sys.executable, "-m", "reconciler", *command], cwd=tmp_path, env=cli_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not stalled() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    asked = stalled()

    assert process.returncode == 130, stdout + stderr
    assert asked and all(request.status is None for request in asked), "the run waited for a stalled HEAD"
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == "interrupted"
    if command == ("apply",):
        assert stdout.splitlines()[-1].startswith(
            f"Apply: 0 copied, 0 unchanged, 0 refused, 0 failed, {len(pushed)} interrupted")


def test_ctrl_c_waits_for_a_tag_push_already_sent(
    tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    """The one write a stop waits for: so that the report says truly that the tag was pushed."""
    pushed = push_image("oci")
    target = fault_proxy(second_plain_registry)
    write_images(tmp_path, f"{target.host}/{unique_repo('mirror')}/",
                 [{"source": f"{plain_registry.host}/{pushed.repo}:v1"}])
    assert run_cli(tmp_path, "lock").code == 0
    target.delay("PUT", "/manifests/v1$", seconds=3.0)

    process = subprocess.Popen([sys.executable, "-m", "reconciler", "apply"], cwd=tmp_path, env=cli_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not target.requests_matching("PUT", "/manifests/v1$") and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stdout + stderr
    assert [request.status for request in target.requests_matching("PUT", "/manifests/v1$")] == [201]
    assert stdout.splitlines()[-1].startswith("Apply: 1 copied, 0 unchanged, 0 refused, 0 failed (")
    assert stderr.splitlines()[-1] == "interrupted"
