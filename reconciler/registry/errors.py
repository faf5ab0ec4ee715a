"""Expected failures of the registry protocol: each renders as one line for the user."""

from __future__ import annotations

import json


class RegistryError(Exception):
    """A failure the user should read as one line, never as a traceback."""

    # Whether another try might cure it, and when the registry said to come back.
    transient: bool = False
    retry_after: float | None = None


class ResponseError(RegistryError):
    """A registry answered with an error status; the message names registry, repository and status."""

    def __init__(
        self, host: str, repository: str | None, method: str, path: str, status: int, message: str,
        *, transient: bool = False, retry_after: float | None = None,
    ) -> None:
        where = f"{host}/{repository}" if repository else host
        super().__init__(f"{where}: {method} {path} failed with HTTP {status}: {message}")
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


def describe_error_body(body: bytes, reason: str) -> str:
    """Turn the spec's ``{"errors":[{code,message}]}`` body into one message."""
    try:
        parts = [
            f"{error.get('code', 'UNKNOWN')}: {error.get('message', '')}".rstrip(": ")
            for error in json.loads(body)["errors"]
        ]
        if parts:
            return "; ".join(parts)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return reason or "no error details"
