"""The base of every expected failure of the protocol: one line for the user, never a traceback.

A value that breaks the OCI specs (a reference, a digest, a manifest, a platform subset)
is an ``OCIError``; the network's failures (``registry.errors.RegistryError``) are one
kind of it, so whoever reports an image's failure catches this one class.
"""

from __future__ import annotations


class OCIError(Exception):
    """A failure the user should read as one line."""

    # Whether another try might cure it, and when the registry said to come back.
    transient: bool = False
    retry_after: float | None = None
