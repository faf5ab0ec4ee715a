"""How many requests one registry gets at once, found out as TCP finds its window (AIMD).

A fixed number is wrong both ways: over a 40 ms round trip 8 requests in flight
leave most of the time waiting, while a registry that sheds load (429, 503) or
queues (latency rising) wants fewer. So the limit starts at ``INITIAL``, doubles
every round of answers (slow start) until the first sign of overload, then grows
by one per round; any sign of overload halves it, once per round (answers to
requests sent before the cut say nothing about the new limit). ``--max-requests``
is the ceiling, never exceeded.

Signs of overload: a 429 or 503, a connection lost or timed out, and a smoothed
time to answer above ``LATENCY_FACTOR`` times the fastest seen plus
``LATENCY_TOLERANCE`` (a queue building up in front of the registry), judged
again only after a round of answers has come in since the last cut.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import math
import time
from collections.abc import Callable, Iterator

log = logging.getLogger("reconciler.registry")

INITIAL = 16
LATENCY_FACTOR = 3
LATENCY_TOLERANCE = 0.1
"""Seconds of queueing accepted on top; requests differ (a HEAD, a manifest PUT the registry checks)."""
_SMOOTHING = 0.2
OVERLOAD_STATUSES = frozenset({429, 503})

_lending = contextvars.ContextVar("lending", default=False)


@contextlib.contextmanager
def lending_slot() -> Iterator[None]:
    """Requests sent inside wait only for the ceiling, not the adaptive limit.

    For an upload whose body streams from a source answer that already holds a slot:
    if it waited for the limit of the same registry (a copy within one registry), a
    cut limit could leave every holder waiting for itself. The copier caps transfers
    at half the ceiling, so the ceiling always has room for them.
    """
    token = _lending.set(True)
    try:
        yield
    finally:
        _lending.reset(token)


class Slot:
    """One request's place in flight; tell it how the answer went, then release it."""

    __slots__ = ("_limit", "_epoch", "_number", "_started", "_released")

    def __init__(self, limit: AdaptiveLimit, epoch: int, number: int, started: float) -> None:
        self._limit = limit
        self._epoch = epoch
        self._number = number
        self._started = started
        self._released = False

    def answered(self, status: int, timed: bool = True) -> None:
        """``timed``: the wait measured the registry, not the time to send a body."""
        latency = self._limit.clock() - self._started if timed else None
        self._limit._on_answer(self._epoch, self._number, status, latency)

    def lost(self) -> None:
        """The connection broke or timed out."""
        self._limit._cut(self._epoch, "connection lost")

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limit._release()


class AdaptiveLimit:
    def __init__(self, ceiling: int, name: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(min(self.ceiling, INITIAL))
        self.name = name
        self.clock = clock
        self.in_flight = 0
        self.peak = 0
        self.cuts = 0
        self._epoch = 0
        self._slow_start = True
        self._fastest = math.inf
        self._smoothed: float | None = None
        self._samples = 0
        self._granted = 0
        self._last_full = 0
        """The number of the last request granted while the limit was all used, or that had to wait."""
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._lenders: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> Slot:
        lending = _lending.get()
        queue = self._lenders if lending else self._waiting
        if not queue and self.in_flight < self._room(lending):
            self._take()
        else:
            self._last_full = self._granted + 1
            waiter = asyncio.get_running_loop().create_future()
            queue.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # granted as we were cancelled: give it back
                else:
                    with contextlib.suppress(ValueError):
                        queue.remove(waiter)
                raise
        self._granted += 1
        if self.in_flight >= int(self.limit):
            self._last_full = self._granted
        return Slot(self, self._epoch, self._granted, self.clock())

    def _room(self, lending: bool) -> int:
        """A lender's source answer may hold this registry's only slot (a ceiling of 1)."""
        return max(2, self.ceiling) if lending else int(self.limit)

    def _take(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        for queue, lending in ((self._lenders, True), (self._waiting, False)):
            while queue and self.in_flight < self._room(lending):
                waiter = queue.popleft()
                if not waiter.done():
                    self._take()
                    waiter.set_result(None)

    def _on_answer(self, epoch: int, number: int, status: int, latency: float | None) -> None:
        if status in OVERLOAD_STATUSES:
            self._cut(epoch, f"HTTP {status}")
            return
        if latency is not None:
            self._fastest = min(self._fastest, latency)
            self._smoothed = latency if self._smoothed is None else (
                self._smoothed + _SMOOTHING * (latency - self._smoothed))
            self._samples += 1
            if self._samples > self.limit and self._smoothed > LATENCY_FACTOR * self._fastest + LATENCY_TOLERANCE:
                self._cut(epoch, f"answers slowed to {self._smoothed * 1000:.0f} ms")
                return
        # Grow only if the limit held requests back while this one was out: an idle limit proves nothing.
        if self._last_full >= number:
            self.limit = min(self.ceiling, self.limit + (1 if self._slow_start else 1 / self.limit))
            self._wake()

    def _cut(self, epoch: int, why: str) -> None:
        if epoch != self._epoch:
            return
        self._epoch += 1
        self.cuts += 1
        self._slow_start = False
        self._smoothed = None
        self._samples = 0
        self.limit = max(1.0, self.limit / 2)
        log.debug("%s: %s; now up to %d requests at once", self.name, why, int(self.limit))
