"""The origin rule (reconciler/registry/origin.py): credentials go only to the origin they were given for.

First the rule alone, then every caller against raw-socket servers that record each request's
headers: a listing's ``Link`` to another origin (tags/list and referrers pages) is refused, an
upload session's ``Location`` on another origin gets no Authorization, and, end to end, ``lock``
with docker-config Basic credentials sends none of them to the host a hostile tags page names.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path

import httpx
import pytest

from reconciler.oci import mediatypes, reference
from reconciler.oci.digest import Digest
from reconciler.oci.manifest import Descriptor
from reconciler.registry.errors import RegistryError
from reconciler.registry.origin import follow, origin, same_origin
from tests.harness.rawserver import Connection, RawServer
from tests.helpers_cli import cli_env, write_images
from tests.helpers_clients import registries, run

USER, PASSWORD = "alice", "s3cret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.mark.parametrize(("url", "given_for", "same"), [
    ("https://r.example/v2/a/tags/list?n=1", "https://r.example", True),
    ("https://r.example:443/v2/", "https://r.example", True),
    ("http://r.example:80/v2/", "http://r.example", True),
    ("http://r.example/v2/", "https://r.example", False),  # a downgrade is another origin
    ("https://r.example:5000/v2/", "https://r.example", False),
    ("https://other.example/v2/", "https://r.example", False),
    ("https://r.example.evil/v2/", "https://r.example", False),
    ("https://R.EXAMPLE/v2/", "https://r.example", True),
    ("http://[::1]:5000/v2/", "http://[::1]:5000", True),
])
def test_same_origin_is_scheme_host_and_port(url, given_for, same):
    assert same_origin(httpx.URL(url), httpx.URL(given_for)) is same


def test_a_relative_target_stays_on_its_base_and_a_broken_one_is_one_line():
    base = httpx.URL("http://127.0.0.1:5000/v2/app/tags/list?n=2")
    assert origin(follow(base, "/v2/app/tags/list?last=b", "here")) == "http://127.0.0.1:5000"
    assert origin(follow(base, "//127.0.0.2:5000/v2/", "here")) == "http://127.0.0.2:5000"
    with pytest.raises(RegistryError, match=r"^here: points at 'http://\[::1', which is not a URL$"):
        follow(base, "http://[::1", "here")


async def refused_tls(connection: Connection) -> bool:
    """Whether this is the connection that probed for TLS (the first, alone): refused as plain HTTP refuses it."""
    if connection.number != 1:
        return False
    await connection.reader.read(1024)  # a ClientHello, as a request line it is garbage
    await connection.send(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
    return True


def requiring_basic(answer):
    """A plain-HTTP registry that wants Basic credentials (our BASIC), then lets ``answer(connection, request)`` reply."""

    async def script(connection: Connection) -> None:
        if await refused_tls(connection):
            return
        while (request := await connection.read_request()) is not None:
            if request.headers.get("authorization") != BASIC:
                await connection.answer(401, b"", {"WWW-Authenticate": 'Basic realm="test"'})
            else:
                await answer(connection, request)

    return script


async def recording(connection: Connection) -> None:
    """The other origin: it answers everything, so that only what reached it decides a test."""
    while await connection.read_request() is not None:
        await connection.answer(200, json.dumps({"name": "app", "tags": ["9.9.9"], "manifests": []}).encode(),
                                {"Content-Type": "application/json", "Docker-Content-Digest": ""})


@pytest.mark.parametrize("listing", ["tags", "referrers"])
def test_a_listing_whose_link_leaves_the_registry_is_refused(listing):
    digest = Digest.of(b"subject")

    async def main():
        async with RawServer(recording) as other:
            async def page_one(connection: Connection, request) -> None:
                body = {"name": "app", "tags": ["1.0.0"]} if listing == "tags" else {
                    "schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}
                await connection.answer(200, json.dumps(body).encode(), {
                    "Content-Type": "application/json",
                    "Link": f'<http://{other.host}{request.target}&last=1.0.0>; rel="next"'})

            async with RawServer(requiring_basic(page_one)) as source:
                async with registries({source.host: (USER, PASSWORD)}) as regs:
                    repository = regs.repository(reference.parse(f"{source.host}/app").repository)
                    with pytest.raises(RegistryError) as refused:
                        if listing == "tags":
                            await repository.tags()
                        else:
                            await repository.referrers(digest)
            return source, other, str(refused.value)

    source, other, message = run(main())
    suffix = "tags/list" if listing == "tags" else f"referrers/{digest}"
    assert message == (f"{source.host}/app: {suffix}: the next page's Link leaves the registry for "
                       f"http://{other.host}; not followed, the listing is refused")
    assert other.requests == []
    assert any(request.headers.get("authorization") == BASIC for request in source.requests)


def test_an_upload_session_on_another_origin_gets_no_credentials():
    data = b"layer bytes"
    descriptor = Descriptor(mediatypes.OCI_MANIFEST, Digest.of(data), len(data))

    async def uploads(connection: Connection) -> None:
        while await connection.read_request() is not None:
            await connection.answer(201, b"", {"Docker-Content-Digest": str(descriptor.digest)})

    async def main():
        async with RawServer(uploads) as other:
            async def start(connection: Connection, request) -> None:
                await connection.answer(202, b"", {"Location": f"http://{other.host}/upload/1?state=x"})

            async with RawServer(requiring_basic(start)) as target:
                async with registries({target.host: (USER, PASSWORD)}) as regs:
                    repository = regs.repository(reference.parse(f"{target.host}/app").repository)

                    async def chunks():
                        yield data

                    class Source:
                        def __init__(self, offset: int) -> None:
                            assert offset == 0

                        async def __aenter__(self):
                            return chunks()

                        async def __aexit__(self, *exc_info):
                            return None

                    await repository.upload_blob(descriptor, Source)
            return target, other

    target, other = run(main())
    assert [(r.method, r.body) for r in other.requests] == [("PUT", data)]
    assert "authorization" not in other.requests[0].headers
    assert [r.method for r in target.requests] == ["POST", "POST"]  # the 401, then with credentials


def test_lock_sends_no_credential_to_the_host_a_tags_page_links_to(tmp_path):
    """docker-config Basic credentials for the source; its page 1 links to another port on loopback."""

    async def main():
        async with RawServer(recording) as other:
            async def page_one(connection: Connection, request) -> None:
                await connection.answer(200, json.dumps({"name": "app", "tags": ["1.0.0", "1.1.0"]}).encode(), {
                    "Content-Type": "application/json",
                    "Link": f'<http://{other.host}/v2/app/tags/list?n=1000&last=1.1.0>; rel="next"'})

            async with RawServer(requiring_basic(page_one)) as source:
                config = tmp_path / "dockercfg"
                config.mkdir()
                (config / "config.json").write_text(json.dumps({"auths": {source.host: {
                    "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
                write_images(tmp_path, "127.0.0.1:1/mirror",
                             [{"source": f"{source.host}/app", "tags": {"semver": ">=1.0"}}])
                code, stderr = await cli(tmp_path, "lock", env={"DOCKER_CONFIG": str(config)})
            return source, other, code, stderr

    source, other, code, stderr = run(main())
    print(stderr)
    assert code != 0 and "Traceback" not in stderr
    refusals = [line for line in stderr.splitlines() if "Link leaves the registry" in line]
    assert len(refusals) == 1 and source.host in refusals[0] and f"http://{other.host}" in refusals[0]
    assert all("authorization" not in request.headers for request in other.requests)
    assert any(request.headers.get("authorization") == BASIC for request in source.requests)
    assert not (tmp_path / "images.lock").exists()


async def cli(workdir: Path, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """``python -m reconciler ARGS`` as a child of this event loop (the raw servers run in it too)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reconciler", *args, cwd=workdir, env={**cli_env(workdir), **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, stderr = await child.communicate()
    return child.returncode, stderr.decode()
