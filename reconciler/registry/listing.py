"""A listing's pages read without trusting them: the spec's ``Link`` to the next page, and a
tags/list page's tags, counted before any becomes a string.
"""

from __future__ import annotations

import re

from reconciler.oci import limits
from reconciler.registry.errors import RegistryError


def next_link(header: str | None) -> str | None:
    """The target of ``<url>; rel="next"`` in a Link header."""
    for link in (header or "").split(","):
        target, _, parameters = link.partition(";")
        if "next" in parameters.replace('"', " ").replace("=", " ").split() and target.strip().startswith("<"):
            return target.strip()[1:-1]
    return None


# A JSON string (group 1: followed by a colon, so a key) or a bracket: enough to count a page's tags unparsed.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"(\s*:)?|[\[\]{}]')


def page_tags(page: bytes, room: int, where: str) -> list[str]:
    """A tags/list page's tags; more than ``room`` are refused before any becomes a string."""
    over = RegistryError(f"{where}: tags/list lists more than the limit of {limits.TAGS_PER_REPOSITORY} tags; refused")
    if page.count(b'"') // 2 > room and _listed_strings(page) > room:
        raise over
    try:
        tags = [str(tag) for tag in limits.parse_json(page).get("tags") or ()]
    except (ValueError, AttributeError, TypeError):
        raise RegistryError(f"{where}: tags/list answered no list of tags") from None
    if len(tags) > room:
        raise over
    return tags


def _listed_strings(page: bytes) -> int:
    """How many strings the top-level ``tags`` array holds, counted without making them (a page may list
    a million tags, and some registries add a map of manifests as large)."""
    depth, key, count = 0, b"", 0
    in_tags = False
    for token in _TOKEN.finditer(page):
        first = page[token.start()]
        if first in b"[{":
            depth += 1
            in_tags = depth == 2 and first == ord("[") and key == b'"tags"'
        elif first in b"]}":
            depth -= 1
            in_tags = False
        elif token.group(1) is not None:
            if depth == 1:
                key = token.group()[: -len(token.group(1))]
        elif in_tags:
            count += 1
    return count
