"""A small HTTP/1.1 client on asyncio streams and h11, as an httpx transport.

httpcore's pool rescans every connection on every request and on every completion,
asks each idle one whether the server closed it, and takes anyio locks and events in
the pool and in each connection: most of a no-op run's CPU on loopback. ``Transport``
already caps the requests in flight per host at its number of connections, so nothing
here ever queues: per origin, a stack of idle keep-alive connections is all the pool
there is. Through an HTTP proxy, an https origin gets a CONNECT tunnel with TLS inside
it, and an http origin's requests go to the proxy in absolute form.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import h11
import httpx

from reconciler.registry.proxy import DIRECT, Proxy, ProxySettings
from reconciler.registry.reference import host_port

# Stream buffer size; reading pauses above twice this.
_STREAM_LIMIT = 1 << 18
_READ_SIZE = 1 << 16
# As anyio's connect_tcp: try the next address of a name after this long.
_HAPPY_EYEBALLS_DELAY = 0.25
_DEFAULT_PORTS = {b"http": 80, b"https": 443}

_Origin = tuple[bytes, bytes, int]


class ProxyAuthenticationRequired(httpx.ProxyError):
    """The proxy wants other credentials: asking again will not change its mind."""


class _StaleConnection(Exception):
    """A reused keep-alive connection turned out closed before the server saw the request."""


class _Connection:
    """One TCP (optionally TLS) connection: an asyncio reader/writer pair and its h11 state."""

    __slots__ = ("forwarding_proxy", "h11", "idle_since", "reader", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, forwarding_proxy: Proxy | None = None
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        # Set for plain http through a proxy: requests name their absolute URL.
        self.forwarding_proxy = forwarding_proxy

    def closed_by_peer(self) -> bool:
        reader = self.reader
        return reader.at_eof() or reader.exception() is not None or self.writer.transport.is_closing()

    def close(self) -> None:
        # abort, not close: nothing worth flushing is left, and a closing transport would
        # wait for a peer that does not read.
        self.writer.transport.abort()

    async def read(self, timeout: float | None) -> bytes:
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await self.reader.read(_READ_SIZE)
        except OSError as error:  # ssl.SSLError and TimeoutError included
            if deadline.expired():
                raise httpx.ReadTimeout(str(error)) from error
            raise httpx.ReadError(str(error)) from error

    async def write(self, data: bytes, timeout: float | None) -> None:
        if not data:
            return
        deadline = asyncio.timeout(timeout)
        try:
            self.writer.write(data)
            async with deadline:
                await self.writer.drain()
        except OSError as error:  # TimeoutError included
            if deadline.expired():
                raise httpx.WriteTimeout(str(error)) from error
            raise httpx.WriteError(str(error)) from error


class AsyncioHTTPTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1, direct or through an HTTP proxy; idle keep-alive connections per origin, newest reused first."""

    def __init__(
        self, ssl_context: ssl.SSLContext, limits: httpx.Limits, proxies: ProxySettings = DIRECT
    ) -> None:
        self._ssl_context = ssl_context
        self._proxies = proxies
        self._max_idle = limits.max_keepalive_connections
        self._keepalive_expiry = limits.keepalive_expiry
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme.decode('ascii', 'replace')!r}")
        origin = (scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme])
        timeouts = request.extensions.get("timeout", {})
        # httpx keeps a bytes body (and no body) as a ByteStream, already read: replayable.
        body = request.content if isinstance(request.stream, httpx.ByteStream) else None
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await self._exchange(origin, connection, request, body, timeouts, reused=True)
            except _StaleConnection:
                pass
        connection = await self._connect(origin, timeouts.get("connect"))
        return await self._exchange(origin, connection, request, body, timeouts, reused=False)

    async def aclose(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            expired = (
                self._keepalive_expiry is not None
                and time.monotonic() - connection.idle_since > self._keepalive_expiry
            )
            if not expired and not connection.closed_by_peer():
                return connection
            self._discard(connection)
        return None

    def _release(self, origin: _Origin, connection: _Connection) -> None:
        """Keep a connection whose last exchange completed, unless enough are idle already."""
        if connection not in self._open:  # the transport was closed meanwhile
            connection.close()
            return
        idle = self._idle.setdefault(origin, [])
        if self._max_idle is not None and len(idle) >= self._max_idle:
            self._discard(connection)
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        hostname = host.decode("ascii")
        tls = scheme == b"https"
        proxy = self._proxies.for_origin(scheme.decode("ascii"), hostname, port)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                if proxy is None:
                    reader, writer = await asyncio.open_connection(
                        hostname,
                        port,
                        limit=_STREAM_LIMIT,
                        ssl=self._ssl_context if tls else None,
                        server_hostname=hostname if tls else None,
                        happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY,
                    )
                else:
                    reader, writer = await asyncio.open_connection(
                        proxy.host, proxy.port, limit=_STREAM_LIMIT, happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY
                    )
                    if tls:
                        await _open_tunnel(reader, writer, proxy, host_port(hostname, port))
                        await writer.start_tls(self._ssl_context, server_hostname=hostname)
        except OSError as error:  # socket.gaierror, ssl errors and TimeoutError included
            if deadline.expired():
                raise httpx.ConnectTimeout(str(error)) from error
            if proxy is not None:
                raise httpx.ProxyError(f"via proxy {proxy.address}: {error}") from error
            raise httpx.ConnectError(str(error)) from error
        connection = _Connection(reader, writer, forwarding_proxy=proxy if proxy and not tls else None)
        self._open.add(connection)
        return connection

    async def _exchange(
        self,
        origin: _Origin,
        connection: _Connection,
        request: httpx.Request,
        body: bytes | None,
        timeouts: dict[str, float | None],
        reused: bool,
    ) -> httpx.Response:
        """Send the request and read the response head; the body is left to the response stream.

        On a reused connection, a failure to send or an end of stream before any
        response byte means the server had closed it: ``_StaleConnection``, if the
        request can be sent again (its body not partly consumed).
        """
        conn = connection.h11
        write_timeout = timeouts.get("write")
        read_timeout = timeouts.get("read")
        body_started = False
        received = False
        try:
            try:
                target, headers = request.url.raw_path, request.headers.raw
                if connection.forwarding_proxy is not None:
                    target, headers = _absolute_form(origin, target, headers, connection.forwarding_proxy)
                head = conn.send(h11.Request(method=request.method, target=target, headers=headers))
                if body is not None:
                    await connection.write(head + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()),
                                           write_timeout)
                else:
                    await connection.write(head, write_timeout)
                    body_started = True
                    async for chunk in request.stream:  # type: ignore[union-attr]
                        await connection.write(conn.send(h11.Data(data=chunk)), write_timeout)
                    await connection.write(conn.send(h11.EndOfMessage()), write_timeout)
            except httpx.WriteError:
                if reused and not body_started:
                    raise _StaleConnection from None
                # As httpcore: a server may answer (say, 413) and close before taking the whole body.
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        data = await connection.read(read_timeout)
                    except httpx.ReadError:
                        if reused and not body_started and not received:
                            raise _StaleConnection from None
                        raise
                    if not data and not received:
                        if reused and not body_started:
                            raise _StaleConnection
                        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
                    received = True
                    conn.receive_data(data)
                elif type(event) is h11.Response:
                    break
                elif type(event) is not h11.InformationalResponse:
                    raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} before the response")
        except h11.LocalProtocolError as error:
            self._discard(connection)
            raise httpx.LocalProtocolError(str(error)) from error
        except h11.RemoteProtocolError as error:
            self._discard(connection)
            raise httpx.RemoteProtocolError(str(error)) from error
        except BaseException:
            self._discard(connection)
            raise
        return httpx.Response(
            status_code=event.status_code,
            headers=event.headers.raw_items(),
            stream=_ResponseStream(self, origin, connection, read_timeout),
            extensions={"http_version": b"HTTP/" + event.http_version, "reason_phrase": event.reason},
        )


def _absolute_form(
    origin: _Origin, path: bytes, headers: list[tuple[bytes, bytes]], proxy: Proxy
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A request to a forwarding proxy names the whole URL, and our credentials for the proxy."""
    scheme, host, port = origin
    target = b"%b://%b%b" % (scheme, host_port(host.decode("ascii"), port).encode("ascii"), path)
    if proxy.authorization:
        headers = [*headers, (b"Proxy-Authorization", proxy.authorization.encode("ascii"))]
    return target, headers


async def _open_tunnel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proxy: Proxy, authority: str
) -> None:
    """CONNECT through the proxy; a refusal is a ProxyError naming its status, never our credentials."""
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    await writer.drain()
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.transport.abort()
        raise httpx.ProxyError(f"proxy {proxy.address} closed the connection on CONNECT {authority}") from None
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].startswith("2"):
        writer.transport.abort()
        refusal = ProxyAuthenticationRequired if parts[1:2] == ["407"] else httpx.ProxyError
        raise refusal(f"proxy {proxy.address} refused CONNECT {authority}: {status_line}")


class _ResponseStream(httpx.AsyncByteStream):
    """A response body as h11 parses it; its connection is kept for reuse only if the exchange completed."""

    def __init__(
        self, transport: AsyncioHTTPTransport, origin: _Origin, connection: _Connection, timeout: float | None
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._connection: _Connection | None = connection
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        conn = connection.h11
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await connection.read(self._timeout))
                elif type(event) is h11.Data:
                    yield bytes(event.data)
                else:  # EndOfMessage: h11 raises on anything else here
                    break
        except h11.RemoteProtocolError as error:
            self._finish()
            raise httpx.RemoteProtocolError(str(error)) from error
        except BaseException:
            self._finish()
            raise
        self._finish()

    async def aclose(self) -> None:
        self._finish()

    def _finish(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        conn = connection.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self._transport._release(self._origin, connection)
        else:
            self._transport._discard(connection)
