"""The pre-commit hook (.pre-commit-hooks.yaml): a commit with a stale images.lock fails, a fresh one passes.

pre-commit itself runs the hook: from a throwaway hook repository holding this checkout's package
and manifest (pre-commit installs it into its own virtualenv from the package index, once: one store
for the module), in a throwaway repository whose images.yaml and images.lock are this repository's
committed demo pair (``lock --check`` is offline: no registry is asked). Where pre-commit is not installed, the hook's
entry is run as pre-commit runs it (the ``files`` filter, no file names, in the repository's top).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers_cli import ROOT, cli_env

MANIFEST = ROOT / ".pre-commit-hooks.yaml"
HOOK_ID = "image-syncer-lock-check"
STALE_ENTRY = "  - source: 127.0.0.1:5801/library/redis:7.2\n"
STALE_TARGET = "127.0.0.1:5802/external/127.0.0.1_5801/library/redis:7.2 (not locked)"
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test"}


def hook() -> dict:
    hooks = yaml.safe_load(MANIFEST.read_text())
    return next(h for h in hooks if h["id"] == HOOK_ID)


def committed(path: str) -> str:
    """The demo's images.yaml / images.lock as committed (not as others may be editing them)."""
    return subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def git(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
                          env=env)


def user_repo(path: Path) -> Path:
    """A repository with the demo's matching images.yaml and images.lock, staged."""
    path.mkdir()
    assert git(path, "init", "-q").returncode == 0
    (path / "images.yaml").write_text(committed("images.yaml"))
    (path / "images.lock").write_text(committed("images.lock"))
    assert git(path, "add", "images.yaml", "images.lock").returncode == 0
    return path


def make_stale(repo: Path) -> None:
    with (repo / "images.yaml").open("a") as images:
        images.write(STALE_ENTRY)
    assert git(repo, "add", "images.yaml").returncode == 0


# -- the manifest --------------------------------------------------------------------------------


def test_the_manifest_offers_lock_check_on_images_files_only():
    offered = hook()
    assert shlex.split(offered["entry"]) == ["image-syncer", "lock", "--check"]
    assert offered["language"] == "python" and offered["pass_filenames"] is False
    files = re.compile(offered["files"])
    for path in ("images.yaml", "images.lock", "mirror/images.yaml", "a/b/images.lock"):
        assert files.search(path), path
    for path in ("myimages.yaml", "images.yml", "images.yaml.orig", "images.lock/x", "README.md"):
        assert not files.search(path), path


def test_the_entry_is_a_console_script_of_the_package():
    """pre-commit's python language installs the hook repository and runs the entry from its venv."""
    scripts = __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert shlex.split(hook()["entry"])[0] in scripts


# -- the entry, run as pre-commit runs it ------------------------------------------------------


def run_entry(repo: Path) -> subprocess.CompletedProcess:
    """What pre-commit does: the entry plus args, no file names, cwd the top of the repository."""
    offered = hook()
    changed = git(repo, "diff", "--cached", "--name-only").stdout.split()
    assert any(re.search(offered["files"], name) for name in changed), changed
    command = shlex.split(offered["entry"]) + offered.get("args", [])
    executable = Path(sys.executable).parent / command[0]
    return subprocess.run([str(executable), *command[1:]], cwd=repo, env=cli_env(repo), capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_entry_fails_a_stale_lock_and_passes_a_matching_one(tmp_path):
    repo = user_repo(tmp_path / "user")
    fresh = run_entry(repo)
    make_stale(repo)
    stale = run_entry(repo)

    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert stale.stderr.splitlines()[0] == (
        "error: images.lock does not match images.yaml: run `image-syncer lock` and commit the result")
    assert STALE_TARGET in stale.stderr


# -- pre-commit itself -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pre_commit(tmp_path_factory):
    """Run pre-commit with its own store; PATH without this venv, so the hook's env must supply it."""
    pytest.importorskip("pre_commit")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    home = tmp_path_factory.mktemp("pre-commit-home")
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {**os.environ, **GIT_IDENTITY, "PRE_COMMIT_HOME": str(home), "PATH": path}
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "SYNCER_IMAGES_FILE"):
        env.pop(name, None)
    assert shutil.which("image-syncer", path=path) is None, "image-syncer outside the hook's env"

    def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300, check=False)

    run.env = env
    return run


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory) -> tuple[Path, str]:
    """A throwaway hook repository: this checkout's package, README, pyproject and manifest, committed."""
    repo = tmp_path_factory.mktemp("hook-repo")
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(ROOT / name, repo / name)
    # The working tree's package as it is (a module not yet committed included), as the tests import it.
    shutil.copytree(ROOT / "reconciler", repo / "reconciler", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {**os.environ, **GIT_IDENTITY}
    for args in (("init", "-q"), ("add", "."), ("commit", "-q", "-m", "hook")):
        assert git(repo, *args, env=env).returncode == 0
    return repo, git(repo, "rev-parse", "HEAD").stdout.strip()


def readme_config(hook_path: Path, rev: str) -> str:
    """The .pre-commit-config.yaml the README tells users to copy, pointed at the throwaway hook repo."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    snippet = next(block for block in blocks if f"id: {HOOK_ID}" in block)
    config = yaml.safe_load(snippet)
    [repo] = config["repos"]
    assert [h["id"] for h in repo["hooks"]] == [HOOK_ID]
    repo["repo"], repo["rev"] = str(hook_path), rev
    return yaml.safe_dump(config)


def test_pre_commit_run_fails_a_staged_stale_lock_with_the_error_line(tmp_path, pre_commit, hook_repo):
    """``pre-commit run``, as CI runs the hooks; the hook's environment is the one the commit test uses
    (one store for the module: building it is most of this file's time; try-repo would build another)."""
    repo = user_repo(tmp_path / "user")
    (repo / ".pre-commit-config.yaml").write_text(readme_config(*hook_repo))
    assert git(repo, "add", ".pre-commit-config.yaml").returncode == 0
    make_stale(repo)

    ran = pre_commit(repo, "run", HOOK_ID)

    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert re.search(r"^image-syncer lock --check\.+Failed$", ran.stdout, re.MULTILINE), ran.stdout
    assert "error: images.lock does not match images.yaml: run `image-syncer lock`" in ran.stdout
    assert STALE_TARGET in ran.stdout


def test_a_commit_with_a_stale_lock_fails_and_a_matching_one_passes(tmp_path, pre_commit, hook_repo):
    repo = user_repo(tmp_path / "user")
    (repo / ".pre-commit-config.yaml").write_text(readme_config(*hook_repo))
    assert git(repo, "add", ".pre-commit-config.yaml").returncode == 0
    installed = pre_commit(repo, "install")
    assert installed.returncode == 0, installed.stdout + installed.stderr

    first = git(repo, "commit", "-m", "images", env=pre_commit.env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"^image-syncer lock --check\.+Passed$", first.stdout + first.stderr, re.MULTILINE)

    make_stale(repo)
    stale = git(repo, "commit", "-m", "a new image, not locked", env=pre_commit.env)
    output = stale.stdout + stale.stderr
    assert stale.returncode == 1, output
    assert "error: images.lock does not match images.yaml: run `image-syncer lock`" in output
    assert STALE_TARGET in output
    assert git(repo, "rev-list", "--count", "HEAD").stdout.strip() == "1"  # nothing committed

    assert git(repo, "restore", "--staged", "images.yaml").returncode == 0  # the stale change unstaged
    (repo / "notes.txt").write_text("not an images file\n")
    assert git(repo, "add", "notes.txt").returncode == 0
    other = git(repo, "commit", "-m", "notes", env=pre_commit.env)
    assert other.returncode == 0, other.stdout + other.stderr
    assert re.search(r"^image-syncer lock --check\.+\(no files to check\)Skipped$", other.stdout + other.stderr,
                     re.MULTILINE), other.stdout + other.stderr
