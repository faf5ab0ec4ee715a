"""session.py: which source of credentials each registry gets, chosen once per run, the whole
precedence in one place (key file, access token, application default, auth files, anonymous)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from reconciler.registry.credentials import Credentials
from reconciler.registry.google import ACCESS_TOKEN_USERNAME
from reconciler.session import CredentialSources, SessionOptions
from tests.harness.oauth import FakeTokenEndpoint


@pytest.fixture
def docker_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The only auth file the run reads; empty until a test writes it."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    (tmp_path / "docker").mkdir()
    return tmp_path / "docker" / "config.json"


def sources(key_file: Path | None = None, access_token: str | None = None,
            targets: tuple[str, ...] = ()) -> CredentialSources:
    options = SessionOptions(target_key_file=None if key_file is None else str(key_file),
                             access_token=access_token)
    return CredentialSources(options, targets)


def test_key_file_beats_access_token(key_file: Path, endpoint: FakeTokenEndpoint) -> None:
    credentials = sources(key_file, "ya29.from-ci")("gcr.io")

    assert credentials is not None
    assert credentials.password == endpoint.issued_tokens[0]


def test_access_token_beats_application_default(
    monkeypatch: pytest.MonkeyPatch, no_application_default: None, key_file: Path,
    endpoint: FakeTokenEndpoint,
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))

    credentials = sources(access_token="ya29.from-ci")("gcr.io")

    assert credentials == Credentials(username=ACCESS_TOKEN_USERNAME, password="ya29.from-ci")
    assert endpoint.request_count == 0


def test_application_default_without_key_file_or_token(
    monkeypatch: pytest.MonkeyPatch, no_application_default: None, docker_config: Path, key_file: Path,
    endpoint: FakeTokenEndpoint, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    docker_config.write_text(json.dumps({"auths": {"gcr.io": {"username": "docker", "password": "pw"}}}))
    run = sources()

    with caplog.at_level(logging.DEBUG, logger="reconciler.session"):
        credentials = [run(registry) for registry in ("gcr.io", "europe-west1-docker.pkg.dev")]

    assert credentials == [Credentials(username=ACCESS_TOKEN_USERNAME, password=endpoint.issued_tokens[0])] * 2
    assert endpoint.request_count == 1
    assert "credentials for gcr.io from application default credentials" in caplog.messages


def test_without_google_credentials_the_docker_config_else_anonymous(
    no_application_default: None, docker_config: Path, endpoint: FakeTokenEndpoint,
) -> None:
    docker_config.write_text(json.dumps({"auths": {"gcr.io": {"username": "docker", "password": "pw"}}}))
    run = sources()

    assert run("gcr.io") == Credentials(username="docker", password="pw")
    assert run("eu.gcr.io") is None
    assert endpoint.request_count == 0


def test_key_file_goes_to_the_target_and_google_registries_only(
    key_file: Path, endpoint: FakeTokenEndpoint, docker_config: Path,
) -> None:
    docker_config.write_text(json.dumps({"auths": {"quay.io": {"username": "docker", "password": "pw"}}}))
    run = sources(key_file, targets=("localhost:5000",))

    assert run("localhost:5000") == run("eu.gcr.io") == Credentials(
        username=ACCESS_TOKEN_USERNAME, password=endpoint.issued_tokens[0])
    assert run("quay.io") == Credentials(username="docker", password="pw")
    assert run("ghcr.io") is None


def test_a_source_chosen_once_still_refreshes_its_token(key_file: Path, endpoint: FakeTokenEndpoint) -> None:
    endpoint.expires_in = 120  # inside the 5-minute refresh margin from the start
    run = sources(key_file)

    first, second = run("gcr.io"), run("gcr.io")

    assert [first.password, second.password] == endpoint.issued_tokens
    assert first.password != second.password
