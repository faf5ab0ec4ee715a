"""The markdown views over plain values: what a reviewer reads first, and that every view fits its room
(a comment's 65,536 characters, a job summary's 1 MiB) whatever N, refusals never crowded out. How they
look in a browser: test_markdown_browser.py."""

from __future__ import annotations

import random
import re

import attrs
import pytest

from reconciler import markdown, plan
from reconciler.apply import AppliedImage, Outcome, Report
from reconciler.lockfile import RemovedImage
from reconciler.markdown import COMMENT_BYTES, SUMMARY_BYTES, Room
from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.plan import Action, Plan
from reconciler.prune import AppliedDeletion, DeletionOutcome, decide_deletion
from reconciler.registry.copy import CopyStats
from reconciler.verify import Status, VerifiedImage, Verification
from tests.helpers_plans import PREFIX, example_plan, large_plan, locked

COMMENT = Room(COMMENT_BYTES)
LEFT_OUT = re.compile(r"^\*\*(?:…and (\d+) more|(\d+)) (.+?)\*\*, not listed here: (.+)\.$")


@attrs.frozen
class Shown:
    """A view read back: the items listed under each section, and the count of those left out."""

    listed: dict[str, list[str]]
    left_out: dict[str, int]
    pointers: list[str]


def read(text: str) -> Shown:
    listed: dict[str, list[str]] = {}
    left_out: dict[str, int] = {}
    pointers = []
    section = None
    for line in text.splitlines():
        if line.startswith("#### ") or line.startswith("<details>"):
            section = line
            listed[section] = []
        elif line.startswith("- ") and section is not None:
            listed[section].append(line)
        elif found := LEFT_OUT.match(line):
            left_out[found[3]] = int(found[1] or found[2])
            pointers.append(found[4])
    return Shown(listed, left_out, pointers)


def size(text: str) -> int:
    return len(text.encode())


def refused_heading(shown: Shown) -> str:
    return next((heading for heading in shown.listed if heading.startswith("#### Refused")), "")


def test_the_plan_names_the_common_prefix_once_and_puts_each_note_on_its_own_line():
    text = markdown.plan_markdown(example_plan()).fit(COMMENT)
    lines = text.splitlines()

    assert lines[:7] == [
        markdown.PLAN_MARKER, "### image-syncer plan", "", "**2 to create · 1 refused · 5 unchanged · 1 source tag(s) moved**",
        "", f"Every target below is under `{PREFIX}` and named after its source, unless ← names another.", "",
    ]
    assert PREFIX not in "\n".join(lines[7:]) and "|" not in text  # no table: nothing to scroll sideways
    conflict = lines.index("#### Refused: apply leaves these targets as they are") + 2
    assert lines[conflict].startswith("- **conflict** `bitnami/postgresql:16.2.0-debian-12-r8` · `sha256:")
    assert lines[conflict].endswith(" · linux/amd64, linux/arm64")
    assert lines[conflict + 1].startswith("  - the target holds `sha256:")
    assert lines[conflict + 1].endswith(": choose another target tag for this entry, or remove it")
    creates = read(text).listed["#### To create"]
    assert [line.split("`")[1] for line in creates] == ["ghcr.io/external-secrets/external-secrets:v0.9.20",
                                                        "quay.io/jetstack/cert-manager-controller:v1.15.1"]
    assert creates[1].endswith(" · linux/amd64, linux/arm/v7, linux/arm64, linux/ppc64le, linux/s390x · with 2 referrers")
    assert "  - ⚠️ warning: ghcr.io/external-secrets/external-secrets:v0.9.20 now points to sha256:" in text
    assert "- `alpine:3.20.0` · `sha256:" in text  # a digest-pinned source: the target's tag names it
    assert "<details><summary>5 unchanged</summary>" in text and read(text).left_out == {}


def test_a_source_other_than_the_targets_name_is_named():
    pinned, tagged = locked("quay.io/x/y@sha256:" + "7" * 64, "v1"), locked("quay.io/x/z:v2")
    text = markdown.plan_markdown(Plan(lock_digest="", images=(plan.decide(pinned, None, True),
                                                               plan.decide(tagged, None, True)))).fit(COMMENT)

    assert read(text).listed["#### To create"] == [
        f"- `quay.io/x/y:v1` ← `quay.io/x/y@sha256:777777777777` · `{str(pinned.digest)[:19]}`",
        f"- `quay.io/x/z:v2` · `{str(tagged.digest)[:19]}`"]


def test_the_plan_is_the_same_bytes_whatever_the_order_of_the_images():
    example = example_plan()
    shuffled = attrs.evolve(example, images=tuple(reversed(example.images)))

    assert markdown.plan_markdown(shuffled).fit(COMMENT) == markdown.plan_markdown(example).fit(COMMENT)


def test_a_plan_that_fits_is_the_same_in_a_comment_and_a_job_summary():
    document = markdown.plan_markdown(example_plan())

    assert document.fit(Room(COMMENT_BYTES, "[this run's job summary](https://x)")) == document.fit(Room(SUMMARY_BYTES))


@pytest.mark.parametrize("count", [100, 1000, 10_000])
def test_any_number_of_creates_fits_a_comment_as_many_as_fit_then_a_count(count):
    plan_ = large_plan(random.Random(count), refused=0, creates=count, unchanged=count)
    where = "[this run's job summary](https://github.test/o/r/actions/runs/9)"
    text = markdown.plan_markdown(plan_).fit(Room(COMMENT_BYTES, where))
    shown = read(text)

    assert size(text) <= COMMENT_BYTES < 65_536, f"seed {count}"
    listed = len(shown.listed.get("#### To create", []))
    if count == 100:
        assert listed == 100 and shown.left_out == {} and shown.pointers == [], f"seed {count}"
        assert len(shown.listed["<details><summary>100 unchanged</summary>"]) == 100
        return
    assert listed + shown.left_out["to create"] == count and listed > 200, f"seed {count}"
    assert shown.left_out["unchanged"] == count  # never a line of them once creates were cut
    assert size(text) > COMMENT_BYTES - 600, f"seed {count}: the room is used"
    assert set(shown.pointers) == {f"see {where}; `image-syncer plan --format json` prints every image"}


@pytest.mark.parametrize("count", [1000, 10_000])
def test_all_unchanged_are_listed_while_they_fit_then_counted(count):
    plan_ = large_plan(random.Random(count), refused=0, creates=0, unchanged=count)
    text = markdown.plan_markdown(plan_).fit(COMMENT)
    summary = markdown.plan_markdown(plan_).fit(Room(SUMMARY_BYTES))
    shown = read(text)

    assert size(text) <= COMMENT_BYTES and size(summary) <= SUMMARY_BYTES
    folded = shown.listed[f"<details><summary>{count} unchanged</summary>"]
    assert len(folded) + shown.left_out["unchanged"] == count, f"seed {count}"
    assert len(read(summary).listed[f"<details><summary>{count} unchanged</summary>"]) == count  # 1 MB holds all
    assert text.rstrip().endswith("`image-syncer plan --format json` prints every image.")


def test_refusals_come_first_and_are_counted_when_even_they_do_not_fit():
    plan_ = large_plan(random.Random(7), refused=2000, creates=50, unchanged=50, note="x" * 200)
    text = markdown.plan_markdown(plan_).fit(COMMENT)
    shown = read(text)

    assert size(text) <= COMMENT_BYTES
    refused = shown.listed[refused_heading(shown)]
    assert refused and len(refused) + shown.left_out["refused"] == 2000
    assert shown.left_out["to create"] == 50 and shown.left_out["unchanged"] == 50  # "50 to create", no "…and"
    assert "#### To create" not in shown.listed


def test_a_huge_message_is_cut_so_the_other_refusals_still_show():
    rng = random.Random(5)
    plan_ = large_plan(rng, refused=20, creates=10, unchanged=10, note="too long " * 200_000)
    text = markdown.plan_markdown(plan_).fit(COMMENT)
    shown = read(text)

    assert size(text) <= COMMENT_BYTES
    assert len(shown.listed[refused_heading(shown)]) == 20 and "refused" not in shown.left_out
    notes = [line for line in text.splitlines() if line.startswith("  - HTTP 500")]
    assert len(notes) == 20 and all(len(note) < markdown.NOTE_CHARACTERS + 20 for note in notes)
    assert all(note.endswith("…") for note in notes)


def test_a_message_is_text_on_one_line_never_markup():
    message = "denied\n- <img src=x> | `x` *y* [a](b)\n\n</details>"
    image = plan.PlannedImage(locked("busybox:1.36"), Action.ERROR, message=message)
    text = markdown.plan_markdown(Plan(lock_digest="", images=(image,))).fit(COMMENT)

    assert r"  - denied - \<img src=x\> \| \`x\` \*y\* \[a\](b) \</details\>" in text.splitlines()


SEEDS = list(range(24))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_plans_fit_any_room_keep_every_refusal_that_fits_and_count_the_rest(seed):
    rng = random.Random(seed)
    counts = {"refused": rng.choice([0, 1, 5, 300]), "creates": rng.choice([0, 3, 400, 3000]),
              "unchanged": rng.choice([0, 2, 500, 4000])}
    plan_ = large_plan(rng, **counts, note=rng.choice(["", "y " * rng.randrange(2000)]))
    room = Room(rng.choice([4_000, 20_000, COMMENT_BYTES, SUMMARY_BYTES]), rng.choice([None, "[the summary](u)"]))
    document = markdown.plan_markdown(plan_)
    text = document.fit(room)
    shown = read(text)
    context = f"seed {seed}: {counts}, room {room.size}"

    assert size(text) <= room.size, context
    totals = {"refused": counts["refused"], "to create": counts["creates"], "unchanged": counts["unchanged"]}
    headings = {"refused": refused_heading(shown), "to create": "#### To create",
                "unchanged": f"<details><summary>{counts['unchanged']} unchanged</summary>"}
    cut = False
    for noun, total in totals.items():
        listed = len(shown.listed.get(headings[noun], []))
        left = shown.left_out.get(noun, 0)
        assert listed + left == total, context
        assert not (cut and listed), f"{context}: {noun} listed after an earlier section was cut"
        cut = cut or left > 0
    only_refusals = attrs.evolve(document, sections=document.sections[:1])
    if size(only_refusals.fit(Room(SUMMARY_BYTES))) + 1000 <= room.size:  # they fit, with the counts of the rest
        assert len(shown.listed.get(headings["refused"], [])) == counts["refused"], context
    if not shown.left_out:
        assert text == document.fit(Room(10**9, "elsewhere")), context


def test_the_report_lists_what_was_not_done_first_then_copies_and_folds_the_unchanged():
    def applied(name: str, outcome: Outcome, message: str | None = None) -> AppliedImage:
        image = locked(name)
        return AppliedImage(image.source, image.target, str(image.digest), outcome, message)

    report = Report(images=(applied("a:1", Outcome.COPIED), applied("b:1", Outcome.UNCHANGED),
                            applied("c:1", Outcome.FAILED, "HTTP 500"), applied("d:1", Outcome.DEFERRED, "pull limit")),
                    stats=CopyStats(), seconds=1.5)
    shown = read(markdown.report_markdown(report).fit(Room(SUMMARY_BYTES)))

    assert [[line.split("`")[1] for line in lines] for lines in shown.listed.values()] == [
        ["c:1", "d:1"], ["a:1"], ["b:1"]]
    assert list(shown.listed) == ["#### Not done", "#### Copied", "<details><summary>1 unchanged</summary>"]
    assert shown.listed["#### Not done"][0].startswith("- **failed** `c:1` · `sha256:")


def test_the_reports_fit_their_room_at_any_size():
    images = [image.locked for image in large_plan(random.Random(1), refused=0, creates=0, unchanged=10_000).images]
    report = Report(images=tuple(AppliedImage(image.source, image.target, str(image.digest),
                                              Outcome.FAILED if n % 2 else Outcome.COPIED, "HTTP 500" * (n % 3))
                                 for n, image in enumerate(images)), stats=CopyStats(), seconds=1.0)
    verification = Verification(images=tuple(VerifiedImage(image.source, image.target, image.digest,
                                                           Status.CHANGED if n % 2 else Status.INTACT)
                                             for n, image in enumerate(images)))
    differences = [f"+  - target: r.example/mirror/{n}:v1" for n in range(100_000)]
    views = ((markdown.report_markdown(report), "not done", "- **failed** ", 5000),
             (markdown.verify_markdown(verification), "not intact", "- **changed** ", 5000),
             (markdown.lock_check_markdown("images.lock", "images.yaml", differences), "lines of the difference",
              "+  - target: ", 100_000))

    for document, noun, item, total in views:
        for room in (COMMENT, Room(SUMMARY_BYTES)):
            text = document.fit(room)
            listed = sum(line.startswith(item) for line in text.splitlines())
            assert size(text) <= room.size, noun
            assert listed + read(text).left_out.get(noun, 0) == total and listed > 100, noun
    assert read(views[0][0].fit(COMMENT)).left_out["not done"] > 4000


def test_the_pulls_line_stays_above_whatever_is_cut():
    plan_ = attrs.evolve(large_plan(random.Random(9), refused=0, creates=2000, unchanged=0),
                         pulls=(plan.SourcePulls("registry-1.docker.io", needed=4000, remaining=80, limit=100),))
    lines = markdown.plan_markdown(plan_).fit(COMMENT).splitlines()

    assert lines[5:7] == ["⚠️ Docker Hub: applying pulls up to 4000 manifest(s); 80 of 100 pulls left: apply copies "
                          "what fits, in lock order, and defers the rest.", ""]
    assert size("\n".join(lines)) < COMMENT_BYTES and read("\n".join(lines)).left_out["to create"] > 1000


def removed(name: str) -> RemovedImage:
    return RemovedImage(reference.parse(f"{PREFIX}{name}"), Digest.of(name.encode()))


def test_deletions_are_a_list_of_their_own_after_the_refusals_never_folded():
    plan_ = attrs.evolve(example_plan(), deletions=(
        decide_deletion(removed("redis:7.2"), Digest.of(b"redis:7.2")),
        decide_deletion(removed("memcached:1.6"), Digest.of(b"someone else's")),
        decide_deletion(removed("etcd:3.5"), None),
    ))
    text = markdown.plan_markdown(plan_).fit(COMMENT)
    shown = read(text)

    assert "**2 to create · 1 to delete · 2 refused · 5 unchanged · 1 source tag(s) moved**" in text
    assert list(shown.listed)[:2] == [refused_heading(shown), "#### To delete (prune: true): apply deletes these "
                                                              "tags, last"]
    assert shown.listed[refused_heading(shown)][-1] == (
        f"- **refused** `memcached:1.6` · `{Digest.of(b'memcached:1.6')}`")
    assert shown.listed["#### To delete (prune: true): apply deletes these tags, last"] == [
        f"- `redis:7.2` · `{Digest.of(b'redis:7.2')}`"]
    assert "- `etcd:3.5` · gone already, nothing to delete" in shown.listed["<details><summary>6 unchanged</summary>"]


def test_deletions_are_counted_where_they_do_not_fit_never_dropped():
    plan_ = attrs.evolve(large_plan(random.Random(3), refused=0, creates=3000, unchanged=0), deletions=tuple(
        decide_deletion(removed(f"old/{n}:v1"), Digest.of(f"old/{n}:v1".encode())) for n in range(3000)))
    shown = read(markdown.plan_markdown(plan_).fit(COMMENT))

    deletions = shown.listed["#### To delete (prune: true): apply deletes these tags, last"]
    assert deletions and len(deletions) + shown.left_out["to delete"] == 3000
    assert shown.left_out["to create"] == 3000  # the deletions come first


def test_the_report_lists_deletions_not_done_and_deleted():
    def deleted(name: str, outcome: DeletionOutcome, message: str | None = None) -> AppliedDeletion:
        return AppliedDeletion(removed(name).target, removed(name).digest, outcome, message)

    report = Report(images=(), stats=CopyStats(), seconds=1.0, deletions=(
        deleted("a:1", DeletionOutcome.DELETED), deleted("b:1", DeletionOutcome.REFUSED, "also tagged c"),
        deleted("d:1", DeletionOutcome.GONE)))
    shown = read(markdown.report_markdown(report).fit(Room(SUMMARY_BYTES)))

    assert list(shown.listed) == ["#### Not done", "#### Deleted (prune: true)",
                                  "<details><summary>1 gone already</summary>"]
    assert shown.listed["#### Not done"] == [f"- **refused** `b:1` · `{str(removed('b:1').digest)[:19]}`"]
    assert shown.listed["#### Deleted (prune: true)"] == [f"- `a:1` · `{str(removed('a:1').digest)[:19]}`"]
