"""One image's work failing alone: a bug costs that image, not the run."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from reconciler.errors import InputError, internal_error
from reconciler.oci.errors import OCIError
from reconciler.registry.errors import RegistryError
from reconciler.runtime import Interrupted

log = logging.getLogger(__name__)


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
