"""The one retry policy: which failures get another try, how long to wait, and where the budget lives.

A budget belongs to one operation: a single request, or a whole blob transfer (its
source GET, upload POST and PUT together, since a streamed body cannot be replayed
into the same upload). ``retrying`` is the only retry loop; an operation run inside
another one gets a single attempt, so retries never nest. A stream that goes on after
a cut (``resumable.py``) spends its tries from the budget of the operation it runs in.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import httpx

from reconciler.oci.limits import header_number
from reconciler.registry.errors import RegistryError
from reconciler.registry.ratelimit import spent

log = logging.getLogger("reconciler.registry")

T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0
"""The longest wait a registry may ask for; beyond it the operation fails at once, saying when to retry."""
_running_budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("running_budget", default=None)


class TransientError(RegistryError):
    """A failure that another try might cure; what is left when the budget is spent."""

    transient = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@attrs.frozen
class RetryPolicy:
    """``attempts`` tries per operation, waiting a capped exponential backoff with full jitter between them."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """A server's Retry-After wins: it knows when it will take us again."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


@attrs.define
class Budget:
    """The tries of one operation, counted wherever they are spent: by ``retrying``, or by a stream going on after a cut."""

    policy: RetryPolicy
    tries: int = 1

    @property
    def spent(self) -> bool:
        return self.tries >= self.policy.attempts

    async def try_again(self, error: RegistryError, what: str) -> None:
        """Wait before the next try; raise ``error`` if it is not transient or no try is left."""
        if not error.transient or self.spent:
            raise error
        delay = self.policy.delay(self.tries - 1, error.retry_after)
        self.tries += 1
        log.debug("%s: %s; try %d of %d in %.1fs", what, error, self.tries, self.policy.attempts, delay)
        await asyncio.sleep(delay)


def running_budget(policy: RetryPolicy) -> Budget:
    """The budget of the operation running now (a resume inside it spends from it), else a budget of its own."""
    return _running_budget.get() or Budget(policy)


async def retrying(policy: RetryPolicy, operation: Callable[[], Awaitable[T]], what: str) -> T:
    """Run ``operation`` until it succeeds, fails for good, or the budget is spent.

    Only a RegistryError marked ``transient`` is tried again; the last one is raised.
    """
    if _running_budget.get() is not None:
        return await operation()
    budget = Budget(policy)
    marker = _running_budget.set(budget)
    try:
        while True:
            try:
                return await operation()
            except RegistryError as error:
                failed = error
            await budget.try_again(failed, what)
    finally:
        _running_budget.reset(marker)


def worth_retrying(response: httpx.Response) -> bool:
    """A retry status, unless the registry asks for a longer wait than a run gives it, or says
    the pull budget is spent (no Retry-After then: the pulls age out over hours)."""
    if response.status_code not in RETRY_STATUSES:
        return False
    wait = retry_after(response)
    return (wait is None or wait <= MAX_RETRY_AFTER) and spent(response) is None


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, from either of its forms (RFC 9110): ASCII digits or an HTTP date.

    Anything else (``inf``, ``nan``, ``1e30``, ``-5``, more digits than ``header_number``
    reads) is as if the header were absent; a valid but distant wait is returned as it is,
    for the caller to refuse above ``MAX_RETRY_AFTER``.
    """
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if (seconds := header_number(value)) is not None:
        return float(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
