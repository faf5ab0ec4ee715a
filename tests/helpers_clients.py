"""Our registry client as the tests drive it: quick retries, given credentials, one copy as apply makes it.

Beside tests/harness/ rather than in it: the harness never imports ``reconciler``.
"""

from __future__ import annotations

import asyncio

from reconciler.oci import reference
from reconciler.oci.manifest import Manifest
from reconciler.registry.copy import Copier
from reconciler.registry.credentials import Credentials
from reconciler.registry.options import TransportOptions
from reconciler.registry.registries import Registries
from reconciler.registry.retry import RetryPolicy
from tests.harness.images import PushedImage
from tests.harness.skopeo import skopeo_inspect_raw

# Up to four tries a request, with waits of milliseconds, so a test sits through the retries it provokes.
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


def run(coroutine):
    return asyncio.run(coroutine)


def registries(credentials: dict[str, tuple[str, str]] | None = None, **options) -> Registries:
    """Clients knowing only ``credentials`` (host -> user, password), with FAST_RETRY unless ``options`` say."""
    known = {host: Credentials(username=user, password=password) for host, (user, password) in (credentials or {}).items()}
    options.setdefault("retry", FAST_RETRY)
    return Registries(TransportOptions(**options), known.get)


async def copy_image(regs: Registries, source: str, target: str) -> tuple[Copier, Manifest]:
    """Copy ``source`` (a tag reference) to ``target`` and tag it, as apply does."""
    source_ref, target_ref = reference.parse(source), reference.parse(target)
    digest = await regs.resolve_digest(source_ref)
    async with Copier(regs) as copier:
        manifest = await copier.copy_referenced(regs.repository(source_ref.repository), digest,
                                                regs.repository(target_ref.repository))
    await regs.repository(target_ref.repository).put_manifest(target_ref.tag, manifest)
    return copier, manifest


def mirror(source: str, target: str, credentials: dict[str, tuple[str, str]] | None = None,
           **options) -> tuple[Copier, Manifest]:
    """``copy_image`` in a run of its own, with ``registries(credentials, **options)``."""

    async def main():
        async with registries(credentials, **options) as regs:
            return await copy_image(regs, source, target)

    return run(main())


def assert_same_image(pushed: PushedImage, target_host: str, target_repo: str, tag: str = "v1", **skopeo) -> None:
    """The target serves byte-identical manifests and every blob of the pushed image."""
    assert skopeo_inspect_raw(f"{target_host}/{target_repo}:{tag}", **skopeo) == pushed.manifest
    for child in pushed.children:
        assert skopeo_inspect_raw(f"{target_host}/{target_repo}@{child.digest}", **skopeo) == child.raw


def largest_blob(pushed: PushedImage) -> str:
    """The biggest layer's hex digest: it names the blob in a GET path and in a PUT's ``digest=`` (its colon escaped)."""
    return max(pushed.blobs, key=lambda digest: (pushed.blobs[digest], digest)).split(":", 1)[1]
