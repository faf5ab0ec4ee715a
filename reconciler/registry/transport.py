"""HTTP to one registry: scheme and TLS choice, retries, safe redirects, bounded answers, registry warnings.

Authentication sits one layer up (``auth.py``); this module moves requests, turns
every network failure into a RegistryError that says whether another try might cure
it, and retries the requests it can replay (``retry.py`` has the policy). Every
answer that is not a streamed blob is read by ``read_body`` (``body.py``), within its cap
(``limits.py``); credentials go only to their own origin (``origin.py``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from urllib.parse import urlencode
from typing import Any

import httpx

from reconciler.oci import limits
from reconciler.registry.body import ReleasingStream, read_body
from reconciler.registry.engine import AiohttpTransport, NameNotResolved, ProxyAuthenticationRequired, TLSFailure
from reconciler.registry.errors import RegistryError
from reconciler.registry.limiter import AdaptiveLimit, Slot
from reconciler.registry.options import TransportOptions, tls_trust
from reconciler.registry.origin import follow, same_origin
from reconciler.registry.retry import RetryPolicy, TransientError, retry_after, retrying, worth_retrying

log = logging.getLogger("reconciler.registry")

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def with_query(url: str, params: Mapping[str, str] | Sequence[tuple[str, str]]) -> str:
    """``url`` with ``params`` added to whatever query it has (a token realm may carry one)."""
    return url + ("&" if "?" in url else "?") + urlencode(params)


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
                response.stream = ReleasingStream(
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

