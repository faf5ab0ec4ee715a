"""Where each registry's credentials come from in a run, and the registry clients built from them.

The whole precedence is here: the target key file, else the access token, for the
target registry (as in the original image-syncer) and Google registries; then, for
Google registries, Google's application default credentials from a file, then the metadata
server (GCE, GKE workload identity, Cloud Run); then, for every registry, the podman and
docker auth files (``credentials.lookup``); else anonymous.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from reconciler.oci.reference import is_google_registry
from reconciler.registry import credentials as docker_credentials
from reconciler.registry.credentials import Credentials, CredentialSource
from reconciler.registry.options import TransportOptions
from reconciler.registry.registries import Registries

if TYPE_CHECKING:
    from reconciler.registry.google import GoogleTokenSource

log = logging.getLogger(__name__)


@attrs.frozen
class SessionOptions:
    transport: TransportOptions = TransportOptions()
    target_key_file: str | None = None
    access_token: str | None = attrs.field(default=None, repr=False)


class CredentialSources:
    """Each registry's credential source, chosen at its first use and kept for the run.

    A Google token source is kept rather than its token, so a token near expiry is
    still refreshed; the auth files and credential helpers are read once per registry.
    Called from several threads (``asyncio.to_thread``).
    """

    def __init__(self, options: SessionOptions, target_registries: Iterable[str]) -> None:
        """The key file is read here, so that a bad one fails before any network call."""
        self._targets = frozenset(target_registries)
        self._explicit: GoogleTokenSource | None = None
        if options.target_key_file is not None:
            self._explicit = _google().GoogleTokenSource.from_key_file(options.target_key_file)
        elif options.access_token is not None:
            self._explicit = _google().GoogleTokenSource.from_access_token(options.access_token)
        self._sources: dict[str, CredentialSource] = {}
        self._lock = threading.Lock()

    def __call__(self, registry: str) -> Credentials | None:
        with self._lock:
            source = self._sources.get(registry)
            if source is None:
                source = self._sources[registry] = self._choose(registry)
        return source()

    def _choose(self, registry: str) -> CredentialSource:
        google = is_google_registry(registry)
        token_source = None
        if self._explicit is not None and (registry in self._targets or google):
            token_source = self._explicit
        elif google:
            token_source = self._application_default or self._metadata_server
        if token_source is not None:
            log.debug("credentials for %s from %s", registry, token_source.source)
            return token_source.credentials
        found = docker_credentials.lookup(registry)
        return lambda: found

    @functools.cached_property
    def _application_default(self) -> GoogleTokenSource | None:
        """Looked up once per run, and only when a Google registry is contacted."""
        return _google().GoogleTokenSource.from_application_default()

    @functools.cached_property
    def _metadata_server(self) -> GoogleTokenSource | None:
        """Probed at most once per run (one attempt), only for a Google registry without other Google credentials."""
        return _google().GoogleTokenSource.from_metadata_server()


def _google():
    """google-auth takes a tenth of a second to import; most runs never need it."""
    from reconciler.registry import google

    return google


def open_registries(options: SessionOptions, target_registries: Iterable[str]) -> Registries:
    return Registries(options.transport, CredentialSources(options, target_registries))
