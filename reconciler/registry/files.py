"""Reading the local files a run depends on (ours, auth files, keys, CAs), never without a bound."""

from __future__ import annotations

import errno
import os

from reconciler.oci import limits

MAX_BYTES = limits.FILE_BYTES
"""None of these files comes near this; /dev/zero or a misnamed disk image must not fill the memory."""


def read_text(path: str | os.PathLike[str]) -> str:
    """The whole file as UTF-8 text.

    Raises what ``open`` raises (FileNotFoundError, IsADirectoryError, …), an OSError
    with errno EFBIG past MAX_BYTES, or UnicodeDecodeError: callers word them.
    """
    with open(path, "rb") as file:
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise OSError(errno.EFBIG, f"larger than the limit of {limits.size(MAX_BYTES)}", os.fspath(path))
    return data.decode("utf-8")
