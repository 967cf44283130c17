"""Errors that carry their meaning and their exit code.

Bad input (config, data, checkpoint, arguments) exits 2 with one line;
anything else exits 1. The CLI turns these into exit codes; library code
only raises them.
"""

__all__ = ["FedMTLError", "ConfigError", "DataError", "CheckpointError",
           "CommError", "NumericalError", "StorageError", "storage_error", "is_storage_failure",
           "storage_cause", "EXIT_OK", "EXIT_ERROR",
           "EXIT_BAD_INPUT", "EXIT_PREEMPTED"]

import errno as _errno
import os as _os
import re as _re

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 3  # stopped by a signal after writing a checkpoint: requeue me


class FedMTLError(Exception):
    """Base error; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_ERROR
    prefix = "error"

    def __str__(self) -> str:
        return f"{self.prefix}: {super().__str__()}"


class ConfigError(FedMTLError):
    """A config key breaks its rule; the message names the key and the rule."""

    exit_code = EXIT_BAD_INPUT
    prefix = "config error"


class DataError(FedMTLError):
    """A dataset is missing, truncated, corrupted or cannot be split as asked."""

    exit_code = EXIT_BAD_INPUT
    prefix = "data error"


class CheckpointError(FedMTLError):
    """A checkpoint is missing, incomplete, corrupted or does not fit the run."""

    exit_code = EXIT_BAD_INPUT
    prefix = "checkpoint error"


class CommError(FedMTLError):
    """The MPI layer cannot do what was asked (sizes, topology, launcher)."""

    exit_code = EXIT_ERROR
    prefix = "comm error"


class StorageError(FedMTLError):
    """Writing a run's files failed (full, read-only or vanished file system, I/O error).

    Exit 2 when the user must fix something before rerunning (no space, quota, read-only,
    permission, a directory that vanished); exit 1 for anything else (EIO, ...).
    """

    exit_code = EXIT_ERROR
    prefix = "storage error"


# errno values that mean "fix the storage, then resume"
_USER_ERRNOS = {getattr(_errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ENOENT",
                                             "ENOTDIR", "ESTALE") if hasattr(_errno, n)}
_ERRNO_IN_TEXT = _re.compile(r"errno\s*=\s*(\d+)|\[Errno (\d+)\]")


def storage_cause(exc: BaseException) -> BaseException | None:
    """The storage failure behind exc, or None: an OSError, or h5py's RuntimeError around one (its
    text holds ``errno = N``), searched along the chain (closing an HDF5 file after a failed flush
    raises a second, unrelated error whose context is the real one)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, RuntimeError) and _ERRNO_IN_TEXT.search(str(exc)):
            return exc
        if isinstance(exc, OSError):
            if getattr(exc, "errno", None) or _ERRNO_IN_TEXT.search(str(exc)) or exc.__context__ is None:
                return exc
        exc = exc.__cause__ or exc.__context__
    return None


def is_storage_failure(exc: BaseException) -> bool:
    return storage_cause(exc) is not None


def storage_error(what: str, path: str, exc: BaseException, verb: str = "write") -> StorageError:
    """``cannot <verb> <what> <path>: <strerror> (errno N)``, exit 2 for user-fixable errnos.

    h5py's OSErrors often carry no ``errno`` attribute; the HDF5 message holds ``errno = N``.
    """
    code = getattr(exc, "errno", None)
    if not code:
        m = _ERRNO_IN_TEXT.search(str(exc))
        code = int(m.group(1) or m.group(2)) if m else None
    if code:
        why = f"{_os.strerror(code)} (errno {code})"
    else:
        why = " ".join(str(exc).split()) or type(exc).__name__
    err = StorageError(f"cannot {verb} {what} {path}: {why}")
    err.errno = code
    err.exit_code = EXIT_BAD_INPUT if code in _USER_ERRNOS else EXIT_ERROR
    return err


class NumericalError(FedMTLError):
    """NaN or Inf in a loss or a parameter; the message names client and round."""

    exit_code = EXIT_ERROR
    prefix = "numerical error"
