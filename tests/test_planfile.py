"""The saved plan's file format over plain values: what is written reads back, and what is
damaged is refused as one line naming the file and the place.

Whether a saved plan still fits the lock is asked field by field (first_difference); the
end-to-end refusals of stale plans are in tests/test_workflow.py.
"""

from __future__ import annotations

import json

import attrs
import pytest

from reconciler import documents, plan, planfile
from reconciler.errors import InputError
from reconciler.lockfile import LockedImage, Lockfile, RemovedImage
from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from reconciler.oci.platforms import PlatformSubset
from reconciler.oci.referrer import FoundBy, Referrer
from reconciler.plan import Action, Plan, SourcePulls
from reconciler.prune import decide_deletion
from reconciler.shard import Shard

LOCKED = Digest.of(b"locked")
OTHER = Digest.of(b"other")
NEWER = Digest.of(b"newer")
SIGNATURE = Referrer(LOCKED, Digest.of(b"signature"), OCI_MANIFEST, None, FoundBy.COSIGN_SIGNATURE)
TARGET = reference.parse("r.example/mirror/busybox:1.36")
PINNED = LockedImage(reference.parse("busybox:1.36"), TARGET, LOCKED, OCI_INDEX, ("linux/amd64", "linux/arm64"),
                     referrers=(SIGNATURE,), subset=PlatformSubset(("linux/amd64",), Digest.of(b"subset")), rule=">=1.36")
BY_DIGEST = LockedImage(reference.parse(f"busybox@{LOCKED}"), TARGET, LOCKED, OCI_MANIFEST, ())
PINNED_LOCK = Lockfile(inputs_hash="sha256:" + "1" * 64, images=(PINNED,))
TO_CREATE = plan.decide(PINNED, None, True)


def test_a_saved_plan_reads_back_with_its_lock_as_the_same_value(tmp_path):
    lock = Lockfile(inputs_hash="sha256:" + "1" * 64, images=(BY_DIGEST, PINNED, PINNED))
    planned = Plan(lock_digest=plan.lock_digest(lock),
                   images=(plan.decide(BY_DIGEST, None, True), attrs.evolve(TO_CREATE, new_referrers=(SIGNATURE,)),
                           plan.decide(PINNED, OTHER, None, moved_to=NEWER)),
                   shard=Shard(1, 2), pulls=(SourcePulls("registry-1.docker.io", 4, 90, 100),))
    saved = tmp_path / "plan.json"
    planfile.save(saved, planned)

    read = planfile.load(saved)
    assert planfile.first_difference(read, lock) is None
    assert planfile.restored(read, lock) == planned
    assert saved.read_text() == planfile.dumps(planned)
    written = json.loads(saved.read_text())
    assert (written["images"][0]["source"], written["images"][0]["target"]) == (
        f"busybox@{LOCKED}", "r.example/mirror/busybox:1.36")
    assert (written["shard"], written["summary"]) == ("1/2", {"create": 2, "unchanged": 0, "refused": 1, "moved": 1})


def test_a_saved_plan_is_written_as_two_space_indented_json_keys_in_camel_case():
    text = planfile.dumps(Plan(lock_digest="sha256:" + "0" * 64, images=(TO_CREATE,)))

    assert text.endswith("}\n") and text.startswith('{\n  "version": 1,\n  "lockDigest": ')
    assert list(json.loads(text)) == ["version", "lockDigest", "shard", "images", "pulls", "summary"]
    assert list(json.loads(text)["images"][0]) == [
        "source", "target", "digest", "action", "targetDigest", "movedTo", "message", "platforms", "referrers",
        "newReferrers", "subset", "rule"]


@pytest.mark.parametrize(("edit", "refusal"), [
    (lambda document: document["images"][0].update(action="replace"),
     ":10: images[1] (target \"r.example/mirror/busybox:1.36\"): action: 'replace' is not a valid Action"),
    (lambda document: document["images"][0].pop("digest"),
     ':6: images[1] (target "r.example/mirror/busybox:1.36"): missing required key "digest"'),
    (lambda document: document.update(version=2), ":1: not a saved plan of version 1"),
    (lambda document: document.update(extra=True), ':44: unknown key "extra"'),
], ids=["unknown action", "missing key", "other version", "unknown key"])
def test_a_damaged_saved_plan_is_refused_as_one_line_naming_the_file_and_place(tmp_path, edit, refusal):
    document = json.loads(planfile.dumps(Plan(lock_digest="sha256:" + "0" * 64, images=(TO_CREATE,))))
    edit(document)
    saved = tmp_path / "plan.json"
    saved.write_text(json.dumps(document, indent=2))

    with pytest.raises(InputError) as refused:
        planfile.load(saved)

    assert str(refused.value) == f"{saved}{refusal}"


def test_a_missing_or_foreign_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="saved plan not found"):
        planfile.load(tmp_path / "absent.json")
    (tmp_path / "list.json").write_text("[]\n")
    with pytest.raises(InputError, match="not a saved plan of version 1"):
        planfile.load(tmp_path / "list.json")


def _saved(planned: Plan, tmp_path) -> planfile.SavedPlan:
    path = tmp_path / "plan.json"
    planfile.save(path, planned)
    return planfile.load(path)


# Each row edits one field of a saved image; the difference names the field (the first value in it
# that differs, as the plan file writes it), or is None for what only a source could tell.
EDITS = [
    ("source", reference.parse(f"busybox@{LOCKED}"), "source"),
    ("target", reference.parse("r.example/mirror/busybox:1.37"), "target"),
    ("source", reference.parse("docker.io/library/busybox:1.36"), "source"),  # the same repository, written otherwise
    ("digest", OTHER, "digest"),
    ("action", Action.UNCHANGED, "action"),
    ("action", Action.CONFLICT, "action"),
    ("action", Action.SOURCE_MISSING, None),
    ("action", Action.ERROR, None),
    ("target_digest", OTHER, "action"),
    ("target_digest", SIGNATURE.digest, "action"),
    ("moved_to", NEWER, None),
    ("message", "refused", "message"),
    ("platforms", ("linux/amd64",), "platforms"),
    ("platforms", ("linux/amd64", "linux/arm64/v8"), "platforms[1]"),
    ("referrers", (), "referrers"),
    ("referrers", (attrs.evolve(SIGNATURE, media_type=OCI_INDEX),), "referrers[0].mediaType"),
    ("referrers", (attrs.evolve(SIGNATURE, found_by=FoundBy.API),), "referrers[0].foundBy"),
    ("referrers", (SIGNATURE, SIGNATURE), "referrers"),
    ("new_referrers", (attrs.evolve(SIGNATURE, digest=NEWER),), None),
    ("subset", None, "subset"),
    ("subset", PlatformSubset(("linux/amd64",), OTHER), "subset.digest"),
    ("rule", None, "rule"),
]


@pytest.mark.parametrize(("field", "value", "difference"), EDITS,
                         ids=[f"{field}={value}" for field, value, _ in EDITS])
def test_a_saved_image_differs_from_its_pin_in_the_field_edited(tmp_path, field, value, difference):
    made = _saved(Plan(lock_digest=plan.lock_digest(PINNED_LOCK), images=(TO_CREATE,)), tmp_path)
    saved = attrs.evolve(made, images=(attrs.evolve(made.images[0], **{field: value}),))

    found = planfile.first_difference(saved, PINNED_LOCK)

    assert (found.removeprefix(f"{PINNED.target}: ").split()[0] if found else None) == (
        difference and documents.camel_case(difference)), found


def test_every_field_of_a_saved_image_is_compared_or_known_to_be_only_a_note():
    assert {field for field, _, _ in EDITS} == {field.name for field in attrs.fields(planfile.SavedImage)}


def test_a_saved_plan_as_made_has_no_difference_and_one_without_an_image_has(tmp_path):
    made = _saved(Plan(lock_digest=plan.lock_digest(PINNED_LOCK), images=(TO_CREATE,)), tmp_path)
    image = made.images[0]

    assert planfile.first_difference(made, PINNED_LOCK) is None
    assert planfile.first_difference(attrs.evolve(made, images=()), PINNED_LOCK) == "it has 0 images, the lock 1 pins"
    assert planfile.first_difference(attrs.evolve(made, images=(attrs.evolve(image, subset=None),)),
                                     PINNED_LOCK) == (
        f'r.example/mirror/busybox:1.36: subset is null in the plan, but planning the lock gives '
        f'{{"platforms":["linux/amd64"],"digest":"{Digest.of(b"subset")}"}}')
    assert planfile.first_difference(attrs.evolve(made, images=(attrs.evolve(image, referrers=()),)),
                                     PINNED_LOCK) == (
        "r.example/mirror/busybox:1.36: referrers lists 0 in the plan, but planning the lock gives 1")


def test_a_saved_plans_deletions_read_back_and_must_be_the_locks_removed_as_planned(tmp_path):
    gone_target, ours_target = (reference.parse(f"r.example/mirror/{name}:1") for name in ("gone", "ours"))
    lock = attrs.evolve(PINNED_LOCK, removed=(RemovedImage(gone_target, OTHER), RemovedImage(ours_target, NEWER)))
    deletions = (decide_deletion(lock.removed[0], None), decide_deletion(lock.removed[1], NEWER))
    made = _saved(Plan(lock_digest=plan.lock_digest(lock), images=(TO_CREATE,), deletions=deletions), tmp_path)

    assert planfile.first_difference(made, lock, prune=True) is None
    assert planfile.restored(made, lock, prune=True).deletions == deletions
    assert planfile.first_difference(made, lock) == "it has 2 deletions, planning the lock gives 0"
    edited = attrs.evolve(made, deletions=(made.deletions[0], attrs.evolve(made.deletions[1], digest=OTHER)))
    assert planfile.first_difference(edited, lock, prune=True) == (
        f'r.example/mirror/ours:1: digest is "{OTHER}" in the plan, but planning the lock gives "{NEWER}"')
    refused = attrs.evolve(made, deletions=(made.deletions[0], attrs.evolve(made.deletions[1], target_digest=OTHER)))
    assert planfile.first_difference(refused, lock, prune=True) == (
        'r.example/mirror/ours:1: action is "delete" in the plan, but planning the lock gives "refused"')
    assert "deletions" not in json.loads(planfile.dumps(Plan(lock_digest=plan.lock_digest(PINNED_LOCK),
                                                             images=(TO_CREATE,))))
