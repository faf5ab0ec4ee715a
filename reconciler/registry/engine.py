"""aiohttp's connection pool behind httpx's transport API.

httpx's Request and Response stay our interface; aiohttp moves the bytes (pooling,
keep-alive, CONNECT tunnels, HTTP parsing in C). It spends about a sixth of
httpcore's client CPU per request. The ``httpx-aiohttp`` package does the same
adaptation but takes one proxy per transport and folds DNS, TLS and disconnect
errors into one "connect" error, and which failure happened is what decides a
retry here, so this module keeps that mapping itself.

aiohttp would send a GET, HEAD or PUT once more by itself after a dropped connection;
that is turned off, so ``retry.py`` stays the only place that decides to try again (a
replayed upload commit, say, meets a session the registry already closed).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterable, AsyncIterator

import aiohttp
import httpx
import yarl

from reconciler.registry.proxy import DIRECT, ProxySettings

_DEFAULT_PORTS = {"http": 80, "https": 443}
# aiohttp's own defaults would send headers we never asked for; the caller sets what matters.
_SKIPPED_DEFAULT_HEADERS = ("Accept", "Accept-Encoding", "User-Agent")


class ProxyAuthenticationRequired(httpx.ProxyError):
    """The proxy wants other credentials: asking again will not change its mind."""


class TLSFailure(httpx.ConnectError):
    """The TLS handshake failed; ``certificate`` says whether verification was the cause."""

    def __init__(self, message: str, certificate: bool) -> None:
        super().__init__(message)
        self.certificate = certificate


class NameNotResolved(httpx.ConnectError):
    """DNS knows no such host."""


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 through one aiohttp session; the proxy is chosen per request by ``ProxySettings``."""

    def __init__(
        self, tls: ssl.SSLContext | bool, max_connections: int, proxies: ProxySettings = DIRECT
    ) -> None:
        """``tls``: a context, True for aiohttp's own (the system's CAs), False to verify nothing."""
        self._tls = tls
        self._max_connections = max_connections
        self._proxies = proxies
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        """Made on first use: aiohttp binds a session to the running event loop."""
        connector = aiohttp.TCPConnector(ssl=self._tls, limit=0, limit_per_host=self._max_connections)
        session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIPPED_DEFAULT_HEADERS,
            auto_decompress=False,  # bytes are verified against digests exactly as sent
        )
        # No public switch; aiohttp's own test client turns its replay off the same way.
        session._retry_connection = False
        self._session = session
        return session

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open_session()
        url = request.url
        if url.scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        proxy = self._proxies.for_origin(url.scheme, url.host, url.port or _DEFAULT_PORTS[url.scheme])
        timeouts = request.extensions.get("timeout", {})
        arguments = {
            "headers": [(name, value) for name, value in request.headers.multi_items() if name != "transfer-encoding"],
            "allow_redirects": False,
            "timeout": _client_timeout(timeouts.get("connect"), timeouts.get("read")),
        }
        if proxy is not None:
            arguments["proxy"] = f"http://{proxy.address}"
            if proxy.authorization:
                arguments["proxy_headers"] = {"Proxy-Authorization": proxy.authorization}
        target = yarl.URL(str(url), encoded=True)
        stall = None
        try:
            if isinstance(request.stream, httpx.ByteStream):
                response = await session.request(request.method, target, data=request.content or None, **arguments)
            else:
                stall = _StallGuard(timeouts.get("write"))
                async with stall:
                    response = await session.request(request.method, target, data=stall.watch(request.stream),
                                                     **arguments)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            if stall is not None and stall.expired:
                raise httpx.WriteTimeout(f"sending the body stalled for {stall.timeout:g}s") from error
            if isinstance(error, aiohttp.ClientHttpProxyError) and proxy is not None:
                refusal = ProxyAuthenticationRequired if error.status == 407 else httpx.ProxyError
                raise refusal(f"proxy {proxy.address} refused CONNECT {url.netloc.decode('ascii')}: "
                              f"HTTP {error.status} {error.message}") from error
            raise translate(error) from error
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseBody(response),
            extensions={"reason_phrase": (response.reason or "").encode("latin-1", "replace")},
        )


@functools.lru_cache(maxsize=8)
def _client_timeout(connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    """Connecting (TCP, TLS, a proxy's CONNECT) and each wait for the registry are bounded; a whole transfer is not."""
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=read)


class _StallGuard:
    """A write timeout aiohttp lacks: a streamed body with no progress for ``timeout`` seconds is abandoned."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.expired = False
        self._deadline: asyncio.Timeout | None = None

    async def __aenter__(self) -> _StallGuard:
        self._deadline = asyncio.timeout(None)
        await self._deadline.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> bool | None:
        deadline, self._deadline = self._deadline, None
        try:
            return await deadline.__aexit__(*exc_info)  # type: ignore[union-attr, arg-type]
        finally:
            self.expired = deadline.expired()  # type: ignore[union-attr]

    async def watch(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        async for chunk in chunks:
            # The request runs on while aiohttp writes the body; the head may arrive first.
            if self.timeout is not None and self._deadline is not None:
                self._deadline.reschedule(loop.time() + self.timeout)
            yield chunk
        if self._deadline is not None:
            self._deadline.reschedule(None)


class _ResponseBody(httpx.AsyncByteStream):
    """A response body read from aiohttp; closing it early closes the connection instead of reusing it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            self._response.close()
            raise translate(error) from error
        except BaseException:
            self._response.close()
            raise

    async def aclose(self) -> None:
        """A body read to its end frees the connection for reuse; one left unread closes it, never drained."""
        if self._response.content.is_eof():
            self._response.release()
        else:
            self._response.close()


def translate(error: BaseException) -> BaseException:
    """An aiohttp failure as the httpx error that says what happened, or what our body stream raised.

    aiohttp wraps an exception raised by a streamed request body (a source blob that
    failed its digest, say) into a connection error; that cause is what the caller
    needs, not the wrapper.
    """
    cause = error.__cause__
    if (
        isinstance(error, aiohttp.ClientConnectionError)
        and isinstance(cause, Exception)
        and not isinstance(cause, (OSError, aiohttp.ClientError, asyncio.TimeoutError))
    ):
        return cause
    message = str(error) or type(error).__name__
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return TLSFailure(str(error.certificate_error), certificate=True)
    if isinstance(error, (aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError)):
        return TLSFailure(_ssl_reason(error), certificate=False)
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return NameNotResolved(message)
    if isinstance(error, aiohttp.ClientProxyConnectionError):
        return httpx.ProxyError(message)
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout("timed out connecting")
    if isinstance(error, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout("timed out waiting for the registry")
    if isinstance(error, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError("the server closed the connection without answering")
    if isinstance(error, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(f"the answer ended early ({_payload_reason(error)})")
    if isinstance(error, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return httpx.UnsupportedProtocol(message)
    if isinstance(error, aiohttp.ClientResponseError):  # an answer that is not HTTP
        return httpx.RemoteProtocolError(f"malformed answer: {error.message}")
    if isinstance(error, (aiohttp.ClientOSError, OSError)):
        return httpx.NetworkError(message)
    return httpx.TransportError(message)


def _ssl_reason(error: aiohttp.ClientError) -> str:
    """The SSL library's reason (WRONG_VERSION_NUMBER, ...), not aiohttp's wrapper text."""
    inner = getattr(error, "os_error", None) or error.__cause__
    return getattr(inner, "reason", None) or str(inner or error)


def _payload_reason(error: aiohttp.ClientPayloadError) -> str:
    cause = error.__cause__ or (error.args[1] if len(error.args) > 1 else None)
    return type(cause).__name__ if isinstance(cause, BaseException) else (str(error) or "truncated")
