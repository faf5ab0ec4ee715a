"""httpcore on plain asyncio streams, and the httpx transport that uses it.

httpcore's default asyncio backend goes through anyio, which costs CPU on every
request: a cancel scope around each read and write, and ``get_extra_info`` (asked
for every idle connection on every request, to spot connections the server closed)
rebuilds a dict of socket attributes each time. On loopback that overhead was most
of a no-op run's CPU. This backend talks to asyncio streams directly; the transport
maps httpx requests to httpcore and httpcore errors to httpx ones exactly as
``httpx.AsyncHTTPTransport`` does.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import typing
from collections.abc import AsyncIterator, Iterable

import httpcore
import httpx

# Stream buffer size; reading pauses above twice this. httpcore reads 64 KiB at a time.
_STREAM_LIMIT = 1 << 18
# As anyio's connect_tcp: try the next address of a name after this long.
_HAPPY_EYEBALLS_DELAY = 0.25


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP (optionally TLS) connection as an asyncio reader/writer pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._transport = writer.transport
        raw = writer.get_extra_info("socket")
        self._poller: select.poll | None = None
        if raw is not None and raw.fileno() >= 0:
            self._poller = select.poll()
            self._poller.register(raw.fileno(), select.POLLIN)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline = asyncio.timeout(timeout) if timeout is not None else None
        try:
            if deadline is None:
                return await self._reader.read(max_bytes)
            async with deadline:
                return await self._reader.read(max_bytes)
        except OSError as error:  # TimeoutError included
            if deadline is not None and deadline.expired():
                raise httpcore.ReadTimeout(error) from error
            raise httpcore.ReadError(error) from error

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        deadline = asyncio.timeout(timeout) if timeout is not None else None
        try:
            self._writer.write(buffer)
            if deadline is None:
                await self._writer.drain()
            else:
                async with deadline:
                    await self._writer.drain()
        except OSError as error:  # TimeoutError included
            if deadline is not None and deadline.expired():
                raise httpcore.WriteTimeout(error) from error
            raise httpcore.WriteError(error) from error

    async def aclose(self) -> None:
        transport = self._transport
        if transport.is_closing():
            return
        if transport.get_extra_info("sslcontext") is not None:
            # Like anyio's TLS stream (standard_compatible=False): no close_notify exchange.
            transport.abort()
            return
        # Like anyio's socket stream: close (sends what is buffered), one pass of the
        # event loop, then drop whatever a peer that does not read left unsent.
        transport.close()
        await asyncio.sleep(0)
        transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException as error:
            self._transport.abort()
            if isinstance(error, OSError):  # ssl.SSLError and TimeoutError included
                if deadline.expired():
                    raise httpcore.ConnectTimeout(error) from error
                raise httpcore.ConnectError(error) from error
            raise
        return AsyncioStream(self._reader, self._writer)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            return self._is_readable()
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None

    def _is_readable(self) -> bool:
        """Whether a read would return at once: for an idle connection, that the server closed it.

        asyncio reads the socket as data arrives, so first the stream's own state
        (end of stream, an error, a closed transport), then the socket itself for
        what has arrived since the event loop last looked.
        """
        reader = self._reader
        if reader.at_eof() or reader.exception() is not None or self._transport.is_closing():
            return True
        if self._poller is None:
            return True
        return bool(self._poller.poll(0))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    limit=_STREAM_LIMIT,
                    local_addr=(local_address, 0) if local_address else None,
                    happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY,
                )
        except OSError as error:  # socket.gaierror and TimeoutError included
            if deadline.expired():
                raise httpcore.ConnectTimeout(error) from error
            raise httpcore.ConnectError(error) from error
        # asyncio already sets TCP_NODELAY.
        if socket_options:
            sock = writer.get_extra_info("socket")
            for option in socket_options:
                sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# httpcore exception -> httpx exception; the most specific match wins, as in httpx.
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
)


def _httpx_error(error: Exception) -> httpx.HTTPError | None:
    mapped: type[httpx.HTTPError] | None = None
    for from_type, to_type in _EXCEPTIONS:
        if isinstance(error, from_type) and (mapped is None or issubclass(to_type, mapped)):
            mapped = to_type
    return None if mapped is None else mapped(str(error))


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as error:
            mapped = _httpx_error(error)
            if mapped is None:
                raise
            raise mapped from error

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class AsyncioHTTPTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncHTTPTransport`` (HTTP/1.1, no proxy) on :class:`AsyncioBackend`."""

    def __init__(self, verify: ssl.SSLContext | bool, limits: httpx.Limits) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=AsyncioBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core_request)
        except Exception as error:
            mapped = _httpx_error(error)
            if mapped is None:
                raise
            raise mapped from error
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

