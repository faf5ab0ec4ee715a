"""Docker Hub's ratelimit headers read as numbers within bounds, and waits spelt in sane units
(registry/ratelimit.py). A registry's header is untrusted: a number in other digits is no number."""

from __future__ import annotations

import math

import httpx
import pytest

from reconciler.oci.limits import NUMBER_DIGITS
from reconciler.registry.ratelimit import YEAR, PullLimit, duration, spent

TOO_LONG = "9" * (NUMBER_DIGITS + 1)


def headers(limit: str, remaining: str) -> httpx.Headers:
    """As a registry sends them: bytes on the wire, UTF-8 where they are not ASCII."""
    return httpx.Headers({"ratelimit-limit": limit.encode(), "ratelimit-remaining": remaining.encode()})


@pytest.mark.parametrize(("limit", "remaining", "expected"), [
    ("100;w=21600", "76;w=21600", PullLimit(limit=100, remaining=76, window=21600)),
    ("100", "76", PullLimit(limit=100, remaining=76, window=0)),
    ("100;w=21600", "76", PullLimit(limit=100, remaining=76, window=21600)),
    (" 100 ;w=21600", "76; w=3600", PullLimit(limit=100, remaining=76, window=3600)),
    ("100;w=\u00b2", "76;w=\u00b9\u00b2", PullLimit(limit=100, remaining=76, window=0)),
    ("100;w=21600", f"76;w={TOO_LONG}", PullLimit(limit=100, remaining=76, window=21600)),
    ("9" * NUMBER_DIGITS, "0", PullLimit(limit=int("9" * NUMBER_DIGITS), remaining=0, window=0)),
], ids=["both windows", "no window", "the limit's window", "spaces", "a window in superscripts is absent",
        "a window too long is absent", "the longest count"])
def test_a_budget_is_read_from_ascii_numbers(limit, remaining, expected):
    assert PullLimit.from_headers(headers(limit, remaining)) == expected


@pytest.mark.parametrize("remaining", [
    "\u00b9\u00b2;w=21600", "\u0661\u0662;w=21600", "\uff11\uff12", "12.5;w=21600", "-1;w=21600", "+12", "1e3",
    "inf", "nan", f"{TOO_LONG};w=21600", ";w=21600", "twelve",
], ids=["superscripts", "arabic-indic", "fullwidth", "fraction", "negative", "plus", "exponent", "inf", "nan",
        "too long", "no count", "a word"])
def test_a_count_in_anything_but_ascii_digits_is_as_if_the_header_were_absent(remaining):
    assert PullLimit.from_headers(headers("100;w=21600", remaining)) is None
    assert spent(httpx.Response(429, headers=headers("100;w=21600", remaining))) is None


def test_a_spent_budget_needs_a_zero_in_ascii():
    assert spent(httpx.Response(429, headers=headers("100;w=21600", "0;w=21600"))) == PullLimit(100, 0, 21600)
    assert spent(httpx.Response(429, headers=headers("100;w=21600", "\u2070;w=21600"))) is None  # superscript 0


@pytest.mark.parametrize(("seconds", "spelt"), [
    (0, "0s"), (0.4, "0s"), (30, "30s"), (90, "1m30s"), (2700, "45m"), (5400, "1h30m"), (7200, "2h"),
    (21600, "6h"), (86399.6, "1d"), (86400, "1d"), (90000, "1d01h"), (3 * 86400 + 4 * 3600 + 59 * 60, "3d04h"),
    (YEAR - 1, "364d23h"), (YEAR, "more than a year"), (1e30, "more than a year"),
    (math.inf, "more than a year"), (math.nan, "more than a year"), (-5, "0s"),
])
def test_a_wait_is_spelt_in_units_that_stay_sane(seconds, spelt):
    assert duration(seconds) == spelt
