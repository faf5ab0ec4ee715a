"""HTTP to one registry: scheme and TLS choice, retries, safe redirects, registry warnings.

Authentication sits one layer up (``auth.py``); this module only moves requests and
decides which failures are worth another try.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import attrs
import httpx

from reconciler.registry.errors import RegistryError
from reconciler.registry.network import AsyncioHTTPTransport, ProxyAuthenticationRequired
from reconciler.registry.proxy import DIRECT, ProxySettings
from reconciler.registry.reference import hostname, is_loopback

log = logging.getLogger("reconciler.registry")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_REDIRECTS = 5
_MAX_RETRY_AFTER = 60.0


class TransientError(RegistryError):
    """A failure that another try might cure (retries exhausted, or the body was a stream)."""


@attrs.frozen
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Capped exponential backoff with full jitter; a server's Retry-After wins."""
        if retry_after is not None:
            return min(retry_after, _MAX_RETRY_AFTER)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


@attrs.frozen
class TransportOptions:
    """Connection settings shared by every registry of a run."""

    ca_file: str | None = None
    insecure_registries: frozenset[str] = frozenset()
    retry: RetryPolicy = RetryPolicy()
    # Enough to hide a remote registry's latency without crowding one registry.
    max_connections: int = 8
    chunk_size: int | None = None
    timeout: float = 60.0
    user_agent: str = "image-syncer"
    proxies: ProxySettings = DIRECT


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@functools.cache
def _tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """One per setting for the whole run: loading a CA bundle costs tens of milliseconds."""
    if not verify:
        return httpx.create_ssl_context(verify=False, trust_env=False)
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return httpx.create_ssl_context(verify=True, trust_env=False)


def _is_certificate_error(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, ssl.SSLCertVerificationError):
            return True
        error = error.__cause__ or error.__context__
    return False


class Transport:
    """One pooled HTTP client for one registry host."""

    def __init__(self, host: str, options: TransportOptions) -> None:
        self.host = host
        self._options = options
        self._insecure = host in options.insecure_registries or hostname(host) in options.insecure_registries
        self._plain_http_allowed = self._insecure or is_loopback(host)
        limits = httpx.Limits(
            max_connections=options.max_connections,
            max_keepalive_connections=options.max_connections,
        )
        # Requests go straight to the pool: httpx's client layer (cookie jar, URL merging,
        # redirect and auth hooks we do not use) cost a fifth of a no-op plan's CPU, and
        # httpcore's pool bookkeeping most of the rest before network.py replaced it.
        self._network = AsyncioHTTPTransport(
            _tls_context(verify=not self._insecure, ca_file=options.ca_file), limits=limits, proxies=options.proxies
        )
        self._default_headers = {"User-Agent": options.user_agent}
        self._extensions = {"timeout": httpx.Timeout(options.timeout, connect=10.0).as_dict()}
        # The transport never queues: it opens a connection for every request that finds
        # none idle, so this is what caps the connections to the host.
        self._slots = asyncio.Semaphore(options.max_connections)
        self._scheme: str | None = None
        self._scheme_lock = asyncio.Lock()
        self._warned: set[str] = set()

    async def aclose(self) -> None:
        await self._network.aclose()

    async def base_url(self) -> str:
        """``https://host``, or ``http://host`` for a loopback or insecure host that speaks no TLS."""
        if self._scheme is None:
            async with self._scheme_lock:
                if self._scheme is None:
                    self._scheme = await self._probe_scheme()
        return f"{self._scheme}://{self.host}"

    async def _probe_scheme(self) -> str:
        if not self._plain_http_allowed:
            return "https"
        try:
            response = await self._send("GET", httpx.URL(f"https://{self.host}/v2/"), self._default_headers, None)
            await response.aclose()
            return "https"
        except httpx.TransportError as error:
            if _is_certificate_error(error) and not self._insecure:
                raise RegistryError(
                    f"{self.host}: TLS certificate not trusted ({error}); pass --ca-file"
                ) from None
            return "http"

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        stream: bool = False,
        auth_header: Any = None,
    ) -> httpx.Response:
        """Send with retries for transient failures; follow redirects without leaking credentials.

        ``auth_header`` is the Authorization value for this host; it is never sent to
        another origin a redirect points at. With ``stream=True`` the caller must close
        the response. A streamed body cannot be replayed, so its failures are not retried
        here but raised as TransientError for the caller to restart the whole transfer.
        A request holds one of the host's slots until its response is read or closed.
        """
        replayable = content is None or isinstance(content, bytes)
        policy = self._options.retry
        attempt = 0
        while True:
            await self._slots.acquire()
            try:
                response = await self._send_following_redirects(method, url, headers, content, stream, auth_header)
            except BaseException as error:
                self._slots.release()
                if isinstance(error, ProxyAuthenticationRequired):
                    raise RegistryError(f"{self.host}: {error}") from None
                if not isinstance(error, httpx.TransportError):
                    raise
                if not replayable or attempt + 1 >= policy.attempts:
                    raise TransientError(f"{self.host}: {method} {_path(url)}: {_describe(error)}") from None
                delay = policy.delay(attempt, None)
                log.debug("%s %s: %s, retrying in %.1fs", method, _path(url), _describe(error), delay)
            else:
                if stream:
                    response.stream = _ReleasingStream(response.stream, self._slots.release)
                else:
                    self._slots.release()
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s %s%s -> %s", method, self.host, _path(url), response.status_code)
                self._show_warnings(response)
                if response.status_code not in RETRY_STATUSES:
                    return response
                if not replayable or attempt + 1 >= policy.attempts:
                    return response
                delay = policy.delay(attempt, _retry_after(response))
                await response.aclose()
                log.debug("%s %s: HTTP %s, retrying in %.1fs", method, _path(url), response.status_code, delay)
            attempt += 1
            await asyncio.sleep(delay)

    async def _send_following_redirects(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        content: bytes | AsyncIterator[bytes] | None,
        stream: bool,
        auth_header: str | None,
    ) -> httpx.Response:
        origin = httpx.URL(url)
        current = origin
        for _ in range(MAX_REDIRECTS + 1):
            request_headers = {**self._default_headers, **(headers or {})}
            if auth_header and _same_origin(current, origin):
                request_headers["Authorization"] = auth_header
            response = await self._send(method, current, request_headers, content)
            if response.status_code not in (301, 302, 303, 307, 308) or "Location" not in response.headers:
                if not stream:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
                return response
            await response.aclose()
            current = current.join(response.headers["Location"])
            if response.status_code == 303:
                method, content = "GET", None
        raise RegistryError(f"{self.host}: {method} {_path(url)}: more than {MAX_REDIRECTS} redirects")

    async def _send(
        self, method: str, url: httpx.URL, headers: dict[str, str], content: bytes | AsyncIterator[bytes] | None
    ) -> httpx.Response:
        """One exchange; the response's body is left unread."""
        request = httpx.Request(method, url, headers=headers, content=content, extensions=self._extensions)
        response = await self._network.handle_async_request(request)
        response.request = request
        return response

    def _show_warnings(self, response: httpx.Response) -> None:
        """Registries use ``Warning: 299`` to announce deprecations; the user should see them."""
        for value in response.headers.get_list("Warning"):
            text = _warning_text(value)
            if text and text not in self._warned:
                self._warned.add(text)
                log.warning("%s: registry warning: %s", self.host, text)


class _ReleasingStream(httpx.AsyncByteStream):
    """A streamed body that gives its connection slot back when the response is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._release is not None:
                self._release, release = None, self._release
                release()


def _warning_text(value: str) -> str:
    parts = value.split(" ", 2)
    if len(parts) == 3 and parts[0].isdigit():
        text = parts[2].strip()
        if text.startswith('"'):
            text = text[1:].split('"', 1)[0]
        return text
    return value.strip()


def _path(url: str) -> str:
    parsed = httpx.URL(url)
    return parsed.raw_path.decode("ascii", "replace").split("?", 1)[0]


def _describe(error: httpx.TransportError) -> str:
    return str(error) or type(error).__name__
