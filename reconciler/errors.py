"""Errors in the files a person edits, reported so they can go straight to the line."""

from __future__ import annotations

import os
import re
import signal

MAX_QUOTED = 80
"""A value quoted in an error message is cut to this many characters: a 1 MiB source is no message."""
MAX_MESSAGE = 1000
"""Whatever a message holds unquoted, the line printed is cut to this many characters."""
# Quotes that open after a letter are apostrophes ("doesn't"), not values.
_QUOTED = re.compile(r"(?<!\w)'[^'\n]*'|(?<!\w)\"[^\"\n]*\"")


def shorten(text: str, limit: int = MAX_QUOTED) -> str:
    """``text``, or its start and ``…`` when longer than ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_and_count(lines: list[str]) -> str:
    """The first of several problems, and how many more: one line however many there are."""
    return lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")


def one_line(message: str) -> str:
    """An error message as the CLI prints it: one line, every quoted value cut short, bounded."""
    flat = " ".join(message.splitlines())
    return shorten(_QUOTED.sub(lambda quoted: quoted[0][0] + shorten(quoted[0][1:-1]) + quoted[0][0], flat),
                   MAX_MESSAGE)


class InputError(Exception):
    """Bad user input in a file: one line ``<file>:<line>: <entry>: <problem>``.

    The CLI prints it and exits 1; line and entry are left out when unknown.
    """

    def __init__(
        self,
        file: str | os.PathLike[str],
        problem: str,
        *,
        line: int | None = None,
        entry: str | None = None,
    ) -> None:
        location = f"{file}:{line}" if line is not None else str(file)
        message = ": ".join(part for part in (location, entry, problem) if part)
        super().__init__(" ".join(message.splitlines()))
        self.file = os.fspath(file)
        self.line = line
        self.entry = entry
        self.problem = problem


def internal_error(error: Exception) -> str:
    """A bug as one line: its type and message, cut short; the traceback is for ``--debug``."""
    described = shorten(" ".join(f"{type(error).__name__}: {error}".split()))
    return f"internal error: {described} (run with --debug for the traceback)"


class Interrupted(Exception):
    """Work abandoned because a stop was requested; the message says how far it got."""


class Stopped(BaseException):
    """A SIGINT or SIGTERM ended the command; the exit status is 128 + the signal's number.

    A BaseException, as KeyboardInterrupt is, so no ``except Exception`` takes it for a
    failure; and not a KeyboardInterrupt, which click would turn into its own Abort.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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

