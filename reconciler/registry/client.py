"""The distribution API of one registry: manifests, listings and blobs, with every byte verified.

One ``RegistryClient`` per registry host shares one connection pool and one token cache
(``exchange.py``); ``Registries`` (``registries.py``) hands them out so a run never opens
two pools to one host.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator

import attrs
import httpx

from reconciler.oci import limits, mediatypes
from reconciler.oci.digest import Digest, DigestMismatch
from reconciler.oci.manifest import Descriptor, InvalidManifest, Manifest, parse
from reconciler.registry import upload
from reconciler.registry.auth import delete_scopes, pull_scopes, push_scopes
from reconciler.registry.credentials import CredentialSource
from reconciler.registry.errors import RegistryError, ResponseError
from reconciler.registry.exchange import Exchange, parse_header_digest
from reconciler.registry.listing import next_link, page_tags
from reconciler.registry.options import TransportOptions
from reconciler.registry.origin import follow, origin, same_origin
from reconciler.registry.resumable import BlobReader
from reconciler.registry.retry import retrying
from reconciler.registry.transport import with_query
from reconciler.registry.upload import BlobTransfer

CHUNK_BYTES = 1024 * 1024
# Answers to a manifest PUT that mean a blob link was unreadable for a moment (docker-registry
# rewrites a link file in place when a blob is written again).
_RACED_BLOB_CODES = frozenset({"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "DIGEST_INVALID"})


def _unsupported(refusal: ResponseError, identifier: str) -> bool:
    if refusal.status == 405 or "UNSUPPORTED" in refusal.codes:
        return True
    is_tag = ":" not in identifier  # a digest always holds one, a tag never
    return refusal.status == 400 and "DIGEST_INVALID" in refusal.codes and is_tag


class NotFound(RegistryError):
    """The registry does not have the manifest or blob asked for."""


class Deletion(enum.Enum):
    """What a registry said to a manifest DELETE."""

    DELETED = "deleted"
    GONE = "gone"
    """Nothing by that reference (404): deleted already, or never there."""
    UNSUPPORTED = "unsupported"
    """The registry deletes nothing this way: deletion turned off, or (for a tag) only by digest."""


@attrs.frozen
class ManifestHead:
    """What a HEAD tells about a manifest; the digest is absent when the registry omits it."""

    media_type: str | None
    digest: Digest | None


class RegistryClient(Exchange):
    """The distribution API's operations on one registry, each taking the repository's path."""

    def __init__(self, host: str, options: TransportOptions, credentials: CredentialSource) -> None:
        super().__init__(host, options, credentials)
        self._uploads = upload.Uploads(self, options.chunk_size)
        self._offers_referrers_api: bool | None = None
        self._referrers_probe = asyncio.Lock()

    # -- manifests ----------------------------------------------------------------

    async def head_manifest(self, path: str, identifier: str) -> ManifestHead | None:
        response = await self.send(
            "HEAD", await self.url(path, f"manifests/{identifier}"), pull_scopes(path),
            headers={"Accept": mediatypes.ACCEPT},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise await self.failure(response, path, f"manifests/{identifier}")
        return ManifestHead(
            media_type=mediatypes.served(response.headers.get("Content-Type")),
            digest=parse_header_digest(response.headers.get("Docker-Content-Digest"), self.host, path),
        )

    async def resolve_digest(self, path: str, identifier: str) -> Digest | None:
        """The digest a tag (or digest) names now: one HEAD, a GET only if the registry omits it."""
        head = await self.head_manifest(path, identifier)
        if head is None:
            return None
        if head.digest is not None:
            return head.digest
        return (await self.get_manifest(path, identifier)).digest

    async def get_manifest(self, path: str, identifier: str | Digest) -> Manifest:
        """GET by tag or digest; a digest asked for (or announced) must match the bytes.

        An answer cut short is fetched again, whole, within the request's retry budget.
        """
        return await retrying(
            self._transport.retry_policy,
            lambda: self._fetch_manifest(path, identifier),
            f"{self.host}/{path}: manifest {identifier}",
        )

    async def _fetch_manifest(self, path: str, identifier: str | Digest) -> Manifest:
        what = f"manifests/{identifier}"
        response = await self.send(
            "GET", await self.url(path, what), pull_scopes(path),
            headers={"Accept": mediatypes.ACCEPT}, limit=limits.MANIFEST_BYTES,
        )
        if response.status_code == 404:
            raise NotFound(f"{self.host}/{path}: manifest {identifier} not found")
        if response.status_code != 200:
            raise await self.failure(response, path, what)
        data = response.content
        served = mediatypes.served(response.headers.get("Content-Type"))
        if served in mediatypes.SCHEMA1_TYPES:
            # Said before the digest check, which a signed schema 1 manifest fails: its digest is not of its bytes.
            raise InvalidManifest(f"{self.host}/{path}: manifest {identifier} is {served}: "
                                  f"{mediatypes.SCHEMA1_REFUSED}")
        announced = parse_header_digest(response.headers.get("Docker-Content-Digest"), self.host, path)
        expected = identifier if isinstance(identifier, Digest) else announced
        digest = expected or Digest.of(data)
        digest.verify(data, f"{self.host}/{path}: manifest {identifier}")
        if announced and announced != digest:
            raise DigestMismatch(digest, announced, f"{self.host}/{path}: Docker-Content-Digest of {identifier}")
        return parse(data, served, digest)

    async def put_manifest(self, path: str, identifier: str, manifest: Manifest) -> Digest | None:
        """Push; returns the digest the registry says it stored, None if it did not say."""
        return await retrying(
            self._transport.retry_policy,
            lambda: self._put_manifest(path, identifier, manifest),
            f"{self.host}/{path}: manifest {identifier}",
        )

    async def _put_manifest(self, path: str, identifier: str, manifest: Manifest) -> Digest | None:
        what = f"manifests/{identifier}"
        response = await self.send(
            "PUT", await self.url(path, what), push_scopes(path),
            headers={"Content-Type": manifest.media_type}, content=manifest.data,
        )
        if response.status_code not in (200, 201, 202):
            # Every blob was placed and checked before this PUT, so a registry that says one
            # is unknown read a link another writer was rewriting that instant: ask again.
            raise await self.failure(response, path, what, transient_codes=_RACED_BLOB_CODES)
        stored = parse_header_digest(response.headers.get("Docker-Content-Digest"), self.host, path)
        if stored and stored != manifest.digest:
            raise DigestMismatch(manifest.digest, stored, f"{self.host}/{path}: stored manifest {identifier}")
        return stored

    async def delete_manifest(self, path: str, identifier: str) -> Deletion:
        """DELETE a tag or a digest; any answer but deleted, gone or unsupported is a RegistryError.

        docker-registry 2.8 answers 405 ``UNSUPPORTED`` while ``storage.delete.enabled`` is off,
        and a tag's deletion (which it reads as a digest) 400 ``DIGEST_INVALID``. Sent again
        after a lost answer: a DELETE done twice is answered 404, gone.
        """
        what = f"manifests/{identifier}"
        response = await self.send("DELETE", await self.url(path, what), delete_scopes(path), idempotent=True)
        if response.status_code in (200, 202, 204):
            return Deletion.DELETED
        if response.status_code == 404:
            return Deletion.GONE
        refusal = await self.failure(response, path, what)
        if isinstance(refusal, ResponseError) and _unsupported(refusal, identifier):
            return Deletion.UNSUPPORTED
        raise refusal

    # -- listings -------------------------------------------------------------------

    async def tags(self, path: str, page_size: int = 1000) -> list[str]:
        """Every tag of the repository (none if it does not exist), ``page_size`` per request.

        More than ``limits.TAGS_PER_REPOSITORY`` over all pages are refused, each page
        counted before its tags are made into strings.
        """
        tags: list[str] = []
        try:
            async for page in self._pages(path, "tags/list", {"n": str(page_size)}, limit=limits.TAGS_PAGE_BYTES):
                tags += page_tags(page, limits.TAGS_PER_REPOSITORY - len(tags), f"{self.host}/{path}")
        except NotFound:
            return []
        return tags

    async def referrers(self, path: str, digest: Digest) -> list[bytes] | None:
        """The referrers API's image index pages for ``digest``; None where the registry does not offer it.

        A registry that offers it never answers 404 (the spec's rule), so one 404 settles it for the run.
        """
        if self._offers_referrers_api is None:
            async with self._referrers_probe:  # the first question alone, so a 404 is met once
                if self._offers_referrers_api is None:
                    return await self._referrers(path, digest)
        return await self._referrers(path, digest)

    async def offers_referrers_api(self, path: str, digest: Digest) -> bool:
        """Asked (by listing ``digest``'s referrers) only until the registry has answered once."""
        if self._offers_referrers_api is None:
            await self.referrers(path, digest)
        return bool(self._offers_referrers_api)

    async def _referrers(self, path: str, digest: Digest) -> list[bytes] | None:
        if self._offers_referrers_api is False:
            return None
        pages: list[bytes] = []
        try:
            async for page in self._pages(path, f"referrers/{digest}", {}, limits.REFERRERS_LISTING_BYTES,
                                          accept=mediatypes.OCI_INDEX):
                pages.append(page)
                if sum(map(len, pages)) > limits.REFERRERS_LISTING_BYTES:
                    raise RegistryError(f"{self.host}/{path}: referrers/{digest}: the listing is over the "
                                        f"{limits.size(limits.REFERRERS_LISTING_BYTES)} limit")
        except NotFound:
            self._offers_referrers_api = False
            return None
        self._offers_referrers_api = True
        return pages

    async def _pages(
        self, path: str, suffix: str, query: dict[str, str], limit: int, accept: str = "application/json"
    ) -> AsyncIterator[bytes]:
        """A paged listing's bodies, each within ``limit``, following ``Link: <…>; rel="next"`` (the spec's pagination).

        The spec's Link is relative to the registry: one that leaves its origin is refused, not followed.
        """
        url = with_query(await self.url(path, suffix), query) if query else await self.url(path, suffix)
        registry = httpx.URL(await self._transport.base_url())
        for _ in range(limits.PAGES):
            response = await self.send("GET", url, pull_scopes(path), headers={"Accept": accept}, limit=limit)
            if response.status_code == 404:
                raise NotFound(f"{self.host}/{path}: {suffix} not found")
            if response.status_code != 200:
                raise await self.failure(response, path, suffix)
            yield response.content
            following = next_link(response.headers.get("Link"))
            if following is None:
                return
            where = f"{self.host}/{path}: {suffix}: the next page's Link"
            next_page = follow(httpx.URL(url), following, where)
            if not same_origin(next_page, registry):
                raise RegistryError(f"{where} leaves the registry for {origin(next_page)}; "
                                    "not followed, the listing is refused")
            url = str(next_page)
        raise RegistryError(f"{self.host}/{path}: {suffix}: more than {limits.PAGES} pages")

    # -- blobs ----------------------------------------------------------------------

    def open_blob(self, path: str, descriptor: Descriptor) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream a blob's bytes as sent (never decoded), going on with a Range request where an answer is cut short."""
        return self.blob_reader(path, descriptor).open()

    def blob_reader(self, path: str, descriptor: Descriptor) -> BlobReader:
        """The blob's reader, kept over the tries of a transfer: each opening goes on where the last one stopped."""
        return BlobReader(descriptor, lambda start: self._blob_answer(path, descriptor, start),
                          self._transport.retry_policy, f"{self.host}/{path}: blob")

    async def _blob_answer(self, path: str, descriptor: Descriptor, start: int) -> httpx.Response:
        """The registry's answer for the blob from byte ``start`` on, body unread: asked of the registry each time
        (a CDN's signed redirect may have expired), redirects followed under the origin rule."""
        what = f"blobs/{descriptor.digest}"
        headers = {"Range": f"bytes={start}-"} if start else None
        response = await self.send("GET", await self.url(path, what), pull_scopes(path), headers=headers, stream=True)
        if response.status_code == 404:
            await response.aclose()
            raise NotFound(f"{self.host}/{path}: blob {descriptor.digest} not found")
        if response.status_code not in (200, 206):
            raise await self.failure(response, path, what)
        return response

    async def read_blob(self, path: str, descriptor: Descriptor, limit: int = limits.MANIFEST_BYTES) -> bytes:
        """A small blob (an image config) read whole and verified; an answer cut short goes on with a Range."""
        if descriptor.size > limit:
            raise RegistryError(f"{self.host}/{path}: blob {descriptor.digest} is over {limit} bytes")

        async def read() -> bytes:
            async with self.open_blob(path, descriptor) as chunks:
                return b"".join([chunk async for chunk in chunks])

        return await retrying(self._transport.retry_policy, read, f"{self.host}/{path}: blob {descriptor.digest}")

    async def upload_blob(
        self, path: str, descriptor: Descriptor, chunks: upload.Source, mount_from: str | None = None
    ) -> BlobTransfer:
        """Mount from ``mount_from`` when the registry can, else upload the streamed bytes.

        ``chunks`` opens the source (from an offset) only when an upload is really needed,
        so a successful mount never touches the source registry. One call is one try; the
        caller's next try of a blob whose upload was cut short goes on in its session from
        the offset the registry reports, or starts whole in a new one (``upload.py``).
        """
        return await self._uploads.upload(path, descriptor, chunks, mount_from)
