"""reconciler/errors.py: one error, one line: how a long value, many problems and a multi-line
message are cut down, and how an InputError names its file, line and entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import MAX_MESSAGE, MAX_QUOTED, InputError, first_and_count, one_line, shorten


@pytest.mark.parametrize("length", [0, 1, MAX_QUOTED - 1, MAX_QUOTED])
def test_shorten_keeps_text_up_to_the_limit(length):
    text = "x" * length
    assert shorten(text) == text


def test_shorten_cuts_longer_text_to_the_limit_with_an_ellipsis():
    """The cut text is exactly the limit long, so a message's length is known in advance."""
    cut = shorten("abcdefghij", limit=5)
    assert cut == "abcd…"
    assert len(shorten("y" * (MAX_QUOTED + 1))) == MAX_QUOTED


def test_first_and_count_says_how_many_more_problems_there_are():
    assert first_and_count(["only"]) == "only"
    assert first_and_count(["first", "second"]) == "first (and 1 more)"
    assert first_and_count(["a", "b", "c", "d"]) == "a (and 3 more)"


def test_one_line_joins_the_lines_of_a_message():
    assert one_line("cannot pin\nbusybox:1\n") == "cannot pin busybox:1"


def test_one_line_cuts_every_quoted_value_but_not_the_words_around_it():
    """A 1 MiB source quoted in a message must not become a 1 MiB line; the sentence stays readable."""
    long_value = "a" * 500
    message = one_line(f"source '{long_value}' and \"{long_value}\" are refused")
    quoted = "'" + "a" * (MAX_QUOTED - 1) + "…'"
    assert message == f"source {quoted} and \"{quoted[1:-1]}\" are refused"


def test_one_line_takes_an_apostrophe_for_no_quote():
    """``doesn't ... 'x'`` has one quoted value, not one starting at the apostrophe."""
    message = "it doesn't exist: '" + "b" * 200 + "'"
    assert one_line(message) == "it doesn't exist: '" + "b" * (MAX_QUOTED - 1) + "…'"


def test_one_line_bounds_the_whole_message():
    message = one_line("word " * 1000)
    assert len(message) == MAX_MESSAGE
    assert message.endswith("…")


def test_input_error_keeps_its_parts_for_callers_and_prints_one_line():
    error = InputError(Path("dir/images.yaml"), "tag: expected\na string", line=4, entry="images[2]")

    assert str(error) == "dir/images.yaml:4: images[2]: tag: expected a string"
    assert (error.file, error.line, error.entry, error.problem) == (
        "dir/images.yaml", 4, "images[2]", "tag: expected\na string")


def test_input_error_without_line_or_entry_names_the_file_alone():
    assert str(InputError("images.lock", "file not found")) == "images.lock: file not found"
    assert str(InputError("images.lock", "bad", entry="images[1]")) == "images.lock: images[1]: bad"
    assert str(InputError("images.lock", "bad", line=0)) == "images.lock:0: bad"
