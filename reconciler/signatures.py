"""The signature images.yaml requires of a source digest: found and pinned when lock resolves
it, and checked again from exactly the pinned bytes right before apply copies it (a signature
can be removed or replaced upstream meanwhile).

Signatures are looked for where cosign puts them: Sigstore bundles among the digest's
referrers (the referrers API, or the fallback index), and the legacy ``.sig`` tag. One that
verifies suffices; the first by digest is pinned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import attrs

from reconciler.config import DesiredImage
from reconciler.policy import SignaturePolicy
from reconciler.lockfile import LockedImage
from reconciler.oci.digest import Digest
from reconciler.oci.mediatypes import BUNDLE_MEDIA_TYPE
from reconciler.oci.referrer import COSIGN_ARTIFACT_TYPES, FoundBy, Referrer
from reconciler.oci.signature import PinnedSignature, SignatureForm, SignatureProof
from reconciler.registry import referrers
from reconciler.registry.client import NotFound
from reconciler.registry.errors import RegistryError, SignatureRefused
from reconciler.registry.repository import RemoteRepository

SIGNATURE_TYPES = frozenset({BUNDLE_MEDIA_TYPE, COSIGN_ARTIFACT_TYPES[FoundBy.COSIGN_SIGNATURE]})
"""The artifact types of the referrers that may hold a signature."""


class Unsigned(RegistryError):
    """The source digest lacks a valid signature by what images.yaml requires: the image is refused."""


@attrs.frozen
class FoundSignature:
    pinned: PinnedSignature
    referrer: Referrer
    """The signature as a referrer of the image: it travels to the target with it."""


async def find_signature(
    source: RemoteRepository, desired: DesiredImage, digest: Digest, tags: Collection[str]
) -> FoundSignature:
    """The first signature of ``digest`` (by its manifest's digest) that satisfies the entry's
    policy; ``tags``: the source repository's, which show cosign's ``.sig`` tag."""
    policy = desired.signature
    assert policy is not None, "asked only under a policy"
    failures: list[SignatureRefused] = []
    for candidate in await referrers.find(source, [digest], SIGNATURE_TYPES, tags=tags, depth=1):
        form = SignatureForm.COSIGN_TAG if candidate.found_by is FoundBy.COSIGN_SIGNATURE else SignatureForm.BUNDLE
        try:
            return FoundSignature(await _checked(source, candidate.digest, form, digest, policy), candidate)
        except SignatureRefused as failure:
            failures.append(failure)
    if not failures:
        found = f"no signature (no Sigstore bundle among its referrers, no tag {FoundBy.COSIGN_SIGNATURE.tag(digest)})"
    else:
        found = f"{len(failures)} signatures, none valid; the first: {failures[0]}" if len(failures) > 1 else str(
            failures[0])
    raise Unsigned(f"{desired.source.as_written} ({digest}): {found}; {policy.described} is required")


async def check_pinned(source: RemoteRepository, desired: DesiredImage, locked: LockedImage) -> None:
    """Refuse the image unless the signature lock pinned is still in the source and still proves
    what it proved then (its bytes are fetched by digest, so they are the pinned ones). A
    ``.sig`` tag must still hold it: a tag that moved is a signature replaced upstream."""
    policy = desired.signature
    assert policy is not None, "asked only under a policy"
    where = f"{desired.source.as_written} ({locked.digest})"
    pinned = locked.signature
    if pinned is None:
        raise Unsigned(f"{where}: no signature pinned; run `image-syncer lock`")
    if pinned.form is SignatureForm.COSIGN_TAG:
        tag = FoundBy.COSIGN_SIGNATURE.tag(locked.digest)
        if (now := await source.resolve_digest(tag)) != pinned.digest:
            raise Unsigned(f"{where}: its pinned signature {pinned.digest} was replaced upstream: the tag {tag} "
                           f"holds {now or 'nothing'}")
    try:
        checked = await _checked(source, pinned.digest, pinned.form, locked.digest, policy)
    except NotFound:
        raise Unsigned(f"{where}: its pinned signature {pinned.digest} is gone from the source") from None
    except SignatureRefused as failure:
        raise Unsigned(f"{where}: its pinned signature {pinned.digest} no longer verifies: {failure}") from None
    if checked.proof != pinned.proof:
        raise Unsigned(f"{where}: its pinned signature {pinned.digest} proves other than the lock records")


async def _checked(
    source: RemoteRepository, signature: Digest, form: SignatureForm, digest: Digest, policy: SignaturePolicy
) -> PinnedSignature:
    """The signature stored in the manifest ``signature``, verified over ``digest``."""
    from reconciler.registry import cosign, sigstore  # cryptography is loaded only when signatures are required

    manifest = await source.get_manifest(signature)
    if form is SignatureForm.COSIGN_TAG:
        if policy.trust.key is None:
            raise SignatureRefused("a cosign .sig signature, which only a key verifies, and verify: names none")
        await cosign.verify(source, manifest, digest, policy.trust.key)
        return PinnedSignature(signature, form, SignatureProof(key=sigstore.key_fingerprint(policy.trust.key)))
    bundles = [layer for layer in manifest.layers() if layer.media_type == BUNDLE_MEDIA_TYPE]
    if len(bundles) != 1:
        raise SignatureRefused(f"not a Sigstore bundle: {len(bundles)} layers of its media type, not 1")
    bundle = await source.read_blob(bundles[0])
    proof = await asyncio.to_thread(sigstore.verify_bundle, bundle, digest, policy.trust)
    return PinnedSignature(signature, form, proof)
