"""Expected failures of the registry protocol: each renders as one line for the user."""

from __future__ import annotations

import json


class RegistryError(Exception):
    """A failure the user should read as one line, never as a traceback."""


class ResponseError(RegistryError):
    """A registry answered with an error status; carries the parsed error codes."""

    def __init__(self, host: str, repository: str | None, method: str, path: str,
                 status: int, codes: list[str], message: str) -> None:
        where = f"{host}/{repository}" if repository else host
        super().__init__(f"{where}: {method} {path} failed with HTTP {status}: {message}")
        self.host = host
        self.repository = repository
        self.status = status
        self.codes = codes


def describe_error_body(body: bytes, reason: str) -> tuple[list[str], str]:
    """Turn the spec's ``{"errors":[{code,message}]}`` body into codes and one message."""
    try:
        errors = json.loads(body)["errors"]
        codes = [str(error.get("code", "")) for error in errors]
        parts = [
            f"{error.get('code', 'UNKNOWN')}: {error.get('message', '')}".rstrip(": ")
            for error in errors
        ]
        if parts:
            return codes, "; ".join(parts)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return [], reason or "no error details"
