"""OCI image layouts (a directory, or a tar of one) as the source or target of a copy, every byte verified.

``open_layout`` reads either; ``DirectoryLayout.create`` writes a directory, ``archive.pack`` makes its tar.
"""

from __future__ import annotations

import os

from reconciler.registry.layout.archive import TarLayout
from reconciler.registry.layout.directory import DirectoryLayout
from reconciler.registry.layout.reader import Layout


def open_layout(path: str | os.PathLike[str]) -> Layout:
    """The layout at ``path`` to read: a tar read in place where the name ends in ``.tar``, else a directory."""
    if os.fspath(path).endswith(".tar"):
        return TarLayout.open(path)
    return DirectoryLayout.open(path)
