"""The original image-syncer's command line, with a Google service-account key for the target.

The target is a token-auth docker-registry whose issuer grants push only to
``oauth2accesstoken:<token>`` where the token came from the (loopback) OAuth2
endpoint for the test key, the way GCR and Artifact Registry behave.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness.oauth import FakeTokenEndpoint, private_key_pem, serve_token_endpoint, write_service_account_key
from tests.harness.rawhttp import RawRegistry
from tests.harness.skopeo import skopeo_inspect_raw
from tests.helpers_cli import PROXY_VARIABLES

GOOGLE_USER = "oauth2accesstoken"


class _IssuedTokens(dict):
    """The token issuer's user table, where Google's user name takes any token the endpoint issued."""

    def __init__(self, users: dict[str, str], endpoint: FakeTokenEndpoint) -> None:
        super().__init__(users)
        self._endpoint = endpoint

    def get(self, name, default=None):
        if name == GOOGLE_USER:
            return self._endpoint.issued_tokens[-1] if self._endpoint.issued_tokens else default
        return super().get(name, default)


@pytest.fixture
def google_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with serve_token_endpoint(FakeTokenEndpoint(key.public_key())) as endpoint:
        yield key, endpoint


@pytest.fixture
def google_target(token_registry, google_key):
    """The token registry, pushable only with a token from the fake OAuth endpoint."""
    _, endpoint = google_key
    issuer = token_registry.issuer
    issuer.users = _IssuedTokens(issuer.users, endpoint)

    def policy(username, password, repository, actions):
        if username == GOOGLE_USER and password in endpoint.issued_tokens:
            return list(actions)
        return [action for action in actions if action == "pull" and username is not None]

    issuer.policy = policy
    return token_registry


@pytest.fixture
def run_cli(tmp_path):
    """Run image-syncer in ``tmp_path`` with no credentials from the machine; collects all output."""
    printed: list[str] = []
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        environment = {
            key: value for key, value in os.environ.items()
            if not key.startswith(("SYNCER_", "DOCKER_", "REGISTRY_AUTH", "GOOGLE_", "XDG_"))
            and key not in PROXY_VARIABLES
        }
        environment.update(HOME=str(home), DOCKER_CONFIG=str(home / ".docker"), **(env or {}))
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", *args], cwd=tmp_path, env=environment,
            capture_output=True, text=True, timeout=120,
        )
        printed.extend([result.stdout, result.stderr])
        return result

    run.printed = printed
    return run


def write_images(tmp_path: Path, prefix: str, *sources: str) -> Path:
    lines = [f'targetRepoPrefix: "{prefix}"', "images:"] + [f'- source: "{source}"' for source in sources]
    path = tmp_path / "external-images.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def target_of(prefix: str, pushed) -> tuple[str, str]:
    """The original tool's rule: prefix + repository as written (host:port → host_port)."""
    repo = prefix.split("/", 1)[1] + pushed.host.replace(":", "_") + "/" + pushed.repo
    return repo, pushed.tag


def test_old_command_line_pushes_with_the_key_file(google_target, google_key, push_image, unique_repo,
                                                   run_cli, tmp_path):
    key, endpoint = google_key
    pushed = push_image("oci-index")
    prefix = f"{google_target.host}/{unique_repo()}/"
    images = write_images(tmp_path, prefix, pushed.ref)
    key_file = write_service_account_key(tmp_path / "sa.json", key, endpoint.url)

    result = run_cli(f"--images-file={images}", f"--target-key-file={key_file}", "--dry-run=false")

    assert result.returncode == 0, result.stderr
    repo, tag = target_of(prefix, pushed)
    assert f"{pushed.ref} ({pushed.digest}) -> {google_target.host}/{repo}:{tag}: target does not exist – copying" \
        in result.stdout
    assert skopeo_inspect_raw(f"{google_target.host}/{repo}:{tag}", creds=google_target.credentials) == pushed.manifest
    assert endpoint.request_count >= 1
    pushes = [r for r in google_target.issuer.requests if any("push" in a for a in r.granted_actions.values())]
    assert pushes and all(r.username == GOOGLE_USER for r in pushes)

    again = run_cli("-i", str(images), "-t", str(key_file), "--dry-run", "false")
    assert again.returncode == 0, again.stderr
    assert "digests are equal – nothing to do" in again.stdout
    assert_no_secrets(run_cli.printed, key, endpoint, google_target)


def test_env_only_form_and_default_dry_run(google_target, google_key, push_image, unique_repo, run_cli, tmp_path):
    key, endpoint = google_key
    pushed = push_image("oci")
    prefix = f"{google_target.host}/{unique_repo()}/"
    images = write_images(tmp_path, prefix, pushed.ref)
    key_file = write_service_account_key(tmp_path / "sa.json", key, endpoint.url)
    env = {"SYNCER_IMAGES_FILE": str(images), "SYNCER_TARGET_KEY_FILE": str(key_file)}
    repo, tag = target_of(prefix, pushed)

    dry = run_cli(env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry-run – copy skipped" in dry.stdout
    with RawRegistry(google_target) as raw:
        assert raw.head_manifest(repo, tag).status_code == 404

    for value in ("false", "0", "no"):
        real = run_cli(env={**env, "SYNCER_DRY_RUN": value})
        assert real.returncode == 0, real.stderr
    assert skopeo_inspect_raw(f"{google_target.host}/{repo}:{tag}", creds=google_target.credentials) == pushed.manifest
    assert_no_secrets(run_cli.printed, key, endpoint, google_target)


def test_wrong_key_is_refused_and_nothing_is_pushed(google_target, google_key, push_image, unique_repo,
                                                    run_cli, tmp_path):
    _, endpoint = google_key
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pushed = push_image("oci")
    prefix = f"{google_target.host}/{unique_repo()}/"
    images = write_images(tmp_path, prefix, pushed.ref)
    key_file = write_service_account_key(tmp_path / "sa.json", other_key, endpoint.url)

    result = run_cli("-i", str(images), "-t", str(key_file), "--dry-run=false")

    assert result.returncode == 1
    assert "could not get a Google access token with key file" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    repo, tag = target_of(prefix, pushed)
    with RawRegistry(google_target) as raw:
        assert raw.head_manifest(repo, tag).status_code == 404
    assert_no_secrets(run_cli.printed, other_key, endpoint, google_target)


@pytest.mark.parametrize("content", [None, "{not json", '{"type": "service_account"}'])
def test_bad_key_file_fails_before_any_request(content, google_target, google_key, push_image, unique_repo,
                                               run_cli, tmp_path):
    _, endpoint = google_key
    pushed = push_image("oci")
    images = write_images(tmp_path, f"{google_target.host}/{unique_repo()}/", pushed.ref)
    key_file = tmp_path / "sa.json"
    if content is not None:
        key_file.write_text(content)
    google_target.issuer.clear()

    result = run_cli("-i", str(images), "-t", str(key_file), "--dry-run=false")

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(key_file) in errors[0], result.stderr
    assert endpoint.request_count == 0
    assert google_target.issuer.requests == []


def test_every_changed_source_is_reported(push_image, plain_registry, second_plain_registry, unique_repo,
                                          run_cli, tmp_path):
    first, second, third = push_image("oci"), push_image("docker"), push_image("oci-index")
    prefix = f"{second_plain_registry.host}/{unique_repo()}/"
    images = write_images(tmp_path, prefix, first.ref, second.ref, third.ref)
    for pushed, other in ((first, "docker"), (second, "oci")):
        repo, tag = target_of(prefix, pushed)
        push_image(other, registry=second_plain_registry, repo=repo, tag=tag)

    result = run_cli("--images-file", str(images), "--dry-run=false")

    assert result.returncode == 1
    assert result.stdout.count("digests differ – source image was probably changed") == 2
    assert "target does not exist – copying" in result.stdout
    repo, tag = target_of(prefix, third)
    assert skopeo_inspect_raw(f"{second_plain_registry.host}/{repo}:{tag}") == third.manifest


def test_debug_output_holds_no_secrets(google_target, google_key, push_image, unique_repo, run_cli, tmp_path):
    key, endpoint = google_key
    pushed = push_image("oci")
    images = write_images(tmp_path, f"{google_target.host}/{unique_repo()}/", pushed.ref)
    key_file = write_service_account_key(tmp_path / "sa.json", key, endpoint.url)

    result = run_cli("sync", "-i", str(images), "-t", str(key_file), "-d", "false", "--debug")

    assert result.returncode == 0, result.stderr
    assert "HEAD" in result.stderr, "--debug should log requests"
    assert_no_secrets(run_cli.printed, key, endpoint, google_target)


def assert_no_secrets(printed: list[str], key, endpoint: FakeTokenEndpoint, registry) -> None:
    output = "\n".join(printed)
    pem_body = "".join(private_key_pem(key).splitlines()[1:-1])
    secrets = [pem_body[i:i + 40] for i in range(0, len(pem_body) - 40, 200)]
    secrets += endpoint.issued_tokens + [registry.credentials[1], "tester-pw", "pusher-pw"]
    for secret in secrets:
        assert secret not in output
