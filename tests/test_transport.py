"""The transport (reconciler/registry/transport.py): first the edges of HTTP, with raw-socket servers that
write exact bytes, then scheme, TLS, redirects and warnings against real docker-registry processes.

Each numbered case of issue 9 (a stale answer on an idle connection, a body sent
twice, retries of what cannot be cured, credentials to a plain-HTTP token realm, a
303 that kept its Content-Length, a CONNECT that timed out), then what any client
must get right: keep-alive, truncated and chunked answers, timeouts, cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from reconciler.oci import reference
from reconciler.oci.reference import is_loopback
from reconciler.registry.client import RegistryClient
from reconciler.registry.credentials import Credentials
from reconciler.registry.errors import RegistryError
from reconciler.registry.options import TransportOptions
from reconciler.registry.proxy import ProxySettings
from reconciler.registry.retry import RetryPolicy, TransientError
from reconciler.registry.transport import Transport
from tests.harness.forward_proxy import ForwardProxy
from tests.harness.rawserver import Connection, RawServer, keep_answering
from tests.harness.registry import PROXIED_NAME
from tests.helpers_clients import FAST_RETRY, assert_same_image, mirror, registries, run

def transport(server: RawServer, **options) -> Transport:
    options.setdefault("retry", FAST_RETRY)
    return Transport(server.host, TransportOptions(**options))


@contextlib.asynccontextmanager
async def serving(script, **options) -> AsyncIterator[tuple[RawServer, Transport]]:
    """A raw server on loopback and a transport to it, both closed at the end."""
    async with RawServer(script) as server:
        client = transport(server, **options)
        try:
            yield server, client
        finally:
            await client.aclose()


def cut_short(announced: int, sent: int):
    """A server whose answer announces ``announced`` body bytes, sends ``sent``, and hangs up."""

    async def script(connection: Connection) -> None:
        await connection.read_request()
        await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % announced + b"x" * sent)
        connection.close()

    return script


def url(server: RawServer, path: str = "/v2/") -> str:
    return f"http://{server.host}{path}"


async def one_chunk_at_a_time(*chunks: bytes):
    for chunk in chunks:
        yield chunk


@pytest.fixture(scope="module")
def tls_ca():
    return trustme.CA()


@dataclasses.dataclass
class Proxied:
    """A raw server reached by PROXIED_NAME through a forward proxy, and the options that get there."""

    host: str
    proxy: ForwardProxy
    options: TransportOptions


@pytest.fixture
def proxied_tls(tls_ca, tmp_path):
    """A server context for PROXIED_NAME, and ``proxy_to(server, trusted=True) -> Proxied``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert(PROXIED_NAME).configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    started: list[ForwardProxy] = []

    def proxy_to(server: RawServer, trusted: bool = True) -> Proxied:
        host = f"{PROXIED_NAME}:{server.port}"
        proxy = ForwardProxy({host: server.host}).start()
        started.append(proxy)
        options = TransportOptions(retry=FAST_RETRY, ca_file=str(ca_file) if trusted else None,
                                   proxies=ProxySettings.from_environment({"HTTPS_PROXY": proxy.url}))
        return Proxied(host, proxy, options)

    yield context, proxy_to
    for proxy in started:
        proxy.stop()


async def failure_of(host: str, options: TransportOptions) -> RegistryError:
    """The error a GET of ``https://host/v2/`` ends in."""
    client = Transport(host, options)
    try:
        with pytest.raises(RegistryError) as raised:
            await client.request("GET", f"https://{host}/v2/")
    finally:
        await client.aclose()
    return raised.value


# -- 1. a stale answer on an idle connection ---------------------------------------------------


def test_an_idle_connection_the_server_closed_with_a_408_is_not_used_for_a_streamed_upload():
    async def script(connection: Connection) -> None:
        if connection.number == 1:
            await connection.read_request()
            await connection.answer(200)
            await asyncio.sleep(0.05)
            await connection.send(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            connection.close()
        else:
            while (request := await connection.read_request()) is not None:
                await connection.answer(201, request.body)

    async def main():
        async with serving(script) as (server, client):
            await client.request("GET", url(server))
            await asyncio.sleep(0.3)
            response = await client.request(
                "PUT", url(server, "/upload"), content=one_chunk_at_a_time(b"layer ", b"bytes"),
                headers={"Content-Length": "11"},
            )
            return response, server

    response, server = run(main())
    assert (response.status_code, response.content) == (201, b"layer bytes")
    assert [(r.method, r.connection) for r in server.requests] == [("GET", 1), ("PUT", 2)]


# -- 2. a body is never sent twice --------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PATCH", "PUT"])
def test_a_request_body_whose_answer_was_lost_is_not_sent_again(method):
    """Not by us, and not by aiohttp either (it would replay a PUT, an upload's commit say, by itself)."""
    async def script(connection: Connection) -> None:
        await connection.read_request()  # the GET that makes this a reused keep-alive connection
        await connection.answer(200)
        await connection.read_request()  # the whole body arrives; the answer never does
        connection.close()

    async def main():
        async with serving(script) as (server, client):
            await client.request("GET", url(server))
            with pytest.raises(TransientError, match="closed the connection without answering"):
                await client.request(method, url(server, "/v2/r/blobs/uploads/x"), content=b"chunk bytes",
                                     idempotent=False)
            return server

    server = run(main())
    assert [r.method for r in server.requests] == ["GET", method]


# -- 3. what another try cannot cure is tried once ----------------------------------------------


def test_an_untrusted_certificate_is_one_line_and_never_retried(proxied_tls):
    context, proxy_to = proxied_tls

    async def main():
        async with RawServer(keep_answering, ssl_context=context) as server:
            proxied = proxy_to(server, trusted=False)
            return await failure_of(proxied.host, proxied.options), proxied.proxy

    error, proxy = run(main())
    assert not error.transient
    assert str(error).startswith(f"{PROXIED_NAME}:") and "TLS certificate not trusted" in str(error)
    assert "pass --ca-file" in str(error)
    assert [c.method for c in proxy.connections] == ["CONNECT"]


def test_plain_http_where_tls_was_expected_names_insecure_registry(proxied_tls):
    _context, proxy_to = proxied_tls

    async def plain_http(connection: Connection) -> None:
        await connection.reader.read(1024)  # a ClientHello, as a request line it is garbage
        await connection.send(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")

    async def main():
        async with RawServer(plain_http) as server:
            proxied = proxy_to(server)
            return await failure_of(proxied.host, proxied.options), proxied.host, proxied.proxy

    error, host, proxy = run(main())
    assert not error.transient
    assert "TLS handshake failed" in str(error) and f"--insecure-registry {host}" in str(error)
    assert len(proxy.connections) == 1


def test_an_unknown_host_name_is_one_line_and_never_retried(caplog):
    with caplog.at_level(logging.DEBUG, logger="reconciler.registry"):
        error = run(failure_of("registry.invalid", TransportOptions(retry=FAST_RETRY)))
    assert not error.transient
    assert str(error).startswith("registry.invalid: host name not found")
    assert "try 2 of" not in caplog.text


def test_a_client_error_is_not_retried_but_a_retry_status_is_with_retry_after():
    answers = iter([(503, {"Retry-After": "0"}), (429, {}), (200, {}), (400, {})])

    async def script(connection: Connection) -> None:
        while await connection.read_request() is not None:
            status, headers = next(answers)
            await connection.answer(status, b"{}", headers)

    async def main():
        async with serving(script) as (server, client):
            first = await client.request("GET", url(server))
            second = await client.request("GET", url(server))
            return first, second, server

    first, second, server = run(main())
    assert (first.status_code, second.status_code) == (200, 400)
    assert len(server.requests) == 4


def test_a_retry_status_that_outlasts_the_budget_is_returned_with_its_body():
    async def script(connection: Connection) -> None:
        while await connection.read_request() is not None:
            await connection.answer(503, b'{"errors":[{"code":"UNAVAILABLE","message":"busy"}]}')

    async def main():
        async with serving(script) as (server, client):
            response = await client.request("HEAD", url(server, "/v2/r/manifests/v1"))
            return response, server

    response, server = run(main())
    assert response.status_code == 503
    assert len(server.requests) == FAST_RETRY.attempts


# -- 4. credentials never go to a plain-HTTP token realm -----------------------------------------


def test_credentials_are_not_sent_to_a_plain_http_realm_of_a_tls_registry(proxied_tls):
    context, proxy_to = proxied_tls

    async def main():
        async with RawServer(keep_answering) as token_service:
            realm = url(token_service, "/token")

            async def registry(connection: Connection) -> None:
                while await connection.read_request() is not None:
                    await connection.answer(401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}",service="reg"'})

            async with RawServer(registry, ssl_context=context) as server:
                proxied = proxy_to(server)
                client = RegistryClient(proxied.host, proxied.options,
                                        lambda: Credentials(username="me", password="s3cret"))
                try:
                    with pytest.raises(RegistryError) as raised:
                        await client.head_manifest("library/busybox", "latest")
                finally:
                    await client.aclose()
                return raised.value, token_service, realm

    error, token_service, realm = run(main())
    assert f"refusing token service {realm}: not https" in str(error)
    assert "s3cret" not in str(error)
    assert token_service.connections == 0


# -- 5. smaller ones ------------------------------------------------------------------------------


def test_a_303_turns_the_request_into_a_get_without_body_headers():
    async def script(connection: Connection) -> None:
        while (request := await connection.read_request()) is not None:
            if request.method == "POST":
                await connection.answer(303, b"", {"Location": "/v2/elsewhere"})
            else:
                await connection.answer(200, b"there")

    async def main():
        async with serving(script) as (server, client):
            response = await client.request(
                "POST", url(server, "/v2/r/blobs/uploads/"),
                headers={"Content-Length": "0", "Content-Type": "application/octet-stream"},
                idempotent=True,
            )
            return response, server

    response, server = run(main())
    assert response.content == b"there"
    get = server.requests[1]
    assert (get.method, get.target) == ("GET", "/v2/elsewhere")
    assert "content-length" not in get.headers and "content-type" not in get.headers


def test_a_connect_that_times_out_closes_the_proxy_socket(proxied_tls):
    seen: list[bool] = []

    async def silent_proxy(connection: Connection) -> None:
        await connection.reader.readuntil(b"\r\n\r\n")  # CONNECT ..., never answered
        seen.append(await connection.client_closed(timeout=5))

    async def main():
        async with RawServer(silent_proxy) as proxy:
            options = TransportOptions(retry=RetryPolicy(attempts=1), timeout=0.5,
                                       proxies=ProxySettings.from_environment({"HTTPS_PROXY": f"http://{proxy.host}"}))
            client = Transport("registry.example.com", options)
            try:
                with pytest.raises(TransientError, match="timed out connecting"):
                    await client.request("GET", "https://registry.example.com/v2/")
            finally:
                await client.aclose()
            await asyncio.sleep(0.1)
            for _ in range(50):
                if seen:
                    break
                await asyncio.sleep(0.1)

    run(main())
    assert seen == [True]


# -- what every client must get right ----------------------------------------------------------------


def test_one_connection_carries_a_thousand_requests():
    async def main():
        async with serving(keep_answering) as (server, client):
            for _ in range(1000):
                response = await client.request("HEAD", url(server, "/v2/r/manifests/v1"))
                assert response.status_code == 200
            return server

    server = run(main())
    assert (server.connections, len(server.requests)) == (1, 1000)


def test_a_buffered_answer_cut_short_is_fetched_again_then_reported():
    async def main():
        async with serving(cut_short(announced=100, sent=50)) as (server, client):
            with pytest.raises(TransientError, match="ended early"):
                await client.request("GET", url(server, "/v2/r/manifests/v1"))
            return server

    server = run(main())
    assert len(server.requests) == FAST_RETRY.attempts


def test_a_streamed_answer_cut_short_fails_as_a_transient_registry_error():
    async def main():
        async with serving(cut_short(announced=1_000_000, sent=70_000)) as (server, client):
            received = 0
            response = await client.request("GET", url(server, "/v2/r/blobs/sha256:x"), stream=True)
            with pytest.raises(TransientError, match="ended early"):
                async for chunk in response.aiter_raw():
                    received += len(chunk)
            await response.aclose()
            return received

    assert run(main()) == 70000


def test_a_registry_that_never_answers_times_out_within_the_budget():
    async def script(connection: Connection) -> None:
        await connection.read_request()
        await asyncio.sleep(30)

    async def main():
        async with serving(script, retry=RetryPolicy(attempts=2, base_delay=0.01), timeout=0.3) as (server, client):
            with pytest.raises(TransientError, match="timed out waiting"):
                await client.request("GET", url(server))
            return server

    server = run(main())
    assert len(server.requests) == 2


def test_an_upload_the_registry_stops_taking_is_abandoned_after_the_timeout():
    async def script(connection: Connection) -> None:
        await connection.reader.readuntil(b"\r\n\r\n")  # the head, then never another byte
        await asyncio.sleep(30)

    async def endless_layer():
        chunk = bytes(1 << 20)
        while True:
            yield chunk

    async def main():
        async with serving(script, timeout=0.5) as (server, client):
            with pytest.raises(TransientError, match="stalled"):
                await client.request("PUT", url(server, "/v2/r/blobs/uploads/x"), content=endless_layer(),
                                     headers={"Content-Length": str(1 << 40)})

    run(main())


def test_chunked_answers_are_read_whole_and_the_connection_reused():
    async def script(connection: Connection) -> None:
        while await connection.read_request() is not None:
            await connection.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"man", b"ifest", b" bytes"):
                await connection.send(b"%x\r\n%b\r\n" % (len(part), part))
                await asyncio.sleep(0.01)
            await connection.send(b"0\r\n\r\n")

    async def main():
        async with serving(script) as (server, client):
            bodies = [(await client.request("GET", url(server))).content for _ in range(2)]
            return bodies, server

    bodies, server = run(main())
    assert bodies == [b"manifest bytes"] * 2
    assert server.connections == 1


def test_cancelling_a_streamed_answer_closes_its_socket_and_frees_its_slot():
    closed: list[bool] = []
    started = asyncio.Event

    async def script(connection: Connection) -> None:
        request = await connection.read_request()
        if request.target.endswith("/big"):
            await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 65536)
            closed.append(await connection.client_closed(timeout=5))
        else:
            await connection.answer(200, b"small")

    async def main():
        first_chunk = started()

        async with serving(script, max_connections=1) as (server, client):

            async def download() -> None:
                response = await client.request("GET", url(server, "/v2/big"), stream=True)
                try:
                    async for _ in response.aiter_raw():
                        first_chunk.set()
                        await asyncio.sleep(10)
                finally:
                    await response.aclose()

            task = asyncio.create_task(download())
            await first_chunk.wait()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            small = await asyncio.wait_for(client.request("GET", url(server, "/v2/small")), 5)
            for _ in range(50):
                if closed:
                    break
                await asyncio.sleep(0.1)
            return small

    assert run(main()).content == b"small"
    assert closed == [True]


def test_a_connect_tunnel_through_the_forward_proxy_is_reused(proxied_tls):
    context, proxy_to = proxied_tls

    async def main():
        async with RawServer(keep_answering, ssl_context=context) as server:
            proxied = proxy_to(server)
            client = Transport(proxied.host, proxied.options)
            try:
                bodies = [(await client.request("GET", f"https://{proxied.host}/v2/")).content for _ in range(3)]
            finally:
                await client.aclose()
            return bodies, server, proxied.proxy, proxied.host

    bodies, server, proxy, host = run(main())
    assert bodies == [b"ok"] * 3
    assert [(c.method, c.target) for c in proxy.connections] == [("CONNECT", host)]
    assert server.connections == 1


# -- scheme, TLS, redirects and warnings with real registries ---------------------------------------


def test_tls_registry_needs_its_ca(push_image, tls_registry, unique_repo):
    pushed = push_image("oci", registry=tls_registry)
    source = reference.parse(pushed.ref)

    async def head(ca_file):
        async with registries(ca_file=ca_file) as regs:
            return await regs.repository(source.repository).resolve_digest("v1")

    assert str(run(head(str(tls_registry.ca_file)))) == pushed.digest
    with pytest.raises(RegistryError, match="certificate"):
        run(head(None))


def test_insecure_registry_skips_tls_verification(push_image, tls_registry):
    pushed = push_image("oci", registry=tls_registry)
    repository = reference.parse(pushed.ref).repository

    async def head(insecure):
        async with registries(insecure_registries=insecure) as regs:
            return await regs.repository(repository).resolve_digest("v1")

    assert str(run(head(frozenset({tls_registry.host})))) == pushed.digest
    with pytest.raises(RegistryError, match="certificate"):
        run(head(frozenset({"other.example:5000"})))


def test_plain_http_only_for_loopback_or_named_insecure_hosts(plain_registry, tls_registry):
    assert is_loopback("localhost:5000") and is_loopback("127.3.4.5:80") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example.com") and not is_loopback("10.0.0.1:5000")
    named = TransportOptions(insecure_registries=frozenset({"registry.example.com"}))
    assert named.allows_plain_http("registry.example.com:5000") and named.is_insecure("registry.example.com")
    assert not TransportOptions().allows_plain_http("registry.example.com")

    async def scheme(host, options=TransportOptions(ca_file=tls_registry.ca_file)):
        transport = Transport(host, options)
        try:
            return (await transport.base_url()).split(":", 1)[0]
        finally:
            await transport.aclose()

    # a public name is never even probed for plain HTTP (no network needed); loopback is probed
    assert run(scheme("registry.example.com")) == "https"
    assert run(scheme(plain_registry.host)) == "http"
    assert run(scheme(tls_registry.host)) == "https"


def test_redirect_to_another_host_drops_authorization(push_image, fault_proxy, htpasswd_registry,
                                                      second_plain_registry, unique_repo):
    pushed = push_image("large", registry=htpasswd_registry)
    push_image("large", registry=second_plain_registry, repo=pushed.repo)
    storage = fault_proxy(second_plain_registry, host="127.0.0.2")
    front = fault_proxy(htpasswd_registry)
    front.redirect("GET", "/blobs/sha256:", storage.url, times=None)
    target_repo = unique_repo()

    mirror(f"{front.host}/{pushed.repo}:v1", f"{second_plain_registry.host}/{target_repo}:v1",
           {front.host: htpasswd_registry.credentials})
    assert_same_image(pushed, second_plain_registry.host, target_repo)
    redirected = storage.requests_matching("GET", "/blobs/")
    assert len(redirected) == len(pushed.blobs)
    assert all("Authorization" not in r.headers for r in redirected)
    assert all("Authorization" in r.headers for r in front.requests_matching("GET", "/blobs/"))


def test_registry_warning_header_is_shown(push_image, fault_proxy, plain_registry, caplog):
    pushed = push_image("oci")
    proxy = fault_proxy(plain_registry)
    proxy.fail("HEAD", "/manifests/", status=404, headers={"Warning": '299 - "this repository is deprecated"'})

    async def main():
        async with registries() as regs:
            return await regs.repository(reference.parse(f"{proxy.host}/{pushed.repo}").repository).resolve_digest("v1")

    with caplog.at_level(logging.WARNING, logger="reconciler.registry"):
        assert run(main()) is None
    assert "registry warning: this repository is deprecated" in caplog.text
