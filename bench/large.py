#!/usr/bin/env python3
"""One large image over a bandwidth-limited link: image-syncer vs skopeo copy vs the link's floor.

    .venv/bin/python bench/large.py [--size-mib 1024] [--rtt 40] [--rate 400mbit] [--repeat 1]
                                    [--commit REV | --worktree] [--no-reset]

See bench/README.md ("One large image").  One image of ``--size-mib`` in four layers of
random bytes (8/16, 4/16, 3/16 and 1/16 of it) in a source registry that the tools reach
through a delay line (``delayline.py``) of ``--rtt`` and ``--rate``: the source is across
the internet; each tool writes into a fresh target registry on plain loopback (a mirror in
the same region).  Then the same with the line resetting the connection at 90% of the
largest layer: how many bytes each tool reads from the source then.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _images
from _registry import Registry
from delayline import DelayLine, parse_rate
from run import CPUS, SKOPEO, SYNCER, VENV_PYTHON, Bench, log, timed

REPO = "bench/large"
# Shares of the image, in sixteenths, of its layers: one dominant layer (as a CUDA or ML
# runtime's is) bigger than the others together, so that 90% of it is past anything the
# others' answers reach.
LAYER_SIXTEENTHS = (8, 4, 3, 1)
RESET_AT = 0.9  # of the largest layer's blob
GiB = 1024 * _images.MiB
TARGETS = {"syncer_vs_floor": 1.1, "syncer_reset_source_bytes_vs_image": 1.15}
TOOLS = ("image-syncer", "skopeo")
SAMPLE_SECONDS = 0.05


class Timeline:
    """The bytes the line has delivered from the source, sampled every SAMPLE_SECONDS while a run
    goes on, to split its wall time: until the first MiB had arrived (start-up: the process, its
    imports, the first round trips), until the last byte had (the transfer), and after (the tail:
    the uploads' commits, the manifest, exit)."""

    def __init__(self, line: DelayLine) -> None:
        self._line = line
        self._samples: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def __enter__(self) -> Timeline:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self._samples.append((time.perf_counter() - self._started, self._line.counters()["to_client"]))

    def phases(self, seconds: float, rate: float) -> dict[str, float | None]:
        """Seconds to the first MiB and to the last byte, the tail after it, and the transfer's time
        between them against those bytes / rate (1.0: the link was full all along)."""
        if not self._samples or self._samples[-1][1] - self._samples[0][1] < 2 * _images.MiB:
            return {"first_mib_seconds": None, "last_byte_seconds": None, "tail_seconds": None,
                    "transfer_vs_rate": None}
        start, end = self._samples[0][1], self._samples[-1][1]
        first = next((t, b) for t, b in self._samples if b - start >= _images.MiB)
        last = next(t for t, b in self._samples if b == end)
        return {"first_mib_seconds": first[0], "last_byte_seconds": last, "tail_seconds": max(0.0, seconds - last),
                "transfer_vs_rate": (last - first[0]) / ((end - first[1]) / rate)}


class Large:
    """The source holding the image, and one measured run at a time against it."""

    def __init__(self, bench: Bench, args: argparse.Namespace) -> None:
        self.bench, self.args = bench, args
        self.work = Path(tempfile.mkdtemp(prefix="large-", dir=bench.tmp))
        self.source: Registry = bench.registry("source-large")
        payloads = [args.size_mib * _images.MiB * share // 16 for share in LAYER_SIXTEENTHS]
        log(f"seeding {args.size_mib} MiB in layers of {'+'.join(str(p // _images.MiB) for p in payloads)} MiB "
            f"into {self.source.host}")
        started = time.perf_counter()
        pusher = _images.Pusher(self.source.url)
        try:
            self.manifest = _images.push_streamed_image(pusher, REPO, payloads)
        finally:
            pusher.close()
        log(f"seeded in {time.perf_counter() - started:.1f}s")
        self.blobs = [self.manifest.config, *self.manifest.layers]
        self.image_bytes = len(self.manifest.raw) + sum(blob.size for blob in self.blobs)
        self.largest = max(blob.size for blob in self.manifest.layers)

    def close(self) -> None:
        self.source.stop()

    def line(self, reset: bool) -> DelayLine:
        """A fresh delay line in front of the source: fresh counters, its reset not yet spent."""
        return DelayLine(self.source.host, self.args.rtt, self.args.rate,
                         int(self.largest * RESET_AT) if reset else None)

    def floor(self) -> dict:
        """Raw GETs of the config and every layer at once through a fresh line, bodies discarded."""
        line = self.line(reset=False)
        try:
            before = line.counters()
            with Timeline(line) as timeline, ThreadPoolExecutor(len(self.blobs)) as pool:
                usage, sizes = timed(resource.RUSAGE_SELF, lambda: list(pool.map(
                    lambda blob: _get(line.host, f"/v2/{REPO}/blobs/{blob.digest}"), self.blobs)))
            if sizes != [blob.size for blob in self.blobs]:
                raise RuntimeError(f"raw GET through the line: {sizes} bytes, expected {[b.size for b in self.blobs]}")
            return self.record("raw GET", usage.seconds, None, usage.cpu, before, line.counters(), {}, timeline)
        finally:
            line.stop()

    def copy(self, tool: str, reset: bool) -> dict:
        """``tool`` copies the image through a fresh line into a fresh target; verified afterwards."""
        line, target = self.line(reset), self.bench.registry("target-large")
        try:
            source_ref = f"{line.host}/{REPO}:{_images.TAG}"
            if tool == "image-syncer":
                (self.work / "images.yaml").write_text(
                    f'targetRepoPrefix: "{target.host}/mirror/"\nimages:\n  - source: "{source_ref}"\n')
                self.bench.run([*SYNCER, "lock"], self.work, env=self.bench.main.env)  # not timed
                argv, target_repo = [*SYNCER, "apply"], f"mirror/{line.host.replace(':', '_')}/{REPO}"
            else:
                argv = [SKOPEO, "--policy", str(self.bench.policy), "copy", "--all", "--retry-times", "3",
                        "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{source_ref}",
                        f"docker://{target.host}/skopeo/large:{_images.TAG}"]
                target_repo = "skopeo/large"
            before, offset = line.counters(), self.source.log_offset()
            with Timeline(line) as timeline:
                usage = self.bench.launched(argv, self.work, env=self.bench.main.env)
            after, requests = line.counters(), self.source.requests_since(offset)
            self.bench.verify(target, [target_repo], [self.manifest.digest], tool)
            return self.record(tool, usage.seconds, usage.peak_rss_mib, usage.cpu, before, after, dict(requests),
                               timeline)
        finally:
            line.stop()
            target.stop()

    def record(self, name: str, seconds: float, peak_mib: float | None, cpu: float, before: dict, after: dict,
               requests: dict, timeline: Timeline) -> dict:
        source_bytes = after["to_client"] - before["to_client"]
        run = {"seconds": seconds, "peak_rss_mib": peak_mib, "client_cpu_seconds": cpu,
               "load_average": os.getloadavg()[0], **timeline.phases(seconds, self.args.rate),
               "client_cpu_seconds_per_gib": cpu * GiB / self.image_bytes, "source_bytes": source_bytes,
               "source_bytes_vs_image": source_bytes / self.image_bytes, "source_requests": requests,
               "resets": after["resets"] - before["resets"],
               "line_cpu_seconds": after["cpu_seconds"] - before["cpu_seconds"]}
        log(f"{name}: {seconds:.2f}s, CPU {cpu:.2f}s, peak RSS {_fmt(peak_mib)} MiB, "
            f"source bytes {source_bytes / self.image_bytes:.3f}x the image, resets {run['resets']}, "
            f"line CPU {run['line_cpu_seconds']:.2f}s, first MiB at {_fmt(run['first_mib_seconds'])}s, "
            f"last byte at {_fmt(run['last_byte_seconds'])}s, transfer {_fmt(run['transfer_vs_rate'])}x bytes/rate, "
            f"load {run['load_average']:.1f}, source requests {requests}")
        return run


def _get(host: str, path: str) -> int:
    """Bytes of one plain GET's body, read in 1 MiB pieces and dropped."""
    connection = http.client.HTTPConnection(host, timeout=300)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        size = 0
        while piece := response.read(_images.MiB):
            size += len(piece)
        return size
    finally:
        connection.close()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def summarise(runs: dict[str, list[dict]], floor_seconds: float) -> dict[str, dict]:
    """Per kind of run: medians of its figures, and its wall time relative to the link floor."""
    out = {}
    for kind, measured in runs.items():
        medians = {key: statistics.median(run[key] for run in measured) if measured[0][key] is not None else None
                   for key in ("seconds", "peak_rss_mib", "client_cpu_seconds", "client_cpu_seconds_per_gib",
                               "source_bytes", "source_bytes_vs_image", "line_cpu_seconds", "first_mib_seconds",
                               "tail_seconds", "transfer_vs_rate", "load_average")}
        out[kind] = medians | {"vs_floor": medians["seconds"] / floor_seconds}
    return out


def table(summary: dict[str, dict], head: str) -> str:
    columns = ("wall s", "x floor", "peak MiB", "CPU s", "CPU s/GiB", "src MiB", "x image", "1st MiB s",
               "transfer x", "tail s", "line CPU s", "load")
    width = max(len(kind) for kind in summary) + 2
    lines = [head, "  ".join(["".ljust(width)] + [c.rjust(10) for c in columns])]
    for kind, m in summary.items():
        values = [m["seconds"], m["vs_floor"], m["peak_rss_mib"], m["client_cpu_seconds"],
                  m["client_cpu_seconds_per_gib"], m["source_bytes"] / _images.MiB, m["source_bytes_vs_image"],
                  m["first_mib_seconds"], m["transfer_vs_rate"], m["tail_seconds"], m["line_cpu_seconds"],
                  m["load_average"]]
        lines.append("  ".join([kind.ljust(width)] + [_fmt(v).rjust(10) for v in values]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="image size (default 1024; at least 16)")
    parser.add_argument("--rtt", type=float, default=40.0, help="round trip time to the source in ms (default 40)")
    parser.add_argument("--rate", type=parse_rate, default=parse_rate("400mbit"),
                        help="capacity of the link to the source, each direction (default 400mbit)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each kind (medians; default 1)")
    parser.add_argument("--no-reset", action="store_true", help="skip the runs with a reset at 90%% of a layer")
    parser.add_argument("--commit", default="HEAD", help="benchmark reconciler/ as committed here (default HEAD)")
    parser.add_argument("--worktree", action="store_true", help="benchmark the uncommitted work tree instead")
    args = parser.parse_args(argv)
    if args.size_mib < 16:
        parser.error("--size-mib must be at least 16")
    for tool in (VENV_PYTHON, Path(shutil.which("docker-registry") or "/nonexistent"), Path(SKOPEO)):
        if not Path(tool).exists():
            parser.error(f"missing {tool}")
    args.baseline = None  # what Bench reads besides --commit / --worktree

    started = time.perf_counter()
    bench = Bench(args)
    log(f"image-syncer under test: {bench.main.code}")
    try:
        large = Large(bench, args)
        try:
            runs: dict[str, list[dict]] = {"raw GET through the line": []}
            runs |= {tool: [] for tool in TOOLS}
            runs |= {f"{tool}, one reset": [] for tool in TOOLS} if not args.no_reset else {}
            for _ in range(args.repeat):  # alternating, so that each kind sees the same machine
                runs["raw GET through the line"].append(large.floor())
                for tool in TOOLS:
                    runs[tool].append(large.copy(tool, reset=False))
                for tool in TOOLS if not args.no_reset else ():
                    runs[f"{tool}, one reset"].append(large.copy(tool, reset=True))
            image_bytes, largest, layers = large.image_bytes, large.largest, [b.size for b in large.manifest.layers]
        finally:
            large.close()
    finally:
        bench.close()

    floor_seconds = image_bytes / args.rate
    summary = summarise(runs, floor_seconds)
    head = (f"one image of {image_bytes / _images.MiB:.0f} MiB in {len(layers)} layers "
            f"({'+'.join(f'{size / _images.MiB:.0f}' for size in layers)} MiB), source at RTT {args.rtt:g} ms and "
            f"{args.rate * 8 / 1e6:g} Mbit/s; link floor = bytes / rate = {floor_seconds:.2f}s; "
            f"reset at {RESET_AT:.0%} of the {largest / _images.MiB:.0f} MiB layer; "
            f"{args.repeat} run(s) each (medians); image-syncer {bench.main.code[:10]}, {CPUS} CPUs")
    verdicts = {"syncer_vs_floor": summary["image-syncer"]["vs_floor"]}
    if not args.no_reset:
        verdicts["syncer_reset_source_bytes_vs_image"] = summary["image-syncer, one reset"]["source_bytes_vs_image"]
        verdicts["skopeo_reset_source_bytes_vs_image (for comparison)"] = (
            summary["skopeo, one reset"]["source_bytes_vs_image"])
    lines = [table(summary, head), "", "targets:"]
    for key, value in verdicts.items():
        target = TARGETS.get(key)
        lines.append(f"  {key:<52} {value:8.3f}" + (f"  (target <= {target:g})  "
                                                    + ("MET" if value <= target else "NOT MET") if target else ""))
    text = "\n".join(lines)
    print(text)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    skopeo_version = subprocess.run([SKOPEO, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    (out_dir / "large.json").write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": bench.main.code, "skopeo": skopeo_version,
        "cpus": CPUS, "args": vars(args), "image_bytes": image_bytes, "layer_bytes": layers,
        "reset_after_bytes": int(largest * RESET_AT), "floor_seconds": floor_seconds, "summary": summary,
        "runs": runs, "targets": {key: {"value": value, "target": TARGETS.get(key)} for key, value in verdicts.items()},
        "total_seconds": time.perf_counter() - started, "table": text,
    }, indent=2) + "\n")
    log(f"wrote {out_dir / 'large.json'} (total {time.perf_counter() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
