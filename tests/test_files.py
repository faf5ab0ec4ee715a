"""reconciler/files.py: ours written so that a kill leaves the old file or the new one, and the
temporaries of killed writers removed by the next write; check_writable before any work.
(Reading within the size cap is tested with the reader that uses it: test_documents.py.)"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import files
from reconciler.errors import InputError

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPORARY_SUFFIX = ".image-syncer-tmp"


def temporaries(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(TEMPORARY_SUFFIX))


def test_write_atomic_writes_a_new_file_readable_by_all(tmp_path):
    """mkstemp makes 0600; a lock committed to git must not keep that."""
    path = tmp_path / "images.lock"
    old_umask = os.umask(0o077)
    try:
        files.write_atomic(path, "ünïcode\n")
    finally:
        os.umask(old_umask)
    assert path.read_text(encoding="utf-8") == "ünïcode\n"
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_atomic_where_there_is_no_directory_is_an_input_error(tmp_path):
    path = tmp_path / "missing" / "images.lock"
    with pytest.raises(InputError) as raised:
        files.write_atomic(path, "x")
    assert str(raised.value) == f"{path}: cannot write: No such file or directory"


def abandoned_temporary(path: Path, tag: str) -> Path:
    temporary = path.parent / f".{path.name}.{tag}{TEMPORARY_SUFFIX}"
    temporary.write_text("half a lock")
    return temporary


def test_write_atomic_removes_the_temporaries_of_killed_writers_and_only_those(tmp_path):
    path = tmp_path / "images.lock"
    abandoned = abandoned_temporary(path, "killed1"), abandoned_temporary(path, "killed2")
    in_use = abandoned_temporary(path, "writing")
    others = [abandoned_temporary(tmp_path / "other.lock", "killed"),  # another file's
              tmp_path / f".images.lock.kept{TEMPORARY_SUFFIX}.bak",
              tmp_path / "images.lock.notes"]
    for other in others[1:]:
        other.write_text("not a temporary")
    precious = tmp_path / "precious"
    precious.write_text("keep")
    link = tmp_path / f".images.lock.link{TEMPORARY_SUFFIX}"
    link.symlink_to(precious)

    held = os.open(in_use, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # a live writer holds its temporary locked
        files.write_atomic(path, "new\n")
    finally:
        os.close(held)

    assert not any(temporary.exists() for temporary in abandoned)
    assert in_use.exists() and all(other.exists() for other in others)
    assert link.is_symlink() and precious.read_text() == "keep"
    assert path.read_text() == "new\n"


WRITER = """\
import sys
from reconciler import files
path, size = sys.argv[1], int(sys.argv[2])
round = 0
while True:
    round += 1
    files.write_atomic(path, (b"AB"[round % 2:round % 2 + 1] * size).decode())
    if round == 1:
        print("written", flush=True)
"""


def size_of_temporary(directory: Path) -> int:
    """How much of the new text the live writer's temporary holds; -1 when it has none."""
    for name in temporaries(directory):
        try:
            return (directory / name).stat().st_size
        except FileNotFoundError:
            pass  # renamed just now
    return -1


def test_a_writer_killed_at_any_moment_leaves_the_old_file_or_the_new_and_the_next_write_cleans_up(tmp_path):
    """SIGKILL runs no handler: only the rename makes a new text visible, and only whole.
    Each writer is killed once its temporary holds a seeded number of bytes (the write may
    already be past it, or renamed), or after a few whole writes if the poll never saw one."""
    seed = random.randrange(2**32)
    generator = random.Random(seed)
    size = 1 << 20
    path = tmp_path / "images.lock"
    for attempt in range(6):
        cut_at = generator.randrange(size)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(size)], cwd=REPO_ROOT,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline() == "written\n"
            renamed, inode = 0, path.stat().st_ino
            while writer.poll() is None and size_of_temporary(tmp_path) < cut_at and renamed < 3:
                renamed += inode != (inode := path.stat().st_ino)  # missed it: kill after a few writes anyway
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
            writer.stdout.close()
        where = f"seed {seed}, attempt {attempt}, killed at {cut_at} bytes"
        assert path.read_text() in ("A" * size, "B" * size), f"{where}: a partial file"

        files.write_atomic(path, "after\n")
        assert temporaries(tmp_path) == [], where
        assert path.read_text() == "after\n", where


def test_check_writable_refuses_a_directory_and_a_missing_parent(tmp_path):
    with pytest.raises(InputError) as raised:
        files.check_writable(tmp_path)
    assert str(raised.value) == f"{tmp_path}: cannot write: it is a directory"

    missing = tmp_path / "no" / "images.lock"
    with pytest.raises(InputError) as raised:
        files.check_writable(missing)
    assert str(raised.value) == f"{missing}: cannot write: no directory {missing.parent}"


def test_check_writable_accepts_a_new_or_existing_file_in_a_directory(tmp_path):
    files.check_writable(tmp_path / "images.lock")
    (tmp_path / "images.lock").write_text("old")
    files.check_writable(tmp_path / "images.lock")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_refuses_a_directory_without_write_permission(tmp_path):
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir(mode=0o555)
    with pytest.raises(InputError, match="cannot write: no permission to write in "):
        files.check_writable(locked_dir / "images.lock")
