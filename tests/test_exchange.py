"""One registry's exchange (reconciler/registry/exchange.py) over answers made by hand: an error answer read
into one RegistryError that says whether another try may help, and the digest a header announces."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from reconciler.oci.digest import Digest
from reconciler.registry.errors import RegistryError
from reconciler.registry.exchange import Exchange, parse_header_digest
from reconciler.registry.options import TransportOptions

URL = "https://registry.example/v2/app/manifests/v1"


def failure_of(status: int, codes: list[str], transient_codes: frozenset[str] = frozenset()) -> RegistryError:
    async def main() -> RegistryError:
        exchange = Exchange("registry.example", TransportOptions(), lambda: None)
        try:
            answer = httpx.Response(status, json={"errors": [{"code": code, "message": "said"} for code in codes]},
                                    request=httpx.Request("PUT", URL))
            return await exchange.failure(answer, "app", "manifests/v1", transient_codes)
        finally:
            await exchange.aclose()

    return asyncio.run(main())


def test_an_error_answer_is_one_message_naming_the_request():
    error = failure_of(400, ["MANIFEST_INVALID"])
    assert str(error) == "registry.example/app: PUT manifests/v1 failed with HTTP 400: MANIFEST_INVALID: said"
    assert not error.transient


def test_a_retry_status_or_an_error_code_named_transient_may_be_tried_again():
    assert failure_of(503, ["UNAVAILABLE"]).transient
    assert failure_of(400, ["BLOB_UNKNOWN"], transient_codes=frozenset({"BLOB_UNKNOWN"})).transient
    assert not failure_of(400, ["BLOB_UNKNOWN"], transient_codes=frozenset({"DIGEST_INVALID"})).transient


def test_a_header_digest_is_parsed_absent_or_refused_in_one_line():
    digest = Digest.of(b"x")
    assert parse_header_digest(f" {digest} ", "registry.example", "app") == digest
    assert parse_header_digest(None, "registry.example", "app") is None
    assert parse_header_digest("", "registry.example", "app") is None
    with pytest.raises(RegistryError, match="^registry.example/app: registry sent an invalid Docker-Content-Digest "
                                            "'sha256:nope'$"):
        parse_header_digest("sha256:nope", "registry.example", "app")
