"""Choosing what to mirror (issue 15), end to end: tag rules and platform subsets, resolved
and pinned by ``lock``, copied exactly by ``apply``, checked with skopeo.

Sources live on ``plain_registry``; its tags list is read through a fault proxy that caps
each page at 20 tags (as Docker Hub and GHCR cap ``n``), so 30 tags take two pages.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from reconciler.oci.digest import Digest
from tests.harness import cosign as cosign_keys
from tests.harness import images as harness_images
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import CliResult, run_cli, write_images

PAGE = 20
TAGS = [
    "1.19.0", "1.20.14", "1.21.13", "1.22", "1.22.0", "1.22.3", "1.22.4", "1.22.5", "1.22.5-alpine",
    "1.22.5-alpine3.20", "1.22-bookworm", "1.23", "1.23rc1", "1.23.0-rc.2", "1.23.0", "1.23.1", "1.23.2",
    "1.23.3", "1.23.4", "1.23.4-alpine", "v1.24.0", "1.24.1", "1.24.1-alpine", "2.0.0-beta.1", "1", "latest",
    "bookworm", "stable", "edge", "nightly-20260101",
]


def ok(result: CliResult, code: int = 0) -> CliResult:
    assert result.code == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    return result


def locked(workdir) -> list[dict]:
    return yaml.safe_load((workdir / "images.lock").read_text())["images"]


@pytest.fixture(scope="module")
def tagged(plain_registry):
    """One small image under every tag of TAGS, in a repository of its own."""
    repo = "choosing/app"
    pushed = harness_images.push_image(harness_images.build_image("oci", seed="choosing"), plain_registry, repo,
                                       "base")
    with RawRegistry(plain_registry) as raw:
        for tag in TAGS:
            assert raw.put_manifest(repo, tag, pushed.manifest, pushed.media_type).status_code == 201
    return pushed


@pytest.fixture
def paged(fault_proxy, plain_registry):
    """The source registry, answering tags lists PAGE tags at a time."""
    proxy = fault_proxy(plain_registry)
    proxy.redirect("GET", r"/tags/list\?n=1000$",
                   lambda path: f"http://{proxy.host}{path.replace('n=1000', f'n={PAGE}')}", times=None)
    return proxy


def rule_entry(proxy, rule: dict, **more) -> dict:
    return {"source": f"{proxy.host}/choosing/app", "tags": rule, **more}


@pytest.mark.parametrize(("rule", "expected"), [
    ({"semver": ">=1.22 <1.24", "latest": 3}, ["1.23.2", "1.23.3", "1.23.4"]),
    ({"semver": "~1.22", "variant": "alpine"}, ["1.22.5-alpine"]),
    ({"semver": ">=1.23", "prerelease": True, "exclude": ["^1\\.23\\.[0-3]$"]},
     ["1.23", "1.23.0-rc.2", "1.23.4", "1.23rc1", "1.24.1", "2.0.0-beta.1", "v1.24.0"]),
    ({"regex": "^1\\.2[0-1]\\.[0-9]+$"}, ["1.20.14", "1.21.13"]),
    ({"regex": "^1\\.23\\.[0-9]+$", "latest": 2}, ["1.23.3", "1.23.4"]),
], ids=["semver latest 3", "variant", "prerelease and exclude", "regex", "regex latest 2"])
def test_a_rule_pins_exactly_the_tags_it_selects(rule, expected, tagged, paged, second_plain_registry, tmp_path):
    write_images(tmp_path, f"{second_plain_registry.host}/mirror/", [rule_entry(paged, rule)])

    ok(run_cli(tmp_path, "lock"))

    pins = locked(tmp_path)
    assert sorted(pin["source"].rsplit(":", 1)[1] for pin in pins) == sorted(expected)
    assert {pin["digest"] for pin in pins} == {tagged.digest}
    assert {pin["target"] for pin in pins} == {
        f"{second_plain_registry.host}/mirror/{paged.host.replace(':', '_')}/choosing/app:{tag}" for tag in expected}
    assert len({pin["rule"] for pin in pins}) == 1 and all(pin["rule"].startswith("{") for pin in pins)
    lists = paged.requests_matching("GET", r"/tags/list")
    assert [request.url_path for request in lists].count("/v2/choosing/app/tags/list") >= 2  # 30 tags, pages of 20


def test_upgrade_adds_what_now_matches_and_drops_what_fell_out_while_the_target_keeps_it(
    tagged, paged, plain_registry, second_plain_registry, unique_repo, tmp_path
):
    repo = unique_repo("app")
    harness_images.push_image(tagged.image, plain_registry, repo, "3.0.0")
    with RawRegistry(plain_registry) as raw:
        for tag in ("3.0.1", "3.0.2"):
            assert raw.put_manifest(repo, tag, tagged.manifest, tagged.media_type).status_code == 201
    mirror = f"{second_plain_registry.host}/mirror/"
    entry = {"source": f"{paged.host}/{repo}", "tags": {"semver": "^3", "latest": 2}}
    write_images(tmp_path, mirror, [entry])
    target = f"{second_plain_registry.host}/mirror/{paged.host.replace(':', '_')}/{repo}"
    ok(run_cli(tmp_path, "lock"))
    ok(run_cli(tmp_path, "apply"))
    assert [pin["target"] for pin in locked(tmp_path)] == [f"{target}:3.0.1", f"{target}:3.0.2"]

    with RawRegistry(plain_registry) as raw:
        assert raw.put_manifest(repo, "3.1.0", tagged.manifest, tagged.media_type).status_code == 201
    before = (tmp_path / "images.lock").read_text()
    ok(run_cli(tmp_path, "lock"))
    assert (tmp_path / "images.lock").read_text() == before  # pins are kept without --upgrade

    upgraded = ok(run_cli(tmp_path, "lock", "--upgrade"))
    assert [pin["target"] for pin in locked(tmp_path)] == [f"{target}:3.0.2", f"{target}:3.1.0"]
    assert f"{target}:3.0.1" in upgraded.stdout + upgraded.stderr  # named as dropped

    plan = ok(run_cli(tmp_path, "plan", "--format", "markdown")).stdout
    created = plan[plan.index("#### To create"):].split("\n\n")[1].splitlines()
    assert len(created) == 2 and created[0].startswith(f"- `{target.rsplit('/', 1)[-1]}:3.1.0` ← ")
    assert created[1] == '  - tag rule {semver: "^3", latest: 2}'

    ok(run_cli(tmp_path, "apply"))
    for tag in ("3.0.1", "3.0.2", "3.1.0"):  # 3.0.1 left the lock; the target keeps it
        assert skopeo_inspect_raw(f"{target}:{tag}") == tagged.manifest


@pytest.fixture
def subset_locked(push_image, second_plain_registry, unique_repo, tmp_path):
    """A 3-platform index pushed, and an entry keeping 2 of its platforms locked; the index and its pin."""
    index = push_image(harness_images.build_oci_index(unique_repo(), platforms=(
        harness_images.linux("amd64"), harness_images.linux("arm", "v7"), harness_images.linux("arm64", "v8"))))
    mirror = f"{second_plain_registry.host}/{unique_repo('mirror')}/"
    write_images(tmp_path, mirror, [{"source": index.ref, "platforms": {"only": ["linux/arm64", "linux/amd64"]}}])
    ok(run_cli(tmp_path, "lock"))
    [pin] = locked(tmp_path)
    return index, pin


def test_a_platform_subset_is_pinned_rebuilt_and_pushed_byte_for_byte(subset_locked, second_plain_registry, tmp_path):
    index, pin = subset_locked
    assert pin["digest"] == index.digest
    assert pin["subset"]["platforms"] == ["linux/amd64", "linux/arm64"]
    subset_digest = pin["subset"]["digest"]

    (tmp_path / "images.lock").unlink()  # a lock from scratch pins the same bytes
    ok(run_cli(tmp_path, "lock"))
    assert locked(tmp_path)[0]["subset"]["digest"] == subset_digest

    plan = ok(run_cli(tmp_path, "plan")).stdout
    assert "(linux/amd64, linux/arm64 only)" in plan
    ok(run_cli(tmp_path, "apply"))

    pushed = skopeo_inspect_raw(pin["target"])
    assert str(Digest.of(pushed)) == subset_digest
    listed = json.loads(pushed)["manifests"]
    assert [child["digest"] for child in listed] == [index.child_digests[0], index.child_digests[2]]
    target_repo = pin["target"].split("/", 1)[1].rsplit(":", 1)[0]
    with RawRegistry(second_plain_registry) as raw:
        assert raw.head_manifest(target_repo, index.child_digests[1]).status_code == 404  # linux/arm/v7 left out
    ok(run_cli(tmp_path, "verify"))
    assert "holds " + subset_digest[:19] in ok(run_cli(tmp_path, "plan", "--verbose")).stdout


def test_a_rebuilt_subset_that_is_not_the_pinned_one_is_refused(subset_locked, second_plain_registry, tmp_path):
    index, pin = subset_locked
    # The same children in another order: a different index, which the lock now claims.
    body = json.loads(index.manifest)
    body["manifests"] = [body["manifests"][2], body["manifests"][0]]
    reordered = str(Digest.of(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()))
    lock_file = tmp_path / "images.lock"
    lock_file.write_text(lock_file.read_text().replace(pin["subset"]["digest"], reordered))

    result = ok(run_cli(tmp_path, "apply"), 1)

    assert re.search(rf"refused.*rebuilt from {index.digest} is {pin['subset']['digest']}, not the locked {reordered}",
                     result.stdout + result.stderr), str(result)
    target_repo = pin["target"].split("/", 1)[1].rsplit(":", 1)[0]
    with RawRegistry(second_plain_registry) as raw:
        assert raw.head_manifest(target_repo, pin["target"].rsplit(":", 1)[1]).status_code == 404


def test_the_original_command_line_applies_a_tag_rule_too(tagged, paged, second_plain_registry, unique_repo,
                                                            tmp_path):
    mirror = f"{second_plain_registry.host}/{unique_repo('mirror')}/"
    write_images(tmp_path, mirror, [rule_entry(paged, {"semver": "~1.22", "variant": "alpine"})])

    result = ok(run_cli(tmp_path, "sync", "-i", "images.yaml", "-d", "false"))

    target = f"{mirror}{paged.host.replace(':', '_')}/choosing/app:1.22.5-alpine"
    assert f"-> {target}: target does not exist – copying" in result.stdout
    assert skopeo_inspect_raw(target) == tagged.manifest
    assert not (tmp_path / "images.lock").exists()


def test_a_subset_carries_its_kept_children_s_signatures_and_applies_from_a_saved_plan(
    subset_locked, plain_registry, second_plain_registry, tmp_path
):
    index, _ = subset_locked
    key = cosign_keys.new_key()
    amd64, arm_v7, arm64 = index.child_digests
    with RawRegistry(plain_registry) as raw:
        for digest in (index.digest, amd64, arm_v7):
            cosign_keys.push_signatures(raw, index.repo, digest, [cosign_keys.signature_by(key, digest)])
    ok(run_cli(tmp_path, "lock", "--upgrade"))
    [pin] = locked(tmp_path)
    assert [(referrer["subject"], referrer["foundBy"]) for referrer in pin["referrers"]] == [(amd64, "cosign-sig")]

    ok(run_cli(tmp_path, "plan", "--out", "plan.json"), 0)
    ok(run_cli(tmp_path, "apply", "plan.json"))

    target_repo = pin["target"].split("/", 1)[1].rsplit(":", 1)[0]
    with RawRegistry(second_plain_registry) as raw:
        tags = raw.tags(target_repo)
    assert sorted(tags) == sorted([pin["target"].rsplit(":", 1)[1], cosign_keys.signature_tag(amd64)])
    assert str(Digest.of(skopeo_inspect_raw(pin["target"]))) == pin["subset"]["digest"]
    ok(run_cli(tmp_path, "verify"))
