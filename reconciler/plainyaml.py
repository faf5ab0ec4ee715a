"""Our YAML files at libyaml's speed: a plain document built straight from the parser's events,
and written straight as the emitter's events.

PyYAML's composer, constructor and representer spend Python calls and objects on every node
even with libyaml: at 10,000 images a lock holds 130,000 scalars, about a second each way.
Here a scalar costs one call, and its implicit type (number, boolean, null) is looked up as
the resolver does, by first character. A document that is not plain (an anchor, alias, tag,
merge key, complex or duplicate key, deep nesting, or bad YAML) is left to PyYAML's own path,
which reads it or says where it is wrong (``documents.YamlDocument``).
"""

from __future__ import annotations

import io
from typing import Any

import yaml
from yaml import events

# libyaml when PyYAML was built with it.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

MAX_DEPTH = 16
"""Our files nest four levels deep; far deeper is a bomb, not a schema error."""

_RESOLVERS = SafeLoader.yaml_implicit_resolvers
"""First character of a plain scalar -> the (tag, pattern) pairs that may give it another type than str."""
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


class NotPlain(Exception):
    """The document needs PyYAML's full path: to be read, or to be refused with its line."""


def _implicit_tag(value: str) -> str:
    """The tag the resolver gives a plain scalar (BaseResolver.resolve, without path resolvers)."""
    for tag, pattern in [*_RESOLVERS.get(value[:1], ()), *_RESOLVERS.get(None, ())]:
        if pattern.match(value):
            return tag
    return _STR


def load(loader: Any) -> object:
    """The single document ``loader`` (a SafeLoader on the text) parses, built from its events;
    NotPlain when it is not plain. Scalars other than strings are made by ``loader``'s constructor."""
    stack: list[Any] = []  # the open collections, innermost last
    keys: list[Any] = []  # per open mapping: its next key (or _NO_KEY), then the keys as written
    document: object = None
    documents = 0
    depth = 0
    while (event := loader.get_event()) is not None:
        kind = type(event)
        if kind is events.ScalarEvent:
            if event.anchor is not None or event.tag is not None:
                raise NotPlain
            value: object = event.value
            if event.implicit[0] and (tag := _implicit_tag(event.value)) != _STR:
                if tag == _MERGE:
                    raise NotPlain
                node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
                try:
                    value = loader.construct_object(node)
                except yaml.YAMLError:
                    raise NotPlain from None
        elif kind is events.MappingStartEvent or kind is events.SequenceStartEvent:
            if event.anchor is not None or event.tag is not None:
                raise NotPlain
            depth += 1
            if depth > MAX_DEPTH:
                raise NotPlain
            value = {} if kind is events.MappingStartEvent else []
        elif kind is events.MappingEndEvent or kind is events.SequenceEndEvent:
            depth -= 1
            if kind is events.MappingEndEvent:
                keys.pop()
            stack.pop()
            continue
        elif kind is events.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise NotPlain
            continue
        elif kind is events.AliasEvent:
            raise NotPlain
        else:  # stream start and end, document end
            continue
        if not stack:
            document = value
        elif type(parent := stack[-1]) is list:
            parent.append(value)
        else:
            pending = keys[-1]
            if pending[0] is _NO_KEY:
                # a key: a scalar, written once in its mapping (the full path compares keys as written)
                if kind is not events.ScalarEvent or event.value in pending[1]:
                    raise NotPlain
                pending[1].add(event.value)
                pending[0] = value
            else:
                parent[pending[0]] = value
                pending[0] = _NO_KEY
        if kind is events.MappingStartEvent:
            stack.append(value)
            keys.append([_NO_KEY, set()])
        elif kind is events.SequenceStartEvent:
            stack.append(value)
    return document


_NO_KEY = object()
"""In an open mapping: the next scalar is a key."""


def dump(data: object) -> str:
    """``yaml.dump(data, Dumper=SafeDumper, sort_keys=False)``, byte for byte, for str, int, bool,
    None, list and dict values (an unstructured attrs value), never with anchors."""
    stream = io.StringIO()
    emitter = SafeDumper(stream)
    try:
        emitter.emit(events.StreamStartEvent())
        emitter.emit(events.DocumentStartEvent(explicit=False))
        _emit(emitter, data)
        emitter.emit(events.DocumentEndEvent(explicit=False))
        emitter.emit(events.StreamEndEvent())
    finally:
        emitter.dispose()
    return stream.getvalue()


def _emit(emitter: Any, value: object) -> None:
    if isinstance(value, str):
        emitter.emit(events.ScalarEvent(None, _STR, (_implicit_tag(value) == _STR, True), value))
    elif isinstance(value, dict):
        emitter.emit(events.MappingStartEvent(None, _MAP, True, flow_style=False))
        for key, item in value.items():
            _emit(emitter, key)
            _emit(emitter, item)
        emitter.emit(events.MappingEndEvent())
    elif isinstance(value, list):
        emitter.emit(events.SequenceStartEvent(None, _SEQ, True, flow_style=False))
        for item in value:
            _emit(emitter, item)
        emitter.emit(events.SequenceEndEvent())
    elif value is None or isinstance(value, (bool, int)):
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        emitter.emit(events.ScalarEvent(None, _implicit_tag(text), (True, False), text))
    else:
        raise TypeError(f"no YAML for {type(value).__name__}")
