"""Which credentials each registry gets in a run, and the registry clients built from them.

The target key file and access token belong to the target registry (as in the
original image-syncer) and to Google registries; Google's application default
credentials are looked up only when a Google registry is really contacted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from reconciler.registry import credentials as docker_credentials
from reconciler.registry.client import CredentialLookup, Registries
from reconciler.registry.credentials import Credentials
from reconciler.registry.reference import is_google_registry
from reconciler.registry.transport import TransportOptions

if TYPE_CHECKING:
    from reconciler.registry.google import GoogleTokenSource


@attrs.frozen
class SessionOptions:
    transport: TransportOptions = TransportOptions()
    target_key_file: str | None = None
    access_token: str | None = attrs.field(default=None, repr=False)


class _CredentialChain:
    """Key file or access token, else Google ADC for Google hosts, else docker config, else anonymous."""

    def __init__(self, options: SessionOptions, target_registries: frozenset[str]) -> None:
        self._targets = target_registries
        self._explicit: GoogleTokenSource | None = None
        if options.target_key_file is not None:
            self._explicit = _google().GoogleTokenSource.from_key_file(options.target_key_file)
        elif options.access_token is not None:
            self._explicit = _google().GoogleTokenSource.from_access_token(options.access_token)
        self._application_default: GoogleTokenSource | None = None
        self._application_default_checked = False
        self._lock = threading.Lock()

    def __call__(self, registry: str) -> Credentials | None:
        google = is_google_registry(registry)
        if self._explicit is not None and (registry in self._targets or google):
            return self._explicit.credentials()
        if google:
            source = self._google_default()
            if source is not None:
                return source.credentials()
        return docker_credentials.lookup(registry)

    def _google_default(self) -> GoogleTokenSource | None:
        with self._lock:
            if not self._application_default_checked:
                self._application_default = _google().GoogleTokenSource.from_application_default()
                self._application_default_checked = True
            return self._application_default


def _google():
    """google-auth takes a tenth of a second to import; most runs never need it."""
    from reconciler.registry import google

    return google


def credential_lookup(options: SessionOptions, target_registries: Iterable[str]) -> CredentialLookup:
    """Built eagerly so that a bad key file fails before any network call."""
    return _CredentialChain(options, frozenset(target_registries))


def open_registries(options: SessionOptions, target_registries: Iterable[str]) -> Registries:
    return Registries(options.transport, credential_lookup(options, target_registries))
