"""The command line as values: which options a command line gives the run, and the exit status of refusals
found before any registry is asked (no registry, no subprocess: the workflow is never reached)."""

from __future__ import annotations

import pytest

from reconciler import cli
from reconciler.registry.options import TransportOptions
from reconciler.registry.proxy import ProxySettings
from reconciler.registry.retry import RetryPolicy
from reconciler.session import SessionOptions
from tests.helpers_cli import write_images


class Reached(Exception):
    """The command got as far as the registries: what it would have worked with is kept."""


@pytest.fixture
def session_of(tmp_path, monkeypatch):
    """``session_of(*args)``: the SessionOptions a command line hands to the registries."""
    write_images(tmp_path, "mirror.example/m/", [{"source": "source.example/app:1"}])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    for variable in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "SSL_CERT_FILE", "SYNCER_TARGET_KEY_FILE",
                     "SYNCER_ACCESS_TOKEN", "SYNCER_IMAGES_FILE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                     "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    seen: list[SessionOptions] = []

    def reached(session, loaded, work, interruption=None):
        seen.append(session)
        raise Reached

    monkeypatch.setattr(cli, "_with_registries", reached)

    def run(*args: str) -> SessionOptions:
        with pytest.raises(Reached):
            cli.main(list(args))
        return seen.pop()

    return run


@pytest.mark.parametrize("command", [["verify"], ["plan"], ["lock"], ["sync", "-i", "images.yaml"]])
def test_the_defaults(session_of, command):
    assert session_of(*command) == SessionOptions(transport=TransportOptions(proxies=ProxySettings()))


def test_every_registry_option_reaches_the_transport(session_of, tmp_path):
    session = session_of(
        "verify", "--max-requests", "3", "--retries", "0", "--timeout", "7.5", "--upload-chunk-mib", "2",
        "--insecure-registry", "a.example", "--insecure-registry", "b.example:5000",
        "-t", "key.json", "--access-token", "secret",
    )

    assert session == SessionOptions(
        transport=TransportOptions(
            insecure_registries=frozenset({"a.example", "b.example:5000"}),
            max_connections=3,
            retry=RetryPolicy(attempts=1),
            timeout=7.5,
            chunk_size=2 * 1024 * 1024,
            proxies=ProxySettings(),
        ),
        target_key_file="key.json",
        access_token="secret",
    )


@pytest.mark.parametrize("command", [["apply"], ["lock", "--upgrade"], ["sync", "-i", "images.yaml", "-d", "false"]])
def test_the_same_options_for_every_command(session_of, command):
    assert session_of(*command, "--max-requests", "5").transport.max_connections == 5


def test_the_original_command_line_is_sync(session_of):
    assert session_of("-i", "images.yaml", "--dry-run", "false", "--max-requests", "2").transport.max_connections == 2


@pytest.mark.parametrize(("args", "status"), [
    (["verify", "--max-requests", "0"], 2),
    (["lock", "--retries", "21"], 2),
    (["plan", "--timeout", "0.5"], 2),
    (["lock", "busybox"], 2),  # naming sources needs --upgrade
    (["sync", "-i", "images.yaml", "--dry-run=maybe"], 2),
    (["verify", "-i", "missing.yaml"], 1),
])
def test_refused_before_any_registry(session_of, args, status):
    assert cli.main(args) == status
