"""The plan's decisions over plain values: what the registries answered in, an action out.

The end-to-end scenarios (tests/test_workflow.py, test_review.py) show the same
decisions made against real registries; here each rule is one row.
"""

from __future__ import annotations

import json

import attrs
import pytest

from reconciler import documents, plan
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from reconciler.oci.platforms import PlatformSubset
from reconciler.oci.referrer import FoundBy, Referrer
from reconciler.plan import Action, Plan, PlannedImage
from reconciler.shard import Shard

LOCKED = Digest.of(b"locked")
OTHER = Digest.of(b"other")
NEWER = Digest.of(b"newer")

BY_TAG = LockedImage(reference.parse("busybox:1.36"), reference.parse("r.example/mirror/busybox:1.36"), LOCKED,
                     OCI_INDEX, ("linux/amd64", "linux/arm64"))
BY_DIGEST = attrs.evolve(BY_TAG, source=reference.parse(f"busybox@{LOCKED}"))


@pytest.mark.parametrize(
    ("target_holds", "source_has_locked", "moved_to", "action", "message"),
    [
        (LOCKED, None, None, Action.UNCHANGED, None),
        (LOCKED, None, NEWER, Action.UNCHANGED, None),
        (OTHER, None, None, Action.CONFLICT, f"target tag holds {OTHER}, not the locked {LOCKED}: refusing to "
                                             "overwrite (choose another target tag for this entry in images.yaml, "
                                             "or remove the entry)"),
        (None, True, None, Action.CREATE, None),
        (None, True, NEWER, Action.CREATE, None),
        (None, None, None, Action.CREATE, None),
        (None, False, NEWER, Action.SOURCE_MISSING, f"locked digest {LOCKED} is gone from docker.io/library/busybox"),
    ],
    ids=["unchanged", "unchanged though the tag moved", "conflict", "create", "create though the tag moved",
         "create without asking the source", "source-missing"],
)
def test_decide(target_holds, source_has_locked, moved_to, action, message):
    decided = plan.decide(BY_TAG, target_holds, source_has_locked, moved_to)

    assert decided == PlannedImage(BY_TAG.source, BY_TAG.target, LOCKED, action, target_digest=target_holds,
                                   moved_to=moved_to, message=message, platforms=BY_TAG.platforms)
    assert decided.action.refused is (action in (Action.CONFLICT, Action.SOURCE_MISSING))


def test_a_conflict_is_refused_whatever_the_source_says():
    for source_has_locked in (True, False, None):
        assert plan.decide(BY_TAG, OTHER, source_has_locked).action is Action.CONFLICT


def test_summary_counts_each_action_and_the_moved():
    images = (
        plan.decide(BY_TAG, None, True, NEWER),
        plan.decide(BY_TAG, LOCKED, None),
        plan.decide(BY_TAG, OTHER, None),
        plan.decide(BY_DIGEST, None, False),
    )
    planned = Plan(lock_digest="sha256:" + "0" * 64, images=images)

    assert planned.summary == plan.Summary(create=1, unchanged=1, refused=2, moved=1)
    assert planned.has_changes and planned.has_refusals


def test_pulls_needed_counts_the_image_its_platforms_and_its_referrers():
    assert plan.pulls_needed(BY_TAG) == 3
    assert plan.pulls_needed(attrs.evolve(BY_TAG, platforms=())) == 1


def test_a_saved_plan_reads_back_as_the_same_value(tmp_path):
    planned = Plan(lock_digest=plan.lock_digest(Lockfile(inputs_hash="sha256:" + "1" * 64, images=(BY_DIGEST,))),
                   images=(plan.decide(BY_DIGEST, None, True),), shard=Shard(1, 2))
    saved = tmp_path / "plan.json"
    saved.write_text(plan.to_json(planned))

    assert plan.load(saved) == planned
    written = json.loads(saved.read_text())["images"][0]
    assert (written["source"], written["target"]) == (f"busybox@{LOCKED}", "r.example/mirror/busybox:1.36")


def test_the_lock_digest_changes_with_any_pin():
    lock = Lockfile(inputs_hash="sha256:" + "1" * 64, images=(BY_TAG,))
    repinned = attrs.evolve(lock, images=(attrs.evolve(BY_TAG, digest=NEWER),))
    retargeted = attrs.evolve(lock, images=(attrs.evolve(BY_TAG, target=reference.parse("r.example/m/b:1")),))

    assert len({plan.lock_digest(lock), plan.lock_digest(repinned), plan.lock_digest(retargeted)}) == 3


SIGNATURE = Referrer(LOCKED, Digest.of(b"signature"), OCI_MANIFEST, None, FoundBy.COSIGN_SIGNATURE)
PINNED = attrs.evolve(BY_TAG, referrers=(SIGNATURE,), subset=PlatformSubset(("linux/amd64",), Digest.of(b"subset")),
                      rule=">=1.36")
PINNED_LOCK = Lockfile(inputs_hash="sha256:" + "1" * 64, images=(PINNED,))
TO_CREATE = plan.decide(PINNED, None, True)

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
def test_a_saved_image_differs_from_its_pin_in_the_field_edited(field, value, difference):
    saved = Plan(lock_digest=plan.lock_digest(PINNED_LOCK), images=(attrs.evolve(TO_CREATE, **{field: value}),))

    found = plan.first_difference(saved, PINNED_LOCK)

    assert (found.removeprefix(f"{PINNED.target}: ").split()[0] if found else None) == (
        difference and documents.camel_case(difference)), found


def test_every_field_of_a_saved_image_is_compared_or_known_to_be_only_a_note():
    assert {field for field, _, _ in EDITS} == {field.name for field in attrs.fields(PlannedImage)}


def test_a_saved_plan_as_made_has_no_difference_and_one_without_an_image_has():
    made = Plan(lock_digest=plan.lock_digest(PINNED_LOCK), images=(TO_CREATE,))

    assert plan.first_difference(made, PINNED_LOCK) is None
    assert plan.first_difference(attrs.evolve(made, images=()), PINNED_LOCK) == "it has 0 images, the lock 1 pins"
    assert plan.first_difference(attrs.evolve(made, images=(attrs.evolve(TO_CREATE, subset=None),)), PINNED_LOCK) == (
        f'r.example/mirror/busybox:1.36: subset is null in the plan, but planning the lock gives '
        f'{{"platforms":["linux/amd64"],"digest":"{Digest.of(b"subset")}"}}')
    assert plan.first_difference(attrs.evolve(made, images=(attrs.evolve(TO_CREATE, referrers=()),)), PINNED_LOCK) == (
        "r.example/mirror/busybox:1.36: referrers lists 0 in the plan, but planning the lock gives 1")
