"""Thin wrappers around the ``skopeo`` CLI (used to push/inspect fixtures)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

SKOPEO = os.environ.get("HARNESS_SKOPEO_BINARY", "skopeo")

_policy_dir = None


class SkopeoError(RuntimeError):
    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str):
        self.args_ = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"{' '.join(args)} failed ({returncode}):\n{stderr.strip()}")


def _env() -> dict[str, str]:
    """Isolate skopeo from the user's auth files and policy."""
    global _policy_dir
    if _policy_dir is None:
        _policy_dir = tempfile.mkdtemp(prefix="harness-skopeo-")
        atexit.register(shutil.rmtree, _policy_dir, True)
        Path(_policy_dir, "policy.json").write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
        )
        Path(_policy_dir, "auth.json").write_text('{"auths": {}}')
    env = dict(os.environ)
    env["REGISTRY_AUTH_FILE"] = str(Path(_policy_dir, "auth.json"))
    return env


def _policy_args() -> list[str]:
    _env()
    return ["--policy", str(Path(_policy_dir, "policy.json"))]


def run_skopeo(args: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [SKOPEO, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)
    if p.returncode != 0:
        raise SkopeoError(cmd, p.returncode, p.stdout, p.stderr)
    return p


def _creds(creds: tuple[str, str] | str | None) -> str | None:
    if creds is None:
        return None
    if isinstance(creds, str):
        return creds
    return f"{creds[0]}:{creds[1]}"


def _side_args(side: str, ref: str, tls_verify: bool, creds, cert_dir) -> list[str]:
    """--src-*/--dest-* options (only for docker:// refs)."""
    if not ref.startswith("docker://"):
        return []
    out = [f"--{side}-tls-verify={'true' if tls_verify else 'false'}"]
    c = _creds(creds)
    if c is not None:
        out += [f"--{side}-creds", c]
    else:
        out += [f"--{side}-no-creds"]
    if cert_dir is not None:
        out += [f"--{side}-cert-dir", str(cert_dir)]
    return out


def skopeo_inspect_raw(ref: str, tls_verify: bool = False,
                       creds: tuple[str, str] | str | None = None,
                       cert_dir: str | Path | None = None) -> bytes:
    """``skopeo inspect --raw`` -> the manifest bytes exactly as served.

    ``ref`` like ``docker://127.0.0.1:5000/repo:tag`` (``docker://`` is
    added if no transport is given).
    """
    if "://" not in ref and not ref.startswith(("oci:", "dir:")):
        ref = "docker://" + ref
    args = ["inspect", "--raw", f"--tls-verify={'true' if tls_verify else 'false'}"]
    c = _creds(creds)
    if c is not None:
        args += ["--creds", c]
    elif ref.startswith("docker://"):
        args += ["--no-creds"]
    if cert_dir is not None:
        args += ["--cert-dir", str(cert_dir)]
    cmd = [SKOPEO, *args, ref]
    p = subprocess.run(cmd, capture_output=True, env=_env(), timeout=120)
    if p.returncode != 0:
        raise SkopeoError(cmd, p.returncode, p.stdout.decode(errors="replace"),
                          p.stderr.decode(errors="replace"))
    return p.stdout


def skopeo_copy(src: str, dest: str, *, all: bool = True, preserve_digests: bool = True,
                src_tls_verify: bool = False, dest_tls_verify: bool = False,
                src_creds=None, dest_creds=None, src_cert_dir=None, dest_cert_dir=None,
                format: str | None = None, extra: Sequence[str] = (),
                timeout: float = 300) -> subprocess.CompletedProcess:
    """``skopeo copy`` with explicit TLS/creds options for each side.

    ``src``/``dest`` are full transport refs (``docker://host/repo:tag``,
    ``oci:/dir:tag`` ...).  ``preserve_digests`` makes skopeo fail rather
    than silently rewrite a manifest.
    """
    args = ["copy", *_policy_args(), "--retry-times", "0"]
    if all:
        args.append("--all")
    if preserve_digests and format is None:
        args.append("--preserve-digests")
    if format is not None:
        args += ["--format", format]
    args += _side_args("src", src, src_tls_verify, src_creds, src_cert_dir)
    args += _side_args("dest", dest, dest_tls_verify, dest_creds, dest_cert_dir)
    args += list(extra)
    args += [src, dest]
    return run_skopeo(args, timeout=timeout)


def registry_side(registry) -> dict:
    """kwargs (tls_verify, creds, cert_dir) to talk to a harness Registry."""
    return {
        "tls_verify": registry.ca_file is not None,
        "creds": registry.credentials,
        "cert_dir": registry.cert_dir,
    }
