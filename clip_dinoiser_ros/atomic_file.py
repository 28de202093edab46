"""Files that appear whole or not at all: checkpoints, exports, maps and cached targets that other processes may
read.

A file is written under a hidden temporary name next to its target and renamed onto it at the end. Its writer
holds an exclusive lock on that temporary file, so a writer killed outright (SIGKILL, after a launch's stop
timeout), which cannot remove it, leaves a file that nobody holds: ``remove_abandoned`` tells it from one still
being written and removes it, and the writers of large files call it before they start."""
from __future__ import annotations

import errno
import fcntl
import glob
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PUBLIC_MODE = 0o644  # as open() under the usual umask: mkstemp's 0600 would hide a checkpoint or export from others
PART_SUFFIX = ".part"
RANDOM_PART = "?" * 8  # the random letters mkstemp puts between prefix and suffix
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # what flock raises where a filesystem has no locks
ABANDONED_AFTER_S = 60.0  # an unlocked partial file is left alone this long: its writer may not have locked it yet


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A locked temporary path next to ``target`` for the block to write (by name: for writers that open the path
    themselves), renamed onto ``target`` when the block ends; on any failure (Ctrl-C included) it is removed and
    ``target`` is untouched."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=PART_SUFFIX)
    temporary = Path(name)
    try:
        lock(handle)
        os.fchmod(handle, PUBLIC_MODE)
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    finally:
        os.close(handle)


def lock(handle: int) -> None:
    """An exclusive lock, released by the kernel when this process ends, however it ends. Where the filesystem
    has no locks (some NFS and FUSE mounts) the file is written unlocked, and remove_abandoned, which cannot lock
    it either, leaves it."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError as error:
        if error.errno not in NO_LOCKS:
            raise


@contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """A binary file that appears as ``target`` when the block ends, whole, or not at all (see ``atomic_path``)."""
    with atomic_path(target) as temporary, open(temporary, "wb") as sink:
        yield sink


def remove_abandoned(target: Path) -> list[Path]:
    """Remove the temporary files of earlier writes of ``target`` whose writer is gone: no process holds their lock
    and they are at least ABANDONED_AFTER_S old. Returns what was removed."""
    removed = []
    for candidate in target.parent.glob(f".{glob.escape(target.name)}.{RANDOM_PART}{PART_SUFFIX}"):
        try:
            with open(candidate, "rb") as probe:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if time.time() - os.fstat(probe.fileno()).st_mtime >= ABANDONED_AFTER_S:
                    candidate.unlink()
                    removed.append(candidate)
        except OSError:  # a live writer holds it (BlockingIOError), it went meanwhile, or it is not ours to read
            continue
    return removed
