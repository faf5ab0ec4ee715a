"""Expected failures of the registry protocol: each renders as one line for the user."""

from __future__ import annotations

import json

import attrs


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


@attrs.frozen
class ErrorBody:
    """The spec's ``{"errors":[{code,message}]}`` answer: its codes, and one message for the user."""

    codes: frozenset[str]
    message: str

    @classmethod
    def parse(cls, body: bytes, reason: str) -> ErrorBody:
        try:
            errors = [(str(error.get("code", "UNKNOWN")), str(error.get("message", "")))
                      for error in json.loads(body)["errors"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            errors = []
        if not errors:
            return cls(frozenset(), reason or "no error details")
        return cls(frozenset(code for code, _ in errors),
                   "; ".join(f"{code}: {message}".rstrip(": ") for code, message in errors))
