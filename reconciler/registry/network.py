"""A small HTTP/1.1 client on asyncio streams and h11, as an httpx transport.

httpcore's pool rescans every connection on every request and on every completion,
asks each idle one whether the server closed it, and takes anyio locks and events in
the pool and in each connection: most of a no-op run's CPU on loopback. ``Transport``
already caps the requests in flight per host at its number of connections, so nothing
here ever queues: per origin, a stack of idle keep-alive connections is all the pool
there is.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import h11
import httpx

# Stream buffer size; reading pauses above twice this.
_STREAM_LIMIT = 1 << 18
_READ_SIZE = 1 << 16
# As anyio's connect_tcp: try the next address of a name after this long.
_HAPPY_EYEBALLS_DELAY = 0.25
_DEFAULT_PORTS = {b"http": 80, b"https": 443}

_Origin = tuple[bytes, bytes, int]


class _StaleConnection(Exception):
    """A reused keep-alive connection turned out closed before the server saw the request."""


class _Connection:
    """One TCP (optionally TLS) connection: an asyncio reader/writer pair and its h11 state."""

    __slots__ = ("reader", "writer", "h11", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

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
    """HTTP/1.1 without proxies; idle keep-alive connections kept per origin, newest reused first."""

    def __init__(self, verify: ssl.SSLContext | bool, limits: httpx.Limits) -> None:
        self._ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
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
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                reader, writer = await asyncio.open_connection(
                    hostname,
                    port,
                    limit=_STREAM_LIMIT,
                    ssl=self._ssl_context if tls else None,
                    server_hostname=hostname if tls else None,
                    happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY,
                )
        except OSError as error:  # socket.gaierror, ssl errors and TimeoutError included
            if deadline.expired():
                raise httpx.ConnectTimeout(str(error)) from error
            raise httpx.ConnectError(str(error)) from error
        connection = _Connection(reader, writer)
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
                head = conn.send(h11.Request(method=request.method, target=request.url.raw_path,
                                             headers=request.headers.raw))
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
