"""Expected failures of the registry protocol: each renders as one line for the user."""

from __future__ import annotations

import attrs

from reconciler.oci.errors import OCIError
from reconciler.oci.limits import parse_json
from reconciler.registry.ratelimit import PullLimit, deferral


class RegistryError(OCIError):
    """A failure of the network or of a registry's answer: one line, never a traceback."""


class SignatureRefused(RegistryError):
    """An image whose signatures satisfy no policy of images.yaml's ``verify:``; the message says why."""


class ResponseError(RegistryError):
    """A registry answered with an error status; the message names registry, repository and status."""

    def __init__(
        self, host: str, repository: str | None, method: str, path: str, status: int, message: str,
        *, transient: bool = False, retry_after: float | None = None, codes: frozenset[str] = frozenset(),
    ) -> None:
        where = f"{host}/{repository}" if repository else host
        super().__init__(f"{where}: {method} {path} failed with HTTP {status}: {message}")
        self.status = status
        self.codes = codes
        """The spec's error codes the answer's body held (read within its cap)."""
        self.transient = transient
        self.retry_after = retry_after


class PullLimitReached(ResponseError):
    """The registry's pull budget is spent: the image waits for a later run, not for a retry."""

    def __init__(
        self, host: str, repository: str, method: str, path: str, limit: PullLimit, retry_after: float | None
    ) -> None:
        self.deferral = deferral(host, limit, left=0, retry_after=retry_after)
        super().__init__(host, repository, method, path, 429, f"pull limit reached: {self.deferral}",
                         retry_after=retry_after)


@attrs.frozen
class ErrorBody:
    """The spec's ``{"errors":[{code,message}]}`` answer: its codes, and one message for the user."""

    codes: frozenset[str]
    message: str

    @classmethod
    def parse(cls, body: bytes, reason: str) -> ErrorBody:
        try:
            errors = [(str(error.get("code", "UNKNOWN")), str(error.get("message", "")))
                      for error in parse_json(body)["errors"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            errors = []
        if not errors:
            return cls(frozenset(), _one_line(reason) or "no error details")
        return cls(frozenset(code for code, _ in errors),
                   _one_line("; ".join(f"{code}: {message}".rstrip(": ") for code, message in errors)))


_MESSAGE_CHARACTERS = 500


def _one_line(text: str) -> str:
    """A registry's message as one line of sane length: it may hold newlines, or 64 KiB of anything."""
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARACTERS else text[:_MESSAGE_CHARACTERS] + "…"
