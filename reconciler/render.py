"""Plans and reports as text for a terminal, markdown for a pull request, JSON for machines."""

from __future__ import annotations

from rich.text import Text

from reconciler.apply import Outcome, Report
from reconciler.plan import Action, Plan, PlannedImage

_SYMBOLS = {
    Action.CREATE: ("+", "green"),
    Action.UNCHANGED: ("=", "dim"),
    Action.CONFLICT: ("!", "red"),
    Action.SOURCE_MISSING: ("?", "red"),
    Action.ERROR: ("x", "red"),
}
_PROBLEM_STYLES = {
    Outcome.REFUSED: ("!", "red"),
    Outcome.FAILED: ("x", "red"),
    Outcome.INTERRUPTED: ("-", "yellow"),
}


def _short(digest: object) -> str:
    text = str(digest)
    return text[: len("sha256:") + 12]


def _summary_line(plan: Plan) -> str:
    summary = plan.summary
    line = f"Plan: {summary.create} to create, {summary.unchanged} unchanged, {summary.refused} refused."
    if summary.moved:
        line += f" {summary.moved} source tag(s) moved."
    return line


def _detail(image: PlannedImage) -> str:
    if image.action is Action.CREATE:
        pinned = "" if "@" in image.source else f"@{_short(image.digest)}"
        return f"copy {image.source}{pinned}"
    if image.action is Action.UNCHANGED:
        return f"holds {_short(image.digest)}"
    return f"{image.action.value}: {image.message}"


def plan_text(plan: Plan) -> Text:
    text = Text()
    for image in plan.images:
        symbol, style = _SYMBOLS[image.action]
        text.append(f"  {symbol} ", style=style)
        text.append(image.target, style="bold" if image.action is not Action.UNCHANGED else "dim")
        text.append(f"  {_detail(image)}\n", style=style if image.action.refused else "")
        if image.moved_to:
            text.append(
                f"    ~ warning: {image.source} now points to {_short(image.moved_to)}; "
                f"the locked {_short(image.digest)} is copied (run `image-syncer lock --upgrade` to follow it)\n",
                style="yellow",
            )
    if plan.images:
        text.append("\n")
    text.append(_summary_line(plan), style="bold")
    return text


def plan_markdown(plan: Plan) -> str:
    lines = [
        "### image-syncer plan",
        "",
        "| | Target | Source | Digest | Note |",
        "|---|---|---|---|---|",
    ]
    for image in plan.images:
        symbol = _SYMBOLS[image.action][0]
        note = image.action.value if image.action is not Action.CREATE else "create"
        if image.message:
            note += f": {image.message}"
        if image.moved_to:
            note += f" (warning: source tag moved to `{_short(image.moved_to)}`)"
        lines.append(
            f"| {symbol} | `{image.target}` | `{image.source}` | `{_short(image.digest)}` | {note.replace('|', '/')} |"
        )
    lines += ["", f"**{_summary_line(plan)}**", ""]
    return "\n".join(lines)


def report_text(report: Report) -> Text:
    text = Text()
    for image in report.images:
        if image.outcome not in _PROBLEM_STYLES:
            continue  # the progress lines listed it; only what went wrong is repeated here
        symbol, style = _PROBLEM_STYLES[image.outcome]
        text.append(f"  {symbol} {image.target}", style=style)
        text.append(f"  {image.outcome.value}" + (f": {image.message}" if image.message else "") + "\n")
    stats = report.stats
    counts = (f"Apply: {report.count(Outcome.COPIED)} copied, {report.count(Outcome.UNCHANGED)} unchanged, "
              f"{report.count(Outcome.REFUSED)} refused, {report.count(Outcome.FAILED)} failed")
    if interrupted := report.count(Outcome.INTERRUPTED):
        counts += f", {interrupted} interrupted"
    text.append(
        f"{counts} ({stats.blobs_uploaded} blobs uploaded, {stats.blobs_mounted} mounted, "
        f"{stats.blobs_present} already there; {format_size(stats.bytes_uploaded)} sent).",
        style="bold",
    )
    return text


def format_size(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"
