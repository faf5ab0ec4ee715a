"""Errors in the files a person edits, reported so they can go straight to the line."""

from __future__ import annotations

import os


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
