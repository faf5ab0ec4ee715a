"""reconciler/documents.py: our files read strictly (no unknown key, no coercion, nothing that
can explode) with the file and line of every error (writing them: test_files.py).

The strict reading is tested on a small schema of its own, so a failure here is the reader's and
not images.yaml's; config's own messages are in test_config.py, the lock's in test_lockfile.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import attrs
import pytest

from reconciler import documents
from reconciler.documents import MAX_DEPTH, YamlDocument
from reconciler.errors import InputError
from reconciler.oci import limits, reference
from reconciler.oci.digest import Digest
from reconciler.oci.reference import Reference



@attrs.frozen
class Entry:
    name: str
    count: int = 0
    enabled: bool = False
    labels: tuple[str, ...] = ()
    max_items: int | None = None


@attrs.frozen
class Document:
    entries: tuple[Entry, ...]


@attrs.frozen
class Pinned:
    source: Reference
    digest: Digest


def read(tmp_path: Path, text: str, cls: type = Document):
    path = tmp_path / "doc.yaml"
    return YamlDocument.parse(path, textwrap.dedent(text), "name").structure(documents.converter(), cls)


def refusal(tmp_path: Path, text: str, cls: type = Document) -> str:
    """The error reading ``text`` gives, without the path in front."""
    with pytest.raises(InputError) as raised:
        read(tmp_path, text, cls)
    message = str(raised.value)
    assert "\n" not in message
    return message.removeprefix(f"{tmp_path / 'doc.yaml'}:")


# --- strict structuring ----------------------------------------------------------------------


def test_a_valid_document_is_structured_with_camel_case_keys(tmp_path):
    document = read(tmp_path, """\
        entries:
        - name: a
          count: 3
          enabled: true
          labels: [x, y]
          maxItems: 7
        - name: b
        """)
    assert document == Document((Entry("a", 3, True, ("x", "y"), 7), Entry("b")))


def test_camel_case_is_the_files_spelling_of_an_attribute():
    assert [documents.camel_case(name) for name in ("source", "amd64_only", "max_items_at_once")] == [
        "source", "amd64Only", "maxItemsAtOnce"]


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("entries:\n- name: a\n  max_items: 1\n",
                 '3: entries[1] (name "a"): unknown key "max_items"', id="the attribute's own spelling"),
    pytest.param("entries: []\nextra: 1\n", '2: unknown key "extra"', id="top level"),
    pytest.param("entries:\n- name: a\n- name: b\n  colour: red\n  Count: 1\n",
                 '4: entries[2] (name "b"): unknown key "colour"', id="the first of two in the entry"),
])
def test_an_unknown_key_is_refused_on_its_line(tmp_path, text, message):
    assert refusal(tmp_path, text) == message


@pytest.mark.parametrize(("value", "field", "got"), [
    ("3.20", "name", "a number 3.2"),
    ("true", "name", "a boolean True"),
    ("'3'", "count", "a string '3'"),
    ("true", "count", "a boolean True"),
    ("2.0", "count", "a number 2.0"),
    ("1", "enabled", "a number 1"),
    ("'yes'", "enabled", "a string 'yes'"),
    ("[]", "enabled", "a list"),
    ("{}", "count", "a mapping"),
    ("''", "maxItems", "a string ''"),
])
def test_a_value_of_another_type_is_refused_not_coerced(tmp_path, value, field, got):
    """cattrs would read ``tag: 3.20`` as the string "3.2", silently the wrong tag."""
    kinds = {"name": "a string", "count": "a number", "enabled": "a boolean", "maxItems": "a number"}
    text = f"entries:\n- name: a\n  {field}: {value}\n" if field != "name" else f"entries:\n- name: {value}\n"
    line = 3 if field != "name" else 2
    entry = f'entries[1] (name "{value if field == "name" else "a"}")'  # a wrong name still names its entry
    assert refusal(tmp_path, text) == f"{line}: {entry}: {field}: expected {kinds[field]}, got {got}"


def test_a_scalar_where_a_list_belongs_is_refused_not_split_into_characters(tmp_path):
    assert refusal(tmp_path, "entries:\n- name: a\n  labels: xy\n") == (
        "3: entries[1] (name \"a\"): labels: expected a list, got a string 'xy'")


def test_a_wrong_item_in_a_list_names_its_position(tmp_path):
    assert refusal(tmp_path, "entries:\n- name: a\n  labels:\n  - x\n  - 5\n") == (
        '5: entries[1] (name "a"): labels[2]: expected a string, got a number 5')


def test_a_missing_required_key_is_reported_at_the_mapping_that_lacks_it(tmp_path):
    assert refusal(tmp_path, "entries:\n- count: 1\n") == '2: entries[1]: missing required key "name"'
    assert refusal(tmp_path, "{}\n") == '1: missing required key "entries"'


def test_the_first_failure_in_the_file_is_reported_whatever_order_cattrs_finds_them(tmp_path):
    text = "entries:\n- name: a\n  count: x\n- name: b\n  enabled: 1\nunknown: 1\n"
    assert refusal(tmp_path, text).startswith('3: entries[1] (name "a"): count:')


def test_digests_and_references_read_as_values_and_write_back_as_written(tmp_path):
    digest = Digest.of(b"x")
    pinned = read(tmp_path, f"source: Docker.IO/library/busybox:1\ndigest: {digest}\n", Pinned)

    assert pinned == Pinned(reference.parse("Docker.IO/library/busybox:1"), digest)
    assert documents.converter().unstructure(pinned) == {
        "source": "Docker.IO/library/busybox:1", "digest": str(digest)}


@pytest.mark.parametrize(("text", "message"), [
    ("source: 5\ndigest: sha256:x\n", "1: source: expected an image reference, got a number 5"),
    (f"source: a:1\ndigest: [{Digest.of(b'x')}]\n", "2: digest: expected a digest string, got a list"),
])
def test_a_digest_or_reference_that_is_no_string_is_refused(tmp_path, text, message):
    assert refusal(tmp_path, text, Pinned) == message


# --- what the YAML reader refuses -----------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("base: &b {name: a}\nentries: [*b]\n", '1: YAML anchors and aliases are not allowed here: "&b"'),
    ("entries:\n- name: a\n- *undefined\n", '3: YAML anchors and aliases are not allowed here: "*undefined"'),
])
def test_anchors_and_aliases_are_refused_on_their_line(tmp_path, text, message):
    """An alias is how a few hundred bytes expand into billions of nodes."""
    assert refusal(tmp_path, text) == message


def test_a_billion_laughs_is_refused_before_it_is_expanded(tmp_path):
    lines = ['a0: &a0 ["lol"]'] + [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 10)]
    assert refusal(tmp_path, "\n".join(lines) + "\n").startswith("1: YAML anchors and aliases")


def test_nesting_up_to_the_limit_is_read_and_one_deeper_is_refused_on_its_line(tmp_path):
    def nested(depth: int) -> str:
        return "x: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"  # the top mapping is one level

    path = tmp_path / "doc.yaml"
    assert YamlDocument.parse(path, nested(MAX_DEPTH), "name").data is not None
    with pytest.raises(InputError) as raised:
        YamlDocument.parse(path, "# deep\n" + nested(MAX_DEPTH + 1), "name")
    assert str(raised.value) == f"{path}:2: nested deeper than {MAX_DEPTH} levels"


@pytest.mark.parametrize(("text", "message"), [
    ("entries:\n- name: a\n  count: " + "9" * 5000 + "\n", "3: invalid YAML: "),
    ("entries:\n- name: a\n  when: 2024-13-01\n", "3: invalid YAML: month must be in 1..12"),
    ("entries: [\n", "2: invalid YAML: "),
    ("entries:\n- name: \x07\n", "2: invalid YAML: control characters are not allowed"),
])
def test_what_yaml_cannot_read_is_one_line_at_its_line(tmp_path, text, message):
    path = tmp_path / "doc.yaml"
    with pytest.raises(InputError) as raised:
        YamlDocument.parse(path, text, "name")
    assert str(raised.value).startswith(f"{path}:{message}")
    assert "\n" not in str(raised.value)


def test_a_duplicate_key_in_a_nested_mapping_is_refused_on_its_second_line(tmp_path):
    """YAML would keep the last silently."""
    assert refusal(tmp_path, "entries:\n- name: a\n  count: 1\n  count: 2\n") == (
        '4: entries[1] (name "a"): duplicate key "count"')


def test_json_is_read_as_yaml_with_its_lines(tmp_path):
    """Saved plans are JSON; their errors name lines too."""
    text = '{\n  "entries": [\n    {"name": "a",\n     "count": "1"}\n  ]\n}\n'
    assert refusal(tmp_path, text) == "4: entries[1] (name \"a\"): count: expected a number, got a string '1'"


# --- reading a file -------------------------------------------------------------------------


def read_file(path: Path) -> YamlDocument:
    return YamlDocument.read(path, "name", if_missing="no such document; run init")


def test_a_missing_file_gives_the_callers_words(tmp_path):
    with pytest.raises(InputError) as raised:
        read_file(tmp_path / "doc.yaml")
    assert str(raised.value) == f"{tmp_path / 'doc.yaml'}: no such document; run init"


def test_a_file_past_the_size_cap_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "doc.yaml"
    with open(path, "wb") as file:
        file.truncate(limits.FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(InputError, match=r": cannot read: larger than the limit of "):
        read_file(path)


def test_a_file_at_the_size_cap_is_read(tmp_path):
    path = tmp_path / "doc.yaml"
    path.write_bytes(b"entries: []\n".ljust(limits.FILE_BYTES, b" "))
    assert read_file(path).data == {"entries": []}


def test_bytes_that_are_not_utf8_are_refused_on_their_line(tmp_path):
    path = tmp_path / "doc.yaml"
    path.write_bytes(b"entries:\n- name: caf\xe9\n")
    with pytest.raises(InputError) as raised:
        read_file(path)
    assert str(raised.value) == f"{path}:2: not UTF-8 text: byte 0xe9"


def test_a_directory_is_refused_as_unreadable(tmp_path):
    with pytest.raises(InputError, match=r"^.*: cannot read: "):
        read_file(tmp_path)
