"""images.yaml, the desired state: which source images to mirror, and under which tags.

Reads the original image-syncer file unchanged, but strictly: a typo must fail with
the file, line and entry instead of silently mirroring something else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import attrs

from reconciler import tagrules
from reconciler.documents import YamlDocument, yaml_converter
from reconciler.oci import reference
from reconciler.oci.reference import InvalidReference, Reference, Repository
from reconciler.policy import SignaturePolicy, SignerFiles, VerifyEntry, signature_policy
from reconciler.tagrules import TagRule

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
class _PlatformsEntry:
    """``platforms:`` as written: a list the source must provide (the whole index is copied),
    or ``{only: [...]}``, the platforms the mirror holds (a subset of the index)."""

    required: tuple[str, ...] = ()
    only: tuple[str, ...] = ()


@attrs.frozen
class _OnlyPlatforms:
    only: tuple[str, ...]


@attrs.frozen
class ImageEntry:
    """One entry of ``images:`` exactly as written."""

    source: str
    tag: str | None = None
    tags: TagRule | None = None
    target: str | None = None
    amd64_only: bool = False
    platforms: _PlatformsEntry = _PlatformsEntry()
    referrers: ReferrersRule | None = None
    verify: VerifyEntry | None = None


@attrs.frozen
class ImagesFile:
    target_repo_prefix: str
    images: tuple[ImageEntry, ...]
    referrers: ReferrersRule = ReferrersRule()
    verify: VerifyEntry | None = None
    prune: bool = False


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
    only_platforms: tuple[str, ...] = ()
    """The mirror holds these platforms only (sorted): a subset of the source index, pinned too."""
    tag_rule: TagRule | None = None
    """The tag rule that selected this image, for images a rule brought."""

    @property
    def rule(self) -> str | None:
        """The tag rule described, as the lock records it beside the pin."""
        return tagrules.describe(self.tag_rule) if self.tag_rule is not None else None


class _Selected(Protocol):
    source: Reference
    target: Reference
    rule: str | None


def rule_identity(image: _Selected) -> tuple[str, Repository]:
    """Which entry's rule brought ``image``: its source repository as written and its target
    repository, never the rule's words, which two entries may share."""
    return reference.split(image.source.as_written).name, image.target.repository


@attrs.frozen
class DesiredTags:
    """An entry with a tag rule: ``lock`` lists the source repository's tags and pins each one
    the rule selects as a DesiredImage of its own (``image``)."""

    source: Reference
    """The repository, as written."""
    target: Reference
    """The target repository."""
    rule: TagRule
    template: DesiredImage
    """Everything else an entry decides (platforms, referrers, signature, line)."""

    @property
    def described(self) -> str:
        return tagrules.describe(self.rule)

    @property
    def identity(self) -> tuple[str, Repository]:
        """One entry's rule: its source and target repositories (config refuses two rules sharing both)."""
        return self.source.as_written, self.target.repository

    @property
    def names(self) -> set[str]:
        """What ``lock --upgrade NAME`` may call it: the source or the target repository, as written."""
        return {self.source.as_written, str(self.target.repository)}

    def image(self, tag: str) -> DesiredImage:
        return attrs.evolve(self.template, source=reference.parse(f"{self.source.as_written}:{tag}"),
                            target=attrs.evolve(self.target, tag=tag), tag_rule=self.rule)

    def brought(self, image: _Selected) -> bool:
        """Whether this rule selected ``image`` (when it was locked), whatever the rule said then."""
        return image.rule is not None and rule_identity(image) == self.identity


@attrs.frozen
class Config:
    path: Path
    desired: tuple[DesiredImage, ...]
    """Sorted by target, so everything derived from it is in a stable order."""
    tag_rules: tuple[DesiredTags, ...] = ()
    """In file order; what they select is known only once the source's tags are listed."""
    prune: bool = False
    """Whether what leaves images.yaml is deleted from the targets (``lock`` records it, apply deletes it)."""


_converter = yaml_converter()


def structure_referrers(value: object, _: object) -> ReferrersRule:
    """``true``, ``false`` or ``{artifactTypes: [...]}``."""
    if isinstance(value, bool):
        return ReferrersRule(copied=value)
    if isinstance(value, dict):
        chosen = _converter.structure(value, _ReferrersFilter)
        if not chosen.artifact_types:
            raise ValueError("artifactTypes must name at least one artifact type (or write referrers: false)")
        return ReferrersRule(artifact_types=tuple(sorted(set(chosen.artifact_types))))
    raise TypeError("expected true, false or a mapping with artifactTypes")


_converter.register_structure_hook(ReferrersRule, structure_referrers)


def _structure_platforms(value: object, _: object) -> _PlatformsEntry:
    """A list of platforms required, or ``{only: [...]}``."""
    if isinstance(value, dict):
        only = _converter.structure(value, _OnlyPlatforms).only
        if not only:
            raise ValueError("only must name at least one platform (or write the list form to copy the whole index)")
        return _PlatformsEntry(only=only)
    return _PlatformsEntry(required=_converter.structure(value, tuple[str, ...]))


_converter.register_structure_hook(_PlatformsEntry, _structure_platforms)


def load(path: str | Path) -> Config:
    path = Path(path)
    document = YamlDocument.read(path, entry_key="source", if_missing="file not found")
    images_file = document.structure(_converter, ImagesFile)
    if not images_file.target_repo_prefix:
        raise document.error(("targetRepoPrefix",), "must not be empty")
    desired: list[DesiredImage] = []
    tag_rules: list[DesiredTags] = []
    first_with_target: dict[Reference, int] = {}
    first_with_rule: dict[tuple[str, Repository], int] = {}
    signer_files = SignerFiles(document)
    default_policy = signature_policy(document, ("verify",), images_file.verify, signer_files)
    for index, entry in enumerate(images_file.images):
        policy = signature_policy(document, ("images", index, "verify"), entry.verify, signer_files)
        image = _resolve(document, images_file.target_repo_prefix, index, entry, images_file.referrers,
                         policy or default_policy)
        if entry.tags is not None:
            rule = _tag_rule(document, index, entry, image)
            _refuse_second(document, index, first_with_rule.setdefault(rule.identity, index),
                           f"a second tag rule from {rule.source.as_written} to {rule.target.repository}, as in")
            tag_rules.append(rule)
            continue
        _refuse_second(document, index, first_with_target.setdefault(image.target, index),
                       f"target {image.target} is also the target of")
        desired.append(image)
    return Config(path=path, desired=tuple(sorted(desired, key=lambda image: str(image.target))),
                  tag_rules=tuple(tag_rules), prune=images_file.prune)


def _refuse_second(document: YamlDocument, index: int, earlier: int, problem: str) -> None:
    """Refuse entry ``index`` for what ``problem`` says it shares with entry ``earlier``, named with its line."""
    if earlier != index:
        raise document.error(("images", index),
                             f"{problem} images[{earlier + 1}] (line {document.line_of(('images', earlier))})")


def _tag_rule(document: YamlDocument, index: int, entry: ImageEntry, template: DesiredImage) -> DesiredTags:
    where = ("images", index)
    rule = entry.tags
    try:
        tagrules.validate(rule)
    except ValueError as error:
        raise document.error((*where, "tags"), str(error)) from None
    written = reference.split(entry.source)
    if written.tag is not None or written.digest is not None:
        raise document.error((*where, "source"), "a tag rule chooses the tags: write the source without a tag")
    if entry.tag is not None:
        raise document.error((*where, "tag"), 'names one tag and "tags" a rule: keep one')
    if entry.target is not None and reference.split(entry.target).tag is not None:
        raise document.error((*where, "target"), 'has a tag, and "tags" chooses them: write the target without one')
    # Tags only the rule chooses: these name repositories.
    return DesiredTags(source=attrs.evolve(template.source, tag=None), target=attrs.evolve(template.target, tag=None),
                       rule=rule, template=template)


def _resolve(
    document: YamlDocument, prefix: str, index: int, entry: ImageEntry, referrers: ReferrersRule,
    signature: SignaturePolicy | None,
) -> DesiredImage:
    where = ("images", index)
    try:
        source = reference.parse(entry.source)
    except InvalidReference as error:
        raise document.error((*where, "source"), str(error)) from None
    platforms = entry.platforms.only or entry.platforms.required
    for position, platform in enumerate(platforms):
        if not _PLATFORM.fullmatch(platform):
            raise document.error(
                (*where, "platforms", *(("only",) if entry.platforms.only else ()), position),
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
        platforms=tuple(sorted(set(entry.platforms.required))),
        only_platforms=tuple(sorted(set(entry.platforms.only))),
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
