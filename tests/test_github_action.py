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
from reconciler.render import PLAN_MARKER
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
    assert [path.name for path in WORKFLOWS] == ["apply.yml", "pull-request.yml"]


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
    assert f"`{target}`" in markdown and "**1 to create · 0 refused · 0 unchanged**" in markdown
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
