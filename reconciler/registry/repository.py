"""One repository bound to its registry's client: the distribution API without a path to pass.

Callers hold a ``RemoteRepository`` (from ``Registries.repository``) instead of splitting a
reference into a client and a path string, as go-containerregistry's ``remote`` binds a
``name.Repository`` to its fetcher.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import attrs

from reconciler.oci import limits
from reconciler.oci.digest import Digest
from reconciler.oci.manifest import Descriptor, Manifest
from reconciler.oci.reference import Repository
from reconciler.registry import ratelimit
from reconciler.registry.client import Deletion, ManifestHead, RegistryClient
from reconciler.registry.limiter import AdaptiveLimit
from reconciler.registry.resumable import BlobReader
from reconciler.registry.upload import BlobTransfer, Source


@attrs.frozen
class RemoteRepository:
    """``repository`` on the registry ``client`` speaks to; each method is the client's, its path bound."""

    repository: Repository
    client: RegistryClient = attrs.field(eq=False, repr=False)

    @property
    def path(self) -> str:
        return self.repository.path

    @property
    def host(self) -> str:
        """The host the API answers on, as messages name it (Docker Hub's differs from its registry's name)."""
        return self.client.host

    @property
    def limit(self) -> AdaptiveLimit:
        return self.client.limit

    @property
    def pull_limit(self) -> ratelimit.PullLimit | None:
        return self.client.pull_limit

    async def head_manifest(self, identifier: str) -> ManifestHead | None:
        return await self.client.head_manifest(self.path, identifier)

    async def resolve_digest(self, identifier: str) -> Digest | None:
        return await self.client.resolve_digest(self.path, identifier)

    async def get_manifest(self, identifier: str | Digest) -> Manifest:
        return await self.client.get_manifest(self.path, identifier)

    async def put_manifest(self, identifier: str, manifest: Manifest) -> Digest | None:
        return await self.client.put_manifest(self.path, identifier, manifest)

    async def delete_manifest(self, identifier: str) -> Deletion:
        return await self.client.delete_manifest(self.path, identifier)

    async def tags(self, page_size: int = 1000) -> list[str]:
        return await self.client.tags(self.path, page_size)

    async def referrers(self, digest: Digest) -> list[bytes] | None:
        return await self.client.referrers(self.path, digest)

    async def offers_referrers_api(self, digest: Digest) -> bool:
        return await self.client.offers_referrers_api(self.path, digest)

    def open_blob(self, descriptor: Descriptor) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.client.open_blob(self.path, descriptor)

    def blob_reader(self, descriptor: Descriptor) -> BlobReader:
        return self.client.blob_reader(self.path, descriptor)

    async def read_blob(self, descriptor: Descriptor, limit: int = limits.MANIFEST_BYTES) -> bytes:
        return await self.client.read_blob(self.path, descriptor, limit)

    async def upload_blob(
        self,
        descriptor: Descriptor,
        chunks: Source,
        mount_from: str | None = None,
    ) -> BlobTransfer:
        return await self.client.upload_blob(self.path, descriptor, chunks, mount_from)
