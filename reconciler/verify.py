"""Verify: does every locked target tag still hold its locked digest?

For a scheduled job that watches our registry for tampering or deletion: one HEAD per
target tag, nothing asked of any source, nothing written.
"""

from __future__ import annotations

import enum

import attrs

from reconciler.bounded import bugs_fail_this_image
from reconciler.lockfile import LockedImage, Lockfile
from reconciler.oci.digest import Digest
from reconciler.oci.errors import OCIError
from reconciler.oci.reference import Reference
from reconciler.registry.registries import Registries
from reconciler.shard import Shard, lock_part

VERIFY_VERSION = 1


class Status(enum.Enum):
    INTACT = "intact"
    CHANGED = "changed"
    """The tag holds another digest: re-pointed behind our back."""
    DELETED = "deleted"
    """The tag holds nothing."""
    ERROR = "error"
    """The registry could not be asked; nothing is known."""


@attrs.frozen
class VerifiedImage:
    source: Reference
    target: Reference
    digest: Digest
    status: Status
    target_digest: Digest | None = None
    """What the target tag holds now."""
    message: str | None = None


@attrs.frozen
class VerifySummary:
    intact: int
    changed: int
    deleted: int
    errors: int


@attrs.frozen
class Verification:
    images: tuple[VerifiedImage, ...]
    shard: Shard | None = None
    version: int = VERIFY_VERSION

    @property
    def summary(self) -> VerifySummary:
        statuses = [image.status for image in self.images]
        return VerifySummary(
            intact=statuses.count(Status.INTACT),
            changed=statuses.count(Status.CHANGED),
            deleted=statuses.count(Status.DELETED),
            errors=statuses.count(Status.ERROR),
        )

    @property
    def ok(self) -> bool:
        return all(image.status is Status.INTACT for image in self.images)


async def verify_lock(
    registries: Registries, lock: Lockfile, shard: Shard | None = None
) -> Verification:
    """One HEAD per locked target tag (of ``shard`` only, when given); a registry's failure is that image's verdict."""

    async def verify_one(locked: LockedImage) -> VerifiedImage:
        try:
            with bugs_fail_this_image():
                return _verdict(locked, await registries.resolve_digest(locked.target))
        except OCIError as error:
            return VerifiedImage(locked.source, locked.target, locked.pushed_digest, Status.ERROR, message=str(error))

    images = await registries.map(verify_one, lock_part(shard, lock).images)
    return Verification(images=tuple(images), shard=shard)


def _verdict(locked: LockedImage, held: Digest | None) -> VerifiedImage:
    status, message = Status.INTACT, None
    if held is None:
        status, message = Status.DELETED, "target tag holds nothing"
    elif held != locked.pushed_digest:
        status, message = Status.CHANGED, f"target tag holds {held}, not the locked {locked.pushed_digest}"
    return VerifiedImage(locked.source, locked.target, locked.pushed_digest, status, held, message)
