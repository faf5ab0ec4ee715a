"""HTTP to one registry: scheme and TLS choice, retries, safe redirects, bounded answers, registry warnings.

Authentication sits one layer up (``auth.py``); this module moves requests, turns
every network failure into a RegistryError that says whether another try might cure
it, and retries the requests it can replay (``retry.py`` has the policy). Every
answer that is not a streamed blob is read by ``read_body``, within its cap
(``limits.py``); credentials go only to their own origin (``origin.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from urllib.parse import urlencode
from typing import Any

import attrs
import httpx

from reconciler.oci import limits
from reconciler import files
from reconciler.registry.engine import AiohttpTransport, NameNotResolved, ProxyAuthenticationRequired, TLSFailure
from reconciler.registry.errors import RegistryError
from reconciler.registry.limiter import AdaptiveLimit, Slot
from reconciler.registry.origin import follow, same_origin
from reconciler.registry.proxy import DIRECT, ProxySettings
from reconciler.oci.reference import hostname, is_loopback
from reconciler.registry.retry import (
    RetryPolicy, TransientError, retry_after, retrying, worth_retrying,
)

log = logging.getLogger("reconciler.registry")

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@attrs.frozen
class TransportOptions:
    """Connection settings shared by every registry of a run."""

    ca_file: str | None = None
    insecure_registries: frozenset[str] = frozenset()
    retry: RetryPolicy = RetryPolicy()
    # The ceiling of requests in flight per registry; the limit below it adapts (limiter.py).
    max_connections: int = 64
    chunk_size: int | None = None
    # Seconds without progress (connecting, sending or receiving) before a request is given up.
    timeout: float = 60.0
    user_agent: str = "image-syncer"
    proxies: ProxySettings = DIRECT

    def allows_plain_http(self, host: str) -> bool:
        """Loopback hosts and those named with --insecure-registry may speak plain HTTP."""
        return self.is_insecure(host) or is_loopback(host)

    def is_insecure(self, host: str) -> bool:
        return host in self.insecure_registries or hostname(host) in self.insecure_registries


def with_query(url: str, params: Mapping[str, str] | Sequence[tuple[str, str]]) -> str:
    """``url`` with ``params`` added to whatever query it has (a token realm may carry one)."""
    return url + ("&" if "?" in url else "?") + urlencode(params)


@functools.cache
def tls_trust(verify: bool, ca_file: str | None) -> ssl.SSLContext | bool:
    """What the engine verifies with, one per setting for the whole run (a CA bundle takes tens of ms to load).

    The system's CAs, as the Go original and docker trust them (OpenSSL's paths, so
    SSL_CERT_FILE and SSL_CERT_DIR apply); aiohttp loads that context already. Where
    the system has no CA store at all, certifi's bundle.
    """
    if not verify:
        return False
    if ca_file:
        try:
            bundle = files.read_text(ca_file)
            if bundle.strip():  # an empty one would mean the system's CAs to create_default_context
                return ssl.create_default_context(cadata=bundle)
        except (UnicodeDecodeError, ssl.SSLError):
            pass
        except FileNotFoundError:
            raise RegistryError(f"CA file {ca_file}: file not found") from None
        except OSError as error:
            raise RegistryError(f"CA file {ca_file}: cannot read: {error.strerror or error}") from None
        raise RegistryError(f"CA file {ca_file}: not a bundle of PEM certificates")
    if _system_has_cas():
        return True
    return httpx.create_ssl_context(verify=True, trust_env=False)  # certifi's bundle


def _system_has_cas() -> bool:
    paths = ssl.get_default_verify_paths()
    return bool(
        (paths.cafile and os.path.isfile(paths.cafile))
        or (paths.capath and os.path.isdir(paths.capath) and any(os.scandir(paths.capath)))
    )


class _RetryableAnswer(TransientError):
    """An answer with a retry status; the last one is handed to the caller, body read."""

    def __init__(self, message: str, response: httpx.Response) -> None:
        super().__init__(message, retry_after(response))
        self.response = response


class Transport:
    """One pooled HTTP client for one registry host."""

    def __init__(self, host: str, options: TransportOptions) -> None:
        self.host = host
        self._options = options
        self._insecure = options.is_insecure(host)
        self._plain_http_allowed = options.allows_plain_http(host)
        self._engine = AiohttpTransport(
            tls_trust(verify=not self._insecure, ca_file=options.ca_file),
            max_connections=options.max_connections,
            proxies=options.proxies,
        )
        self._default_headers = {"User-Agent": options.user_agent}
        self._extensions = {"timeout": {
            "connect": min(options.timeout, 10.0), "read": options.timeout, "write": options.timeout,
        }}
        # The requests in flight to the host; a streamed answer holds its slot until closed.
        self.limit = AdaptiveLimit(options.max_connections, name=host)
        self._scheme: str | None = None
        self._scheme_lock = asyncio.Lock()
        self._warned: set[str] = set()

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._options.retry

    @property
    def scheme(self) -> str | None:
        """``https`` or ``http`` once the first request has found out; None before."""
        return self._scheme

    @property
    def options(self) -> TransportOptions:
        return self._options

    async def aclose(self) -> None:
        if self.limit.peak:
            log.debug("%s: at most %d requests in flight; limit %d after %d cuts", self.host, self.limit.peak,
                      int(self.limit.limit), self.limit.cuts)
        await self._engine.aclose()

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
        except TLSFailure as error:
            if error.certificate and not self._insecure:
                raise self._failure(error, "GET", f"https://{self.host}/v2/") from None
            return "http"
        except httpx.TransportError:
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
        credentials_for: str | None = None,
        idempotent: bool | None = None,
        limit: int | None = None,
    ) -> httpx.Response:
        """Send; retry what can be replayed; follow redirects without leaking credentials.

        ``auth_header`` is the Authorization value for the origin of ``credentials_for``
        (this registry's unless said: a token realm says itself); it is never sent to
        another origin, whether a redirect or the caller's URL points there.
        ``idempotent`` (by default: GET, HEAD and PUT) says the request may be sent
        again after its answer was lost. A streamed body cannot be, so its failures
        are raised for the caller, who restarts the whole operation. A retry status
        that outlasts the budget is returned, body read, for the caller to report.
        Unless ``stream=True``, the body is read within bounds (``read_body``): a
        successful answer's up to ``limit``, past which it is refused, any other only
        for its message. With ``stream=True`` the caller must close the response; it
        holds one of the host's slots until then.
        """
        if idempotent is None:
            idempotent = method in _IDEMPOTENT_METHODS
        replayable = idempotent and not isinstance(content, AsyncIterator)
        given_for = httpx.URL(credentials_for or await self.base_url()) if auth_header else None

        async def attempt() -> httpx.Response:
            return await self._attempt(method, url, headers, content, stream, auth_header, given_for, limit,
                                       retry_statuses=replayable)

        if not replayable:
            return await attempt()
        try:
            return await retrying(self._options.retry, attempt, f"{self.host}: {method} {_path(url)}")
        except _RetryableAnswer as last:
            return last.response

    async def _attempt(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        content: bytes | AsyncIterator[bytes] | None,
        stream: bool,
        auth_header: str | None,
        given_for: httpx.URL | None,
        limit: int | None,
        retry_statuses: bool,
    ) -> httpx.Response:
        slot = await self.limit.acquire()
        release_on_close = False
        where = f"{self.host}: {method} {_path(url)}"
        try:
            response = await self._send_following_redirects(method, url, headers, content, auth_header, given_for, slot)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s%s -> %s", method, self.host, _path(url), response.status_code)
            self._show_warnings(response)
            if retry_statuses and worth_retrying(response):
                await read_body(response, None, where)
                raise _RetryableAnswer(f"{where}: HTTP {response.status_code}", response)
            if stream:
                response.stream = _ReleasingStream(
                    response.stream, slot.release, functools.partial(self._failure, method=method, url=url)
                )
                release_on_close = True
            else:
                await read_body(response, limit, where)
            return response
        except httpx.TransportError as error:
            failure = self._failure(error, method, url)
            if failure.transient:
                slot.lost()
            raise failure from None
        finally:
            if not release_on_close:
                slot.release()

    def _failure(self, error: httpx.TransportError, method: str, url: str) -> RegistryError:
        """One line for the user; transient unless another try cannot help (TLS, DNS, a proxy's refusal)."""
        target = httpx.URL(url)
        host = self.host if target.netloc.decode("ascii", "replace") == self.host else target.host
        where = f"{self.host}: {method} {_path(url)}" if host == self.host else f"{self.host}: {method} {url.split('?', 1)[0]}"
        if isinstance(error, TLSFailure) and error.certificate:
            return RegistryError(f"{host}: TLS certificate not trusted ({error}); pass --ca-file")
        if isinstance(error, TLSFailure):
            return RegistryError(
                f"{host}: TLS handshake failed ({error}); if it serves plain HTTP, pass --insecure-registry {host}"
            )
        if isinstance(error, NameNotResolved):
            return RegistryError(f"{host}: host name not found ({error})")
        if isinstance(error, ProxyAuthenticationRequired):
            return RegistryError(f"{self.host}: {error}")
        if isinstance(error, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)):
            return RegistryError(f"{where}: {error}")
        return TransientError(f"{where}: {error}")

    async def _send_following_redirects(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        content: bytes | AsyncIterator[bytes] | None,
        auth_header: str | None,
        given_for: httpx.URL | None,
        slot: Slot,
    ) -> httpx.Response:
        """The final answer, body unread. A streamed body is spent once sent, so it never follows a redirect.

        The host's own answer (the first) is what ``slot`` learns from; where a redirect leads is another host.
        ``auth_header`` goes only to the origin of ``given_for`` (``origin.py``).
        """
        current = httpx.URL(url)
        request_headers = {**self._default_headers, **(headers or {})}
        for hop in range(limits.REDIRECTS + 1):
            sent_headers = dict(request_headers)
            if auth_header and given_for and same_origin(current, given_for):
                sent_headers["Authorization"] = auth_header
            response = await self._send(method, current, sent_headers, content)
            if hop == 0:
                slot.answered(response.status_code, timed=not isinstance(content, AsyncIterator))
            if (
                response.status_code not in _REDIRECTS
                or "Location" not in response.headers
                or isinstance(content, AsyncIterator)
            ):
                return response
            await response.aclose()
            current = follow(current, response.headers["Location"], f"{self.host}: {method} {_path(url)}: redirect")
            if response.status_code == 303:  # "see other": a GET of that, without our body
                method, content = "GET", None
                request_headers = {
                    name: value for name, value in request_headers.items()
                    if name.lower() not in ("content-length", "content-type")
                }
        raise RegistryError(f"{self.host}: {method} {_path(url)}: more than {limits.REDIRECTS} redirects")

    async def _send(
        self, method: str, url: httpx.URL, headers: dict[str, str], content: bytes | AsyncIterator[bytes] | None
    ) -> httpx.Response:
        """One exchange; the response's body is left unread."""
        request = httpx.Request(method, url, headers=headers, content=content, extensions=self._extensions)
        response = await self._engine.handle_async_request(request)
        response.request = request
        return response

    def _show_warnings(self, response: httpx.Response) -> None:
        """Registries use ``Warning: 299`` to announce deprecations; the user should see them."""
        for value in response.headers.get_list("Warning"):
            text = _warning_text(value)
            if text and text not in self._warned:
                self._warned.add(text)
                log.warning("%s: registry warning: %s", self.host, text)


async def read_body(response: httpx.Response, limit: int | None, where: str) -> None:
    """Read the body into ``response.content`` within bounds, then close the response.

    A successful answer whose body the caller uses (``limit`` given) is refused past
    ``limit``, before reading when Content-Length says so. Any other body is read only
    for its message: up to ``limits.ERROR_BODY_BYTES``, the rest left unread (the
    connection is closed, not drained). The bytes are taken as sent, never decoded (we
    ask for no Content-Encoding), so nothing grows past the cap after it is counted.
    """
    used = limit is not None and response.is_success
    cap = limit if used else limits.ERROR_BODY_BYTES
    try:
        length = limits.header_number(response.headers.get("Content-Length"))
        if used and length is not None and length > cap:
            raise RegistryError(f"{where}: the answer is {length} bytes, over the {limits.size(cap)} limit")
        body = bytearray()
        async with contextlib.aclosing(response.aiter_raw()) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > cap:
                    if used:
                        raise RegistryError(f"{where}: the answer is over the {limits.size(cap)} limit")
                    del body[cap:]
                    break
        response._content = bytes(body)  # what aread() would have set, had it read this far
    finally:
        await response.aclose()


class _ReleasingStream(httpx.AsyncByteStream):
    """A streamed body that gives its slot back when closed, and fails as a RegistryError."""

    def __init__(
        self,
        stream: httpx.AsyncByteStream,
        release: Callable[[], None],
        failure: Callable[[httpx.TransportError], RegistryError],
    ) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release
        self._failure = failure

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except httpx.TransportError as error:
            raise self._failure(error) from None

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
    """The path of an absolute URL, without its query: for messages, so string work, not a URL parse."""
    after_scheme = url.partition("://")[2]
    return "/" + after_scheme.partition("/")[2].partition("?")[0]

