"""``--metrics-file``: reconciler/metrics.py over plain reports, read back by prometheus_client's own parser;
and the command line writing it after a real apply and verify (also of a run that exits 1)."""

from __future__ import annotations

import math
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler import metrics
from reconciler.apply import AppliedImage, Outcome, Report
from reconciler.oci.digest import Digest
from reconciler.prune import AppliedDeletion, DeletionOutcome
from reconciler.oci.reference import parse as reference
from reconciler.registry.copy import CopyStats
from reconciler.shard import Shard
from reconciler.verify import Status, Verification, VerifiedImage
from tests.harness import images as harness_images
from tests.helpers_cli import run_cli, write_images

DIGEST = "sha256:" + "a" * 64
NAMES = {"images", "deletions", "success", "blobs", "sent_bytes", "duration_seconds", "last_run_timestamp_seconds"}


def _parsed(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{metric name without the prefix: {sorted labels: value}}; every family must be a gauge with HELP."""
    parsed = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family
        assert family.documentation, family
        assert family.name.startswith(metrics.PREFIX), family
        samples = {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}
        assert len(samples) == len(family.samples), family  # no series twice
        parsed[family.name.removeprefix(metrics.PREFIX)] = samples
    return parsed


def _value(parsed, name: str, **labels: str) -> float:
    return parsed[name][tuple(sorted(labels.items()))]


def _report(*outcomes: Outcome, stats: CopyStats = CopyStats(), seconds: float = 0.0) -> Report:
    images = tuple(AppliedImage(reference(f"src.example/app{index}:v1"),
                                reference(f"dst.example/app{index}:v1"), DIGEST, outcome)
                   for index, outcome in enumerate(outcomes))
    return Report(images=images, stats=stats, seconds=seconds)


def test_an_apply_report_is_every_outcome_blobs_bytes_duration_and_time():
    report = _report(Outcome.COPIED, Outcome.COPIED, Outcome.UNCHANGED, Outcome.FAILED, Outcome.DEFERRED,
                     stats=CopyStats(blobs_uploaded=5, blobs_mounted=2, blobs_present=7, bytes_uploaded=123456789),
                     seconds=12.3456)

    parsed = _parsed(metrics.report_metrics("apply", None, report, finished=1767225600.25))

    assert set(parsed) == NAMES
    run = {"command": "apply", "shard": ""}
    assert {outcome: _value(parsed, "images", **run, outcome=outcome)
            for outcome in ("copied", "unchanged", "refused", "failed", "deferred", "interrupted")} == {
        "copied": 2, "unchanged": 1, "refused": 0, "failed": 1, "deferred": 1, "interrupted": 0}
    assert len(parsed["images"]) == 6  # every outcome, zeros too: an alert needs no absent()
    assert _value(parsed, "success", **run) == 0
    assert {how: _value(parsed, "blobs", **run, how=how) for how in ("uploaded", "mounted", "present")} == {
        "uploaded": 5, "mounted": 2, "present": 7}
    assert _value(parsed, "sent_bytes", **run) == 123456789
    assert _value(parsed, "duration_seconds", **run) == 12.346
    assert _value(parsed, "last_run_timestamp_seconds", **run) == 1767225600.25


def test_deletions_are_counted_by_outcome_and_one_not_done_fails_the_run():
    def deletions(*outcomes: DeletionOutcome) -> tuple[AppliedDeletion, ...]:
        return tuple(AppliedDeletion(reference(f"dst.example/old{index}:v1"), Digest.parse(DIGEST), outcome)
                     for index, outcome in enumerate(outcomes))

    done = _report(Outcome.COPIED)
    pruned = Report(done.images, done.stats, deletions=deletions(DeletionOutcome.DELETED, DeletionOutcome.DELETED,
                                                                DeletionOutcome.GONE))
    refused = Report(done.images, done.stats, deletions=deletions(DeletionOutcome.DELETED, DeletionOutcome.REFUSED))

    parsed = _parsed(metrics.report_metrics("apply", None, pruned))
    run = {"command": "apply", "shard": ""}
    assert {outcome.value: _value(parsed, "deletions", **run, outcome=outcome.value) for outcome in DeletionOutcome} == {
        "deleted": 2, "gone": 1, "refused": 0, "failed": 0, "skipped": 0}
    assert _value(parsed, "success", **run) == 1
    assert _value(_parsed(metrics.report_metrics("apply", None, refused)), "success", **run) == 0


@pytest.mark.parametrize(("shard", "label"), [(None, ""), (Shard(2, 4), "2/4")])
def test_every_series_names_its_command_and_shard(shard, label):
    parsed = _parsed(metrics.report_metrics("export", shard, _report(Outcome.COPIED, Outcome.UNCHANGED)))

    for name, samples in parsed.items():
        for labels in samples:
            assert ("command", "export") in labels and ("shard", label) in labels, (name, labels)
    assert _value(parsed, "success", command="export", shard=label) == 1


def test_the_time_is_now_unless_given():
    before = time.time()
    parsed = _parsed(metrics.report_metrics("apply", None, _report()))
    assert before - 0.01 <= _value(parsed, "last_run_timestamp_seconds", command="apply", shard="") <= time.time()


def test_a_verification_is_its_statuses_and_no_transfer():
    images = tuple(VerifiedImage(reference(f"src.example/app{index}:v1"),
                                 reference(f"dst.example/app{index}:v1"), DIGEST, status)
                   for index, status in enumerate((Status.INTACT, Status.INTACT, Status.CHANGED, Status.ERROR)))

    parsed = _parsed(metrics.verification_metrics(Verification(images, shard=Shard(1, 3)), seconds=0.5,
                                                  finished=1767225600.0))

    assert set(parsed) == NAMES - {"blobs", "sent_bytes", "deletions"}  # verify sends and deletes nothing
    run = {"command": "verify", "shard": "1/3"}
    assert {status: _value(parsed, "images", **run, outcome=status)
            for status in ("intact", "changed", "deleted", "error")} == {
        "intact": 2, "changed": 1, "deleted": 0, "error": 1}
    assert len(parsed["images"]) == 4
    assert _value(parsed, "success", **run) == 0
    assert _value(parsed, "duration_seconds", **run) == 0.5
    assert _value(parsed, "last_run_timestamp_seconds", **run) == 1767225600.0
    intact = Verification(images[:2])
    assert _value(_parsed(metrics.verification_metrics(intact, seconds=0)), "success", command="verify", shard="") == 1


def test_one_metric_has_one_help_whichever_command_wrote_it():
    """node-exporter's textfile collector reads every file of its directory as one: a metric's
    HELP and TYPE must not differ between the apply file and the verify file."""
    def described(text: str) -> dict[str, tuple[str, str]]:
        return {family.name: (family.documentation, family.type) for family in text_string_to_metric_families(text)}

    applied = described(metrics.report_metrics("apply", Shard(1, 2), _report(Outcome.COPIED)))
    verified = described(metrics.verification_metrics(Verification(()), seconds=1))
    assert verified and all(applied[name] == verified[name] for name in verified)


@pytest.mark.parametrize("value", ['a"b', "back\\slash", "two\nlines", 'all\\"\n\\n'])
def test_a_label_value_is_escaped_as_the_format_says(value):
    parsed = _parsed(metrics.report_metrics(value, None, _report()))
    assert _value(parsed, "success", command=value, shard="") == 1


def test_escaping_itself():
    assert metrics.escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert metrics.escape_help('say "hi"\\\nthere') == 'say "hi"\\\\\\nthere'


@pytest.mark.parametrize(("value", "text"), [(3, "3"), (0, "0"), (2.0, "2"), (0.25, "0.25"), (1767225600.125,
                                             "1767225600.125"), (math.inf, "+Inf"), (-math.inf, "-Inf"),
                                             (math.nan, "NaN"), (2.0**60, "1.152921504606847e+18")])
def test_a_number_is_written_as_the_format_spells_it(value, text):
    assert metrics.number(value) == text


def test_the_text_is_whole_lines():
    """The textfile collector reads whole lines: the last one ends too."""
    text = metrics.report_metrics("apply", None, _report(Outcome.COPIED))
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert all(line.startswith(("# HELP ", "# TYPE ", metrics.PREFIX)) for line in text.splitlines())


# ------------------------------------------------------------------ the command line, against a real registry


def test_apply_and_verify_write_their_metrics_also_when_they_fail(
    tmp_path, plain_registry, second_plain_registry, unique_repo
):
    """A refused image makes apply exit 1: the file still says what happened, which is what a
    scheduled job alerts on. A path that cannot be written is refused before anything is copied."""
    base = unique_repo("metrics")
    wanted, taken = (harness_images.push_image(harness_images.build_image("oci", seed=f"metrics-{name}"),
                                               plain_registry, f"{base}/{name}", "v1") for name in ("wanted", "taken"))
    mirror = unique_repo("metrics-mirror")
    write_images(tmp_path, f"{second_plain_registry.host}/{mirror}/",
                 [{"source": f"{plain_registry.host}/{image.repo}:v1"} for image in (wanted, taken)])
    assert run_cli(tmp_path, "lock").code == 0
    squatter = harness_images.push_image(harness_images.build_image("oci", seed="metrics-squatter"),
                                         second_plain_registry,
                                         f"{mirror}/{plain_registry.host.replace(':', '_')}/{taken.repo}", "v1")

    refused = run_cli(tmp_path, "apply", "--metrics-file", "missing/m.prom")
    assert (refused.code, refused.error_lines) == (
        1, ["error: missing/m.prom: cannot write: no directory missing"]), str(refused)
    assert "1 deleted" in run_cli(tmp_path, "verify").stdout  # nothing was copied

    applied = run_cli(tmp_path, "apply", "--metrics-file", "apply.prom")
    assert applied.code == 1, str(applied)
    parsed = _parsed((tmp_path / "apply.prom").read_text())
    run = {"command": "apply", "shard": ""}
    assert [_value(parsed, "images", **run, outcome=outcome) for outcome in ("copied", "refused", "unchanged")] == [
        1, 1, 0]
    assert _value(parsed, "success", **run) == 0
    assert _value(parsed, "blobs", **run, how="uploaded") == len(wanted.image.blobs)
    assert _value(parsed, "sent_bytes", **run) == sum(wanted.image.blob_sizes.values())
    assert 0 < _value(parsed, "duration_seconds", **run) < applied.seconds
    assert time.time() - applied.seconds - 1 <= _value(parsed, "last_run_timestamp_seconds", **run) <= time.time()
    assert [path.name for path in tmp_path.iterdir() if "apply.prom" in path.name] == ["apply.prom"]  # no temporary

    verified = run_cli(tmp_path, "verify", "--shard", "1/1", "--metrics-file", "verify.prom")
    assert verified.code == 1, str(verified)
    parsed = _parsed((tmp_path / "verify.prom").read_text())
    run = {"command": "verify", "shard": "1/1"}
    assert [_value(parsed, "images", **run, outcome=outcome) for outcome in ("intact", "changed", "deleted")] == [
        1, 1, 0], squatter
    assert "sent_bytes" not in parsed
