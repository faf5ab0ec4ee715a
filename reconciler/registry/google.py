"""Credentials for Google registries (GCR, Artifact Registry) from Google auth.

Those registries take ``oauth2accesstoken:<access token>`` at their token realm, so a
run needs a fresh OAuth2 access token from a service-account key, a token handed over
by CI, or application default credentials. google-auth does the OAuth2 work; it runs
here over httpx so the tool does not depend on ``requests``. No key or token ever
reaches a repr, a log line or an error message.
"""

from __future__ import annotations

import datetime
import json
import os
import ssl
import threading
from collections.abc import Mapping
from typing import Any

import attrs
import google.auth
import google.auth.credentials
import google.auth.environment_vars
import google.auth.exceptions
import google.auth.transport
import google.oauth2.credentials
import httpx
from google.oauth2 import service_account

from reconciler import files
from reconciler.registry.credentials import JSON_TOO_COMPLEX, Credentials, CredentialsError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# The user name Google registries expect alongside an OAuth2 access token.
ACCESS_TOKEN_USERNAME = "oauth2accesstoken"
# Refresh this long before expiry, so a token never lapses during a long blob upload.
REFRESH_MARGIN = datetime.timedelta(minutes=5)
DEFAULT_TIMEOUT_SECONDS = 30.0
_KEY_FILE_FIELDS = ("client_email", "private_key", "token_uri")


@attrs.frozen
class HttpxResponse(google.auth.transport.Response):
    """An httpx response in the shape google-auth reads."""

    status: int
    headers: Mapping[str, str]
    data: bytes


@attrs.frozen
class HttpxRequest(google.auth.transport.Request):
    """Runs google-auth's HTTP calls on an httpx client instead of ``requests``.

    The client trusts the system's CAs, as the registries' connections do by default.
    """

    client: httpx.Client

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None,
                 **kwargs: Any) -> HttpxResponse:
        # kwargs carry options for requests' Session.request; httpx has no use for them.
        try:
            response = self.client.request(
                method, url, content=body, headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise google.auth.exceptions.TransportError(
                f"{method} {url} failed: {error or type(error).__name__}"
            ) from error
        return HttpxResponse(status=response.status_code, headers=response.headers,
                             data=response.content)


def _http_client() -> httpx.Client:
    # An explicit context: httpx would otherwise load SSL_CERT_FILE itself, and fail on a bad one
    # the user meant only for the registries (--ca-file takes its value from there).
    return httpx.Client(timeout=DEFAULT_TIMEOUT_SECONDS, verify=ssl.create_default_context())


@attrs.define(eq=False)
class GoogleTokenSource:
    """Registry credentials carrying a Google access token, refreshed before it expires.

    One instance serves every Google registry of a run; ``credentials`` may be called
    from several threads (``asyncio.to_thread``) and refreshes only once.
    """

    # How the token is obtained, for messages: "key file /secrets/sa.json".
    source: str
    _google_credentials: google.auth.credentials.Credentials = attrs.field(repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str]) -> GoogleTokenSource:
        """Sign token requests with a service-account JSON key (``--target-key-file``).

        The file is checked here, before any network call, so a bad path fails at startup.
        """
        info = _read_key_file(path)
        try:
            google_credentials = service_account.Credentials.from_service_account_info(
                info, scopes=[CLOUD_PLATFORM_SCOPE]
            )
            # Some unusable keys (an EC key) load fine and would fail only at the first refresh.
            google_credentials.signer.sign(b"usable?")
        except (ValueError, TypeError):
            # google-auth's messages may quote the key; say what is wrong without it.
            raise CredentialsError(
                f"Google key file {path} is unusable: its private_key is not a PEM RSA private key"
            ) from None
        return cls(f"key file {path}", google_credentials)

    @classmethod
    def from_access_token(cls, token: str) -> GoogleTokenSource:
        """Use a token obtained elsewhere (CI's workload identity federation); never refreshed."""
        if not token.strip():
            raise CredentialsError("the Google access token given is empty")
        return cls("the access token given", google.oauth2.credentials.Credentials(token.strip()))

    @classmethod
    def from_application_default(cls) -> GoogleTokenSource | None:
        """Application default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's), or None.

        The metadata server (GCE, GKE, Cloud Run) is not among them: google-auth reaches it
        only through ``requests``, which this tool does not depend on.
        """
        configured = os.environ.get(google.auth.environment_vars.CREDENTIALS)
        try:
            if configured:
                # Read once within the bound first: google-auth reads any size, and lets OSError out.
                files.read_text(configured)
            with _http_client() as client:
                google_credentials, _project = google.auth.default(
                    scopes=[CLOUD_PLATFORM_SCOPE], request=HttpxRequest(client)
                )
        except (google.auth.exceptions.DefaultCredentialsError, OSError, UnicodeDecodeError) as error:
            if not configured:
                return None
            # The user pointed at a file: silently syncing anonymously would hide the mistake.
            raise CredentialsError(
                f"application default credentials from {configured} are unusable: "
                f"{_message(error)}"
            ) from None
        return cls("application default credentials", google_credentials)

    def credentials(self) -> Credentials:
        """Credentials for a Google registry's token realm, refreshing the token if needed."""
        with self._lock:
            if self._needs_refresh():
                self._refresh()
            return Credentials(username=ACCESS_TOKEN_USERNAME,
                               password=self._google_credentials.token)

    def _needs_refresh(self) -> bool:
        if self._google_credentials.token is None:
            return True
        expiry = self._google_credentials.expiry  # naive UTC, as google-auth keeps it
        if expiry is None:
            return False
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        return expiry - now < REFRESH_MARGIN

    def _refresh(self) -> None:
        try:
            with _http_client() as client:
                self._google_credentials.refresh(HttpxRequest(client))
        except google.auth.exceptions.GoogleAuthError as error:
            raise CredentialsError(
                f"could not get a Google access token with {self.source}: {_message(error)}"
            ) from None


def _read_key_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key file's JSON, checked; errors name the file and the fault, never the content."""
    try:
        info = json.loads(files.read_text(path))
    except FileNotFoundError:
        raise CredentialsError(f"Google key file {path} does not exist") from None
    except OSError as error:
        raise CredentialsError(f"cannot read Google key file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"Google key file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise CredentialsError(
            f"Google key file {path} is not JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}"
        ) from None
    except (ValueError, RecursionError):
        raise CredentialsError(f"Google key file {path} is not JSON: {JSON_TOO_COMPLEX}") from None
    if not isinstance(info, dict):
        raise CredentialsError(f"Google key file {path} is not a JSON object")
    if info.get("type") != "service_account":
        raise CredentialsError(
            f"Google key file {path} is not a service-account key: "
            "its type is not 'service_account'"
        )
    missing = [name for name in _KEY_FILE_FIELDS if not isinstance(info.get(name), str)]
    if missing:
        raise CredentialsError(f"Google key file {path} lacks the field(s) {', '.join(missing)}")
    return info


def _message(error: Exception) -> str:
    """Why, in one line: never a file's content, nor the response data google-auth carries in further args."""
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    message = str(error.args[0]) if error.args else type(error).__name__
    return " ".join(message.split())
