"""Pruning end to end through the CLI: ``prune: true`` in images.yaml, ``lock`` recording what left
it in ``removed:``, ``plan`` showing the deletions, ``apply`` deleting them last and never what it
did not write. Sources live on ``plain_registry``, mirrors on ``second_plain_registry`` (deletion
on); what a target holds is changed and checked with the harness (skopeo, raw HTTP).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.harness import images as harness_images
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import CliResult, run_cli
from tests.test_prune import gone


def ok(result: CliResult, code: int = 0) -> CliResult:
    assert result.code == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    return result


class Mirror:
    """images.yaml of ``sources`` mirrored under ``<registry>/<base>/``."""

    def __init__(self, workdir: Path, registry, base: str) -> None:
        self.workdir, self.registry, self.base = workdir, registry, base

    def write(self, *sources: str, prune: bool | None = True, **entry) -> None:
        document: dict = {"targetRepoPrefix": f"{self.registry.host}/{self.base}/"}
        if prune is not None:
            document["prune"] = prune
        document["images"] = [{"source": source, **entry} for source in sources]
        (self.workdir / "images.yaml").write_text(yaml.safe_dump(document, sort_keys=False))

    def path(self, pushed) -> str:
        return f"{self.base}/{pushed.host.replace(':', '_')}/{pushed.repo}"

    def target(self, pushed, tag: str | None = None) -> str:
        return f"{self.registry.host}/{self.path(pushed)}:{tag or pushed.tag}"

    def tag(self, pushed, tag: str) -> None:
        """Another writer's tag on the mirror of ``pushed``."""
        with RawRegistry(self.registry) as raw:
            answer = raw.put_manifest(self.path(pushed), tag, pushed.manifest, pushed.media_type)
            assert answer.status_code == 201, answer.text

    def squat(self, pushed) -> harness_images.PushedImage:
        """Another writer's image pushed under the mirror of ``pushed``'s tag."""
        return harness_images.push_image(harness_images.build_image("oci", seed="squatter"), self.registry,
                                         self.path(pushed), pushed.tag)

    def cli(self, *args: str, code: int = 0) -> CliResult:
        return ok(run_cli(self.workdir, *args), code)

    def mirrored(self, sources: list[str], then: list[str]) -> None:
        """``sources`` locked and applied; then images.yaml lists ``then`` instead, locked."""
        self.write(*sources)
        self.cli("lock")
        self.cli("apply")
        self.write(*then)
        self.cli("lock")

    def lock_text(self) -> str:
        return (self.workdir / "images.lock").read_text()


def source(pushed) -> str:
    return f"{pushed.host}/{pushed.repo}:{pushed.tag}"


def mirror_of(tmp_path, registry, unique_repo) -> Mirror:
    return Mirror(tmp_path, registry, unique_repo("mirror"))


def test_an_entry_removed_is_deleted_and_a_digest_tagged_otherwise_is_kept(
        tmp_path, push_image, second_plain_registry, unique_repo):
    alone, shared, staying = push_image("oci"), push_image("docker"), push_image("oci-index")
    mirror = mirror_of(tmp_path, second_plain_registry, unique_repo)
    mirror.write(source(alone), source(shared), source(staying))
    mirror.cli("lock")
    mirror.cli("apply")
    mirror.tag(shared, "theirs")  # someone else's tag on the digest we wrote
    mirror.write(source(staying))

    locked = mirror.cli("lock")
    assert f"  dropped {mirror.target(alone)}; apply deletes it (prune)" in locked.stderr_lines, str(locked)
    assert yaml.safe_load(mirror.lock_text())["removed"] == [
        {"target": mirror.target(target), "digest": target.digest} for target in sorted(
            (alone, shared), key=mirror.target)]

    planned = mirror.cli("plan", "--detailed-exitcode", code=2)
    assert f"  - delete {mirror.target(alone)} ({alone.digest})" in planned.stdout_lines, str(planned)
    assert f"  - delete {mirror.target(shared)} ({shared.digest})" in planned.stdout_lines
    assert planned.stdout_lines[-1] == "Plan: 0 to create, 2 to delete, 1 unchanged, 0 refused."
    as_json = json.loads(mirror.cli("plan", "--format", "json").stdout)
    assert [(deletion["target"], deletion["action"]) for deletion in as_json["deletions"]] == sorted(
        [(mirror.target(alone), "delete"), (mirror.target(shared), "delete")])

    applied = mirror.cli("apply", code=1)

    assert f"  - {mirror.target(alone)}  deleted" in applied.stdout_lines, str(applied)
    assert (f"  ! {mirror.target(shared)}  refused: {shared.digest} is also tagged theirs; deleting it by digest "
            "would remove that tag too; kept") in applied.stdout_lines
    assert gone(mirror.target(alone))
    assert skopeo_inspect_raw(mirror.target(shared)) == shared.manifest
    assert skopeo_inspect_raw(mirror.target(shared, "theirs")) == shared.manifest
    assert skopeo_inspect_raw(mirror.target(staying)) == staying.manifest

    mirror.write(source(shared), source(staying))  # back in images.yaml: no longer to delete
    mirror.cli("lock")
    assert "removed" not in yaml.safe_load(mirror.lock_text())


def test_with_prune_off_nothing_is_recorded_planned_or_deleted(tmp_path, push_image, second_plain_registry,
                                                               unique_repo):
    leaving, staying = push_image("oci"), push_image("docker")
    mirror = mirror_of(tmp_path, second_plain_registry, unique_repo)
    mirror.write(source(leaving), source(staying), prune=None)
    mirror.cli("lock")
    mirror.cli("apply")
    mirror.write(source(staying), prune=True)
    mirror.cli("lock")
    assert "removed" in yaml.safe_load(mirror.lock_text())

    mirror.write(source(staying), prune=False)
    before_lock = mirror.cli("plan", "--detailed-exitcode")  # removed: still in the lock, prune off: no deletion
    assert before_lock.stdout_lines[-1] == "Plan: 0 to create, 1 unchanged, 0 refused.", str(before_lock)
    mirror.cli("apply")
    assert skopeo_inspect_raw(mirror.target(leaving)) == leaving.manifest
    locked = mirror.cli("lock")
    assert (f"  forgot {mirror.target(leaving)}: not to be deleted: prune is off in images.yaml"
            in locked.stderr_lines), str(locked)
    assert "removed" not in mirror.lock_text()
    planned = mirror.cli("plan", "--detailed-exitcode")
    assert planned.stdout_lines[-1] == "Plan: 0 to create, 1 unchanged, 0 refused.", str(planned)
    mirror.cli("apply")
    assert skopeo_inspect_raw(mirror.target(leaving)) == leaving.manifest


def test_over_the_cap_apply_is_refused_whole(tmp_path, push_image, second_plain_registry, unique_repo):
    first, second, new = push_image("oci"), push_image("docker"), push_image("oci-index")
    mirror = mirror_of(tmp_path, second_plain_registry, unique_repo)
    mirror.mirrored([source(first), source(second)], then=[source(new)])

    planned = mirror.cli("plan", "--max-deletes", "1", code=1)
    assert planned.error_lines == [
        "error: 2 deletions planned, over --max-deletes 1: apply would refuse this plan; review them with "
        "`image-syncer plan`, then apply with --max-deletes 2"], str(planned)
    refused = mirror.cli("apply", "--max-deletes", "1", code=1)

    assert refused.error_lines == [
        "error: 2 deletions planned, over --max-deletes 1: nothing copied or deleted; review them with "
        "`image-syncer plan`, then apply with --max-deletes 2"], str(refused)
    assert gone(mirror.target(new))
    assert skopeo_inspect_raw(mirror.target(first)) == first.manifest
    assert skopeo_inspect_raw(mirror.target(second)) == second.manifest
    mirror.cli("apply", "--max-deletes", "2")
    assert gone(mirror.target(first)) and gone(mirror.target(second))
    assert skopeo_inspect_raw(mirror.target(new)) == new.manifest


def test_a_candidate_someone_re_pointed_is_refused_kept_and_forgotten(
        tmp_path, push_image, second_plain_registry, unique_repo):
    ours, staying = push_image("oci"), push_image("docker")
    mirror = mirror_of(tmp_path, second_plain_registry, unique_repo)
    mirror.mirrored([source(ours), source(staying)], then=[source(staying)])
    mirror.cli("plan", "--out", "plan.json")
    squatter = mirror.squat(ours)

    stale = mirror.cli("apply", "plan.json", code=1)
    assert stale.error_lines == [f"error: saved plan is stale: {mirror.target(ours)} now holds {squatter.digest}; "
                                 "run `image-syncer plan` again"], str(stale)
    planned = mirror.cli("plan", code=1)
    message = f"now holds {squatter.digest}, not the {ours.digest} we wrote"
    assert f"  ! refused {mirror.target(ours)}: {message}; kept" in planned.stdout_lines, str(planned)
    mirror.cli("apply", code=1)
    assert skopeo_inspect_raw(mirror.target(ours)) == squatter.manifest

    locked = mirror.cli("lock")
    assert f"  forgot {mirror.target(ours)}: {message}; no longer ours to delete" in locked.stderr_lines, str(locked)
    assert "removed" not in mirror.lock_text()
    mirror.cli("apply")
    assert skopeo_inspect_raw(mirror.target(ours)) == squatter.manifest


def test_a_tag_a_rule_dropped_at_upgrade_is_deleted_after_the_new_one_is_copied(
        tmp_path, plain_registry, second_plain_registry, unique_repo):
    repo = unique_repo("rule")
    old = harness_images.push_image(harness_images.build_image("oci", seed="old"), plain_registry, repo, "1.0.0")
    mirror = mirror_of(tmp_path, second_plain_registry, unique_repo)
    mirror.write(f"{plain_registry.host}/{repo}", tags={"semver": ">=1", "latest": 1})
    mirror.cli("lock")
    mirror.cli("apply")
    new = harness_images.push_image(harness_images.build_image("oci", seed="new"), plain_registry, repo, "1.1.0")

    mirror.cli("lock", "--upgrade")
    applied = mirror.cli("apply")

    assert f"  - {mirror.target(old)}  deleted" in applied.stdout_lines, str(applied)
    assert gone(mirror.target(old))
    assert skopeo_inspect_raw(mirror.target(new)) == new.manifest


def test_a_failed_copy_skips_every_deletion(tmp_path, push_image, second_plain_registry, unique_repo, fault_proxy,
                                            plain_registry):
    leaving, failing = push_image("oci"), push_image("docker")
    proxy = fault_proxy(plain_registry)
    mirror = mirror_of(tmp_path, second_plain_registry, unique_repo)
    mirror.mirrored([source(leaving)], then=[f"{proxy.host}/{failing.repo}:v1"])
    proxy.fail("GET", "/manifests/", status=500, times=None)

    applied = mirror.cli("apply", "--retries", "0", code=1)

    assert ("  > 1 deletion(s) skipped: not tried: 1 image(s) of this run were not copied, and deletions run only "
            "after every copy succeeded") in applied.stdout_lines, str(applied)
    assert skopeo_inspect_raw(mirror.target(leaving)) == leaving.manifest


def test_a_registry_that_refuses_deletion_is_one_line(tmp_path, push_image, undeleting_registry, unique_repo):
    leaving, staying, new = push_image("oci"), push_image("docker"), push_image("oci-index")
    mirror = mirror_of(tmp_path, undeleting_registry, unique_repo)
    mirror.mirrored([source(leaving), source(staying)], then=[source(staying), source(new)])

    applied = mirror.cli("apply", code=1)

    assert [line for line in applied.stdout_lines if "  ! " in line] == [
        f"  ! {mirror.target(leaving)}  refused: {undeleting_registry.host} does not allow deleting manifests "
        "(docker-registry needs storage.delete.enabled: true; other registries the delete permission); kept"
    ], str(applied)
    assert skopeo_inspect_raw(mirror.target(leaving)) == leaving.manifest
    assert skopeo_inspect_raw(mirror.target(new)) == new.manifest
