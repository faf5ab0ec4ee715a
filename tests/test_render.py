"""What people and machines read, over plain values: the plan for review, the report of a run and a
verification, as text and JSON (the JSON checked against schemas/ here; against real runs in
test_schemas.py). The markdown views: test_markdown.py."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from reconciler import plan, planfile, prune, render
from reconciler.apply import AppliedImage, Outcome, Report
from reconciler.lockfile import LockedImage, RemovedImage
from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.oci.mediatypes import OCI_MANIFEST
from reconciler.plan import Plan
from reconciler.prune import AppliedDeletion, DeletionAction, DeletionOutcome, PlannedDeletion
from reconciler.registry.copy import CopyStats
from reconciler.shard import Shard
from reconciler.verify import Status, VerifiedImage, Verification

LOCKED = Digest.of(b"locked")
OTHER = Digest.of(b"other")


def locked(target: str, source: str = "busybox:1.36") -> LockedImage:
    return LockedImage(reference.parse(source), reference.parse(f"r.example/mirror/{target}"), LOCKED, OCI_MANIFEST, ())


PLAN = Plan(lock_digest="sha256:" + "0" * 64, images=(
    plan.decide(locked("b:1"), LOCKED, None),
    plan.decide(locked("z:1"), None, True, moved_to=OTHER),
    plan.decide(locked("c:1"), OTHER, None),
    plan.decide(locked("a:1"), LOCKED, None),
    plan.decide(locked("y:1", f"quay.io/x/y@{LOCKED}"), None, True),
))


def test_plan_text_puts_refusals_first_then_creates_and_folds_the_unchanged():
    lines = render.plan_text(PLAN).plain.splitlines()

    assert [line.split()[:2] for line in lines if line.startswith("  ") and not line.startswith("    ")] == [
        ["!", "r.example/mirror/c:1"], ["+", "r.example/mirror/y:1"], ["+", "r.example/mirror/z:1"],
        ["=", "2"],
    ]
    assert lines[-1] == "Plan: 2 to create, 2 unchanged, 1 refused. 1 source tag(s) moved."


def test_plan_text_names_the_source_as_written_and_pins_only_what_a_tag_names():
    text = render.plan_text(PLAN).plain

    assert f"copy busybox:1.36@{str(LOCKED)[:19]}" in text
    assert f"copy quay.io/x/y@{LOCKED}\n" in text
    assert f"    ~ warning: busybox:1.36 now points to {str(OTHER)[:19]}" in text
    assert "docker.io/library/busybox" not in text


def test_verbose_lists_the_unchanged_in_target_order():
    lines = render.plan_text(PLAN, verbose=True).plain.splitlines()

    assert [line.split()[1] for line in lines if line.startswith("  = ")] == [
        "r.example/mirror/a:1", "r.example/mirror/b:1"]


REPORT = Report(images=(AppliedImage(locked("a:1").source, locked("a:1").target, str(LOCKED), Outcome.COPIED),
                        AppliedImage(locked("c:1").source, locked("c:1").target, str(LOCKED), Outcome.DEFERRED,
                                     "pull limit")),
                stats=CopyStats(blobs_uploaded=2, bytes_uploaded=1024), seconds=1.23456)
VERIFICATION = Verification(images=(
    VerifiedImage(locked("a:1").source, locked("a:1").target, LOCKED, Status.INTACT, LOCKED),
    VerifiedImage(locked("b:1").source, locked("b:1").target, LOCKED, Status.CHANGED, OTHER, "target tag holds other"),
), shard=Shard(1, 2))


def matches_schema(name: str, text: str) -> object:
    """The document ``text`` holds, after checking it against schemas/``name``.schema.json."""
    schema = json.loads((Path(__file__).parent.parent / "schemas" / f"{name}.schema.json").read_text())
    document = json.loads(text)
    jsonschema.Draft202012Validator(schema).validate(document)
    return document


@pytest.mark.parametrize(("name", "text"), [
    ("plan", render.plan_json(PLAN)), ("report", render.report_json(REPORT)), ("verify", render.verify_json(VERIFICATION)),
])
def test_every_json_view_matches_its_schema_two_space_indented_and_ends_in_one_newline(name, text):
    assert text == json.dumps(matches_schema(name, text), indent=2) + "\n"


def test_the_plans_json_view_is_the_saved_plan():
    assert render.plan_json(PLAN) == planfile.dumps(PLAN)


def test_report_json_counts_every_outcome_and_rounds_the_seconds():
    image = {"source": "busybox:1.36", "target": "r.example/mirror/a:1", "digest": str(LOCKED), "outcome": "copied",
             "message": None}
    text = render.report_json(REPORT)

    assert matches_schema("report", text) and text == json.dumps({
        "version": 1,
        "images": [image, {**image, "target": "r.example/mirror/c:1", "outcome": "deferred", "message": "pull limit"}],
        "summary": {"copied": 1, "unchanged": 0, "refused": 0, "failed": 0, "deferred": 1, "interrupted": 0},
        "stats": {"blobsUploaded": 2, "blobsMounted": 0, "blobsPresent": 0, "bytesUploaded": 1024},
        "seconds": 1.235,
    }, indent=2) + "\n"


def test_verify_json_names_the_shard_and_what_each_target_holds():
    image = {"source": "busybox:1.36", "target": "r.example/mirror/a:1", "digest": str(LOCKED), "status": "intact",
             "targetDigest": str(LOCKED), "message": None}
    text = render.verify_json(VERIFICATION)

    assert matches_schema("verify", text) and text == json.dumps({
        "version": 1,
        "shard": "1/2",
        "images": [image, {**image, "target": "r.example/mirror/b:1", "status": "changed", "targetDigest": str(OTHER),
                           "message": "target tag holds other"}],
        "summary": {"intact": 1, "changed": 1, "deleted": 0, "errors": 0},
    }, indent=2) + "\n"


def removed(target: str) -> RemovedImage:
    return RemovedImage(reference.parse(f"r.example/mirror/{target}"), LOCKED)


PRUNING = Plan(lock_digest="sha256:" + "0" * 64, images=(plan.decide(locked("a:1"), LOCKED, None),), deletions=(
    prune.decide_deletion(removed("gone:1"), None),
    prune.decide_deletion(removed("ours:1"), LOCKED),
    prune.decide_deletion(removed("theirs:1"), OTHER),
    PlannedDeletion(removed("down:1"), DeletionAction.ERROR, message="HTTP 500"),
))
PRUNED = Report(images=REPORT.images[:1], stats=CopyStats(), deletions=(
    AppliedDeletion(removed("ours:1").target, LOCKED, DeletionOutcome.DELETED),
    AppliedDeletion(removed("theirs:1").target, LOCKED, DeletionOutcome.REFUSED, "now holds another; kept"),
    AppliedDeletion(removed("gone:1").target, LOCKED, DeletionOutcome.GONE),
))


def test_deletions_have_their_own_section_refusals_first_each_listed():
    lines = render.plan_text(PRUNING).plain.splitlines()

    section = lines.index("Deletions (prune: true):")
    assert lines[section + 1:section + 6] == [
        "  x error r.example/mirror/down:1: HTTP 500",
        f"  ! refused r.example/mirror/theirs:1: now holds {OTHER}, not the {LOCKED} we wrote; kept",
        f"  - delete r.example/mirror/ours:1 ({LOCKED})",
        "  = gone r.example/mirror/gone:1: nothing to delete",
        "",
    ]
    assert lines[-1] == "Plan: 0 to create, 1 to delete, 1 unchanged, 2 refused."
    assert PRUNING.has_changes and PRUNING.has_refusals
    assert render.plan_text(PLAN).plain.count("Deletions") == 0


def test_deletions_are_in_the_plans_and_reports_json_and_the_report_text():
    saved = matches_schema("plan", render.plan_json(PRUNING))
    assert [(deletion["target"], deletion["action"], deletion["targetDigest"]) for deletion in saved["deletions"]] == [
        ("r.example/mirror/gone:1", "gone", None), ("r.example/mirror/ours:1", "delete", str(LOCKED)),
        ("r.example/mirror/theirs:1", "refused", str(OTHER)), ("r.example/mirror/down:1", "error", None)]
    assert saved["summary"]["delete"] == 1
    assert "deletions" not in json.loads(render.plan_json(PLAN)) and "delete" not in json.loads(
        render.plan_json(PLAN))["summary"]
    report = matches_schema("report", render.report_json(PRUNED))
    assert [(deletion["target"], deletion["outcome"]) for deletion in report["deletions"]] == [
        ("r.example/mirror/ours:1", "deleted"), ("r.example/mirror/theirs:1", "refused"),
        ("r.example/mirror/gone:1", "gone")]
    assert "deletions" not in json.loads(render.report_json(REPORT))
    lines = render.report_text(PRUNED).plain.splitlines()
    assert lines == ["  - r.example/mirror/ours:1  deleted",
                     "  ! r.example/mirror/theirs:1  refused: now holds another; kept",
                     "  = r.example/mirror/gone:1  gone",
                     "Apply: 1 copied, 0 unchanged, 0 refused, 0 failed; deletions: 1 deleted, 1 gone, 1 refused "
                     "(0 blobs uploaded, 0 mounted, 0 already there; 0 B sent)."]
    assert not PRUNED.ok


def test_skipped_deletions_are_one_line():
    skipped = Report(images=REPORT.images, stats=CopyStats(), deletions=prune.skipped(
        [prune.decide_deletion(removed(f"{name}:1"), LOCKED) for name in ("a", "b")], "not tried: because"))

    assert [line for line in render.report_text(skipped).plain.splitlines() if "skipped" in line] == [
        "  > 2 deletion(s) skipped: not tried: because",
        "Apply: 1 copied, 0 unchanged, 0 refused, 0 failed, 1 deferred; deletions: 0 deleted, 2 skipped "
        "(0 blobs uploaded, 0 mounted, 0 already there; 0 B sent)."]
