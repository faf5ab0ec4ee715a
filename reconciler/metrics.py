"""``--metrics-file``: one run of apply, export or verify as Prometheus text exposition.

For node-exporter's textfile collector (``--collector.textfile.directory``): the file holds
a snapshot of the last run, so every metric is a gauge named without ``_total`` (a counter
would claim to grow across runs, which a file rewritten by each run cannot promise). Each
series is labelled ``command`` (apply, export, verify) and ``shard`` (``K/N``, or empty when
the run is not sharded: Prometheus treats an empty label as absent). Every outcome is
written, zeros too, so an alert needs no ``absent()``. HELP texts do not depend on the
command, as the collector wants of one metric read from several files.

The text is written here (the format is small) rather than by a client library; the file
itself is replaced atomically (``files.write_atomic``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from reconciler.apply import Outcome, Report
from reconciler.prune import DeletionOutcome
from reconciler.shard import Shard
from reconciler.verify import Status, Verification

PREFIX = "image_syncer_"
APPLY_OUTCOMES = tuple(Outcome)
VERIFY_OUTCOMES = tuple(Status)

_HELP = {
    "images": "Images of the last run by outcome (apply and export: copied, unchanged, refused, failed, deferred, "
              "interrupted; verify: intact, changed, deleted, error).",
    "deletions": "Tags the last apply's prune (images.yaml's prune: true) handled, by outcome: deleted, gone, "
                 "refused, failed, skipped.",
    "success": "1 when every image of the last run ended well (copied or unchanged; for verify, intact), and every "
               "deletion (deleted or gone), else 0.",
    "blobs": "Blobs the last run placed by how: uploaded, mounted from another repository of the target, "
             "or already there.",
    "sent_bytes": "Bytes of blobs the last run uploaded (or, for export, wrote into the layout).",
    "duration_seconds": "How long the last run's work took, in seconds.",
    "last_run_timestamp_seconds": "When the last run ended, in seconds since the Unix epoch.",
}

Sample = tuple[dict[str, str], float]


def report_metrics(command: str, shard: Shard | None, report: Report, finished: float | None = None) -> str:
    """An apply's or an export's report; ``finished``: Unix time (default: now)."""
    stats = report.stats
    deletions = [deletion.outcome for deletion in report.deletions]
    return _exposition(command, shard, [
        ("images", [({"outcome": outcome.value}, report.count(outcome)) for outcome in APPLY_OUTCOMES]),
        ("deletions", [({"outcome": outcome.value}, deletions.count(outcome)) for outcome in DeletionOutcome]),
        ("success", [({}, int(report.ok))]),
        ("blobs", [({"how": "uploaded"}, stats.blobs_uploaded), ({"how": "mounted"}, stats.blobs_mounted),
                   ({"how": "present"}, stats.blobs_present)]),
        ("sent_bytes", [({}, stats.bytes_uploaded)]),
        ("duration_seconds", [({}, round(report.seconds, 3))]),
        ("last_run_timestamp_seconds", [({}, _now(finished))]),
    ])


def verification_metrics(verification: Verification, seconds: float, finished: float | None = None) -> str:
    """A verify's result (its shard is its own); it sends nothing, so no blobs or bytes."""
    statuses = [image.status for image in verification.images]
    return _exposition("verify", verification.shard, [
        ("images", [({"outcome": status.value}, statuses.count(status)) for status in VERIFY_OUTCOMES]),
        ("success", [({}, int(verification.ok))]),
        ("duration_seconds", [({}, round(seconds, 3))]),
        ("last_run_timestamp_seconds", [({}, _now(finished))]),
    ])


def _now(finished: float | None) -> float:
    # Cut, not rounded, to the millisecond: a run's end is never written later than it was.
    return math.floor((time.time() if finished is None else finished) * 1000) / 1000


def _exposition(command: str, shard: Shard | None, families: Sequence[tuple[str, Sequence[Sample]]]) -> str:
    common = {"command": command, "shard": "" if shard is None else str(shard)}
    lines = []
    for name, samples in families:
        lines += [f"# HELP {PREFIX}{name} {escape_help(_HELP[name])}", f"# TYPE {PREFIX}{name} gauge"]
        lines += [f"{PREFIX}{name}{_labels({**common, **labels})} {number(value)}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{key}="{escape_label(value)}"' for key, value in labels.items()) + "}"


def escape_label(value: str) -> str:
    """A label value as the exposition format quotes it: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A HELP text: backslash and line feed escaped (a quote is itself there)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    """A sample value: whole numbers without a point, and the format's spellings of NaN and the infinities."""
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 2**53):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
