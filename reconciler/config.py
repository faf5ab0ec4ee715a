"""images.yaml, the desired state: which source images to mirror, and under which tags.

Reads the original image-syncer file unchanged, but strictly: a typo must fail with
the file, line and entry instead of silently mirroring something else.
"""

from __future__ import annotations

import re
from pathlib import Path

from typing import TYPE_CHECKING

import attrs

from reconciler.documents import YamlDocument, yaml_converter
from reconciler.registry import reference
from reconciler.registry.digest import Digest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from reconciler.registry.reference import InvalidReference, Reference

_PLATFORM = re.compile(r"[a-z0-9_]+/[a-z0-9_]+(?:/[a-z0-9_]+)?")


@attrs.frozen
class ReferrersRule:
    """Which referrers (signatures, SBOMs, attestations) travel with an image: all by default."""

    copied: bool = True
    artifact_types: tuple[str, ...] | None = None
    """Only referrers of these artifact types; None for all."""


@attrs.frozen
class _ReferrersFilter:
    artifact_types: tuple[str, ...]


@attrs.frozen
class _VerifyEntry:
    cosign_key: str


@attrs.frozen
class SignaturePolicy:
    """Sources must carry a valid cosign signature by this key before they are pinned or copied."""

    key_file: Path
    key_digest: str
    """Of the key file's bytes: a new key is a new input, so the pins get checked again."""
    key: EllipticCurvePublicKey = attrs.field(eq=False, repr=False)


@attrs.frozen
class ImageEntry:
    """One entry of ``images:`` exactly as written."""

    source: str
    tag: str | None = None
    target: str | None = None
    amd64_only: bool = False
    platforms: tuple[str, ...] = ()
    referrers: ReferrersRule | None = None
    verify: _VerifyEntry | None = None


@attrs.frozen
class ImagesFile:
    target_repo_prefix: str
    images: tuple[ImageEntry, ...]
    referrers: ReferrersRule = ReferrersRule()
    verify: _VerifyEntry | None = None


@attrs.frozen
class DesiredImage:
    """An entry resolved to what it means: copy ``source`` to ``target``."""

    source: Reference
    target: Reference
    platforms: tuple[str, ...]
    """Platforms the source must provide, sorted; empty when none are required."""
    amd64_only: bool
    """Set by old files; the whole index is copied anyway, so the CLI only warns."""
    line: int
    referrers: ReferrersRule = ReferrersRule()
    signature: SignaturePolicy | None = None


@attrs.frozen
class Config:
    path: Path
    desired: tuple[DesiredImage, ...]
    """Sorted by target, so everything derived from it is in a stable order."""


_converter = yaml_converter()


def _structure_referrers(value: object, _: object) -> ReferrersRule:
    """``true``, ``false`` or ``{artifactTypes: [...]}``."""
    if isinstance(value, bool):
        return ReferrersRule(copied=value)
    if isinstance(value, dict):
        chosen = _converter.structure(value, _ReferrersFilter)
        if not chosen.artifact_types:
            raise ValueError("artifactTypes must name at least one artifact type (or write referrers: false)")
        return ReferrersRule(artifact_types=tuple(sorted(set(chosen.artifact_types))))
    raise TypeError("expected true, false or a mapping with artifactTypes")


_converter.register_structure_hook(ReferrersRule, _structure_referrers)


def load(path: str | Path) -> Config:
    path = Path(path)
    document = YamlDocument.read(path, entry_key="source", if_missing="file not found")
    images_file = document.structure(_converter, ImagesFile)
    if not images_file.target_repo_prefix:
        raise document.error(("targetRepoPrefix",), "must not be empty")
    desired: list[DesiredImage] = []
    first_with_target: dict[str, int] = {}
    policies: dict[Path, SignaturePolicy] = {}
    default_policy = _signature_policy(document, ("verify", "cosignKey"), images_file.verify, policies)
    for index, entry in enumerate(images_file.images):
        policy = _signature_policy(document, ("images", index, "verify", "cosignKey"), entry.verify, policies)
        image = _resolve(document, images_file.target_repo_prefix, index, entry, images_file.referrers,
                         policy or default_policy)
        earlier = first_with_target.setdefault(image.target, index)
        if earlier != index:
            raise document.error(
                ("images", index),
                f"target {image.target} is also the target of images[{earlier + 1}] "
                f"(line {desired[earlier].line})",
            )
        desired.append(image)
    return Config(path=path, desired=tuple(sorted(desired, key=lambda image: str(image.target))))


def _signature_policy(
    document: YamlDocument, where: tuple, verify: _VerifyEntry | None, loaded: dict[Path, SignaturePolicy]
) -> SignaturePolicy | None:
    """The key a ``verify:`` names, relative to images.yaml, read once per file."""
    if verify is None:
        return None
    from reconciler.registry import cosign  # cryptography is loaded only for files that ask for signatures

    key_file = document.path.parent / verify.cosign_key
    if key_file not in loaded:
        try:
            key = cosign.load_public_key(key_file)
        except cosign.InvalidKey as error:
            raise document.error(where, f"{verify.cosign_key}: {error}") from None
        loaded[key_file] = SignaturePolicy(key_file, str(Digest.of(key_file.read_bytes())), key)
    return loaded[key_file]


def _resolve(
    document: YamlDocument, prefix: str, index: int, entry: ImageEntry, referrers: ReferrersRule,
    signature: SignaturePolicy | None,
) -> DesiredImage:
    where = ("images", index)
    try:
        source = reference.parse(entry.source)
    except InvalidReference as error:
        raise document.error((*where, "source"), str(error)) from None
    for position, platform in enumerate(entry.platforms):
        if not _PLATFORM.fullmatch(platform):
            raise document.error(
                (*where, "platforms", position),
                f'"{platform}" is not a platform: write os/arch or os/arch/variant, lowercase',
            )
    repository, tag = _target_name_and_tag(document, index, entry)
    target_text = f"{prefix if prefix.endswith('/') else prefix + '/'}{repository}:{tag}"
    try:
        # Canonical, not as composed: the target is ours, and the lock and the registry agree on one name.
        target = attrs.evolve(reference.parse(target_text, default_tag=None), written=None)
    except InvalidReference as error:
        raise document.error(
            (*where, "target" if entry.target is not None else "source"),
            f"makes an invalid target {target_text}: {error}",
        ) from None
    return DesiredImage(
        source=source,
        target=target,
        platforms=tuple(sorted(set(entry.platforms))),
        amd64_only=entry.amd64_only,
        line=document.line_of(where) or 0,
        referrers=entry.referrers or referrers,
        signature=signature,
    )


def _target_name_and_tag(document: YamlDocument, index: int, entry: ImageEntry) -> tuple[str, str]:
    """The repository under the prefix, and the tag: ``tag:``, else the target's, else the source's."""
    source = reference.split(entry.source)
    # A registry port's ":" cannot appear in a repository path.
    repository, target_tag = source.name.replace(":", "_"), None
    if entry.target is not None:
        target = reference.split(entry.target)
        if target.digest is not None:
            raise document.error(("images", index, "target"), "must not contain a digest")
        if target.tag is not None and entry.tag is not None:
            raise document.error(("images", index, "target"), 'has a tag and "tag" is set too: keep one')
        repository, target_tag = target.name, target.tag
    tag = next((tag for tag in (entry.tag, target_tag, source.tag) if tag is not None), None)
    if tag is None:
        if source.digest is not None:
            raise document.error(("images", index), 'a source pinned by digest only needs "tag" for its target')
        tag = "latest"
    return repository, tag
