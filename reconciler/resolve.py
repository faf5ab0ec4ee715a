"""Resolve a desired image's source to the digest it names now, for the lock.

One HEAD per source when the registry sends ``Docker-Content-Digest``, and its tags list
for the referrers (cosign's tags, the spec's fallback index; the referrers API where
offered) unless images.yaml turns them off; an index
is read to record its platforms, and a single image's config only when the entry
asks for platforms.
"""

from __future__ import annotations

import json

from reconciler.bounded import images_at_once, map_bounded
from reconciler.config import DesiredImage
from reconciler.lockfile import LockedImage
from reconciler.registry import mediatypes, referrers
from reconciler.registry.client import Registries, RegistryClient
from reconciler.registry.digest import Digest
from reconciler.registry.reference import Reference
from reconciler.registry.referrers import Referrer
from reconciler.registry.errors import RegistryError
from reconciler.registry.manifest import Manifest, Platform


class SourceUnusable(RegistryError):
    """The source exists but cannot be pinned as asked (e.g. a platform is missing)."""


async def resolve(registries: Registries, desired: DesiredImage) -> LockedImage:
    source = desired.source
    path = source.repository.path
    client = registries.client(source.repository)
    head = await client.head_manifest(path, source.identifier)
    if head is None:
        raise RegistryError(f"{source.as_written}: not found at {source.repository}")
    needs_body = head.digest is None or head.media_type in mediatypes.INDEX_TYPES or bool(desired.platforms)
    if not needs_body:
        await check_signature(client, desired, head.digest)
        return LockedImage(desired.source, desired.target, head.digest, head.media_type, (),
                           await _referrers(client, desired, [head.digest]))
    manifest = await client.get_manifest(path, head.digest or source.identifier)
    if manifest.is_index:
        platforms = manifest.platforms()
    elif desired.platforms:
        platforms = (await _image_platform(registries, desired, manifest),)
    else:
        platforms = ()
    missing = sorted(set(desired.platforms) - set(platforms))
    if missing:
        raise SourceUnusable(
            f"{source.as_written} ({manifest.digest}) does not provide platform(s) {', '.join(missing)}; "
            f"it has {', '.join(platforms) or 'none listed'}"
        )
    await check_signature(client, desired, manifest.digest)
    subjects = [manifest.digest, *(child.digest for child in manifest.children())] if manifest.is_index else [
        manifest.digest]
    return LockedImage(desired.source, desired.target, manifest.digest, manifest.media_type,
                       platforms if manifest.is_index else (), await _referrers(client, desired, subjects))


async def check_signature(client: RegistryClient, desired: DesiredImage, digest: Digest) -> None:
    """Refuse a digest without a valid cosign signature by the key images.yaml requires (if any)."""
    if desired.signature is None:
        return
    from reconciler.registry import cosign  # cryptography is loaded only when signatures are required

    try:
        await cosign.require_signature(client, desired.source.repository.path, digest, desired.signature.key)
    except cosign.SignatureRefused as refusal:
        raise SourceUnusable(f"{desired.source.as_written} ({digest}): {refusal}, by the key "
                             f"{desired.signature.key_file.name}") from None


async def _referrers(client: RegistryClient, desired: DesiredImage, subjects: list[Digest]) -> tuple[Referrer, ...]:
    rule = desired.referrers
    if not rule.copied:
        return ()
    types = frozenset(rule.artifact_types) if rule.artifact_types is not None else None
    return await referrers.discover(client, desired.source.repository.path, subjects, types)


async def _image_platform(registries: Registries, desired: DesiredImage, manifest: Manifest) -> str:
    source = desired.source
    config_descriptor = manifest.blobs()[0]
    data = await registries.client(source.repository).read_blob(source.repository.path, config_descriptor)
    try:
        config = json.loads(data)
        return str(Platform(config["os"], config["architecture"], config.get("variant")))
    except (ValueError, KeyError, TypeError):
        raise SourceUnusable(f"{source.as_written}: image config does not name its platform") from None


async def resolve_all(
    registries: Registries, desired: list[DesiredImage]
) -> tuple[dict[Reference, LockedImage], dict[Reference, str]]:
    """Resolve concurrently; returns pins by target and one error line per failed target."""
    resolved: dict[Reference, LockedImage] = {}
    errors: dict[Reference, str] = {}

    async def one(image: DesiredImage) -> None:
        try:
            resolved[image.target] = await resolve(registries, image)
        except RegistryError as error:
            errors[image.target] = str(error)

    await map_bounded(one, desired, images_at_once(registries.options.max_connections))
    return resolved, errors
