"""plainyaml writes exactly what PyYAML's dumper writes and reads exactly what its loader reads,
and leaves every document that is not plain to PyYAML's own path."""

import copy

import pytest
import yaml

from reconciler import documents, plainyaml

# Strings the resolver would read as another type, or that need quoting, escaping or folding.
TRICKY = {
    "strings": ["1", "true", "null", "", "~", "0x1f", "0o17", "1:20", "2001-12-14", "yes", "Off", "-", "- x",
                "a: b", "#x", "x #y", " lead", "trail ", "multi\nline", "é", "\x00", "word " * 30, "<<", "=",
                "1.5", ".inf", ".NaN", "[x]", "{y}", "*a", "&b", "!t", "%p", "@q", "`r", "'s", '"t', "?", ":"],
    "values": [1, 0, -5, 10**30, True, False, None, [], {}, [[]], {"k": None}, [{"a": [1]}]],
    "": "an empty key",
    "1": 1,
    "null": None,
}


def load(text: str) -> object:
    loader = documents._Loader(text)
    try:
        return plainyaml.load(loader)
    finally:
        loader.dispose()


@pytest.mark.parametrize("data", [TRICKY, [], {}, "x", None, 1, [TRICKY, copy.deepcopy(TRICKY)]])
def test_dump_is_pyyamls_dump_byte_for_byte_and_reads_back(data):
    written = plainyaml.dump(data)

    assert written == yaml.dump(data, Dumper=plainyaml.SafeDumper, sort_keys=False)
    assert load(written) == yaml.load(written, Loader=plainyaml.SafeLoader) == data


def test_dump_writes_a_value_met_twice_again_where_pyyaml_would_write_an_alias():
    shared = {"k": ["v"]}

    assert "&id001" in yaml.dump([shared, shared], Dumper=plainyaml.SafeDumper)
    assert plainyaml.dump([shared, shared]) == "- k:\n  - v\n- k:\n  - v\n"


def test_dump_refuses_a_type_it_does_not_write():
    with pytest.raises(TypeError, match="no YAML for float"):
        plainyaml.dump({"a": 1.5})


def test_load_reads_what_pyyaml_reads_of_a_hand_written_file():
    text = "a: 1\nb: 'quoted: 2'\nc: [x, 2001-12-14, 1.5, ~]\nd:\n  - e: yes\n    f: |\n      block\n"

    assert load(text) == yaml.load(text, Loader=plainyaml.SafeLoader)


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: *x\n",  # anchor and alias
    "a: !!str 1\n",  # a tag
    "a: !custom 1\n",
    "<<: {a: 1}\nb: 2\n",  # a merge key
    "a: 1\na: 2\n",  # a duplicate key
    "1: a\n'1': b\n",  # the same key as written, once plain, once quoted
    "? [a]\n: b\n",  # a complex key
    "a: 1\n---\nb: 2\n",  # two documents
    "[" * (plainyaml.MAX_DEPTH + 1) + "]" * (plainyaml.MAX_DEPTH + 1),
    "a: 2001-13-45\n",  # a value its constructor refuses
])
def test_load_leaves_a_document_that_is_not_plain_to_pyyaml(text):
    with pytest.raises(plainyaml.NotPlain):
        load(text)


def test_load_stops_at_bad_yaml_with_pyyamls_error():
    with pytest.raises(yaml.YAMLError):
        load("a: [1, 2\n")
