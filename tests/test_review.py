"""The plan a reviewer reads in five seconds, and the summaries a CI run leaves behind."""

from __future__ import annotations

import pytest

from tests.harness import images as harness_images
from tests.helpers_cli import CliResult, run_cli, write_images


def ok(result: CliResult, code: int = 0) -> CliResult:
    assert result.code == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    return result


def short(digest: str) -> str:
    return digest[: len("sha256:") + 12]


@pytest.fixture(scope="module")
def big_mirror(tmp_path_factory, plain_registry, second_plain_registry):
    """64 images already mirrored, then 2 new entries and one whose target someone else took: 67 in all."""
    workdir = tmp_path_factory.mktemp("review")
    pushed = harness_images.push_image(harness_images.build_image("oci-index", seed="review"),
                                       plain_registry, "review/app", "v1")
    prefix = f"{second_plain_registry.host}/review-mirror/"
    source = f"{pushed.host}/{pushed.repo}:v1"
    entries = [{"source": source, "target": f"app-{number:02d}"} for number in range(64)]
    write_images(workdir, prefix, entries)
    ok(run_cli(workdir, "lock"))
    ok(run_cli(workdir, "apply"))
    squatter = harness_images.push_image(harness_images.build_image("oci", seed="review-squatter"),
                                         second_plain_registry, "review-mirror/app-taken", "v1")
    entries += [{"source": source, "target": name} for name in ("app-new-b", "app-new-a", "app-taken")]
    write_images(workdir, prefix, entries)
    ok(run_cli(workdir, "lock"))
    return workdir, pushed, squatter, prefix


def test_a_67_image_plan_shows_the_three_changes_first_and_folds_the_rest(big_mirror, tmp_path):
    workdir, pushed, squatter, prefix = big_mirror
    summary = tmp_path / "summary.md"

    planned = ok(run_cli(workdir, "plan", "--format", "markdown", env={"GITHUB_STEP_SUMMARY": str(summary)}), 1)
    again = ok(run_cli(workdir, "plan", "--format", "markdown"), 1)

    assert planned.stdout == again.stdout, "the same plan must render to the same bytes"
    lines = planned.stdout.splitlines()
    digest = f"`{short(pushed.digest)}`"
    platforms = "linux/amd64, linux/arm64/v8"
    source = f"`{pushed.host}/{pushed.repo}:v1`"
    assert lines[:17] == [
        "<!-- image-syncer plan -->",
        "### image-syncer plan",
        "",
        "**2 to create · 1 refused · 64 unchanged**",
        "",
        f"Every target below is under `{prefix}` and named after its source, unless ← names another.",
        "",
        "#### Refused: apply leaves these targets as they are",
        "",
        f"- **conflict** `app-taken:v1` ← {source} · {digest} · {platforms}",
        f"  - the target holds `{short(squatter.digest)}`, the lock wants {digest}: choose another target tag for "
        "this entry, or remove it",
        "",
        "#### To create",
        "",
        f"- `app-new-a:v1` ← {source} · {digest} · {platforms}",
        f"- `app-new-b:v1` ← {source} · {digest} · {platforms}",
        "",
    ]
    assert lines[17:19] == ["<details><summary>64 unchanged</summary>", ""]
    assert lines[19] == f"- `app-00:v1` · {digest}"
    assert lines[-2:] == ["", "</details>"]
    assert summary.read_text() == planned.stdout + "\n"


def test_the_text_plan_lists_changes_first_and_counts_the_unchanged(big_mirror):
    workdir, _pushed, _squatter, prefix = big_mirror

    planned = ok(run_cli(workdir, "plan"), 1)
    verbose = ok(run_cli(workdir, "plan", "--verbose"), 1)

    targets = [line.split()[1] for line in planned.stdout_lines if line.startswith("  ")]
    assert targets[:3] == [f"{prefix}app-taken:v1", f"{prefix}app-new-a:v1", f"{prefix}app-new-b:v1"]
    assert planned.stdout_lines[3] == "  = 64 unchanged (--verbose lists them)"
    assert planned.stdout_lines[-1] == "Plan: 2 to create, 64 unchanged, 1 refused."
    listed = [line for line in verbose.stdout_lines if line.startswith("  = ")]
    assert len(listed) == 64 and listed[0].startswith(f"  = {prefix}app-00:v1  holds ")


def test_apply_and_lock_check_leave_their_markdown_in_the_step_summary(tmp_path, push_image, second_plain_registry,
                                                                      unique_repo):
    image = push_image("oci")
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo()}/",
                 [{"source": f"{image.host}/{image.repo}:v1"}])
    summary = tmp_path / "summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    ok(run_cli(tmp_path, "lock"))

    ok(run_cli(tmp_path, "lock", "--check", env=env))
    ok(run_cli(tmp_path, "apply", env=env))

    text = summary.read_text()
    assert text.startswith("### image-syncer lock --check\n\n`images.lock` matches `images.yaml`.\n")
    report = text[text.index("### image-syncer apply"):].splitlines()
    assert report[2].startswith("**1 copied · 0 unchanged · 0 refused · 0 failed** (3 blobs uploaded, 0 mounted, ")
    assert " sent in " in report[2] and report[2].endswith(" s)")
    assert report[4].startswith("Every target below is under `") and report[6:8] == ["#### Copied", ""]
    assert report[8] == f"- `{image.repo.rsplit('/', 1)[-1]}:v1` · `{short(image.digest)}`"


def test_a_step_summary_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path, push_image,
                                                                         second_plain_registry, unique_repo):
    image = push_image("oci")
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo()}/",
                 [{"source": f"{image.host}/{image.repo}:v1"}])
    ok(run_cli(tmp_path, "lock"))

    planned = ok(run_cli(tmp_path, "plan", env={"GITHUB_STEP_SUMMARY": str(tmp_path)}))

    assert any(line.startswith(f"WARNING: GITHUB_STEP_SUMMARY {tmp_path}: cannot append")
               for line in planned.stderr_lines), str(planned)
