"""Google registry credentials (registry/google.py) against a fake OAuth2 token endpoint and a fake
metadata server on loopback."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from reconciler.registry import google as google_module
from reconciler.registry.credentials import Credentials, CredentialsError
from reconciler.registry.google import ACCESS_TOKEN_USERNAME, METADATA_LOCATION_VARIABLES, GoogleTokenSource
from reconciler.oci.reference import is_google_registry
from tests.harness.metadata import AcceptAndClose, FakeMetadataServer, named_metadata_server, point_google_auth_at
from tests.harness.oauth import (
    FakeTokenEndpoint,
    private_key_pem,
    write_service_account_key,
)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def assert_no_secrets(text: str, endpoint: FakeTokenEndpoint, key: rsa.RSAPrivateKey) -> None:
    pem_body = "".join(private_key_pem(key).splitlines()[1:-1])
    for secret in [*endpoint.issued_tokens, pem_body[:40], pem_body[-40:], "PRIVATE KEY"]:
        assert secret not in text


def test_key_file_gives_the_endpoints_token(endpoint: FakeTokenEndpoint, key_file: Path) -> None:
    source = GoogleTokenSource.from_key_file(key_file)

    credentials = source.credentials()

    assert credentials.username == ACCESS_TOKEN_USERNAME
    assert endpoint.issued_tokens == [credentials.password]
    assert credentials.identity_token is None


def test_token_is_reused_while_far_from_expiry(endpoint: FakeTokenEndpoint, key_file: Path) -> None:
    source = GoogleTokenSource.from_key_file(key_file)

    first, second = source.credentials(), source.credentials()

    assert first == second
    assert endpoint.request_count == 1


def test_token_is_refreshed_when_it_nears_expiry(endpoint: FakeTokenEndpoint,
                                                 key_file: Path) -> None:
    endpoint.expires_in = 120  # inside the 5-minute refresh margin from the start
    source = GoogleTokenSource.from_key_file(key_file)

    first, second = source.credentials(), source.credentials()

    assert first.password != second.password
    assert [first.password, second.password] == endpoint.issued_tokens


def test_concurrent_callers_share_one_refresh(endpoint: FakeTokenEndpoint, key_file: Path) -> None:
    source = GoogleTokenSource.from_key_file(key_file)
    results = []
    threads = [threading.Thread(target=lambda: results.append(source.credentials()))
               for _ in range(8)]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert endpoint.request_count == 1
    assert {credentials.password for credentials in results} == set(endpoint.issued_tokens)


def test_key_signed_by_another_private_key_is_refused(
    tmp_path: Path, endpoint: FakeTokenEndpoint, other_key: rsa.RSAPrivateKey,
) -> None:
    path = write_service_account_key(tmp_path / "rotated.json", other_key, endpoint.url)
    source = GoogleTokenSource.from_key_file(path)

    with pytest.raises(CredentialsError) as raised:
        source.credentials()

    message = str(raised.value)
    assert message == (f"could not get a Google access token with key file {path}: "
                       "invalid_grant: Invalid JWT Signature.")
    assert_no_secrets(message, endpoint, other_key)
    assert endpoint.issued_tokens == []


def test_unreachable_token_endpoint_is_a_credentials_error(
    tmp_path: Path, trusted_key: rsa.RSAPrivateKey, endpoint: FakeTokenEndpoint,
) -> None:
    closed_port_url = "http://127.0.0.1:1/token"
    path = write_service_account_key(tmp_path / "sa.json", trusted_key, closed_port_url)

    with pytest.raises(CredentialsError) as raised:
        GoogleTokenSource.from_key_file(path).credentials()

    message = str(raised.value)
    assert message.startswith(f"could not get a Google access token with key file {path}: "
                              f"POST {closed_port_url} failed: ")
    assert "\n" not in message
    assert_no_secrets(message, endpoint, trusted_key)


EC_KEY_PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def _key_without(field: str) -> Callable[[dict[str, object]], dict[str, object]]:
    def change(key: dict[str, object]) -> dict[str, object]:
        del key[field]
        return key
    return change


@pytest.mark.parametrize(("content", "expected"), [
    ("", "is not JSON: Expecting value at line 1 column 1"),
    ('{"type": "service_account",', "is not JSON: "),
    (b"\xff\xfe{}", "is not UTF-8 text"),
    ("[]", "is not a JSON object"),
    (lambda key: {**key, "type": "authorized_user"}, "is not a service-account key"),
    (_key_without("client_email"), "lacks the field(s) client_email"),
    (_key_without("token_uri"), "lacks the field(s) token_uri"),
    (lambda key: {**key, "private_key": key["private_key"][:200]},
     "is unusable: its private_key is not a PEM RSA private key"),
    (lambda key: {**key, "private_key": 12345}, "lacks the field(s) private_key"),
    (lambda key: {**key, "private_key": EC_KEY_PEM},
     "is unusable: its private_key is not a PEM RSA private key"),
])
def test_malformed_key_file_fails_before_any_request(
    tmp_path: Path, trusted_key: rsa.RSAPrivateKey, endpoint: FakeTokenEndpoint,
    key_file: Path, content: object, expected: str,
) -> None:
    if callable(content):
        content = json.dumps(content(json.loads(key_file.read_text())))
    path = tmp_path / "broken.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)

    with pytest.raises(CredentialsError) as raised:
        GoogleTokenSource.from_key_file(path)

    message = str(raised.value)
    assert str(path) in message and expected in message
    assert "\n" not in message
    assert_no_secrets(message, endpoint, trusted_key)
    assert endpoint.request_count == 0


def test_missing_key_file(tmp_path: Path, endpoint: FakeTokenEndpoint) -> None:
    path = tmp_path / "absent.json"

    expected = f"^Google key file {re.escape(str(path))} does not exist$"
    with pytest.raises(CredentialsError, match=expected):
        GoogleTokenSource.from_key_file(path)

    assert endpoint.request_count == 0


def test_key_file_that_is_a_directory(tmp_path: Path, endpoint: FakeTokenEndpoint) -> None:
    expected = f"^cannot read Google key file {re.escape(str(tmp_path))}: "
    with pytest.raises(CredentialsError, match=expected):
        GoogleTokenSource.from_key_file(tmp_path)

    assert endpoint.request_count == 0


def test_access_token_is_used_as_given(endpoint: FakeTokenEndpoint) -> None:
    source = GoogleTokenSource.from_access_token("ya29.from-ci\n")

    assert source.credentials().password == "ya29.from-ci"
    assert source.credentials().username == ACCESS_TOKEN_USERNAME
    assert endpoint.request_count == 0


def test_empty_access_token_is_refused() -> None:
    with pytest.raises(CredentialsError, match="access token given is empty"):
        GoogleTokenSource.from_access_token("  ")


def test_repr_and_str_hold_no_token_or_key(endpoint: FakeTokenEndpoint, key_file: Path,
                                           trusted_key: rsa.RSAPrivateKey) -> None:
    from_key = GoogleTokenSource.from_key_file(key_file)
    from_key.credentials()
    from_token = GoogleTokenSource.from_access_token("ya29.secret-from-ci")

    for source in (from_key, from_token):
        for text in (repr(source), str(source), repr(source.credentials())):
            assert_no_secrets(text, endpoint, trusted_key)
            assert "ya29" not in text
    assert str(key_file) in repr(from_key)


@pytest.mark.parametrize(("registry", "expected"), [
    ("gcr.io", True),
    ("eu.gcr.io", True),
    ("us.gcr.io:443", True),
    ("GCR.IO", True),
    ("europe-west1-docker.pkg.dev", True),
    ("us-docker.pkg.dev:443", True),
    ("docker.pkg.dev", False),
    ("europe-west1-python.pkg.dev", False),
    ("gcr.io.example.com", False),
    ("notgcr.io", False),
    ("docker.io", False),
    ("localhost:5000", False),
    ("[::1]:5000", False),
])
def test_is_google_registry(registry: str, expected: bool) -> None:
    assert is_google_registry(registry) is expected


def test_broken_application_default_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, no_application_default: None, tmp_path: Path,
) -> None:
    path = tmp_path / "absent.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))

    expected = f"^application default credentials from {re.escape(str(path))} are unusable: "
    with pytest.raises(CredentialsError, match=expected):
        GoogleTokenSource.from_application_default()


# The metadata server (GCE, GKE workload identity, Cloud Run), faked on loopback.

@pytest.fixture
def metadata(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMetadataServer]:
    with named_metadata_server(monkeypatch) as fake:
        yield fake


@pytest.fixture
def product_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], None]:
    """This machine's DMI product name, as google.py reads it (``/sys/class/dmi/id/product_name``)."""
    def write(name: str) -> None:
        (tmp_path / "product_name").write_text(name + "\n")
        monkeypatch.setattr(google_module, "PRODUCT_NAME_FILE", str(tmp_path / "product_name"))
    return write


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """google-auth's probe, counted and answered 'no server' without reaching 169.254.169.254."""
    from google.auth.compute_engine import _metadata

    calls: list[str] = []
    monkeypatch.setattr(_metadata, "ping", lambda request, **kwargs: calls.append("ping") or False)
    for variable in METADATA_LOCATION_VARIABLES + ("NO_GCE_CHECK",):
        monkeypatch.delenv(variable, raising=False)
    return calls


def test_metadata_server_token_is_fetched_once_and_reused(
    metadata: FakeMetadataServer, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="reconciler"):
        source = GoogleTokenSource.from_metadata_server()
        assert source is not None
        first, second = source.credentials(), source.credentials()

    assert first == second == Credentials(username=ACCESS_TOKEN_USERNAME,
                                          password=metadata.issued_tokens[0])
    assert metadata.probes == 1
    assert len(metadata.token_requests) == 1
    assert "scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform" in metadata.token_requests[0]
    assert metadata.without_flavor == []
    assert source.source == f"the metadata server at {metadata.host}"
    for text in (caplog.text, repr(source), str(source), repr(first)):
        assert metadata.issued_tokens[0] not in text


def test_absent_metadata_server_is_one_attempt_and_no_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # The reconciler logger's own level: another test's CLI run may have set it to INFO.
    with AcceptAndClose() as nothing, caplog.at_level(logging.DEBUG, logger="reconciler"):
        point_google_auth_at(monkeypatch, nothing.host)
        source = GoogleTokenSource.from_metadata_server()

    assert source is None
    assert nothing.connections == 1  # google-auth's own probe tries three times, with pauses
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert f"no metadata server: GET http://{nothing.host} failed: " in caplog.text


@pytest.mark.parametrize(("probe_status", "flavor", "why"), [
    (500, "Google", "answered HTTP 500"),
    (200, "Not-Google", "answered HTTP 200 without Metadata-Flavor: Google"),
])
def test_metadata_server_answering_an_error_is_no_metadata_server(
    metadata: FakeMetadataServer, caplog: pytest.LogCaptureFixture, probe_status: int, flavor: str,
    why: str,
) -> None:
    metadata.probe_status, metadata.flavor = probe_status, flavor

    with caplog.at_level(logging.DEBUG, logger="reconciler"):
        assert GoogleTokenSource.from_metadata_server() is None

    assert metadata.probes == 1
    assert metadata.token_requests == []
    assert f"no metadata server: GET http://{metadata.host} {why}" in caplog.messages


def test_metadata_server_refusing_the_token_is_one_line(metadata: FakeMetadataServer) -> None:
    metadata.token_status = 403
    source = GoogleTokenSource.from_metadata_server()
    assert source is not None

    with pytest.raises(CredentialsError) as raised:
        source.credentials()

    assert str(raised.value) == (f"could not get a Google access token with the metadata server "
                                 f"at {metadata.host}: it answered HTTP 403")
    assert len(metadata.token_requests) == 1  # a 403 is not retried


def test_off_google_cloud_nothing_is_probed(pings: list[str], product_name: Callable[[str], None]) -> None:
    product_name("Standard PC (Q35 + ICH9, 2009)")

    assert GoogleTokenSource.from_metadata_server() is None
    assert pings == []


def test_on_a_google_machine_the_metadata_server_is_probed_once(
    pings: list[str], product_name: Callable[[str], None],
) -> None:
    product_name("Google Compute Engine")

    assert GoogleTokenSource.from_metadata_server() is None
    assert pings == ["ping"]


def test_a_named_metadata_server_is_probed_whatever_the_machine(
    metadata: FakeMetadataServer, product_name: Callable[[str], None],
) -> None:
    product_name("Standard PC (Q35 + ICH9, 2009)")

    assert GoogleTokenSource.from_metadata_server() is not None
    assert metadata.probes == 1


def test_no_gce_check_means_no_probe(monkeypatch: pytest.MonkeyPatch, metadata: FakeMetadataServer) -> None:
    monkeypatch.setenv("NO_GCE_CHECK", "true")

    assert GoogleTokenSource.from_metadata_server() is None
    assert metadata.requests == []


def test_application_default_never_asks_the_metadata_server(
    no_application_default: None, metadata: FakeMetadataServer,
) -> None:
    assert GoogleTokenSource.from_application_default() is None
    assert metadata.requests == []
