"""Manifests as exact bytes plus just enough parsing to find what they reference.

The bytes are the identity (their sha256 is the digest), so a manifest is never
re-serialized: it is parsed only to walk to its children and blobs.
"""

from __future__ import annotations

import attrs
import cattrs

from reconciler.oci import mediatypes
from reconciler.oci.digest import Digest, InvalidDigest
from reconciler.oci.errors import OCIError
from reconciler.oci.limits import parse_json

_NON_DISTRIBUTABLE = frozenset({
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
})


class InvalidManifest(OCIError):
    """Manifest bytes that do not say what they claim to be."""


@attrs.frozen(order=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


@attrs.frozen
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class _ImageBody:
    config: Descriptor
    layers: tuple[Descriptor, ...] = ()


@attrs.frozen
class _IndexBody:
    manifests: tuple[Descriptor, ...] = ()


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(Digest, lambda value, _: Digest.parse(value))
    converter.register_structure_hook(
        Descriptor,
        cattrs.gen.make_dict_structure_fn(
            Descriptor, converter, media_type=cattrs.gen.override(rename="mediaType"),
            # Go's registries accept `"annotations": null` (a nil map): read it as none.
            annotations=cattrs.gen.override(
                struct_hook=lambda value, _: {} if value is None else converter.structure(value, dict[str, str])
            ),
        ),
    )
    return converter


_converter = _make_converter()


@attrs.frozen
class Manifest:
    media_type: str
    digest: Digest
    data: bytes = attrs.field(repr=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in mediatypes.INDEX_TYPES

    def children(self) -> tuple[Descriptor, ...]:
        """The platform manifests of an index; empty for an image."""
        if not self.is_index:
            return ()
        return self._structure(_IndexBody).manifests

    def blobs(self) -> tuple[Descriptor, ...]:
        """Config and layers of an image that a registry is expected to hold."""
        if self.is_index:
            return ()
        body = self._structure(_ImageBody)
        return (body.config,) + tuple(
            layer for layer in body.layers if layer.media_type not in _NON_DISTRIBUTABLE
        )

    def layers(self) -> tuple[Descriptor, ...]:
        """An image's layers as listed, annotations included (a cosign signature's payloads); empty for an index."""
        if self.is_index:
            return ()
        return self._structure(_ImageBody).layers

    def platforms(self) -> tuple[str, ...]:
        return tuple(sorted({str(child.platform) for child in self.children() if child.platform}))

    def _structure(self, body_type: type) -> _ImageBody | _IndexBody:
        try:
            return _converter.structure(parse_json(self.data), body_type)
        except (ValueError, cattrs.BaseValidationError, InvalidDigest) as error:
            raise InvalidManifest(f"manifest {self.digest} is malformed: {_first_line(error)}") from None


def parse(data: bytes, content_type: str | None, digest: Digest) -> Manifest:
    """The type is the body's own ``mediaType``; a body without one (OCI allows it) takes the
    ``Content-Type`` where that is a manifest type, else its shape's. A ``Content-Type`` naming another
    manifest type than the body is refused, and so are a type not in ``MANIFEST_TYPES`` and schema 1."""
    try:
        body = parse_json(data)
    except ValueError as error:
        raise InvalidManifest(f"manifest {digest} is not JSON: {_first_line(error)}") from None
    if not isinstance(body, dict):
        raise InvalidManifest(f"manifest {digest} is not a JSON object")
    declared = body.get("mediaType")
    served = mediatypes.served(content_type)
    if not isinstance(declared, str | None):
        raise InvalidManifest(f"manifest {digest} has a mediaType that is not a string")
    if body.get("schemaVersion") == 1:
        raise InvalidManifest(f"manifest {digest} has schemaVersion 1: {mediatypes.SCHEMA1_REFUSED}")
    if declared and served in mediatypes.MANIFEST_TYPES and declared != served:
        raise InvalidManifest(f"manifest {digest} is served as {served} but its body says {declared!r}")
    media_type = declared or (served if served in mediatypes.MANIFEST_TYPES else _guess_untyped(body))
    if media_type not in mediatypes.MANIFEST_TYPES:
        raise InvalidManifest(f"manifest {digest} has unsupported media type {declared or served!r}")
    return Manifest(media_type=media_type, digest=digest, data=data)


def _guess_untyped(body: dict) -> str | None:
    """OCI lets ``mediaType`` be omitted; the shape tells an index from an image."""
    if body.get("schemaVersion") != 2:
        return None
    if "manifests" in body:
        return mediatypes.OCI_INDEX
    if "config" in body and "layers" in body:
        return mediatypes.OCI_MANIFEST
    return None


def _first_line(error: BaseException) -> str:
    if isinstance(error, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(error)) or str(error)
    return str(error).splitlines()[0] if str(error) else type(error).__name__
