#!/usr/bin/env python3
"""A TCP delay line: a proxy on 127.0.0.1 that makes loopback look like a long link.

    python bench/delayline.py --upstream 127.0.0.1:5000 --rtt 40   # prints the port it listens on
    python bench/delayline.py --selftest [--rtt 40]

Every byte is delayed by RTT/2 in each direction without capping bandwidth:
bytes read at time t are written at t + RTT/2, in order, with any number of
chunks in flight (per direction, a queue of (due, bytes) drained by one writer
that sleeps until the head is due).  A new connection costs one round trip, as
a TCP handshake does: the upstream connect happens RTT/2 after the accept and
the client's first bytes reach upstream 1.5 RTT after it.  EOF (half-close)
travels like data; a reset or error on either side closes both.

Standard library only; run as its own process (``DelayLine``) so that its CPU
is neither the benchmark's nor the tool's under test.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

CHUNK = 256 * 1024
# Chunks queued per direction before reading pauses: far more than a loopback
# bandwidth-delay product, so it bounds memory, not throughput.
QUEUED_CHUNKS = 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, half: float, not_before: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk (and EOF) RTT/2 after it was read, and not
    before ``not_before`` + RTT/2."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)

    async def read() -> None:
        while True:
            data = await reader.read(CHUNK)
            await queue.put((max(loop.time(), not_before) + half, data))
            if not data:
                return

    async def write() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    async with asyncio.TaskGroup() as group:
        group.create_task(read())
        group.create_task(write())


async def serve(upstream: tuple[str, int], rtt: float) -> None:
    """Listen on a free 127.0.0.1 port, printed on stdout, until killed."""
    half = rtt / 2

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        accepted = asyncio.get_running_loop().time()
        writers = [client_writer]
        try:
            await asyncio.sleep(half)  # the SYN on its way to the server
            upstream_reader, upstream_writer = await asyncio.open_connection(*upstream)
            writers.append(upstream_writer)
            async with asyncio.TaskGroup() as group:
                # the client may send as soon as the handshake's round trip is over
                group.create_task(_pipe(client_reader, upstream_writer, half, accepted + rtt))
                group.create_task(_pipe(upstream_reader, client_writer, half, 0.0))
        except* OSError:
            pass  # connection refused, reset, broken pipe: close both sides
        finally:
            for writer in writers:
                writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


class DelayLine:
    """A delay line process in front of ``upstream`` (``host:port``); ``host`` is its own address."""

    def __init__(self, upstream: str, rtt_ms: float) -> None:
        self._proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--upstream", upstream,
                                       "--rtt", str(rtt_ms)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                      text=True, start_new_session=True)
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"delay line to {upstream} did not start")
        self.host = f"127.0.0.1:{int(line)}"
        self.url = f"http://{self.host}"

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        self._proc.stdout.close()


def probe(host: str) -> tuple[float, float]:
    """Seconds of one ``GET /v2/`` on a fresh connection (about 2 RTT through a delay line:
    handshake + request) and of a second one on the same connection (about 1 RTT)."""
    connection = http.client.HTTPConnection(host, timeout=30)
    try:
        seconds = []
        for _ in range(2):
            started = time.perf_counter()
            connection.request("GET", "/v2/")
            connection.getresponse().read()
            seconds.append(time.perf_counter() - started)
        return seconds[0], seconds[1]
    finally:
        connection.close()


def _bulk_seconds(size: int, via_rtt_ms: float | None) -> float:
    """Seconds to receive ``size`` bytes a local server sends on connect, directly or through a
    delay line of ``via_rtt_ms``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def send() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.sendall(bytes(size))

    sender = threading.Thread(target=send)
    sender.start()
    upstream = f"127.0.0.1:{listener.getsockname()[1]}"
    line = DelayLine(upstream, via_rtt_ms) if via_rtt_ms is not None else None
    try:
        host, port = (line.host if line else upstream).split(":")
        started = time.perf_counter()
        received = 0
        with socket.create_connection((host, int(port))) as connection:
            while chunk := connection.recv(CHUNK):
                received += len(chunk)
        elapsed = time.perf_counter() - started
    finally:
        sender.join()
        listener.close()
        if line:
            line.stop()
    if received != size:
        raise RuntimeError(f"bulk transfer: received {received} of {size} bytes")
    return elapsed


def selftest(rtt_ms: float) -> None:
    """Print (and check) the delays of a real registry's ``GET /v2/`` and a 64 MiB transfer."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import tempfile

    from _registry import start_registry

    rtt = rtt_ms / 1000
    with tempfile.TemporaryDirectory(prefix="delayline-selftest-") as tmp:
        registry = start_registry("selftest", Path(tmp), rtt_ms)
        try:
            direct, via = probe(registry.host), probe(registry.front_host)
        finally:
            registry.stop()
    print(f"GET /v2/ direct: fresh {direct[0] * 1000:.1f} ms, reused {direct[1] * 1000:.1f} ms")
    print(f"GET /v2/ via RTT={rtt_ms:g} ms: fresh {via[0] * 1000:.1f} ms (expect ~{2 * rtt_ms:g}), "
          f"reused {via[1] * 1000:.1f} ms (expect ~{rtt_ms:g})")
    size = 64 * 1024 * 1024
    plain, delayed = _bulk_seconds(size, None), _bulk_seconds(size, rtt_ms)
    print(f"64 MiB direct {plain * 1000:.0f} ms, via RTT={rtt_ms:g} ms {delayed * 1000:.0f} ms "
          f"(expect ~direct + {rtt_ms:g})")
    problems = [what for what, bad in (
        ("fresh GET", not 2 * rtt <= via[0] < 2 * rtt + 0.05),
        ("reused GET", not rtt <= via[1] < rtt + 0.05),
        ("bandwidth", delayed > plain + rtt + max(0.2, plain)),
    ) if bad]
    if problems:
        raise SystemExit("selftest FAILED: " + ", ".join(problems))
    print("selftest OK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", metavar="HOST:PORT")
    parser.add_argument("--rtt", type=float, default=40.0, help="round trip time in ms (default 40)")
    parser.add_argument("--selftest", action="store_true", help="measure a delay line of --rtt and check it")
    args = parser.parse_args()
    if args.selftest:
        selftest(args.rtt)
    elif args.upstream:
        host, _, port = args.upstream.rpartition(":")
        try:
            asyncio.run(serve((host, int(port)), args.rtt / 1000))
        except KeyboardInterrupt:
            pass
    else:
        parser.error("--upstream or --selftest")


if __name__ == "__main__":
    main()
