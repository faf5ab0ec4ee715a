import base64
import json
import os
from pathlib import Path

import pytest

from reconciler.oci import reference
from reconciler.registry import credentials
from reconciler.registry.credentials import Credentials, CredentialsError, lookup
from reconciler.registry.errors import RegistryError
from reconciler.registry.options import TransportOptions
from reconciler.registry.registries import Registries
from reconciler.session import SessionOptions, open_registries
from tests.helpers_clients import FAST_RETRY, run

SECRET = "s3cr3t-Pa55"


def basic_auth(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def write_json(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def auths(registry_key: str, username: str, password: str = SECRET) -> dict:
    return {"auths": {registry_key: {"auth": basic_auth(username, password)}}}


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """An environment with HOME in tmp_path and nothing else, so the real user's files stay out."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "PATH": os.defpath}


@pytest.fixture
def docker_config(environ: dict[str, str]) -> Path:
    return Path(environ["HOME"], ".docker", "config.json")


@pytest.fixture
def helper(tmp_path: Path, environ: dict[str, str]):
    """Install a real ``docker-credential-testhelper`` running ``body``; returns its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "helper-calls"
    environ["PATH"] = f"{bin_dir}{os.pathsep}{os.defpath}"

    def install(body: str, name: str = "testhelper") -> Path:
        script = bin_dir / f"docker-credential-{name}"
        script.write_text(f'#!/bin/sh\nprintf "%s %s\\n" "$1" "$(cat)" >> "{calls}"\n{body}\n')
        script.chmod(0o755)
        return calls

    return install


def answer(username: str, secret: str = SECRET) -> str:
    payload = json.dumps({"ServerURL": "ignored", "Username": username, "Secret": secret})
    return f"echo '{payload}'"


NOT_FOUND = 'echo "credentials not found in native keychain"; exit 1'


def test_repr_hides_secrets():
    text = repr(Credentials(username="alice", password=SECRET, identity_token="refresh-tok"))
    assert text == "Credentials(username='alice')"
    assert str(Credentials(username="alice", password=SECRET)) == "Credentials(username='alice')"


def test_credentials_error_is_a_registry_error():
    assert issubclass(CredentialsError, RegistryError)


def test_no_files_gives_none(environ):
    assert lookup("quay.io", environ) is None
    assert lookup("quay.io", {}) is None


def test_docker_config_under_home(environ, docker_config):
    write_json(docker_config, auths("quay.io", "alice"))
    assert lookup("quay.io", environ) == Credentials(username="alice", password=SECRET)


def test_docker_config_env_replaces_home(tmp_path, environ, docker_config):
    write_json(docker_config, auths("quay.io", "from-home"))
    write_json(tmp_path / "dockercfg" / "config.json", auths("quay.io", "from-docker-config"))
    environ["DOCKER_CONFIG"] = str(tmp_path / "dockercfg")
    assert lookup("quay.io", environ).username == "from-docker-config"


def test_docker_config_env_without_file_does_not_fall_back_to_home(tmp_path, environ,
                                                                   docker_config):
    write_json(docker_config, auths("quay.io", "from-home"))
    environ["DOCKER_CONFIG"] = str(tmp_path / "missing")
    assert lookup("quay.io", environ) is None


def test_precedence_registry_auth_file_then_xdg_then_docker(tmp_path, environ, docker_config):
    write_json(docker_config, auths("quay.io", "from-docker"))
    write_json(tmp_path / "run" / "containers" / "auth.json", auths("quay.io", "from-xdg"))
    write_json(tmp_path / "auth.json", auths("quay.io", "from-registry-auth-file"))

    assert lookup("quay.io", environ).username == "from-docker"
    environ["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    assert lookup("quay.io", environ).username == "from-xdg"
    environ["REGISTRY_AUTH_FILE"] = str(tmp_path / "auth.json")
    assert lookup("quay.io", environ).username == "from-registry-auth-file"


def test_file_without_the_registry_falls_through(tmp_path, environ, docker_config):
    write_json(tmp_path / "auth.json", auths("ghcr.io", "ghcr-user"))
    write_json(docker_config, auths("quay.io", "quay-user"))
    environ["REGISTRY_AUTH_FILE"] = str(tmp_path / "auth.json")
    assert lookup("quay.io", environ) == Credentials(username="quay-user", password=SECRET)
    assert lookup("ghcr.io", environ) == Credentials(username="ghcr-user", password=SECRET)
    assert lookup("gcr.io", environ) is None


def test_missing_registry_auth_file_is_skipped(tmp_path, environ, docker_config):
    write_json(docker_config, auths("quay.io", "alice"))
    environ["REGISTRY_AUTH_FILE"] = str(tmp_path / "nope.json")
    environ["XDG_RUNTIME_DIR"] = str(tmp_path / "no-run-dir")
    assert lookup("quay.io", environ).username == "alice"


@pytest.mark.parametrize("key", [
    "https://index.docker.io/v1/",
    "http://index.docker.io/v1",
    "index.docker.io",
    "registry-1.docker.io",
    "docker.io",
    "https://registry-1.docker.io/v2/",
])
def test_docker_hub_keys(environ, docker_config, key):
    write_json(docker_config, auths(key, "hubuser"))
    assert lookup("docker.io", environ) == Credentials(username="hubuser", password=SECRET)


@pytest.mark.parametrize("key", ["https://localhost:5000/v2/", "localhost:5000/", "localhost:5000"])
def test_key_with_scheme_and_version_path(environ, docker_config, key):
    write_json(docker_config, auths(key, "local"))
    assert lookup("localhost:5000", environ) == Credentials(username="local", password=SECRET)


def test_key_only_matches_its_own_registry(environ, docker_config):
    write_json(docker_config, auths("https://quay.io", "alice"))
    assert lookup("quay.io:8443", environ) is None
    assert lookup("docker.io", environ) is None


def test_namespace_scoped_key_is_not_used_for_the_whole_registry(environ, docker_config):
    write_json(docker_config, auths("quay.io/team", "team-bot"))
    assert lookup("quay.io", environ) is None


def test_exact_key_wins_over_normalized_key(environ, docker_config):
    write_json(docker_config, {"auths": {
        "https://quay.io/v1/": {"auth": basic_auth("normalized", SECRET)},
        "quay.io": {"auth": basic_auth("exact", SECRET)},
    }})
    assert lookup("quay.io", environ).username == "exact"


def test_username_and_password_fields(environ, docker_config):
    write_json(docker_config, {"auths": {"quay.io": {"username": "bob", "password": SECRET}}})
    assert lookup("quay.io", environ) == Credentials(username="bob", password=SECRET)


def test_password_containing_colons(environ, docker_config):
    write_json(docker_config, auths("quay.io", "bob", "a:b:c"))
    assert lookup("quay.io", environ) == Credentials(username="bob", password="a:b:c")


def test_identity_token_keeps_username(environ, docker_config):
    write_json(docker_config, {"auths": {"myacr.azurecr.io": {
        "auth": basic_auth("00000000-0000-0000-0000-000000000000", ""),
        "identitytoken": "refresh-token",
    }}})
    assert lookup("myacr.azurecr.io", environ) == Credentials(
        username="00000000-0000-0000-0000-000000000000", password="",
        identity_token="refresh-token",
    )


def test_identity_token_alone(environ, docker_config):
    write_json(docker_config, {"auths": {"quay.io": {"identitytoken": "refresh-token"}}})
    assert lookup("quay.io", environ) == Credentials(identity_token="refresh-token")


def test_empty_entry_is_not_a_match(tmp_path, environ, docker_config):
    write_json(tmp_path / "auth.json", {"auths": {"quay.io": {}}})
    write_json(docker_config, auths("quay.io", "alice"))
    environ["REGISTRY_AUTH_FILE"] = str(tmp_path / "auth.json")
    assert lookup("quay.io", environ).username == "alice"


def assert_error(registry: str, environ: dict[str, str], expected: str) -> None:
    with pytest.raises(CredentialsError) as caught:
        lookup(registry, environ)
    message = str(caught.value)
    assert message == expected
    assert "\n" not in message
    assert SECRET not in message
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(("content", "problem"), [
    ('{"auths": {"quay.io": {"auth": "s3cr3t-Pa55"', "invalid JSON at line 1 column 45"),
    ('["s3cr3t-Pa55"]', "expected a JSON object at the top level"),
    ('{"auths": ["s3cr3t-Pa55"]}', "auths is not a JSON object"),
    ('{"auths": {"quay.io": "s3cr3t-Pa55"}}', "auths['quay.io'] is not a JSON object"),
    ('{"auths": {"quay.io": {"auth": "s3cr3t-Pa55!"}}}',
     "auths['quay.io'].auth is not base64 of user:password"),
    ('{"auths": {"quay.io": {"username": "bob", "password": 42}}}',
     "auths['quay.io'].password is not a string"),
    ('{"credHelpers": {"quay.io": 7}}', "credHelpers['quay.io'] is not a credential helper name"),
    ('{"credsStore": ""}', "credsStore is not a credential helper name"),
    ('{"credHelpers": "s3cr3t-Pa55"}', "credHelpers is not a JSON object"),
])
def test_malformed_file(tmp_path, environ, content, problem):
    path = tmp_path / "auth.json"
    path.write_text(content)
    environ["REGISTRY_AUTH_FILE"] = str(path)
    assert_error("quay.io", environ, f"{path}: {problem}")


def test_auth_without_colon(tmp_path, environ):
    no_colon = base64.b64encode(SECRET.encode()).decode()
    path = write_json(tmp_path / "auth.json", {"auths": {"quay.io": {"auth": no_colon}}})
    environ["REGISTRY_AUTH_FILE"] = str(path)
    assert_error("quay.io", environ,
                 f"{path}: auths['quay.io'].auth has no ':' between user and password")


def test_malformed_file_fails_even_for_another_registry(tmp_path, environ):
    """A broken file must not be silently skipped in favour of a later one."""
    path = tmp_path / "auth.json"
    path.write_text("{")
    environ["REGISTRY_AUTH_FILE"] = str(path)
    with pytest.raises(CredentialsError, match="invalid JSON"):
        lookup("ghcr.io", environ)


def test_unreadable_file(tmp_path, environ):
    directory = tmp_path / "auth.json"
    directory.mkdir()
    environ["REGISTRY_AUTH_FILE"] = str(directory)
    assert_error("quay.io", environ, f"{directory}: cannot read: Is a directory")


def test_cred_helper_wins_over_auths(environ, docker_config, helper):
    calls = helper(answer("helper-user"))
    write_json(docker_config, {
        "auths": {"quay.io": {"auth": basic_auth("auths-user", "other")}},
        "credHelpers": {"quay.io": "testhelper"},
    })
    assert lookup("quay.io", environ) == Credentials(username="helper-user", password=SECRET)
    assert calls.read_text() == "get quay.io\n"


def test_docker_hub_helper_gets_the_index_url(environ, docker_config, helper):
    calls = helper(answer("hubuser"))
    write_json(docker_config, {"credHelpers": {"https://index.docker.io/v1/": "testhelper"}})
    assert lookup("docker.io", environ) == Credentials(username="hubuser", password=SECRET)
    assert calls.read_text() == "get https://index.docker.io/v1/\n"


def test_cred_helper_not_found_skips_auths_of_that_file(tmp_path, environ, docker_config,
                                                        helper):
    helper(NOT_FOUND)
    auth_file = write_json(tmp_path / "auth.json", {
        "auths": {"quay.io": {"auth": basic_auth("auths-user", "other")}},
        "credHelpers": {"quay.io": "testhelper"},
    })
    environ["REGISTRY_AUTH_FILE"] = str(auth_file)
    assert lookup("quay.io", environ) is None
    write_json(docker_config, auths("quay.io", "docker-user"))
    assert lookup("quay.io", environ).username == "docker-user"


def test_cred_helper_wins_over_creds_store(environ, docker_config, helper):
    calls = helper(answer("per-registry"))
    helper(answer("default-store"), name="otherstore")
    write_json(docker_config, {
        "credsStore": "otherstore",
        "credHelpers": {"quay.io": "testhelper"},
    })
    assert lookup("quay.io", environ).username == "per-registry"
    assert calls.read_text() == "get quay.io\n"


def test_creds_store_wins_over_auths(environ, docker_config, helper):
    helper(answer("store-user"))
    write_json(docker_config, {
        "auths": {"quay.io": {"auth": basic_auth("auths-user", "other")}},
        "credsStore": "testhelper",
    })
    assert lookup("quay.io", environ) == Credentials(username="store-user", password=SECRET)


def test_creds_store_not_found_falls_back_to_auths(environ, docker_config, helper):
    calls = helper(NOT_FOUND)
    write_json(docker_config, {
        "auths": {"ghcr.io": {"auth": basic_auth("auths-user", SECRET)}},
        "credsStore": "testhelper",
    })
    assert lookup("ghcr.io", environ) == Credentials(username="auths-user", password=SECRET)
    assert lookup("quay.io", environ) is None
    assert calls.read_text() == "get ghcr.io\nget quay.io\n"


def test_helper_token_username_means_identity_token(environ, docker_config, helper):
    helper(answer("<token>", "refresh-token"))
    write_json(docker_config, {"credsStore": "testhelper"})
    assert lookup("quay.io", environ) == Credentials(identity_token="refresh-token")


@pytest.mark.parametrize(("body", "problem"), [
    (f'echo "fatal: cannot unlock {SECRET}"; exit 3', "failed with exit status 3"),
    (f'echo "{SECRET}"', "printed no JSON with Username and Secret"),
    ('echo \'{"Username": "bob"}\'', "printed no JSON with Username and Secret"),
    ('echo \'{"Username": "bob", "Secret": 5}\'', "printed a non-string Username or Secret"),
])
def test_helper_failure_never_echoes_output(environ, docker_config, helper, body, problem):
    helper(body)
    write_json(docker_config, {"credsStore": "testhelper"})
    assert_error("quay.io", environ, f"credential helper docker-credential-testhelper "
                                     f"(configured in {docker_config}) {problem}")


def test_missing_helper(environ, docker_config):
    write_json(docker_config, {"credHelpers": {"quay.io": "absent"}})
    assert_error("quay.io", environ, f"credential helper docker-credential-absent "
                                     f"(configured in {docker_config}) is not on PATH")


def test_helper_timeout(environ, docker_config, helper, monkeypatch):
    monkeypatch.setattr(credentials, "HELPER_TIMEOUT_SECONDS", 0.2)
    helper("exec sleep 5")
    write_json(docker_config, {"credsStore": "testhelper"})
    assert_error("quay.io", environ, f"credential helper docker-credential-testhelper "
                                     f"(configured in {docker_config}) did not answer within "
                                     f"0.2 seconds")


def test_helper_runs_with_the_given_environment(environ, docker_config, helper):
    helper('echo "{\\"Username\\": \\"$HELPER_USER\\", \\"Secret\\": \\"x\\"}"')
    environ["HELPER_USER"] = "from-environ"
    write_json(docker_config, {"credsStore": "testhelper"})
    assert lookup("quay.io", environ) == Credentials(username="from-environ", password="x")


def test_helper_runs_once_per_registry_per_run(tmp_path, environ, docker_config, helper, monkeypatch,
                                               push_image, token_registry):
    """Every token scope and the 401 message need the credentials; the helper is asked once."""
    pushed = [push_image("oci", registry=token_registry) for _ in range(3)]
    refused = pushed[2].repo
    token_registry.issuer.clear()
    user, password = token_registry.credentials
    token_registry.issuer.policy = lambda who, _pw, repository, actions: (
        [] if repository == refused or who != user else list(actions))
    calls = helper(answer(user, password))
    write_json(docker_config, {"credHelpers": {token_registry.host: "testhelper"}})
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config.parent))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)

    async def main():
        async with open_registries(SessionOptions(), [token_registry.host]) as regs:
            repositories = [regs.repository(reference.parse(image.ref).repository) for image in pushed]
            digests = [await repository.resolve_digest("v1") for repository in repositories[:2]]
            with pytest.raises(RegistryError) as refusal:
                await repositories[2].resolve_digest("v1")
            return digests, str(refusal.value)

    digests, refusal = run(main())

    assert [str(digest) for digest in digests] == [image.digest for image in pushed[:2]]
    assert "(credentials were rejected or lack this permission)" in refusal
    scopes = {tuple(request.requested) for request in token_registry.issuer.requests}
    assert len(scopes) == 3
    assert {request.username for request in token_registry.issuer.requests} == {user}
    assert calls.read_text() == f"get {token_registry.host}\n"


def test_credentials_from_docker_config(push_image, htpasswd_registry, tmp_path, monkeypatch):
    pushed = push_image("oci", registry=htpasswd_registry)
    user, password = htpasswd_registry.credentials
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {htpasswd_registry.host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}
    ))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)

    async def main():
        async with Registries(TransportOptions(retry=FAST_RETRY), lookup) as regs:
            return await regs.repository(reference.parse(pushed.ref).repository).resolve_digest("v1")

    assert str(run(main())) == pushed.digest
