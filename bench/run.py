#!/usr/bin/env python3
"""Benchmark image-syncer against skopeo and against a raw-HTTP floor.

    .venv/bin/python bench/run.py [--n 100] [--n 1000] [--profile oci|index]
                                  [--repeat 3] [--quick] [--big-mib 1024] [--no-rss]
                                  [--commit REV | --worktree] [--baseline REV] [--rtt 0] [--rtt 40]
                                  [--export | --export-only] [--no-skopeo] [--no-floor]

See bench/README.md for what is measured.  Everything runs on loopback against
local ``docker-registry`` processes started (and stopped) here; with ``--rtt``,
the tools reach them through delay lines (``delayline.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, TypeVar

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import _images
from _registry import Registry, start_registry
from delayline import probe

VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
SKOPEO = shutil.which("skopeo") or "skopeo"
TIME = "/usr/bin/time"
SYNCER = [str(VENV_PYTHON), "-m", "reconciler"]  # with PYTHONPATH at the snapshot under test
TIMEOUT = 3600  # skopeo sync of 1000 images over a 40 ms round trip takes about half an hour
CPUS = len(os.sched_getaffinity(0))

# Runs ARGV (after the file to write to) and writes its wall seconds, peak RSS (KiB) and CPU
# seconds (user + sys) there, from the rusage os.wait4 gives for that one child. Forked from this
# small process, not from the benchmark (whose pages a forked child's peak RSS would count until
# its exec).
LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{time.perf_counter() - started} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""

# Timed run kinds, in the order they are reported.
KINDS = {
    "lock": "cold: image-syncer lock",
    "cold_syncer": "cold: image-syncer apply",
    "cold_skopeo": "cold: skopeo sync",
    "floor": "cold: floor, raw HTTP",
    "noop_plan": "no-op: image-syncer plan",
    "noop_apply": "no-op: image-syncer apply",
    "noop_skopeo": "no-op: skopeo sync",
    "verify": "verify: image-syncer verify",
}

# image-syncer's own runs, whose time per image and peak RSS are reported (issue 26: N=10,000
# no slower per image than N=1,000, peak RSS <= 200 MiB).
SYNCER_KINDS = ("lock", "cold_syncer", "noop_plan", "noop_apply", "verify")

# The kinds --no-skopeo and --no-floor leave out (skopeo sync takes about an hour at N=10,000).
SKOPEO_KINDS = ("cold_skopeo", "noop_skopeo")
FLOOR_KINDS = ("floor",)

# The runs a --baseline snapshot makes too, alternating with the main snapshot's.
BASELINE_KINDS = ("cold_syncer", "noop_plan")

TARGETS = {
    "cold_vs_skopeo": 0.2,
    "cold_vs_floor": 1.5,
    "noop_plan_vs_skopeo_at_1000": 0.1,
    "noop_plan_target_requests_per_image": 1.0,
    # the source's HEAD and its repository's tags list (for the note on referrers the lock lacks),
    # plus one referrers API question per source registry and run (checked as 2 + 1/N)
    "noop_plan_source_requests_per_image": 2.0,
    "peak_rss_mib": 150.0,
    # issue 26, at N >= 10,000: each image-syncer run's peak RSS, and its time per image against N=1,000's
    "fleet_peak_rss_mib": 200.0,
    "per_image_seconds_vs_n1000": 1.0,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def label(kind: str) -> str:
    """``cold_syncer`` -> its KINDS label; ``cold_syncer@baseline`` -> the same, marked as the baseline's."""
    base, _, role = kind.partition("@")
    return KINDS[base] + (f" [{role}]" if role else "")


class Syncer(NamedTuple):
    """One image-syncer under test: SYNCER run with PYTHONPATH at a snapshot of ``reconciler/``."""
    role: str  # "main" (--commit / --worktree) or "baseline" (--baseline)
    code: str  # the full commit id, or "worktree"
    env: dict[str, str]

    def kind(self, kind: str) -> str:
        """Run kind ``kind`` of this syncer: as is for the main one, ``kind@baseline`` for the baseline."""
        return kind if self.role == "main" else f"{kind}@{self.role}"


class Usage(NamedTuple):
    seconds: float  # wall clock
    cpu: float  # user + sys CPU seconds of the client
    peak_rss_mib: float | None = None  # of the command, where LAUNCHER ran it


T = TypeVar("T")


def timed(who: int, fn: Callable[[], T]) -> tuple[Usage, T]:
    """Run ``fn``; its wall time and the CPU time ``getrusage(who)`` grew by meanwhile.

    ``RUSAGE_CHILDREN`` for a command run (and waited for) by ``fn``: nothing else is
    reaped meanwhile, so the delta is that command's; ``RUSAGE_SELF`` for in-process work.
    """
    def cpu() -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    cpu_before, started = cpu(), time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - started
    return Usage(elapsed, cpu() - cpu_before), result


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="image-syncer-bench-"))
        # Isolate both tools from any ambient credentials and policy.
        (self.tmp / "docker").mkdir()
        (self.tmp / "docker" / "config.json").write_text('{"auths": {}}')
        (self.tmp / "xdg").mkdir(mode=0o700)
        (self.tmp / "auth.json").write_text('{"auths": {}}')
        self.policy = self.tmp / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.env = dict(os.environ)
        self.env.update(DOCKER_CONFIG=str(self.tmp / "docker"), REGISTRY_AUTH_FILE=str(self.tmp / "auth.json"),
                        XDG_RUNTIME_DIR=str(self.tmp / "xdg"), NO_COLOR="1", TERM="dumb")
        for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            self.env.pop(key, None)
        self.run_no = 0
        # The code under test: a snapshot of the committed reconciler/ (others may be
        # editing the work tree meanwhile), or the work tree itself with --worktree;
        # with --baseline, a second snapshot measured alongside.
        self.syncers = [self.snapshot("main", None if args.worktree else args.commit)]
        if args.baseline:
            self.syncers.append(self.snapshot("baseline", args.baseline))
        self.main = self.syncers[0]

    def snapshot(self, role: str, rev: str | None) -> Syncer:
        """``reconciler/`` as committed at ``rev`` (``git archive`` into a temp dir, byte-compiled),
        or the work tree for ``rev=None``."""
        if rev is None:
            return Syncer(role, "worktree", self.env | {"PYTHONPATH": str(ROOT)})
        code_dir = self.tmp / f"code-{role}"
        code_dir.mkdir()
        archive = subprocess.run(["git", "archive", rev, "reconciler"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(code_dir)], input=archive, check=True)
        # Bytecode as an installed package has it (PYTHONDONTWRITEBYTECODE would otherwise
        # make every run compile the sources again).
        subprocess.run([str(VENV_PYTHON), "-m", "compileall", "-q", str(code_dir / "reconciler")], check=True)
        code = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        return Syncer(role, code, self.env | {"PYTHONPATH": str(code_dir)})

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --------------------------------------------------------------- helpers
    def registry(self, name: str, rtt_ms: float = 0.0) -> Registry:
        return start_registry(name, self.tmp, rtt_ms)

    def run(self, argv: list[str], cwd: Path, ok: tuple[int, ...] = (0,),
            env: dict[str, str] | None = None) -> tuple[Usage, subprocess.CompletedProcess]:
        self.run_no += 1
        usage, proc = timed(resource.RUSAGE_CHILDREN, lambda: subprocess.run(
            argv, cwd=cwd, env=self.env if env is None else env, capture_output=True, text=True,
            timeout=TIMEOUT, check=False))
        (cwd / f"run-{self.run_no:03d}.log").write_text(
            f"$ {' '.join(argv)}\nexit {proc.returncode} in {usage.seconds:.3f}s ({usage.cpu:.3f}s CPU)\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        if proc.returncode not in ok:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}\n{proc.stdout[-2000:]}")
        return usage, proc

    def launched(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Usage:
        """``argv`` run by LAUNCHER: its wall seconds, CPU seconds and peak RSS as ``os.wait4`` gives them."""
        measured = cwd / f"run-{self.run_no + 1:03d}.usage"
        self.run([sys.executable, "-c", LAUNCHER, str(measured), *argv], cwd, env=env)
        seconds, peak_kib, cpu = measured.read_text().split()
        return Usage(float(seconds), float(cpu), int(peak_kib) / 1024)

    def skopeo_sync(self, sync_yaml: Path, target: Registry, cwd: Path) -> Usage:
        return self.run([SKOPEO, "--policy", str(self.policy), "sync", "--all", "--src", "yaml",
                         "--dest", "docker", "--src-tls-verify=false", "--dest-tls-verify=false",
                         str(sync_yaml), f"{target.front_host}/skopeo"], cwd)[0]

    @staticmethod
    def verify(target: Registry, repos: list[str], digests: list[str], what: str) -> None:
        """Every target repository holds tag v1 with exactly the source digest."""
        pusher = _images.Pusher(target.url)
        try:
            with ThreadPoolExecutor(16) as pool:
                got = list(pool.map(lambda repo: pusher.head_manifest(repo, _images.TAG), repos))
        finally:
            pusher.close()
        bad = [(repo, want, have) for repo, want, have in zip(repos, digests, got) if want != have]
        if bad:
            raise RuntimeError(f"{what}: {len(bad)} of {len(repos)} targets differ, e.g. {bad[0]}")

    # ------------------------------------------------------------- one size
    def bench_size(self, n: int, rtt_ms: float) -> dict:
        """All runs for ``n`` images, the tools reaching every registry through a delay line of
        ``rtt_ms`` (none for 0)."""
        profile, repeat = self.args.profile, self.args.repeat
        column = column_name(n, rtt_ms)
        work = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=self.tmp))
        source = self.registry("source", rtt_ms)
        try:
            if rtt_ms:
                fresh, reused = probe(source.front_host)
                log(f"{column}: GET /v2/ through the delay line: fresh connection {fresh * 1000:.0f} ms, "
                    f"reused {reused * 1000:.0f} ms")
                if fresh < 2 * rtt_ms / 1000 or reused < rtt_ms / 1000:
                    raise RuntimeError(f"the delay line of {rtt_ms:g} ms does not delay")
            log(f"{column}: seeding {n} {profile} images into {source.host}")
            pusher = _images.Pusher(source.url)
            started = time.perf_counter()
            digests = pusher.push_all(profile, n)
            seed_seconds = time.perf_counter() - started
            pusher.close()
            log(f"{column}: seeded in {seed_seconds:.1f}s ({pusher.requests} requests)")

            repos = [_images.repo_name(i) for i in range(n)]
            sync_yaml = work / "sync.yaml"
            lines = [f'"{source.front_host}":', "  tls-verify: false", "  images:"]
            lines += [f'    {repo}: ["{_images.TAG}"]' for repo in repos]
            sync_yaml.write_text("\n".join(lines) + "\n")
            # skopeo sync (not --scoped) names each target <dest>/<last path component>.
            skopeo_repos = [f"skopeo/{repo.rsplit('/', 1)[1]}" for repo in repos]
            syncer_repos = [f"mirror/{source.front_host.replace(':', '_')}/{repo}" for repo in repos]

            # Each syncer under test keeps its images.yaml and images.lock in its own directory.
            for s in self.syncers:
                (work / s.role).mkdir()

            def configure(s: Syncer, target: Registry) -> None:
                lines = [f'targetRepoPrefix: "{target.front_host}/mirror/"', "images:"]
                lines += [f'  - source: "{source.front_host}/{repo}:{_images.TAG}"' for repo in repos]
                (work / s.role / "images.yaml").write_text("\n".join(lines) + "\n")
                (work / s.role / "images.lock").unlink(missing_ok=True)

            def syncer(s: Syncer, *command: str) -> Usage:
                return self.launched([*SYNCER, *command], work / s.role, env=s.env)

            skipped = (SKOPEO_KINDS if self.args.no_skopeo else ()) + (FLOOR_KINDS if self.args.no_floor else ())
            runs: dict[str, list] = {kind: [] for kind in KINDS if kind not in skipped}
            runs |= {s.kind(kind): [] for s in self.syncers[1:] for kind in BASELINE_KINDS}

            def measure(kind: str, r: int, target: Registry, action: Callable[[], Usage]) -> None:
                """Run ``action``; record its wall and client CPU time, and the CPU time and
                requests of the source and ``target`` registries meanwhile."""
                offsets = source.log_offset(), target.log_offset()
                cpu_before = source.cpu_seconds(), target.cpu_seconds()
                usage = action()
                requests = {"source": dict(source.requests_since(offsets[0])),
                            "target": dict(target.requests_since(offsets[1], settle=0))}
                # read after the access log settled, so that the tail of the last requests counts too
                cpu = {"client": usage.cpu, "source": source.cpu_seconds() - cpu_before[0],
                       "target": target.cpu_seconds() - cpu_before[1]}
                runs[kind].append({"seconds": usage.seconds, "cpu": cpu, "requests": requests,
                                   "peak_rss_mib": usage.peak_rss_mib})
                log(f"{column} #{r + 1}: {label(kind)} {usage.seconds:.2f}s, CPU s "
                    + " ".join(f"{k} {v:.2f}" for k, v in cpu.items()) + f", requests {requests}"
                    + (f", peak RSS {usage.peak_rss_mib:.1f} MiB" if usage.peak_rss_mib is not None else ""))

            kept: dict[str, Registry] = {}  # the last round's targets serve the no-op runs

            def cold(kind: str, r: int, target_repos: list[str], action: Callable[[Registry], Usage],
                     keep: bool = False, setup: Callable[[Registry], None] | None = None) -> None:
                """One cold run into a fresh, empty target registry, verified afterwards."""
                target = self.registry("target", rtt_ms)
                try:
                    if setup is not None:
                        setup(target)
                    measure(kind, r, target, lambda: action(target))
                    self.verify(target, target_repos, digests, label(kind))
                finally:
                    if keep:
                        kept[kind] = target
                    else:
                        target.stop()

            images = None

            def floor(target: Registry) -> Usage:
                """Each distinct blob once + mounts + manifests, raw HTTP from this process."""
                pusher = _images.Pusher(target.front_url, concurrency=self.args.concurrency)
                try:
                    return timed(resource.RUSAGE_SELF, lambda: pusher.push_all(profile, n, images))[0]
                finally:
                    pusher.close()

            try:
                for r in range(repeat):
                    last = r == repeat - 1
                    for s in self.syncers:
                        def lock_then(target: Registry, s: Syncer = s) -> None:
                            """images.yaml for ``target``, then ``lock`` (resolving every source) timed, by the main syncer."""
                            configure(s, target)
                            if s is self.main:
                                measure("lock", r, target, lambda: syncer(s, "lock"))
                            else:
                                syncer(s, "lock")

                        cold(s.kind("cold_syncer"), r, syncer_repos, lambda _target, s=s: syncer(s, "apply"),
                             keep=last, setup=lock_then)
                    if "cold_skopeo" in runs:
                        cold("cold_skopeo", r, skopeo_repos,
                             lambda target: self.skopeo_sync(sync_yaml, target, work), keep=last)
                    if "floor" in runs:
                        if images is None:
                            images = _images.generate_all(profile, n)
                        cold("floor", r, repos, floor)
                unique = _images.unique_bytes(images) if images is not None else distinct_blob_bytes(profile, n)
                images = None

                # no-op: everything already there (each syncer's images.yaml names its kept cold target)
                for r in range(repeat):
                    for s in self.syncers:
                        measure(s.kind("noop_plan"), r, kept[s.kind("cold_syncer")],
                                lambda s=s: syncer(s, "plan", "--detailed-exitcode"))
                    measure("noop_apply", r, kept["cold_syncer"], lambda: syncer(self.main, "apply"))
                    measure("verify", r, kept["cold_syncer"], lambda: syncer(self.main, "verify"))
                    if "noop_skopeo" in runs:
                        measure("noop_skopeo", r, kept["cold_skopeo"],
                                lambda: self.skopeo_sync(sync_yaml, kept["cold_skopeo"], work))
                for s in self.syncers:
                    self.verify(kept[s.kind("cold_syncer")], syncer_repos, digests,
                                f"image-syncer ({s.role}) after no-op")
                if "cold_skopeo" in kept:
                    self.verify(kept["cold_skopeo"], skopeo_repos, digests, "skopeo after no-op")
            finally:
                for target in kept.values():
                    target.stop()
        finally:
            source.stop()
            shutil.rmtree(work, ignore_errors=True)

        medians = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
        per_image, medians_cpu = {}, {}
        for k, v in runs.items():
            for side in ("source", "target"):
                totals = [x["requests"].get(side, {}).get("total", 0) for x in v]
                per_image[f"{k}.{side}"] = statistics.median(totals) / n
            cpu = {part: statistics.median(x["cpu"][part] for x in v) for part in ("client", "source", "target")}
            registries = [x["cpu"]["source"] + x["cpu"]["target"] for x in v]
            requests = [sum(x["requests"][side].get("total", 0) for side in ("source", "target")) for x in v]
            cpu["registries"] = statistics.median(registries)
            cpu["requests"] = statistics.median(requests)
            # CPU per request both registries' access logs recorded, the registries' and the client's
            for name, used in (("registry", registries), ("client", [x["cpu"]["client"] for x in v])):
                cpu[f"{name}_ms_per_request"] = statistics.median(
                    1000 * c / max(q, 1) for c, q in zip(used, requests))
            medians_cpu[k] = cpu
        peaks = {k: statistics.median(x["peak_rss_mib"] for x in v) for k, v in runs.items()
                 if v and v[0]["peak_rss_mib"] is not None}
        return {"n": n, "rtt_ms": rtt_ms, "profile": profile, "repeat": repeat, "cpus": CPUS,
                "seed_seconds": seed_seconds, "unique_bytes": unique, "medians_seconds": medians,
                "medians_cpu_seconds": medians_cpu, "requests_per_image": per_image,
                "medians_peak_rss_mib": peaks, "runs": runs}

    # ------------------------------------------------------------ peak RSS
    def bench_rss(self) -> dict:
        size = self.args.big_mib * _images.MiB
        work = Path(tempfile.mkdtemp(prefix="rss-", dir=self.tmp))
        source = self.registry("source-big")
        target = self.registry("target-big")
        try:
            log(f"RSS: streaming a {self.args.big_mib} MiB layer into {source.host}")
            pusher = _images.Pusher(source.url)
            started = time.perf_counter()
            digest = _images.push_big_image(pusher, "big/one", size)
            pusher.close()
            log(f"RSS: pushed in {time.perf_counter() - started:.1f}s")
            (work / "images.yaml").write_text(
                f'targetRepoPrefix: "{target.host}/mirror/"\nimages:\n  - source: "{source.host}/big/one:v1"\n')
            self.run([*SYNCER, "lock"], work, env=self.main.env)
            out = {"layer_mib": self.args.big_mib}
            for name, argv, repo in (
                ("image-syncer", [*SYNCER, "apply"], f"mirror/{source.host.replace(':', '_')}/big/one"),
                ("skopeo", [SKOPEO, "--policy", str(self.policy), "copy", "--all", "--src-tls-verify=false",
                            "--dest-tls-verify=false", f"docker://{source.host}/big/one:v1",
                            f"docker://{target.host}/skopeo/big:v1"], "skopeo/big"),
            ):
                elapsed, peak = self.peak_rss(argv, work)
                self.verify(target, [repo], [digest], f"{name} big image")
                out[name] = {"seconds": elapsed, "peak_rss_mib": peak}
                log(f"RSS: {name} {elapsed:.1f}s, peak RSS {peak:.1f} MiB")
            return out
        finally:
            source.stop()
            target.stop()
            shutil.rmtree(work, ignore_errors=True)

    # ------------------------------------------------- across an air gap
    def bench_export(self, n: int) -> dict:
        """For ``n`` images (RTT 0): ``export`` into a layout directory and ``apply --from`` it into a
        fresh target with the source stopped, against ``skopeo sync --dest dir`` of the same images and
        ``skopeo sync --src dir`` back into a registry: wall time, peak RSS, bytes on disk."""
        profile = self.args.profile
        work = Path(tempfile.mkdtemp(prefix=f"export-n{n}-", dir=self.tmp))
        source, target, skopeo_target = self.registry("source-export"), None, None
        try:
            log(f"export N={n}: seeding {n} {profile} images into {source.host}")
            pusher = _images.Pusher(source.url)
            digests = pusher.push_all(profile, n)
            pusher.close()
            distinct = distinct_blob_bytes(profile, n)
            repos = [_images.repo_name(i) for i in range(n)]
            target, skopeo_target = self.registry("target-export"), self.registry("target-skopeo-dir")
            lines = [f'targetRepoPrefix: "{target.host}/mirror/"', "images:"]
            lines += [f'  - source: "{source.host}/{repo}:{_images.TAG}"' for repo in repos]
            (work / "images.yaml").write_text("\n".join(lines) + "\n")
            self.run([*SYNCER, "lock"], work, env=self.main.env)  # not timed
            sync_yaml = work / "sync.yaml"
            lines = [f'"{source.host}":', "  tls-verify: false", "  images:"]
            lines += [f'    {repo}: ["{_images.TAG}"]' for repo in repos]
            sync_yaml.write_text("\n".join(lines) + "\n")

            out: dict = {"n": n, "profile": profile, "distinct_blob_bytes": distinct}

            def record(name: str, argv: list[str], directory: Path | None = None) -> None:
                offset = source.log_offset() if source.running else None
                usage = self.launched(argv, work, env=self.main.env)
                out[name] = {"seconds": usage.seconds, "peak_rss_mib": usage.peak_rss_mib}
                if offset is not None:
                    out[name]["source_requests"] = source.requests_since(offset).get("total", 0)
                if directory is not None:
                    out[name] |= disk_use(directory)
                log(f"export N={n}: {EXPORT_KINDS[name]} {usage.seconds:.2f}s, peak RSS {usage.peak_rss_mib:.1f} MiB"
                    + (f", {out[name]['disk_bytes'] / _images.MiB:.1f} MiB in {out[name]['files']} files"
                       if directory is not None else ""))

            record("export", [*SYNCER, "export", str(work / "layout")], work / "layout")
            if not self.args.no_skopeo:
                record("skopeo_to_dir", [SKOPEO, "--policy", str(self.policy), "sync", "--all", "--src", "yaml",
                                         "--dest", "dir", "--src-tls-verify=false", str(sync_yaml),
                                         str(work / "skopeo-dir")], work / "skopeo-dir")
            source.stop()  # across the gap: nothing may reach it now
            record("apply_from", [*SYNCER, "apply", "--from", str(work / "layout")])
            self.verify(target, [f"mirror/{source.host.replace(':', '_')}/{repo}" for repo in repos], digests,
                        "apply --from")
            if not self.args.no_skopeo:
                record("skopeo_from_dir", [SKOPEO, "--policy", str(self.policy), "sync", "--all", "--src", "dir",
                                           "--dest", "docker", "--dest-tls-verify=false", str(work / "skopeo-dir"),
                                           f"{skopeo_target.host}/skopeo"])
                self.verify(skopeo_target, [f"skopeo/{repo.rsplit('/', 1)[1]}" for repo in repos], digests,
                            "skopeo sync --src dir")
            return out
        finally:
            for registry in (source, target, skopeo_target):
                if registry is not None:
                    registry.stop()
            shutil.rmtree(work, ignore_errors=True)

    def peak_rss(self, argv: list[str], cwd: Path) -> tuple[float, float]:
        if os.access(TIME, os.X_OK):
            usage, proc = self.run([TIME, "-v", *argv], cwd, env=self.main.env)
            match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
            if not match:
                raise RuntimeError(f"no RSS in /usr/bin/time output:\n{proc.stderr[-2000:]}")
            return usage.seconds, int(match.group(1)) / 1024
        wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)")
        usage, proc = self.run([sys.executable, "-c", wrapper, *argv], cwd, env=self.main.env)
        return usage.seconds, int(proc.stderr.strip().splitlines()[-1]) / 1024


# ------------------------------------------------------ across an air gap
EXPORT_KINDS = {
    "export": "image-syncer export DIR",
    "skopeo_to_dir": "skopeo sync --dest dir",
    "apply_from": "image-syncer apply --from DIR",
    "skopeo_from_dir": "skopeo sync --src dir",
}


def distinct_blob_bytes(profile: str, n: int) -> int:
    """The bytes of the ``n`` images' distinct configs and layers, generated one image at a time."""
    bases = _images.base_layers(profile)
    sizes: dict[str, int] = {}
    for i in range(n):
        sizes |= {digest: blob.size for digest, blob in _images.make_image(profile, i, bases).blobs.items()}
    return sum(sizes.values())


def disk_use(directory: Path) -> dict:
    """The sum of the sizes of the files under ``directory`` (``du -b``'s apparent size), and their count."""
    sizes = [os.lstat(os.path.join(root, name)).st_size
             for root, _, names in os.walk(directory) for name in names]
    return {"disk_bytes": sum(sizes), "files": len(sizes)}


def export_table(exports: list[dict]) -> list[str]:
    """Per N: wall seconds, peak RSS and, for what writes a directory, its bytes and their ratio to the
    distinct blobs' bytes."""
    lines = ["across an air gap (RTT 0, one run each; disk = sum of file sizes; ratio = disk / distinct "
             "config+layer bytes; apply --from with the source registry stopped):"]
    width = max(len(name) for name in EXPORT_KINDS.values()) + 8
    for e in exports:
        lines.append(f"N={e['n']} ({e['profile']}): distinct blobs {e['distinct_blob_bytes'] / _images.MiB:.1f} MiB")
        lines.append("  ".join(["".ljust(width)] + [c.rjust(10) for c in ("wall s", "peak MiB", "disk MiB",
                                                                             "files", "ratio")]))
        for kind, name in EXPORT_KINDS.items():
            if kind not in e:
                continue
            run = e[kind]
            disk = run.get("disk_bytes")
            values = [_fmt(run["seconds"]), _fmt(run["peak_rss_mib"]),
                      _fmt(None if disk is None else disk / _images.MiB), str(run.get("files", "-")),
                      "-" if disk is None else f"{disk / e['distinct_blob_bytes']:.3f}x"]
            lines.append("  ".join([name.ljust(width)] + [v.rjust(10) for v in values]))
    return lines


# ------------------------------------------------------------------ report
def column_name(n: int, rtt_ms: float) -> str:
    return f"N={n} RTT={rtt_ms:g}"


def result_key(result: dict) -> str:
    """Key of a result in latest.json: ``100`` for RTT 0, ``100/rtt40`` for RTT 40 ms."""
    return f"{result['n']}" + (f"/rtt{result['rtt_ms']:g}" if result["rtt_ms"] else "")


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.3g}{unit}" if abs(value) < 100 else f"{value:.0f}{unit}"


# Targets expressed as a ratio to skopeo: (TARGETS key, image-syncer's run, skopeo's run).
SKOPEO_RATIO_TARGETS = (("cold_vs_skopeo", "cold_syncer", "cold_skopeo"),
                        ("noop_plan_vs_skopeo_at_1000", "noop_plan", "noop_skopeo"))


def registry_bound(result: dict, key: str, kind: str, versus: str) -> dict:
    """Target ``key`` (``kind`` <= ratio x ``versus``) in seconds, against the registry-bound
    lower limit of ``kind``: the registries' CPU seconds of that run divided by the CPUs, the wall
    time it could not beat on this machine even with a zero-cost client."""
    target = TARGETS[key] * result["medians_seconds"][versus]
    limit = result["medians_cpu_seconds"][kind]["registries"] / result["cpus"]
    return {"target_seconds": target, "registry_bound_seconds": limit, "below_registry_bound": target < limit}


def cpu_table(results: list[dict]) -> list[str]:
    """Per N and per run kind: client and registry CPU seconds, wall seconds, registry CPU per request."""
    columns = ("client", "source", "target", "registries", "wall", "reg ms/req", "reg-bound")
    width = max(len(label) for label in KINDS.values())
    lines = [f"CPU seconds (user+sys, medians) on {results[0]['cpus']} CPUs; registries = source + target;",
             "reg ms/req = registries' CPU per request they served; reg-bound = registries' CPU / CPUs"]
    for r in results:
        lines.append("  ".join([column_name(r["n"], r["rtt_ms"]).ljust(width)] + [c.rjust(10) for c in columns]))
        for kind, label in KINDS.items():
            if kind not in r["medians_cpu_seconds"]:
                continue
            cpu = r["medians_cpu_seconds"][kind]
            values = [cpu["client"], cpu["source"], cpu["target"], cpu["registries"],
                      r["medians_seconds"][kind], cpu["registry_ms_per_request"], cpu["registries"] / r["cpus"]]
            lines.append("  ".join([label.ljust(width)] + [_fmt(v).rjust(10) for v in values]))
        lines.append("registry-bound lower limit of image-syncer's run (the wall time it could not beat here "
                     "even with a zero-cost client) vs the target:")
        for key, kind, versus in SKOPEO_RATIO_TARGETS:
            if versus not in r["medians_seconds"]:
                continue
            b = registry_bound(r, key, kind, versus)
            lines.append(f"  {KINDS[kind]} <= {TARGETS[key]:g} x skopeo: target {b['target_seconds']:.3g}s, "
                         f"lower limit {b['registry_bound_seconds']:.3g}s -> "
                         + ("target BELOW the registry bound" if b["below_registry_bound"] else "target above it")
                         + (" (the target is set for N=1000)" if key.endswith("_at_1000") and r["n"] < 1000 else ""))
        lines.append("")
    return lines[:-1]


# image-syncer's runs whose client CPU per request is reported, and how.
CLIENT_KINDS = {"noop_plan": "no-op plan", "cold_syncer": "cold apply"}


def client_cpu(results: list[dict], syncers: list[Syncer]) -> tuple[list[str], dict]:
    """Per N, for a no-op plan and a cold apply: image-syncer's client CPU seconds, the requests
    both registries logged and client CPU ms per request (medians), per snapshot under test; with a
    baseline, the ratio main / baseline of the ms per request."""
    columns = [f"{s.role} {c}" for s in syncers for c in ("CPU s", "requests", "ms/req")]
    columns += ["ratio"] if len(syncers) > 1 else []
    width = max(len(x) for x in [*CLIENT_KINDS.values(), *(column_name(r["n"], r["rtt_ms"]) for r in results)])
    lines = ["client CPU ms per request = image-syncer's CPU seconds (user+sys) * 1000 / requests to source "
             "+ target (access logs); medians", ", ".join(f"{s.role} = {s.code[:7]}" for s in syncers)
             + ("; ratio = main / baseline ms/req" if len(syncers) > 1 else "")]
    data: dict = {"commits": {s.role: s.code for s in syncers}, "sizes": {}}
    for r in results:
        lines.append("  ".join([column_name(r["n"], r["rtt_ms"]).ljust(width)]
                               + [c.rjust(max(10, len(c))) for c in columns]))
        per_kind = data["sizes"][result_key(r)] = {}
        for kind, name in CLIENT_KINDS.items():
            entry = per_kind[kind] = {}
            values: list[float | None] = []
            for s in syncers:
                cpu = r["medians_cpu_seconds"][s.kind(kind)]
                entry[s.role] = {"client_cpu_seconds": cpu["client"], "requests": cpu["requests"],
                                 "client_ms_per_request": cpu["client_ms_per_request"]}
                values += [cpu["client"], cpu["requests"], cpu["client_ms_per_request"]]
            if len(syncers) > 1:
                ours, theirs = (entry[s.role]["client_ms_per_request"] for s in syncers)
                entry["ratio"] = ours / theirs if theirs else None
                values.append(entry["ratio"])
            lines.append("  ".join([name.ljust(width)]
                                   + [_fmt(v).rjust(max(10, len(c))) for v, c in zip(values, columns)]))
    return lines, data


def report(results: list[dict], rss: dict | None) -> tuple[str, dict]:
    rows: list[tuple[str, list[str]]] = []
    verdicts: dict[str, dict] = {}

    def row(label: str, values: list[float | None], unit: str = "") -> None:
        rows.append((label, [_fmt(v, unit) for v in values]))

    med = [r["medians_seconds"] for r in results]
    req = [r["requests_per_image"] for r in results]

    def ratio(m: dict, kind: str, versus: str) -> float | None:
        """``kind`` / ``versus`` where both ran (--no-skopeo and --no-floor leave some out)."""
        return m[kind] / m[versus] if kind in m and versus in m else None

    row("seed source (s, not timed in ratios)", [r["seed_seconds"] for r in results])
    row("unique bytes (MiB)", [r["unique_bytes"] / _images.MiB for r in results])
    for kind in ("lock", "cold_syncer", "cold_skopeo", "floor"):
        row(f"{KINDS[kind]} (s)", [m.get(kind) for m in med])
    cold_sk = [ratio(m, "cold_syncer", "cold_skopeo") for m in med]
    cold_fl = [ratio(m, "cold_syncer", "floor") for m in med]
    row("cold: image-syncer / skopeo  [<= 0.2]", cold_sk, "x")
    row("cold: image-syncer / floor   [<= 1.5]", cold_fl, "x")
    for kind in ("noop_plan", "noop_apply", "noop_skopeo", "verify"):
        row(f"{KINDS[kind]} (s)", [m.get(kind) for m in med])
    plan_sk = [ratio(m, "noop_plan", "noop_skopeo") for m in med]
    row("no-op: plan / skopeo  [<= 0.1 at N=1000]", plan_sk, "x")
    row("no-op: apply / skopeo", [ratio(m, "noop_apply", "noop_skopeo") for m in med], "x")
    for kind in SYNCER_KINDS:
        row(f"{KINDS[kind]}: ms per image", [1000 * m[kind] / r["n"] for r, m in zip(results, med)])
    for kind in SYNCER_KINDS:
        row(f"{KINDS[kind]}: peak RSS (MiB)", [r["medians_peak_rss_mib"].get(kind) for r in results])
    at_rtt0 = {r["n"]: r["medians_seconds"] for r in results if r["rtt_ms"] == 0}
    for kind in ("cold_syncer", "noop_plan"):
        row(f"{KINDS[kind]}: RTT / RTT=0", [m[kind] / at_rtt0[r["n"]][kind] if r["n"] in at_rtt0 else None
                                            for r, m in zip(results, med)], "x")
    for kind, label in KINDS.items():
        label += " [<= 2 source, 1 target]" if kind == "noop_plan" else ""
        for side in ("source", "target") if kind != "floor" else ("target",):
            row(f"requests/image {label}, {side}", [q.get(f"{kind}.{side}") for q in req])

    def verdict(key: str, value: float, per_run: float = 0.0) -> dict:
        target = TARGETS[key] + per_run
        return {"value": value, "target": target, "met": value <= target}

    for r, a, b, c in zip(results, cold_sk, cold_fl, plan_sk):
        at = result_key(r)
        if a is not None:
            verdicts[f"cold_vs_skopeo@{at}"] = (verdict("cold_vs_skopeo", a)
                                               | registry_bound(r, *SKOPEO_RATIO_TARGETS[0]))
        if b is not None:
            verdicts[f"cold_vs_floor@{at}"] = verdict("cold_vs_floor", b)
        q = r["requests_per_image"]
        for side in ("source", "target"):
            verdicts[f"noop_plan_{side}_requests_per_image@{at}"] = verdict(
                f"noop_plan_{side}_requests_per_image", q[f"noop_plan.{side}"], 1 / r["n"] if side == "source" else 0)
        if r["n"] >= 1000 and c is not None:
            verdicts[f"noop_plan_vs_skopeo@{at}"] = (verdict("noop_plan_vs_skopeo_at_1000", c)
                                                    | registry_bound(r, *SKOPEO_RATIO_TARGETS[1]))
    for r in results:
        if r["n"] < 10000:
            continue
        at = result_key(r)
        small = next((x for x in results if x["n"] == 1000 and x["rtt_ms"] == r["rtt_ms"]), None)
        for kind in SYNCER_KINDS:
            if (peak := r["medians_peak_rss_mib"].get(kind)) is not None:
                verdicts[f"{kind}_peak_rss_mib@{at}"] = verdict("fleet_peak_rss_mib", peak)
            if small is not None:
                per_image = (r["medians_seconds"][kind] / r["n"]) / (small["medians_seconds"][kind] / small["n"])
                verdicts[f"{kind}_per_image_vs_n1000@{at}"] = verdict("per_image_seconds_vs_n1000", per_image)
                # the client's CPU per image too: steadier than wall time on a shared machine
                cpu = [x["medians_cpu_seconds"][kind]["client"] / x["n"] for x in (r, small)]
                verdicts[f"{kind}_client_cpu_per_image_vs_n1000@{at}"] = verdict("per_image_seconds_vs_n1000",
                                                                                cpu[0] / cpu[1])
    if rss is not None:
        verdicts["peak_rss_mib"] = verdict("peak_rss_mib", rss["image-syncer"]["peak_rss_mib"])

    header = ["metric"] + [column_name(r["n"], r["rtt_ms"]) for r in results]
    width = max(len(label) for label, _ in rows)
    cell = max(10, *(len(h) for h in header[1:]))
    lines = [f"profile={results[0]['profile']}  repeat={results[0]['repeat']} (medians)",
             "  ".join([header[0].ljust(width)] + [h.rjust(cell) for h in header[1:]])]
    for label, values in rows:
        lines.append("  ".join([label.ljust(width)] + [v.rjust(cell) for v in values]))
    lines.append("")
    lines.extend(cpu_table(results))
    if rss is not None:
        lines.append("")
        lines.append(f"peak RSS copying one image with a {rss['layer_mib']} MiB layer:")
        for name in ("image-syncer", "skopeo"):
            lines.append(f"  {name:<13} {rss[name]['peak_rss_mib']:8.1f} MiB  in {rss[name]['seconds']:.1f}s")
    lines.append("")
    lines.append("targets:")
    key_width = max(48, *map(len, verdicts))
    for key, v in verdicts.items():
        line = f"  {key:<{key_width}} {v['value']:8.3g}  (target <= {v['target']:g})  {'MET' if v['met'] else 'NOT MET'}"
        if "below_registry_bound" in v:
            line += (f"; below_registry_bound={str(v['below_registry_bound']).lower()} "
                     f"({v['target_seconds']:.3g}s target vs {v['registry_bound_seconds']:.3g}s lower limit)")
        lines.append(line)
    return "\n".join(lines), verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, action="append", help="images to sync (repeatable; default 100)")
    parser.add_argument("--profile", choices=["oci", "index"], default="oci")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="--repeat 1 and a 256 MiB layer for the RSS run")
    parser.add_argument("--big-mib", type=int, default=1024, help="layer size for the peak RSS run")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak RSS run")
    parser.add_argument("--commit", default="HEAD", help="benchmark reconciler/ as committed here (default HEAD)")
    parser.add_argument("--worktree", action="store_true", help="benchmark the uncommitted work tree instead")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run cold apply and no-op plan with reconciler/ as committed at REV, "
                             "alternating with the main snapshot, and compare client CPU per request")
    parser.add_argument("--rtt", type=float, action="append", metavar="MS",
                        help="round trip time the tools see to every registry, through delay lines "
                             "(repeatable; default 0: plain loopback)")
    parser.add_argument("--export", action="store_true",
                        help="also measure export and apply --from against skopeo sync --dest dir / --src dir")
    parser.add_argument("--export-only", action="store_true",
                        help="measure only that (no cold, no-op or RSS runs)")
    parser.add_argument("--no-skopeo", action="store_true",
                        help="skip skopeo's runs (at N=10,000 a cold skopeo sync takes about an hour)")
    parser.add_argument("--no-floor", action="store_true", help="skip the raw-HTTP floor's runs")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="parallel requests of the floor (16: where image-syncer's adaptive limit starts)")
    args = parser.parse_args(argv)
    args.n = args.n or [100]
    args.rtt = args.rtt or [0.0]
    if args.quick:
        args.repeat = 1
        if args.big_mib == 1024:
            args.big_mib = 256
    for tool in (VENV_PYTHON, Path(shutil.which("docker-registry") or "/nonexistent"), Path(SKOPEO)):
        if not Path(tool).exists():
            parser.error(f"missing {tool}")

    bench = Bench(args)
    commit = bench.main.code
    log("image-syncer under test: " + ", ".join(f"{s.role} {s.code}" for s in bench.syncers))
    started = time.perf_counter()
    try:
        results = [] if args.export_only else [bench.bench_size(n, rtt) for n in args.n for rtt in args.rtt]
        rss = None if args.no_rss or args.export_only else bench.bench_rss()
        exports = [bench.bench_export(n) for n in args.n] if args.export or args.export_only else []
    finally:
        bench.close()
    table, verdicts, client_ms_per_request = "", {}, None
    if results:
        table, verdicts = report(results, rss)
        lines, client_ms_per_request = client_cpu(results, bench.syncers)
        table += "\n\n" + "\n".join(lines)
    if exports:
        table += ("\n\n" if table else "") + "\n".join(export_table(exports))
    print(table)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    skopeo_version = subprocess.run([SKOPEO, "--version"], capture_output=True, text=True,
                                    check=False).stdout.strip()
    (out_dir / "latest.json").write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": commit,
        "baseline": bench.syncers[1].code if args.baseline else None, "skopeo": skopeo_version,
        "machine": {"cpus": CPUS, "python": platform.python_version()},
        "args": {k: v for k, v in vars(args).items()}, "total_seconds": time.perf_counter() - started,
        "sizes": results, "peak_rss": rss, "export": exports, "targets": verdicts, "client_ms_per_request": client_ms_per_request,
        "table": table,
    }, indent=2) + "\n")
    log(f"wrote {out_dir / 'latest.json'} (total {time.perf_counter() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
