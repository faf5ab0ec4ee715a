"""examples/kubernetes/: every manifest against Kubernetes' own OpenAPI schemas (strict: an
unknown field is an error), offline, with the schemas ``kubernetes-validate`` ships; and the
wiring between them: the Indexed Job's size is the ``--shard auto/N``, the ConfigMap's keys are
the files the command reads where it reads them, the ServiceAccount is the pods' and carries
GKE's workload identity annotation, and the memory asked for covers apply's measured peak RSS."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.helpers_cli import run_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "kubernetes"
VERSIONS = ["1.31", kubernetes_validate.latest_version()]
"""Pod failure policies are GA from 1.31; and the newest schemas the package has."""


def manifests() -> dict[str, dict]:
    """Each Kubernetes object in the examples by kind/name (the kustomization is kustomize's, not the API's)."""
    found = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


@pytest.fixture
def offline(monkeypatch):
    """No connection can be opened: the schemas must come with the package."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("validation tried the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def pod(cronjob: dict) -> dict:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi)", quantity).groups()
    return float(number) * (1024 if unit == "Gi" else 1)


def test_the_examples_are_the_objects_the_kustomization_lists():
    assert sorted(manifests()) == ["ConfigMap/image-syncer-images", "CronJob/image-syncer-apply",
                                   "CronJob/image-syncer-verify", "ServiceAccount/image-syncer"]
    kustomization = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(path.name for path in EXAMPLES.glob("*.yaml")
                                                        if path.name != "kustomization.yaml")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(manifests()))
def test_each_manifest_is_valid_against_the_kubernetes_schema(name, version, offline):
    assert kubernetes_validate.validate(manifests()[name], version, strict=True)


@pytest.mark.parametrize(("change", "complaint"), [
    (lambda job: job["spec"]["jobTemplate"]["spec"].update(completionsMode="Indexed"), "completionsMode"),
    (lambda job: pod(job)["containers"][0].pop("name"), "'name' is a required property"),
    (lambda job: job["spec"]["jobTemplate"]["spec"].update(completions="3"), "'3'"),
    (lambda job: pod(job)["containers"][0].update(arg=["apply"]), "arg"),
])
def test_the_validation_catches_a_misspelt_field_a_missing_one_and_a_wrong_type(change, complaint, offline):
    job = manifests()["CronJob/image-syncer-apply"]
    change(job)
    with pytest.raises(kubernetes_validate.ValidationError) as refused:
        kubernetes_validate.validate(job, VERSIONS[-1], strict=True)
    assert complaint in refused.value.message


def test_apply_is_an_indexed_job_of_n_pods_each_one_shard_of_n_never_two_runs_at_once():
    cronjob = manifests()["CronJob/image-syncer-apply"]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    (container,) = pod(cronjob)["containers"]
    args = container["args"]

    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["completionMode"] == "Indexed"
    assert args[0] == "apply" and "command" not in container  # the image's entrypoint is image-syncer
    shard = args[args.index("--shard") + 1]
    assert shard == f"auto/{job['completions']}"
    assert job["parallelism"] == job["completions"] >= 2


@pytest.mark.parametrize("name", ["CronJob/image-syncer-apply", "CronJob/image-syncer-verify"])
def test_the_command_reads_the_configmaps_files_where_they_are_mounted(name):
    objects = manifests()
    spec = pod(objects[name])
    (container,) = spec["containers"]
    args = container["args"]
    configmap = objects["ConfigMap/image-syncer-images"]
    (volume,) = [volume for volume in spec["volumes"] if "configMap" in volume]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (mount,) = [mount for mount in container["volumeMounts"] if mount["name"] == volume["name"]]
    mounted = {f"{mount['mountPath']}/{item['path']}": item["key"]
               for item in volume["configMap"].get("items") or [{"key": key, "path": key} for key in configmap["data"]]}

    for option, key in (("--images-file", "images.yaml"), ("--lock-file", "images.lock")):
        assert mounted[args[args.index(option) + 1]] == key
        assert key in configmap["data"]
    assert mount["readOnly"] is True
    assert yaml.safe_load(configmap["data"]["images.yaml"])["images"]  # an images.yaml, not a placeholder


@pytest.mark.parametrize("name", ["CronJob/image-syncer-apply", "CronJob/image-syncer-verify"])
def test_the_pods_run_as_the_workload_identity_service_account(name):
    objects = manifests()
    account = objects["ServiceAccount/image-syncer"]
    assert pod(objects[name])["serviceAccountName"] == account["metadata"]["name"]
    assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]@[A-Z_a-z0-9-]+\.iam\.gserviceaccount\.com",
                        account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"])


def test_the_memory_asked_for_covers_applys_measured_peak_rss_cited_beside_it():
    readme = (ROOT / "README.md").read_text()
    copying = re.search(r"\| peak RSS copying a 1 GiB layer \| ([\d.]+) MiB", readme)[1]
    from_export = re.findall(r"([\d.]+) MiB", re.search(r"\| apply --from DIR: wall, peak RSS \|.*", readme)[0])
    bound = re.search(r"a run stays under (\d+) MiB", readme)[1]
    measured = [copying, *from_export]
    text = (EXAMPLES / "cronjob-apply.yaml").read_text()
    for figure in [*measured, bound]:
        assert f"{figure} MiB" in text, figure  # cited where the numbers are chosen
    for name in ("CronJob/image-syncer-apply", "CronJob/image-syncer-verify"):
        resources = pod(manifests()[name])["containers"][0]["resources"]
        assert mebibytes(resources["requests"]["memory"]) >= max(map(float, measured))
        assert mebibytes(resources["limits"]["memory"]) >= float(bound)


def test_the_apply_pods_arguments_are_what_the_cli_takes(tmp_path, monkeypatch):
    """The pod's arguments, its files at /config made local: accepted (no usage error) with the
    index Kubernetes sets, and a usage error naming it without."""
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    objects = manifests()
    configmap = objects["ConfigMap/image-syncer-images"]
    for key, value in configmap["data"].items():
        (tmp_path / key).write_text(value)
    args = [str(tmp_path / word.removeprefix("/config/")) if word.startswith("/config/") else word
            for word in pod(objects["CronJob/image-syncer-apply"])["containers"][0]["args"]]

    with_index = run_cli(tmp_path, *args, env={"JOB_COMPLETION_INDEX": "2"})
    without = run_cli(tmp_path, *args)

    assert with_index.code == 1, str(with_index)  # the placeholder lock, refused before any request
    assert with_index.error_lines and "images.lock" in with_index.error_lines[0], str(with_index)
    assert without.code == 2 and "JOB_COMPLETION_INDEX" in without.error_lines[0], str(without)
