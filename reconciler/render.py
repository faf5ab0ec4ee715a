"""Plans, apply reports and verifications as text for a terminal and JSON for machines (schemas/: the
plan's is the saved plan's format, planfile.py); the wording markdown.py shares for pull requests."""

from __future__ import annotations

import json
from collections.abc import Sequence

import attrs
from rich.text import Text

from reconciler import documents, planfile
from reconciler.apply import AppliedImage, Outcome, Report
from reconciler.oci.reference import Reference
from reconciler.plan import Action, Plan, PlannedImage
from reconciler.prune import AppliedDeletion, DeletionAction, DeletionOutcome, PlannedDeletion
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


def short_digest(digest: object) -> str:
    text = str(digest)
    return text[: len("sha256:") + 12]


def _summary_line(plan: Plan) -> str:
    summary = plan.summary
    deleting = f", {summary.delete} to delete" if plan.deletions else ""
    line = f"Plan: {summary.create} to create{deleting}, {summary.unchanged} unchanged, {summary.refused} refused."
    if summary.moved:
        line += f" {summary.moved} source tag(s) moved."
    return line


_DELETION_STYLES = {
    DeletionAction.DELETE: ("-", "red"),
    DeletionAction.REFUSED: ("!", "red"),
    DeletionAction.ERROR: ("x", "red"),
    DeletionAction.GONE: ("=", "dim"),
}


def deletion_detail(deletion: PlannedDeletion) -> str:
    """What the plan's deletions section says of one candidate: ``delete <target> (<digest>)``, or why not."""
    removed = deletion.removed
    if deletion.action is DeletionAction.DELETE:
        return f"delete {removed.target} ({removed.digest})"
    if deletion.action is DeletionAction.GONE:
        return f"gone {removed.target}: nothing to delete"
    return f"{deletion.action.value} {removed.target}: {deletion.message}"


def _deletions_text(text: Text, plan: Plan) -> None:
    """Their own section, every line listed (never a count): refusals first, then deletions, then the gone."""
    if not plan.deletions:
        return
    text.append("Deletions (prune: true):\n", style="bold")
    for deletion in deletions_for_review(plan.deletions):
        symbol, style = _DELETION_STYLES[deletion.action]
        text.append(f"  {symbol} {deletion_detail(deletion)}\n", style=style)
    text.append("\n")


_DELETION_ORDER = {action: rank for rank, action in enumerate(
    (DeletionAction.ERROR, DeletionAction.REFUSED, DeletionAction.DELETE, DeletionAction.GONE))}


def deletions_for_review(deletions: Sequence[PlannedDeletion]) -> list[PlannedDeletion]:
    return sorted(deletions, key=lambda deletion: (_DELETION_ORDER[deletion.action], str(deletion.removed.target)))


def pulls_lines(plan: Plan) -> list[tuple[str, bool]]:
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
        pinned = "" if image.locked.source.digest else f"@{short_digest(image.locked.digest)}"
        only = f" ({', '.join(image.locked.subset.platforms)} only)" if image.locked.subset else ""
        return f"copy {image.locked.source.as_written}{pinned}{only}{with_referrers(image)}"
    if image.action is Action.UNCHANGED:
        return f"holds {short_digest(image.locked.pushed_digest)}"
    return f"{image.action.value}: {image.message}"


def with_referrers(image: PlannedImage) -> str:
    count = len(image.locked.referrers)
    return f" with {count} referrer{'s' if count != 1 else ''}" if count else ""


_REVIEW_ORDER = {action: rank for rank, action in enumerate(
    (Action.ERROR, Action.CONFLICT, Action.SOURCE_MISSING, Action.CREATE, Action.UNCHANGED)
)}


def _noted(image: PlannedImage) -> bool:
    return bool(image.moved_to or image.new_referrers)


def for_review(plan: Plan) -> tuple[list[PlannedImage], list[PlannedImage]]:
    """What needs a look (refusals, creates, moved source tags) in that order, and the unchanged rest.

    Each part is sorted by target, so the same plan always reads the same, byte for byte.
    """
    looks = [image for image in plan.images if image.action is not Action.UNCHANGED or _noted(image)]
    rest = [image for image in plan.images if image.action is Action.UNCHANGED and not _noted(image)]
    looks.sort(key=lambda image: (_REVIEW_ORDER[image.action], str(image.locked.target)))
    rest.sort(key=lambda image: str(image.locked.target))
    return looks, rest


def new_referrers_note(image: PlannedImage) -> str:
    count = len(image.new_referrers)
    return (f"{count} referrer{'s' if count != 1 else ''} upstream that the lock does not pin "
            f"({', '.join(sorted({r.artifact_type or r.media_type for r in image.new_referrers}))}); "
            "`image-syncer lock --upgrade` pins them")


def moved_warning(image: PlannedImage) -> str:
    return (f"{image.locked.source.as_written} now points to {short_digest(image.moved_to)}; the locked "
            f"{short_digest(image.locked.digest)} is what applies (`image-syncer lock --upgrade` follows the tag)")


def plan_text(plan: Plan, verbose: bool = False) -> Text:
    """Changes first; the unchanged as one count line unless ``verbose``."""
    looks, rest = for_review(plan)
    text = Text()
    for image in looks + (rest if verbose else []):
        symbol, style = _SYMBOLS[image.action]
        text.append(f"  {symbol} ", style=style)
        text.append(str(image.locked.target), style="bold" if image.action is not Action.UNCHANGED else "dim")
        text.append(f"  {_detail(image)}\n", style=style if image.action.refused else "")
        if image.moved_to:
            text.append(f"    ~ warning: {moved_warning(image)}\n", style="yellow")
        if image.new_referrers:
            text.append(f"    ~ note: {new_referrers_note(image)}\n", style="yellow")
    if rest and not verbose:
        text.append(f"  = {len(rest)} unchanged (--verbose lists them)\n", style="dim")
    if plan.images:
        text.append("\n")
    _deletions_text(text, plan)
    for line, short in pulls_lines(plan):
        text.append(f"{line}\n", style="yellow" if short else "")
    text.append(_summary_line(plan), style="bold")
    return text


def report_counts(report: Report) -> str:
    counts = (f"{report.count(Outcome.COPIED)} copied, {report.count(Outcome.UNCHANGED)} unchanged, "
              f"{report.count(Outcome.REFUSED)} refused, {report.count(Outcome.FAILED)} failed")
    for outcome in (Outcome.DEFERRED, Outcome.INTERRUPTED):
        if count := report.count(outcome):
            counts += f", {count} {outcome.value}"
    if report.deletions:
        counts += f"; deletions: {deletion_counts(report)}"
    return counts


def transfer_summary(report: Report) -> str:
    stats = report.stats
    return (f"{stats.blobs_uploaded} blobs uploaded, {stats.blobs_mounted} mounted, "
            f"{stats.blobs_present} already there; {format_size(stats.bytes_uploaded)} sent")


def _problem_line(text: Text, symbol: str, style: str, target: Reference, what: str, message: str | None) -> None:
    text.append(f"  {symbol} {target}", style=style)
    text.append(f"  {what}" + (f": {message}" if message else "") + "\n")


def report_text(report: Report, command: str = "apply") -> Text:
    text = Text()
    for image in report.images:
        if image.outcome in _PROBLEM_STYLES:  # the progress lines listed the rest
            symbol, style = _PROBLEM_STYLES[image.outcome]
            _problem_line(text, symbol, style, image.target, image.outcome.value, image.message)
    for deletion in report.deletions:
        if deletion.outcome is not DeletionOutcome.SKIPPED:
            symbol, style = _DELETION_OUTCOME_STYLES[deletion.outcome]
            _problem_line(text, symbol, style, deletion.target, deletion.outcome.value, deletion.message)
    if skipped_line := deletions_skipped(report):
        text.append(f"  > {skipped_line}\n", style="yellow")
    text.append(f"{command.capitalize()}: {report_counts(report)} ({transfer_summary(report)}).", style="bold")
    return text


_DELETION_OUTCOME_STYLES = {
    DeletionOutcome.DELETED: ("-", ""),
    DeletionOutcome.GONE: ("=", "dim"),
    DeletionOutcome.REFUSED: ("!", "red"),
    DeletionOutcome.FAILED: ("x", "red"),
}


def deletions_skipped(report: Report) -> str | None:
    """Deletions not tried, in one line: they share one reason (the run's copies, or a stop)."""
    skipped = [deletion for deletion in report.deletions if deletion.outcome is DeletionOutcome.SKIPPED]
    if not skipped:
        return None
    return f"{len(skipped)} deletion(s) skipped: {skipped[0].message}"


def deletion_counts(report: Report) -> str:
    outcomes = [deletion.outcome for deletion in report.deletions]
    return ", ".join(f"{outcomes.count(outcome)} {outcome.value}" for outcome in DeletionOutcome
                     if outcomes.count(outcome) or outcome is DeletionOutcome.DELETED)


def format_size(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


_VERIFY_SYMBOLS = {Status.CHANGED: "!", Status.DELETED: "-", Status.ERROR: "x"}


def verify_counts(verification: Verification) -> str:
    summary = verification.summary
    return (f"{summary.intact} intact, {summary.changed} changed, {summary.deleted} deleted, "
            f"{summary.errors} errors")


def verify_text(verification: Verification) -> Text:
    """Only the targets that lost their locked digest are listed; the intact ones are a count."""
    text = Text()
    for image in verification.images:  # in the lock's order: by target
        if image.status is not Status.INTACT:
            _problem_line(text, _VERIFY_SYMBOLS[image.status], "red", image.target, image.status.value, image.message)
    text.append(f"Verify: {verify_counts(verification)}.", style="bold")
    return text


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
    deletions: tuple[AppliedDeletion, ...] = attrs.field(default=(), metadata=documents.OMITTED_WHEN_DEFAULT)
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
_converter.register_unstructure_hook(DeletionOutcome, lambda outcome: outcome.value)
_converter.register_unstructure_hook(Shard, str)


def _json(document: object) -> str:
    return json.dumps(_converter.unstructure(document), indent=2) + "\n"


def report_json(report: Report) -> str:
    summary = _ReportSummary(*(report.count(outcome) for outcome in (
        Outcome.COPIED, Outcome.UNCHANGED, Outcome.REFUSED, Outcome.FAILED, Outcome.DEFERRED, Outcome.INTERRUPTED)))
    return _json(_ReportDocument(version=REPORT_VERSION, images=report.images, deletions=report.deletions,
                                 summary=summary, stats=report.stats, seconds=round(report.seconds, 3)))


def verify_json(verification: Verification) -> str:
    return _json(_VerifyDocument(version=verification.version, shard=verification.shard,
                                 images=verification.images, summary=verification.summary))
