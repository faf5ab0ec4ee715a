"""Concurrent work over a list, a bounded number at a time: how lock, plan, verify and apply fan out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TypeVar

from reconciler.errors import InputError, internal_error
from reconciler.oci.errors import OCIError
from reconciler.registry.errors import RegistryError
from reconciler.runtime import Interrupted

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger(__name__)


def images_at_once(requests_per_registry: int) -> int:
    """Images worked on together: as many as a registry's ceiling of requests, so that the
    ceiling stays reachable; each registry's adaptive limit decides what is really sent."""
    return requests_per_registry


async def map_bounded(
    work: Callable[[Item], Awaitable[Result]], items: Iterable[Item], limit: int
) -> list[Result]:
    """``work`` on every item, at most ``limit`` at once; the results in the items' order."""
    slots = asyncio.Semaphore(limit)

    async def one(item: Item) -> Result:
        async with slots:
            return await work(item)

    return await asyncio.gather(*(one(item) for item in items))


class InternalError(RegistryError):
    """A bug met in one image's work: it fails that image as a registry's failure would."""


@contextlib.contextmanager
def bugs_fail_this_image() -> Iterator[None]:
    """Around one image's work: a bug costs that image (an InternalError, one line, the
    traceback in the debug log), not the run. Signals and cancellation are no bug, and
    neither is a stop (Interrupted) or a registry's or an input's error: they pass as they are."""
    try:
        yield
    except (OCIError, InputError, Interrupted):
        raise
    except Exception as error:
        log.debug("an image's work failed on a bug", exc_info=error)
        raise InternalError(internal_error(error)) from error
