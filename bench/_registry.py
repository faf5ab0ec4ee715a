"""Local ``docker-registry serve`` processes for the benchmark.

Each registry listens on a free 127.0.0.1 port, keeps its storage in a private
temporary directory and writes its access log (one line per HTTP request) to
``registry.log`` there, which is how the benchmark counts requests.  With an
RTT, the tools reach it through a delay line (``delayline.py``) at ``front_host``.
Independent of ``reconciler`` and of ``tests/``.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml
from delayline import DelayLine

_live: set[Registry] = set()

_ACCESS = re.compile(rb'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3}) ')
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@atexit.register
def _stop_leftovers() -> None:
    for registry in list(_live):
        registry.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """One running registry; ``host`` is ``127.0.0.1:PORT``; ``front_host`` is where the tools
    reach it: a delay line of ``rtt_ms`` in front of it, or ``host`` itself for RTT 0."""

    def __init__(self, name: str, parent: Path, rtt_ms: float = 0.0) -> None:
        self.name = name
        self.rtt_ms = rtt_ms
        self.delay_line: DelayLine | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir()
        self.log_file = self.workdir / "registry.log"
        self.port = 0
        self._proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def front_host(self) -> str:
        return self.delay_line.host if self.delay_line else self.host

    @property
    def front_url(self) -> str:
        return f"http://{self.front_host}"

    def start(self, timeout: float = 20.0) -> Registry:
        for _attempt in range(3):
            self.port = free_port()
            config = {
                "version": 0.1,
                "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": False}},
                "storage": {
                    "filesystem": {"rootdirectory": str(self.data_dir)},
                    "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}},
                },
                "http": {"addr": self.host, "secret": f"bench-{self.name}"},
            }
            config_file = self.workdir / "config.yml"
            config_file.write_text(yaml.safe_dump(config, sort_keys=False))
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            env["OTEL_TRACES_EXPORTER"] = "none"
            with open(self.log_file, "ab") as log:
                self._proc = subprocess.Popen(
                    ["docker-registry", "serve", str(config_file)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.workdir, env=env, start_new_session=True,
                )
            _live.add(self)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._proc.poll() is None:
                try:
                    if httpx.get(f"{self.url}/v2/", timeout=2).status_code == 200:
                        if self.rtt_ms:
                            self.delay_line = DelayLine(self.host, self.rtt_ms)
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            tail = self.log_file.read_text(errors="replace")[-2000:]
            self._kill()
            if "address already in use" not in tail:
                raise RuntimeError(f"registry {self.name} did not start:\n{tail}")
        raise RuntimeError(f"registry {self.name}: no free port")

    def _kill(self) -> None:
        _live.discard(self)
        line, self.delay_line = self.delay_line, None
        if line is not None:
            line.stop()
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop(self, remove: bool = True) -> None:
        self._kill()
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def cpu_seconds(self) -> float:
        """CPU time (user + sys, all threads) the running registry process has used so far.

        ``utime`` and ``stime`` are fields 14 and 15 of ``/proc/<pid>/stat``, in clock ticks.
        """
        if self._proc is None:
            raise RuntimeError(f"registry {self.name} is not running")
        stat = Path(f"/proc/{self._proc.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3 (the name may hold spaces)
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    # ------------------------------------------------------------ access log
    def log_offset(self) -> int:
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def requests_since(self, offset: int, settle: float = 0.2) -> Counter:
        """Requests logged after ``offset``, counted by method (plus ``total``)."""
        time.sleep(settle)  # the access log is written after the response
        with open(self.log_file, "rb") as f:
            f.seek(offset)
            data = f.read()
        counts: Counter = Counter()
        for match in _ACCESS.finditer(data):
            counts[match.group(1).decode()] += 1
            counts["total"] += 1
        return counts


def start_registry(name: str, parent: Path, rtt_ms: float = 0.0) -> Registry:
    return Registry(name, parent, rtt_ms).start()
