"""Registry authentication: ``WWW-Authenticate`` challenges, Basic credentials, bearer tokens.

There is no ``/v2/`` ping: the first request to a registry goes alone and without
credentials, and its answer (a 401 with a challenge, or anything else) says what the
registry wants, so a registry that wants nothing costs no extra request. Tokens are
cached per set of scopes until shortly before they expire, so a run of thousands of
requests asks the token service once per repository and action.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlencode

import attrs
import httpx

from reconciler.oci import limits
from reconciler.registry.credentials import Credentials, CredentialSource, basic_authorization
from reconciler.registry.errors import RegistryError
from reconciler.registry.retry import TransientError, worth_retrying
from reconciler.registry.transport import Transport, with_query

_DEFAULT_TOKEN_LIFETIME = 60.0
_EXPIRY_MARGIN = 10.0
_CHALLENGE_START = re.compile(r"\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s+|$)")
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)')


@attrs.frozen
class Challenge:
    scheme: str
    realm: str | None = None
    service: str | None = None
    scopes: tuple[str, ...] = ()
    error: str | None = None


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``WWW-Authenticate``; a header may hold several challenges, each with params."""
    challenges = []
    rest = header
    while rest.strip():
        start = _CHALLENGE_START.match(rest)
        if not start:
            break
        scheme = start.group(1).lower()
        rest = rest[start.end():]
        params: dict[str, str] = {}
        while True:
            param = _PARAM.match(rest)
            if not param:
                break
            value = param.group(2) if param.group(2) is not None else param.group(3)
            params[param.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            rest = rest[param.end():]
        challenges.append(Challenge(
            scheme=scheme,
            realm=params.get("realm"),
            service=params.get("service"),
            scopes=tuple(params["scope"].split()) if params.get("scope") else (),
            error=params.get("error"),
        ))
    return challenges


def repository_scope(path: str, *actions: str) -> str:
    return f"repository:{path}:{','.join(actions)}"


def pull_scopes(path: str) -> tuple[str, ...]:
    return (repository_scope(path, "pull"),)


def push_scopes(path: str, mount_from: str | None = None) -> tuple[str, ...]:
    scopes = (repository_scope(path, "pull", "push"),)
    if mount_from and mount_from != path:
        scopes += (repository_scope(mount_from, "pull"),)
    return scopes


def delete_scopes(path: str) -> tuple[str, ...]:
    """Distribution's token servers grant a manifest DELETE only for the ``delete`` action."""
    return (repository_scope(path, "pull", "delete"),)


def _merge_scopes(*groups: Iterable[str]) -> tuple[str, ...]:
    """Union keeping first-seen order, so the push scope stays first."""
    seen: dict[str, None] = {}
    for group in groups:
        for scope in group:
            seen.setdefault(scope, None)
    return tuple(seen)


@attrs.define
class _Token:
    value: str = attrs.field(repr=False)
    expires_at: float


class Authenticator:
    """Authorization headers for one registry, learned from its challenge."""

    def __init__(self, transport: Transport, credentials: CredentialSource) -> None:
        self._transport = transport
        self._credentials = credentials
        self._challenge: Challenge | None = None
        self._basic: str | None = None
        """Basic credentials do not expire within a run: looked up once, not per request."""
        # Set once an exchange has shown whether (and how) the registry wants credentials.
        self._learned = False
        self._learning = asyncio.Lock()
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._token_locks: dict[tuple[str, ...], asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def first_exchange(self) -> AsyncIterator[None]:
        """Around a request and its retry: until one completes, requests go one at a time."""
        first = False
        if not self._learned:
            await self._learning.acquire()
            first = not self._learned
            if not first:
                self._learning.release()
        try:
            yield
            if first:
                self._learned = True
        finally:
            if first:
                self._learning.release()

    async def credentials(self) -> Credentials | None:
        """A source may refresh a token over the network, so it runs off the event loop."""
        return await asyncio.to_thread(self._credentials)

    async def authorization(self, scopes: tuple[str, ...]) -> str | None:
        """The header for these scopes; None while the registry has asked for nothing."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return await self._basic_header()
        if challenge.scheme == "bearer":
            return f"Bearer {await self._token(scopes)}"
        raise RegistryError(f"{self._transport.host}: unsupported authentication scheme {challenge.scheme!r}")

    async def retry_authorization(self, response: httpx.Response, scopes: tuple[str, ...]) -> str | None:
        """After a 401: learn the new challenge, drop the stale token, widen the scopes if asked."""
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        if not challenges:
            return None
        self._challenge = challenges[0]
        if self._challenge.scheme == "bearer":
            wanted = _merge_scopes(scopes, self._challenge.scopes)
            self._tokens.pop(wanted, None)
            self._tokens.pop(scopes, None)
            return f"Bearer {await self._token(wanted)}"
        if self._challenge.scheme == "basic":
            return await self._basic_header()
        return None

    async def _basic_header(self) -> str | None:
        if self._basic is None:
            self._basic = _basic_value(await self.credentials())
        return self._basic

    async def _token(self, scopes: tuple[str, ...]) -> str:
        lock = self._token_locks.setdefault(scopes, asyncio.Lock())
        async with lock:
            token = self._tokens.get(scopes)
            if token is None or token.expires_at <= time.monotonic():
                token = await self._fetch_token(scopes)
                self._tokens[scopes] = token
            return token.value

    async def _fetch_token(self, scopes: tuple[str, ...]) -> _Token:
        challenge = self._challenge
        assert challenge is not None and challenge.scheme == "bearer"
        if not challenge.realm:
            raise RegistryError(f"{self._transport.host}: bearer challenge without a realm")
        self._check_realm(challenge.realm)
        credentials = await self.credentials()
        if credentials is not None and credentials.identity_token:
            response = await self._transport.request(
                "POST",
                challenge.realm,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                content=urlencode({
                    "grant_type": "refresh_token",
                    "refresh_token": credentials.identity_token,
                    "service": challenge.service or "",
                    "scope": " ".join(scopes),
                    "client_id": "image-syncer",
                }).encode(),
                idempotent=True,  # a second token is as good as the first
                limit=limits.TOKEN_BYTES,
            )
        else:
            query = [("service", challenge.service)] if challenge.service else []
            query += [("scope", scope) for scope in scopes]
            url = with_query(challenge.realm, query)
            # Fresh credentials each time: a Google access token behind them expires within the hour.
            response = await self._transport.request(
                "GET", url, auth_header=_basic_value(credentials), credentials_for=url, limit=limits.TOKEN_BYTES,
            )
        if response.status_code in (401, 403):
            who = "the given credentials" if credentials else "anonymous access"
            raise RegistryError(
                f"{self._transport.host}: token service {_without_query(challenge.realm)} refused "
                f"{who} (HTTP {response.status_code}) for {' '.join(scopes) or 'registry access'}"
            )
        if response.status_code != 200:
            failure = TransientError if worth_retrying(response) else RegistryError
            raise failure(
                f"{self._transport.host}: token service {_without_query(challenge.realm)} "
                f"answered HTTP {response.status_code}"
            )
        try:
            body = limits.parse_json(response.content)
            value = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError, OverflowError):
            value = None
        if not value or not isinstance(value, str):
            raise RegistryError(
                f"{self._transport.host}: token service {_without_query(challenge.realm)} gave no token"
            )
        if not math.isfinite(lifetime):  # "inf" or "nan": the token's word on its lifetime is no word
            lifetime = _DEFAULT_TOKEN_LIFETIME
        return _Token(value=value, expires_at=time.monotonic() + max(lifetime - _EXPIRY_MARGIN, 1.0))


    def _check_realm(self, realm: str) -> None:
        """Our credentials go to a token service over TLS, or over plain HTTP only where the user allowed it.

        A plain-HTTP realm is accepted only for a loopback registry or one named with
        --insecure-registry, and, when that registry itself speaks TLS, only if the
        realm's host is loopback or named too (as go-containerregistry refuses a
        realm that downgrades the scheme).
        """
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL:
            raise RegistryError(f"{self._transport.host}: token realm is not a URL") from None
        if url.scheme == "https":
            return
        host = self._transport.host
        options = self._transport.options
        if url.scheme == "http" and options.allows_plain_http(host):
            realm_host = url.netloc.decode("ascii", "replace")
            if self._transport.scheme == "http" or options.allows_plain_http(realm_host):
                return
        raise RegistryError(
            f"{host}: refusing token service {_without_query(realm)}: not https "
            f"(allowed only for a loopback registry or one named with --insecure-registry)"
        )


def _basic_value(credentials: Credentials | None) -> str | None:
    if credentials is None or credentials.username is None or credentials.password is None:
        return None
    return basic_authorization(credentials.username, credentials.password)


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]
