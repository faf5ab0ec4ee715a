"""Plans, apply reports and verifications as text for a terminal, markdown for a pull request
and JSON for machines (schemas/: the plan's is the saved plan's format, planfile.py)."""

from __future__ import annotations

import json

import attrs
from rich.text import Text

from reconciler import documents, planfile
from reconciler.apply import AppliedImage, Outcome, Report
from reconciler.oci.reference import Reference
from reconciler.plan import Action, Plan, PlannedImage
from reconciler.registry.copy import CopyStats
from reconciler.registry.ratelimit import registry_name
from reconciler.shard import Shard
from reconciler.verify import Status, VerifiedImage, Verification, VerifySummary

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
    Outcome.DEFERRED: (">", "yellow"),
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


def _pulls_lines(plan: Plan) -> list[tuple[str, bool]]:
    """Per source with a pull limit: what applying would pull of it, and whether that fits."""
    lines = []
    for pulls in plan.pulls:
        short = pulls.needed > pulls.remaining
        line = (f"{registry_name(pulls.registry)}: applying pulls up to {pulls.needed} manifest(s); "
                f"{pulls.remaining} of {pulls.limit} pulls left")
        lines.append((line + (": apply copies what fits, in lock order, and defers the rest." if short else "."),
                      short))
    return lines


def _detail(image: PlannedImage) -> str:
    if image.action is Action.CREATE:
        pinned = "" if image.locked.source.digest else f"@{_short(image.locked.digest)}"
        only = f" ({', '.join(image.locked.subset.platforms)} only)" if image.locked.subset else ""
        return f"copy {image.locked.source.as_written}{pinned}{only}{_with_referrers(image)}"
    if image.action is Action.UNCHANGED:
        return f"holds {_short(image.locked.pushed_digest)}"
    return f"{image.action.value}: {image.message}"


def _with_referrers(image: PlannedImage) -> str:
    count = len(image.locked.referrers)
    return f" with {count} referrer{'s' if count != 1 else ''}" if count else ""


_REVIEW_ORDER = {action: rank for rank, action in enumerate(
    (Action.ERROR, Action.CONFLICT, Action.SOURCE_MISSING, Action.CREATE, Action.UNCHANGED)
)}


def _noted(image: PlannedImage) -> bool:
    return bool(image.moved_to or image.new_referrers)


def _for_review(plan: Plan) -> tuple[list[PlannedImage], list[PlannedImage]]:
    """What needs a look (refusals, creates, moved source tags) in that order, and the unchanged rest.

    Each part is sorted by target, so the same plan always reads the same, byte for byte.
    """
    looks = [image for image in plan.images if image.action is not Action.UNCHANGED or _noted(image)]
    rest = [image for image in plan.images if image.action is Action.UNCHANGED and not _noted(image)]
    looks.sort(key=lambda image: (_REVIEW_ORDER[image.action], str(image.locked.target)))
    rest.sort(key=lambda image: str(image.locked.target))
    return looks, rest


def _new_referrers_note(image: PlannedImage) -> str:
    count = len(image.new_referrers)
    return (f"{count} referrer{'s' if count != 1 else ''} upstream that the lock does not pin "
            f"({', '.join(sorted({r.artifact_type or r.media_type for r in image.new_referrers}))}); "
            "`image-syncer lock --upgrade` pins them")


def _moved_warning(image: PlannedImage) -> str:
    return (f"{image.locked.source.as_written} now points to {_short(image.moved_to)}; "
            f"the locked {_short(image.locked.digest)} is what applies (`image-syncer lock --upgrade` follows the tag)")


def plan_text(plan: Plan, verbose: bool = False) -> Text:
    """Changes first; the unchanged as one count line unless ``verbose``."""
    looks, rest = _for_review(plan)
    text = Text()
    for image in looks + (rest if verbose else []):
        symbol, style = _SYMBOLS[image.action]
        text.append(f"  {symbol} ", style=style)
        text.append(str(image.locked.target), style="bold" if image.action is not Action.UNCHANGED else "dim")
        text.append(f"  {_detail(image)}\n", style=style if image.action.refused else "")
        if image.moved_to:
            text.append(f"    ~ warning: {_moved_warning(image)}\n", style="yellow")
        if image.new_referrers:
            text.append(f"    ~ note: {_new_referrers_note(image)}\n", style="yellow")
    if rest and not verbose:
        text.append(f"  = {len(rest)} unchanged (--verbose lists them)\n", style="dim")
    if plan.images:
        text.append("\n")
    for line, short in _pulls_lines(plan):
        text.append(f"{line}\n", style="yellow" if short else "")
    text.append(_summary_line(plan), style="bold")
    return text


PLAN_MARKER = "<!-- image-syncer plan -->"
"""The first line of the markdown plan: a bot finds its earlier comment by it and updates that one."""


def plan_markdown(plan: Plan) -> str:
    """For a pull request: the summary first, then only what needs a look; the unchanged folded away."""
    looks, rest = _for_review(plan)
    summary = plan.summary
    headline = f"{summary.create} to create · {summary.refused} refused · {summary.unchanged} unchanged"
    if summary.moved:
        headline += f" · {summary.moved} source tag(s) moved"
    lines = [PLAN_MARKER, "### image-syncer plan", "", f"**{headline}**", ""]
    lines += [f"{'⚠️ ' if short else ''}{line}" for line, short in _pulls_lines(plan)] + ([""] if plan.pulls else [])
    if looks:
        lines += ["| | Action | Target | Source | Digest | Platforms | Note |", "|---|---|---|---|---|---|---|"]
        for image in looks:
            symbol = _SYMBOLS[image.action][0]
            lines.append(_row(symbol, image.action.value + _with_referrers(image), f"`{image.locked.target}`",
                              f"`{image.locked.source.as_written}`",
                              f"`{_short(image.locked.pushed_digest)}`",
                              ", ".join(image.locked.pushed_platforms) or "–",
                              _review_note(image)))
        lines.append("")
    lines += _folded(f"{len(rest)} unchanged", ["Target", "Digest"],
                     [(f"`{image.locked.target}`", f"`{_short(image.locked.pushed_digest)}`") for image in rest])
    return _document(lines)


def _review_note(image: PlannedImage) -> str:
    notes = []
    if image.action is Action.CONFLICT:
        notes.append(f"the target holds `{_short(image.target_digest)}`, "
                     f"the lock wants `{_short(image.locked.pushed_digest)}`: "
                     "choose another target tag for this entry, or remove it")
    elif image.action.refused:
        notes.append(image.message or "")
    if image.moved_to:
        notes.append(f"warning: {_moved_warning(image)}")
    if image.locked.rule and image.action is Action.CREATE:
        notes.append(f"tag rule {image.locked.rule}")
    if image.new_referrers:
        notes.append(f"note: {_new_referrers_note(image)}")
    return "; ".join(notes)


def _row(*cells: str) -> str:
    return "| " + " | ".join(" ".join(cell.replace("|", "\\|").split()) for cell in cells) + " |"


def _folded(summary: str, header: list[str], rows: list[tuple[str, ...]]) -> list[str]:
    """A <details> block of ``rows`` (nothing when there are none)."""
    if not rows:
        return []
    return [f"<details><summary>{summary}</summary>", "", _row(*header), "|" + "---|" * len(header),
            *(_row(*row) for row in rows), "", "</details>", ""]


def _report_counts(report: Report) -> str:
    counts = (f"{report.count(Outcome.COPIED)} copied, {report.count(Outcome.UNCHANGED)} unchanged, "
              f"{report.count(Outcome.REFUSED)} refused, {report.count(Outcome.FAILED)} failed")
    for outcome in (Outcome.DEFERRED, Outcome.INTERRUPTED):
        if count := report.count(outcome):
            counts += f", {count} {outcome.value}"
    return counts


def _transfer_summary(report: Report) -> str:
    stats = report.stats
    return (f"{stats.blobs_uploaded} blobs uploaded, {stats.blobs_mounted} mounted, "
            f"{stats.blobs_present} already there; {format_size(stats.bytes_uploaded)} sent")


def _problem_line(text: Text, symbol: str, style: str, target: Reference, what: str, message: str | None) -> None:
    text.append(f"  {symbol} {target}", style=style)
    text.append(f"  {what}" + (f": {message}" if message else "") + "\n")


def _markdown_outcomes(
    title: str, counts: str, header: tuple[str, str], table: list[tuple[str, str, str, str, str]],
    folded: str, rest: list[tuple[Reference, object]],
) -> str:
    """A heading, the counts, a table of what needs a look (``header``: its outcome and digest columns), the rest folded."""
    lines = [f"### {title}", "", counts, ""]
    if table:
        lines += [f"| | {header[0]} | Target | {header[1]} | Note |", "|---|---|---|---|---|",
                  *(_row(*row) for row in table), ""]
    lines += _folded(folded, ["Target", "Digest"], [(f"`{target}`", f"`{_short(digest)}`") for target, digest in rest])
    return _document(lines)


def report_text(report: Report, command: str = "apply") -> Text:
    text = Text()
    for image in report.images:
        if image.outcome in _PROBLEM_STYLES:  # the progress lines listed the rest
            symbol, style = _PROBLEM_STYLES[image.outcome]
            _problem_line(text, symbol, style, image.target, image.outcome.value, image.message)
    text.append(f"{command.capitalize()}: {_report_counts(report)} ({_transfer_summary(report)}).", style="bold")
    return text


_REPORT_ORDER = {outcome: rank for rank, outcome in enumerate(
    (Outcome.FAILED, Outcome.REFUSED, Outcome.DEFERRED, Outcome.INTERRUPTED, Outcome.COPIED, Outcome.UNCHANGED)
)}
_REPORT_SYMBOLS = {Outcome.COPIED: "+", Outcome.UNCHANGED: "=", **{o: s for o, (s, _) in _PROBLEM_STYLES.items()}}


def report_markdown(report: Report, command: str = "apply") -> str:
    """For a CI run's summary: what was copied, refused and failed, with bytes and time."""
    done = sorted((image for image in report.images if image.outcome is not Outcome.UNCHANGED),
                  key=lambda image: (_REPORT_ORDER[image.outcome], str(image.target)))
    unchanged = sorted((image for image in report.images if image.outcome is Outcome.UNCHANGED),
                       key=lambda image: str(image.target))
    return _markdown_outcomes(
        f"image-syncer {command}",
        f"**{_report_counts(report).replace(', ', ' · ')}** ({_transfer_summary(report)} in {report.seconds:.1f} s)",
        ("Outcome", "Digest"),
        [(_REPORT_SYMBOLS[image.outcome], image.outcome.value, f"`{image.target}`", f"`{_short(image.digest)}`",
          image.message or "") for image in done],
        f"{len(unchanged)} unchanged", [(image.target, image.digest) for image in unchanged],
    )


def lock_check_markdown(lock_path: str, images_file: str, differences: list[str]) -> str:
    lines = ["### image-syncer lock --check", ""]
    if not differences:
        return _document(lines + [f"`{lock_path}` matches `{images_file}`."])
    lines += [f"`{lock_path}` does not match `{images_file}`: run `image-syncer lock` and commit the result.", "",
              "```diff", *differences, "```", ""]
    return _document(lines)


def _document(lines: list[str]) -> str:
    """Markdown lines as text that ends in exactly one newline."""
    return "\n".join(lines).rstrip("\n") + "\n"


def format_size(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


_VERIFY_SYMBOLS = {Status.CHANGED: "!", Status.DELETED: "-", Status.ERROR: "x"}


def _verify_counts(verification: Verification) -> str:
    summary = verification.summary
    return (f"{summary.intact} intact, {summary.changed} changed, {summary.deleted} deleted, "
            f"{summary.errors} errors")


def verify_text(verification: Verification) -> Text:
    """Only the targets that lost their locked digest are listed; the intact ones are a count."""
    text = Text()
    for image in verification.images:  # in the lock's order: by target
        if image.status is not Status.INTACT:
            _problem_line(text, _VERIFY_SYMBOLS[image.status], "red", image.target, image.status.value, image.message)
    text.append(f"Verify: {_verify_counts(verification)}.", style="bold")
    return text


def verify_markdown(verification: Verification) -> str:
    """For a scheduled job's summary: the targets that lost their locked digest; the intact folded away."""
    problems = [image for image in verification.images if image.status is not Status.INTACT]
    intact = [image for image in verification.images if image.status is Status.INTACT]
    return _markdown_outcomes(
        "image-syncer verify", f"**{_verify_counts(verification).replace(', ', ' · ')}**", ("Status", "Locked digest"),
        [(_VERIFY_SYMBOLS[image.status], image.status.value, f"`{image.target}`", f"`{_short(image.digest)}`",
          image.message or "") for image in problems],
        f"{len(intact)} intact", [(image.target, image.digest) for image in intact],
    )


def plan_json(plan: Plan) -> str:
    """The saved plan's format itself (planfile.py): what you review is what applies."""
    return planfile.dumps(plan)


REPORT_VERSION = 1


@attrs.frozen
class _ReportSummary:
    copied: int
    unchanged: int
    refused: int
    failed: int
    deferred: int
    interrupted: int


@attrs.frozen(kw_only=True)
class _ReportDocument:
    """What ``apply --format json`` prints (schemas/report.schema.json)."""

    version: int
    images: tuple[AppliedImage, ...]
    summary: _ReportSummary
    stats: CopyStats
    seconds: float


@attrs.frozen(kw_only=True)
class _VerifyDocument:
    """What ``verify --format json`` prints (schemas/verify.schema.json)."""

    version: int
    shard: Shard | None
    images: tuple[VerifiedImage, ...]
    summary: VerifySummary


_converter = documents.converter()
_converter.register_unstructure_hook(Outcome, lambda outcome: outcome.value)
_converter.register_unstructure_hook(Status, lambda status: status.value)
_converter.register_unstructure_hook(Shard, str)


def _json(document: object) -> str:
    return json.dumps(_converter.unstructure(document), indent=2) + "\n"


def report_json(report: Report) -> str:
    summary = _ReportSummary(*(report.count(outcome) for outcome in (
        Outcome.COPIED, Outcome.UNCHANGED, Outcome.REFUSED, Outcome.FAILED, Outcome.DEFERRED, Outcome.INTERRUPTED)))
    return _json(_ReportDocument(version=REPORT_VERSION, images=report.images, summary=summary, stats=report.stats,
                                 seconds=round(report.seconds, 3)))


def verify_json(verification: Verification) -> str:
    return _json(_VerifyDocument(version=verification.version, shard=verification.shard,
                                 images=verification.images, summary=verification.summary))
