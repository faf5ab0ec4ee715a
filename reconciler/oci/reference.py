"""Image references, parsed and normalized by the distribution reference rules.

Kept separate from the transport so that config validation can use it without
any network concern (the split of go-containerregistry's ``pkg/name``).
"""

from __future__ import annotations

import ipaddress
import re

import attrs

from reconciler.oci.digest import Digest, InvalidDigest
from reconciler.oci.errors import OCIError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")  # ASCII only, as the distribution grammar
_MAX_NAME_LENGTH = 255


class InvalidReference(OCIError, ValueError):
    """A string that is not a valid image reference; the message says why."""


def hostname(host: str) -> str:
    """``host[:port]`` without the port; IPv6 brackets removed."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0]


def host_port(name: str, port: int) -> str:
    """``name:port``, an IPv6 address in brackets: the inverse of ``hostname``."""
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address, with or without a port."""
    name = hostname(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_google_registry(registry: str) -> bool:
    """Whether ``registry`` (a host, maybe with a port) is GCR or Artifact Registry."""
    name = hostname(registry).lower()
    return name == "gcr.io" or name.endswith(".gcr.io") or name.endswith("-docker.pkg.dev")


@attrs.frozen(order=True)
class Repository:
    """A repository on a registry, e.g. ``docker.io`` + ``library/busybox``."""

    registry: str
    path: str

    @property
    def api_host(self) -> str:
        """The host the registry API answers on (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}"


@attrs.frozen(order=True)
class Reference:
    """A repository plus a tag, a digest, or both."""

    repository: Repository
    tag: str | None = None
    digest: Digest | None = None
    written: str | None = attrs.field(default=None, eq=False, order=False, repr=False, kw_only=True)
    """The text it was parsed from. Equal references may be written differently (``busybox``,
    ``docker.io/library/busybox:latest``); files made for people keep the author's spelling."""

    @property
    def as_written(self) -> str:
        return self.written or str(self)

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest when known, else the tag."""
        return str(self.digest) if self.digest else str(self.tag)

    def __str__(self) -> str:
        text = str(self.repository)
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@attrs.frozen
class WrittenReference:
    """A reference split as the user wrote it, before any normalization."""

    name: str
    tag: str | None
    digest: str | None


def split(text: str) -> WrittenReference:
    """Split ``name[:tag][@digest]`` without normalizing the name."""
    name, _, digest = text.partition("@")
    tag = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
    return WrittenReference(name=name, tag=tag, digest=digest or None)


def parse_repository(name: str) -> Repository:
    """Normalize a repository name: ``busybox`` → ``docker.io/library/busybox``."""
    if not name:
        raise InvalidReference("empty repository name")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _DOMAIN.fullmatch(first):
            raise InvalidReference(f"invalid registry host {first!r} in {name!r}")
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, name
    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            raise InvalidReference(
                f"invalid repository path {path!r} in {name!r}: components are lowercase "
                "letters and digits separated by '.', '_', '__' or '-'"
            )
    if len(f"{registry}/{path}") > _MAX_NAME_LENGTH:
        raise InvalidReference(f"repository name {name!r} is longer than {_MAX_NAME_LENGTH}")
    return Repository(registry=registry, path=path)


def parse(text: str, default_tag: str | None = "latest") -> Reference:
    """Parse ``[host[:port]/]path[:tag][@digest]``; a bare name gets ``default_tag``."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidReference("empty image reference")
    if text != text.strip():
        raise InvalidReference(f"image reference {text!r} has surrounding whitespace")
    written = split(text)
    repository = parse_repository(written.name)
    if written.tag is not None and not _TAG.fullmatch(written.tag):
        raise InvalidReference(f"invalid tag {written.tag!r} in {text!r}")
    digest = None
    if written.digest is not None:
        try:
            digest = Digest.parse(written.digest)
        except InvalidDigest as error:
            raise InvalidReference(f"{error} in {text!r}") from None
    tag = written.tag
    if tag is None and digest is None:
        tag = default_tag
    return Reference(repository=repository, tag=tag, digest=digest, written=text)
