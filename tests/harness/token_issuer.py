"""A Docker token-protocol server for the registry's ``auth: token`` mode.

Implements ``GET /token?service=..&scope=..`` (optionally with Basic auth)
and the OAuth2 ``POST /token`` password grant.  Tokens are RS256 JWTs signed
with a throw-away key whose self-signed certificate is both carried in the
``x5c`` header and written as the registry's ``rootcertbundle``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from .threaded import ThreadedServer

# (username | None, password | None, repository, requested_actions) -> granted
Policy = Callable[[str | None, str | None, str, list[str]], Iterable[str]]


def default_policy(username: str | None, password: str | None, repository: str,
                   actions: list[str]) -> list[str]:
    """Valid users get everything they ask for; anonymous gets ``pull`` only."""
    if username is None:
        return [a for a in actions if a == "pull"]
    return list(actions)


def pull_only_policy(username, password, repository, actions):
    return [a for a in actions if a == "pull"]


def deny_all_policy(username, password, repository, actions):
    return []


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_scope(scope: str) -> tuple[str, str, list[str]]:
    """``repository:name:pull,push`` -> ("repository", "name", ["pull", "push"])."""
    typ, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return typ, name, [a for a in actions.split(",") if a]


def format_scope(typ: str, name: str, actions: Iterable[str]) -> str:
    return f"{typ}:{name}:{','.join(actions)}"


@dataclass
class TokenRequest:
    """One request the issuer received."""

    method: str
    path: str
    username: str | None
    service: str | None
    requested: list[str]          # scope strings as asked, in order
    granted: list[str]            # scope strings granted ("repository:x:pull")
    access: list[dict]            # the JWT ``access`` claim
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    grant_type: str | None = None  # for POST (OAuth2) requests

    @property
    def granted_actions(self) -> dict[str, list[str]]:
        """``{"name": ["pull", ...]}`` for repository scopes."""
        return {a["name"]: list(a["actions"]) for a in self.access if a["type"] == "repository"}


class TokenIssuer(ThreadedServer):
    """Threaded token server on 127.0.0.1.

    ``users``: name -> password (default ``{"tester": "tester-pw"}``).
    ``policy``: see :data:`Policy`; swap with ``use_policy`` (a context
    manager) or assign ``issuer.policy``; ``reset()`` restores defaults.
    ``requests``: list of :class:`TokenRequest` (thread-safe appends).
    """

    thread_name = "token-issuer"

    def __init__(self, users: dict[str, str] | None = None, *, service: str = "test-registry",
                 issuer_name: str = "harness-token-issuer", policy: Policy | None = None,
                 expires_in: int = 300, host: str = "127.0.0.1") -> None:
        self.users: dict[str, str] = dict(users or {"tester": "tester-pw"})
        self._default_users = dict(self.users)
        self.service = service
        self.issuer_name = issuer_name
        self.policy: Policy = policy or default_policy
        self.expires_in = expires_in
        self._default_expires_in = expires_in
        self.bind_host = host
        self.requests: list[TokenRequest] = []
        # OAuth2 refresh tokens (docker's "identitytoken") -> the user they stand for.
        self.refresh_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._fail: list[tuple[int, dict, bytes]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = _dt.datetime.now(_dt.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(days=1))
            .not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    # ------------------------------------------------------------ properties
    @property
    def default_credentials(self) -> tuple[str, str]:
        return next(iter(self._default_users.items()))

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    @property
    def root_cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write_root_cert_bundle(self, path: Path | str) -> Path:
        path = Path(path)
        path.write_bytes(self.root_cert_pem)
        return path

    # ----------------------------------------------------------- test knobs
    def use_policy(self, policy: Policy) -> "_PolicySwap":
        """``with issuer.use_policy(pull_only_policy): ...`` (restores on exit)."""
        return _PolicySwap(self, policy)

    def fail_next(self, n: int = 1, status: int = 500, headers: dict | None = None,
                  body: bytes = b'{"errors":[{"code":"UNAVAILABLE"}]}') -> None:
        """Answer the next ``n`` token requests with ``status``."""
        with self._lock:
            self._fail.extend([(status, dict(headers or {}), body)] * n)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def reset(self) -> None:
        """Restore default policy/users/expiry and forget recorded requests."""
        with self._lock:
            self.policy = default_policy
            self.users = dict(self._default_users)
            self.expires_in = self._default_expires_in
            self._fail.clear()
            self.requests.clear()
            self.refresh_tokens.clear()

    # --------------------------------------------------------------- tokens
    def issue(self, subject: str | None, access: list[dict], service: str | None = None,
              expires_in: int | None = None) -> str:
        now = int(time.time())
        exp = now + (self.expires_in if expires_in is None else expires_in)
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.issuer_name,
            "sub": subject or "",
            "aud": service or self.service,
            "exp": exp,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        sig = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(sig)

    def _grant(self, username, password, scopes: list[str]) -> list[dict]:
        access: dict[tuple[str, str], list[str]] = {}
        for scope in scopes:
            typ, name, actions = parse_scope(scope)
            if typ == "repository":
                granted = list(self.policy(username, password, name, list(actions)))
            else:  # e.g. registry:catalog:* — valid users only
                granted = list(actions) if username is not None else []
            if not granted:
                continue
            acc = access.setdefault((typ, name), [])
            for a in granted:
                if a not in acc:
                    acc.append(a)
        return [{"type": t, "name": n, "actions": a} for (t, n), a in access.items()]

    # ------------------------------------------------------------ lifecycle
    def _bind(self) -> ThreadingHTTPServer:
        class Handler(_IssuerHandler):
            issuer = self

        server = ThreadingHTTPServer((self.bind_host, 0), Handler)
        server.daemon_threads = True
        return server


class _PolicySwap:
    def __init__(self, issuer: TokenIssuer, policy: Policy) -> None:
        self.issuer, self.policy = issuer, policy
        self.saved = issuer.policy
        issuer.policy = policy

    def __enter__(self) -> TokenIssuer:
        return self.issuer

    def __exit__(self, *exc: object) -> None:
        self.issuer.policy = self.saved


class _IssuerHandler(BaseHTTPRequestHandler):
    issuer: TokenIssuer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # silence stderr
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _basic(self) -> tuple[str | None, str | None, bool]:
        """(username, password, present)."""
        auth = self.headers.get("Authorization")
        if not auth:
            return None, None, False
        kind, _, val = auth.partition(" ")
        if kind.lower() != "basic":
            return None, None, True
        try:
            user, _, pw = base64.b64decode(val).decode().partition(":")
        except Exception:
            return None, None, True
        return user, pw, True

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        user, pw, present = self._basic()
        self._handle("GET", url.path, user, pw, present, q.get("service", [None])[0],
                     q.get("scope", []), None)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode()) if length else {}
        grant = form.get("grant_type", [None])[0]
        scopes: list[str] = []
        for s in form.get("scope", []):
            scopes.extend(s.split())
        user = pw = None
        present = False
        if grant == "password":
            user, pw, present = form.get("username", [None])[0], form.get("password", [None])[0], True
        elif grant == "refresh_token":
            user = self.issuer.refresh_tokens.get(form.get("refresh_token", [""])[0])
            pw, present = self.issuer.users.get(user) if user else None, True
        elif grant is not None:
            self._record("POST", url.path, None, form.get("service", [None])[0], scopes, [], 400, grant)
            self._send(400, b'{"error":"unsupported_grant_type"}')
            return
        self._handle("POST", url.path, user, pw, present, form.get("service", [None])[0], scopes, grant)

    def _record(self, method, path, user, service, scopes, access, status, grant=None) -> None:
        iss = self.issuer
        rec = TokenRequest(
            method=method, path=self.path, username=user, service=service,
            requested=list(scopes),
            granted=[format_scope(a["type"], a["name"], a["actions"]) for a in access],
            access=access, status=status, headers=dict(self.headers.items()), grant_type=grant,
        )
        with iss._lock:
            iss.requests.append(rec)

    def _handle(self, method, path, user, pw, present, service, scopes, grant) -> None:
        iss = self.issuer
        with iss._lock:
            fail = iss._fail.pop(0) if iss._fail else None
        if fail is not None:
            status, headers, body = fail
            self._record(method, path, user, service, scopes, [], status, grant)
            self._send(status, body, headers)
            return
        if path.rstrip("/") != "/token":
            self._record(method, path, user, service, scopes, [], 404, grant)
            self._send(404, b'{"error":"not found"}')
            return
        if present and (user is None or iss.users.get(user) != pw):
            self._record(method, path, user, service, scopes, [], 401, grant)
            self._send(401, b'{"details":"invalid credentials"}',
                       {"WWW-Authenticate": 'Basic realm="harness-token-issuer"'})
            return
        access = iss._grant(user, pw, scopes)
        token = iss.issue(user, access, service)
        body = {
            "token": token,
            "access_token": token,
            "expires_in": iss.expires_in,
            "issued_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self._record(method, path, user, service, scopes, access, 200, grant)
        self._send(200, json.dumps(body).encode())
