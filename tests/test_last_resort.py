"""What no input should cause still reaches the user as one line: a bug, a closed pipe, a failed task nobody awaited."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness.artifacts import push_artifact, subject_descriptor
from tests.harness.images import build_image
from tests.harness.rawhttp import RawRegistry
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


# --------------------------------------------------------------------- a bug costs one image, not the run

def run_with_a_bug_for(tmp_path, where: str, mentioned: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI with a ValueError raised by ``where`` whenever its arguments mention ``mentioned``."""
    return subprocess.run(
        [sys.executable, str(WRAPPER), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**cli_env(tmp_path), "BUG_AT": where, "BUG_FOR": mentioned},
    )


@pytest.fixture
def two_images(tmp_path, plain_registry, second_plain_registry, unique_repo, fault_proxy, push_image):
    """A bad image and a bystander, both pushed; both registries behind a counting proxy."""
    bad, bystander = (push_image(build_image(kind, seed=unique_repo())) for kind in ("oci", "oci-index"))
    source, target = fault_proxy(plain_registry), fault_proxy(second_plain_registry)
    write_images(tmp_path, f"{target.host}/{unique_repo('mirror')}/",
                 [{"source": f"{source.host}/{image.repo}:v1"} for image in (bad, bystander)])
    return bad, bystander, source, target


def internal_error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "internal error: ValueError: injected" in line]


def failed_alone(result: subprocess.CompletedProcess, repo: str, says: str) -> None:
    """Exit 1, no traceback, and one report line on the bug: the bad image's, saying ``says``."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = internal_error_lines(result.stdout)
    assert f"/{repo}:v1" in line and says in line, line


def test_a_bug_resolving_one_image_fails_that_image_and_writes_no_lock(tmp_path, two_images):
    bad, bystander, source, _ = two_images

    result = run_with_a_bug_for(tmp_path, "reconciler.registry.client:RegistryClient.head_manifest", bad.repo,
                                "lock", "--debug")

    assert result.returncode == 1, result.stderr
    [line] = internal_error_lines(result.stderr)
    assert line.startswith("error: ") and f"/{bad.repo}:v1: internal error: ValueError: injected" in line
    assert source.count("GET", f"/{bystander.repo}/tags/list") == 1  # its referrers: resolved to the end
    assert "Traceback" in result.stderr  # --debug logs it
    assert result.stderr.splitlines()[-1] == "images.lock left unchanged."
    assert not (tmp_path / "images.lock").exists()


def test_a_bug_in_a_tag_rule_fails_that_rule_only(tmp_path, plain_registry, second_plain_registry, unique_repo,
                                                  push_image):
    ruled = push_image(build_image("oci", seed=unique_repo()), tag="9.8.7")
    bystander = push_image(build_image("docker", seed=unique_repo()))
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/", [
        {"source": f"{plain_registry.host}/{ruled.repo}", "tags": {"semver": ">=1"}},
        {"source": f"{plain_registry.host}/{bystander.repo}:v1"},
    ])

    result = run_with_a_bug_for(tmp_path, "reconciler.tagrules:select", "9.8.7", "lock")

    assert result.returncode == 1, result.stderr
    assert internal_error_lines(result.stderr) == [
        f"error: {plain_registry.host}/{ruled.repo}: internal error: ValueError: injected in select for 9.8.7 "
        "(run with --debug for the traceback)"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "images.lock").exists()


@pytest.mark.parametrize(("where", "command"), [
    ("reconciler.registry.copy:Copier.copy_referenced", ("apply",)),
    ("reconciler.registry.client:RegistryClient.head_manifest", ("sync", "-i", "images.yaml", "--dry-run=false")),
])
def test_a_bug_copying_one_image_fails_that_image_and_the_bystander_is_copied(where, command, tmp_path, two_images):
    bad, bystander, _, target = two_images
    assert run_cli(tmp_path, "lock").code == 0

    result = run_with_a_bug_for(tmp_path, where, bad.repo, *command)

    failed_alone(result, bad.repo, "failed: internal error: ValueError: injected")
    assert result.stdout.splitlines()[-1].startswith("Apply: 1 copied, 0 unchanged, 0 refused")
    assert target.count("PUT", f"/{bystander.repo}/manifests/v1$") == 1
    assert target.count("PUT", f"/{bad.repo}/manifests/") == 0


@pytest.mark.parametrize(("command", "verdict"), [("plan", "error"), ("verify", "error")])
def test_a_bug_asking_one_target_fails_that_image_only(command, verdict, tmp_path, two_images):
    bad, bystander, _, target = two_images
    assert run_cli(tmp_path, "lock").code == 0
    assert run_cli(tmp_path, "apply").code == 0
    target.clear()

    result = run_with_a_bug_for(tmp_path, "reconciler.registry.client:RegistryClient.resolve_digest",
                                f"{bad.repo}', 'v1'", command)

    failed_alone(result, bad.repo, verdict)
    assert target.count("HEAD", f"/{bystander.repo}/manifests/v1$") == 1  # the bystander was asked too


def test_a_bug_writing_one_image_s_referrers_says_the_image_was_copied(
    tmp_path, plain_registry, second_plain_registry, unique_repo, fault_proxy, push_image
):
    signed, bystander = (push_image(build_image(kind, seed=unique_repo())) for kind in ("oci", "docker"))
    with RawRegistry(plain_registry) as raw:
        push_artifact(raw, signed.repo, subject_descriptor(signed.manifest, signed.media_type), "ignored", b"payload",
                      tag=signed.digest.replace(":", "-") + ".sig")
    target = fault_proxy(second_plain_registry)
    write_images(tmp_path, f"{target.host}/{unique_repo('mirror')}/",
                 [{"source": f"{plain_registry.host}/{image.repo}:v1"} for image in (signed, bystander)])
    assert run_cli(tmp_path, "lock").code == 0

    result = run_with_a_bug_for(tmp_path, "reconciler.registry.referrers:ReferrerWriter.write", signed.repo, "apply")

    failed_alone(result, signed.repo, "copied, but its referrers failed: internal error: ValueError")
    assert result.stdout.splitlines()[-1].startswith("Apply: 1 copied, 0 unchanged, 0 refused, 1 failed")
    assert target.count("PUT", f"/{signed.repo}/manifests/v1$") == 1
    assert target.count("PUT", f"/{bystander.repo}/manifests/v1$") == 1
