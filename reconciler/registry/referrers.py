"""Referrers of a manifest: the signatures, SBOMs and attestations that name it as their subject.

Found the ways the OCI distribution spec 1.1 and cosign define: the referrers API
(``GET /v2/<name>/referrers/<digest>``, paged by ``Link``) where a registry offers it;
else the spec's fallback, an image index under the tag ``sha256-<hex>``; and, on
every registry, cosign's tags ``sha256-<hex>.sig``, ``.att`` and ``.sbom`` (cosign
writes them whether or not the registry has the API). The tags are found in one tags
list per repository, not by asking for each.

A listing is the registry's claim, not the referrer's: one found through the API or the
fallback index counts only when its own manifest names the listed digest as ``subject``
(one small GET each). Cosign's legacy manifests carry no ``subject``; their tag names it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import attrs
import cattrs

from reconciler.oci import limits, mediatypes
from reconciler.oci.digest import Digest, InvalidDigest
from reconciler.oci.manifest import Manifest
from reconciler.oci.reference import Repository
from reconciler.oci.referrer import COSIGN_ARTIFACT_TYPES, FoundBy, Referrer
from reconciler.registry.client import NotFound
from reconciler.registry.errors import RegistryError
from reconciler.registry.fanout import map_bounded
from reconciler.registry.repository import RemoteRepository

if TYPE_CHECKING:
    from reconciler.registry.copy import Copier
    from reconciler.registry.layout.reader import Layout
    from reconciler.registry.registries import Registries

log = logging.getLogger("reconciler.registry")


@attrs.frozen
class _Entry:
    media_type: str
    digest: Digest
    artifact_type: str | None = None


@attrs.frozen
class _Listing:
    manifests: tuple[_Entry, ...] = ()


_converter = cattrs.Converter(forbid_extra_keys=False)
_converter.register_structure_hook(Digest, lambda value, _: Digest.parse(value))
_converter.register_structure_hook(_Entry, cattrs.gen.make_dict_structure_fn(
    _Entry, _converter, media_type=cattrs.gen.override(rename="mediaType"),
    artifact_type=cattrs.gen.override(rename="artifactType"),
))


async def find(
    repository: RemoteRepository, subjects: Sequence[Digest], artifact_types: frozenset[str] | None = None,
    tags: Collection[str] | None = None, pinned: Collection[Digest] = (), depth: int = limits.REFERRER_DEPTH,
) -> tuple[Referrer, ...]:
    """Every referrer of each of ``subjects`` (an image and, for an index, its children), and
    what refers to those in turn, ``depth`` levels deep; sorted.

    ``artifact_types`` keeps only referrers of those types, at every level; None keeps all.
    ``tags``: the repository's, when the caller listed them already. ``pinned``: referrers the
    lock holds, checked when they were pinned; they are left out, and a listed one costs no GET.
    """
    tags = set(await repository.tags() if tags is None else tags)
    found: dict[tuple[Digest, Digest], Referrer] = {}
    listed = _Listed()
    seen = set(subjects)  # a registry's listings may claim a cycle; each digest is asked once
    level = list(subjects)
    for levels_left in range(depth, 0, -1):
        groups = await asyncio.gather(*(_of_subject(repository, subject, tags, artifact_types, frozenset(pinned),
                                                    listed) for subject in level))
        level = []
        for referrer in (referrer for group in groups for referrer in group):
            found[referrer.subject, referrer.digest] = referrer
            if referrer.digest not in seen:
                seen.add(referrer.digest)
                level.append(referrer.digest)
        if levels_left == 1 and (deeper := [digest for digest in level if _tagged_referrers(digest, tags)]):
            log.warning("%s/%s: %s and %d more have referrers of their own, more than %d levels deep; those are "
                        "not pinned", repository.host, repository.path, deeper[0], len(deeper) - 1, depth)
    return tuple(sorted(found.values(), key=lambda referrer: (str(referrer.subject), str(referrer.digest))))


@attrs.define
class _Listed:
    """Referrers listed for one image so far, over its subjects and levels: counted before any is fetched."""

    count: int = 0


def _tagged_referrers(digest: Digest, tags: set[str]) -> bool:
    """Whether the tags show referrers of ``digest`` (a fallback index, cosign's tags): a free look."""
    return any(kind.tag(digest) in tags for kind in FoundBy if kind.tag(digest) is not None)


async def _of_subject(
    repository: RemoteRepository, subject: Digest, tags: set[str], artifact_types: frozenset[str] | None,
    pinned: frozenset[Digest], listed_before: _Listed,
) -> list[Referrer]:
    """The referrers of one digest of the types kept, counted against the cap before any is fetched."""
    listed = await repository.referrers(subject)
    found_by = FoundBy.API
    if listed is None:
        index_tag = FoundBy.INDEX_TAG.tag(subject)
        listed = [(await repository.get_manifest(index_tag)).data] if index_tag in tags else []
        found_by = FoundBy.INDEX_TAG
    entries = {entry.digest: entry for page in listed for entry in _entries(page, repository)
               if artifact_types is None or entry.artifact_type in artifact_types}
    cosign_kinds = [kind for kind, artifact_type in COSIGN_ARTIFACT_TYPES.items()
                    if kind.tag(subject) in tags and (artifact_types is None or artifact_type in artifact_types)]
    if len(entries) + len(cosign_kinds) > limits.REFERRERS_PER_SUBJECT:
        raise RegistryError(f"{repository.host}/{repository.path}: {subject} has {len(entries) + len(cosign_kinds)} "
                            f"referrers, more than the limit of {limits.REFERRERS_PER_SUBJECT}; not pinned")
    listed_before.count += len(entries) + len(cosign_kinds)
    if listed_before.count > limits.REFERRERS_PER_IMAGE:
        raise RegistryError(f"{repository.host}/{repository.path}: more than {limits.REFERRERS_PER_IMAGE} referrers "
                            "of one image, over its subjects and what refers to them; not pinned")

    async def claimed(entry: _Entry) -> Referrer | None:
        if not all(mediatypes.is_media_type(kind) for kind in (entry.media_type, entry.artifact_type) if kind):
            log.warning("%s/%s: %s is listed as a referrer of %s with a type that is no media type; not pinned",
                        repository.host, repository.path, entry.digest, subject)
            return None
        if not await _names_subject(repository, entry.digest, subject):
            return None
        return Referrer(subject, entry.digest, entry.media_type, entry.artifact_type, found_by)

    unpinned = [entry for entry in entries.values() if entry.digest not in pinned]
    referrers = [referrer for referrer in await map_bounded(claimed, unpinned, repository.limit.ceiling)
                 if referrer is not None]
    for kind in cosign_kinds:
        manifest = await repository.get_manifest(kind.tag(subject))
        if manifest.digest not in pinned:
            referrers.append(Referrer(subject, manifest.digest, manifest.media_type, COSIGN_ARTIFACT_TYPES[kind],
                                      kind))
    return referrers


async def _names_subject(repository: RemoteRepository, digest: Digest, subject: Digest) -> bool:
    """Whether the manifest listed as a referrer of ``subject`` says so itself; a warning when not."""
    try:
        manifest = await repository.get_manifest(digest)
    except NotFound:
        log.warning("%s/%s: %s is listed as a referrer of %s but not found; not pinned",
                    repository.host, repository.path, digest, subject)
        return False
    named = _subject_of(manifest)
    if named != subject:
        log.warning("%s/%s: %s is listed as a referrer of %s but its subject is %s; not pinned",
                    repository.host, repository.path, digest, subject, named or "none")
    return named == subject


def _subject_of(manifest: Manifest) -> Digest | None:
    """The digest a manifest's ``subject`` names; None when it names none (or no valid digest)."""
    try:
        subject = limits.parse_json(manifest.data).get("subject")
        return Digest.parse(subject["digest"]) if isinstance(subject, dict) else None
    except (ValueError, AttributeError, KeyError, TypeError, InvalidDigest):
        return None


def _entries(page: bytes, repository: RemoteRepository) -> tuple[_Entry, ...]:
    try:
        return _converter.structure(limits.parse_json(page), _Listing).manifests
    except (ValueError, TypeError, cattrs.BaseValidationError, InvalidDigest):
        raise RegistryError(f"{repository.host}/{repository.path}: a referrers listing is not an image index "
                            "of descriptors") from None


class ReferrerRefused(RegistryError):
    """A target tag that should hold or list a referrer holds something else; it is not overwritten."""


class ReferrerWriter:
    """Writes pinned referrers into targets the way each supports, after their subject is there.

    A registry with the referrers API indexes a manifest by its ``subject`` as it is
    pushed by digest. Without it, cosign's referrers go under their own tags (never
    overwriting another manifest there), and the others are added to the spec's fallback
    index under ``sha256-<hex>``: read, extended, written back, one referrer at a time.
    That tag is meant to be rewritten, and the protocol has no conditional write, so
    another writer at the same instant can lose one entry; a rerun adds it again.
    """

    def __init__(self, registries: Registries, copier: Copier) -> None:
        self._registries = registries
        self._copier = copier
        # One fallback index is rewritten whole: within a run, one writer at a time per index.
        self._index_locks: collections.defaultdict[tuple[str, str, Digest], asyncio.Lock] = (
            collections.defaultdict(asyncio.Lock))

    async def write(self, source: RemoteRepository | Layout, target: Repository, referrer: Referrer) -> None:
        """``referrer``, read from ``source`` (a registry's repository, or a layout), into ``target``."""
        remote = self._registries.repository(target)
        tag = referrer.found_by.tag(referrer.subject)
        if referrer.found_by in COSIGN_ARTIFACT_TYPES:
            held = await remote.resolve_digest(tag)
            if held == referrer.digest:
                return
            if held is not None:
                raise ReferrerRefused(f"{target}:{tag} holds {held}, not the locked referrer {referrer.digest}; "
                                      "not overwritten")
            manifest = await self._copier.copy_referenced(source, referrer.digest, remote)
            await remote.put_manifest(tag, manifest)
            return
        if await remote.resolve_digest(str(referrer.digest)) is None:
            manifest = await self._copier.copy_referenced(source, referrer.digest, remote)
            await remote.put_manifest(str(referrer.digest), manifest)
        else:
            manifest = await remote.get_manifest(referrer.digest)
        if not await remote.offers_referrers_api(referrer.subject):  # the fallback index, then
            async with self._index_locks[remote.host, remote.path, referrer.subject]:
                await _list_in_index(remote, referrer, manifest)


async def _list_in_index(target: RemoteRepository, referrer: Referrer, manifest: Manifest) -> None:
    tag = FoundBy.INDEX_TAG.tag(referrer.subject)
    named = _subject_of(manifest)
    if named != referrer.subject:  # a fallback index is a claim about its subject: never a false one
        raise ReferrerRefused(f"{referrer.digest}'s subject is {named or 'none'}, not {referrer.subject}; "
                              f"not listed in {target.repository}:{tag}")
    held = await target.resolve_digest(tag)
    entries: list[dict] = []
    if held is not None:
        index = await target.get_manifest(tag)
        if index.media_type != mediatypes.OCI_INDEX:
            raise ReferrerRefused(f"{target.repository}:{tag} holds a {index.media_type}, not a referrers index; "
                                  "not overwritten")
        if any(entry.digest == referrer.digest for entry in _entries(index.data, target)):
            return
        entries = list(limits.parse_json(index.data).get("manifests") or ())
    entry = {"mediaType": manifest.media_type, "digest": str(manifest.digest), "size": len(manifest.data)}
    if referrer.artifact_type:
        entry["artifactType"] = referrer.artifact_type
    data = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [*entries, entry]},
                      separators=(",", ":")).encode()
    await target.put_manifest(tag, Manifest(mediatypes.OCI_INDEX, Digest.of(data), data))
