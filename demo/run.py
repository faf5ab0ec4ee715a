"""The demo behind `bash scripts/dev demo`: lock, plan, apply and plan again between two local registries.

It starts two throwaway `docker-registry` processes (tests/harness/registry.py) on fixed
loopback ports, an "upstream" (127.0.0.1:5801) seeded with deterministic images by demo/seed.py and
"our mirror" (127.0.0.1:5802), runs image-syncer against the committed
images.yaml and images.lock, proves the result with skopeo, and always stops the
registries and deletes their storage at the end.

    demo/run.py            the demo; exits non-zero if any step gives an unexpected exit code
    demo/run.py --relock   seed the upstream, then rewrite images.lock (`image-syncer lock --upgrade`)
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for demo.seed and tests.harness

from demo import seed
from tests.harness.registry import Registry, RegistryStartError, start_registry

UPSTREAM = "127.0.0.1:5801"
MIRROR = "127.0.0.1:5802"
SYNCER = Path(sys.executable).with_name("image-syncer")
PROOF_TARGETS = [f"{MIRROR}/external/{UPSTREAM.replace(':', '_')}/library/{name}" for name in ("alpine:3.20", "nginx:1.27")]


def header(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def check_port_free(address: str) -> None:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the registry (Go) does
        try:
            sock.bind((host, int(port)))
        except OSError as error:
            sys.exit(f"error: {address} is not free ({error.strerror}). The demo needs the fixed ports "
                     f"{UPSTREAM} and {MIRROR}, which images.yaml names: stop whatever listens there "
                     f"(`ss -ltnp 'sport = :{port}'` shows it) and run the demo again.")


def start(name: str, address: str, workdir: Path, started: list[Registry]) -> Registry:
    """Start a registry on ``address`` with its storage under ``workdir``, and add it to ``started``."""
    try:
        registry = start_registry(name, parent=workdir, port=int(address.rsplit(":", 1)[1]))
    except RegistryStartError as error:
        sys.exit(f"error: the {name} registry did not start on {address}: {error}")
    started.append(registry)
    print(f"  {name:8} {registry.url}  (docker-registry pid {registry.pid})")
    return registry


def run(title: str, args: list[str], expect: int) -> bool:
    """Show and run ``image-syncer ARGS`` from the repository root; True if it exits with ``expect``."""
    header(f"{title}  (expect exit {expect})")
    print(f"$ image-syncer {shlex.join(args)}", flush=True)
    code = subprocess.run([str(SYNCER), *args], check=False, cwd=ROOT).returncode
    ok = code == expect
    print(f"[exit {code}: {'as expected' if ok else f'FAILED, expected {expect}'}]", flush=True)
    return ok


def skopeo_proof() -> bool:
    """Independent proof: what the mirror serves hashes to exactly what images.lock pins
    (for the nginx entry, the subset index of the platforms it keeps)."""
    header("Independent check with skopeo: the mirror serves exactly the locked bytes")
    pins = {image["target"]: image for image in yaml.safe_load((ROOT / "images.lock").read_text())["images"]}
    identical = True
    for target in PROOF_TARGETS:
        pin = pins[target]
        locked = pin["subset"]["digest"] if "subset" in pin else pin["digest"]
        args = ["skopeo", "inspect", "--raw", "--tls-verify=false", "--no-creds", f"docker://{target}"]
        print(f"$ {shlex.join(args)}", flush=True)
        result = subprocess.run(args, check=False, capture_output=True)
        if result.returncode != 0:
            print(result.stderr.decode(errors="replace"), f"[exit {result.returncode}: FAILED]", sep="")
            return False
        print(json.dumps(json.loads(result.stdout), indent=2))
        served = "sha256:" + hashlib.sha256(result.stdout).hexdigest()
        print(f"  sha256 of what the mirror serves: {served}\n  digest pinned in images.lock:     {locked}")
        print("[identical]" if served == locked else "[FAILED: they differ]")
        identical = identical and served == locked
    return identical


STEPS = [
    ("1. The lock matches images.yaml (offline)", ["lock", "--check"], 0),
    ("2. Plan: everything is to create", ["plan", "--detailed-exitcode"], 2),
    ("3. Apply: copy the locked digests into the mirror", ["apply"], 0),
    ("4. Plan again: nothing left to do", ["plan", "--detailed-exitcode"], 0),
]


def demo() -> str | None:
    """Run the steps in order; return the first that failed, if any."""
    for title, args, expect in STEPS:
        if not run(title, args, expect):
            return title
    return None if skopeo_proof() else "5. the skopeo check"


def main() -> int:
    relock = sys.argv[1:] == ["--relock"]
    if sys.argv[1:] and not relock:
        sys.exit(__doc__)
    for signum in (signal.SIGTERM, signal.SIGHUP):  # clean up as on Ctrl-C
        signal.signal(signum, lambda signum, frame: sys.exit(128 + signum))
    for address in (UPSTREAM, MIRROR):
        check_port_free(address)
    # Talk to the demo registries directly, even where an HTTP proxy is configured.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(filter(None, ["127.0.0.1", os.environ.get("NO_PROXY")]))
    workdir = Path(tempfile.mkdtemp(prefix="image-syncer-demo-"))
    registries: list[Registry] = []  # an interrupted start is stopped at exit by tests.harness.registry
    try:
        header(f"Starting two empty registries (storage in {workdir}, removed at the end)")
        upstream = start("upstream", UPSTREAM, workdir, registries)
        start("mirror", MIRROR, workdir, registries)
        header("Seeding the upstream with deterministic images (demo/seed.py, pushed with skopeo)")
        seed.seed(upstream)
        if relock:
            return 0 if run("Rewriting images.lock", ["lock", "--upgrade"], 0) else 1
        failed = demo()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for registry in registries:
            registry.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        print(f"\nDemo FAILED at step {failed}", file=sys.stderr)
        return 1
    print("\nDemo passed: lock checked, planned, applied, nothing left to do, and the mirror serves "
          "the locked bytes. Now edit images.yaml and try `image-syncer lock` yourself.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
