"""Credentials for Google registries (GCR, Artifact Registry) from Google auth.

Those registries take ``oauth2accesstoken:<access token>`` at their token realm, so a
run needs a fresh OAuth2 access token from a service-account key, a token handed over
by CI, application default credentials, or the metadata server of GCE, GKE (workload
identity) and Cloud Run. google-auth does the OAuth2 and metadata work; it runs here
over httpx so the tool does not depend on ``requests``. No key or token ever reaches a
repr, a log line or an error message.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import google.auth
import google.auth._default
import google.auth.credentials
import google.auth.environment_vars
import google.auth.exceptions
import google.auth.transport
import google.oauth2.credentials
import httpx
from google.oauth2 import service_account

from reconciler import files
from reconciler.registry.credentials import JSON_TOO_COMPLEX, Credentials, CredentialsError

log = logging.getLogger(__name__)

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# The user name Google registries expect alongside an OAuth2 access token.
ACCESS_TOKEN_USERNAME = "oauth2accesstoken"
# Refresh this long before expiry, so a token never lapses during a long blob upload.
REFRESH_MARGIN = datetime.timedelta(minutes=5)
DEFAULT_TIMEOUT_SECONDS = 30.0
_KEY_FILE_FIELDS = ("client_email", "private_key", "token_uri")
# Where the metadata server is, as google-auth reads it: GCE_METADATA_HOST (else its old
# name GCE_METADATA_ROOT) for the token, GCE_METADATA_IP for the probe. Any of them set
# means the user named a server, so it is probed even where the machine says "not Google".
METADATA_LOCATION_VARIABLES = (
    google.auth.environment_vars.GCE_METADATA_HOST,
    google.auth.environment_vars.GCE_METADATA_ROOT,
    google.auth.environment_vars.GCE_METADATA_IP,
)
# Linux machines on Google Cloud (GCE, GKE nodes) name their product "Google ..." here;
# a readable file naming anything else means no metadata server, so none is probed.
PRODUCT_NAME_FILE = "/sys/class/dmi/id/product_name"


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


@attrs.frozen
class _ProbeRequest(HttpxRequest):
    """For the metadata server's probe: no answer is an answer that is not Google's.

    google-auth's ping logs a warning for each attempt that raises; off Google Cloud that
    would be a line in every run. Why the probe failed is kept for our debug line instead.
    """

    failures: list[str] = attrs.field(factory=list)

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None,
                 **kwargs: Any) -> HttpxResponse:
        try:
            response = super().__call__(url, method, body, headers, timeout, **kwargs)
        except google.auth.exceptions.TransportError as error:
            self.failures.append(_message(error))
            return HttpxResponse(status=0, headers={}, data=b"")
        flavor = response.headers.get("metadata-flavor")
        if flavor != "Google":
            self.failures.append(f"{method} {url} answered HTTP {response.status} "
                                 "without Metadata-Flavor: Google")
        elif response.status != 200:
            self.failures.append(f"{method} {url} answered HTTP {response.status}")
        return response


def _http_client() -> httpx.Client:
    # An explicit context: httpx would otherwise load SSL_CERT_FILE itself, and fail on a bad one
    # the user meant only for the registries (--ca-file takes its value from there).
    return httpx.Client(timeout=DEFAULT_TIMEOUT_SECONDS, verify=ssl.create_default_context())


def _metadata_client() -> httpx.Client:
    """The metadata server is a link-local plain-HTTP peer: never through HTTP(S)_PROXY."""
    return httpx.Client(timeout=DEFAULT_TIMEOUT_SECONDS, trust_env=False)


@attrs.define(eq=False)
class GoogleTokenSource:
    """Registry credentials carrying a Google access token, refreshed before it expires.

    One instance serves every Google registry of a run; ``credentials`` may be called
    from several threads (``asyncio.to_thread``) and refreshes only once.
    """

    # How the token is obtained, for messages: "key file /secrets/sa.json".
    source: str
    _google_credentials: google.auth.credentials.Credentials = attrs.field(repr=False)
    _client: Callable[[], httpx.Client] = attrs.field(default=_http_client, repr=False)
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
        """Application default credentials from a file (GOOGLE_APPLICATION_CREDENTIALS, gcloud's), or None.

        These are the first checks of ``google.auth.default``; its last one, the metadata
        server, is ``from_metadata_server``: ``google.auth.default`` would probe it three
        times with a 3-second timeout each, and log a warning where there is none.
        """
        configured = os.environ.get(google.auth.environment_vars.CREDENTIALS)
        try:
            if configured:
                # Read once within the bound first: google-auth reads any size, and lets OSError out.
                files.read_text(configured)
            google_credentials, _project = google.auth._default._get_explicit_environ_credentials()
            if google_credentials is None:
                google_credentials, _project = google.auth._default._get_gcloud_sdk_credentials()
        except (google.auth.exceptions.DefaultCredentialsError, OSError, UnicodeDecodeError) as error:
            if not configured:
                return None
            # The user pointed at a file: silently syncing anonymously would hide the mistake.
            raise CredentialsError(
                f"application default credentials from {configured} are unusable: "
                f"{_message(error)}"
            ) from None
        if google_credentials is None:
            return None
        google_credentials = google.auth.credentials.with_scopes_if_required(
            google_credentials, [CLOUD_PLATFORM_SCOPE])
        return cls("application default credentials", google_credentials)

    @classmethod
    def from_metadata_server(cls) -> GoogleTokenSource | None:
        """The metadata server's service account (GCE, GKE workload identity, Cloud Run), or None.

        At most one probe, of one attempt: none with NO_GCE_CHECK=true, none on a Linux
        machine whose product name is not Google's (unless a GCE_METADATA_* variable names
        a server). A probe that gets no answer, an error or an answer without
        ``Metadata-Flavor: Google`` means there is no metadata server: None, and the next
        source is used. Once found, a token that cannot be had is an error, as for a key file.
        """
        try:
            from google.auth import compute_engine
            from google.auth.compute_engine import _metadata
        except ImportError as error:  # google-auth's metadata module imports requests
            log.debug("no metadata server credentials: google-auth cannot load them (%s)", error)
            return None
        if os.environ.get(google.auth.environment_vars.NO_GCE_CHECK) == "true":
            log.debug("no metadata server probed: NO_GCE_CHECK=true")
            return None
        named = any(os.environ.get(variable) for variable in METADATA_LOCATION_VARIABLES)
        product = _product_name()
        if not named and product is not None and not product.startswith("Google"):
            log.debug("no metadata server probed: this machine is not on Google Cloud (%s)",
                      " ".join(product.split()) or "no product name")
            return None
        with _metadata_client() as client:
            probe = _ProbeRequest(client)
            # GCE_METADATA_TIMEOUT, as google-auth reads it (3 seconds unless set).
            timeout = getattr(_metadata, "_METADATA_DEFAULT_TIMEOUT", 3)
            found = _metadata.ping(probe, timeout=timeout, retry_count=1)
        if not found:
            log.debug("no metadata server: %s", "; ".join(probe.failures) or "no answer")
            return None
        host = getattr(_metadata, "_GCE_METADATA_HOST", "metadata.google.internal")
        return cls(f"the metadata server at {host}",
                   compute_engine.Credentials(scopes=[CLOUD_PLATFORM_SCOPE]), _metadata_client)

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
            with self._client() as client:
                self._google_credentials.refresh(HttpxRequest(client))
        except google.auth.exceptions.GoogleAuthError as error:
            raise CredentialsError(
                f"could not get a Google access token with {self.source}: {_message(error)}"
            ) from None


def _product_name() -> str | None:
    """The machine's DMI product name, or None where there is none to read (macOS, gVisor)."""
    try:
        with open(PRODUCT_NAME_FILE, encoding="utf-8", errors="replace") as file:
            return file.read(256).strip()
    except OSError:
        return None


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
    cause = error.__cause__ if isinstance(error, google.auth.exceptions.RefreshError) else error
    if (isinstance(cause, google.auth.exceptions.TransportError) and len(cause.args) > 1
            and isinstance(cause.args[1], HttpxResponse)):
        # google-auth's metadata errors quote the URL and the whole response body: the status says it.
        return f"it answered HTTP {cause.args[1].status}"
    message = str(error.args[0]) if error.args else type(error).__name__
    # google-auth appends the response body after a line break ("\nResponse details:"): not ours to print.
    return " ".join(message.split("\nResponse", 1)[0].split())
