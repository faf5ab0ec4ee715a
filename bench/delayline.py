#!/usr/bin/env python3
"""A TCP delay line: a proxy on 127.0.0.1 that makes loopback look like a long, narrow link.

    python bench/delayline.py --upstream 127.0.0.1:5000 --rtt 40 [--rate 400mbit] [--reset-after BYTES]
    python bench/delayline.py --selftest [--rtt 40] [--rate 400mbit]    # prints, checks

Every byte is delayed by RTT/2 in each direction: bytes read at time t are
written at t + RTT/2, in order, with any number of chunks in flight (per
connection and direction, a queue of (due, bytes) drained by one writer that
sleeps until the head is due).  A new connection costs one round trip, as a
TCP handshake does: the upstream connect happens RTT/2 after the accept and the
client's first bytes reach upstream 1.5 RTT after it.  EOF (half-close) travels
like data; a reset or error on either side closes both.

``--rate`` (bytes per second, or e.g. ``400mbit``) makes each direction a link of
that capacity shared by all connections, as an access link is: a chunk read
reserves the link for its size / rate (a token bucket per direction, 20 ms of
the rate deep) and the next read of that connection waits until it has left, so a fast
sender meets TCP back-pressure, not a growing queue; the chunk is written RTT/2
after its last byte left.  Without it, bandwidth is loopback's.

``--reset-after BYTES`` cuts the first answer that passes BYTES bytes (the bytes
sent to the client since it last sent anything: one HTTP/1.1 response, headers
included): its first BYTES bytes are delivered, then both sides are closed with a
reset (SO_LINGER 0).  Once per delay line.

SIGUSR1 makes it print one JSON line of counters (bytes delivered each way,
connections, resets, its own CPU seconds); ``DelayLine.counters()`` asks for it.

Standard library only; run as its own process (``DelayLine``) so that its CPU
is neither the benchmark's nor the tool's under test.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

CHUNK = 256 * 1024
# Depth of a rated link's token bucket, in seconds of its rate (and at least a chunk): what an idle
# link may send at once, and what it catches up after the line's own process woke late (on a
# loaded machine, tens of ms), as a real link with data queued would never have fallen behind.
BUCKET_SECONDS = 0.02
# Chunks queued per connection and direction before reading pauses: far more than a
# loopback bandwidth-delay product, so it bounds memory, not throughput.
QUEUED_CHUNKS = 1024


def parse_rate(text: str) -> float:
    """Bytes per second from ``50000000``, ``50m`` or ``400mbit`` (k, m, g: powers of 1000)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)(bit)?", text.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (bytes per second, or e.g. 400mbit)")
    number, prefix, bits = match.groups()
    return float(number) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[prefix] / (8 if bits else 1)


def bucket_bytes(rate: float) -> float:
    """The depth of the token bucket of a link of ``rate`` bytes per second."""
    return max(CHUNK, rate * BUCKET_SECONDS)


class Link:
    """One direction of the line, shared by all its connections: RTT/2 of latency and, with a
    rate, that capacity."""

    def __init__(self, half: float, rate: float | None) -> None:
        self.half = half
        self.rate = rate
        self.free_at = 0.0  # when the link has sent every byte it accepted
        self.delivered = 0  # bytes written to the far side

    async def send(self, size: int, not_before: float) -> float:
        """Wait until ``size`` bytes have left; return when they are due at the far end (RTT/2
        later, and no sooner than ``not_before`` + RTT/2)."""
        now = asyncio.get_running_loop().time()
        if self.rate is None:
            return max(now, not_before) + self.half
        self.free_at = max(self.free_at, now - bucket_bytes(self.rate) / self.rate) + size / self.rate
        await asyncio.sleep(self.free_at - now)
        return max(self.free_at, not_before) + self.half


class Line:
    """What the connections of one delay line share: its two links, its fault, its counters."""

    def __init__(self, rtt: float, rate: float | None, reset_after: int | None) -> None:
        self.rtt = rtt
        self.upstream = Link(rtt / 2, rate)  # client -> upstream
        self.downstream = Link(rtt / 2, rate)  # upstream -> client
        self.reset_after = reset_after  # None once it has cut an answer
        self.connections = 0
        self.resets = 0

    def counters(self) -> dict[str, float]:
        return {"to_client": self.downstream.delivered, "to_upstream": self.upstream.delivered,
                "connections": self.connections, "resets": self.resets, "cpu_seconds": time.process_time()}


class _Cut(Exception):
    """The answer reached the line's reset point: both sides are to be reset."""


class _Connection:
    """One client's connection: counts the bytes of the answer under way, for the reset."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self.answer_bytes = 0

    def client_sent(self) -> None:
        self.answer_bytes = 0

    def cut(self, size: int) -> int | None:
        """How many of the next ``size`` bytes to the client go out before the reset; None: all,
        no reset."""
        self.answer_bytes += size
        limit = self.line.reset_after
        if limit is None or self.answer_bytes <= limit:
            return None
        self.line.reset_after = None
        self.line.resets += 1
        return size - (self.answer_bytes - limit)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link, not_before: float = 0.0,
                on_read: Callable[[], None] | None = None, cut: Callable[[int], int | None] | None = None) -> None:
    """Copy ``reader`` to ``writer`` through ``link``; ``on_read`` is told of every chunk read,
    ``cut`` may end the copy with ``_Cut`` after part of a chunk."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)
    loop = asyncio.get_running_loop()

    async def read() -> None:
        while True:
            data = await reader.read(CHUNK)
            if data and on_read is not None:
                on_read()
            await queue.put((await link.send(len(data), not_before), data))
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
            keep = cut(len(data)) if cut is not None else None
            if keep is not None:
                writer.transport.set_write_buffer_limits(0)  # drain() then waits for every byte
                data = data[:keep]
            writer.write(data)
            await writer.drain()
            link.delivered += len(data)
            if keep is not None:
                raise _Cut

    async with asyncio.TaskGroup() as group:
        group.create_task(read())
        group.create_task(write())


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (RST), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def serve(upstream: tuple[str, int], line: Line) -> None:
    """Listen on a free 127.0.0.1 port, printed on stdout, until killed."""

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        accepted = asyncio.get_running_loop().time()
        line.connections += 1
        connection = _Connection(line)
        writers = [client_writer]
        try:
            await asyncio.sleep(line.rtt / 2)  # the SYN on its way to the server
            upstream_reader, upstream_writer = await asyncio.open_connection(*upstream)
            writers.append(upstream_writer)
            async with asyncio.TaskGroup() as group:
                # the client may send as soon as the handshake's round trip is over
                group.create_task(_pipe(client_reader, upstream_writer, line.upstream, accepted + line.rtt,
                                        on_read=connection.client_sent))
                group.create_task(_pipe(upstream_reader, client_writer, line.downstream, cut=connection.cut))
        except* _Cut:
            for writer in writers:
                _reset(writer)
        except* OSError:
            pass  # connection refused, reset, broken pipe: close both sides
        finally:
            for writer in writers:
                writer.close()

    asyncio.get_running_loop().add_signal_handler(
        signal.SIGUSR1, lambda: print(json.dumps(line.counters()), flush=True))
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


class DelayLine:
    """A delay line process in front of ``upstream`` (``host:port``); ``host`` is its own address."""

    def __init__(self, upstream: str, rtt_ms: float, rate: float | None = None,
                 reset_after: int | None = None) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--upstream", upstream, "--rtt", str(rtt_ms)]
        argv += ["--rate", f"{rate:f}"] if rate else []
        argv += ["--reset-after", str(reset_after)] if reset_after is not None else []
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                      text=True, start_new_session=True)
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"delay line to {upstream} did not start")
        self.host = f"127.0.0.1:{int(line)}"
        self.url = f"http://{self.host}"

    def counters(self) -> dict[str, float]:
        """Bytes delivered each way (``to_client``, ``to_upstream``) since it started, ``connections``,
        ``resets`` and the line's own ``cpu_seconds``."""
        self._proc.send_signal(signal.SIGUSR1)
        return json.loads(self._proc.stdout.readline())

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", metavar="HOST:PORT")
    parser.add_argument("--rtt", type=float, default=40.0, help="round trip time in ms (default 40)")
    parser.add_argument("--rate", type=parse_rate, help="capacity of each direction, shared by all connections: "
                                                        "bytes per second, or e.g. 400mbit (default: loopback's)")
    parser.add_argument("--reset-after", type=int, metavar="BYTES",
                        help="reset the first answer that passes BYTES bytes, once")
    parser.add_argument("--selftest", action="store_true", help="measure a delay line of --rtt (and --rate) "
                                                                "and check it")
    args = parser.parse_args()
    if args.selftest:
        from _linecheck import selftest

        selftest(args.rtt, args.rate)
    elif args.upstream:
        host, _, port = args.upstream.rpartition(":")
        try:
            asyncio.run(serve((host, int(port)), Line(args.rtt / 1000, args.rate, args.reset_after)))
        except KeyboardInterrupt:
            pass
    else:
        parser.error("--upstream or --selftest")


if __name__ == "__main__":
    main()
