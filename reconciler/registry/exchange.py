"""One registry's authenticated requests: the authorization each asks for, the pull budget the
registry states, and its error answers read into one RegistryError.

The layer between the HTTP transport (``transport.py``) and the distribution API's operations
(``client.py``, ``upload.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from reconciler.oci.digest import Digest, InvalidDigest
from reconciler.oci.errors import OCIError
from reconciler.registry import ratelimit
from reconciler.registry.body import read_body
from reconciler.registry.auth import Authenticator
from reconciler.registry.credentials import CredentialSource, places_searched
from reconciler.registry.errors import ErrorBody, PullLimitReached, RegistryError, ResponseError
from reconciler.registry.limiter import AdaptiveLimit
from reconciler.registry.options import TransportOptions
from reconciler.registry.retry import MAX_RETRY_AFTER, retry_after, worth_retrying
from reconciler.registry.transport import Transport


class Exchange:
    """One pooled, authenticated connection to a registry host; its token cache is shared by every repository."""

    def __init__(self, host: str, options: TransportOptions, credentials: CredentialSource) -> None:
        self.host = host
        self._transport = Transport(host, options)
        self._auth = Authenticator(self._transport, credentials)
        self.pull_limit: ratelimit.PullLimit | None = None
        """The pull budget the registry stated last (Docker Hub does, on manifest answers)."""

    @property
    def limit(self) -> AdaptiveLimit:
        """How many requests this registry gets at once, as learnt so far."""
        return self._transport.limit

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def url(self, path: str, suffix: str) -> str:
        return f"{await self._transport.base_url()}/v2/{path}/{suffix}"

    async def send(
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
        """One request with this registry's authorization for ``scopes``, asked again once on a 401.

        ``limit``: the cap on a successful answer's body, for the bodies we use (``Transport.request``)."""
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

    async def failure(
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
            codes=error_body.codes,
        )


def parse_header_digest(value: str | None, host: str, path: str) -> Digest | None:
    if not value:
        return None
    try:
        return Digest.parse(value.strip())
    except InvalidDigest:
        raise RegistryError(f"{host}/{path}: registry sent an invalid Docker-Content-Digest {value!r}") from None


