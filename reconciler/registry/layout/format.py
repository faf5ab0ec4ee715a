"""The OCI image layout's files (image-spec ``image-layout.md``): ``oci-layout``, ``index.json``
and ``blobs/<alg>/<hex>``, read as untrusted input and written the same way every time."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import attrs

from reconciler.oci import limits, mediatypes
from reconciler.oci.digest import Digest, InvalidDigest
from reconciler.oci.manifest import Descriptor
from reconciler.registry.client import NotFound
from reconciler.registry.errors import RegistryError

HOST = "oci-layout"
"""What messages name as the host of a layout, where a registry's would stand."""
LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
LAYOUT_FILE_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
LOCK_FILE = "images.lock"
EXTRA_FILES = frozenset({LOCK_FILE})
"""Files beside the spec's that a layout of ours may hold (the lock it was exported from)."""
TOP_FILES = frozenset({LAYOUT_FILE, INDEX_FILE}) | EXTRA_FILES
_BLOB_NAME = re.compile(r"blobs/([a-z0-9]+)/([a-f0-9]+)")


class LayoutError(RegistryError):
    """A layout that cannot be used as it is: the message names its path and what is wrong."""


class MissingFromLayout(LayoutError, NotFound):
    """A manifest or blob the layout does not hold (a ``NotFound``, as a registry's absence is)."""


@attrs.frozen
class IndexEntry:
    """One descriptor of ``index.json`` and the ref name it is annotated with (None: none)."""

    descriptor: Descriptor
    ref_name: str | None


def blob_name(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def blob_digest(name: str) -> Digest | None:
    """The digest a member or file name ``blobs/<alg>/<hex>`` stands for; None when it is no such name."""
    match = _BLOB_NAME.fullmatch(name)
    if match is None:
        return None
    try:
        return Digest.parse(f"{match[1]}:{match[2]}")
    except InvalidDigest:
        return None


def is_layout_directory(name: str) -> bool:
    """``blobs`` and ``blobs/<alg>``: the only directories a layout has."""
    parts = name.split("/")
    return parts[0] == "blobs" and len(parts) <= 2 and all(re.fullmatch(r"[a-z0-9]+", part) for part in parts)


def check_layout_file(data: bytes, where: str) -> None:
    """``oci-layout`` must state the one version this reader knows."""
    try:
        version = limits.parse_json(data).get("imageLayoutVersion")
    except (ValueError, AttributeError):
        raise LayoutError(f"{where}: {LAYOUT_FILE} is not a JSON object") from None
    if version != LAYOUT_VERSION:
        raise LayoutError(f"{where}: {LAYOUT_FILE} states imageLayoutVersion {_quoted(version)}, "
                          f"only {LAYOUT_VERSION} is supported")


def index_bytes(entries: Iterable[IndexEntry]) -> bytes:
    """``index.json`` for ``entries``: sorted by ref name then digest, compact JSON, the same bytes every time."""
    manifests = []
    for entry in sorted(entries, key=lambda entry: (entry.ref_name or "", str(entry.descriptor.digest))):
        annotations = dict(entry.descriptor.annotations)
        if entry.ref_name is not None:
            annotations[REF_NAME] = entry.ref_name
        descriptor = {"mediaType": entry.descriptor.media_type, "digest": str(entry.descriptor.digest),
                      "size": entry.descriptor.size}
        if annotations:
            descriptor["annotations"] = dict(sorted(annotations.items()))
        manifests.append(descriptor)
    index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": manifests}
    return json.dumps(index, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def parse_index(data: bytes, where: str) -> tuple[IndexEntry, ...]:
    """``index.json``'s descriptors, each checked for the types the spec gives them."""
    what = f"{where}: {INDEX_FILE}"
    try:
        index = limits.parse_json(data)
    except ValueError as error:
        raise LayoutError(f"{what} is not JSON: {str(error).splitlines()[0]}") from None
    if not isinstance(index, dict):
        raise LayoutError(f"{what} is not a JSON object")
    if index.get("schemaVersion") != 2:
        raise LayoutError(f"{what}: schemaVersion is {_quoted(index.get('schemaVersion'))}, not 2")
    if index.get("mediaType", mediatypes.OCI_INDEX) != mediatypes.OCI_INDEX:
        raise LayoutError(f"{what}: mediaType is {_quoted(index.get('mediaType'))}, not {mediatypes.OCI_INDEX}")
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise LayoutError(f"{what}: manifests is not a list")
    return tuple(_index_entry(descriptor, f"{what}: manifests[{number}]")
                 for number, descriptor in enumerate(manifests))


def _index_entry(descriptor: object, what: str) -> IndexEntry:
    if not isinstance(descriptor, dict):
        raise LayoutError(f"{what} is not a JSON object")
    media_type, digest, size = descriptor.get("mediaType"), descriptor.get("digest"), descriptor.get("size")
    annotations = descriptor.get("annotations") or {}
    if not isinstance(media_type, str) or not mediatypes.is_media_type(media_type):
        raise LayoutError(f"{what}: mediaType {_quoted(media_type)} is no media type")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise LayoutError(f"{what}: size {_quoted(size)} is not a whole number of bytes")
    if not isinstance(annotations, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in annotations.items()
    ):
        raise LayoutError(f"{what}: annotations are not strings naming strings")
    try:
        parsed = Digest.parse(digest if isinstance(digest, str) else "")
    except InvalidDigest:
        raise LayoutError(f"{what}: digest {_quoted(digest)} is not a sha256 or sha512 digest") from None
    ref_name = annotations.get(REF_NAME)
    others = {key: value for key, value in annotations.items() if key != REF_NAME}
    return IndexEntry(Descriptor(media_type, parsed, size, annotations=others), ref_name)


def _quoted(value: object) -> str:
    """A value from the file as a message shows it: its JSON, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:39] + "…"
