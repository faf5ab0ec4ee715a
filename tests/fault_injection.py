"""``python tests/fault_injection.py ARGS``: ``python -m reconciler ARGS`` with a fault no input can cause.

Test-only; set in the environment:

- ``RAISE_AT=module`` and ``RAISE=KeyboardInterrupt|RuntimeError``: importing that module raises
  (a Ctrl-C, or a bug, at that point of the start-up);
- ``KILL_AT=function:before|after``: the process SIGKILLs itself around that call of ``os``
  (``fsync``, ``replace``), to stop a write at an exact step;
- ``BUG_AT=module:Class.function`` and ``BUG_FOR=text``: that function raises a ValueError
  whenever its arguments mention ``text`` (a bug met by one image of a run, say its repository);
- ``STARTED=path``: this file is created once the wrapper hands over to the CLI.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import os
import pathlib
import runpy
import signal
import sys

ERRORS = {"KeyboardInterrupt": KeyboardInterrupt, "RuntimeError": RuntimeError}


class RaiseOnImport(importlib.abc.MetaPathFinder):
    def __init__(self, module: str, error: type[BaseException]) -> None:
        self.module = module
        self.error = error

    def find_spec(self, name, path, target=None):
        if name == self.module:
            raise self.error(f"injected at the import of {name}")
        return None


def kill_around(name: str, when: str) -> None:
    original = getattr(os, name)

    def killing(*args, **kwargs):
        if when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(os, name, killing)


def bug_at(where: str, mentioned: str) -> None:
    module_name, qualified = where.split(":")
    owner = importlib.import_module(module_name)
    *path, name = qualified.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    @functools.wraps(original)
    def buggy(*args, **kwargs):
        if mentioned in repr((args, kwargs)):
            raise ValueError(f"injected in {qualified} for {mentioned}")
        return original(*args, **kwargs)

    setattr(owner, name, buggy)


if __name__ == "__main__":
    if os.environ.get("RAISE_AT"):
        sys.meta_path.insert(0, RaiseOnImport(os.environ["RAISE_AT"], ERRORS[os.environ["RAISE"]]))
    if os.environ.get("KILL_AT"):
        kill_around(*os.environ["KILL_AT"].split(":"))
    if os.environ.get("BUG_AT"):
        bug_at(os.environ["BUG_AT"], os.environ["BUG_FOR"])
    if os.environ.get("STARTED"):
        pathlib.Path(os.environ["STARTED"]).touch()
    sys.path[0] = str(pathlib.Path(__file__).resolve().parent.parent)
    runpy.run_module("reconciler", run_name="__main__", alter_sys=True)
