"""What the user sees while apply runs: a live display on a terminal, one line per image elsewhere."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from reconciler.apply import AppliedImage, ApplyObserver, Outcome
from reconciler.render import format_size


class _Lines:
    """CI logs: one line per image that did something, as it finishes."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def started(self, total: int) -> None:
        pass

    def image_done(self, image: AppliedImage) -> None:
        if image.outcome is not Outcome.UNCHANGED:
            detail = f": {image.message}" if image.message else ""
            self._console.print(f"  {image.outcome.value}: {image.target}{detail}", markup=False)

    def bytes_sent(self, count: int) -> None:
        pass


class _Live(_Lines):
    """A terminal: images done of total, bytes sent and the rate, updated in place."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(progress.console)
        self._progress = progress
        self._task = progress.add_task("apply", total=None, sent="")
        self._sent = 0
        self._started = time.monotonic()

    def started(self, total: int) -> None:
        self._progress.update(self._task, total=total)

    def image_done(self, image: AppliedImage) -> None:
        super().image_done(image)
        self._progress.advance(self._task)

    def bytes_sent(self, count: int) -> None:
        self._sent += count
        rate = self._sent / max(time.monotonic() - self._started, 1e-3)
        self._progress.update(self._task, sent=f"{format_size(self._sent)} at {format_size(rate)}/s")


@contextlib.contextmanager
def apply_progress(console: Console) -> Iterator[ApplyObserver]:
    if not console.is_terminal:
        yield _Lines(console)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("images  {task.fields[sent]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        yield _Live(progress)
