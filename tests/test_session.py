"""session.py: which source of credentials each registry gets, chosen once per run, the whole
precedence in one place (key file, access token, application default, metadata server, auth
files, anonymous)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import session
from reconciler.oci.reference import parse
from reconciler.registry import google
from reconciler.registry.credentials import Credentials, CredentialsError
from reconciler.registry.google import ACCESS_TOKEN_USERNAME, METADATA_LOCATION_VARIABLES
from reconciler.session import CredentialSources, SessionOptions, open_registries
from tests.harness.metadata import AcceptAndClose, FakeMetadataServer, named_metadata_server, point_google_auth_at
from tests.harness.oauth import FakeTokenEndpoint


@pytest.fixture(autouse=True)
def not_on_google_cloud(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine that says it is no Google machine, and no metadata server named: nothing is probed."""
    (tmp_path / "product_name").write_text("Standard PC (Q35 + ICH9, 2009)\n")
    monkeypatch.setattr(google, "PRODUCT_NAME_FILE", str(tmp_path / "product_name"))
    for variable in METADATA_LOCATION_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def metadata(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMetadataServer]:
    with named_metadata_server(monkeypatch) as fake:
        yield fake


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


def test_application_default_beats_the_metadata_server(
    monkeypatch: pytest.MonkeyPatch, no_application_default: None, key_file: Path,
    endpoint: FakeTokenEndpoint, metadata: FakeMetadataServer,
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))

    credentials = sources()("gcr.io")

    assert credentials is not None and credentials.password == endpoint.issued_tokens[0]
    assert metadata.requests == []


def test_access_token_beats_the_metadata_server(no_application_default: None, metadata: FakeMetadataServer) -> None:
    assert sources(access_token="ya29.from-ci")("gcr.io").password == "ya29.from-ci"
    assert metadata.requests == []


def test_metadata_server_after_application_default_and_before_the_auth_files(
    no_application_default: None, docker_config: Path, metadata: FakeMetadataServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    docker_config.write_text(json.dumps({"auths": {"gcr.io": {"username": "docker", "password": "pw"}}}))
    run = sources()

    with caplog.at_level(logging.DEBUG, logger="reconciler"):
        credentials = [run(registry) for registry in ("gcr.io", "europe-west1-docker.pkg.dev", "gcr.io")]

    assert credentials == [Credentials(username=ACCESS_TOKEN_USERNAME, password=metadata.issued_tokens[0])] * 3
    assert metadata.probes == 1
    assert len(metadata.token_requests) == 1
    assert f"credentials for gcr.io from the metadata server at {metadata.host}" in caplog.messages
    assert metadata.issued_tokens[0] not in caplog.text


def test_other_registries_never_probe_the_metadata_server(
    no_application_default: None, docker_config: Path, metadata: FakeMetadataServer,
) -> None:
    run = sources(targets=("localhost:5000",))

    assert [run(registry) for registry in ("localhost:5000", "quay.io", "docker.io")] == [None] * 3
    assert metadata.requests == []


def test_absent_metadata_server_falls_back_after_one_attempt(
    monkeypatch: pytest.MonkeyPatch, no_application_default: None, docker_config: Path,
) -> None:
    docker_config.write_text(json.dumps({"auths": {"gcr.io": {"username": "docker", "password": "pw"}}}))
    run = sources()

    with AcceptAndClose() as nothing:
        point_google_auth_at(monkeypatch, nothing.host)
        found = [run(registry) for registry in ("gcr.io", "eu.gcr.io", "us-docker.pkg.dev")]

    assert found == [Credentials(username="docker", password="pw"), None, None]
    assert nothing.connections == 1


def test_metadata_server_answering_an_error_falls_back(
    no_application_default: None, docker_config: Path, metadata: FakeMetadataServer,
) -> None:
    metadata.probe_status = 500

    assert sources()("gcr.io") is None
    assert metadata.probes == 1


def test_metadata_server_refusing_its_token_fails_that_registry(
    no_application_default: None, docker_config: Path, metadata: FakeMetadataServer,
) -> None:
    """Found but broken is an error, as a key file whose token cannot be had: never anonymous."""
    docker_config.write_text(json.dumps({"auths": {"gcr.io": {"username": "docker", "password": "pw"}}}))
    metadata.token_status = 403

    with pytest.raises(CredentialsError, match="^could not get a Google access token with the metadata server"):
        sources()("gcr.io")


GOOGLE_USER = ACCESS_TOKEN_USERNAME


class _MetadataTokens(dict):
    """The token issuer's user table, where Google's user name takes the tokens the metadata server issued."""

    def __init__(self, users: dict[str, str], metadata: FakeMetadataServer) -> None:
        super().__init__(users)
        self._metadata = metadata

    def get(self, name, default=None):
        if name == GOOGLE_USER:
            return self._metadata.issued_tokens[-1] if self._metadata.issued_tokens else default
        return super().get(name, default)


def test_a_google_registry_receives_the_metadata_servers_token(
    monkeypatch: pytest.MonkeyPatch, no_application_default: None, docker_config: Path,
    metadata: FakeMetadataServer, token_registry, push_image,
) -> None:
    """A token-auth registry on loopback counted as Google's, readable only with the metadata server's token."""
    pushed = push_image("oci", registry=token_registry)
    issuer = token_registry.issuer
    pushed_with = len(issuer.requests)
    issuer.users = _MetadataTokens(issuer.users, metadata)
    issuer.policy = lambda username, password, repository, actions: (
        list(actions) if username == GOOGLE_USER and password in metadata.issued_tokens else [])
    monkeypatch.setattr(session, "is_google_registry", lambda registry: registry == token_registry.host)

    async def resolve_twice():
        async with open_registries(SessionOptions(), []) as registries:
            return [await registries.resolve_digest(parse(pushed.ref)) for _ in range(2)]

    assert [str(digest) for digest in asyncio.run(resolve_twice())] == [pushed.digest] * 2
    assert len(metadata.token_requests) == 1
    granted = [request for request in issuer.requests[pushed_with:] if request.granted_actions]
    assert granted and all(request.username == GOOGLE_USER for request in granted)
