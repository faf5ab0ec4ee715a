"""verify: the real CLI against real registries, watching a mirror for tags re-pointed or deleted.

Sources live on ``plain_registry``, targets on ``second_plain_registry``; both are reached
through recording proxies where a test counts requests. What a target holds is changed
and checked with the harness (skopeo, raw HTTP), never with the code under test.
"""

from __future__ import annotations

import json

import pytest

from tests.harness import images as harness_images
from tests.harness.rawhttp import RawRegistry
from tests.harness.registry import free_port
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import CliResult, run_cli, write_images


def ok(result: CliResult, code: int = 0) -> CliResult:
    assert result.code == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    return result


class Mirror:
    """Targets under ``<host>/<base>/``: ``host`` is what images.yaml names (maybe a proxy), ``registry`` the real one."""

    def __init__(self, registry, base: str, host: str | None = None) -> None:
        self.registry, self.base, self.host = registry, base, host or registry.host

    @property
    def prefix(self) -> str:
        return f"{self.host}/{self.base}/"

    def path(self, pushed) -> str:
        return f"{self.base}/{pushed.host.replace(':', '_')}/{pushed.repo}"

    def target(self, pushed) -> str:
        return f"{self.host}/{self.path(pushed)}:{pushed.tag}"


def source(pushed, host: str | None = None) -> str:
    return f"{host or pushed.host}/{pushed.repo}:{pushed.tag}"


@pytest.fixture
def mirror(second_plain_registry, unique_repo) -> Mirror:
    return Mirror(second_plain_registry, unique_repo("mirror"))


def test_verify_passes_on_a_correct_mirror_asking_only_the_target_with_heads(
    tmp_path, push_image, plain_registry, second_plain_registry, unique_repo, fault_proxy
):
    index, single = push_image("oci-index"), push_image("docker")
    source_proxy, target_proxy = fault_proxy(plain_registry), fault_proxy(second_plain_registry)
    mirror = Mirror(second_plain_registry, unique_repo("mirror"), host=target_proxy.host)
    write_images(tmp_path, mirror.prefix, [{"source": source(p, source_proxy.host)} for p in (index, single)])
    ok(run_cli(tmp_path, "lock"))
    ok(run_cli(tmp_path, "apply"))
    source_proxy.clear()
    target_proxy.clear()

    verified = ok(run_cli(tmp_path, "verify"))

    assert verified.stdout_lines == ["Verify: 2 intact, 0 changed, 0 deleted, 0 errors."], str(verified)
    assert source_proxy.requests == []
    asked = sorted((request.method, request.url_path) for request in target_proxy.requests)
    # Each target is asked under the path as the target registry names it (the source's host with "_").
    assert asked == sorted(
        ("HEAD", f"/v2/{mirror.base}/{source_proxy.host.replace(':', '_')}/{p.repo}/manifests/v1")
        for p in (index, single)
    )


def test_verify_lists_a_re_pointed_tag_and_deleted_ones_and_changes_nothing(
    tmp_path, push_image, mirror, second_plain_registry
):
    intact, repointed, deleted, never = (push_image(kind) for kind in ("oci", "docker", "oci-index", "docker-list"))
    write_images(tmp_path, mirror.prefix, [{"source": source(p)} for p in (intact, repointed, deleted)])
    ok(run_cli(tmp_path, "lock"))
    ok(run_cli(tmp_path, "apply"))
    write_images(tmp_path, mirror.prefix, [{"source": source(p)} for p in (intact, repointed, deleted, never)])
    ok(run_cli(tmp_path, "lock"))  # locked, never applied: its target tag holds nothing
    squatter = push_image(harness_images.build_image("oci", seed="squatter"),
                          registry=second_plain_registry, repo=mirror.path(repointed), tag="v1")
    with RawRegistry(second_plain_registry) as raw:
        assert raw.delete_manifest(mirror.path(deleted), deleted.digest).status_code == 202
        assert raw.head_manifest(mirror.path(deleted), "v1").status_code == 404

    verified = ok(run_cli(tmp_path, "verify"), 1)

    assert sorted(verified.stdout_lines[:-1]) == sorted([
        f"  ! {mirror.target(repointed)}  changed: target tag holds {squatter.digest}, "
        f"not the locked {repointed.digest}",
        f"  - {mirror.target(deleted)}  deleted: target tag holds nothing",
        f"  - {mirror.target(never)}  deleted: target tag holds nothing",
    ]), str(verified)
    assert verified.stdout_lines[-1] == "Verify: 1 intact, 1 changed, 2 deleted, 0 errors."
    host = second_plain_registry.host
    assert skopeo_inspect_raw(f"{host}/{mirror.path(repointed)}:v1") == squatter.manifest
    assert skopeo_inspect_raw(f"{host}/{mirror.path(intact)}:v1") == intact.manifest

    as_json = json.loads(ok(run_cli(tmp_path, "verify", "--format", "json"), 1).stdout)
    assert {image["target"]: (image["status"], image["digest"], image["targetDigest"])
            for image in as_json["images"]} == {
        mirror.target(intact): ("intact", intact.digest, intact.digest),
        mirror.target(repointed): ("changed", repointed.digest, squatter.digest),
        mirror.target(deleted): ("deleted", deleted.digest, None),
        mirror.target(never): ("deleted", never.digest, None),
    }
    assert as_json["summary"] == {"intact": 1, "changed": 1, "deleted": 2, "errors": 0}

    markdown = ok(run_cli(tmp_path, "verify", "--format", "markdown"), 1).stdout_lines
    assert markdown[:3] == ["### image-syncer verify", "", "**1 intact · 1 changed · 2 deleted · 0 errors**"]
    prefix = markdown[3 + 1].removeprefix("Every target below is under `").removesuffix("`.")
    changed = markdown.index(f"- **changed** `{mirror.target(repointed).removeprefix(prefix)}` · locked "
                             f"`{repointed.digest[:19]}`")
    assert markdown[changed + 1] == f"  - target tag holds {squatter.digest}, not the locked {repointed.digest}"
    assert f"- `{mirror.target(intact).removeprefix(prefix)}` · `{intact.digest[:19]}`" in markdown


def test_verify_reports_a_target_registry_it_cannot_reach_as_an_error(tmp_path, push_image, unique_repo):
    image = push_image("oci")
    unreachable = f"127.0.0.1:{free_port()}/{unique_repo('mirror')}/"
    write_images(tmp_path, unreachable, [{"source": source(image)}])
    ok(run_cli(tmp_path, "lock"))

    verified = ok(run_cli(tmp_path, "verify", "--retries", "0"), 1)

    line, summary = verified.stdout_lines
    assert line.startswith(f"  x {unreachable}") and "  error: " in line, str(verified)
    assert summary == "Verify: 0 intact, 0 changed, 0 deleted, 1 errors."

