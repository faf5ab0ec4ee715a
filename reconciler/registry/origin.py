"""Where credentials may go: only to the origin (scheme, host, port) they were given for.

Every URL a registry's answer points at (a redirect's or an upload session's
``Location``, a listing's ``Link``) is checked here, so one rule decides them all: a
request to another origin carries no Authorization, and a listing whose next page
leaves the registry is refused (the distribution spec's ``Link`` is relative to the
registry). A token realm is the one other origin the protocol sends credentials to by
design; ``auth.py`` checks it (https, or plain HTTP only where the user allowed it).
"""

from __future__ import annotations

import httpx

from reconciler.registry.errors import RegistryError

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: httpx.URL) -> str:
    """``scheme://host:port``, the port spelled out (``https://h`` and ``https://h:443`` are one origin)."""
    port = url.port or _DEFAULT_PORTS.get(url.scheme)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}:{port}"


def same_origin(url: httpx.URL, given_for: httpx.URL) -> bool:
    """Whether credentials given for ``given_for`` may be sent to ``url``."""
    return origin(url) == origin(given_for)


def follow(base: httpx.URL, target: str, where: str) -> httpx.URL:
    """``target`` (a Location or a Link, maybe relative) read against ``base``; one line if it is no URL."""
    try:
        return base.join(target)
    except httpx.InvalidURL:
        raise RegistryError(f"{where}: points at {target[:200]!r}, which is not a URL") from None
