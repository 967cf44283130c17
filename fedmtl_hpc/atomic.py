"""Atomic files: write at a hidden temporary name, fsync, rename, fsync the directory.

Readers see the old file or the new one, never a partial one (metrics, summary, config,
checkpoints). A storage failure removes the temporary file and raises ``StorageError``.
"""

from __future__ import annotations

import glob
import os

from .errors import storage_cause, storage_error

__all__ = ["fsync_path", "write_atomic"]


def fsync_path(path: str) -> None:
    """fsync a file or a directory (a directory: so that a rename in it is durable)."""
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, fill, what: str) -> None:
    """``fill(tmp)`` writes the file at a hidden temporary name next to path; then fsync, rename,
    directory fsync. Readers see the old file or the new one, never a partial one.

    A storage failure removes the temporary file and raises ``StorageError``
    (``cannot write <what> <path>: <reason> (errno N)``; exit 2 for no space, read-only, ...).
    """
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.tmp{os.getpid()}")
    try:
        fill(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
        for stale in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name)}.tmp*")):
            os.remove(stale)  # left by a writer that was killed mid-write (one writer per run directory)
        fsync_path(directory)
    except BaseException as exc:
        try:
            os.remove(tmp)
        except OSError:
            pass
        cause = storage_cause(exc)
        if cause is not None:
            raise storage_error(what, path, cause) from None
        raise
