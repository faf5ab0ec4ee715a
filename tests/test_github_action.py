"""The GitHub Action (action.yml) and the example workflows: valid, free of script injection, and working.

The schemas are the ones check-jsonschema vendors. The action's own shell steps are run with
bash as the runner would run them (its env: mapping, GITHUB_* files, one GITHUB_OUTPUT per
step), against real registries: sources on ``plain_registry``, targets on
``second_plain_registry``; what the targets hold is checked with skopeo.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs
import pytest
import yaml

from reconciler.registry.google import ACCESS_TOKEN_USERNAME
from reconciler.markdown import PLAN_MARKER
from tests.harness import images as harness_images
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import ROOT, cli_env, run_cli, write_images

ACTION = ROOT / "action.yml"
WORKFLOWS = sorted((ROOT / "examples" / "github-actions").glob("*.yml"))
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
CONTEXT_PATH = re.compile(r"[a-z]+(?:\.[A-Za-z0-9_-]+)+")
CONDITION = re.compile(r"(\S+) (==|!=) ''")
GITHUB_BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]  # how the runner runs `shell: bash`
SETUP_PYTHON = "actions/setup-python@"


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def workflow_steps(path: Path) -> list[dict]:
    return [step for job in load_yaml(path)["jobs"].values() for step in job["steps"]]


def check_schema(schema: str, path: Path) -> subprocess.CompletedProcess:
    """check-jsonschema with a vendored schema, every proxy a closed port: any download would fail."""
    dead_proxy = {name: "http://127.0.0.1:9" for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")}
    env = {**os.environ, **dead_proxy, "NO_PROXY": "", "no_proxy": ""}
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


# -- 1. schemas and script injection ------------------------------------------------------------


@pytest.mark.parametrize(("schema", "path"), [("vendor.github-actions", ACTION)]
                         + [("vendor.github-workflows", path) for path in WORKFLOWS],
                         ids=lambda value: value.name if isinstance(value, Path) else value)
def test_files_match_the_vendored_schemas(schema, path):
    checked = check_schema(schema, path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok -- validation done" in checked.stdout


def test_the_schemas_catch_a_broken_file(tmp_path):
    action = load_yaml(ACTION)
    del next(step for step in action["runs"]["steps"] if "run" in step)["shell"]
    broken_action = tmp_path / "action.yml"
    broken_action.write_text(yaml.safe_dump(action))
    broken_workflow = tmp_path / "apply.yml"
    broken_workflow.write_text((ROOT / "examples/github-actions/apply.yml").read_text()
                               .replace("    runs-on: ubuntu-latest\n", "", 1))

    checked_action = check_schema("vendor.github-actions", broken_action)
    checked_workflow = check_schema("vendor.github-workflows", broken_workflow)

    assert checked_action.returncode == 1 and "$.runs" in checked_action.stdout, checked_action.stdout
    assert checked_workflow.returncode == 1, checked_workflow.stdout
    assert "'runs-on' is a required property" in checked_workflow.stdout


def test_the_example_workflows_exist():
    assert [path.name for path in WORKFLOWS] == ["apply.yml", "pull-request.yml", "upgrade.yml"]


@pytest.mark.parametrize("path", [ACTION, *WORKFLOWS], ids=lambda path: path.name)
def test_no_expression_is_pasted_into_a_script(path):
    """``${{ }}`` in a script is pasted in before the shell or node reads it: values go through env:."""
    document = load_yaml(path)
    steps = document["runs"]["steps"] if path == ACTION else workflow_steps(path)
    scripts = [step["run"] for step in steps if "run" in step]
    scripts += [step["with"]["script"] for step in steps if "script" in step.get("with", {})]
    assert scripts
    for script in scripts:
        assert "${{" not in script, script
    for script in (step["run"] for step in steps if "run" in step):
        parsed = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
        assert parsed.returncode == 0, parsed.stderr


def test_the_comment_is_found_by_the_marker_the_plan_starts_with():
    script = next(step["with"]["script"] for step in workflow_steps(ROOT / "examples/github-actions/pull-request.yml")
                  if "script" in step.get("with", {}))
    assert f"const marker = '{PLAN_MARKER}';" in script


def test_the_examples_use_the_action_with_its_inputs():
    inputs = set(load_yaml(ACTION)["inputs"])
    used = [step for path in WORKFLOWS for step in workflow_steps(path)
            if step.get("uses", "").endswith("/image-syncer@v1")]
    assert {step["with"]["command"] for step in used} == {"lock-check", "plan", "apply", "verify"}
    for step in used:
        assert set(step["with"]) <= inputs, step


# -- 2. the action's steps, run as the runner runs them -----------------------------------------


@attrs.frozen
class StepRun:
    id: str
    status: int
    log: str


@attrs.frozen
class ActionRun:
    steps: list[StepRun]
    outputs: dict[str, str]
    """The action's outputs, as the workflow's next step sees them."""
    summary: str
    job_env: str
    """What the action appended to GITHUB_ENV for the rest of the job."""

    @property
    def failed(self) -> bool:
        return self.steps[-1].status != 0

    @property
    def log(self) -> str:
        return "".join(step.log for step in self.steps)

    def __str__(self) -> str:
        return "\n".join(f"--- step {step.id}: exit {step.status}\n{step.log}" for step in self.steps)


def substitute(text: str, contexts: dict) -> str:
    """Replace each ``${{ context.path }}``; anything more complex is a failure, never a guess."""
    return EXPRESSION.sub(lambda match: evaluate(match.group(1), contexts), text)


def evaluate(path: str, contexts: dict) -> str:
    assert CONTEXT_PATH.fullmatch(path), f"not a plain context path: {path!r}"
    head, *keys = path.split(".")
    value = contexts[head]
    for key in keys:
        if head == "steps" and key not in value:
            return ""  # a step that was skipped, or an output never written
        value = value[key]
    return value


def condition_holds(condition: str | None, contexts: dict) -> bool:
    if condition is None:
        return True
    match = CONDITION.fullmatch(condition)
    assert match, f"not a condition this test evaluates: {condition!r}"
    return (evaluate(match.group(1), contexts) == "") == (match.group(2) == "==")


def read_outputs(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines() if path.exists() else []
    assert all("=" in line and "<<" not in line.split("=", 1)[0] for line in lines), lines
    return dict(line.split("=", 1) for line in lines)


def run_action(workdir: Path, inputs: dict[str, str]) -> ActionRun:
    """The action's steps in order, until one fails; a ``uses:`` step may only be setup-python."""
    action = load_yaml(ACTION)
    unknown = set(inputs) - set(action["inputs"])
    assert not unknown, unknown
    runner = Path(tempfile.mkdtemp(prefix=".runner-", dir=workdir))  # RUNNER_TEMP: this run's own
    files = {name: runner / name for name in ("summary", "env")}
    for path in files.values():
        path.write_text("")
    contexts: dict = {
        "inputs": {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()} | inputs,
        "github": {"action_path": str(ROOT)},
        "steps": {},
    }
    env = cli_env(workdir) | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_ACTIONS": "true",
        "GITHUB_ACTION_PATH": str(ROOT),
        "GITHUB_WORKSPACE": str(workdir),
        "GITHUB_STEP_SUMMARY": str(files["summary"]),
        "GITHUB_ENV": str(files["env"]),
        "RUNNER_TEMP": str(runner),
    }
    steps: list[StepRun] = []
    for index, step in enumerate(action["runs"]["steps"]):
        step_id = step.get("id", str(index))
        if not condition_holds(step.get("if"), contexts):
            continue
        if "uses" in step:
            assert step["uses"].startswith(SETUP_PYTHON), step
            contexts["steps"][step_id] = {"outputs": {"python-path": sys.executable}}
            continue
        assert step["shell"] == "bash" and "${{" not in step["run"], step
        output = runner / f"output-{step_id}"
        script = runner / f"{step_id}.sh"
        script.write_text(step["run"])
        step_env = {name: substitute(str(value), contexts) for name, value in step.get("env", {}).items()}
        completed = subprocess.run([*GITHUB_BASH, str(script)], cwd=workdir, timeout=120, check=False,
                                   env=env | {"GITHUB_OUTPUT": str(output)} | step_env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        contexts["steps"][step_id] = {"outputs": read_outputs(output)}
        steps.append(StepRun(step_id, completed.returncode, completed.stdout))
        if completed.returncode != 0:
            break
    outputs = {name: substitute(spec["value"], contexts) for name, spec in action["outputs"].items()}
    return ActionRun(steps, outputs, files["summary"].read_text(), files["env"].read_text())


def target_of(prefix: str, pushed) -> str:
    """images.yaml's naming: prefix + the source repository as written (host:port as host_port) + tag."""
    return f"{prefix}{pushed.host.replace(':', '_')}/{pushed.repo}:{pushed.tag}"


def succeeded(run: ActionRun) -> ActionRun:
    assert not run.failed and run.outputs["exit-code"] == "0", str(run)
    return run


def failed_with(run: ActionRun, status: int) -> ActionRun:
    assert run.failed and run.steps[-1].status == status and run.outputs["exit-code"] == str(status), str(run)
    return run


def names(markdown: str, target: str) -> bool:
    """The plan says the targets' common prefix once; each line names the rest."""
    prefix, name = target.rsplit("/", 1)
    return f"Every target below is under `{prefix}/`" in markdown and f"`{name}` ← `" in markdown


def plan_markdown(run: ActionRun) -> str:
    markdown = Path(run.outputs["plan-markdown"]).read_text()
    assert markdown.splitlines()[:2] == [PLAN_MARKER, "### image-syncer plan"], markdown
    return markdown


def test_lock_check_plan_apply_verify_through_the_action(tmp_path, push_image, second_plain_registry,
                                                         unique_repo):
    pushed = push_image("oci-index")
    base = unique_repo("mirror")
    prefix = f"{second_plain_registry.host}/{base}/"
    target = target_of(prefix, pushed)
    (tmp_path / "mirror").mkdir()
    write_images(tmp_path / "mirror", prefix, [{"source": pushed.ref}])
    locked = run_cli(tmp_path, "lock", "-i", "mirror/images.yaml")
    assert locked.code == 0, str(locked)
    files = {"images-file": "mirror/images.yaml"}  # the lock file next to it, as the CLI does

    checked = succeeded(run_action(tmp_path, {"command": "lock-check", **files}))
    assert [step.id for step in checked.steps] == ["install", "run"]
    assert f"image-syncer is importable by {sys.executable}: not installing it again" in checked.steps[0].log
    assert "mirror/images.lock matches mirror/images.yaml." in checked.log
    assert checked.outputs["plan-markdown"] == ""
    assert checked.job_env == ""

    planned = succeeded(run_action(tmp_path, {"command": "plan", **files}))
    markdown = plan_markdown(planned)
    assert names(markdown, target) and "**1 to create · 0 refused · 0 unchanged**" in markdown
    assert markdown in planned.log and markdown in planned.summary

    succeeded(run_action(tmp_path, {"command": "apply", **files}))
    assert skopeo_inspect_raw(target) == pushed.manifest
    assert "0 to create · 0 refused · 1 unchanged" in plan_markdown(
        succeeded(run_action(tmp_path, {"command": "plan", **files})))
    succeeded(run_action(tmp_path, {"command": "verify", **files}))

    squatter = push_image(harness_images.build_image("oci", seed="squatter"), registry=second_plain_registry,
                          repo=target.removeprefix(f"{second_plain_registry.host}/").rsplit(":", 1)[0])
    verified = failed_with(run_action(tmp_path, {"command": "verify", **files}), 1)
    assert target in verified.log
    refused = failed_with(run_action(tmp_path, {"command": "plan", **files}), 1)
    assert "conflict" in plan_markdown(refused)  # posted all the same: reviewers see why
    assert skopeo_inspect_raw(target) == squatter.manifest


def test_a_fresh_lock_passes_lock_check_and_a_stale_one_fails(tmp_path, push_image, second_plain_registry,
                                                              unique_repo):
    first, second = push_image("oci"), push_image("docker")
    prefix = f"{second_plain_registry.host}/{unique_repo('mirror')}/"
    write_images(tmp_path, prefix, [{"source": first.ref}])
    assert run_cli(tmp_path, "lock").code == 0
    fresh = succeeded(run_action(tmp_path, {"command": "lock-check", "python-version": ""}))
    write_images(tmp_path, prefix, [{"source": first.ref}, {"source": second.ref}])

    stale = failed_with(run_action(tmp_path, {"command": "lock-check"}), 1)

    assert "image-syncer is importable by python3: not installing it again" in fresh.steps[0].log  # no setup-python
    assert "images.lock does not match images.yaml:" in stale.log
    assert target_of(prefix, second) in stale.log


def test_args_are_split_on_whitespace_and_passed_on(tmp_path, push_image, second_plain_registry, unique_repo):
    pushed = push_image("oci")
    prefix = f"{second_plain_registry.host}/{unique_repo('mirror')}/"
    write_images(tmp_path, prefix, [{"source": pushed.ref}])
    assert run_cli(tmp_path, "lock").code == 0

    planned = failed_with(run_action(tmp_path, {"command": "plan", "args": "--shard  1/1\n --detailed-exitcode"}), 2)

    assert "**1 to create · 0 refused · 0 unchanged**" in plan_markdown(planned)


def test_an_unknown_command_is_one_error_line(tmp_path):
    run = failed_with(run_action(tmp_path, {"command": "sync"}), 2)
    assert run.steps[-1].log == "error: the command input must be lock-check, plan, apply or verify\n"


def test_the_access_token_reaches_the_target_and_no_output(tmp_path, push_image, registry_factory, unique_repo):
    token = "ya29.action-test-secret"
    target_registry = registry_factory("oauth2-token-target", auth="htpasswd", users={ACCESS_TOKEN_USERNAME: token})
    pushed = push_image("oci")
    prefix = f"{target_registry.host}/{unique_repo('mirror')}/"
    write_images(tmp_path, prefix, [{"source": pushed.ref}])
    locked = run_cli(tmp_path, "lock", "--lock-file", "pins.lock")
    assert locked.code == 0, str(locked)
    inputs = {"lock-file": "pins.lock", "access-token": token}

    without = failed_with(run_action(tmp_path, {"command": "apply", "lock-file": "pins.lock"}), 1)
    applied = succeeded(run_action(tmp_path, {"command": "apply", **inputs}))

    assert "HTTP 401: Unauthorized (authentication required, and no credentials" in without.log, str(without)
    assert skopeo_inspect_raw(target_of(prefix, pushed), creds=(ACCESS_TOKEN_USERNAME, token)) == pushed.manifest
    for run in (without, applied):
        assert token not in run.log + run.summary + "".join(run.outputs.values()) + run.job_env


def test_the_key_file_input_is_the_target_key_file(tmp_path, push_image, second_plain_registry, unique_repo):
    pushed = push_image("oci")
    write_images(tmp_path, f"{second_plain_registry.host}/{unique_repo('mirror')}/", [{"source": pushed.ref}])
    assert run_cli(tmp_path, "lock").code == 0

    run = failed_with(run_action(tmp_path, {"command": "plan", "target-key-file": "absent-key.json"}), 1)

    assert re.search(r"^error: .*absent-key\.json", run.log, re.MULTILINE), str(run)
    assert run.outputs["plan-markdown"] == ""


# -- 3. the pull request's comment script, under node ------------------------------------------

# actions/github-script runs `script:` as the body of an async function of these arguments. Here
# `github` keeps one pull request's comments in a JSON file, so that runs follow each other.
GITHUB_SCRIPT_RUNNER = r"""
const fs = require('fs');
const [scriptPath, statePath] = process.argv.slice(2);
const state = JSON.parse(fs.readFileSync(statePath, 'utf8'));
const issues = {
  listComments: async ({ issue_number }) => ({ data: state.comments.filter((c) => c.issue_number === issue_number) }),
  createComment: async ({ issue_number, body }) => {
    const comment = { id: 100 + state.comments.length, issue_number, body, user: { type: 'Bot' } };
    state.comments.push(comment);
    state.calls.push(`create ${comment.id}`);
  },
  updateComment: async ({ comment_id, body }) => {
    state.comments.find((c) => c.id === comment_id).body = body;
    state.calls.push(`update ${comment_id}`);
  },
};
const github = { rest: { issues }, paginate: async (method, params) => (await method(params)).data };
const context = { repo: { owner: 'o', repo: 'r' }, issue: { number: 7 }, serverUrl: 'https://github.test', runId: 9 };
const core = { setFailed: (message) => { console.error(message); process.exitCode = 1; } };
const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
new AsyncFunction('require', 'github', 'context', 'core', fs.readFileSync(scriptPath, 'utf8'))(
  require, github, context, core,
).then(() => fs.writeFileSync(statePath, JSON.stringify(state)));
"""


@attrs.define
class PullRequest:
    """One pull request's comments, and what the comment script did to them."""

    workdir: Path
    comments: list[dict] = attrs.field(factory=list)
    calls: list[str] = attrs.field(factory=list)

    def post(self, markdown: str) -> subprocess.CompletedProcess:
        step = next(step for step in workflow_steps(ROOT / "examples/github-actions/pull-request.yml")
                    if "script" in step.get("with", {}))
        (self.workdir / "script.js").write_text(step["with"]["script"])
        (self.workdir / "runner.js").write_text(GITHUB_SCRIPT_RUNNER)
        (self.workdir / "plan.md").write_text(markdown)
        state = self.workdir / "state.json"
        state.write_text(json.dumps({"comments": self.comments, "calls": []}))
        completed = subprocess.run(
            ["node", "runner.js", "script.js", str(state)], cwd=self.workdir, capture_output=True, text=True,
            env={"PATH": os.environ["PATH"], "PLAN_MARKDOWN": str(self.workdir / "plan.md")}, timeout=30,
            check=False,
        )
        saved = json.loads(state.read_text())
        self.comments, self.calls = saved["comments"], saved["calls"]
        return completed


@pytest.fixture
def pull_request(tmp_path) -> PullRequest:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    return PullRequest(tmp_path)


def test_the_plan_is_one_comment_updated_only_when_it_changes(pull_request):
    quoted = {"id": 1, "issue_number": 7, "body": f"{PLAN_MARKER}\nquoted by a person", "user": {"type": "User"}}
    pull_request.comments.append(quoted)
    plan = f"{PLAN_MARKER}\n### image-syncer plan\n\n**1 to create · 0 refused · 0 unchanged**\n"

    assert pull_request.post(plan).returncode == 0
    assert pull_request.calls == ["create 101"]
    assert pull_request.post(plan).returncode == 0
    assert pull_request.calls == []  # the plan is deterministic: a push that changes nothing, no write
    changed = plan.replace("1 to create", "2 to create")
    assert pull_request.post(changed).returncode == 0
    assert pull_request.calls == ["update 101"]
    assert [comment["body"] for comment in pull_request.comments] == [quoted["body"], changed]


def test_a_plan_too_long_for_a_comment_is_cut_at_a_line(pull_request):
    rows = [f"| + | `registry.test/mirror/image-{n}:v1` | create |" for n in range(2000)]
    plan = "\n".join([PLAN_MARKER, "### image-syncer plan", *rows]) + "\n"

    assert pull_request.post(plan).returncode == 0

    body = pull_request.comments[0]["body"]
    assert len(plan) > 65536 >= len(body)
    kept, note = body.split("\n\n…cut here: ")
    assert plan.startswith(kept + "\n")
    assert note == "the whole plan is in the [run's summary](https://github.test/o/r/actions/runs/9).\n"


def test_markdown_without_the_marker_is_not_posted(pull_request):
    posted = pull_request.post("### image-syncer plan\n")
    assert posted.returncode == 1 and f"the plan does not start with {PLAN_MARKER}" in posted.stderr
    assert pull_request.comments == [] and pull_request.calls == []


# -- 4. the weekly upgrade pull request (upgrade.yml), its steps run as the runner runs them -----

UPGRADE = ROOT / "examples" / "github-actions" / "upgrade.yml"
UPGRADE_BRANCH = "image-syncer/upgrade"
# gh for the tests: one repository's pull requests in $GH_STATE (a directory), every call logged.
FAKE_GH = r"""#!/usr/bin/env python3
import json, os, pathlib, shutil, sys
state = pathlib.Path(os.environ["GH_STATE"])
args = sys.argv[1:]
with (state / "calls").open("a") as calls:
    calls.write(json.dumps(args) + "\n")
assert os.environ.get("GH_TOKEN") == "job-token", "gh without the job's token"
def value(flag):
    return args[args.index(flag) + 1]
opened = state / "open"
if args[:2] == ["pr", "list"]:
    assert value("--head") and value("--state") == "open"
    if opened.exists():
        print(opened.read_text())
elif args[:2] == ["pr", "create"]:
    assert not opened.exists(), "a second pull request"
    opened.write_text("1")
    shutil.copy(value("--body-file"), state / "body.md")
    print("https://github.test/o/r/pull/1")
elif args[:2] == ["pr", "edit"]:
    assert args[2] == opened.read_text()
    shutil.copy(value("--body-file"), state / "body.md")
else:
    sys.exit(f"fake gh: unexpected {args}")
"""


def upgrade_job() -> dict:
    [job] = load_yaml(UPGRADE)["jobs"].values()
    return job


def upgrade_step(name: str) -> dict:
    return next(step for step in upgrade_job()["steps"] if name in (step.get("id"), step.get("name")))


def test_the_upgrade_workflow_is_weekly_with_the_least_permissions():
    workflow = load_yaml(UPGRADE)
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as true
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    [schedule] = triggers["schedule"]
    minute, hour, day, month, weekday = schedule["cron"].split()
    assert minute.isdigit() and hour.isdigit() and weekday.isdigit() and (day, month) == ("*", "*")  # weekly
    assert workflow["permissions"] == {"contents": "write", "pull-requests": "write", "id-token": "write"}
    assert workflow["concurrency"]["cancel-in-progress"] is False
    assert upgrade_job()["env"]["BRANCH"] == UPGRADE_BRANCH


def test_the_upgrade_workflow_runs_lock_upgrade_then_the_plan_and_posts_it_as_the_body():
    steps = upgrade_job()["steps"]
    upgrade, plan, post = upgrade_step("upgrade"), upgrade_step("plan"), upgrade_step("Open or update the pull request")
    assert steps.index(upgrade) < steps.index(plan) < steps.index(post) == len(steps) - 1
    assert 'image-syncer lock --upgrade --lock-file "$LOCK_FILE"' in upgrade["run"]
    assert plan["uses"].endswith("/image-syncer@v1") and plan["with"]["command"] == "plan"
    assert plan["with"]["python-version"] == ""  # the image-syncer installed for lock --upgrade
    assert plan["if"] == "steps.upgrade.outputs.changed == 'true'"
    assert post["if"] == "${{ !cancelled() && steps.plan.outputs.plan-markdown != '' }}"
    assert post["env"]["PLAN_MARKDOWN"] == "${{ steps.plan.outputs.plan-markdown }}"
    assert post["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert 'gh pr create --head "$BRANCH" --base "$BASE"' in post["run"]
    assert 'gh pr edit "$number" --body-file "$body"' in post["run"]
    installed = upgrade_step("Install image-syncer")
    assert installed["env"]["IMAGE_SYNCER"] == "git+https://github.com/your-org/image-syncer@v1"


def workflow_condition(condition: str | None, contexts: dict, failed: bool) -> bool:
    """The conditions upgrade.yml uses: ``!cancelled()``, ``X == 'v'``, ``X != 'v'``, joined by ``&&``."""
    if condition is None:
        return not failed
    terms = condition.removeprefix("${{ ").removesuffix(" }}").split(" && ")
    holds = "!cancelled()" in terms or not failed
    for term in terms:
        if term == "!cancelled()":
            continue
        match = re.fullmatch(r"(\S+) (==|!=) '([^']*)'", term)
        assert match, f"not a condition this test evaluates: {term!r}"
        holds = holds and ((evaluate(match.group(1), contexts) == match.group(3)) == (match.group(2) == "=="))
    return holds


@attrs.frozen
class UpgradeRun:
    ran: list[str]
    failed: bool
    log: str
    plan_markdown: str


def run_workflow_step(step: dict, base: Path, workdir: Path, env: dict, contexts: dict) -> tuple[int, str, dict]:
    """One ``run:`` step under bash as the runner runs it: its env: substituted, its own GITHUB_OUTPUT."""
    script, output = base.with_suffix(".sh"), base.with_suffix(".output")
    script.write_text(step["run"])
    step_env = {name: substitute(str(value), contexts) for name, value in step.get("env", {}).items()}
    completed = subprocess.run([*GITHUB_BASH, str(script)], cwd=workdir, timeout=120, check=False,
                               env=env | {"GITHUB_OUTPUT": str(output)} | step_env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return completed.returncode, completed.stdout, {"outputs": read_outputs(output)}


def run_upgrade(workdir: Path, gh_state: Path) -> UpgradeRun:
    """upgrade.yml's job in a clone: its shell steps under bash, the plan through the action, and
    the steps that only log in (checkout, Google, Docker Hub, setup-python, pip install) skipped."""
    job = upgrade_job()
    runner = Path(tempfile.mkdtemp(prefix="runner-", dir=workdir.parent))
    fake = runner / "bin"
    fake.mkdir()
    (fake / "gh").write_text(FAKE_GH.replace("/usr/bin/env python3", sys.executable))
    (fake / "gh").chmod(0o755)
    contexts: dict = {
        "github": {"token": "job-token", "ref_name": "main", "server_url": "https://github.test",
                   "repository": "o/r", "run_id": "9"},
        "env": dict(job["env"]),
        "steps": {},
    }
    env = cli_env(workdir) | job["env"] | {
        "PATH": os.pathsep.join([str(fake), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "GITHUB_ACTIONS": "true", "RUNNER_TEMP": str(runner), "GH_STATE": str(gh_state),
        "GITHUB_STEP_SUMMARY": str(runner / "summary"),
    }
    ran, log, failed, markdown = [], [], False, ""
    for index, step in enumerate(job["steps"]):
        step_id = step.get("id", step.get("name", str(index)))
        if not workflow_condition(step.get("if"), contexts, failed):
            continue
        uses = step.get("uses", "")
        if uses.endswith("/image-syncer@v1"):
            inputs = {name: substitute(str(value), contexts) for name, value in step["with"].items()}
            action = run_action(workdir, inputs)
            contexts["steps"][step_id] = {"outputs": action.outputs}
            log.append(action.log)
            failed = failed or action.failed
            if action.outputs["plan-markdown"]:
                markdown = Path(action.outputs["plan-markdown"]).read_text()
        elif uses or step.get("name") == "Install image-syncer":
            assert uses.split("@")[0] in {"", "actions/checkout", "google-github-actions/auth",
                                          "docker/login-action", "actions/setup-python"}, step
            contexts["steps"][step_id] = {"outputs": {"access_token": ""}}
            continue
        else:
            status, output, contexts["steps"][step_id] = run_workflow_step(step, runner / str(index), workdir, env,
                                                                           contexts)
            log.append(output)
            failed = failed or status != 0
        ran.append(step_id)
    return UpgradeRun(ran, failed, "".join(log), markdown)


@attrs.define
class Origin:
    """A bare repository standing in for GitHub's, and a fresh shallow clone per run, as checkout makes."""

    root: Path
    runs: int = 0

    @property
    def bare(self) -> Path:
        return self.root / "origin.git"

    def git(self, *args: str, cwd: Path | None = None) -> str:
        completed = subprocess.run(["git", *args], cwd=cwd or self.bare, capture_output=True, text=True,
                                   timeout=60, check=False,
                                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.test",
                                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.test"})
        assert completed.returncode == 0, completed.stderr
        return completed.stdout.strip()

    def branch(self, name: str) -> str | None:
        heads = self.git("for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/")
        return dict(line.split() for line in heads.splitlines()).get(name)

    def clone(self) -> Path:
        self.runs += 1
        work = self.root / f"run-{self.runs}"
        self.git("clone", "--quiet", "--depth", "1", "--branch", "main", self.bare.as_uri(), str(work), cwd=self.root)
        return work


@pytest.fixture
def origin(tmp_path) -> Origin:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    origin = Origin(tmp_path)
    origin.git("init", "--quiet", "--bare", "--initial-branch", "main", str(origin.bare), cwd=tmp_path)
    return origin


def gh_calls(gh_state: Path) -> list[list[str]]:
    calls = gh_state / "calls"
    lines = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return [json.loads(line) for line in lines]


def test_the_upgrade_opens_one_pull_request_only_when_the_lock_changed(origin, push_image, plain_registry,
                                                                       second_plain_registry, unique_repo):
    source_repo = unique_repo("upstream")
    first = push_image("oci", repo=source_repo)
    prefix = f"{second_plain_registry.host}/{unique_repo('mirror')}/"
    seed = origin.root / "seed"
    origin.git("clone", "--quiet", str(origin.bare), str(seed), cwd=origin.root)
    write_images(seed, prefix, [{"source": first.ref}])
    assert run_cli(seed, "lock").code == 0
    origin.git("add", "images.yaml", "images.lock", cwd=seed)
    origin.git("commit", "--quiet", "-m", "images", cwd=seed)
    origin.git("push", "--quiet", "origin", "HEAD:main", cwd=seed)
    main = origin.branch("main")
    gh_state = origin.root / "gh"
    gh_state.mkdir()

    unchanged = run_upgrade(origin.clone(), gh_state)
    assert not unchanged.failed, unchanged.log
    assert "images.lock is up to date: no pull request" in unchanged.log
    assert "plan" not in unchanged.ran and "Open or update the pull request" not in unchanged.ran
    assert origin.branch(UPGRADE_BRANCH) is None and gh_calls(gh_state) == []

    moved = push_image(harness_images.build_image("oci", seed="moved upstream"), repo=source_repo)
    opened = run_upgrade(origin.clone(), gh_state)
    assert not opened.failed, opened.log
    assert opened.ran[-2:] == ["plan", "Open or update the pull request"]
    assert names(opened.plan_markdown, target_of(prefix, first))
    pushed = origin.branch(UPGRADE_BRANCH)
    assert pushed and origin.git("rev-parse", f"{pushed}^") == main  # one commit on top of main
    assert origin.git("diff", "--name-only", main, pushed).splitlines() == ["images.lock"]
    assert moved.digest in origin.git("show", f"{pushed}:images.lock")
    assert moved.digest not in origin.git("show", f"{main}:images.lock")
    assert gh_calls(gh_state) == [
        ["pr", "list", "--head", UPGRADE_BRANCH, "--base", "main", "--state", "open", "--json", "number",
         "--jq", ".[0].number // empty"],
        ["pr", "create", "--head", UPGRADE_BRANCH, "--base", "main", "--title", "image-syncer: upgrade images.lock",
         "--body-file", ANY_PATH],
    ]
    assert (gh_state / "body.md").read_text() == opened.plan_markdown  # the plan is the body, as it is

    again = run_upgrade(origin.clone(), gh_state)  # next week, nothing new upstream
    assert not again.failed, again.log
    assert origin.branch(UPGRADE_BRANCH) == pushed  # the same files: not pushed again
    assert f"{UPGRADE_BRANCH} already holds this images.lock" in again.log
    assert [call[:3] for call in gh_calls(gh_state)] == [["pr", "list", "--head"], ["pr", "edit", "1"]]

    newer = push_image(harness_images.build_image("oci", seed="moved again"), repo=source_repo)
    updated = run_upgrade(origin.clone(), gh_state)
    assert not updated.failed, updated.log
    repushed = origin.branch(UPGRADE_BRANCH)
    assert repushed != pushed and origin.git("rev-parse", f"{repushed}^") == main
    assert newer.digest in origin.git("show", f"{repushed}:images.lock")
    assert [call[:3] for call in gh_calls(gh_state)] == [["pr", "list", "--head"], ["pr", "edit", "1"]]
    assert (gh_state / "body.md").read_text() == updated.plan_markdown


class _AnyPath(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and Path(other).is_absolute()

    __hash__ = str.__hash__


ANY_PATH = _AnyPath("<an absolute path>")


def test_a_plan_too_long_for_a_pull_request_body_is_cut_at_a_line(origin, tmp_path):
    seed = origin.root / "seed"
    origin.git("clone", "--quiet", str(origin.bare), str(seed), cwd=origin.root)
    (seed / "images.lock").write_text("old pins\n")
    origin.git("add", "images.lock", cwd=seed)
    origin.git("commit", "--quiet", "-m", "lock", cwd=seed)
    origin.git("push", "--quiet", "origin", "HEAD:main", cwd=seed)
    work = origin.clone()
    (work / "images.lock").write_text("new pins\n")
    rows = [f"| + | `registry.test/mirror/image-{n}:v1` | create |" for n in range(2000)]
    plan = tmp_path / "plan.md"
    plan.write_text("\n".join([PLAN_MARKER, "### image-syncer plan", *rows]) + "\n")
    gh_state = tmp_path / "gh"
    gh_state.mkdir()
    step = upgrade_step("Open or update the pull request")
    contexts = {"github": {"token": "job-token", "ref_name": "main", "server_url": "https://github.test",
                           "repository": "o/r", "run_id": "9"},
                "steps": {"plan": {"outputs": {"plan-markdown": str(plan)}}}}
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "gh").write_text(FAKE_GH.replace("/usr/bin/env python3", sys.executable))
    (fake / "gh").chmod(0o755)
    env = cli_env(work) | upgrade_job()["env"] | {
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "RUNNER_TEMP": str(tmp_path), "GH_STATE": str(gh_state),
    }

    status, log, _ = run_workflow_step(step, tmp_path / "post", work, env, contexts)

    assert status == 0, log
    body = (gh_state / "body.md").read_text()
    assert len(plan.read_text()) > 65536 >= len(body)
    kept, note = body.split("\n\n…cut here: ")
    assert plan.read_text().startswith(kept + "\n")
    assert note == "the whole plan is in the [run's summary](https://github.test/o/r/actions/runs/9).\n"


def test_the_schema_catches_a_broken_upgrade_workflow(tmp_path):
    broken = tmp_path / "upgrade.yml"
    broken.write_text(UPGRADE.read_text().replace("  pull-requests: write ", "  pull-requests: admin ", 1))
    assert broken.read_text() != UPGRADE.read_text()

    checked = check_schema("vendor.github-workflows", broken)

    assert checked.returncode == 1 and "$.permissions" in checked.stdout, checked.stdout
