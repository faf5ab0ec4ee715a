"""Resolve a desired image's source to the digest it names now, for the lock.

One HEAD per source when the registry sends ``Docker-Content-Digest`` and names a single
image's media type; any other type (an index, none, a generic or an unknown one) is read
from the manifest's own bytes, one GET, and schema 1 is refused. Its tags list is read for
the referrers (cosign's tags, the spec's fallback index; the referrers API where offered)
unless images.yaml turns them off; an index is read to record its platforms (and to build
a platform subset), and a single image's config, to record its platform, only when the
entry asks for platforms. A tag rule's tags list is read only when the lock has no pins of
it yet, or an upgrade asks for it. A repository's tags are listed once per run
(TagListings), whether for a rule or for the referrers of any number of its images.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import attrs

from reconciler import lockfile, tagrules
from reconciler.bounded import bugs_fail_this_image
from reconciler.config import Config, DesiredImage, DesiredTags
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.oci import limits, mediatypes
from reconciler.oci.digest import Digest
from reconciler.oci.errors import OCIError
from reconciler.oci.manifest import Manifest, Platform
from reconciler.oci.platforms import PlatformSubset, PlatformSubsetRefused
from reconciler.oci.platforms import missing as platforms_missing
from reconciler.oci.platforms import subset as platform_subset
from reconciler.oci.reference import Reference, Repository
from reconciler.oci.referrer import Referrer
from reconciler.registry import referrers
from reconciler.registry.errors import RegistryError
from reconciler.registry.registries import Registries
from reconciler.registry.repository import RemoteRepository
from reconciler.signatures import FoundSignatures, find_signature


class SourceUnusable(RegistryError):
    """The source exists but cannot be pinned as asked (e.g. a platform is missing)."""


class TagListings:
    """Each repository's tags, listed once per run for whoever asks: a tags list can be
    hundreds of pages, and a rule's selection and every image's referrers read the same one."""

    def __init__(self, registries: Registries) -> None:
        self._registries = registries
        self._listed: dict[tuple[str, str], asyncio.Task[list[str]]] = {}

    async def tags(self, repository: Repository) -> list[str]:
        remote = self._registries.repository(repository)
        key = (remote.host, remote.path)
        if key not in self._listed:
            self._listed[key] = asyncio.ensure_future(remote.tags())
        # Shielded: one asker stopped (its image failed) does not stop the listing the others wait for.
        return await asyncio.shield(self._listed[key])


async def resolve(registries: Registries, listings: TagListings, desired: DesiredImage) -> LockedImage:
    source = desired.source
    remote = registries.repository(source.repository)
    head = await remote.head_manifest(source.identifier)
    if head is None:
        raise RegistryError(f"{source.as_written}: not found at {source.repository}")
    # A HEAD's word is taken for a single image's type only: what is pinned must be a type the lock reads.
    needs_body = (head.digest is None or head.media_type not in mediatypes.IMAGE_TYPES
                  or bool(desired.platforms) or bool(desired.only_platforms))  # a subset is refused for a single image
    if not needs_body:
        signed = await _signatures(remote, listings, desired, head.digest)
        return _with_signatures(LockedImage(
            desired.source, desired.target, head.digest, head.media_type, (),
            await _referrers(remote, listings, desired, [head.digest], signed), rule=desired.rule), signed)
    manifest = await remote.get_manifest(head.digest or source.identifier)
    if manifest.is_index:
        platforms = manifest.platforms()
    elif desired.platforms:
        platforms = (await _image_platform(remote, desired, manifest),)
    else:
        platforms = ()
    missing = platforms_missing(desired.platforms, platforms)
    if missing:
        raise SourceUnusable(
            f"{source.as_written} ({manifest.digest}) does not provide platform(s) {', '.join(missing)}; "
            f"it has {', '.join(platforms) or 'none listed'}"
        )
    signed = await _signatures(remote, listings, desired, manifest.digest)
    subset = None
    if desired.only_platforms:
        try:
            kept = platform_subset(manifest, desired.only_platforms)
        except PlatformSubsetRefused as refusal:
            raise SourceUnusable(f"{source.as_written}: {refusal}") from None
        subset = PlatformSubset(desired.only_platforms, kept.digest)
        # The subset is a new artifact: the source index's own referrers (its signatures) do not cover it.
        subjects = [child.digest for child in kept.children()]
    elif manifest.is_index:
        subjects = [manifest.digest, *(child.digest for child in manifest.children())]
    else:
        subjects = [manifest.digest]
    return _with_signatures(LockedImage(
        desired.source, desired.target, manifest.digest, manifest.media_type, platforms,
        await _referrers(remote, listings, desired, subjects, signed), subset=subset, rule=desired.rule), signed)


async def _signatures(
    source: RemoteRepository, listings: TagListings, desired: DesiredImage, digest: Digest
) -> FoundSignatures | None:
    if desired.signature is None:
        return None
    return await find_signature(source, desired, digest, await listings.tags(desired.source.repository))


def _with_signatures(locked: LockedImage, signed: FoundSignatures | None) -> LockedImage:
    if signed is None:
        return locked
    return attrs.evolve(locked, signature=signed.signature.pinned,
                        attestations=tuple(found.pinned for found in signed.attestations))


async def _referrers(
    source: RemoteRepository, listings: TagListings, desired: DesiredImage, subjects: list[Digest],
    signed: FoundSignatures | None,
) -> tuple[Referrer, ...]:
    """What images.yaml chose to copy, and the signature and attestations that satisfied its
    policy, which always travel with the image (unless their subject stays behind: the source
    index of a subset)."""
    rule = desired.referrers
    found: tuple[Referrer, ...] = ()
    if rule.copied:
        types = frozenset(rule.artifact_types) if rule.artifact_types is not None else None
        found = await referrers.find(source, subjects, types, tags=await listings.tags(desired.source.repository))
    travelling = [referrer for referrer in (signed.referrers if signed else ()) if referrer.subject in subjects]
    return tuple(sorted({*found, *travelling},
                        key=lambda referrer: (str(referrer.subject), str(referrer.digest))))


async def _image_platform(source: RemoteRepository, desired: DesiredImage, manifest: Manifest) -> str:
    data = await source.read_blob(manifest.blobs()[0])
    try:
        config = limits.parse_json(data)
        return str(Platform(config["os"], config["architecture"], config.get("variant")))
    except (ValueError, KeyError, TypeError):
        raise SourceUnusable(f"{desired.source.as_written}: image config does not name its platform") from None


async def resolve_all(
    registries: Registries, listings: TagListings, desired: list[DesiredImage]
) -> tuple[dict[Reference, LockedImage], dict[Reference, str]]:
    """Resolve concurrently; returns pins by target and one error line per failed target."""
    resolved: dict[Reference, LockedImage] = {}
    errors: dict[Reference, str] = {}

    async def one(image: DesiredImage) -> None:
        try:
            with bugs_fail_this_image():
                resolved[image.target] = await resolve(registries, listings, image)
        except OCIError as error:
            errors[image.target] = str(error)

    await registries.map(one, desired)
    return resolved, errors


@attrs.frozen
class Unselected:
    """A tag rule that selected nothing to pin, or an image it may not have; and why."""

    source: Reference
    target: Reference
    message: str


async def select_tags(
    registries: Registries, listings: TagListings, config: Config, lock: Lockfile,
    upgraded: Callable[[DesiredTags], bool],
) -> tuple[list[DesiredImage], list[Unselected]]:
    """The images the tag rules select: listed afresh for a rule that is new or ``upgraded``,
    else as the lock pinned them."""
    selected: list[DesiredImage] = []
    errors: list[Unselected] = []

    async def one(rule: DesiredTags) -> None:
        pinned = lockfile.selected_by(rule, lock)
        if pinned and not upgraded(rule):
            selected.extend(pinned)
            return
        try:
            with bugs_fail_this_image():
                tags = await listings.tags(rule.source.repository)
                chosen = tagrules.select(rule.rule, tags)
        except OCIError as error:
            errors.append(Unselected(rule.source, rule.target, str(error)))
            return
        if not chosen:
            errors.append(Unselected(rule.source, rule.target,
                                     f"tag rule {rule.described} selects none of its {len(tags)} tags"))
        selected.extend(rule.image(tag) for tag in chosen)

    await registries.map(one, config.tag_rules)
    errors += _shared_targets(config, selected)
    return sorted(selected, key=lambda image: str(image.target)), errors


def _shared_targets(config: Config, selected: list[DesiredImage]) -> list[Unselected]:
    """A tag rule may not select a target that another entry names: nothing would say which wins."""
    owners: dict[Reference, DesiredImage] = {image.target: image for image in config.desired}
    refused = []
    for image in selected:
        other = owners.setdefault(image.target, image)
        if other is not image:
            refused.append(Unselected(image.source, image.target,
                                      f"target {image.target} is selected by the tag rule on line {image.line} and "
                                      f"named by the entry on line {other.line}; narrow the rule or remove one"))
    return refused
