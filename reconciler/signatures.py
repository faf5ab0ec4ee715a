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
from reconciler.oci.digest import Digest, DigestMismatch
from reconciler.oci.mediatypes import BUNDLE_MEDIA_TYPE
from reconciler.oci.referrer import COSIGN_ARTIFACT_TYPES, FoundBy, Referrer
from reconciler.oci.signature import PinnedSignature, SignatureForm, SignatureProof
from reconciler.registry import referrers
from reconciler.registry.client import NotFound
from reconciler.registry.errors import RegistryError, SignatureRefused
from reconciler.registry.layout.reader import Layout
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


@attrs.frozen
class FoundSignatures:
    """What satisfied a policy: a signature, and an attestation of each predicate type it requires."""

    signature: FoundSignature
    attestations: tuple[FoundSignature, ...] = ()

    @property
    def referrers(self) -> tuple[Referrer, ...]:
        return tuple(found.referrer for found in (self.signature, *self.attestations))


async def find_signature(
    source: RemoteRepository, desired: DesiredImage, digest: Digest, tags: Collection[str]
) -> FoundSignatures:
    """The first signature of ``digest`` (by its manifest's digest) that satisfies the entry's
    policy, and the first of each attestation it requires (a signature is any verified
    statement of the digest, an attestation one of the predicate type required); ``tags``:
    the source repository's, which show cosign's ``.sig`` tag."""
    policy = desired.signature
    assert policy is not None, "asked only under a policy"
    where = f"{desired.source.as_written} ({digest})"
    failures: list[SignatureRefused] = []
    signature: FoundSignature | None = None
    attestations: dict[str, FoundSignature] = {}
    for candidate in await referrers.find(source, [digest], SIGNATURE_TYPES, tags=tags, depth=1):
        if signature is not None and set(policy.attestations) <= attestations.keys():
            break
        form = SignatureForm.COSIGN_TAG if candidate.found_by is FoundBy.COSIGN_SIGNATURE else SignatureForm.BUNDLE
        try:
            found = FoundSignature(await _checked(source, candidate.digest, form, digest, policy), candidate)
        except SignatureRefused as failure:
            failures.append(failure)
            continue
        signature = signature or found
        if (kind := found.pinned.proof.predicate_type) in policy.attestations:
            attestations.setdefault(kind, found)
    if signature is None:
        raise Unsigned(f"{where}: {_none_valid(failures, digest)}; {policy.described} is required")
    if missing := [kind for kind in policy.attestations if kind not in attestations]:
        raise Unsigned(f"{where}: no attestation of {missing[0]} verifies; {policy.described} is required")
    return FoundSignatures(signature, tuple(attestations[kind] for kind in policy.attestations))


def _none_valid(failures: list[SignatureRefused], digest: Digest) -> str:
    if not failures:
        return f"no signature (no Sigstore bundle among its referrers, no tag {FoundBy.COSIGN_SIGNATURE.tag(digest)})"
    return f"{len(failures)} signatures, none valid; the first: {failures[0]}" if len(failures) > 1 else str(
        failures[0])


async def check_pinned(source: RemoteRepository | Layout, desired: DesiredImage, locked: LockedImage) -> None:
    """Refuse the image unless the signature (and each attestation) lock pinned is still in the
    source and still proves what it proved then (its bytes are fetched by digest, so they are
    the pinned ones). A ``.sig`` tag must still hold it: a tag that moved is a signature
    replaced upstream."""
    policy = desired.signature
    assert policy is not None, "asked only under a policy"
    where = f"{desired.source.as_written} ({locked.digest})"
    if locked.signature is None:
        raise Unsigned(f"{where}: no signature pinned; run `image-syncer lock`")
    for pinned in (locked.signature, *locked.attestations):
        what = "attestation" if pinned in locked.attestations else "signature"
        if pinned.form is SignatureForm.COSIGN_TAG and isinstance(source, RemoteRepository):  # a layout has no tags
            tag = FoundBy.COSIGN_SIGNATURE.tag(locked.digest)
            if (now := await source.resolve_digest(tag)) != pinned.digest:
                raise Unsigned(f"{where}: its pinned {what} {pinned.digest} was replaced upstream: the tag {tag} "
                               f"holds {now or 'nothing'}")
        try:
            checked = await _checked(source, pinned.digest, pinned.form, locked.digest, policy)
        except NotFound:
            raise Unsigned(f"{where}: its pinned {what} {pinned.digest} is gone from the source") from None
        except SignatureRefused as failure:
            raise Unsigned(f"{where}: its pinned {what} {pinned.digest} no longer verifies: {failure}") from None
        except DigestMismatch as failure:  # damaged, or not what was pinned: either way it proves nothing
            raise Unsigned(f"{where}: its pinned {what} {pinned.digest} is not the bytes pinned: {failure}") from None
        if checked.proof != pinned.proof:
            raise Unsigned(f"{where}: its pinned {what} {pinned.digest} proves other than the lock records")


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
