"""Every registry of a run: one client per host, the repositories bound to them, and the run's fan-out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from reconciler.oci.digest import Digest
from reconciler.oci.reference import Reference, Repository
from reconciler.registry.client import RegistryClient
from reconciler.registry.credentials import CredentialLookup
from reconciler.registry.fanout import Item, Result, map_bounded
from reconciler.registry.options import TransportOptions
from reconciler.registry.repository import RemoteRepository


class Registries:
    """One client per registry host for the whole run; closes them all at the end."""

    def __init__(self, options: TransportOptions, credentials: CredentialLookup) -> None:
        self._options = options
        self._credentials = credentials
        self._clients: dict[str, RegistryClient] = {}

    @property
    def options(self) -> TransportOptions:
        return self._options

    def _client(self, repository: Repository) -> RegistryClient:
        host = repository.api_host
        client = self._clients.get(host)
        if client is None:
            registry = repository.registry
            client = RegistryClient(host, self._options, lambda: self._credentials(registry))
            self._clients[host] = client
        return client

    def repository(self, repository: Repository) -> RemoteRepository:
        """``repository`` bound to its registry's client, for callers that pass references, not paths."""
        return RemoteRepository(repository, self._client(repository))

    async def resolve_digest(self, ref: Reference) -> Digest | None:
        """What ``ref`` names now, or None: where every plan, check and verdict starts."""
        return await self.repository(ref.repository).resolve_digest(ref.identifier)

    async def map(self, work: Callable[[Item], Awaitable[Result]], items: Iterable[Item]) -> list[Result]:
        """``work`` on every item (an image, a tag rule), the results in the items' order.

        As many at once as a registry's ceiling of requests, so that the ceiling stays
        reachable; each registry's adaptive limit decides what is really sent.
        """
        return await map_bounded(work, items, self._options.max_connections)

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients.values()))
        self._clients.clear()

    async def __aenter__(self) -> Registries:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
