"""Markdown for GitHub: the plan for a pull request, the reports of apply, export, verify and lock
--check for a job summary. Every view fits the room it goes to (a comment holds 65,536 characters,
a job summary 1 MiB): what does not fit is counted and said where to find, in one place
(``Document.fit``). Lists, not wide tables, so a 1,012-pixel comment column shows every line."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import attrs

from reconciler import render
from reconciler.apply import AppliedImage, Outcome, Report
from reconciler.oci.reference import Reference
from reconciler.plan import Action, Plan, PlannedImage
from reconciler.prune import AppliedDeletion, DeletionAction, DeletionOutcome, PlannedDeletion
from reconciler.verify import Status, Verification

COMMENT_BYTES = 64_000
"""GitHub refuses a comment or pull request body over 65,536 characters; a UTF-8 byte is never less."""
SUMMARY_BYTES = 1_000_000
"""GitHub refuses a step's job summary over 1 MiB."""
NOTE_CHARACTERS = 1_000
"""A message (a registry's words in an error) longer than this is cut: one must not crowd out the others."""

PLAN_MARKER = "<!-- image-syncer plan -->"
"""The first line of the markdown plan: a bot finds its earlier comment by it and updates that one."""


@attrs.frozen
class Room:
    """Where a view goes: how many UTF-8 bytes it may take, and where a fuller view is (markdown)."""

    size: int
    fuller: str | None = None


@attrs.frozen
class Section:
    """Items (markdown lines) that show while they fit, between ``head`` and ``tail``; ``noun`` counts the rest."""

    noun: str
    items: tuple[str, ...]
    head: tuple[str, ...] = ()
    tail: tuple[str, ...] = ("",)


@attrs.frozen
class Document:
    """A view before it meets its room: ``head`` always shows, then the sections in order of importance."""

    head: tuple[str, ...]
    sections: tuple[Section, ...]
    complete: str
    """Where every item is, whatever the room (a command that prints them all)."""

    def fit(self, room: Room) -> str:
        """As many items as ``room`` holds, section by section: once one is cut, later ones are a count."""
        lines = list(self.head)
        left = room.size - _size(lines)
        reserved = [_size(self._left_out(section, len(section.items), True, room)) for section in self.sections]
        cut = False
        for index, section in enumerate(self.sections):
            count = len(section.items)
            if not count:
                continue
            later = sum(reserved[index + 1:])
            if cut:
                lines += self._left_out(section, count, False, room)
                continue
            frame = _size(section.head) + _size(section.tail)
            sizes = [_size([item]) for item in section.items]
            if frame + sum(sizes) + later <= left:
                lines += [*section.head, *section.items, *section.tail]
                left -= frame + sum(sizes)
                continue
            cut = True
            room_for_items = left - later - reserved[index] - frame
            shown = 0
            while shown < count and sizes[shown] <= room_for_items:
                room_for_items -= sizes[shown]
                shown += 1
            if shown:
                lines += [*section.head, *section.items[:shown], *section.tail]
            lines += self._left_out(section, count - shown, bool(shown), room)
        return "\n".join(lines).rstrip("\n") + "\n"

    def _left_out(self, section: Section, count: int, some_shown: bool, room: Room) -> list[str]:
        what = f"…and {count} more {section.noun}" if some_shown else f"{count} {section.noun}"
        where = f"see {room.fuller}; {self.complete}" if room.fuller else self.complete
        return [f"**{what}**, not listed here: {where}.", ""]


def _size(lines: Iterable[str]) -> int:
    """Bytes, not characters: never less than what GitHub counts, whatever the text."""
    return sum(len(line.encode()) + 1 for line in lines)


def _common_prefix(images: Iterable[tuple[Reference, Reference | None]]) -> str:
    """What all targets start with, up to a ``/``, said once so each line names only the rest; never
    more than the part before a source's own name (a target named after its source needs no source).
    A target to delete has no source (None)."""
    pairs = [(str(target), source.as_written if source else None) for target, source in images]
    prefix = os.path.commonprefix([target for target, _ in pairs])
    prefix = prefix[: prefix.rfind("/") + 1]
    named = [len(target) - len(source) for target, source in pairs if source and target.endswith("/" + source)]
    return prefix[: min(named, default=len(prefix))]


def _prefix_lines(prefix: str) -> list[str]:
    return [f"Every target below is under `{prefix}`.", ""] if prefix else []


def _plan_prefix_lines(prefix: str) -> list[str]:
    return [f"Every target below is under `{prefix}` and named after its source, unless ← names another.",
            ""] if prefix else []


_MARKUP = re.compile(r"([\\`*_\[\]<>|~#&!])")


def _plain(text: str) -> str:
    """Words from elsewhere (a registry's message) as text: on one line, cut to size, never read as markup."""
    words = " ".join(text.split())
    if len(words) > NOTE_CHARACTERS:
        words = words[:NOTE_CHARACTERS] + "…"
    return _MARKUP.sub(r"\\\1", words)


def _listed(title: str, noun: str, items: list[str]) -> Section:
    return Section(noun, tuple(items), head=(f"#### {title}", ""))


def _folded(noun: str, items: list[str]) -> Section:
    return Section(noun, tuple(items), head=(f"<details><summary>{len(items)} {noun}</summary>", ""),
                   tail=("", "</details>", ""))


def _name(target: Reference, prefix: str) -> str:
    return f"`{str(target).removeprefix(prefix)}`"


def _digest_item(target: Reference, prefix: str, digest: object) -> str:
    return f"- {_name(target, prefix)} · `{render.short_digest(digest)}`"


def plan_markdown(plan: Plan) -> Document:
    """For a pull request: the summary first, then what needs a look (refusals, creates, notes); the
    unchanged folded away."""
    looks, rest = render.for_review(plan)
    prefix = _common_prefix([*((image.locked.target, image.locked.source) for image in plan.images),
                             *((deletion.removed.target, None) for deletion in plan.deletions)])
    summary = plan.summary
    deleting = f" · {summary.delete} to delete" if plan.deletions else ""
    headline = f"{summary.create} to create{deleting} · {summary.refused} refused · {summary.unchanged} unchanged"
    if summary.moved:
        headline += f" · {summary.moved} source tag(s) moved"
    head = [PLAN_MARKER, "### image-syncer plan", "", f"**{headline}**", ""]
    head += [f"{'⚠️ ' if short else ''}{line}" for line, short in render.pulls_lines(plan)] + ([""] if plan.pulls else [])

    def items(actions: tuple[Action, ...]) -> list[str]:
        return [_planned(image, prefix) for image in looks if image.action in actions]

    deletions = render.deletions_for_review(plan.deletions)

    def deleting(actions: tuple[DeletionAction, ...]) -> list[str]:
        return [_deletion(deletion, prefix) for deletion in deletions if deletion.action in actions]

    return Document(tuple(head + _plan_prefix_lines(prefix)), (
        _listed("Refused: apply leaves these targets as they are", "refused",
                items((Action.ERROR, Action.CONFLICT, Action.SOURCE_MISSING))
                + deleting((DeletionAction.ERROR, DeletionAction.REFUSED))),
        _listed("To delete (prune: true): apply deletes these tags, last", "to delete",
                deleting((DeletionAction.DELETE,))),
        _listed("To create", "to create", items((Action.CREATE,))),
        _listed("Unchanged, with a note", "unchanged with a note", items((Action.UNCHANGED,))),
        _folded("unchanged", [_digest_item(image.locked.target, prefix, image.locked.pushed_digest) for image in rest]
                + deleting((DeletionAction.GONE,))),
    ), "`image-syncer plan --format json` prints every image")


def _deletion(deletion: PlannedDeletion, prefix: str) -> str:
    """A candidate of the lock's ``removed:``: its whole digest, as what is deleted must be unmistakable."""
    removed = deletion.removed
    if deletion.action is DeletionAction.GONE:
        return f"- {_name(removed.target, prefix)} · gone already, nothing to delete"
    action = f"**{deletion.action.value}** " if deletion.action.refused else ""
    line = f"- {action}{_name(removed.target, prefix)} · `{removed.digest}`"
    return line + (f"\n  - {_plain(deletion.message)}" if deletion.message else "")


def _planned(image: PlannedImage, prefix: str) -> str:
    """One line of what applies (the action unless it is the section's own), then one line per note."""
    locked = image.locked
    source = locked.source.as_written
    if locked.source.digest:
        source = source.replace(str(locked.source.digest), render.short_digest(locked.source.digest))
    action = f"**{image.action.value}** " if image.action.refused else ""
    named = str(locked.target).removeprefix(prefix) == source
    parts = [f"- {action}{_name(locked.target, prefix)}" + ("" if named else f" ← `{source}`"),
             f"`{render.short_digest(locked.pushed_digest)}`"]
    if locked.pushed_platforms:
        parts.append(", ".join(locked.pushed_platforms))
    if locked.referrers:
        parts.append(render.with_referrers(image).strip())
    return "\n".join([" · ".join(parts), *(f"  - {note}" for note in _notes(image))])


def _notes(image: PlannedImage) -> list[str]:
    notes = []
    if image.action is Action.CONFLICT:
        notes.append(f"the target holds `{render.short_digest(image.target_digest)}`, "
                     f"the lock wants `{render.short_digest(image.locked.pushed_digest)}`: "
                     "choose another target tag for this entry, or remove it")
    elif image.action.refused and image.message:
        notes.append(_plain(image.message))
    if image.moved_to:
        notes.append(f"⚠️ warning: {render.moved_warning(image)}")
    if image.locked.rule and image.action is Action.CREATE:
        notes.append(f"tag rule {_plain(image.locked.rule)}")
    if image.new_referrers:
        notes.append(f"note: {render.new_referrers_note(image)}")
    return notes


_PROBLEMS = (Outcome.FAILED, Outcome.REFUSED, Outcome.DEFERRED, Outcome.INTERRUPTED)


def report_markdown(report: Report, command: str = "apply") -> Document:
    """For a CI run's summary: what was not done and why, what was copied, the unchanged folded away."""
    prefix = _common_prefix([*((image.target, image.source) for image in report.images),
                             *((deletion.target, None) for deletion in report.deletions)])
    by_target = sorted(report.images, key=lambda image: str(image.target))
    problems = sorted((image for image in by_target if image.outcome in _PROBLEMS),
                      key=lambda image: _PROBLEMS.index(image.outcome))

    def digests(outcome: Outcome) -> list[str]:
        return [_digest_item(image.target, prefix, image.digest) for image in by_target if image.outcome is outcome]

    counts = render.report_counts(report).replace(", ", " · ")
    head = [f"### image-syncer {command}", "",
            f"**{counts}** ({render.transfer_summary(report)} in {report.seconds:.1f} s)", "", *_prefix_lines(prefix)]
    undeleted = [_problem(deletion, prefix) for deletion in report.deletions
                 if deletion.outcome in (DeletionOutcome.REFUSED, DeletionOutcome.FAILED)]
    if skipped := render.deletions_skipped(report):
        undeleted.append(f"- **skipped** {_plain(skipped)}")

    def deleted(outcome: DeletionOutcome) -> list[str]:
        return [_digest_item(deletion.target, prefix, deletion.digest) for deletion in report.deletions
                if deletion.outcome is outcome]

    return Document(tuple(head), (
        _listed("Not done", "not done", [_problem(image, prefix) for image in problems] + undeleted),
        _listed("Deleted (prune: true)", "deleted", deleted(DeletionOutcome.DELETED)),
        _listed("Copied", "copied", digests(Outcome.COPIED)),
        _folded("unchanged", digests(Outcome.UNCHANGED)),
        _folded("gone already", deleted(DeletionOutcome.GONE)),
    ), f"the run's log names every image it copied or did not; `image-syncer {command} --format json` prints all")


def _problem(image: AppliedImage | AppliedDeletion, prefix: str) -> str:
    line = f"- **{image.outcome.value}** {_name(image.target, prefix)} · `{render.short_digest(image.digest)}`"
    return line + (f"\n  - {_plain(image.message)}" if image.message else "")


def verify_markdown(verification: Verification) -> Document:
    """For a scheduled job's summary: the targets that lost their locked digest; the intact folded away."""
    prefix = _common_prefix((image.target, image.source) for image in verification.images)
    problems, intact = [], []
    for image in verification.images:  # in the lock's order: by target
        if image.status is Status.INTACT:
            intact.append(_digest_item(image.target, prefix, image.digest))
            continue
        line = (f"- **{image.status.value}** {_name(image.target, prefix)} · locked "
                f"`{render.short_digest(image.digest)}`")
        problems.append(line + (f"\n  - {_plain(image.message)}" if image.message else ""))
    head = ["### image-syncer verify", "", f"**{render.verify_counts(verification).replace(', ', ' · ')}**", "",
            *_prefix_lines(prefix)]
    return Document(tuple(head), (_listed("Not intact", "not intact", problems), _folded("intact", intact)),
                    "`image-syncer verify --format json` prints every target")


def lock_check_markdown(lock_path: str, images_file: str, differences: list[str]) -> Document:
    head = ["### image-syncer lock --check", ""]
    if not differences:
        return Document((*head, f"`{lock_path}` matches `{images_file}`."), (), "")
    head += [f"`{lock_path}` does not match `{images_file}`: run `image-syncer lock` and commit the result.", ""]
    return Document(tuple(head), (Section("lines of the difference", tuple(differences), head=("```diff",),
                                          tail=("```", "")),),
                    "`image-syncer lock --check` prints them all")
