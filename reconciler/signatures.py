"""Whether a source digest carries the signature images.yaml requires: asked when lock pins
it, and again right before apply copies it (a signature can be removed upstream meanwhile)."""

from __future__ import annotations

from reconciler.config import DesiredImage
from reconciler.oci.digest import Digest
from reconciler.registry.errors import RegistryError
from reconciler.registry.repository import RemoteRepository


class Unsigned(RegistryError):
    """The source digest lacks a valid signature by what images.yaml requires: the image is refused."""


async def check_signature(source: RemoteRepository, desired: DesiredImage, digest: Digest) -> None:
    """Refuse a digest without a valid cosign signature by the key images.yaml requires (if any)."""
    if desired.signature is None:
        return
    from reconciler.registry import cosign  # cryptography is loaded only when signatures are required

    try:
        await cosign.verify(source, digest, desired.signature.key)
    except cosign.SignatureRefused as refusal:
        raise Unsigned(f"{desired.source.as_written} ({digest}): {refusal}, by the key "
                       f"{desired.signature.key_file.name}") from None
