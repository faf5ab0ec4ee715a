"""The delay line's own check (``delayline.py --selftest``) and the bulk transfers it and
``tests/test_delayline.py`` measure a line with."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from delayline import CHUNK, DelayLine, probe


class Bulk:
    """What the receivers of a bulk transfer saw: seconds until the last one ended, bytes each got,
    how many ended with a reset; and the delay line's counters at the end (None without one)."""

    def __init__(self, seconds: float, received: list[int], resets: int, counters: dict | None) -> None:
        self.seconds, self.received, self.resets, self.counters = seconds, received, resets, counters


def bulk(size: int, connections: int = 1, rtt_ms: float | None = None, rate: float | None = None,
         reset_after: int | None = None) -> Bulk:
    """``connections`` clients at once each receive ``size`` bytes a local server sends on connect,
    directly (``rtt_ms`` None) or through a delay line of ``rtt_ms``, ``rate`` and ``reset_after``."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=connections)

    def send() -> None:
        for _ in range(connections):
            connection, _ = listener.accept()
            threading.Thread(target=send_one, args=(connection,)).start()

    def send_one(connection: socket.socket) -> None:
        with connection:
            try:
                connection.sendall(bytes(size))
            except OSError:
                pass  # reset by the delay line

    upstream = f"127.0.0.1:{listener.getsockname()[1]}"
    line = DelayLine(upstream, rtt_ms, rate, reset_after) if rtt_ms is not None else None
    received, resets = [0] * connections, 0

    def receive(i: int) -> None:
        nonlocal resets
        host, port = (line.host if line else upstream).split(":")
        with socket.create_connection((host, int(port))) as connection:
            try:
                while chunk := connection.recv(CHUNK):
                    received[i] += len(chunk)
            except ConnectionResetError:
                resets += 1

    acceptor = threading.Thread(target=send)
    acceptor.start()
    try:
        receivers = [threading.Thread(target=receive, args=(i,)) for i in range(connections)]
        started = time.perf_counter()
        for thread in receivers:
            thread.start()
        for thread in receivers:
            thread.join()
        elapsed = time.perf_counter() - started
        counters = line.counters() if line else None
    finally:
        acceptor.join()
        listener.close()
        if line:
            line.stop()
    return Bulk(elapsed, received, resets, counters)


def selftest(rtt_ms: float, rate: float | None) -> None:
    """Print (and check) the delays of a real registry's ``GET /v2/``, a 64 MiB transfer, and with
    ``rate``, one and two transfers sharing the cap and a reset."""
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
    plain, delayed = bulk(size).seconds, bulk(size, rtt_ms=rtt_ms).seconds
    print(f"64 MiB direct {plain * 1000:.0f} ms, via RTT={rtt_ms:g} ms {delayed * 1000:.0f} ms "
          f"(expect ~direct + {rtt_ms:g})")
    problems = [what for what, bad in (
        ("fresh GET", not 2 * rtt <= via[0] < 2 * rtt + 0.05),
        ("reused GET", not rtt <= via[1] < rtt + 0.05),
        ("bandwidth", delayed > plain + rtt + max(0.2, plain)),
    ) if bad]
    if rate:
        problems += _check_rate(size, rtt_ms, rate)
    if problems:
        raise SystemExit("selftest FAILED: " + ", ".join(problems))
    print("selftest OK")


def _check_rate(size: int, rtt_ms: float, rate: float) -> list[str]:
    """One and two transfers of ``size`` through a line of ``rate``: each within 3% of bytes / rate
    (plus the round trip); one cut at half its size: exactly that much received, then a reset."""
    problems = []
    for connections in (1, 2):
        seen = bulk(size, connections, rtt_ms, rate)
        floor = connections * size / rate + rtt_ms / 1000
        print(f"{connections} x 64 MiB via RTT={rtt_ms:g} ms at {rate * 8 / 1e6:g} Mbit/s: "
              f"{seen.seconds * 1000:.0f} ms = {seen.seconds / floor:.3f} x the floor ({floor * 1000:.0f} ms), "
              f"{connections * size / seen.seconds * 8 / 1e6:.0f} Mbit/s")
        if not 0.97 <= seen.seconds / floor <= 1.03 or seen.received != [size] * connections:
            problems.append(f"rate with {connections} connection(s)")
    cut = bulk(size, 1, rtt_ms, rate, reset_after=size // 2)
    print(f"reset after {size // 2} bytes: received {cut.received[0]}, resets seen {cut.resets}")
    if cut.received != [size // 2] or cut.resets != 1:
        problems.append("reset")
    return problems
