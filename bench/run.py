#!/usr/bin/env python3
"""Benchmark image-syncer against skopeo and against a raw-HTTP floor.

    .venv/bin/python bench/run.py [--n 100] [--n 1000] [--profile oci|index]
                                  [--repeat 3] [--quick] [--big-mib 1024] [--no-rss]

See bench/README.md for what is measured.  Everything runs on loopback against
local ``docker-registry`` processes started (and stopped) here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import _images
from _registry import Registry, start_registry

VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
SKOPEO = shutil.which("skopeo") or "skopeo"
TIME = "/usr/bin/time"
TIMEOUT = 1800

TARGETS = {
    "cold_vs_skopeo": 0.2,
    "cold_vs_floor": 1.5,
    "noop_plan_vs_skopeo_at_1000": 0.1,
    "noop_plan_requests_per_image_per_registry": 1.0,
    "peak_rss_mib": 150.0,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
        # editing the work tree meanwhile), or the work tree itself with --worktree.
        if args.worktree:
            code_dir = ROOT
            self.code = "worktree"
        else:
            code_dir = self.tmp / "code"
            code_dir.mkdir()
            archive = subprocess.run(["git", "archive", args.commit, "reconciler"], cwd=ROOT,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(code_dir)], input=archive, check=True)
            self.code = subprocess.run(["git", "rev-parse", args.commit], cwd=ROOT, capture_output=True,
                                       text=True, check=True).stdout.strip()
        self.env["PYTHONPATH"] = str(code_dir)
        self.syncer = [str(VENV_PYTHON), "-m", "reconciler"]

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --------------------------------------------------------------- helpers
    def registry(self, name: str) -> Registry:
        return start_registry(name, self.tmp)

    def run(self, argv: list[str], cwd: Path, ok: tuple[int, ...] = (0,)) -> tuple[float, subprocess.CompletedProcess]:
        self.run_no += 1
        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=TIMEOUT,
                              check=False)
        elapsed = time.perf_counter() - started
        (cwd / f"run-{self.run_no:03d}.log").write_text(
            f"$ {' '.join(argv)}\nexit {proc.returncode} in {elapsed:.3f}s\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        if proc.returncode not in ok:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}\n{proc.stdout[-2000:]}")
        return elapsed, proc

    def skopeo_sync(self, sync_yaml: Path, target: Registry, cwd: Path) -> float:
        elapsed, _ = self.run([SKOPEO, "--policy", str(self.policy), "sync", "--all", "--src", "yaml",
                               "--dest", "docker", "--src-tls-verify=false", "--dest-tls-verify=false",
                               str(sync_yaml), f"{target.host}/skopeo"], cwd)
        return elapsed

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
    def bench_size(self, n: int) -> dict:
        profile, repeat = self.args.profile, self.args.repeat
        work = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=self.tmp))
        source = self.registry("source")
        try:
            log(f"N={n}: seeding {n} {profile} images into {source.host}")
            pusher = _images.Pusher(source.url)
            started = time.perf_counter()
            digests = pusher.push_all(profile, n)
            seed_seconds = time.perf_counter() - started
            pusher.close()
            log(f"N={n}: seeded in {seed_seconds:.1f}s ({pusher.requests} requests)")

            repos = [_images.repo_name(i) for i in range(n)]
            sync_yaml = work / "sync.yaml"
            lines = [f'"{source.host}":', "  tls-verify: false", "  images:"]
            lines += [f'    {repo}: ["{_images.TAG}"]' for repo in repos]
            sync_yaml.write_text("\n".join(lines) + "\n")
            # skopeo sync (not --scoped) names each target <dest>/<last path component>.
            skopeo_repos = [f"skopeo/{repo.rsplit('/', 1)[1]}" for repo in repos]
            syncer_repos = [f"mirror/{source.host.replace(':', '_')}/{repo}" for repo in repos]

            def configure(target: Registry) -> None:
                lines = [f'targetRepoPrefix: "{target.host}/mirror/"', "images:"]
                lines += [f'  - source: "{source.host}/{repo}:{_images.TAG}"' for repo in repos]
                (work / "images.yaml").write_text("\n".join(lines) + "\n")
                self.run([*self.syncer, "lock"], work)  # not timed

            def counted(target: Registry, action) -> tuple[float, dict]:
                offsets = source.log_offset(), target.log_offset()
                elapsed = action()
                return elapsed, {"source": dict(source.requests_since(offsets[0])),
                                 "target": dict(target.requests_since(offsets[1], settle=0))}

            runs: dict[str, list] = {k: [] for k in (
                "cold_syncer", "cold_skopeo", "floor", "noop_plan", "noop_apply", "noop_skopeo")}

            images = None
            kept: dict[str, Registry] = {}  # the last round's targets serve the no-op runs
            try:
                for r in range(repeat):
                    last = r == repeat - 1
                    # 1. cold image-syncer apply into a fresh registry
                    target = self.registry("target")
                    try:
                        configure(target)
                        elapsed, requests = counted(target, lambda: self.run([*self.syncer, "apply"], work)[0])
                        self.verify(target, syncer_repos, digests, "image-syncer apply")
                        runs["cold_syncer"].append({"seconds": elapsed, "requests": requests})
                        log(f"N={n} #{r + 1}: cold image-syncer apply {elapsed:.2f}s {requests}")
                    finally:
                        if last:
                            kept["syncer"] = target
                        else:
                            target.stop()
                    # 2. cold skopeo sync into a fresh registry
                    target = self.registry("target")
                    try:
                        elapsed, requests = counted(target, lambda t=target: self.skopeo_sync(sync_yaml, t, work))
                        self.verify(target, skopeo_repos, digests, "skopeo sync")
                        runs["cold_skopeo"].append({"seconds": elapsed, "requests": requests})
                        log(f"N={n} #{r + 1}: cold skopeo sync {elapsed:.2f}s {requests}")
                    finally:
                        if last:
                            kept["skopeo"] = target
                        else:
                            target.stop()
                    # 3. the floor: each distinct blob once + mounts + manifests, raw HTTP
                    if images is None:
                        images = _images.generate_all(profile, n)
                    target = self.registry("target")
                    try:
                        floor = _images.Pusher(target.url, concurrency=self.args.concurrency)
                        started = time.perf_counter()
                        floor.push_all(profile, n, images)
                        elapsed = time.perf_counter() - started
                        floor.close()
                        self.verify(target, repos, digests, "floor")
                        runs["floor"].append({"seconds": elapsed,
                                              "requests": {"target": {"total": floor.requests}}})
                        log(f"N={n} #{r + 1}: floor {elapsed:.2f}s ({floor.requests} requests)")
                    finally:
                        target.stop()
                unique = _images.unique_bytes(profile, images)
                images = None

                # no-op: everything already there (image-syncer's images.yaml names kept["syncer"])
                for r in range(repeat):
                    target = kept["syncer"]
                    plan_cmd = [*self.syncer, "plan", "--detailed-exitcode"]
                    elapsed, requests = counted(target, lambda c=plan_cmd: self.run(c, work)[0])
                    runs["noop_plan"].append({"seconds": elapsed, "requests": requests})
                    log(f"N={n} #{r + 1}: no-op plan {elapsed:.2f}s {requests}")
                    elapsed, requests = counted(target, lambda: self.run([*self.syncer, "apply"], work)[0])
                    runs["noop_apply"].append({"seconds": elapsed, "requests": requests})
                    log(f"N={n} #{r + 1}: no-op apply {elapsed:.2f}s {requests}")
                    target = kept["skopeo"]
                    elapsed, requests = counted(target, lambda t=target: self.skopeo_sync(sync_yaml, t, work))
                    runs["noop_skopeo"].append({"seconds": elapsed, "requests": requests})
                    log(f"N={n} #{r + 1}: no-op skopeo sync {elapsed:.2f}s {requests}")
                self.verify(kept["syncer"], syncer_repos, digests, "image-syncer after no-op")
                self.verify(kept["skopeo"], skopeo_repos, digests, "skopeo after no-op")
            finally:
                for target in kept.values():
                    target.stop()
        finally:
            source.stop()
            shutil.rmtree(work, ignore_errors=True)

        medians = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
        per_image = {}
        for k, v in runs.items():
            for side in ("source", "target"):
                totals = [x["requests"].get(side, {}).get("total", 0) for x in v]
                per_image[f"{k}.{side}"] = statistics.median(totals) / n
        return {"n": n, "profile": profile, "repeat": repeat, "seed_seconds": seed_seconds,
                "unique_bytes": unique, "medians_seconds": medians, "requests_per_image": per_image,
                "runs": runs}

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
            self.run([*self.syncer, "lock"], work)
            out = {"layer_mib": self.args.big_mib}
            for name, argv, repo in (
                ("image-syncer", [*self.syncer, "apply"], f"mirror/{source.host.replace(':', '_')}/big/one"),
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

    def peak_rss(self, argv: list[str], cwd: Path) -> tuple[float, float]:
        if os.access(TIME, os.X_OK):
            elapsed, proc = self.run([TIME, "-v", *argv], cwd)
            match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
            if not match:
                raise RuntimeError(f"no RSS in /usr/bin/time output:\n{proc.stderr[-2000:]}")
            return elapsed, int(match.group(1)) / 1024
        wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)")
        elapsed, proc = self.run([sys.executable, "-c", wrapper, *argv], cwd)
        return elapsed, int(proc.stderr.strip().splitlines()[-1]) / 1024


# ------------------------------------------------------------------ report
def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.3g}{unit}" if abs(value) < 100 else f"{value:.0f}{unit}"


def report(results: list[dict], rss: dict | None) -> tuple[str, dict]:
    rows: list[tuple[str, list[str]]] = []
    verdicts: dict[str, dict] = {}

    def row(label: str, values: list[float | None], unit: str = "") -> None:
        rows.append((label, [_fmt(v, unit) for v in values]))

    med = [r["medians_seconds"] for r in results]
    req = [r["requests_per_image"] for r in results]
    row("seed source (s, not timed in ratios)", [r["seed_seconds"] for r in results])
    row("unique bytes (MiB)", [r["unique_bytes"] / _images.MiB for r in results])
    row("cold: image-syncer apply (s)", [m["cold_syncer"] for m in med])
    row("cold: skopeo sync (s)", [m["cold_skopeo"] for m in med])
    row("cold: floor, raw HTTP (s)", [m["floor"] for m in med])
    cold_sk = [m["cold_syncer"] / m["cold_skopeo"] for m in med]
    cold_fl = [m["cold_syncer"] / m["floor"] for m in med]
    row("cold: image-syncer / skopeo  [<= 0.2]", cold_sk, "x")
    row("cold: image-syncer / floor   [<= 1.5]", cold_fl, "x")
    row("no-op: image-syncer plan (s)", [m["noop_plan"] for m in med])
    row("no-op: image-syncer apply (s)", [m["noop_apply"] for m in med])
    row("no-op: skopeo sync (s)", [m["noop_skopeo"] for m in med])
    plan_sk = [m["noop_plan"] / m["noop_skopeo"] for m in med]
    row("no-op: plan / skopeo  [<= 0.1 at N=1000]", plan_sk, "x")
    row("no-op: apply / skopeo", [m["noop_apply"] / m["noop_skopeo"] for m in med], "x")
    for key, label in (("cold_syncer", "cold image-syncer apply"), ("cold_skopeo", "cold skopeo sync"),
                       ("floor", "floor"), ("noop_plan", "no-op plan [<= 1]"),
                       ("noop_apply", "no-op image-syncer apply"), ("noop_skopeo", "no-op skopeo sync")):
        if key != "floor":
            row(f"requests/image {label}: source", [q[f"{key}.source"] for q in req])
        row(f"requests/image {label}: target", [q[f"{key}.target"] for q in req])

    for r, a, b in zip(results, cold_sk, cold_fl):
        n = r["n"]
        verdicts[f"cold_vs_skopeo@{n}"] = {"value": a, "target": TARGETS["cold_vs_skopeo"], "met": a <= 0.2}
        verdicts[f"cold_vs_floor@{n}"] = {"value": b, "target": TARGETS["cold_vs_floor"], "met": b <= 1.5}
        q = r["requests_per_image"]
        worst = max(q["noop_plan.source"], q["noop_plan.target"])
        verdicts[f"noop_plan_requests_per_image_per_registry@{n}"] = {
            "value": worst, "target": 1.0, "met": worst <= 1.0}
    for r, v in zip(results, plan_sk):
        if r["n"] >= 1000:
            verdicts[f"noop_plan_vs_skopeo@{r['n']}"] = {"value": v, "target": 0.1, "met": v <= 0.1}
    if rss is not None:
        peak = rss["image-syncer"]["peak_rss_mib"]
        verdicts["peak_rss_mib"] = {"value": peak, "target": 150.0, "met": peak <= 150.0}

    header = ["metric"] + [f"N={r['n']}" for r in results]
    width = max(len(label) for label, _ in rows)
    lines = [f"profile={results[0]['profile']}  repeat={results[0]['repeat']} (medians)",
             "  ".join([header[0].ljust(width)] + [h.rjust(10) for h in header[1:]])]
    for label, values in rows:
        lines.append("  ".join([label.ljust(width)] + [v.rjust(10) for v in values]))
    if rss is not None:
        lines.append("")
        lines.append(f"peak RSS copying one image with a {rss['layer_mib']} MiB layer:")
        for name in ("image-syncer", "skopeo"):
            lines.append(f"  {name:<13} {rss[name]['peak_rss_mib']:8.1f} MiB  in {rss[name]['seconds']:.1f}s")
    lines.append("")
    lines.append("targets:")
    for key, v in verdicts.items():
        lines.append(f"  {key:<48} {v['value']:8.3g}  (target <= {v['target']:g})  "
                     f"{'MET' if v['met'] else 'NOT MET'}")
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
    parser.add_argument("--concurrency", type=int, default=16,
                        help="parallel requests of the floor (image-syncer's default --max-requests is 16)")
    args = parser.parse_args(argv)
    args.n = args.n or [100]
    if args.quick:
        args.repeat = 1
        if args.big_mib == 1024:
            args.big_mib = 256
    for tool in (VENV_PYTHON, Path(shutil.which("docker-registry") or "/nonexistent"), Path(SKOPEO)):
        if not Path(tool).exists():
            parser.error(f"missing {tool}")

    bench = Bench(args)
    commit = bench.code
    log(f"image-syncer under test: {commit}")
    started = time.perf_counter()
    try:
        results = [bench.bench_size(n) for n in args.n]
        rss = None if args.no_rss else bench.bench_rss()
    finally:
        bench.close()
    table, verdicts = report(results, rss)
    print(table)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    skopeo_version = subprocess.run([SKOPEO, "--version"], capture_output=True, text=True,
                                    check=False).stdout.strip()
    (out_dir / "latest.json").write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": commit, "skopeo": skopeo_version,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": {k: v for k, v in vars(args).items()}, "total_seconds": time.perf_counter() - started,
        "sizes": results, "peak_rss": rss, "targets": verdicts, "table": table,
    }, indent=2) + "\n")
    log(f"wrote {out_dir / 'latest.json'} (total {time.perf_counter() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
