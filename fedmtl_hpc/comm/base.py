"""The communicator interface and its one-process double.

Only ``comm/mpi.py`` imports mpi4py. Buffers are numpy arrays or CPU tensors
(shared memory with numpy); every reduction is in place.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["Communicator", "SelfComm", "as_numpy"]


def as_numpy(buf) -> np.ndarray:
    """A contiguous numpy view of buf (a numpy array or CPU tensor; no copy) for MPI."""
    if not isinstance(buf, np.ndarray):  # a torch tensor: torch is not imported here on purpose
        if buf.device.type != "cpu":
            raise TypeError("MPI buffers must live on the CPU (stage GPU tensors first)")
        buf = buf.numpy()
    if not buf.flags.c_contiguous:
        raise TypeError("MPI buffers must be contiguous")
    return buf


class Communicator(Protocol):
    rank: int
    size: int

    def allreduce_(self, buf) -> None:
        """Sum buf over all ranks, in place (one collective)."""

    def gather_rows(self, rows: np.ndarray, counts: list[int]) -> np.ndarray | None:
        """Concatenate every rank's ``[n_r, ...]`` rows on rank 0 (None elsewhere)."""

    def bcast_str(self, text: str) -> str:
        """Rank 0's string on every rank (set-up only: never in the round loop)."""

    def barrier(self) -> None: ...

    def abort(self, code: int) -> None:
        """End every rank of the job now."""


class SelfComm:
    """One rank, no MPI: the identity communicator for unit tests."""

    rank, size = 0, 1
    library = "none (single process)"

    def allreduce_(self, buf):
        as_numpy(buf)

    def gather_rows(self, rows, counts):
        return np.array(rows, copy=True)

    def bcast_str(self, text):
        return text

    def barrier(self):
        pass

    def abort(self, code):
        raise SystemExit(code)
