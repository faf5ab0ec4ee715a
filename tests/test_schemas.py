"""The machine output others rely on: JSON Schemas in schemas/ checked against real outputs.

One mirror is brought into every state a plan and a verify can report (create, unchanged,
conflict, moved, source-missing, error; intact, changed, deleted, error), the real CLI's JSON
is validated, and each schema is shown to refuse documents that break it. Also here:
``--version`` and the example that ends each command's help.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest

from tests.harness import images as harness_images
from tests.harness.fault_proxy import FaultProxy
from tests.harness.rawhttp import RawRegistry
from tests.helpers_cli import ROOT, CliResult, run_cli, write_images

REFUSALS = {"conflict", "source-missing", "error"}


def ok(result: CliResult, code: int = 0) -> CliResult:
    assert result.code == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    return result


def schema_errors(name: str, document: object) -> list[str]:
    schema = json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return [error.message for error in jsonschema.Draft202012Validator(schema).iter_errors(document)]


@pytest.fixture(scope="module")
def every_state(tmp_path_factory, plain_registry, second_plain_registry) -> Iterator[Path]:
    """A locked mirror in which plan and verify find every state they can report; its directory."""
    workdir = tmp_path_factory.mktemp("schemas")
    proxy = FaultProxy(second_plain_registry.url).start()
    pushed = {
        kind: harness_images.push_image(harness_images.build_image(image, seed=f"schemas-{kind}"), plain_registry,
                                        f"schemas/{kind}", "v1")
        for kind, image in (("unchanged", "oci"), ("create", "oci-index"), ("conflict", "docker"),
                            ("moved", "docker-list"), ("missing", "oci"), ("error", "docker"))
    }
    prefix = f"{proxy.host}/schemas-mirror/"
    entries = {kind: {"source": f"{image.host}/{image.repo}:v1", "target": kind} for kind, image in pushed.items()}
    write_images(workdir, prefix, [entries["unchanged"]])
    ok(run_cli(workdir, "lock"))
    ok(run_cli(workdir, "apply"))
    write_images(workdir, prefix, list(entries.values()))
    ok(run_cli(workdir, "lock"))
    harness_images.push_image(harness_images.build_image("oci", seed="schemas-squatter"), second_plain_registry,
                              "schemas-mirror/conflict", "v1")
    harness_images.push_image(harness_images.build_image("docker-list", seed="schemas-moved-on"), plain_registry,
                              "schemas/moved", "v1")
    with RawRegistry(plain_registry) as raw:
        assert raw.delete_manifest("schemas/missing", pushed["missing"].digest).status_code == 202
    proxy.fail("HEAD", r"^/v2/schemas-mirror/error/manifests/", 500, times=None)
    yield workdir
    proxy.stop()


@pytest.fixture(scope="module")
def printed(every_state) -> dict[str, dict]:
    """What ``plan`` and ``verify`` print as JSON (both exit 1: some images are refused or not intact)."""
    return {command: json.loads(ok(run_cli(every_state, command, "--format", "json", "--retries", "0"), 1).stdout)
            for command in ("plan", "verify")}


def test_plan_json_and_saved_plans_match_the_plan_schema(every_state, printed):
    plan = printed["plan"]
    by_name = {image["target"].rsplit("/", 1)[1]: image for image in plan["images"]}
    assert {name: image["action"] for name, image in by_name.items()} == {
        "unchanged:v1": "unchanged", "create:v1": "create", "conflict:v1": "conflict", "moved:v1": "create",
        "missing:v1": "source-missing", "error:v1": "error",
    }
    assert [name for name, image in by_name.items() if image["movedTo"]] == ["moved:v1"]
    assert by_name["create:v1"]["platforms"] and plan["shard"] is None
    assert schema_errors("plan", plan) == []

    saved_targets = []
    for shard in ("1/2", "2/2"):
        made = run_cli(every_state, "plan", "--shard", shard, "--out", "saved.json", "--retries", "0")
        saved = json.loads((every_state / "saved.json").read_text())
        assert made.code == (1 if {image["action"] for image in saved["images"]} & REFUSALS else 0), str(made)
        assert saved["shard"] == shard
        assert schema_errors("plan", saved) == []
        saved_targets += [image["target"] for image in saved["images"]]
    assert sorted(saved_targets) == sorted(image["target"] for image in plan["images"])


def test_verify_json_matches_the_verify_schema(printed):
    verification = printed["verify"]
    assert {image["target"].rsplit("/", 1)[1]: image["status"] for image in verification["images"]} == {
        "unchanged:v1": "intact", "create:v1": "deleted", "conflict:v1": "changed", "moved:v1": "deleted",
        "missing:v1": "deleted", "error:v1": "error",
    }
    assert verification["summary"] == {"intact": 1, "changed": 1, "deleted": 3, "errors": 1}
    assert schema_errors("verify", verification) == []


def _set(path: tuple[str | int, ...], value: object) -> Callable[[dict], None]:
    def change(document: dict) -> None:
        *parents, last = path
        for step in parents:
            document = document[step]
        document[last] = value
    return change


def _drop(key: str) -> Callable[[dict], None]:
    return lambda document: document.pop(key)


@pytest.mark.parametrize(("schema", "change"), [
    pytest.param("plan", _set(("images", 0, "action"), "delete"), id="plan-unknown-action"),
    pytest.param("plan", _set(("images", 0, "digest"), "sha256:abc"), id="plan-short-digest"),
    pytest.param("plan", _set(("images", 0, "extra"), 1), id="plan-unknown-key"),
    pytest.param("plan", _set(("shard",), "0/2"), id="plan-shard-zero"),
    pytest.param("plan", _set(("version",), 2), id="plan-version"),
    pytest.param("plan", _drop("summary"), id="plan-no-summary"),
    pytest.param("verify", _set(("images", 0, "status"), "ok"), id="verify-unknown-status"),
    pytest.param("verify", _set(("images", 0, "targetDigest"), "latest"), id="verify-tag-as-digest"),
    pytest.param("verify", _set(("summary", "intact"), -1), id="verify-negative-count"),
    pytest.param("verify", _drop("images"), id="verify-no-images"),
])
def test_the_schemas_refuse_what_breaks_them(printed, schema, change):
    broken = copy.deepcopy(printed[schema])
    change(broken)
    assert schema_errors(schema, printed[schema]) == []
    assert schema_errors(schema, broken) != []


def test_verify_schema_ties_the_target_digest_to_the_status(printed):
    verification = printed["verify"]
    changed = next(image for image in verification["images"] if image["status"] == "changed")
    deleted = next(image for image in verification["images"] if image["status"] == "deleted")
    deleted_yet_holding = dict(deleted, targetDigest=changed["targetDigest"])
    changed_to_nothing = dict(changed, targetDigest=None)
    for image in (deleted_yet_holding, changed_to_nothing):
        assert schema_errors("verify", dict(verification, images=[image])) != [], image


def test_version_prints_the_package_version(tmp_path):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = ok(run_cli(tmp_path, "--version"))
    assert (result.stdout, result.stderr) == (f"image-syncer {version}\n", "")


@pytest.mark.parametrize("command", ["lock", "plan", "apply", "verify", "sync"])
def test_every_commands_help_ends_with_an_example(tmp_path, command):
    lines = [line.strip() for line in ok(run_cli(tmp_path, command, "--help")).stdout_lines if line.strip()]
    assert lines[-1].startswith("Example") and f"image-syncer {command} " in lines[-1], lines[-3:]


def test_apply_json_matches_the_report_schema(every_state, printed):
    """Last in this file: applying changes the mirror the other tests read (their output is already printed)."""
    applied = ok(run_cli(every_state, "apply", "--format", "json", "--retries", "0"), 1)
    report = json.loads(applied.stdout)

    assert {image["target"].rsplit("/", 1)[1]: image["outcome"] for image in report["images"]} == {
        "unchanged:v1": "unchanged", "create:v1": "copied", "conflict:v1": "refused", "moved:v1": "copied",
        "missing:v1": "failed", "error:v1": "failed",
    }
    assert report["summary"] == {"copied": 2, "unchanged": 1, "refused": 1, "failed": 2, "deferred": 0, "interrupted": 0}
    assert report["stats"]["blobsUploaded"] > 0
    assert schema_errors("report", report) == []
    broken = dict(report, images=[dict(report["images"][0], outcome="skipped")])
    assert schema_errors("report", broken) != []


def test_deletions_in_plan_and_report_json_match_their_schemas(tmp_path, plain_registry, second_plain_registry,
                                                               fault_proxy, unique_repo):
    """Every planned deletion's action and every outcome a run without a failed copy reports (skipped: test_render)."""
    proxy = fault_proxy(second_plain_registry)
    kinds = ("delete", "gone", "refused", "error", "kept")
    pushed = {kind: harness_images.push_image(harness_images.build_image("oci", seed=f"prune-{kind}"), plain_registry,
                                              unique_repo(kind), "v1") for kind in kinds}
    base = unique_repo("mirror")
    entries = {kind: {"source": f"{image.host}/{image.repo}:v1", "target": kind} for kind, image in pushed.items()}

    def write(*chosen: str) -> None:
        (tmp_path / "images.yaml").write_text(json.dumps({"targetRepoPrefix": f"{proxy.host}/{base}/", "prune": True,
                                                          "images": [entries[kind] for kind in chosen]}))

    write(*kinds)
    ok(run_cli(tmp_path, "lock"))
    ok(run_cli(tmp_path, "apply"))
    write("kept")
    ok(run_cli(tmp_path, "lock"))
    with RawRegistry(second_plain_registry) as raw:
        assert raw.delete_manifest(f"{base}/gone", pushed["gone"].digest).status_code == 202
    harness_images.push_image(harness_images.build_image("oci", seed="prune-squatter"), second_plain_registry,
                              f"{base}/refused", "v1")
    proxy.fail("HEAD", rf"^/v2/{base}/error/manifests/", 500, times=None)

    plan = json.loads(ok(run_cli(tmp_path, "plan", "--format", "json", "--retries", "0"), 1).stdout)
    report = json.loads(ok(run_cli(tmp_path, "apply", "--format", "json", "--retries", "0"), 1).stdout)

    assert {deletion["target"].rsplit("/", 1)[1]: deletion["action"] for deletion in plan["deletions"]} == {
        "delete:v1": "delete", "gone:v1": "gone", "refused:v1": "refused", "error:v1": "error"}
    assert {deletion["target"].rsplit("/", 1)[1]: deletion["outcome"] for deletion in report["deletions"]} == {
        "delete:v1": "deleted", "gone:v1": "gone", "refused:v1": "refused", "error:v1": "failed"}
    assert schema_errors("plan", plan) == [] and schema_errors("report", report) == []
    assert schema_errors("plan", dict(plan, deletions=[dict(plan["deletions"][0], action="deleted")])) != []
    assert schema_errors("report", dict(report, deletions=[dict(report["deletions"][0], outcome="delete")])) != []
