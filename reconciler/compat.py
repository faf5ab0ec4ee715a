"""The original image-syncer's command line, rewritten into ours before it is parsed.

Its users run ``image-syncer -i images.yaml -t key.json --dry-run=false``: no subcommand,
and Go's flag package for booleans. Both keep working, as ``sync``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

COMMANDS = frozenset({"lock", "plan", "apply", "verify", "sync"})
"""Our subcommands: a command line naming none of them is the original tool's."""

_TRUE = frozenset({"true", "t", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "f", "0", "no", "n", "off"})


def parse_bool(value: str) -> bool | None:
    """A boolean as the original tool's users write it, or None when ``value`` is none."""
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


def rewrite(args: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """``args`` as our CLI reads them: no subcommand but an images file means sync, and
    ``--dry-run=false``, ``--dry-run false``, ``-d false`` and a bare ``--dry-run`` all work."""
    wants_sync = not any(arg in COMMANDS for arg in args) and (
        any(arg in ("-i", "--images-file") or arg.startswith(("--images-file=", "-i=")) for arg in args)
        or (not args and "SYNCER_IMAGES_FILE" in environ)
    )
    if wants_sync:
        args = ["sync", *args]
    if not args or args[0] != "sync":
        return list(args)
    rewritten: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in ("-d", "--dry-run"):
            following = args[index + 1] if index + 1 < len(args) else None
            if following is not None and following.lower() in _TRUE | _FALSE:
                rewritten.append(f"--dry-run={following}")
                index += 2
                continue
            rewritten.append("--dry-run=true")
        elif arg.startswith("-d="):
            rewritten.append("--dry-run=" + arg[3:])
        else:
            rewritten.append(arg)
        index += 1
    return rewritten
