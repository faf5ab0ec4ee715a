"""The lock means exactly images.yaml (issue 21), edited as a person would over weeks, against
docker-registry: every pin re-checked against what its entry asks now, by `lock`, `lock --check`
and `plan`; a tag rule known by its repositories, not by its words. Each case fails at e357994."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reconciler.oci.digest import Digest
from tests.harness import cosign as cosign_keys
from tests.harness.images import PushedImage
from tests.harness.rawhttp import RawRegistry
from tests.helpers_cli import run_cli, write_images


class Workspace:
    """An images.yaml over sources in ``source`` mirrored to ``target``, and its lock."""

    def __init__(self, workdir: Path, source, target, mirror: str) -> None:
        self.workdir, self.source, self.prefix = workdir, source, f"{target.host}/{mirror}/"

    def write(self, *entries: dict, **top: object) -> None:
        write_images(self.workdir, self.prefix, list(entries))
        if top:
            path = self.workdir / "images.yaml"
            path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **top}, sort_keys=False))

    def lock_text(self) -> str:
        return (self.workdir / "images.lock").read_text()

    def pins(self) -> dict[str, dict]:
        return {pin["target"]: pin for pin in yaml.safe_load(self.lock_text())["images"]}

    def write_pins(self, pins: list[dict]) -> None:
        lock = yaml.safe_load(self.lock_text())
        fresh = json.loads(json.dumps(pins))  # no YAML aliases between pins
        (self.workdir / "images.lock").write_text(yaml.safe_dump({**lock, "images": fresh}, sort_keys=False))

    def run(self, *args: str):
        return run_cli(self.workdir, *args)

    def locked(self) -> None:
        result = self.run("lock")
        assert result.code == 0, result
        checked = self.run("lock", "--check")
        assert checked.code == 0, checked


@pytest.fixture
def workspace(tmp_path, plain_registry, second_plain_registry, unique_repo) -> Workspace:
    return Workspace(tmp_path, plain_registry, second_plain_registry, unique_repo("mirror"))


def source_of(pushed: PushedImage, tag: str | None = None) -> str:
    return f"{pushed.host}/{pushed.repo}" + (f":{tag or pushed.tag}" if tag != "" else "")


def refused_by_check(workspace: Workspace, reason: str) -> None:
    """``lock --check`` and ``plan`` refuse the lock, naming ``reason``, and write nothing."""
    before = workspace.lock_text()
    checked = workspace.run("lock", "--check")
    assert checked.code == 1, checked
    assert reason in checked.stderr, checked
    planned = workspace.run("plan")
    assert planned.code == 1, planned
    assert reason in planned.stderr, planned
    assert workspace.lock_text() == before


# --- finding 1: lock keeps pins that no longer fit images.yaml ------------------------------


def test_referrers_false_added_after_locking_drops_the_pinned_signature(workspace, push_image, plain_registry):
    image = push_image("oci")
    with RawRegistry(plain_registry) as raw:
        cosign_keys.push_signatures(raw, image.repo, image.digest,
                                    [cosign_keys.signature_by(cosign_keys.new_key(), image.digest)])
    workspace.write({"source": source_of(image)})
    workspace.locked()
    [pin] = workspace.pins().values()
    assert len(pin["referrers"]) == 1

    workspace.write({"source": source_of(image), "referrers": False})
    refused_by_check(workspace, "referrers changed: all -> none")

    workspace.locked()
    [pin] = workspace.pins().values()
    assert pin["referrers"] == [] and pin["referrersRule"] is False
    assert pin["digest"] == image.digest


def test_verify_added_for_an_unsigned_source_is_refused_by_lock_check_and_plan(workspace, push_image):
    image = push_image("oci")
    cosign_keys.write_public_key(cosign_keys.new_key(), workspace.workdir / "cosign.pub")
    workspace.write({"source": source_of(image)})
    workspace.locked()
    before = workspace.lock_text()

    workspace.write({"source": source_of(image), "verify": {"cosignKey": "cosign.pub"}})

    refused_by_check(workspace, "its signature was not checked against the cosign key cosign.pub")
    relocked = workspace.run("lock")
    assert relocked.code == 1, relocked
    assert f"({image.digest}): no signature (no Sigstore bundle among its referrers" in relocked.stderr
    assert workspace.lock_text() == before


def test_a_signed_pin_records_its_key_and_a_new_key_checks_it_again(workspace, push_image, plain_registry):
    image = push_image("oci")
    trusted, other = cosign_keys.new_key(), cosign_keys.new_key()
    with RawRegistry(plain_registry) as raw:
        cosign_keys.push_signatures(raw, image.repo, image.digest, [cosign_keys.signature_by(trusted, image.digest)])
    cosign_keys.write_public_key(trusted, workspace.workdir / "cosign.pub")
    workspace.write({"source": source_of(image)}, verify={"cosignKey": "cosign.pub"})
    workspace.locked()
    assert [pin["signedBy"] for pin in workspace.pins().values()] == [
        str(Digest.of((workspace.workdir / "cosign.pub").read_bytes()))]

    cosign_keys.write_public_key(other, workspace.workdir / "cosign.pub")

    refused_by_check(workspace, "its signature was checked against another verify: than the cosign key cosign.pub")
    relocked = workspace.run("lock")
    assert relocked.code == 1 and "does not verify with the key" in relocked.stderr, relocked


def test_a_platform_required_of_a_single_image_after_locking_is_refused(workspace, push_image):
    image = push_image("oci")  # linux/amd64 only
    workspace.write({"source": source_of(image)})
    workspace.locked()
    before = workspace.lock_text()

    workspace.write({"source": source_of(image), "platforms": ["linux/arm64"]})

    refused_by_check(workspace, "platform(s) linux/arm64 required")
    relocked = workspace.run("lock")
    assert relocked.code == 1, relocked
    assert "does not provide platform(s) linux/arm64" in relocked.stderr
    assert workspace.lock_text() == before


# --- tag rules: identity (finding 3) and their pins checked (finding 5) ----------------------


def push_tags(push_image, unique_repo, tags: dict[str, str]) -> PushedImage:
    """A repository whose tags hold the images of the given kinds ("oci", "docker")."""
    repo = unique_repo("rules")
    return [push_image(kind, repo=repo, tag=tag) for tag, kind in tags.items()][0]


def retag(registry, pushed: PushedImage, from_tag: str, to_tag: str) -> None:
    with RawRegistry(registry) as raw:
        answer = raw.get_manifest(pushed.repo, from_tag)
        assert raw.put_manifest(pushed.repo, to_tag, answer.content,
                                answer.headers["content-type"]).status_code == 201


def test_upgrading_one_rule_leaves_another_rule_in_the_same_words_alone(
    workspace, push_image, unique_repo, plain_registry
):
    a = push_tags(push_image, unique_repo, {"1.0.0": "oci"})
    b = push_tags(push_image, unique_repo, {"1.0.0": "oci", "moved": "docker"})
    workspace.write({"source": source_of(a, ""), "tags": {"semver": "^1"}},
                    {"source": source_of(b, ""), "tags": {"semver": "^1"}})
    workspace.locked()
    before = {target: pin["digest"] for target, pin in workspace.pins().items()}
    retag(plain_registry, b, "moved", "1.0.0")  # rules/b:1.0.0 moves upstream

    upgraded = workspace.run("lock", "--upgrade", source_of(a, ""))

    assert upgraded.code == 0, upgraded
    assert {target: pin["digest"] for target, pin in workspace.pins().items()} == before
    assert workspace.run("lock", "--check").code == 0


def test_two_rules_from_one_source_to_one_target_are_refused(workspace, push_image, unique_repo):
    a = push_tags(push_image, unique_repo, {"1.0.0": "oci"})
    workspace.write({"source": source_of(a, ""), "tags": {"semver": "^1"}},
                    {"source": source_of(a, ""), "tags": {"regex": "^1"}})

    refused = workspace.run("lock")

    assert refused.code == 1
    [line] = refused.error_lines
    assert line.startswith("error: images.yaml:6: images[2] (source ")
    assert line.endswith(f"): a second tag rule from {source_of(a, '')} to "
                         f"{workspace.prefix}{a.host.replace(':', '_')}/{a.repo}, as in images[1] (line 3)")
    assert not (workspace.workdir / "images.lock").exists()


def test_a_pin_added_by_hand_that_the_rule_does_not_select_is_refused(workspace, push_image, unique_repo):
    a = push_tags(push_image, unique_repo, {"1.0.0": "oci", "0.9.0": "docker"})
    workspace.write({"source": source_of(a, ""), "tags": {"semver": "^1"}})
    workspace.locked()
    [pin] = workspace.pins().values()
    added = {**pin, "source": source_of(a, "0.9.0"), "target": pin["target"].replace(":1.0.0", ":0.9.0")}

    workspace.write_pins([added, pin])

    refused_by_check(workspace, 'tag 0.9.0 is not selected by the tag rule {semver: "^1"}')
    workspace.locked()
    assert [pin["source"] for pin in workspace.pins().values()] == [source_of(a, "1.0.0")]


def test_a_pin_added_by_hand_beyond_latest_is_refused(workspace, push_image, unique_repo):
    a = push_tags(push_image, unique_repo, {"1.1.0": "oci", "1.0.0": "docker"})
    workspace.write({"source": source_of(a, ""), "tags": {"semver": "^1", "latest": 1}})
    workspace.locked()
    [pin] = workspace.pins().values()
    added = {**pin, "source": source_of(a, "1.0.0"), "target": pin["target"].replace(":1.1.0", ":1.0.0")}

    workspace.write_pins([added, pin])

    refused_by_check(workspace, "keeps 1, the lock pins 2 of its tags")


def test_a_selected_tag_removed_from_the_lock_by_hand_is_refused(workspace, push_image, unique_repo):
    a = push_tags(push_image, unique_repo, {"1.1.0": "oci", "1.0.0": "docker"})
    workspace.write({"source": source_of(a, ""), "tags": {"semver": "^1"}})
    workspace.locked()
    kept, _removed = sorted(workspace.pins().values(), key=lambda pin: pin["source"])

    workspace.write_pins([kept])

    refused_by_check(workspace, "a tag rule's pin removed from the lock")


def test_a_platform_a_single_image_has_is_recorded_when_required_and_then_fits(workspace, push_image):
    image = push_image("oci")  # linux/amd64 only
    workspace.write({"source": source_of(image)})
    workspace.locked()

    workspace.write({"source": source_of(image), "platforms": ["linux/amd64"]})

    refused_by_check(workspace, "platform(s) linux/amd64 required, the pin has no platform recorded")
    workspace.locked()
    [pin] = workspace.pins().values()
    assert (pin["digest"], pin["platforms"]) == (image.digest, ["linux/amd64"])
    before = workspace.lock_text()
    workspace.locked()
    assert workspace.lock_text() == before
