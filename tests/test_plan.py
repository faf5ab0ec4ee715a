"""The plan's decisions over plain values: what the registries answered in, an action out.

The end-to-end scenarios (tests/test_workflow.py, test_review.py) show the same
decisions made against real registries; here each rule is one row.
"""

from __future__ import annotations

import attrs
import pytest

from reconciler import plan
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.oci.mediatypes import OCI_INDEX
from reconciler.plan import Action, Plan, PlannedImage

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

    assert decided == PlannedImage(BY_TAG, action, target_digest=target_holds, moved_to=moved_to, message=message)
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


def test_the_lock_digest_changes_with_any_pin():
    lock = Lockfile(inputs_hash="sha256:" + "1" * 64, images=(BY_TAG,))
    repinned = attrs.evolve(lock, images=(attrs.evolve(BY_TAG, digest=NEWER),))
    retargeted = attrs.evolve(lock, images=(attrs.evolve(BY_TAG, target=reference.parse("r.example/m/b:1")),))

    assert len({plan.lock_digest(lock), plan.lock_digest(repinned), plan.lock_digest(retargeted)}) == 3
