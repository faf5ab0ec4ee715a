"""The connection settings of a run, and the TLS trust they make (one per setting for the whole run)."""

from __future__ import annotations

import functools
import os
import ssl

import attrs
import httpx

from reconciler import files
from reconciler.oci.reference import hostname, is_loopback
from reconciler.registry.errors import RegistryError
from reconciler.registry.proxy import DIRECT, ProxySettings
from reconciler.registry.retry import RetryPolicy


@attrs.frozen
class TransportOptions:
    """Connection settings shared by every registry of a run."""

    ca_file: str | None = None
    insecure_registries: frozenset[str] = frozenset()
    retry: RetryPolicy = RetryPolicy()
    # The ceiling of requests in flight per registry; the limit below it adapts (limiter.py).
    max_connections: int = 64
    chunk_size: int | None = None
    # Seconds without progress (connecting, sending or receiving) before a request is given up.
    timeout: float = 60.0
    user_agent: str = "image-syncer"
    proxies: ProxySettings = DIRECT

    def allows_plain_http(self, host: str) -> bool:
        """Loopback hosts and those named with --insecure-registry may speak plain HTTP."""
        return self.is_insecure(host) or is_loopback(host)

    def is_insecure(self, host: str) -> bool:
        return host in self.insecure_registries or hostname(host) in self.insecure_registries


@functools.cache
def tls_trust(verify: bool, ca_file: str | None) -> ssl.SSLContext | bool:
    """What the engine verifies with, one per setting for the whole run (a CA bundle takes tens of ms to load).

    The system's CAs, as the Go original and docker trust them (OpenSSL's paths, so
    SSL_CERT_FILE and SSL_CERT_DIR apply); aiohttp loads that context already. Where
    the system has no CA store at all, certifi's bundle.
    """
    if not verify:
        return False
    if ca_file:
        try:
            bundle = files.read_text(ca_file)
            if bundle.strip():  # an empty one would mean the system's CAs to create_default_context
                return ssl.create_default_context(cadata=bundle)
        except (UnicodeDecodeError, ssl.SSLError):
            pass
        except FileNotFoundError:
            raise RegistryError(f"CA file {ca_file}: file not found") from None
        except OSError as error:
            raise RegistryError(f"CA file {ca_file}: cannot read: {error.strerror or error}") from None
        raise RegistryError(f"CA file {ca_file}: not a bundle of PEM certificates")
    if _system_has_cas():
        return True
    return httpx.create_ssl_context(verify=True, trust_env=False)  # certifi's bundle


def _system_has_cas() -> bool:
    paths = ssl.get_default_verify_paths()
    return bool(
        (paths.cafile and os.path.isfile(paths.cafile))
        or (paths.capath and os.path.isdir(paths.capath) and any(os.scandir(paths.capath)))
    )
