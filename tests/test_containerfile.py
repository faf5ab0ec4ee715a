"""The Containerfile, as far as it can be tested without a container runtime: its RUN steps,
run as written into a fresh directory standing for the image's file system, give a working
``image-syncer --version`` through its ENTRYPOINT, as the non-root user the Kubernetes examples
expect. Dependencies come from the package index, as in a real build."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "Containerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, its arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in joined.splitlines()
            if line.strip()]


def test_instructions_are_read_with_their_continuations_and_without_comments():
    assert instructions("# c\nFROM a\nRUN x \\\n  && y\n\nUSER 1\n") == [("FROM", "a"), ("RUN", "x    && y"),
                                                                         ("USER", "1")]


def test_the_containerfile_installs_the_checkout_into_a_venv_that_runs_as_a_non_root_user(tmp_path):
    steps = instructions(CONTAINERFILE.read_text())
    image = tmp_path / "image"  # the image's file system: /opt/x is image/opt/x

    def inside(word: str) -> str:
        return str(image / word.lstrip("/")) if word.startswith("/") else word

    kinds = [kind for kind, _ in steps]
    assert kinds[0] == "FROM" and kinds.count("FROM") == 1
    assert re.fullmatch(r"python:3\.1[1-9]-slim", steps[0][1]), steps[0]
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PIP_NO_INDEX"}}
    ran, user, entrypoint = [], None, None
    for kind, arguments in steps[1:]:
        if kind == "ENV":
            for pair in shlex.split(arguments):
                key, value = pair.split("=", 1)
                env[key] = re.sub(r"/[\w/.-]+", lambda match: inside(match[0]), value).replace("$PATH", env["PATH"])
        elif kind == "COPY":
            *sources, destination = shlex.split(arguments)
            for source in sources:
                target = Path(inside(destination.rstrip("/"))) / (Path(source).name if destination.endswith("/") else "")
                target.parent.mkdir(parents=True, exist_ok=True)
                copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copyfile
                copy(ROOT / source, target)
        elif kind == "RUN" and arguments.startswith("useradd"):
            user = shlex.split(arguments)  # needs root: read, not run
        elif kind == "RUN":
            for command in arguments.split("&&"):
                words = [inside(word) for word in shlex.split(command)]
                words[0] = sys.executable if words[0] == "python" else words[0]
                done = subprocess.run(words, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
                ran.append(words)
        elif kind == "USER":
            uid, _, gid = arguments.partition(":")
            assert int(uid) != 0 and int(gid or uid) != 0
        elif kind == "ENTRYPOINT":
            entrypoint = json.loads(arguments)  # the exec form: no shell in between

    assert [words[1:3] for words in ran[:2]] == [["-m", "venv"], ["install", "--no-cache-dir"]], ran
    assert not (image / "src").exists()  # removed once installed
    assert user is not None and user[user.index("--uid") + 1] == uid
    assert entrypoint == ["image-syncer"]
    binary = shutil.which(entrypoint[0], path=env["PATH"])
    assert binary is not None and Path(binary).is_relative_to(image), env["PATH"]

    version = subprocess.run([*entrypoint, "--version"], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=60, executable=binary)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "image-syncer " + _project_version()
    where = subprocess.run([str(Path(binary).parent / "python"), "-c", "import reconciler; print(reconciler.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(image), where  # the installed copy, not the checkout


def test_the_kubernetes_pods_run_as_the_containerfiles_user():
    user = next(arguments for kind, arguments in instructions(CONTAINERFILE.read_text()) if kind == "USER")
    uid, _, gid = user.partition(":")
    for name in ("cronjob-apply.yaml", "cronjob-verify.yaml"):
        job = yaml.safe_load((ROOT / "examples" / "kubernetes" / name).read_text())
        context = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"]
        assert (context["runAsNonRoot"], str(context["runAsUser"]), str(context["runAsGroup"])) == (True, uid, gid)


def _project_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert match
    return match[1]
