"""How much of a registry's answer is read, and how deeply it is parsed: every cap in one place.

A registry's answer is untrusted input. Blobs stream through a digest check and are
never held whole; every other answer is read into memory, so each kind has a cap, and
past it the answer is refused with one line naming the registry and the cap (the read
stops there and the connection is closed). The caps are chosen so that an answer at
every cap keeps the process within ``PEAK_RSS_BYTES``, and so that a lock holding what
they allow stays within ``FILE_BYTES``, the cap its own reader applies.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

MiB = 1024 * 1024

PEAK_RSS_BYTES = 150 * MiB
"""What a run may take whatever a registry sends (the same bound as copying a 1 GiB layer)."""

MANIFEST_BYTES = 4 * MiB
"""A manifest, an image index or an image config: distribution's own limit for a manifest PUT."""
TAGS_PAGE_BYTES = 8 * MiB
"""One answer of ``tags/list``: 100,000 tags of 80 characters fit, and so do registries that ignore ``n``."""
TAGS_PER_REPOSITORY = 100_000
"""Tags read from one repository, over all its pages; a larger listing is refused."""
REFERRERS_LISTING_BYTES = MANIFEST_BYTES
"""One digest's listing by the referrers API, all its pages together (each an image index):
1,000 referrers take a quarter of it, so the count cap is met first, and memory stays bounded
however the registry pages it."""
REFERRERS_PER_SUBJECT = 1_000
"""Referrers pinned for one digest; more are refused, so that the lock stays readable."""
REFERRER_DEPTH = 3
"""Levels of referrers followed: what refers to an image, what refers to those (a signature of
an SBOM), and one more (a signature of an attestation's attestation); deeper ones are not pinned."""
REFERRERS_PER_IMAGE = 10_000
"""Referrers pinned for one image over all its subjects and levels (an index's children each
have their own): a registry cannot make one image cost more listings than this."""
PAGES = 1_000
"""Pages of one listing followed by their ``Link``: a loop of links ends here."""
TOKEN_BYTES = 1 * MiB
"""A token service's answer (a JWT is a few KiB)."""
ERROR_BODY_BYTES = 64 * 1024
"""An error answer, or any answer whose body is not used: only a message is taken from it."""
REDIRECTS = 5
"""Redirects followed for one request."""
JSON_DEPTH = 64
"""Nesting of any JSON a registry sends: OCI documents nest five levels, an in-toto statement a few more."""
NUMBER_DIGITS = 18
"""Digits of a number a registry states (a header's, a tag's version numbers): 18 fit in 64 bits;
a longer one is no number (the header counts as absent, the tag as no version)."""
FILE_BYTES = 10 * MiB
"""Our files and the local files a run reads (images.yaml, images.lock, keys, auth files)."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting_depth(data: bytes) -> int:
    """How deeply ``data``'s arrays and objects nest, found without parsing (so without recursion)."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= JSON_DEPTH:
        return brackets.count(b"[") + brackets.count(b"{")
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def parse_json(data: bytes, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """``json.loads`` for an answer: ValueError for malformed JSON, deep nesting or a number too long.

    Python's own parser recurses, and its RecursionError or its digit limit must not
    decide what happens to a registry's answer. ``object_pairs_hook`` as json.loads takes it.
    """
    if nesting_depth(data) > JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {JSON_DEPTH} levels")
    return json.loads(data, object_pairs_hook=object_pairs_hook)


def header_number(value: str | None) -> int | None:
    """A header's whole number: ASCII digits only, at most ``NUMBER_DIGITS``; else None (absent)."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > NUMBER_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def size(limit: int) -> str:
    """A cap as people read it: ``4 MiB``, ``64 KiB``."""
    if limit % MiB == 0:
        return f"{limit // MiB} MiB"
    if limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"
