"""An answer's body read within bounds (reconciler/registry/body.py), over answers made by hand."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from reconciler.oci import limits
from reconciler.registry.body import read_body
from reconciler.registry.errors import RegistryError


class Chunks(httpx.AsyncByteStream):
    """A body sent in pieces with no Content-Length, as a chunked answer is."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces

    async def __aiter__(self):
        for piece in self.pieces:
            yield piece


def read(answer: httpx.Response, limit: int | None) -> httpx.Response:
    asyncio.run(read_body(answer, limit, "r/app: GET tags/list"))
    return answer


def test_a_used_body_within_its_limit_is_read_whole_and_the_answer_closed():
    answer = read(httpx.Response(200, stream=Chunks(b"ab", b"cd")), limit=4)
    assert answer.content == b"abcd" and answer.is_closed


def test_a_used_body_over_its_limit_is_refused_by_its_length_or_its_bytes():
    with pytest.raises(RegistryError, match="^r/app: GET tags/list: the answer is 5 bytes, over the 4 bytes limit$"):
        read(httpx.Response(200, headers={"Content-Length": "5"}, stream=Chunks(b"abcde")), limit=4)
    with pytest.raises(RegistryError, match="^r/app: GET tags/list: the answer is over the 4 bytes limit$"):
        read(httpx.Response(200, stream=Chunks(b"abc", b"de")), limit=4)


def test_an_error_body_is_read_only_up_to_its_cap_for_the_message():
    endless = Chunks(*[b"x" * 1024] * (limits.ERROR_BODY_BYTES // 1024 + 10))
    answer = read(httpx.Response(500, stream=endless), limit=4)
    assert answer.content == b"x" * limits.ERROR_BODY_BYTES
