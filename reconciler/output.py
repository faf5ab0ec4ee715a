"""Where results, errors and logs go: stdout and stderr (rich consoles, never reading rich
markup in what they print), GitHub's step summary, and the log handler a run uses."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text
from typer._click.exceptions import UsageError  # click, as typer bundles it

from reconciler import compat
from reconciler.arguments import PlanFormat
from reconciler.errors import one_line
from reconciler.markdown import COMMENT_BYTES, SUMMARY_BYTES, Document, Room

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """Expected failures: one red line, never read as rich markup (paths may hold brackets)."""
    stderr.print(f"error: {one_line(message)}", style="red", markup=False)


def print_usage_error(error: UsageError, args: Sequence[str]) -> None:
    """click's message as our one line, instead of its usage text in a box."""
    print_error(error.format_message())
    if error.ctx is not None:
        command = error.ctx.command_path
    else:  # a flag's missing value is found before the subcommand has a context
        command = " ".join(["image-syncer", *[arg for arg in args if arg in compat.COMMANDS][:1]])
    stderr.print(f"Try '{command} -h' for help.", markup=False)


def setup_logging(debug: bool) -> None:
    """Warnings and our own info lines on stderr: plain lines in CI, rich ones on a terminal."""
    if stderr.is_terminal:
        handler: logging.Handler = RichHandler(console=stderr, show_time=False, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        # CI logs: one plain line per message, never wrapped at a guessed width.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    # Only our own loggers go below WARNING: aiohttp's debug output is not ours to vouch for.
    logging.getLogger("reconciler").setLevel(logging.DEBUG if debug else logging.INFO)


def to_step_summary(markdown: Document) -> None:
    """In GitHub Actions, what is appended to $GITHUB_STEP_SUMMARY shows on the run's page."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as summary:
            summary.write(markdown.fit(Room(SUMMARY_BYTES)) + "\n")
    except OSError as error:
        logging.getLogger("reconciler").warning("GITHUB_STEP_SUMMARY %s: cannot append: %s", path,
                                                error.strerror or error)


def comment_room() -> Room:
    """Markdown on stdout is for a pull request: a comment's room, pointing to the run's fuller job summary."""
    if not os.environ.get("GITHUB_STEP_SUMMARY"):
        return Room(COMMENT_BYTES)
    server, repository, run = (os.environ.get(name) for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY",
                                                                 "GITHUB_RUN_ID"))
    if server and repository and run:
        return Room(COMMENT_BYTES, f"[this run's job summary]({server}/{repository}/actions/runs/{run})")
    return Room(COMMENT_BYTES, "this run's job summary")


def print_as(output_format: PlanFormat, *, json_text: str, markdown: Document, text: Text) -> None:
    """The chosen rendering on stdout; the markdown one also goes to the step summary."""
    to_step_summary(markdown)
    if output_format is PlanFormat.json:
        stdout.out(json_text, end="")
    elif output_format is PlanFormat.markdown:
        stdout.out(markdown.fit(comment_room()), end="")
    else:
        stdout.print(text)
