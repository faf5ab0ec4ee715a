"""The event loop, signals and cancellation: how a SIGINT or SIGTERM (Ctrl-C, CI cancelling a job) stops a run.

Outside the event loop a signal is only noted, and acted on at the next safe point; inside
it, the loop's handler cancels the work, or first asks it to wind down (``Interruption``).
Either way the command ends with ``Stopped``, which ``reconciler.__main__`` reports.

``__main__`` imports this module before anything else, to note signals from the very start,
so asyncio and logging are imported only by the functions that use them: asyncio's import
alone is a tenth of the start-up, and a signal then would not be noted.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Stopped(BaseException):
    """A SIGINT or SIGTERM ended the command; the exit status is 128 + the signal's number.

    A BaseException, as KeyboardInterrupt is, so no ``except Exception`` takes it for a
    failure; and not a KeyboardInterrupt, which click would turn into its own Abort.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupted(Exception):
    """Work abandoned because a stop was requested; the message says how far it got."""


def stop_in(error: BaseException) -> Stopped | None:
    """The signal behind ``error``: Python 3.11 wraps one raised while a class is built
    (during an import, say) in a RuntimeError."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, Stopped):
            return seen
        if isinstance(seen, KeyboardInterrupt):
            return Stopped(signal.SIGINT)
        seen = seen.__cause__ or seen.__context__
    return None


_noted_signals: list[int] = []


def handled_signals() -> list[int]:
    """SIGINT and SIGTERM, but not one ignored when the program started (a background job's
    SIGINT, nohup): POSIX asks that it stays ignored."""
    return [signum for signum in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(signum) is not signal.SIG_IGN]


def note_signals() -> None:
    """Outside the event loop a signal is only noted, and acted on at the next safe point
    (``stop_if_signalled``): raised from its handler, it could land in a weakref callback or
    a ``__del__`` (every import's module lock has one), where Python prints it and drops it."""
    for signum in handled_signals():
        signal.signal(signum, _note)


def _note(signum: int, _frame: object) -> None:
    _noted_signals.append(signum)


def stop_if_signalled() -> None:
    """Raise Stopped for the first signal noted, if any."""
    if _noted_signals:
        raise Stopped(_noted_signals[0])


class Interruption:
    """A stop asked for by a signal (CI cancelling a job, Ctrl-C).

    After it no image starts, and whatever an image is reading or copying is abandoned at
    once, before its tag; only a tag push already sent is given time to finish (the
    request timeout), so every tag is either the locked content or untouched, and the
    report says which images were not done.
    """

    def __init__(self) -> None:
        import asyncio

        self.signal: signal.Signals | None = None
        self._requested = asyncio.Event()

    def request(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum)
        self._requested.set()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    async def run(self, work: Coroutine[Any, Any, T], stopped: str, grace: float = 0.0) -> T:
        """``work``'s result. Once a stop is requested, ``work`` is not begun, or is given
        ``grace`` seconds more (a tag push already sent, so that the report can say whether
        the tag was pushed) and then abandoned: Interrupted(``stopped``)."""
        import asyncio

        if self.requested:
            work.close()
            raise Interrupted(stopped)
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._requested.wait())
        try:
            await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and grace:
                await asyncio.wait((task,), timeout=grace)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise Interrupted(stopped)
        return task.result()


def run(work: Callable[[], Awaitable[T]], interruption: Interruption | None = None) -> T:
    """Run a coroutine; what asyncio reports of tasks nobody awaited goes to the debug log, never the user.

    SIGINT and SIGTERM stop the work: with an ``interruption`` the first one asks it to
    wind down (apply: every read abandoned at once, no new image, no tag on an incomplete
    one, only a tag push already sent seen through, then the report; Interrupted when it
    stopped before there was one), a second one, or any without, cancels it at once. The
    loop's handlers are in place before the loop runs anything: Python's own handler would
    raise inside whatever callback was running, and asyncio hands such an exception to its
    exception handler, so the signal would be lost. Outside the loop a signal is noted
    (``note_signals``) and stops the command here, or once the command is done.
    """
    import asyncio
    import logging

    def log_unawaited_failure(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        logging.getLogger("reconciler").debug("asyncio: %s", context["message"], exc_info=context.get("exception"))

    received: list[int] = []
    running: list[asyncio.Task[T]] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if interruption is not None and len(received) == 1:
            interruption.request(signum)
        elif running:
            running[0].cancel()

    async def guarded() -> T:
        running.append(asyncio.current_task())
        try:
            stop_if_signalled()  # noted before the loop's handlers were in place
            if received and (interruption is None or len(received) > 1):
                raise asyncio.CancelledError  # a signal came before the work began
            return await work()
        except (asyncio.CancelledError, Interrupted):
            if received:
                raise Stopped(received[0]) from None
            raise

    stop_if_signalled()
    handled = handled_signals()
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        loop.set_exception_handler(log_unawaited_failure)
        for signum in handled:
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return runner.run(guarded())
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
            note_signals()  # removing the loop's handlers restored Python's defaults

