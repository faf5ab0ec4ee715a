"""One image's work failing alone: a bug costs that image, not the run.

Bridges until the workflows call ``Registries.map``: ``images_at_once``, and ``map_bounded``
(at home in ``registry/fanout.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from reconciler.errors import InputError, internal_error
from reconciler.oci.errors import OCIError
from reconciler.registry.errors import RegistryError
from reconciler.registry.fanout import map_bounded
from reconciler.runtime import Interrupted

__all__ = ["InternalError", "bugs_fail_this_image", "images_at_once", "map_bounded"]

log = logging.getLogger(__name__)


def images_at_once(requests_per_registry: int) -> int:
    """Images worked on together: as many as a registry's ceiling of requests (``Registries.map`` holds this rule)."""
    return requests_per_registry


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
