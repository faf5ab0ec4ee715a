"""A stand-in for the GCE metadata server (GCE, GKE workload identity, Cloud Run) on loopback.

It answers what google-auth asks of it: the probe at its root, the default service
account's details and its access token, and refuses, as Google's does (403), any request
without ``Metadata-Flavor: Google``. What it was asked, and the tokens it issued, are
recorded. ``probe_status``, ``flavor`` and ``token_status`` make it answer as a broken one.

``AcceptAndClose`` is a port where nothing answers: it takes each connection and closes it
at once, counting them, so that a test can tell how often a client tried.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest

from .threaded import ThreadedServer

SERVICE_ACCOUNT_EMAIL = "syncer@test-project.iam.gserviceaccount.com"
SERVICE_ACCOUNT_PATH = "/computeMetadata/v1/instance/service-accounts/default/"
TOKEN_PATH = SERVICE_ACCOUNT_PATH + "token"


@attrs.define(eq=False)
class FakeMetadataServer:
    """What it answers, and what it was asked (path and query, in order)."""

    probe_status: int = 200
    flavor: str = "Google"  # the Metadata-Flavor header of every answer
    token_status: int = 200
    expires_in: int = 3600
    host: str = ""
    requests: list[str] = attrs.Factory(list)
    without_flavor: list[str] = attrs.Factory(list)
    issued_tokens: list[str] = attrs.Factory(list)
    _lock: threading.Lock = attrs.Factory(threading.Lock)

    @property
    def probes(self) -> int:
        return sum(1 for request in self.requests if urlsplit(request).path in ("", "/"))

    @property
    def token_requests(self) -> list[str]:
        return [request for request in self.requests if urlsplit(request).path == TOKEN_PATH]

    def answer(self, target: str, flavor: str | None) -> tuple[int, object]:
        with self._lock:
            self.requests.append(target)
            if flavor != "Google":
                self.without_flavor.append(target)
        if flavor != "Google":
            return 403, "Missing Metadata-Flavor:Google header."
        url = urlsplit(target)
        if url.path in ("", "/"):
            return self.probe_status, "computeMetadata/\n"
        if url.path == SERVICE_ACCOUNT_PATH and parse_qs(url.query).get("recursive") == ["true"]:
            return 200, {"aliases": ["default"], "email": SERVICE_ACCOUNT_EMAIL,
                         "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
        if url.path == TOKEN_PATH:
            if self.token_status != 200:
                return self.token_status, "the fake metadata server was told to fail"
            token = "ya29.metadata-" + secrets.token_urlsafe(24)
            with self._lock:
                self.issued_tokens.append(token)
            return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        return 404, "Not Found"


class _MetadataHandler(BaseHTTPRequestHandler):
    server: _MetadataHTTPServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        status, body = self.server.fake.answer(self.path, self.headers.get("Metadata-Flavor"))
        is_json = not isinstance(body, str)
        data = (json.dumps(body) if is_json else body).encode()
        self.send_response(status)
        self.send_header("Metadata-Flavor", self.server.fake.flavor)
        self.send_header("Content-Type", "application/json" if is_json else "application/text")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: pytest shows failures, not access logs."""


class _MetadataHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeMetadataServer


class _MetadataService(ThreadedServer):
    thread_name = "fake-metadata-server"

    def __init__(self, fake: FakeMetadataServer) -> None:
        self.fake = fake

    def _bind(self) -> _MetadataHTTPServer:
        server = _MetadataHTTPServer(("127.0.0.1", 0), _MetadataHandler)
        server.fake = self.fake
        return server


def point_google_auth_at(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """Name ``host`` ("IP:PORT") as the metadata server, as a user would: GCE_METADATA_HOST for
    the token, GCE_METADATA_IP for the probe (google-auth reads each of them).

    google-auth reads GCE_METADATA_HOST once, when its metadata module is first imported, which
    in a test process is long before this test; the module's copy is set here as that import would.
    """
    from google.auth.compute_engine import _metadata

    monkeypatch.setenv("GCE_METADATA_HOST", host)
    monkeypatch.setenv("GCE_METADATA_IP", host)
    monkeypatch.delenv("NO_GCE_CHECK", raising=False)
    monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", host)


@contextlib.contextmanager
def serve_metadata(fake: FakeMetadataServer) -> Iterator[FakeMetadataServer]:
    """Run ``fake`` on a free loopback port while the ``with`` block lasts."""
    with _MetadataService(fake) as service:
        fake.host = service.host
        yield fake


@contextlib.contextmanager
def named_metadata_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMetadataServer]:
    """A fake metadata server running, and named as the machine's (``point_google_auth_at``)."""
    with serve_metadata(FakeMetadataServer()) as fake:
        point_google_auth_at(monkeypatch, fake.host)
        yield fake


@attrs.define(eq=False)
class AcceptAndClose:
    """A loopback port that closes every connection unanswered; ``connections`` counts them."""

    host: str = ""
    connections: int = 0
    _socket: socket.socket | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> AcceptAndClose:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, name="accept-and-close", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._socket is not None
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def __exit__(self, *exc: object) -> None:
        assert self._socket is not None and self._thread is not None
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone may not
        self._socket.close()
        self._thread.join(timeout=5)
