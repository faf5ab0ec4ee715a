"""Interrupted runs: Ctrl-C anywhere is "interrupted" and exit 130; kill -9 never leaves half a lock.

Faults are placed with ``tests/fault_injection.py`` (an import that raises, a SIGKILL around
one ``os`` call) or sent for real (SIGINT, SIGKILL) at points spread over a run.
"""

from __future__ import annotations

import fcntl
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers_cli import ROOT, cli_env, run_cli, write_images

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
    for delay in [index * 0.07 + random.uniform(0, 0.07) for index in range(12)]:
        started.unlink(missing_ok=True)
        process = start(tmp_path, "lock", env={"STARTED": str(started)})
        wait_for(started, process)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)

        code, stdout, stderr = finish(process)

        assert (code, stdout, stderr) == (130, "", "interrupted\n"), f"SIGINT after {delay:.2f} s"
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
    delays = [runtime * (index + random.random()) / 20 for index in range(20)]
    exact = ["replace:after", "fsync:before", "replace:before"]
    for point in delays + exact:
        lock.write_bytes(old)
        process = start(tmp_path, "lock", env={"KILL_AT": point} if isinstance(point, str) else None)
        if isinstance(point, float):
            time.sleep(point)
            process.kill()
        code, _, stderr = finish(process)

        assert "Traceback" not in stderr
        assert lock.read_bytes() in (old, new), f"killed at {point}"
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
