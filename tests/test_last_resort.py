"""What no input should cause still reaches the user as one line: a bug, a closed pipe, a failed task nobody awaited."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness.images import build_image
from tests.helpers_cli import ROOT, cli_env, run_cli, write_images

WRAPPER = ROOT / "tests" / "fault_injection.py"


def run_with_a_bug(tmp_path, module: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI with a RuntimeError raised where ``module`` is imported."""
    return subprocess.run(
        [sys.executable, str(WRAPPER), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**cli_env(tmp_path), "RAISE_AT": module, "RAISE": "RuntimeError"},
    )


@pytest.mark.parametrize(("module", "args"), [
    ("aiohttp", ("lock",)),  # while the CLI's libraries load
    ("reconciler.registry.google", ("lock", "-t", "key.json")),  # inside a command
])
def test_a_bug_is_one_line_that_points_at_debug(module, args, tmp_path):
    write_images(tmp_path, "127.0.0.1:9/mirror/", [{"source": "127.0.0.1:9/app:1"}])
    (tmp_path / "key.json").write_text("{}")

    result = run_with_a_bug(tmp_path, module, *args)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (f"error: internal error: RuntimeError: injected at the import of {module} "
                             "(run with --debug for the traceback)\n")


def test_with_debug_a_bug_shows_its_traceback_too(tmp_path):
    write_images(tmp_path, "127.0.0.1:9/mirror/", [{"source": "127.0.0.1:9/app:1"}])

    result = run_with_a_bug(tmp_path, "reconciler.registry.google", "lock", "-t", "key.json", "--debug")

    assert result.returncode == 1
    assert "Traceback (most recent call last):" in result.stderr
    assert 'raise self.error(f"injected at the import of {name}")' in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: internal error: RuntimeError: injected")


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "reconciler", "plan", "-h"], cwd=tmp_path,
                               env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.wait(timeout=60)

    assert process.returncode == 1
    assert stderr == ""


def test_a_blob_transfer_failing_after_its_image_gave_up_prints_no_traceback(
    tmp_path, plain_registry, second_plain_registry, unique_repo, fault_proxy, push_image
):
    """One image fails on a missing layer; its other layer fails later, awaited by nobody.

    asyncio reports such a task ("Task exception was never retrieved", with a traceback)
    when it is collected; the run must show only what failed.
    """
    source, target = fault_proxy(plain_registry), fault_proxy(second_plain_registry)
    failing = push_image(build_image("oci", seed=unique_repo()))
    slow = push_image(build_image("docker", seed=unique_repo()))
    write_images(tmp_path, f"{target.host}/{unique_repo()}/",
                 [{"source": f"{source.host}/{image.repo}:{image.tag}"} for image in (failing, slow)])
    assert run_cli(tmp_path, "lock").code == 0
    config, missing, late = failing.image.manifests[0].blobs
    source.fail("GET", f"/blobs/{missing.digest}", 404, times=None)
    source.delay("GET", f"/blobs/{late.digest}", 1.0, times=None)
    refused_upload = target.fail("PUT", f"digest={late.digest.replace(':', '(:|%3A)')}", 400, times=None)
    source.delay("GET", f"/manifests/{slow.digest}", 3.0, times=None)

    result = run_cli(tmp_path, "apply", "--debug")  # where asyncio's report would show

    assert result.code == 1, str(result)
    assert "Traceback" not in result.stderr and "never retrieved" not in result.stderr, str(result)
    assert refused_upload.hits == 1, str(result)
