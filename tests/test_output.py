"""Where the markdown views go: stdout for a pull request comment (65,536 characters at most, pointing to
the run's job summary for more) and GitHub's step summary (1 MiB at most)."""

from __future__ import annotations

import random

from reconciler import markdown, output
from reconciler.arguments import PlanFormat
from tests.helpers_plans import large_plan

RUN = {"GITHUB_SERVER_URL": "https://github.test", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "9"}


def test_markdown_on_stdout_fits_a_comment_and_the_step_summary_holds_more(tmp_path, monkeypatch, capsys):
    summary = tmp_path / "summary.md"
    for name, value in {**RUN, "GITHUB_STEP_SUMMARY": str(summary)}.items():
        monkeypatch.setenv(name, value)
    plan = large_plan(random.Random(4), refused=0, creates=3000, unchanged=0)

    output.print_as(PlanFormat.markdown, json_text="", markdown=markdown.plan_markdown(plan), text=None)

    printed, summarised = capsys.readouterr().out, summary.read_text()
    assert len(printed.encode()) <= markdown.COMMENT_BYTES < len(summarised.encode()) <= markdown.SUMMARY_BYTES + 1
    assert ("not listed here: see [this run's job summary](https://github.test/o/r/actions/runs/9); "
            "`image-syncer plan --format json` prints every image.") in printed
    assert printed.count("\n- `") < 1000 and summarised.count("\n- `") == 3000  # the summary lists them all


def test_outside_github_actions_the_comment_points_only_to_the_complete_plan(monkeypatch):
    for name in (*RUN, "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)

    assert output.comment_room() == markdown.Room(markdown.COMMENT_BYTES)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", "/dev/null")
    assert output.comment_room() == markdown.Room(markdown.COMMENT_BYTES, "this run's job summary")
