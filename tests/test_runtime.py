"""How a run stops (reconciler/runtime.py): SIGINT and SIGTERM, as Ctrl-C and CI cancelling a job send them,
and kill -9.

A stop winds apply down: nothing new starts, no tag on an incomplete image, stalled reads
abandoned at once, a tag push already sent seen through, then the report. Ctrl-C anywhere,
from the first line of start-up on, is "interrupted" and 128 + the signal's number; a
signal ignored at start stays ignored; kill -9 never leaves half a lock. Faults are placed
with ``tests/fault_injection.py`` (an import that raises, a SIGKILL around one ``os`` call)
or sent for real at points spread over a run: seeded, the seed in the failure's message.
"""

from __future__ import annotations

import asyncio
import fcntl
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reconciler import config, runtime, workflow
from reconciler.apply import Outcome, apply_plan
from reconciler.runtime import Interruption
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import SkopeoError, skopeo_inspect_raw
from tests.helpers_cli import ROOT, cli_env, run_cli, write_images
from tests.helpers_clients import registries, run


WRAPPER = ROOT / "tests" / "fault_injection.py"


def start(workdir: Path, *args: str, env: dict[str, str] | None = None,
          sigint: signal.Handlers = signal.SIG_DFL) -> subprocess.Popen:
    """The CLI as a terminal's foreground job has it: SIGINT at its default, also when this
    suite itself runs as a background job (which inherits SIGINT ignored, and passes that on);
    ``sigint=SIG_IGN`` starts it as a background job."""
    return subprocess.Popen(
        [sys.executable, str(WRAPPER), *args], cwd=workdir, env={**cli_env(workdir), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stdout, stderr


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the CLI never started"
        time.sleep(0.002)


@pytest.fixture
def silent_registry():
    """A registry that takes connections and never answers: a run waits on it until interrupted."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


# ------------------------------------------------------------------------------------------------- plain values


def test_the_signal_behind_an_error():
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise RuntimeError("while building a class") from interrupt  # as Python 3.11 wraps it in an import
    except RuntimeError as wrapped:
        assert runtime.stop_in(wrapped).signum == signal.SIGINT
    assert runtime.stop_in(runtime.Stopped(signal.SIGTERM)).signum == signal.SIGTERM
    assert runtime.stop_in(ValueError("a bug")) is None


def test_a_stop_requested_before_work_begins_never_begins_it():
    async def stopped_first():
        interruption = Interruption()
        interruption.request(signal.SIGTERM)
        begun = []

        async def work():
            begun.append(True)

        with pytest.raises(runtime.Interrupted, match="^stopped before copying$"):
            await interruption.run(work(), "stopped before copying")
        return interruption.signal, begun

    assert asyncio.run(stopped_first()) == (signal.SIGTERM, [])


def test_a_stop_abandons_work_at_once_unless_given_grace():
    async def stop_during(grace: float) -> str:
        interruption = Interruption()
        asyncio.get_running_loop().call_later(0.01, interruption.request, signal.SIGINT)

        async def work() -> str:
            await asyncio.sleep(0.2)
            return "finished"

        try:
            return await interruption.run(work(), "abandoned", grace=grace)
        except runtime.Interrupted as stop:
            return str(stop)

    assert asyncio.run(stop_during(grace=0.0)) == "abandoned"
    assert asyncio.run(stop_during(grace=30.0)) == "finished"


# ------------------------------------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("module", [
    "typer", "rich.console", "yaml", "httpx", "aiohttp", "cattrs", "reconciler.cli", "reconciler.config",
    "reconciler.registry.google",
])
def test_ctrl_c_while_starting_is_one_word_and_130(module, tmp_path, silent_registry):
    write_images(tmp_path, f"{silent_registry}/mirror/", [{"source": f"{silent_registry}/app:1"}])
    (tmp_path / "key.json").write_text("{}")

    code, stdout, stderr = finish(start(tmp_path, "lock", "-t", "key.json",
                                        env={"RAISE_AT": module, "RAISE": "KeyboardInterrupt"}))

    assert (code, stdout, stderr) == (130, "", "interrupted\n")


def test_ctrl_c_at_any_point_of_a_run_is_one_word_and_130(tmp_path, silent_registry):
    """Real SIGINTs spread from the first line of the wrapper to a run waiting on a registry."""
    write_images(tmp_path, f"{silent_registry}/mirror/", [{"source": f"{silent_registry}/app:1"}])
    started = tmp_path / "started"
    seed = random.randrange(2**32)
    generator = random.Random(seed)
    for delay in [index * 0.07 + generator.uniform(0, 0.07) for index in range(12)]:
        started.unlink(missing_ok=True)
        process = start(tmp_path, "lock", env={"STARTED": str(started)})
        wait_for(started, process)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)

        code, stdout, stderr = finish(process)

        assert (code, stdout, stderr) == (130, "", "interrupted\n"), f"seed {seed}: SIGINT after {delay:.2f} s"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["images.yaml", "started"]


def test_a_background_job_keeps_ignoring_ctrl_c_and_still_stops_on_sigterm(tmp_path, silent_registry):
    """POSIX: a signal ignored when a program starts (``cmd &``, nohup) stays ignored."""
    write_images(tmp_path, f"{silent_registry}/mirror/", [{"source": f"{silent_registry}/app:1"}])
    started = tmp_path / "started"
    process = start(tmp_path, "lock", env={"STARTED": str(started)}, sigint=signal.SIG_IGN)
    wait_for(started, process)
    for _ in range(3):  # at start-up, while reading images.yaml, while waiting on the registry
        process.send_signal(signal.SIGINT)
        time.sleep(0.4)
    assert process.poll() is None, "SIGINT stopped a run that started with it ignored"

    process.send_signal(signal.SIGTERM)

    assert finish(process) == (143, "", "interrupted (SIGTERM)\n")


# --------------------------------------------------------------------------------------------- apply winds down


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
            tagged = [raw.head_manifest(str(image.locked.target).split("/", 1)[1].rsplit(":", 1)[0], "v1").status_code
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


# ---------------------------------------------------------------------------------------------------- kill -9


@pytest.fixture
def lock_change(tmp_path, seeded_images, plain_registry):
    """A directory where ``lock`` turns an old lock into a new one: (old bytes, new bytes)."""
    prefix = f"{plain_registry.host}/crash-safe/"
    kinds = ["oci", "docker", "oci-index", "docker-list"]
    write_images(tmp_path, prefix, [{"source": seeded_images[kind].ref} for kind in kinds[:2]])
    assert run_cli(tmp_path, "lock").code == 0
    old = (tmp_path / "images.lock").read_bytes()
    write_images(tmp_path, prefix, [{"source": seeded_images[kind].ref} for kind in kinds[1:]])
    assert run_cli(tmp_path, "lock").code == 0
    new = (tmp_path / "images.lock").read_bytes()
    assert old != new
    return old, new


def test_lock_killed_at_any_point_leaves_the_old_or_the_new_lock(tmp_path, lock_change):
    old, new = lock_change
    lock = tmp_path / "images.lock"
    lock.write_bytes(old)
    started = time.monotonic()
    assert run_cli(tmp_path, "lock").code == 0
    runtime = time.monotonic() - started

    # Twenty kills spread over a run, then three at the exact steps of the write; the last
    # leaves its temporary behind (each write removes those of the writers killed before it).
    seed = random.randrange(2**32)
    generator = random.Random(seed)
    delays = [runtime * (index + generator.random()) / 20 for index in range(20)]
    exact = ["replace:after", "fsync:before", "replace:before"]
    for point in delays + exact:
        lock.write_bytes(old)
        process = start(tmp_path, "lock", env={"KILL_AT": point} if isinstance(point, str) else None)
        if isinstance(point, float):
            time.sleep(point)
            process.kill()
        code, _, stderr = finish(process)

        assert "Traceback" not in stderr, f"seed {seed}: killed at {point}"
        assert lock.read_bytes() in (old, new), f"seed {seed}: killed at {point}"
        if isinstance(point, str):
            assert code == -signal.SIGKILL
            assert lock.read_bytes() == (new if point == "replace:after" else old)

    strays = [path.name for path in tmp_path.iterdir() if path.name.startswith(".images.lock.")]
    assert strays, "no kill left a temporary behind, so none was cleaned up"
    lock.write_bytes(old)
    assert run_cli(tmp_path, "lock").code == 0
    assert lock.read_bytes() == new
    assert sorted(path.name for path in tmp_path.iterdir()) == ["images.lock", "images.yaml"]


def test_a_temporary_of_a_live_writer_is_left_alone(tmp_path, lock_change):
    old, new = lock_change
    lock = tmp_path / "images.lock"
    live = tmp_path / ".images.lock.writing.image-syncer-tmp"
    abandoned = tmp_path / ".images.lock.killed.image-syncer-tmp"
    abandoned.write_text("half a lo")
    with live.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        lock.write_bytes(old)

        assert run_cli(tmp_path, "lock").code == 0

        assert lock.read_bytes() == new
        assert live.exists() and not abandoned.exists()
    lock.write_bytes(old)
    assert run_cli(tmp_path, "lock").code == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["images.lock", "images.yaml"]
