"""images.yaml, the desired state: which source images to mirror, and under which tags.

Reads the original image-syncer file unchanged, but strictly: a typo must fail with
the file, line and entry instead of silently mirroring something else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import attrs

from reconciler import files, tagrules
from reconciler.documents import YamlDocument, yaml_converter
from reconciler.oci import reference
from reconciler.oci.digest import Digest
from reconciler.oci.reference import InvalidReference, Reference, Repository
from reconciler.tagrules import TagRule

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

    from reconciler.registry.sigstore import Trust

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
class _KeylessEntry:
    issuer: str
    identity: str | None = None
    identity_regexp: str | None = None


@attrs.frozen
class _VerifyEntry:
    cosign_key: str | None = None
    keyless: _KeylessEntry | None = None
    trusted_root: str | None = None


@attrs.frozen
class SignaturePolicy:
    """What images.yaml's ``verify:`` requires of a source's signature before it is pinned or copied."""

    trust: Trust
    key_file: Path | None
    digest: str
    """What the lock's ``signedBy`` records: a changed key, identity, issuer or trusted root is a new
    input, so the pins get checked again. For a key alone, the digest of the key file's bytes."""
    described: str
    """For one-line messages: ``the cosign key cosign.pub``, ``keyless identity "…" from issuer "…"``."""


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
    signer_files = _SignerFiles(document)
    default_policy = _signature_policy(document, ("verify",), images_file.verify, signer_files)
    for index, entry in enumerate(images_file.images):
        policy = _signature_policy(document, ("images", index, "verify"), entry.verify, signer_files)
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
                  tag_rules=tuple(tag_rules))


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


def _signature_policy(
    document: YamlDocument, where: tuple, verify: _VerifyEntry | None, signer_files: _SignerFiles
) -> SignaturePolicy | None:
    """What a ``verify:`` requires, its files relative to images.yaml."""
    if verify is None:
        return None
    if verify.cosign_key is None and verify.keyless is None:
        raise document.error(where, "names no signer: write cosignKey, keyless or both")
    from reconciler.registry.sigstore import Trust

    key_file, key, key_digest = (signer_files.key((*where, "cosignKey"), verify.cosign_key)
                                 if verify.cosign_key is not None else (None, None, None))
    keyless = verify.keyless
    if keyless is not None:
        _check_keyless(document, (*where, "keyless"), keyless)
    root_file, root_digest = (signer_files.trusted_root((*where, "trustedRoot"), verify.trusted_root)
                              if verify.trusted_root is not None else (None, None))
    # _KeylessEntry's fields are Trust's, by name.
    trust = Trust(key=key, trusted_root=root_file, **(attrs.asdict(keyless) if keyless else {}))
    if keyless is None and root_file is None:
        digest = key_digest  # as before keyless signatures: the locks made then keep matching
    else:
        digest = str(Digest.of(json.dumps(
            {"key": key_digest, "issuer": trust.issuer, "identity": trust.identity,
             "identityRegexp": trust.identity_regexp, "trustedRoot": root_digest},
            sort_keys=True, separators=(",", ":")).encode()))
    return SignaturePolicy(trust=trust, key_file=key_file, digest=digest, described=_described(verify))


def _check_keyless(document: YamlDocument, where: tuple, keyless: _KeylessEntry) -> None:
    """An identity names one signer exactly, or by a pattern that compiles; never nobody or everybody."""
    if (keyless.identity is None) == (keyless.identity_regexp is None):
        raise document.error(where, "write exactly one of identity and identityRegexp")
    for key, value in (("issuer", keyless.issuer), ("identity", keyless.identity),
                       ("identityRegexp", keyless.identity_regexp)):
        if value == "":
            raise document.error((*where, key), "must not be empty")
    if keyless.identity_regexp is not None:
        try:
            re.compile(keyless.identity_regexp)
        except re.error as error:
            raise document.error((*where, "identityRegexp"), f"not a Python regex: {error}") from None


def _described(verify: _VerifyEntry) -> str:
    signers = [f"the cosign key {verify.cosign_key}"] if verify.cosign_key is not None else []
    if (keyless := verify.keyless) is not None:
        identity = (f'identity "{keyless.identity}"' if keyless.identity is not None
                    else f"identity matching /{keyless.identity_regexp}/")
        signers.append(f'keyless {identity} from issuer "{keyless.issuer}"')
    trusted_root = f" (trusted root {verify.trusted_root})" if verify.trusted_root is not None else ""
    return " or ".join(signers) + trusted_root


@attrs.define
class _SignerFiles:
    """The key and trusted root files that ``verify:`` entries name, each read once per load."""

    document: YamlDocument
    keys: dict[Path, tuple[PublicKeyTypes, str]] = attrs.Factory(dict)
    trusted_roots: dict[Path, str] = attrs.Factory(dict)

    def key(self, where: tuple, written: str) -> tuple[Path, PublicKeyTypes, str]:
        """The key file, its key, and the digest of its bytes."""
        from reconciler.registry import cosign  # cryptography is loaded only for files that ask for signatures

        path = self._path(where, written)
        if path not in self.keys:
            try:
                key = cosign.load_public_key(path)
            except cosign.InvalidKey as error:
                raise self.document.error(where, f"{written}: {error}") from None
            self.keys[path] = key, str(Digest.of(path.read_bytes()))
        return path, *self.keys[path]

    def trusted_root(self, where: tuple, written: str) -> tuple[Path, str]:
        """The trusted root file, once sigstore-python reads it, and the digest of its bytes."""
        path = self._path(where, written)
        if path not in self.trusted_roots:
            try:
                self.trusted_roots[path] = _trusted_root_digest(path)
            except ValueError as error:
                raise self.document.error(where, f"{written}: {error}") from None
        return path, self.trusted_roots[path]

    def _path(self, where: tuple, written: str) -> Path:
        if not written:
            raise self.document.error(where, "must not be empty")
        return self.document.path.parent / written


def _trusted_root_digest(path: Path) -> str:
    """Raises ValueError saying why the file is no trusted root, in a few words without its name."""
    try:
        text = files.read_text(path)  # bounded; sigstore-python reads a file whole
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except OSError as error:
        raise ValueError(f"cannot be read: {error.strerror or error}") from None
    import pydantic  # sigstore-python's models are pydantic's
    from sigstore.models import TrustedRoot  # slow to import: only for files that name a trusted root

    try:
        TrustedRoot.from_file(str(path))
    except Exception as error:  # whatever it raises (JSON, pydantic, protobuf), sigstore-python refuses the file
        if isinstance(error, pydantic.ValidationError) and error.errors():  # a few lines for each field
            first = error.errors()[0]
            problem = ": ".join(filter(None, (".".join(map(str, first["loc"])), first["msg"])))
        else:
            problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"not a Sigstore trusted root: {problem}") from None
    return str(Digest.of(text.encode()))


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
