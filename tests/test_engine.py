"""reconciler/registry/engine.py: aiohttp behind httpx's transport API.

Which httpx error each aiohttp failure becomes decides whether retry.py tries again, so the table
is tested entry by entry on plain exception values; then, against raw-socket servers, what the
adapter adds to aiohttp: a body left unread closes its connection, a body read whole keeps it,
a stalled upload times out while a slow one does not, and aiohttp never sends a request again.
(The same behaviours seen through Transport, with retries, are in test_transport.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
import yarl
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict, CIMultiDictProxy

from reconciler.registry.engine import (
    AiohttpTransport,
    NameNotResolved,
    ProxyAuthenticationRequired,
    TLSFailure,
    translate,
)
from tests.harness.rawserver import Connection, RawServer, keep_answering
from tests.helpers_clients import run

KEY = ConnectionKey(host="registry.example", port=443, is_ssl=True, ssl=True, proxy=None, proxy_auth=None,
                    proxy_headers_hash=None, server_hostname=None)
REQUEST = aiohttp.RequestInfo(yarl.URL("http://registry.example/v2/"), "GET", CIMultiDictProxy(CIMultiDict()))


def with_cause(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


class DigestMismatch(Exception):
    """What our own streamed request body raises when a source blob is not what it claimed."""


# --- the translation table -----------------------------------------------------------------


@pytest.mark.parametrize(("error", "expected_type", "message"), [
    pytest.param(aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLCertVerificationError(1, "self-signed")),
                 TLSFailure, "self-signed", id="certificate"),
    pytest.param(aiohttp.ClientConnectorSSLError(KEY, with_cause(OSError("x"), ssl.SSLError(1, "W"))),
                 TLSFailure, None, id="tls handshake"),
    pytest.param(aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "Name or service not known")),
                 NameNotResolved, None, id="dns"),
    pytest.param(aiohttp.ClientProxyConnectionError(KEY, ConnectionRefusedError(111, "refused")),
                 httpx.ProxyError, None, id="proxy unreachable"),
    pytest.param(aiohttp.ConnectionTimeoutError(), httpx.ConnectTimeout, "timed out connecting",
                 id="connect timeout"),
    pytest.param(aiohttp.SocketTimeoutError(), httpx.ReadTimeout, "timed out waiting for the registry",
                 id="read timeout"),
    pytest.param(aiohttp.ServerTimeoutError(), httpx.ReadTimeout, "timed out waiting for the registry",
                 id="server timeout"),
    pytest.param(asyncio.TimeoutError(), httpx.ReadTimeout, "timed out waiting for the registry",
                 id="asyncio timeout"),
    pytest.param(aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connection refused")),
                 httpx.ConnectError, None, id="refused"),
    pytest.param(aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError,
                 "the server closed the connection without answering", id="disconnected"),
    pytest.param(with_cause(aiohttp.ClientPayloadError("Response payload is not completed"),
                            aiohttp.http_exceptions.ContentLengthError("short")),
                 httpx.RemoteProtocolError, "the answer ended early (ContentLengthError)", id="payload cut"),
    pytest.param(aiohttp.ClientPayloadError("Response payload is not completed"), httpx.RemoteProtocolError,
                 "the answer ended early (Response payload is not completed)", id="payload cut, no cause"),
    pytest.param(aiohttp.InvalidURL("http://[::1"), httpx.UnsupportedProtocol, "http://[::1", id="invalid url"),
    pytest.param(aiohttp.ClientResponseError(REQUEST, (), status=400, message="Invalid constant string"),
                 httpx.RemoteProtocolError, "malformed answer: Invalid constant string", id="not http"),
    pytest.param(aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.NetworkError,
                 "[Errno 104] Connection reset by peer", id="reset"),
    pytest.param(ConnectionResetError(104, "reset"), httpx.NetworkError, "[Errno 104] reset", id="bare os error"),
    pytest.param(aiohttp.ClientError(), httpx.TransportError, "ClientError", id="anything else"),
])
def test_each_aiohttp_failure_becomes_the_httpx_error_that_says_what_happened(error, expected_type, message):
    translated = translate(error)
    assert type(translated) is expected_type
    if message is not None:
        assert str(translated) == message


def test_a_certificate_failure_says_so_and_a_handshake_failure_gives_the_ssl_reason():
    """insecureRegistries is the cure for one, not the other: the message must tell them apart."""
    certificate = translate(aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLCertVerificationError("bad")))
    handshake_cause = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    handshake_cause.reason = "WRONG_VERSION_NUMBER"
    handshake = translate(aiohttp.ClientConnectorSSLError(KEY, handshake_cause))

    assert certificate.certificate is True
    assert handshake.certificate is False
    assert str(handshake) == "WRONG_VERSION_NUMBER"


def test_an_error_of_our_own_request_body_comes_out_as_itself():
    """aiohttp wraps what a streamed body raised in a connection error; the caller needs the cause."""
    mismatch = DigestMismatch("blob sha256:abc is not what it claimed")
    assert translate(with_cause(aiohttp.ClientOSError("write failed"), mismatch)) is mismatch


@pytest.mark.parametrize("cause", [ConnectionResetError(104, "reset"), aiohttp.ClientPayloadError("x"),
                                   asyncio.TimeoutError(), KeyboardInterrupt()])
def test_a_network_cause_is_not_taken_for_our_own(cause):
    assert isinstance(translate(with_cause(aiohttp.ClientOSError(104, "reset"), cause)), httpx.NetworkError)


def test_the_proxy_refusals_are_proxy_errors_so_they_are_not_retried_as_the_registrys():
    assert issubclass(ProxyAuthenticationRequired, httpx.ProxyError)
    assert issubclass(TLSFailure, httpx.ConnectError) and issubclass(NameNotResolved, httpx.ConnectError)


# --- against a raw server ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def engine_to(script, max_connections: int = 4) -> AsyncIterator[tuple[RawServer, AiohttpTransport]]:
    async with RawServer(script) as server:
        transport = AiohttpTransport(tls=False, max_connections=max_connections)
        try:
            yield server, transport
        finally:
            await transport.aclose()


def request(server: RawServer, method: str = "GET", path: str = "/v2/", timeout: dict | None = None,
            **options) -> httpx.Request:
    built = httpx.Request(method, f"http://{server.host}{path}", **options)
    built.extensions["timeout"] = timeout or {"connect": 5.0, "read": 5.0, "write": 5.0}
    return built


def test_a_body_read_to_its_end_leaves_the_connection_for_the_next_request():
    async def main():
        async with engine_to(keep_answering) as (server, transport):
            for _ in range(3):
                response = await transport.handle_async_request(request(server))
                assert b"".join([chunk async for chunk in response.stream]) == b"ok"
                await response.aclose()
            return server

    server = run(main())
    assert len(server.requests) == 3
    assert server.connections == 1


def test_a_body_closed_before_its_end_closes_its_connection_unread():
    """Draining a 10 MB answer nobody wants to reuse a connection costs more than a new one."""
    closed: list[bool] = []

    async def script(connection: Connection) -> None:
        request_ = await connection.read_request()
        if request_.target.endswith("/big"):
            await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 65536)
            closed.append(await connection.client_closed(timeout=10))
        else:
            await connection.answer(200, b"small")

    async def main():
        async with engine_to(script) as (server, transport):
            response = await transport.handle_async_request(request(server, path="/v2/big"))
            chunks = response.stream.__aiter__()  # held, so only aclose (not its finalizer) may close it
            assert await chunks.__anext__()
            await response.aclose()
            for _ in range(100):
                if closed:
                    break
                await asyncio.sleep(0.05)
            closed_while_open = list(closed)  # before the transport's own close would close it anyway
            small = await transport.handle_async_request(request(server, path="/v2/small"))
            body = b"".join([chunk async for chunk in small.stream])
            await small.aclose()
            del chunks
            return server, body, closed_while_open

    server, body, closed_while_open = run(main())
    assert closed_while_open == [True]
    assert body == b"small"
    assert server.connections == 2


def test_an_answer_cut_short_while_streaming_is_a_remote_protocol_error():
    async def script(connection: Connection) -> None:
        await connection.read_request()
        await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        connection.close()

    async def main():
        async with engine_to(script) as (server, transport):
            response = await transport.handle_async_request(request(server))
            with pytest.raises(httpx.RemoteProtocolError, match="^the answer ended early"):
                async for _ in response.stream:
                    pass

    run(main())


def test_a_lost_answer_is_not_sent_again_by_aiohttp():
    """retry.py alone decides to try again: aiohttp's own replay on a reused connection is off."""
    async def script(connection: Connection) -> None:
        await connection.read_request()
        await connection.answer(200, b"first")
        await connection.read_request()
        connection.close()  # the second request is taken and never answered

    async def main():
        async with engine_to(script) as (server, transport):
            first = await transport.handle_async_request(request(server))
            assert b"".join([chunk async for chunk in first.stream]) == b"first"
            await first.aclose()
            with pytest.raises(httpx.RemoteProtocolError, match="closed the connection without answering"):
                await transport.handle_async_request(request(server, "PUT", content=b"manifest"))
            return server

    server = run(main())
    assert [request_.method for request_ in server.requests] == ["GET", "PUT"]
    assert server.connections == 1


def test_only_the_headers_the_caller_set_are_sent():
    """aiohttp would add Accept, Accept-Encoding and User-Agent; an Accept decides which manifest comes."""
    async def main():
        async with engine_to(keep_answering) as (server, transport):
            response = await transport.handle_async_request(request(server, headers={"X-Asked": "1"}))
            await response.aclose()
            return server

    headers = run(main()).requests[0].headers
    assert headers["x-asked"] == "1"
    assert not {"accept", "accept-encoding", "user-agent"} & set(headers)


def test_a_scheme_other_than_http_or_https_is_refused_before_connecting():
    async def main():
        transport = AiohttpTransport(tls=False, max_connections=1)
        try:
            with pytest.raises(httpx.UnsupportedProtocol, match="'ftp'"):
                await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1:1/v2/"))
        finally:
            await transport.aclose()

    run(main())


# --- the write-stall guard -----------------------------------------------------------------


def reads_the_head_then_nothing():
    async def script(connection: Connection) -> None:
        await connection.reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(60)

    return script


async def endless_layer() -> AsyncIterator[bytes]:
    chunk = bytes(1 << 20)
    while True:
        yield chunk


def test_an_upload_the_server_stops_reading_is_abandoned_as_a_write_timeout():
    async def main():
        async with engine_to(reads_the_head_then_nothing()) as (server, transport):
            stalled = request(server, "PUT", content=endless_layer(), headers={"Content-Length": str(1 << 40)},
                              timeout={"connect": 5.0, "read": 60.0, "write": 0.3})
            with pytest.raises(httpx.WriteTimeout, match=r"^sending the body stalled for 0.3s$"):
                await transport.handle_async_request(stalled)

    run(main())


def test_an_upload_slower_than_the_write_timeout_in_total_but_never_stalled_completes():
    """The timeout bounds a pause between chunks, not a whole transfer: a large layer may take hours."""
    chunks = 12

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(chunks):
            await asyncio.sleep(0.1)
            yield b"x" * 1000

    async def main():
        async with engine_to(keep_answering) as (server, transport):
            slow = request(server, "PUT", content=trickle(), headers={"Content-Length": str(chunks * 1000)},
                           timeout={"connect": 5.0, "read": 30.0, "write": 0.6})
            response = await transport.handle_async_request(slow)
            await response.aclose()
            return server, response.status_code

    server, status = run(main())
    assert status == 200
    assert server.requests[0].body == b"x" * (chunks * 1000)


def test_a_registry_slow_to_answer_once_the_whole_body_is_sent_is_no_write_stall():
    """Verifying a pushed layer takes the registry a while; that wait is a read, bounded by the read timeout."""
    async def verifies_slowly(connection: Connection) -> None:
        await connection.read_request()
        await asyncio.sleep(1.0)
        await connection.answer(201)

    async def one_chunk() -> AsyncIterator[bytes]:
        yield b"layer"

    async def main():
        async with engine_to(verifies_slowly) as (server, transport):
            upload = request(server, "PUT", content=one_chunk(), headers={"Content-Length": "5"},
                             timeout={"connect": 5.0, "read": 30.0, "write": 0.2})
            response = await transport.handle_async_request(upload)
            await response.aclose()
            return response.status_code

    assert run(main()) == 201


def test_an_error_raised_by_our_request_body_reaches_the_caller_as_itself():
    async def failing_layer() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise DigestMismatch("the source blob was not what it claimed")

    async def main():
        async with engine_to(reads_the_head_then_nothing()) as (server, transport):
            upload = request(server, "PUT", content=failing_layer(), headers={"Content-Length": "5000"})
            with pytest.raises(DigestMismatch):
                await transport.handle_async_request(upload)

    run(main())
