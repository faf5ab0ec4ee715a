"""A layout as one tar (``PATH.tar``): packed the same way every time, and read in place.

Reading indexes the members once with the standard library's ``tarfile`` and then reads a
blob's bytes by offset from the file: nothing is unpacked, to memory or to disk. Only
the layout's own shape is accepted: ``oci-layout``, ``index.json``, ``images.lock``, the
directories ``blobs`` and ``blobs/<alg>``, and regular files ``blobs/<alg>/<hex>`` whose name
is a digest; links, devices, absolute names, ``..`` and anything else refuse the whole tar.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

from reconciler import files
from reconciler.errors import shorten
from reconciler.registry.layout.directory import DirectoryLayout, writing
from reconciler.registry.layout.format import TOP_FILES, LayoutError, blob_digest, is_layout_directory
from reconciler.registry.layout.reader import Layout, Region

MEMBERS = 1_000_000
"""Members of a tar layout indexed at the most: a thousand images of a hundred layers fit ten times over."""
_FORMAT = tarfile.PAX_FORMAT
"""POSIX tar: names past USTAR's 100 characters (``blobs/sha512/…``) and sizes past 8 GiB stay exact."""


class TarLayout(Layout):
    """A tar of a layout, read in place from one open file: close it (or use it in ``with``)."""

    def __init__(self, path: str, descriptor: int, members: dict[str, tuple[int, int]]) -> None:
        super().__init__(path)
        self._descriptor = descriptor
        self._members = members

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> TarLayout:
        """Index the tar's members, refusing any outside a layout's shape, and check its ``oci-layout``."""
        path = os.fspath(path)
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError as error:
            raise LayoutError(f"{path}: cannot be read: {error.strerror or error}") from None
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise LayoutError(f"{path}: not a regular file, so no tar")
            layout = cls(path, descriptor, _members(path, descriptor))
            layout.check_version()
        except BaseException:
            os.close(descriptor)
            raise
        return layout

    def close(self) -> None:
        os.close(self._descriptor)

    def where(self, name: str) -> str:
        return f"{self.path}:{name}"

    @contextlib.contextmanager
    def _locate(self, name: str) -> Iterator[Region | None]:
        member = self._members.get(name)
        yield None if member is None else Region(self._descriptor, *member)


def _members(path: str, descriptor: int) -> dict[str, tuple[int, int]]:
    """Each file member's name → (offset of its data, size), every member checked."""
    file_size = os.fstat(descriptor).st_size
    members: dict[str, tuple[int, int]] = {}
    seen: set[str] = set()
    try:
        with open(os.dup(descriptor), "rb") as file, tarfile.open(fileobj=file, mode="r:") as tar:
            for count, member in enumerate(tar, 1):
                if count > MEMBERS:
                    raise LayoutError(f"{path}: more than {MEMBERS} members")
                name = _checked_name(path, member)
                if name in seen:
                    raise LayoutError(f"{path}: member {shorten(name)!r} appears twice")
                seen.add(name)
                if member.isreg():
                    if member.offset_data + member.size > file_size:
                        raise LayoutError(f"{path}: member {shorten(name)!r} is cut short")
                    members[name] = (member.offset_data, member.size)
    except (tarfile.TarError, EOFError) as error:
        raise LayoutError(f"{path}: not a readable tar: {str(error).splitlines()[0] if str(error) else error}") from None
    return members


def _checked_name(path: str, member: tarfile.TarInfo) -> str:
    """The member's name within the layout; a member a layout cannot hold refuses the tar."""
    name = member.name.removeprefix("./").rstrip("/") if member.name not in (".", "./") else "."
    what = f"{path}: member {shorten(member.name)!r}"
    if member.name.startswith("/"):
        raise LayoutError(f"{what} has an absolute name")
    if ".." in member.name.split("/"):
        raise LayoutError(f"{what} leaves the layout (..)")
    if member.issym() or member.islnk():
        raise LayoutError(f"{what} is a link")
    if member.isdir():
        if name != "." and not is_layout_directory(name):
            raise LayoutError(f"{what} is a directory no OCI layout has")
        return name
    if not member.isreg() or member.issparse():
        raise LayoutError(f"{what} is not a regular file (a device, a FIFO or sparse)")
    if name not in TOP_FILES and blob_digest(name) is None:
        raise LayoutError(f"{what} is neither a layout file nor a blob named blobs/<algorithm>/<digest>")
    return name


def pack(directory: str | os.PathLike[str], tar_path: str | os.PathLike[str]) -> None:
    """Write the finished layout ``directory`` as the tar ``tar_path``, at once and the same bytes every
    time: names sorted, times, owners and modes fixed, one format."""
    layout = DirectoryLayout.open(directory)
    tar_path = Path(tar_path)
    names = _layout_names(Path(layout.path))
    with writing(str(tar_path)), files.temporary_beside(tar_path) as (descriptor, temporary):
        with open(descriptor, "wb", closefd=False) as out:
            with tarfile.open(fileobj=out, mode="w", format=_FORMAT) as tar:
                for name in names:
                    _add(tar, Path(layout.path, name), name)
        files.commit(descriptor, temporary, tar_path)


def _layout_names(root: Path) -> list[str]:
    """Every name the layout holds, sorted (a directory before what it holds); a stranger refuses the pack."""
    names = []
    for directory, subdirectories, names_here in os.walk(root):
        relative = Path(directory).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        for name in subdirectories:
            if not is_layout_directory(prefix + name) or os.path.islink(os.path.join(directory, name)):
                raise LayoutError(f"{root}: {prefix + name} is no directory of an OCI layout; not packed")
            names.append(prefix + name)
        for name in names_here:
            if files.is_temporary(name):
                continue  # a blob being written, or abandoned by a killed run
            if prefix + name not in TOP_FILES and blob_digest(prefix + name) is None:
                raise LayoutError(f"{root}: {prefix + name} is no file of an OCI layout; not packed")
            names.append(prefix + name)
    return sorted(names)


def _add(tar: tarfile.TarFile, source: Path, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    status = source.lstat()
    if source.is_dir() and not source.is_symlink():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        return
    if not source.is_file() or source.is_symlink():
        raise LayoutError(f"{source}: not a regular file; not packed")
    info.mode, info.size = 0o644, status.st_size
    with source.open("rb") as data:
        tar.addfile(info, data)
