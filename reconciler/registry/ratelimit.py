"""A registry's pull budget as its answers state it: Docker Hub's rate-limit headers.

Docker Hub sends ``ratelimit-limit: 100;w=21600`` and ``ratelimit-remaining: 76;w=21600``
on manifest answers, HEAD included (a HEAD costs nothing; a manifest GET is a pull). Once
the budget is spent it answers 429 TOOMANYREQUESTS until pulls age out of the window.
A number that is not ASCII digits (``¹²``), or longer than ``limits.NUMBER_DIGITS``,
makes its header absent.
"""

from __future__ import annotations

import attrs
import httpx

from reconciler.oci.limits import header_number

DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "docker.io", "index.docker.io"})
YEAR = 365 * 24 * 3600
"""The longest wait ``duration`` spells out; a longer one is ``more than a year``."""


@attrs.frozen
class PullLimit:
    limit: int
    remaining: int
    window: int
    """Seconds over which pulls count (a rolling window: pulls age out one by one)."""

    @classmethod
    def from_headers(cls, headers: httpx.Headers) -> PullLimit | None:
        limit = _count(headers.get("ratelimit-limit"))
        remaining = _count(headers.get("ratelimit-remaining"))
        if limit is None or remaining is None:
            return None
        return cls(limit=limit[0], remaining=remaining[0], window=remaining[1] or limit[1] or 0)


def spent(response: httpx.Response) -> PullLimit | None:
    """The budget, when a 429 says it is gone: waiting seconds will not bring it back."""
    if response.status_code != 429:
        return None
    limit = PullLimit.from_headers(response.headers)
    return limit if limit is not None and limit.remaining == 0 else None


def registry_name(host: str) -> str:
    return "Docker Hub" if host in DOCKER_HUB_HOSTS else host


def deferral(host: str, limit: PullLimit, left: int, retry_after: float | None = None) -> str:
    """Why an image waits for a later run, and when that run may succeed."""
    if retry_after is not None:
        resets = f"resets in {duration(retry_after)}"
    elif limit.window:
        resets = f"pulls age out over {duration(limit.window)}"
    else:
        resets = "resets later"
    return f"{registry_name(host)} pull limit ({left} left, {resets})"


def duration(seconds: float) -> str:
    """``3d04h``, ``2h13m``, ``45m``, ``30s``: a wait as people read it, ``more than a year`` past one."""
    if not seconds < YEAR:  # inf and nan too: neither converts to a whole number
        return "more than a year"
    minutes, secs = divmod(int(max(seconds, 0) + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def _count(value: str | None) -> tuple[int, int | None] | None:
    """``76;w=21600`` as (76, 21600); ``76`` as (76, None); None when the count is no number."""
    if not value:
        return None
    count, _, parameters = value.partition(";")
    window = None
    for parameter in parameters.split(";"):
        name, _, number = parameter.strip().partition("=")
        if name == "w":
            window = header_number(number)
    counted = header_number(count)
    return None if counted is None else (counted, window)
