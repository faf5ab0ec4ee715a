"""A loopback server that writes exact bytes: for the transport's behaviour at the edges of HTTP.

Each connection runs a scripted coroutine (``script(connection)``) in the test's
own event loop. ``Connection.read_request`` parses just enough HTTP/1.1 (a head,
then a Content-Length or chunked body) to let a script answer, or not, as a flaky
network or a hostile server would.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class RawRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which connection (1, 2, ...) carried it


@dataclass
class Connection:
    number: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: RawServer
    last_method: str = ""

    async def read_request(self) -> RawRequest | None:
        """The next request on this connection; None when the client closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        elif headers.get("content-length"):
            body = await self.reader.readexactly(int(headers["content-length"]))
        self.last_method = method
        request = RawRequest(method, target, headers, body, self.number)
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """A complete answer to the last request (its body left out for a HEAD)."""
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Whatever')}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if self.last_method == "HEAD":
            body = b""
        await self.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    async def client_closed(self, timeout: float = 5.0) -> bool:
        """Whether the client closed its end within ``timeout`` (anything it still sends is discarded)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
            return True
        except (TimeoutError, ConnectionError):
            return False

    def close(self) -> None:
        self.writer.close()


Script = Callable[[Connection], Awaitable[None]]


@dataclass
class RawServer:
    """``async with RawServer(script) as server``: listening on 127.0.0.1 at ``server.port``."""

    script: Script
    ssl_context: ssl.SSLContext | None = None
    requests: list[RawRequest] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task] = field(default_factory=set)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        self.connections += 1
        connection = Connection(self.connections, reader, writer, self)
        try:
            if self.ssl_context is not None:
                await writer.start_tls(self.ssl_context)
            await self.script(connection)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client left, or the test is over
        finally:
            writer.close()


async def keep_answering(connection: Connection, body: bytes = b"ok") -> None:
    """A well-behaved keep-alive server: answer every request with 200 and ``body``."""
    while await connection.read_request() is not None:
        await connection.answer(200, body)


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 303: "See Other", 401: "Unauthorized",
            404: "Not Found", 408: "Request Timeout", 503: "Service Unavailable"}
