"""The local files a run depends on: read whole but never without a bound (ours, auth files, keys,
CAs), and ours written atomically (images.lock, saved plans, an export's files)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from reconciler.errors import InputError
from reconciler.oci import limits

MAX_BYTES = limits.FILE_BYTES
"""None of these files comes near this; /dev/zero or a misnamed disk image must not fill the memory."""
TEMPORARY_SUFFIX = ".image-syncer-tmp"


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


class Unusable(ValueError):
    """A file images.yaml names that cannot be read, in a few words without its name."""


def read_named(path: str | os.PathLike[str], not_text: str) -> str:
    """A file images.yaml names (a key, a trusted root), as ``read_text`` reads it; Unusable
    says why not (``not_text`` when its bytes are no UTF-8)."""
    try:
        return read_text(path)
    except FileNotFoundError:
        raise Unusable("no such file") from None
    except UnicodeDecodeError:
        raise Unusable(not_text) from None
    except OSError as error:
        raise Unusable(f"cannot be read: {error.strerror or error}") from None


def check_writable(path: Path) -> None:
    """Refuse before any work a path that write_atomic could not replace."""
    if path.is_dir():
        raise InputError(path, "cannot write: it is a directory")
    if not path.parent.is_dir():
        raise InputError(path, f"cannot write: no directory {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise InputError(path, f"cannot write: no permission to write in {path.parent}")


def write_atomic(path: str | Path, text: str) -> None:
    """Replace one of our files (``replace``), a failure said as one line naming it."""
    try:
        replace(Path(path), text.encode("utf-8"))
    except OSError as error:
        raise InputError(path, f"cannot write: {error.strerror or error}") from None


def replace(path: Path, data: bytes) -> None:
    """Replace ``path`` all at once: killed at any point, it leaves the old file or the new one.

    The new bytes are written beside it (``temporary_beside``); temporaries of killed
    writers found there are removed first. Raises what the disk raises.
    """
    prefix = f".{path.name}."
    with os.scandir(path.parent) as entries:
        remove_abandoned([entry.path for entry in entries
                          if entry.name.startswith(prefix) and entry.name.endswith(TEMPORARY_SUFFIX)])
    with temporary_beside(path) as (descriptor, temporary):
        write_all(descriptor, data)
        commit(descriptor, temporary, path)


@contextlib.contextmanager
def temporary_beside(path: Path) -> Iterator[tuple[int, str]]:
    """A new file ``.<name>.<random>`` + TEMPORARY_SUFFIX beside ``path``, locked while it is
    written (so no other run takes it for abandoned); removed again unless committed."""
    while True:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        if _is_same_file(descriptor, temporary):
            break
        os.close(descriptor)  # another writer took it for abandoned before we locked it
    try:
        yield descriptor, temporary
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        os.close(descriptor)


def commit(descriptor: int, temporary: str, path: Path) -> None:
    """Put a written temporary under its final name, on disk before and after the rename."""
    os.fchmod(descriptor, 0o644)  # mkstemp's 0600 would stick to the file
    os.fsync(descriptor)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


def remove_abandoned(candidates: Iterable[str | os.PathLike[str]]) -> None:
    """Remove the temporaries among ``candidates`` whose writer is gone: nobody holds their lock."""
    for candidate in candidates:
        try:
            descriptor = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _is_same_file(descriptor, os.fspath(candidate)):
                os.unlink(candidate)
        except OSError:
            pass  # still being written (locked), or not ours to remove
        finally:
            os.close(descriptor)


def write_all(descriptor: int, data: bytes) -> None:
    unwritten = memoryview(data)
    while unwritten:
        unwritten = unwritten[os.write(descriptor, unwritten):]


def _is_same_file(descriptor: int, name: str) -> bool:
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(name))
    except FileNotFoundError:
        return False
