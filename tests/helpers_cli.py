"""Drive the real ``image-syncer`` command line as a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    seconds: float = 0.0

    @property
    def stdout_lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr_lines if line.startswith("error:")]

    def __str__(self) -> str:
        return (f"image-syncer {' '.join(self.args)} -> exit {self.code} ({self.seconds:.1f} s)\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def cli_env(workdir: Path) -> dict[str, str]:
    """The user's environment minus any registry credentials; wide, colourless output."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG", "SSL_CERT_FILE",
                        "SYNCER_IMAGES_FILE", "SYNCER_TARGET_KEY_FILE", "SYNCER_ACCESS_TOKEN",
                        "GOOGLE_APPLICATION_CREDENTIALS", "FORCE_COLOR", *PROXY_VARIABLES}}
    env["DOCKER_CONFIG"] = str(workdir / ".no-docker-config")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["COLUMNS"] = "1000"
    env["NO_COLOR"] = "1"
    env["TERM"] = "dumb"
    return env


def run_cli(workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> CliResult:
    """``python -m reconciler ARGS`` in ``workdir`` (``env`` added); never raises on a non-zero exit."""
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=workdir, env={**cli_env(workdir), **(env or {})}, capture_output=True, text=True, timeout=timeout,
        check=False,
    )
    return CliResult(tuple(args), completed.returncode, completed.stdout, completed.stderr,
                     time.monotonic() - started)


def write_images(workdir: Path, prefix: str, entries: list[dict], name: str = "images.yaml") -> Path:
    """Write an images.yaml (block style, one key per line, as people write it)."""
    path = workdir / name
    path.write_text(yaml.safe_dump({"targetRepoPrefix": prefix, "images": entries}, sort_keys=False))
    return path
