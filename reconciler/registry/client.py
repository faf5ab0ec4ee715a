"""The distribution API of one registry: manifests and blobs, with every byte verified.

One ``RegistryClient`` per registry host shares one connection pool and one token
cache; ``Registries`` hands them out so a run never opens two pools to one host.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
from collections.abc import AsyncIterator, Callable

import attrs
import httpx

from reconciler.oci import limits, mediatypes
from reconciler.oci.digest import Digest, DigestMismatch, InvalidDigest
from reconciler.oci.errors import OCIError
from reconciler.oci.manifest import Descriptor, InvalidManifest, Manifest, parse
from reconciler.oci.reference import Reference, Repository
from reconciler.registry import ratelimit
from reconciler.registry.auth import Authenticator, repository_scope
from reconciler.registry.credentials import CredentialLookup, CredentialSource, places_searched
from reconciler.registry.errors import ErrorBody, PullLimitReached, RegistryError, ResponseError
from reconciler.registry.limiter import AdaptiveLimit, lending_slot
from reconciler.registry.origin import follow, origin, same_origin
from reconciler.registry.retry import MAX_RETRY_AFTER, retry_after, retrying, worth_retrying
from reconciler.registry.transport import Transport, TransportOptions, read_body, with_query

log = logging.getLogger("reconciler.registry")

CHUNK_BYTES = 1024 * 1024
# Answers to a manifest PUT that mean a blob link was unreadable for a moment (docker-registry
# rewrites a link file in place when a blob is written again).
_RACED_BLOB_CODES = frozenset({"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "DIGEST_INVALID"})


class NotFound(RegistryError):
    """The registry does not have the manifest or blob asked for."""


class BlobTransfer(enum.Enum):
    MOUNTED = "mounted"
    UPLOADED = "uploaded"


@attrs.frozen
class ManifestHead:
    """What a HEAD tells about a manifest; the digest is absent when the registry omits it."""

    media_type: str | None
    digest: Digest | None


def _pull(path: str) -> tuple[str, ...]:
    return (repository_scope(path, "pull"),)


def _push(path: str, mount_from: str | None = None) -> tuple[str, ...]:
    scopes = (repository_scope(path, "pull", "push"),)
    if mount_from and mount_from != path:
        scopes += (repository_scope(mount_from, "pull"),)
    return scopes


def _next_link(header: str | None) -> str | None:
    """The target of ``<url>; rel="next"`` in a Link header."""
    for link in (header or "").split(","):
        target, _, parameters = link.partition(";")
        if "next" in parameters.replace('"', " ").replace("=", " ").split() and target.strip().startswith("<"):
            return target.strip()[1:-1]
    return None


# A JSON string (group 1: followed by a colon, so a key) or a bracket: enough to count a page's tags unparsed.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"(\s*:)?|[\[\]{}]')


def _page_tags(page: bytes, room: int, where: str) -> list[str]:
    """A tags/list page's tags; more than ``room`` are refused before any becomes a string."""
    over = RegistryError(f"{where}: tags/list lists more than the limit of {limits.TAGS_PER_REPOSITORY} tags; refused")
    if page.count(b'"') // 2 > room and _listed_strings(page) > room:
        raise over
    try:
        tags = [str(tag) for tag in limits.parse_json(page).get("tags") or ()]
    except (ValueError, AttributeError, TypeError):
        raise RegistryError(f"{where}: tags/list answered no list of tags") from None
    if len(tags) > room:
        raise over
    return tags


def _listed_strings(page: bytes) -> int:
    """How many strings the top-level ``tags`` array holds, counted without making them (a page may list
    a million tags, and some registries add a map of manifests as large)."""
    depth, key, count = 0, b"", 0
    in_tags = False
    for token in _TOKEN.finditer(page):
        first = page[token.start()]
        if first in b"[{":
            depth += 1
            in_tags = depth == 2 and first == ord("[") and key == b'"tags"'
        elif first in b"]}":
            depth -= 1
            in_tags = False
        elif token.group(1) is not None:
            if depth == 1:
                key = token.group()[: -len(token.group(1))]
        elif in_tags:
            count += 1
    return count


class RegistryClient:
    def __init__(self, host: str, options: TransportOptions, credentials: CredentialSource) -> None:
        self.host = host
        self._transport = Transport(host, options)
        self._auth = Authenticator(self._transport, credentials)
        self._chunk_size = options.chunk_size
        self.pull_limit: ratelimit.PullLimit | None = None
        """The pull budget the registry stated last (Docker Hub does, on manifest answers)."""
        self._offers_referrers_api: bool | None = None
        self._referrers_probe = asyncio.Lock()

    @property
    def limit(self) -> AdaptiveLimit:
        """How many requests this registry gets at once, as learnt so far."""
        return self._transport.limit

    async def aclose(self) -> None:
        await self._transport.aclose()

    # -- plumbing -----------------------------------------------------------------

    async def _url(self, path: str, suffix: str) -> str:
        return f"{await self._transport.base_url()}/v2/{path}/{suffix}"

    async def _send(
        self,
        method: str,
        url: str,
        scopes: tuple[str, ...],
        *,
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        stream: bool = False,
        idempotent: bool | None = None,
        limit: int | None = None,
    ) -> httpx.Response:
        """``limit``: the cap on a successful answer's body, for the bodies we use (``Transport.request``)."""
        async with self._auth.first_exchange():
            authorization = await self._auth.authorization(scopes)
            response = await self._transport.request(
                method, url, headers=headers, content=content, stream=stream, auth_header=authorization,
                idempotent=idempotent, limit=limit,
            )
            if response.status_code == 401 and not isinstance(content, AsyncIterator):
                await response.aclose()
                authorization = await self._auth.retry_authorization(response, scopes)
                if authorization is not None:
                    response = await self._transport.request(
                        method, url, headers=headers, content=content, stream=stream, auth_header=authorization,
                        idempotent=idempotent, limit=limit,
                    )
        if (stated := ratelimit.PullLimit.from_headers(response.headers)) is not None:
            self.pull_limit = stated
        return response

    async def _fail(
        self, response: httpx.Response, path: str, what: str, transient_codes: frozenset[str] = frozenset()
    ) -> RegistryError:
        """Read the spec's error body (even from a stream, within its cap) into one message.

        A retry status is transient, and so is an error code in ``transient_codes``.
        """
        try:
            if not response.is_closed:
                await read_body(response, None, f"{self.host}/{path}: {what}")
            body = response.content
        except (httpx.StreamError, httpx.TransportError, OCIError):
            body = b""
        error_body = ErrorBody.parse(body, response.reason_phrase)
        message = error_body.message
        if response.status_code == 401:
            message += (
                " (credentials were rejected or lack this permission)"
                if await self._auth.credentials()
                else " (authentication required, and no credentials for this registry were found: no key file or "
                f"access token for it, nothing in {', '.join(places_searched()) or 'any docker or podman auth file'})"
            )
        status = response.status_code
        wait = retry_after(response)
        limit = ratelimit.spent(response)
        if limit is not None:
            return PullLimitReached(self.host, path, response.request.method, what, limit, wait)
        if wait is not None and wait > MAX_RETRY_AFTER:
            message += f" (the registry asks to retry in {ratelimit.duration(wait)}; not waiting that long)"
        return ResponseError(
            self.host, path, response.request.method, what, status, message,
            transient=worth_retrying(response) or bool(error_body.codes & transient_codes), retry_after=wait,
        )

    # -- manifests ----------------------------------------------------------------

    async def head_manifest(self, path: str, identifier: str) -> ManifestHead | None:
        response = await self._send(
            "HEAD", await self._url(path, f"manifests/{identifier}"), _pull(path),
            headers={"Accept": mediatypes.ACCEPT},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise await self._fail(response, path, f"manifests/{identifier}")
        return ManifestHead(
            media_type=mediatypes.served(response.headers.get("Content-Type")),
            digest=_parse_header_digest(response.headers.get("Docker-Content-Digest"), self.host, path),
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
        response = await self._send(
            "GET", await self._url(path, what), _pull(path),
            headers={"Accept": mediatypes.ACCEPT}, limit=limits.MANIFEST_BYTES,
        )
        if response.status_code == 404:
            raise NotFound(f"{self.host}/{path}: manifest {identifier} not found")
        if response.status_code != 200:
            raise await self._fail(response, path, what)
        data = response.content
        served = mediatypes.served(response.headers.get("Content-Type"))
        if served in mediatypes.SCHEMA1_TYPES:
            # Said before the digest check, which a signed schema 1 manifest fails: its digest is not of its bytes.
            raise InvalidManifest(f"{self.host}/{path}: manifest {identifier} is {served}: "
                                  f"{mediatypes.SCHEMA1_REFUSED}")
        announced = _parse_header_digest(response.headers.get("Docker-Content-Digest"), self.host, path)
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
        response = await self._send(
            "PUT", await self._url(path, what), _push(path),
            headers={"Content-Type": manifest.media_type}, content=manifest.data,
        )
        if response.status_code not in (200, 201, 202):
            # Every blob was placed and checked before this PUT, so a registry that says one
            # is unknown read a link another writer was rewriting that instant: ask again.
            raise await self._fail(response, path, what, transient_codes=_RACED_BLOB_CODES)
        stored = _parse_header_digest(response.headers.get("Docker-Content-Digest"), self.host, path)
        if stored and stored != manifest.digest:
            raise DigestMismatch(manifest.digest, stored, f"{self.host}/{path}: stored manifest {identifier}")
        return stored

    # -- listings -------------------------------------------------------------------

    async def tags(self, path: str, page_size: int = 1000) -> list[str]:
        """Every tag of the repository (none if it does not exist), ``page_size`` per request.

        More than ``limits.TAGS_PER_REPOSITORY`` over all pages are refused, each page
        counted before its tags are made into strings.
        """
        tags: list[str] = []
        try:
            async for page in self._pages(path, "tags/list", {"n": str(page_size)}, limit=limits.TAGS_PAGE_BYTES):
                tags += _page_tags(page, limits.TAGS_PER_REPOSITORY - len(tags), f"{self.host}/{path}")
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
        url = with_query(await self._url(path, suffix), query) if query else await self._url(path, suffix)
        registry = httpx.URL(await self._transport.base_url())
        for _ in range(limits.PAGES):
            response = await self._send("GET", url, _pull(path), headers={"Accept": accept}, limit=limit)
            if response.status_code == 404:
                raise NotFound(f"{self.host}/{path}: {suffix} not found")
            if response.status_code != 200:
                raise await self._fail(response, path, suffix)
            yield response.content
            following = _next_link(response.headers.get("Link"))
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

    @contextlib.asynccontextmanager
    async def open_blob(self, path: str, descriptor: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream a blob's bytes as sent (never decoded); the last chunk is held back until the digest checks out."""
        what = f"blobs/{descriptor.digest}"
        response = await self._send("GET", await self._url(path, what), _pull(path), stream=True)
        try:
            if response.status_code == 404:
                raise NotFound(f"{self.host}/{path}: blob {descriptor.digest} not found")
            if response.status_code != 200:
                raise await self._fail(response, path, what)
            yield _verified(response.aiter_raw(CHUNK_BYTES), descriptor, f"{self.host}/{path}: blob")
        finally:
            await response.aclose()

    async def read_blob(self, path: str, descriptor: Descriptor, limit: int = limits.MANIFEST_BYTES) -> bytes:
        """A small blob (an image config) read whole and verified; fetched again if cut short."""
        if descriptor.size > limit:
            raise RegistryError(f"{self.host}/{path}: blob {descriptor.digest} is over {limit} bytes")

        async def read() -> bytes:
            async with self.open_blob(path, descriptor) as chunks:
                return b"".join([chunk async for chunk in chunks])

        return await retrying(self._transport.retry_policy, read, f"{self.host}/{path}: blob {descriptor.digest}")

    async def upload_blob(
        self,
        path: str,
        descriptor: Descriptor,
        chunks: Callable[[], contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]],
        mount_from: str | None = None,
    ) -> BlobTransfer:
        """Mount from ``mount_from`` when the registry can, else upload the streamed bytes.

        ``chunks`` opens the source only when an upload is really needed, so a
        successful mount never touches the source registry. One call is one attempt:
        a failed upload is restarted whole, in a new session, by the caller.
        """
        location = await self._start_upload(path, descriptor.digest, mount_from)
        if location is None:
            return BlobTransfer.MOUNTED
        async with chunks() as stream:
            with lending_slot():
                if self._chunk_size:
                    await self._upload_in_chunks(path, location, descriptor, stream)
                else:
                    await self._upload_whole(path, location, descriptor, stream)
        return BlobTransfer.UPLOADED

    async def _start_upload(self, path: str, digest: Digest, mount_from: str | None) -> str | None:
        """The upload session's URL, or None when the mount placed the blob.

        A mount the registry refuses in any other way (no access to the other
        repository, mounting not offered) falls back to a plain upload session.
        An unused session is harmless, so the POST may be sent again.
        """
        url = await self._url(path, "blobs/uploads/")
        if mount_from:
            response = await self._send(
                "POST", with_query(url, {"mount": str(digest), "from": mount_from}), _push(path, mount_from),
                headers={"Content-Length": "0"}, idempotent=True,
            )
            if response.status_code == 201:
                return None
            if response.status_code == 202 and "Location" in response.headers:
                return self._session_url(response, path)
            log.debug("%s/%s: mount of %s from %s answered HTTP %s; uploading instead",
                      self.host, path, digest, mount_from, response.status_code)
        response = await self._send("POST", url, _push(path), headers={"Content-Length": "0"}, idempotent=True)
        if response.status_code != 202 or "Location" not in response.headers:
            raise await self._fail(response, path, "blobs/uploads/")
        return self._session_url(response, path)

    def _session_url(self, response: httpx.Response, path: str) -> str:
        """Where an upload goes on: its ``Location``. On another origin it gets no credentials (``origin.py``)."""
        return str(follow(response.request.url, response.headers["Location"], f"{self.host}/{path}: upload Location"))

    async def _upload_whole(self, path: str, location: str, descriptor: Descriptor, stream: AsyncIterator[bytes]) -> None:
        response = await self._send(
            "PUT", with_query(location, {"digest": str(descriptor.digest)}), _push(path),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(descriptor.size)},
            content=stream,
        )
        await self._check_committed(response, path, descriptor.digest)

    async def _upload_in_chunks(self, path: str, location: str, descriptor: Descriptor, stream: AsyncIterator[bytes]) -> None:
        """PATCH fixed-size chunks for registries that refuse or cap monolithic uploads."""
        offset = 0
        buffer = bytearray()

        async def send_chunk(data: bytes) -> None:
            nonlocal location, offset
            response = await self._send(
                "PATCH", location, _push(path),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(data)),
                    "Content-Range": f"{offset}-{offset + len(data) - 1}",
                },
                content=data,
            )
            if response.status_code != 202 or "Location" not in response.headers:
                raise await self._fail(response, path, "blobs/uploads/ (chunk)")
            location = self._session_url(response, path)
            offset += len(data)

        async for chunk in stream:
            buffer.extend(chunk)
            while len(buffer) >= self._chunk_size:
                await send_chunk(bytes(buffer[: self._chunk_size]))
                del buffer[: self._chunk_size]
        if buffer:
            await send_chunk(bytes(buffer))
        response = await self._send(
            "PUT", with_query(location, {"digest": str(descriptor.digest)}), _push(path),
            headers={"Content-Length": "0"},
        )
        await self._check_committed(response, path, descriptor.digest)

    async def _check_committed(self, response: httpx.Response, path: str, digest: Digest) -> None:
        if response.status_code != 201:
            raise await self._fail(response, path, f"blobs/uploads/ (commit {digest})")
        stored = _parse_header_digest(response.headers.get("Docker-Content-Digest"), self.host, path)
        if stored and stored != digest:
            raise DigestMismatch(digest, stored, f"{self.host}/{path}: stored blob")


async def _verified(chunks: AsyncIterator[bytes], descriptor: Descriptor, what: str) -> AsyncIterator[bytes]:
    """Pass chunks through, hashing them; fail before the last chunk leaves if the digest is wrong.

    Holding back one chunk means a consumer that uploads these bytes never
    completes an upload of content that does not match its digest.
    """
    hasher = descriptor.digest.hasher()
    pending: bytes | None = None
    async for chunk in chunks:
        if not chunk:
            continue
        hasher.update(chunk)
        if pending is not None:
            yield pending
        pending = chunk
        if hasher.size > descriptor.size:
            raise RegistryError(f"{what} {descriptor.digest}: more than the {descriptor.size} bytes expected")
    actual = hasher.digest()
    if actual != descriptor.digest:
        raise DigestMismatch(descriptor.digest, actual, f"{what} {descriptor.digest}")
    if hasher.size != descriptor.size:
        raise RegistryError(f"{what} {descriptor.digest}: {hasher.size} bytes, expected {descriptor.size}")
    if pending is not None:
        yield pending


def _parse_header_digest(value: str | None, host: str, path: str) -> Digest | None:
    if not value:
        return None
    try:
        return Digest.parse(value.strip())
    except InvalidDigest:
        raise RegistryError(f"{host}/{path}: registry sent an invalid Docker-Content-Digest {value!r}") from None


class Registries:
    """One client per registry host for the whole run; closes them all at the end."""

    def __init__(self, options: TransportOptions, credentials: CredentialLookup) -> None:
        self._options = options
        self._credentials = credentials
        self._clients: dict[str, RegistryClient] = {}

    @property
    def options(self) -> TransportOptions:
        return self._options

    def client(self, repository: Repository) -> RegistryClient:
        host = repository.api_host
        client = self._clients.get(host)
        if client is None:
            registry = repository.registry
            client = RegistryClient(host, self._options, lambda: self._credentials(registry))
            self._clients[host] = client
        return client

    async def resolve_digest(self, ref: Reference) -> Digest | None:
        """What ``ref`` names now, or None: where every plan, check and verdict starts."""
        return await self.client(ref.repository).resolve_digest(ref.repository.path, ref.identifier)

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients.values()))
        self._clients.clear()

    async def __aenter__(self) -> Registries:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
