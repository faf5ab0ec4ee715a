"""Media types the client understands: manifests, the Accept header built from them, Sigstore bundles."""

import re

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
IMAGE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES
SCHEMA1_TYPES = frozenset({
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
})
"""Docker's first manifests: no config to copy, and a signed one's digest is not that of its bytes."""
SCHEMA1_REFUSED = ("schema 1 manifests are not supported; convert the image to schema 2 or OCI "
                   "(e.g. `skopeo copy --format v2s2`) and mirror that")

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
"""A Sigstore bundle: the artifactType of cosign v3's signature referrers, and of their one layer."""

ACCEPT = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

# RFC 6838's type/subtype: a restricted name of at most 127 characters on each side.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


def is_media_type(text: str) -> bool:
    """Whether a registry's word for a type is one: what is pinned in the lock stays short and plain."""
    return _MEDIA_TYPE.fullmatch(text) is not None


def served(content_type: str | None) -> str | None:
    """The media type a ``Content-Type`` header names, its parameters dropped; None when it names none."""
    return (content_type or "").split(";", 1)[0].strip() or None
