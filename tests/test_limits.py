"""Every answer read within its cap (reconciler/oci/limits.py, body.read_body), against raw-socket
servers: an endless tags page, token answer or error body stops at its cap with one line naming the
registry and the limit, and its connection is closed; a Content-Length over the cap is refused before a
byte is read; a tags listing over the count cap is refused before its tags become strings; JSON nested
10,000 deep is one line, never a RecursionError.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

import pytest

from reconciler.oci import limits, mediatypes, reference
from reconciler.oci.digest import Digest
from reconciler.oci.errors import OCIError
from reconciler.oci.manifest import InvalidManifest, Manifest, parse
from reconciler.registry.errors import ErrorBody, ResponseError
from tests.harness.rawserver import Connection, RawServer
from tests.helpers_cli import cli_env, write_images
from tests.helpers_clients import FAST_RETRY, registries, run
from tests.test_origin import refused_tls

DEEP = b"[" * 10_000 + b"]" * 10_000
CHUNK = b"x" * 65536


class Endless:
    """A registry whose ``path`` answers ``status`` with a chunked body that never ends; it counts what it sent.

    It stops by itself after 64 MiB, far past every cap, so a test that fails does not run forever.
    """

    def __init__(self, path: str, status: int = 200, challenge: str | None = None) -> None:
        self.path, self.status, self.challenge = path, status, challenge
        self.sent: list[int] = []  # body bytes, per answer
        self.closed_by_client: list[bool] = []  # per answer: whether the client hung up before 64 MiB

    async def settled(self) -> None:
        """Until the last answer knows how it ended."""
        async with asyncio.timeout(10):
            while len(self.closed_by_client) < len(self.sent) or not self.sent:
                await asyncio.sleep(0.01)

    async def __call__(self, connection: Connection) -> None:
        if await refused_tls(connection):
            return
        while (request := await connection.read_request()) is not None:
            if self.challenge and "authorization" not in request.headers and self.path not in request.target:
                await connection.answer(401, b"", {"WWW-Authenticate": self.challenge})
            elif self.path in request.target:
                await self._endless(connection)
                return
            else:
                await connection.answer(404)

    async def _endless(self, connection: Connection) -> None:
        await connection.send(f"HTTP/1.1 {self.status} Whatever\r\nContent-Type: application/json\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n".encode())
        self.sent.append(0)
        try:
            while self.sent[-1] < 64 * limits.MiB:
                await connection.send(b"10000\r\n" + CHUNK + b"\r\n")
                self.sent[-1] += len(CHUNK)
            self.closed_by_client.append(False)
        except ConnectionError:
            self.closed_by_client.append(True)


async def failure(script, operation) -> tuple[OCIError, RawServer]:
    """The one error ``operation(repository)`` ends in, against a raw server running ``script``."""
    async with RawServer(script) as server:
        async with registries() as regs:
            repository = regs.repository(reference.parse(f"{server.host}/app").repository)
            with pytest.raises(OCIError) as raised:
                await operation(repository)
        if isinstance(script, Endless):
            await script.settled()
    return raised.value, server


def test_an_endless_tags_page_stops_at_its_cap_and_the_connection_is_closed():
    endless = Endless("/tags/list")
    error, server = run(failure(endless, lambda repository: repository.tags()))
    assert str(error) == f"{server.host}: GET /v2/app/tags/list: the answer is over the 8 MiB limit"
    assert "\n" not in str(error) and not error.transient
    assert len(endless.sent) == 1  # refused, not tried again
    assert limits.TAGS_PAGE_BYTES < endless.sent[0] < limits.TAGS_PAGE_BYTES + 16 * limits.MiB  # socket buffers
    assert endless.closed_by_client == [True]


def test_an_endless_token_answer_stops_at_its_cap():
    endless = Endless("/token", challenge='Bearer realm="http://{host}/token",service="registry"')

    async def main():
        async with RawServer(endless) as server:
            endless.challenge = endless.challenge.format(host=server.host)
            async with registries() as regs:
                repository = regs.repository(reference.parse(f"{server.host}/app").repository)
                with pytest.raises(OCIError) as raised:
                    await repository.tags()
            await endless.settled()
        return raised.value, server

    error, server = run(main())
    assert str(error) == f"{server.host}: GET /token: the answer is over the 1 MiB limit"
    assert limits.TOKEN_BYTES < endless.sent[0] < limits.TOKEN_BYTES + 16 * limits.MiB
    assert endless.closed_by_client == [True]


def test_an_endless_error_body_is_read_only_for_its_message_and_its_connection_closed():
    endless = Endless("/tags/list", status=400)
    error, server = run(failure(endless, lambda repository: repository.tags()))
    assert isinstance(error, ResponseError) and error.status == 400
    assert str(error) == f"{server.host}/app: GET tags/list failed with HTTP 400: Whatever"
    assert endless.sent[0] < limits.ERROR_BODY_BYTES + 16 * limits.MiB
    assert endless.closed_by_client == [True]


def test_an_endless_retry_status_body_is_bounded_on_every_try():
    endless = Endless("/manifests/", status=503)

    async def main():
        async with RawServer(endless) as server:
            async with registries() as regs:
                repository = regs.repository(reference.parse(f"{server.host}/app").repository)
                with pytest.raises(ResponseError) as raised:
                    await repository.get_manifest("v1")
            await endless.settled()
        return raised.value

    error = run(main())
    assert error.status == 503 and error.transient
    assert len(endless.sent) == FAST_RETRY.attempts  # each try on a new connection, the last one closed
    assert all(sent < limits.ERROR_BODY_BYTES + 16 * limits.MiB for sent in endless.sent)
    assert endless.closed_by_client == [True] * FAST_RETRY.attempts


def test_a_content_length_over_the_cap_is_refused_before_reading():
    announced = limits.MANIFEST_BYTES + 1

    async def script(connection: Connection) -> None:
        if await refused_tls(connection):
            return
        await connection.read_request()
        await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % announced)
        script.closed = await connection.client_closed(timeout=5)  # no body ever comes

    error, server = run(failure(script, lambda repository: repository.get_manifest("v1")))
    assert str(error) == f"{server.host}: GET /v2/app/manifests/v1: the answer is {announced} bytes, over the 4 MiB limit"
    assert script.closed


def test_a_tags_page_cut_short_is_fetched_again():
    page = json.dumps({"name": "app", "tags": ["1.0", "1.1"]}).encode()

    async def script(connection: Connection) -> None:
        if await refused_tls(connection):
            return
        await connection.read_request()
        if connection.number == 2:
            await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(page) + page[:10])
            return
        await connection.answer(200, page)

    async def main():
        async with RawServer(script) as server:
            async with registries() as regs:
                return await regs.repository(reference.parse(f"{server.host}/app").repository).tags(), server

    tags, server = run(main())
    assert tags == ["1.0", "1.1"] and server.connections == 3


def tags_page(tags: list[str], **extra) -> bytes:
    return json.dumps({"name": "app", **extra, "tags": tags}).encode()


def pages_server(pages: list[bytes]):
    """A registry answering tags/list with ``pages`` in turn, each linking to the next."""

    async def script(connection: Connection) -> None:
        if await refused_tls(connection):
            return
        while (request := await connection.read_request()) is not None:
            number = int(request.target.rpartition("page=")[2]) if "page=" in request.target else 0
            link = {"Link": f'</v2/app/tags/list?page={number + 1}>; rel="next"'} if number + 1 < len(pages) else {}
            await connection.answer(200, pages[number], link)

    return script


def test_a_listing_over_the_tag_cap_is_refused_over_all_its_pages():
    half = limits.TAGS_PER_REPOSITORY // 2
    pages = [tags_page([f"1.0.{i}" for i in range(half)]), tags_page([f"2.0.{i}" for i in range(half + 1)])]
    error, server = run(failure(pages_server(pages), lambda repository: repository.tags()))
    assert str(error) == (f"{server.host}/app: tags/list lists more than the limit of "
                          f"{limits.TAGS_PER_REPOSITORY} tags; refused")
    assert len(server.requests) == 2


def test_a_listing_at_the_tag_cap_is_read_and_a_map_of_manifests_beside_it_does_not_count():
    """Some registries (Google's) add a map of manifests to the page, with many more strings than tags."""
    seed = random.randrange(2**32)
    print("seed", seed)
    chooser = random.Random(seed)
    tags = [f"{chooser.randrange(100)}.{i}" for i in range(limits.TAGS_PER_REPOSITORY)]
    manifests = {f"sha256:{i:064x}": {"mediaType": "m", "tag": ["a", "b"], "layerId": ""} for i in range(30_000)}
    page = tags_page(tags, manifests=manifests)

    async def main():
        async with RawServer(pages_server([page])) as server:
            async with registries() as regs:
                return await regs.repository(reference.parse(f"{server.host}/app").repository).tags()

    assert run(main()) == tags


def test_json_nested_ten_thousand_deep_is_one_line_wherever_it_comes():
    digest = Digest.of(DEEP)
    with pytest.raises(InvalidManifest, match=f"^manifest {digest} is not JSON: JSON nested deeper than 64 levels$"):
        parse(DEEP, mediatypes.OCI_MANIFEST, digest)
    deep_index = b'{"manifests":' + DEEP + b"}"
    with pytest.raises(InvalidManifest, match="is malformed: JSON nested deeper than 64 levels$"):
        Manifest(mediatypes.OCI_INDEX, Digest.of(deep_index), deep_index).children()
    assert ErrorBody.parse(b'{"errors":' + DEEP + b"}", "Bad Request") == ErrorBody(frozenset(), "Bad Request")


@pytest.mark.parametrize("answer", [DEEP, b'{"token": ' + b"9" * 5000 + b"}", b'{"token": "t", "expires_in": 1e400}',
                                    b'{"token": 12}'])
def test_a_token_answer_deep_or_with_absurd_numbers_is_one_line_or_a_token(answer):
    async def script(connection: Connection) -> None:
        if await refused_tls(connection):
            return
        while (request := await connection.read_request()) is not None:
            if request.target.startswith("/token"):
                await connection.answer(200, answer)
            elif "authorization" not in request.headers:
                realm = f"http://127.0.0.1:{connection.server.port}/token"
                await connection.answer(401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}"'})
            else:
                await connection.answer(200, tags_page(["1.0"]))

    async def main():
        async with RawServer(script) as server:
            async with registries() as regs:
                repository = regs.repository(reference.parse(f"{server.host}/app").repository)
                try:
                    return await repository.tags(), server
                except OCIError as error:
                    return str(error), server

    outcome, server = run(main())
    if answer.startswith(b'{"token": "t"'):
        assert outcome == ["1.0"]  # an absurd lifetime is no lifetime: the default one
    else:
        assert outcome == f"{server.host}: token service http://{server.host}/token gave no token"


def test_an_error_message_is_one_line_of_sane_length():
    body = json.dumps({"errors": [{"code": "DENIED", "message": "line one\nline two\r\n" + "x" * 5000}]})
    message = ErrorBody.parse(body.encode(), "Forbidden").message
    assert message.startswith("DENIED: line one line two xxx") and "\n" not in message
    assert len(message) <= 501


def test_header_numbers_and_deep_json_in_limits_alone():
    assert limits.header_number(" 42 ") == 42
    assert [limits.header_number(value) for value in ("¹²", "1e3", "-1", "9" * 19, "", None)] == [None] * 6
    assert limits.nesting_depth(b'{"a": "[[[[", "b": [[1]]}') == 3
    with pytest.raises(ValueError, match="nested deeper"):
        limits.parse_json(DEEP)
    with pytest.raises(ValueError):
        limits.parse_json(b"9" * 5000)
    assert limits.size(limits.ERROR_BODY_BYTES) == "64 KiB" and limits.size(limits.TAGS_PAGE_BYTES) == "8 MiB"



# The child's peak, reported by a small launcher between us and it: a process's ru_maxrss starts from the
# resident size of the process it was forked from, and this one (pytest) is large.
_LAUNCHER = ("import os, subprocess, sys; child = subprocess.Popen(sys.argv[1:]); "
             "_, status, usage = os.wait4(child.pid, 0); print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)")


def test_lock_against_an_endless_tags_page_stays_within_the_memory_bound(tmp_path):
    endless = Endless("/tags/list")

    async def main():
        async with RawServer(endless) as server:
            write_images(tmp_path, "127.0.0.1:1/mirror", [{"source": f"{server.host}/app", "tags": {"semver": ">=1.0"}}])
            launcher = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _LAUNCHER, sys.executable, "-m", "reconciler", "lock",
                cwd=tmp_path, env=cli_env(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            async with asyncio.timeout(60):
                stdout, stderr = await launcher.communicate()
        return server, stdout.decode().split(), stderr.decode()

    server, (code, peak_kib), stderr = run(main())
    print(f"exit {code}, peak RSS {int(peak_kib) // 1024} MiB, sent {endless.sent} bytes\n{stderr}")
    assert code == "1" and f"{server.host}: GET /v2/app/tags/list: the answer is over the 8 MiB limit" in stderr
    assert "Traceback" not in stderr
    assert int(peak_kib) * 1024 <= limits.PEAK_RSS_BYTES


def test_a_token_answer_cut_short_is_fetched_again():
    token_answers = []

    async def script(connection: Connection) -> None:
        if await refused_tls(connection):
            return
        while (request := await connection.read_request()) is not None:
            if request.target.startswith("/token"):
                token_answers.append(request)
                answer = b'{"token": "t"}'
                if len(token_answers) == 1:
                    await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer) + answer[:5])
                    return
                await connection.answer(200, answer)
            elif request.headers.get("authorization") != "Bearer t":
                realm = f"http://127.0.0.1:{connection.server.port}/token"
                await connection.answer(401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}"'})
            else:
                await connection.answer(200, tags_page(["1.0"]))

    async def main():
        async with RawServer(script) as server:
            async with registries() as regs:
                return await regs.repository(reference.parse(f"{server.host}/app").repository).tags()

    assert run(main()) == ["1.0"]
    assert len(token_answers) == 2
