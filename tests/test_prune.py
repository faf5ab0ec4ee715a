"""Prune (reconciler/prune.py) against real docker-registry processes with deletion on (and one
with it off): a candidate is deleted only while its tag holds the digest we recorded, and never
in a way that takes another tag or an index's child with it. What the registry holds after is
checked with skopeo and raw HTTP, never with the code under test.

docker-registry 2.8 deletes no tag (it reads one as a digest), so every deletion here goes by digest.
"""

from __future__ import annotations

import pytest

from reconciler.lockfile import RemovedImage
from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.prune import (
    AppliedDeletion, DeletionAction, DeletionOutcome, PlannedDeletion, apply_deletions, decide_deletion,
    plan_deletions, still_ours,
)
from reconciler.registry.retry import RetryPolicy
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import SkopeoError, skopeo_inspect_raw
from tests.helpers_clients import registries, run


def removed(host: str, repo: str, tag: str, digest: str) -> RemovedImage:
    return RemovedImage(reference.parse(f"{host}/{repo}:{tag}"), Digest.parse(digest))


def prune(*candidates: RemovedImage) -> tuple[tuple[PlannedDeletion, ...], tuple[AppliedDeletion, ...]]:
    """Plan the candidates, then apply what was planned, in one run."""

    async def main():
        async with registries() as regs:
            planned = await plan_deletions(regs, candidates)
            return planned, await apply_deletions(regs, planned)

    return run(main())


def tag(registry, pushed, name: str, raw: bytes | None = None, media_type: str | None = None) -> None:
    """Another writer's tag in the pushed image's repository (the image itself unless ``raw``)."""
    with RawRegistry(registry) as client:
        answer = client.put_manifest(pushed.repo, name, raw or pushed.manifest, media_type or pushed.media_type)
        assert answer.status_code == 201, answer.text


def gone(ref: str) -> bool:
    try:
        skopeo_inspect_raw(ref)
    except SkopeoError:
        return True
    return False


def test_a_tag_alone_on_its_digest_is_deleted(push_image):
    pushed = push_image("oci")
    kept = push_image("docker")

    planned, applied = prune(removed(pushed.host, pushed.repo, "v1", pushed.digest))

    assert [deletion.action for deletion in planned] == [DeletionAction.DELETE]
    assert [deletion.outcome for deletion in applied] == [DeletionOutcome.DELETED], applied
    assert gone(pushed.ref)
    assert skopeo_inspect_raw(kept.ref) == kept.manifest


def test_a_digest_another_tag_holds_is_kept_with_both_tags(push_image, plain_registry):
    pushed = push_image("oci")
    tag(plain_registry, pushed, "theirs")

    planned, applied = prune(removed(pushed.host, pushed.repo, "v1", pushed.digest))

    assert [deletion.action for deletion in planned] == [DeletionAction.DELETE]
    assert [(deletion.outcome, deletion.message) for deletion in applied] == [(
        DeletionOutcome.REFUSED,
        f"{pushed.digest} is also tagged theirs; deleting it by digest would remove that tag too; kept")]
    assert skopeo_inspect_raw(pushed.ref) == pushed.manifest
    assert skopeo_inspect_raw(f"{pushed.host}/{pushed.repo}:theirs") == pushed.manifest


def test_our_tags_on_one_digest_go_together(push_image, plain_registry):
    """Two candidates on one digest would each refuse for the other's tag if asked alone."""
    pushed = push_image("oci")
    tag(plain_registry, pushed, "v2")

    _, applied = prune(removed(pushed.host, pushed.repo, "v1", pushed.digest),
                       removed(pushed.host, pushed.repo, "v2", pushed.digest))

    assert [(str(deletion.target.tag), deletion.outcome) for deletion in applied] == [
        ("v1", DeletionOutcome.DELETED), ("v2", DeletionOutcome.DELETED)]
    assert gone(pushed.ref) and gone(f"{pushed.host}/{pushed.repo}:v2")


def test_a_child_of_an_index_another_tag_holds_is_kept(push_image, plain_registry):
    pushed = push_image("oci-index")
    child = pushed.children[0]
    tag(plain_registry, pushed, "ours", child.raw, child.media_type)

    _, applied = prune(removed(pushed.host, pushed.repo, "ours", child.digest))

    assert [(deletion.outcome, deletion.message) for deletion in applied] == [(
        DeletionOutcome.REFUSED,
        f"{child.digest} is listed by the index tagged v1; deleting it by digest would break that index; kept")]
    assert skopeo_inspect_raw(f"{pushed.host}/{pushed.repo}:ours") == child.raw
    assert skopeo_inspect_raw(f"{pushed.host}/{pushed.repo}@{child.digest}") == child.raw


def test_a_tag_someone_re_pointed_is_refused_and_kept(push_image, plain_registry):
    ours = push_image("oci")
    theirs = push_image("docker", repo=ours.repo, tag="theirs")
    tag(plain_registry, theirs, "v1")  # v1, where we wrote ours, now holds theirs

    planned, applied = prune(removed(ours.host, ours.repo, "v1", ours.digest))

    message = f"now holds {theirs.digest}, not the {ours.digest} we wrote; kept"
    assert [(deletion.action, deletion.message) for deletion in planned] == [(DeletionAction.REFUSED, message)]
    assert [(deletion.outcome, deletion.message) for deletion in applied] == [(DeletionOutcome.REFUSED, message)]
    assert skopeo_inspect_raw(ours.ref) == theirs.manifest


def test_a_tag_re_pointed_after_planning_is_refused_at_apply(push_image, plain_registry):
    ours = push_image("oci")
    theirs = push_image("docker", repo=ours.repo, tag="theirs")
    candidate = removed(ours.host, ours.repo, "v1", ours.digest)

    async def main():
        async with registries() as regs:
            planned = await plan_deletions(regs, [candidate])
            tag(plain_registry, theirs, "v1")
            return planned, await apply_deletions(regs, planned)

    planned, applied = run(main())

    assert [deletion.action for deletion in planned] == [DeletionAction.DELETE]
    assert [(deletion.outcome, deletion.message) for deletion in applied] == [(
        DeletionOutcome.REFUSED,
        f"now holds {theirs.digest}, not the {ours.digest} we wrote; kept")]
    assert skopeo_inspect_raw(ours.ref) == theirs.manifest
    assert skopeo_inspect_raw(f"{ours.host}/{ours.repo}@{ours.digest}") == ours.manifest


def test_an_absent_tag_is_gone_with_nothing_to_do(push_image, plain_registry):
    pushed = push_image("oci")

    planned, applied = prune(removed(pushed.host, pushed.repo, "never", pushed.digest))

    assert [deletion.action for deletion in planned] == [DeletionAction.GONE]
    assert [(deletion.outcome, deletion.message) for deletion in applied] == [(DeletionOutcome.GONE, None)]
    assert skopeo_inspect_raw(pushed.ref) == pushed.manifest


def test_a_registry_with_deletion_off_refuses_in_one_line(push_image, undeleting_registry):
    pushed = push_image("oci", registry=undeleting_registry)
    other = push_image("docker", registry=undeleting_registry)

    _, applied = prune(removed(pushed.host, pushed.repo, "v1", pushed.digest))

    assert [(deletion.outcome, deletion.message) for deletion in applied] == [(
        DeletionOutcome.REFUSED,
        f"{undeleting_registry.host} does not allow deleting manifests (docker-registry needs "
        "storage.delete.enabled: true; other registries the delete permission); kept")]
    assert skopeo_inspect_raw(pushed.ref) == pushed.manifest
    assert skopeo_inspect_raw(other.ref) == other.manifest


def test_a_registry_that_says_it_deleted_a_tag_is_checked(push_image, plain_registry, fault_proxy):
    """A 202 to the tag's DELETE that left the tag: the digest path, with its checks, takes over."""
    pushed = push_image("oci")
    tag(plain_registry, pushed, "theirs")
    proxy = fault_proxy(plain_registry)
    proxy.fail("DELETE", "/manifests/v1$", status=202, times=None)

    _, applied = prune(removed(proxy.host, pushed.repo, "v1", pushed.digest))

    assert [deletion.outcome for deletion in applied] == [DeletionOutcome.REFUSED]
    assert "also tagged theirs" in applied[0].message
    assert skopeo_inspect_raw(pushed.ref) == pushed.manifest


def test_a_failing_delete_fails_that_candidate_alone(push_image, plain_registry, fault_proxy):
    failing, deleted = push_image("oci"), push_image("docker")
    proxy = fault_proxy(plain_registry)
    proxy.fail("DELETE", f"{failing.repo}/manifests/sha256:", status=500, times=None,
               body=b'{"errors":[{"code":"UNKNOWN","message":"storage on fire"}]}')

    _, applied = prune(removed(proxy.host, failing.repo, "v1", failing.digest),
                       removed(proxy.host, deleted.repo, "v1", deleted.digest))

    outcomes = {deletion.target.repository.path: (deletion.outcome, deletion.message) for deletion in applied}
    assert outcomes[deleted.repo] == (DeletionOutcome.DELETED, None)
    outcome, message = outcomes[failing.repo]
    assert outcome is DeletionOutcome.FAILED and "HTTP 500" in message and "storage on fire" in message
    assert skopeo_inspect_raw(failing.ref) == failing.manifest
    assert gone(deleted.ref)


@pytest.mark.parametrize("held", [None, "sha256:" + "0" * 64])
def test_the_rule(held):
    candidate = removed("registry.example", "a/b", "v1", "sha256:" + "1" * 64)
    expected = DeletionAction.GONE if held is None else DeletionAction.REFUSED
    assert decide_deletion(candidate, Digest.parse(held) if held else None).action is expected
    assert decide_deletion(candidate, candidate.digest).action is DeletionAction.DELETE


def test_lock_keeps_only_the_candidates_whose_tag_still_holds_what_we_wrote(push_image, plain_registry, fault_proxy):
    ours, theirs, unasked = push_image("oci"), push_image("docker"), push_image("oci-index")
    proxy = fault_proxy(plain_registry)
    proxy.fail("HEAD", f"{unasked.repo}/manifests/", status=500, times=None)
    candidates = [removed(ours.host, ours.repo, "v1", ours.digest),
                  removed(ours.host, ours.repo, "never", ours.digest),
                  removed(theirs.host, theirs.repo, "v1", ours.digest),
                  removed(proxy.host, unasked.repo, "v1", unasked.digest)]

    async def main():
        async with registries(retry=RetryPolicy(attempts=1)) as regs:
            return await still_ours(regs, candidates)

    kept, left = run(main())

    assert kept == (candidates[0], candidates[3])  # the one that could not be asked stays, for plan to say why
    assert [(deletion.removed, deletion.action) for deletion in left] == [
        (candidates[1], DeletionAction.GONE), (candidates[2], DeletionAction.REFUSED)]
