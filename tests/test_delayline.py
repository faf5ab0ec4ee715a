"""The benchmark's delay line (bench/delayline.py): its rate cap, its reset and its counters, on loopback.

The bench measures image-syncer against a link these make; a line that delivered faster than its
rate, or cut an answer anywhere but where it was told, would make every figure of
bench/large.py wrong.  Tests assert no wall-clock time, so the rate itself is checked where it is
used: each bench/large.py run times raw GETs through the same line against bytes / rate, and
``delayline.py --selftest --rate R`` checks it on demand; here a rated line must still deliver every byte.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _linecheck import bulk  # noqa: E402
from delayline import parse_rate  # noqa: E402

MiB = 1024 * 1024


@pytest.mark.parametrize(("text", "rate"), [("50000000", 50e6), ("400mbit", 50e6), ("50m", 50e6),
                                            ("1.5gbit", 187.5e6), ("8kbit", 1e3)])
def test_rate_parses_bytes_or_bits(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "-5", "0", "400 mbit/s", "10tbit"])
def test_a_bad_rate_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a rate"):
        parse_rate(text)


def test_connections_share_the_rate_and_every_byte_arrives():
    size, rate = 4 * MiB, 80e6
    seen = bulk(size, connections=2, rtt_ms=0, rate=rate)
    assert seen.received == [size, size]
    assert seen.resets == 0
    assert seen.counters["to_client"] == 2 * size and seen.counters["connections"] == 2


def test_without_a_rate_the_line_is_not_capped_but_still_counts():
    seen = bulk(4 * MiB, connections=1, rtt_ms=0)
    assert seen.received == [4 * MiB] and seen.counters["to_client"] == 4 * MiB


def test_the_first_answer_past_the_byte_count_is_cut_there_with_a_reset_once():
    size, cut = 4 * MiB, 3 * MiB + 12345
    seen = bulk(size, connections=2, rtt_ms=0, rate=400e6, reset_after=cut)
    assert sorted(seen.received) == [cut, size]  # one of the two, whichever passed first; the other whole
    assert seen.resets == 1
    assert seen.counters["resets"] == 1 and seen.counters["to_client"] == cut + size
