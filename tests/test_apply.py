"""apply.py's decisions, end to end: the real CLI against real registries, a fault proxy in front of the target.

Here: copies start as soon as a target is found lacking its image; a saved plan is applied only when it is, field
by field, what planning the lock gives (and not when stale or of another shard); a tag set by another writer while
copying is refused; a referrer refused or failing after its image is in; a stop before the tag push and before the
referrers, each line saying what the target holds.
Elsewhere: conflict, source-missing, a tag push refused (immutable tag) or not kept, live stale plans: test_workflow;
stale shard plans: test_shard; deferral: test_pulls; the signature re-check: test_referrers; a subset rebuilt
otherwise: test_choosing; a bug writing referrers: test_last_resort; a stop before/while copying, a tag push
waited for: test_runtime; failing target answers: test_hostile."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.harness import images as harness_images
from tests.harness.artifacts import push_artifact, push_referrers_index, subject_descriptor
from tests.harness.fault_proxy import FaultProxy
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import CliResult, cli_env, run_cli, write_images


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


# -- apply's decisions, image by image ---------------------------------------------------------------------
# What the target holds is asked of docker-registry itself (raw HTTP), never through the proxy.

REFUSED_BY_POLICY = '{"errors":[{"code":"DENIED","message":"manifests under this tag are not accepted"}]}'


@dataclass(frozen=True)
class Mirrored:
    """An image pushed to the source registry and locked, its target named through a fault proxy."""

    image: harness_images.PushedImage
    target: str
    """The target reference, as images.yaml and apply's lines name it (through the proxy)."""
    repository: str
    """The target repository, as docker-registry names it."""

    @property
    def sig_tag(self) -> str:
        return self.image.digest.replace(":", "-") + ".sig"

    def tag_path(self, tag: str = "v1") -> str:
        return f"/v2/{self.repository}/manifests/{tag}$"


def _mirrored(workdir: Path, plain_registry, proxy: FaultProxy, unique_repo, seed: str, kinds: tuple[str, ...],
              signed: bool = False) -> list[Mirrored]:
    """Push one image of each kind, built from ``seed`` (the first with a cosign signature tag when ``signed``),
    into fresh repositories, and lock them."""
    pushed = [harness_images.push_image(harness_images.build_image(kind, seed=f"{seed}-{kind}"),
                                        plain_registry, unique_repo(kind), "v1") for kind in kinds]
    if signed:
        first = pushed[0]
        with RawRegistry(plain_registry) as raw:
            push_artifact(raw, first.repo, subject_descriptor(first.manifest, first.media_type), "ignored",
                          b"signature", tag=first.digest.replace(":", "-") + ".sig")
    mirror = unique_repo("mirror")
    write_images(workdir, f"{proxy.host}/{mirror}/", [{"source": f"{image.host}/{image.repo}:v1"} for image in pushed])
    locked = run_cli(workdir, "lock")
    assert locked.code == 0, str(locked)
    source_host = plain_registry.host.replace(":", "_")
    return [Mirrored(image, f"{proxy.host}/{mirror}/{source_host}/{image.repo}:v1",
                     f"{mirror}/{source_host}/{image.repo}") for image in pushed]


def _holds(registry, repository: str, tag: str = "v1") -> str | None:
    """The digest the target tag holds, asked of docker-registry directly; None when the tag is absent."""
    with RawRegistry(registry) as raw:
        answer = raw.head_manifest(repository, tag)
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, (repository, tag, answer.status_code)
    return answer.headers["docker-content-digest"]


def _ended(applied: CliResult, code: int, counts: str) -> None:
    assert applied.code == code, str(applied)
    assert "Traceback" not in applied.stderr, str(applied)
    assert applied.stdout_lines[-1].startswith(f"Apply: {counts} ("), str(applied)


def test_a_tag_another_writer_set_while_copying_is_refused_kept_and_the_others_are_copied(
    tmp_path, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    """The re-check right before the tag push: a registry with mutable tags would let apply overwrite it."""
    proxy = fault_proxy(second_plain_registry)
    wanted, bystander = _mirrored(tmp_path, plain_registry, proxy, unique_repo, "set-while-copying",
                                  ("oci", "docker-list"))
    squatter = harness_images.push_image(harness_images.build_image("oci", seed="squatter-while-copying"),
                                         second_plain_registry, wanted.repository, "v1")
    proxy.fail("HEAD", wanted.tag_path(), status=404, times=1)  # free when apply plans it; set by the re-check

    applied = run_cli(tmp_path, "apply")

    _ended(applied, 1, "1 copied, 0 unchanged, 1 refused, 0 failed")
    assert (f"  ! {wanted.target}  refused: target tag was set to {squatter.digest} while copying; "
            "refusing to overwrite") in applied.stdout_lines, str(applied)
    assert proxy.count("HEAD", wanted.tag_path()) == 2  # planned, re-checked: nothing more
    assert proxy.count("PUT", wanted.tag_path()) == 0
    assert _holds(second_plain_registry, wanted.repository) == squatter.digest
    assert _holds(second_plain_registry, bystander.repository) == bystander.image.digest


def test_a_signature_tag_holding_another_manifest_refuses_the_image_copied_then_unchanged(
    tmp_path, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    """The image goes in first (its referrers need their subject there); a referrer is never written over."""
    proxy = fault_proxy(second_plain_registry)
    (signed,) = _mirrored(tmp_path, plain_registry, proxy, unique_repo, "sig-squatted", ("oci",), signed=True)
    (pinned,) = yaml.safe_load((tmp_path / "images.lock").read_text())["images"][0]["referrers"]
    with RawRegistry(second_plain_registry) as raw:
        stranger = push_artifact(raw, signed.repository, subject_descriptor(signed.image.manifest,
                                                                            signed.image.media_type),
                                 "ignored", b"a stranger's signature", tag=signed.sig_tag)
    refusal = (f"a referrer was refused: {signed.target.rsplit(':', 1)[0]}:{signed.sig_tag} holds {stranger.digest}, "
               f"not the locked referrer {pinned['digest']}; not overwritten")

    first, again = run_cli(tmp_path, "apply"), run_cli(tmp_path, "apply")

    _ended(first, 1, "0 copied, 0 unchanged, 1 refused, 0 failed")
    assert f"  ! {signed.target}  refused: copied, but {refusal}" in first.stdout_lines, str(first)
    _ended(again, 1, "0 copied, 0 unchanged, 1 refused, 0 failed")
    assert f"  ! {signed.target}  refused: unchanged, but {refusal}" in again.stdout_lines, str(again)
    assert _holds(second_plain_registry, signed.repository) == signed.image.digest
    assert _holds(second_plain_registry, signed.repository, signed.sig_tag) == stranger.digest
    assert proxy.count("PUT", signed.tag_path(signed.sig_tag)) == 0


def test_a_referrer_the_target_will_not_store_fails_the_image_that_was_copied(
    tmp_path, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    proxy = fault_proxy(second_plain_registry)
    (signed,) = _mirrored(tmp_path, plain_registry, proxy, unique_repo, "referrer-not-stored", ("oci",), signed=True)
    proxy.fail("PUT", signed.tag_path(signed.sig_tag), status=400, times=None, body=REFUSED_BY_POLICY,
               headers={"Content-Type": "application/json"})

    applied = run_cli(tmp_path, "apply")

    _ended(applied, 1, "0 copied, 0 unchanged, 0 refused, 1 failed")
    (line,) = [line for line in applied.stdout_lines if line.startswith(f"  x {signed.target}  ")]
    assert line.startswith(f"  x {signed.target}  failed: copied, but its referrers failed: "), line
    assert "400" in line and "not accepted" in line, line
    assert _holds(second_plain_registry, signed.repository) == signed.image.digest
    assert _holds(second_plain_registry, signed.repository, signed.sig_tag) is None


# -- a stop, at each point after copying began: the line says what the target holds ------------------------

HELD = 30.0
"""How long the proxy holds the request a stop comes during: longer than any test waits for it."""


def _stopped_at(workdir: Path, proxy: FaultProxy, method: str, path: str, nth: int) -> CliResult:
    """``apply``, sent SIGINT once the proxy has received the ``nth`` ``method`` request for ``path``."""
    process = subprocess.Popen([sys.executable, "-m", "reconciler", "apply"], cwd=workdir, env=cli_env(workdir),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # at most about a minute
            if len(proxy.requests_matching(method, path)) >= nth or process.poll() is not None:
                break
            time.sleep(0.1)
        assert process.poll() is None, "apply ended before it was stopped: " + "".join(process.communicate())
        assert len(proxy.requests_matching(method, path)) >= nth, f"no {method} {path} #{nth} arrived"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return CliResult(("apply",), process.returncode, stdout, stderr)


def test_a_stop_while_the_tag_is_rechecked_leaves_the_image_copied_and_untagged(
    tmp_path, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    proxy = fault_proxy(second_plain_registry)
    (image,) = _mirrored(tmp_path, plain_registry, proxy, unique_repo, "stop-at-recheck", ("oci-index",))
    proxy.delay("HEAD", image.tag_path(), seconds=0.0, times=1)  # the plan's question passes
    proxy.delay("HEAD", image.tag_path(), seconds=HELD, times=1)  # the re-check before tagging is held

    stopped = _stopped_at(tmp_path, proxy, "HEAD", image.tag_path(), 2)

    _ended(stopped, 130, "0 copied, 0 unchanged, 0 refused, 0 failed, 1 interrupted")
    assert (f"  - {image.target}  interrupted: copied, but stopped before its tag was pushed"
            in stopped.stdout_lines), str(stopped)
    assert stopped.stderr_lines[-1] == "interrupted", str(stopped)
    assert proxy.count("PUT", image.tag_path()) == 0
    assert _holds(second_plain_registry, image.repository) is None
    # Copied: every platform's manifest is there by digest; the index itself goes in with its tag.
    assert image.image.children
    assert [_holds(second_plain_registry, image.repository, child.digest) for child in image.image.children] == [
        child.digest for child in image.image.children]

    proxy.clear_rules()
    again = run_cli(tmp_path, "apply")
    _ended(again, 0, "1 copied, 0 unchanged, 0 refused, 0 failed")
    assert _holds(second_plain_registry, image.repository) == image.image.digest


def test_a_stop_before_the_referrers_are_written_leaves_the_image_tagged_without_them(
    tmp_path, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    proxy = fault_proxy(second_plain_registry)
    (signed,) = _mirrored(tmp_path, plain_registry, proxy, unique_repo, "stop-before-referrers", ("oci",), signed=True)
    proxy.delay("HEAD", signed.tag_path(signed.sig_tag), seconds=HELD, times=1)  # the writer's first question

    stopped = _stopped_at(tmp_path, proxy, "HEAD", signed.tag_path(signed.sig_tag), 1)

    _ended(stopped, 130, "0 copied, 0 unchanged, 0 refused, 0 failed, 1 interrupted")
    assert (f"  - {signed.target}  interrupted: copied, but stopped before its referrers were written"
            in stopped.stdout_lines), str(stopped)
    assert _holds(second_plain_registry, signed.repository) == signed.image.digest
    assert _holds(second_plain_registry, signed.repository, signed.sig_tag) is None
