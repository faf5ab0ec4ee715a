"""Errors in the files a person edits, reported so they can go straight to the line."""

from __future__ import annotations

import os
import re

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
