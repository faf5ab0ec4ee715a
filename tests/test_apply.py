"""apply.py: copies start as soon as a target is found lacking its image, not after the whole plan;
a saved plan is applied only when it is, field by field, what planning the lock gives."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import images as harness_images
from tests.harness.artifacts import push_artifact, push_referrers_index, subject_descriptor
from tests.harness.fault_proxy import FaultProxy
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import CliResult, run_cli, write_images


def test_an_image_is_copied_while_another_target_is_still_being_asked(
    tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    base = unique_repo("pipeline")
    quick, slow = (push_image("oci", repo=f"{base}/{name}") for name in ("quick", "slow"))
    target = fault_proxy(second_plain_registry)
    mirror = unique_repo("mirror")
    write_images(tmp_path, f"{target.host}/{mirror}/", [{"source": f"{plain_registry.host}/{image.repo}:v1"}
                                                        for image in (quick, slow)])
    assert run_cli(tmp_path, "lock").code == 0
    target.delay("HEAD", f"/{slow.repo}/manifests/v1$", seconds=3.0)  # the slow target's first question

    applied = run_cli(tmp_path, "apply")

    assert applied.code == 0, applied.stdout + applied.stderr
    asked_slow = target.requests_matching("HEAD", f"/{slow.repo}/manifests/v1$")[0]
    tagged_quick = target.requests_matching("PUT", f"/{quick.repo}/manifests/v1$")[0]
    # Recorded in order of arrival: the slow image asks nothing more until its held HEAD is answered.
    held = target.requests.index(asked_slow)
    slow_goes_on = next(at for at, request in enumerate(target.requests)
                        if at > held and f"/{slow.repo}/" in request.path)
    assert target.requests.index(tagged_quick) < slow_goes_on  # copied and tagged while that HEAD was held
    for image in (quick, slow):
        prefix = f"{second_plain_registry.host}/{mirror}/{plain_registry.host.replace(':', '_')}"
        assert skopeo_inspect_raw(f"{prefix}/{image.repo}:v1") == image.manifest


# -- a saved plan is checked whole (issue 21, finding 4) -------------------------------------------------

SBOM = "application/spdx+json"
WRITES = ("PUT", "POST", "PATCH", "DELETE")
RUN_PLAN_AGAIN = "; run `image-syncer plan` again"


@dataclass(frozen=True)
class SavedPlanMirror:
    """A locked mirror with a saved plan that creates a platform subset and a signed image (two
    pinned referrers, one more upstream since locking) and leaves one image unchanged."""

    workdir: Path
    plan: dict
    targets: dict[str, str]
    """By name (subset, signed, unchanged): the image's target reference."""
    repositories: tuple[str, ...]
    """The target repositories, as docker-registry names them."""
    proxy: FaultProxy
    """In front of the target registry: it records every request apply makes."""


def _image(plan: dict, mirror: SavedPlanMirror, name: str) -> dict:
    return next(image for image in plan["images"] if image["target"] == mirror.targets[name])


@pytest.fixture(scope="module")
def saved_plan_mirror(tmp_path_factory, plain_registry, second_plain_registry) -> Iterator[SavedPlanMirror]:
    workdir = tmp_path_factory.mktemp("saved-plan")
    proxy = FaultProxy(second_plain_registry.url).start()
    index = harness_images.push_image(harness_images.build_image("oci-index", seed="saved-subset"), plain_registry,
                                      "saved/subset", "v1")
    signed = harness_images.push_image(harness_images.build_image("oci", seed="saved-signed"), plain_registry,
                                       "saved/signed", "v1")
    unchanged = harness_images.push_image(harness_images.build_image("docker", seed="saved-unchanged"),
                                          plain_registry, "saved/unchanged", "v1")
    subject = subject_descriptor(signed.manifest, signed.media_type)
    with RawRegistry(plain_registry) as raw:
        sbom = push_artifact(raw, signed.repo, subject, SBOM, b'{"spdxVersion": "SPDX-2.3"}')
        push_referrers_index(raw, signed.repo, signed.digest, [sbom])
        push_artifact(raw, signed.repo, subject, "ignored", b"signature", tag=signed.digest.replace(":", "-") + ".sig")
    prefix = f"{proxy.host}/saved-mirror/"
    sources = {name: f"{pushed.host}/{pushed.repo}:v1" for name, pushed in
               (("subset", index), ("signed", signed), ("unchanged", unchanged))}
    write_images(workdir, prefix, [{"source": sources["unchanged"]}])
    assert run_cli(workdir, "lock").code == 0 and run_cli(workdir, "apply").code == 0
    write_images(workdir, prefix, [{"source": sources["subset"], "platforms": {"only": ["linux/amd64"]}},
                                   {"source": sources["signed"]}, {"source": sources["unchanged"]}])
    assert run_cli(workdir, "lock").code == 0
    with RawRegistry(plain_registry) as raw:  # signed upstream after locking: the plan notes it, and copies none
        push_artifact(raw, signed.repo, subject, "ignored", b"attestation",
                      tag=signed.digest.replace(":", "-") + ".att")
    planned = run_cli(workdir, "plan", "--out", "plan.json")
    assert planned.code == 0, str(planned)
    targets = {name: f"{prefix}{source.replace(plain_registry.host, plain_registry.host.replace(':', '_'))}"
               for name, source in sources.items()}
    repositories = tuple(target.split("/", 1)[1].rsplit(":", 1)[0] for target in targets.values())
    mirror = SavedPlanMirror(workdir, json.loads((workdir / "plan.json").read_text()), targets, repositories, proxy)
    assert {name: (_image(mirror.plan, mirror, name)["action"], len(_image(mirror.plan, mirror, name)["referrers"]),
                   len(_image(mirror.plan, mirror, name)["newReferrers"]))
            for name in targets} == {"subset": ("create", 0, 0), "signed": ("create", 2, 1),
                                     "unchanged": ("unchanged", 0, 0)}
    yield mirror
    proxy.stop()


def _held(registry, repositories: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Every tag of the target repositories and the digest it holds, asked of docker-registry itself."""
    with RawRegistry(registry) as raw:
        return {repository: {tag: raw.head_manifest(repository, tag).headers.get("docker-content-digest")
                             for tag in raw.tags(repository)} for repository in repositories}


def _edited(name: str, change: Callable[[dict, dict], None]) -> Callable[[dict, SavedPlanMirror], None]:
    """``change(image, plan)`` applied to the saved plan's image ``name``."""
    return lambda plan, mirror: change(_image(plan, mirror, name), plan)


def _set(key: str, value: object) -> Callable[[dict, dict], None]:
    return lambda image, _plan: image.update({key: value})


def _referrer(position: int, key: str, value: object) -> Callable[[dict, dict], None]:
    return lambda image, _plan: image["referrers"][position].update({key: value})


def _apply_edited(mirror: SavedPlanMirror, target_registry, edit: Callable[[dict, SavedPlanMirror], None],
                  *args: str) -> CliResult:
    """``apply ARGS edited.json`` of the saved plan edited, checked to have written nothing to the target."""
    plan = copy.deepcopy(mirror.plan)
    edit(plan, mirror)
    (mirror.workdir / "edited.json").write_text(json.dumps(plan))
    before = _held(target_registry, mirror.repositories)
    mirror.proxy.clear()
    applied = run_cli(mirror.workdir, "apply", *args, "edited.json")
    assert [f"{request.method} {request.path}" for request in mirror.proxy.requests
            if request.method in WRITES] == [], str(applied)
    assert _held(target_registry, mirror.repositories) == before, str(applied)
    return applied


OTHER_DIGEST = "sha256:" + "0" * 64


@pytest.mark.parametrize(("edit", "name", "difference"), [
    (_edited("subset", _set("subset", None)), "subset", "subset is null"),
    (_edited("subset", lambda image, _: image["subset"].update(digest=OTHER_DIGEST)), "subset",
     f'subset.digest is "{OTHER_DIGEST}"'),
    (_edited("subset", lambda image, _: image["subset"].update(platforms=["linux/arm64"])), "subset",
     'subset.platforms[0] is "linux/arm64"'),
    (_edited("signed", lambda image, _: image["referrers"].append(image["newReferrers"].pop())), "signed",
     "referrers lists 3"),
    (_edited("signed", lambda image, _: image["referrers"].pop()), "signed", "referrers lists 1"),
    (_edited("signed", _referrer(0, "digest", OTHER_DIGEST)), "signed", f'referrers[0].digest is "{OTHER_DIGEST}"'),
    (_edited("signed", _referrer(0, "artifactType", "application/x-other")), "signed",
     'referrers[0].artifactType is "application/x-other"'),
    (_edited("signed", _referrer(0, "mediaType", "application/vnd.docker.distribution.manifest.v2+json")),
     "signed", 'referrers[0].mediaType is "application/vnd.docker.distribution.manifest.v2+json"'),
    (_edited("signed", _referrer(0, "foundBy", "referrers-api")), "signed", 'referrers[0].foundBy is "referrers-api"'),
    (_edited("unchanged", _set("action", "create")), "unchanged", 'action is "create"'),
    (_edited("subset", _set("action", "unchanged")), "subset", 'action is "unchanged"'),
    (_edited("subset", lambda image, _: image["platforms"].pop()), "subset", "platforms lists 1"),
    (_edited("signed", _set("platforms", ["linux/amd64"])), "signed", "platforms lists 1"),
    (lambda plan, mirror: plan["images"].reverse(), "signed", "source is"),
], ids=["subset removed", "subset digest changed", "subset platforms changed", "a new referrer added",
        "a referrer removed", "a referrer's digest changed", "a referrer's artifact type changed",
        "a referrer's media type changed", "how a referrer was found changed", "unchanged made create",
        "create made unchanged", "an index's platform removed", "platforms given to a single image",
        "images reordered"])
def test_a_saved_plan_that_says_other_than_the_lock_is_refused_whole(saved_plan_mirror, second_plain_registry,
                                                                     edit, name, difference):
    mirror = saved_plan_mirror

    applied = _apply_edited(mirror, second_plain_registry, edit)

    assert applied.code == 1 and len(applied.error_lines) == 1, str(applied)
    line = applied.error_lines[0]
    refused = f"error: saved plan does not match the lock file: {mirror.targets[name]}: {difference}"
    assert line.startswith(refused), line
    assert " in the plan, but planning the lock gives " in line and line.endswith(RUN_PLAN_AGAIN), line
    assert "Traceback" not in applied.stderr


def _set_plan(key: str, value: object) -> Callable[[dict, SavedPlanMirror], None]:
    return lambda plan, _mirror: plan.update({key: value})


@pytest.mark.parametrize(("edit", "args", "line"), [
    (_edited("unchanged", lambda image, _: image.update(action="create", targetDigest=None)), (),
     "error: saved plan is stale: {unchanged} now holds {held}; run `image-syncer plan` again"),
    (_set_plan("lockDigest", OTHER_DIGEST), (),
     "error: saved plan is stale: the lock file changed since it was made; run `image-syncer plan` again"),
    (_set_plan("shard", "1/1"), (), "error: saved plan was made with --shard 1/1: apply it with --shard 1/1"),
    (lambda plan, mirror: None, ("--shard", "1/1"),
     "error: saved plan was made without --shard: apply it without --shard"),
], ids=["a target written since planning", "the lock's digest", "the shard it was made with",
        "applied with another shard"])
def test_a_saved_plan_stale_or_of_another_shard_is_still_refused(saved_plan_mirror, second_plain_registry,
                                                                 edit, args, line):
    """Held before the plan was checked whole: these were refused already, and still are."""
    mirror = saved_plan_mirror

    applied = _apply_edited(mirror, second_plain_registry, edit, *args)

    held = _image(mirror.plan, mirror, "unchanged")["digest"]
    assert (applied.code, applied.error_lines) == (1, [line.format(**mirror.targets, held=held)]), str(applied)


def test_the_saved_plan_as_made_applies(saved_plan_mirror, second_plain_registry):
    """Last, since it changes the targets: the plan the cases above edit is a good one."""
    mirror = saved_plan_mirror
    subset, signed = (_image(mirror.plan, mirror, name) for name in ("subset", "signed"))

    applied = run_cli(mirror.workdir, "apply", "plan.json")

    assert applied.code == 0, str(applied)
    assert applied.stdout_lines[-1].startswith("Apply: 2 copied, 1 unchanged, 0 refused, 0 failed"), str(applied)
    held = _held(second_plain_registry, mirror.repositories)
    subset_repository, signed_repository, _ = mirror.repositories
    assert held[subset_repository] == {"v1": subset["subset"]["digest"]}
    sig = signed["digest"].replace(":", "-")
    assert sorted(held[signed_repository]) == [sig, f"{sig}.sig", "v1"]  # the fallback index, not the new .att
