"""Our files (images.yaml, images.lock, saved plans) read strictly, with the line of every error.

A cattrs converter with camelCase keys that refuses unknown keys and type
coercion, and YAML documents that keep their node tree so any error can say
where it is. JSON is YAML, so saved plans are read the same way. Reading is
bounded: files past 10 MiB, anchors and aliases (a "billion laughs" expands a
few hundred bytes into billions of nodes) and deep nesting are refused.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
import yaml
from cattrs.cols import homogenous_tuple_structure_factory
from cattrs.errors import (
    BaseValidationError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from reconciler import files, plainyaml
from reconciler.errors import InputError
from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.oci.reference import Reference

MAX_DEPTH = plainyaml.MAX_DEPTH
_YAML_KINDS = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
    type(None): "nothing",
}

T = TypeVar("T")
KeyPath = tuple[str | int, ...]
"""Where a value sits in a document: mapping keys and list indexes from the root."""


def camel_case(name: str) -> str:
    """The file's spelling of an attribute: ``amd64_only`` → ``amd64Only``."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _kind_of(value: object) -> str:
    kind = _YAML_KINDS.get(type(value), type(value).__name__)
    return kind if value is None or isinstance(value, (list, dict)) else f"{kind} {value!r}"


def _expect(kind: type) -> Callable[[Any, Any], Any]:
    """A structure hook that refuses to coerce: cattrs would turn ``3.2`` into ``"3.2"``."""

    def structure_exact(value: object, _: object) -> object:
        if type(value) is not kind:
            raise TypeError(f"expected {_YAML_KINDS[kind]}, got {_kind_of(value)}")
        return value

    return structure_exact


def _is_homogeneous_tuple(type_: object) -> bool:
    args = typing.get_args(type_)
    return typing.get_origin(type_) is tuple and len(args) == 2 and args[1] is Ellipsis


def _structure_list_as_tuple(type_: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    structure_items = homogenous_tuple_structure_factory(type_, converter)

    def structure_list(value: object, _: object) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {_kind_of(value)}")
        return structure_items(value, type_)

    return structure_list


OMITTED_WHEN_DEFAULT = {"omit_if_default": True}
"""Field metadata for a key that files written before it existed do not have, and need not get."""


def _camel_case_keys(cls: type) -> dict[str, Any]:
    return {field.name: override(rename=camel_case(field.name), omit_if_default=field.metadata.get("omit_if_default"))
            for field in attrs.fields(cls)}


def _structure_mapping(cls: type, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    structure_fields = make_dict_structure_fn(cls, converter, **_camel_case_keys(cls))

    def structure_mapping(value: object, _: object) -> object:
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {_kind_of(value)}")
        return structure_fields(value, cls)

    return structure_mapping


def _unstructure_mapping(cls: type, converter: cattrs.Converter) -> Callable[[Any], Any]:
    return make_dict_unstructure_fn(cls, converter, **_camel_case_keys(cls))


def yaml_converter() -> cattrs.Converter:
    """A converter for our YAML files: camelCase keys, no unknown keys, no coercion."""
    converter = cattrs.Converter(forbid_extra_keys=True, unstruct_collection_overrides={tuple: list})
    for kind in (str, bool, int):
        converter.register_structure_hook(kind, _expect(kind))
    converter.register_structure_hook_factory(_is_homogeneous_tuple, _structure_list_as_tuple)
    converter.register_structure_hook_factory(attrs.has, _structure_mapping)
    converter.register_unstructure_hook_factory(attrs.has, _unstructure_mapping)
    return converter


def _failures(error: BaseException, path: KeyPath) -> Iterator[tuple[KeyPath, str, str | None]]:
    """Flatten cattrs' nested errors into (where, what is wrong, offending key)."""
    if isinstance(error, (ClassValidationError, IterableValidationError)):
        located, unlocated = error.group_exceptions()
        for sub_error, note in located:
            step = note.index if isinstance(error, IterableValidationError) else camel_case(note.name)
            yield from _failures(sub_error, (*path, step))
        for sub_error in unlocated:
            yield from _failures(sub_error, path)
    elif isinstance(error, ForbiddenExtraKeysError):
        for key in sorted(map(str, error.extra_fields)):
            yield path, f'unknown key "{key}"', key
    elif isinstance(error, KeyError):
        yield path[:-1], f'missing required key "{path[-1]}"', None
    else:
        yield path, str(error), None


class _Loader(plainyaml.SafeLoader):
    """The safe loader, with a value it cannot convert (a 5000-digit number, a 13th month)
    reported as a YAML error at its line instead of a bare ValueError."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as error:
            raise yaml.constructor.ConstructorError(None, None, str(error), node.start_mark) from None


def _refuse_aliases_and_depth(path: Path, text: str) -> None:
    """Our files never need anchors, aliases or deep nesting; refusing them keeps every later walk linear."""
    depth = 0
    for event in yaml.parse(text, Loader=plainyaml.SafeLoader):
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise InputError(
                path, f'YAML anchors and aliases are not allowed here: "{sign}{event.anchor}"',
                line=event.start_mark.line + 1,
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise InputError(path, f"nested deeper than {MAX_DEPTH} levels", line=event.start_mark.line + 1)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


@attrs.frozen
class YamlDocument:
    """A parsed YAML file plus its text, whose node tree any error can take its line from."""

    path: Path
    data: object
    text: str
    entry_key: str
    """The key that identifies a list entry in messages, e.g. ``source``."""

    @functools.cached_property
    def root(self) -> yaml.Node | None:
        """Composed only when a line is asked for: a plain document is read without it (plainyaml)."""
        loader = _Loader(self.text)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()

    @classmethod
    def read(cls, path: Path, entry_key: str, if_missing: str) -> YamlDocument:
        try:
            text = files.read_text(path)
        except FileNotFoundError:
            raise InputError(path, if_missing) from None
        except OSError as error:
            raise InputError(path, f"cannot read: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            line = error.object.count(b"\n", 0, error.start) + 1
            raise InputError(path, f"not UTF-8 text: byte 0x{error.object[error.start]:02x}", line=line) from None
        return cls.parse(path, text, entry_key)

    @classmethod
    def parse(cls, path: Path, text: str, entry_key: str) -> YamlDocument:
        """``text`` as if read from ``path``: how a file about to be written is checked to read back.
        A plain document is built from the parser's events; any other is read, or refused with its
        line, by composing its node tree first."""
        loader = _Loader(text)
        try:
            return cls(path=path, data=plainyaml.load(loader), text=text, entry_key=entry_key)
        except (plainyaml.NotPlain, yaml.YAMLError):
            pass
        finally:
            loader.dispose()
        loader = _Loader(text)
        try:
            _refuse_aliases_and_depth(path, text)
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        except yaml.MarkedYAMLError as error:
            line = error.problem_mark.line + 1 if error.problem_mark else None
            raise InputError(path, f"invalid YAML: {error.problem or error.context}", line=line) from None
        except yaml.reader.ReaderError as error:
            line = text.count("\n", 0, error.position) + 1
            raise InputError(path, f"invalid YAML: {error.reason}", line=line) from None
        finally:
            loader.dispose()
        document = cls(path=path, data=data, text=text, entry_key=entry_key)
        document._refuse_duplicate_keys(root, ())
        return document

    def _refuse_duplicate_keys(self, node: yaml.Node | None, path: KeyPath) -> None:
        """YAML keeps the last of two equal keys; a person meant one of them."""
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, value_node in node.value:
                if key_node.value in seen:
                    raise self.error(path, f'duplicate key "{key_node.value}"', line=key_node.start_mark.line + 1)
                seen.add(key_node.value)
                self._refuse_duplicate_keys(value_node, (*path, key_node.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._refuse_duplicate_keys(item, (*path, index))

    def structure(self, converter: cattrs.Converter, cls: type[T]) -> T:
        """Structure the whole document; the first failure in the file becomes an InputError."""
        try:
            return converter.structure(self.data, cls)
        except (BaseValidationError, TypeError, ValueError) as error:
            failures = [self.error(path, problem, key=key) for path, problem, key in _failures(error, ())]
            raise min(failures, key=lambda failure: failure.line or 0) from None

    def error(
        self, path: KeyPath, problem: str, *, key: str | None = None, line: int | None = None
    ) -> InputError:
        """An InputError about the value at ``path``, on the line of its ``key`` or on ``line`` if given."""
        entry, field = self._describe(path)
        return InputError(
            self.path,
            f"{field}: {problem}" if field else problem,
            line=line or self.line_of(path, key=key),
            entry=entry,
        )

    def line_of(self, path: KeyPath, *, key: str | None = None) -> int | None:
        """The 1-based line of the value at ``path`` (or of its ``key``), else of the nearest enclosing one."""
        node, _ = self._walk((*path, key) if key is not None else path, ending_at_key=key is not None)
        return node.start_mark.line + 1 if node is not None else None

    def _walk(self, steps: KeyPath, *, ending_at_key: bool = False) -> tuple[yaml.Node | None, int]:
        """The deepest node along ``steps``, and how many steps were found."""
        node = self.root
        for taken, step in enumerate(steps):
            child = None
            if isinstance(node, yaml.MappingNode):
                is_last = taken == len(steps) - 1
                child = next(
                    (key_node if ending_at_key and is_last else value_node
                     for key_node, value_node in node.value if key_node.value == str(step)),
                    None,
                )
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                child = node.value[step]
            if child is None:
                return node, taken
            node = child
        return node, len(steps)

    def _describe(self, path: KeyPath) -> tuple[str | None, str]:
        """Split ``path`` into the list entry it is in (``images[2] (source "x")``) and the field."""
        if len(path) >= 2 and isinstance(path[1], int):
            entry = f"{path[0]}[{path[1] + 1}]"
            identity = self._scalar_at((*path[:2], self.entry_key))
            if identity is not None:
                entry += f' ({self.entry_key} "{identity}")'
            inside = path[2:]
        else:
            entry, inside = None, path
        field = "".join(f"[{step + 1}]" if isinstance(step, int) else f".{step}" for step in inside)
        return entry, field.lstrip(".")

    def _scalar_at(self, path: KeyPath) -> str | None:
        node, found = self._walk(path)
        return node.value if found == len(path) and isinstance(node, yaml.ScalarNode) else None


def _structure_digest(value: object, _: object) -> Digest:
    if not isinstance(value, str):
        raise TypeError(f"expected a digest string, got {_kind_of(value)}")
    return Digest.parse(value)


def _structure_reference(value: object, _: object) -> Reference:
    if not isinstance(value, str):
        raise TypeError(f"expected an image reference, got {_kind_of(value)}")
    return reference.parse(value)


def converter() -> cattrs.Converter:
    """The strict converter plus digests as ``sha256:<hex>`` strings and references as written."""
    strict = yaml_converter()
    strict.register_structure_hook(Digest, _structure_digest)
    strict.register_unstructure_hook(Digest, str)
    strict.register_structure_hook(Reference, _structure_reference)
    strict.register_unstructure_hook(Reference, lambda ref: ref.as_written)
    return strict
