"""A stand-in for Google's OAuth2 token endpoint, for service-account keys.

It accepts the JWT-bearer grant google-auth sends, verifies the RS256 assertion
against the test key's public key and its claims, and issues random access tokens
with a configurable lifetime, recording what it issued and how often it was asked.
``write_service_account_key`` writes the matching key file.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .threaded import ThreadedServer

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_EMAIL = "mirror@test-project.iam.gserviceaccount.com"
# google-auth addresses every service-account assertion to Google's endpoint, whatever the
# key file's token_uri says, so the stand-in checks for that audience rather than its own URL.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@attrs.define(eq=False)
class FakeTokenEndpoint:
    """Google's token endpoint for service accounts: checks the signed JWT, issues tokens."""

    public_key: rsa.RSAPublicKey
    client_email: str = CLIENT_EMAIL
    expires_in: int = 3600
    audience: str = GOOGLE_TOKEN_AUDIENCE
    url: str = ""
    request_count: int = 0
    issued_tokens: list[str] = attrs.Factory(list)
    _lock: threading.Lock = attrs.Factory(threading.Lock)

    def answer(self, form: dict[str, list[str]]) -> tuple[int, dict[str, object]]:
        """Status and JSON body for one token request."""
        with self._lock:
            self.request_count += 1
        if form.get("grant_type") != [JWT_BEARER_GRANT] or len(form.get("assertion", [])) != 1:
            return 400, {"error": "unsupported_grant_type"}
        problem = self._check_assertion(form["assertion"][0])
        if problem:
            return 400, {"error": "invalid_grant", "error_description": problem}
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self._lock:
            self.issued_tokens.append(token)
        return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def _check_assertion(self, assertion: str) -> str | None:
        try:
            header_part, claims_part, signature_part = assertion.split(".")
            header = json.loads(_b64url_decode(header_part))
            claims = json.loads(_b64url_decode(claims_part))
            signature = _b64url_decode(signature_part)
        except ValueError:
            return "Malformed JWT."
        if header.get("alg") != "RS256":
            return "Unsupported JWT algorithm."
        try:
            self.public_key.verify(signature, f"{header_part}.{claims_part}".encode(),
                                   padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "Invalid JWT Signature."
        if claims.get("aud") != self.audience:
            return "Invalid JWT: wrong audience."
        if claims.get("iss") != self.client_email:
            return "Invalid JWT: unknown issuer."
        if CLOUD_PLATFORM_SCOPE not in str(claims.get("scope", "")).split():
            return "Invalid JWT: scope lacks cloud-platform."
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
            return "Invalid JWT: expired."
        return None


class _TokenHandler(BaseHTTPRequestHandler):
    server: _TokenServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length", 0))
        form = parse_qs(self.rfile.read(length).decode())
        status, body = self.server.endpoint.answer(form)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: pytest shows failures, not access logs."""


class _TokenServer(ThreadingHTTPServer):
    daemon_threads = True
    endpoint: FakeTokenEndpoint


class _TokenService(ThreadedServer):
    thread_name = "oauth-token-endpoint"

    def __init__(self, endpoint: FakeTokenEndpoint) -> None:
        self.endpoint = endpoint

    def _bind(self) -> _TokenServer:
        server = _TokenServer(("127.0.0.1", 0), _TokenHandler)
        server.endpoint = self.endpoint
        return server


@contextlib.contextmanager
def serve_token_endpoint(endpoint: FakeTokenEndpoint) -> Iterator[FakeTokenEndpoint]:
    """Run ``endpoint`` on a free loopback port while the ``with`` block lasts."""
    with _TokenService(endpoint) as service:
        endpoint.url = f"{service.url}/token"
        yield endpoint


def private_key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def write_service_account_key(path: Path, key: rsa.RSAPrivateKey, token_uri: str,
                              client_email: str = CLIENT_EMAIL) -> Path:
    """A service-account JSON key file as the Cloud console downloads it."""
    path.write_text(json.dumps({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": secrets.token_hex(20),
        "private_key": private_key_pem(key),
        "client_email": client_email,
        "client_id": "123456789012345678901",
        "token_uri": token_uri,
    }))
    return path
