"""mpi4py communicator: upper-case, buffer-based calls only.

Reductions are ``Allreduce(IN_PLACE, buf)`` on contiguous arrays, split into
chunks below 2**31 elements (MPI counts are C ints). Nothing here pickles
in the round loop; ``bcast_str`` is for set-up only.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .base import as_numpy

__all__ = ["MPIComm", "library_version", "local_rank_and_size"]

_CHUNK = 2**31 - 1


def library_version() -> str:
    """First line of the MPI library's own version string."""
    return MPI.Get_library_version().strip().splitlines()[0].strip()


def local_rank_and_size(comm: MPI.Comm | None = None) -> tuple[int, int]:
    """Node-local rank and size from a shared-memory split of the communicator."""
    comm = comm or MPI.COMM_WORLD
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


class MPIComm:
    """Communicator over an mpi4py communicator (COMM_WORLD by default)."""

    def __init__(self, comm: MPI.Comm | None = None):
        self.comm = comm or MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.library = library_version()

    def allreduce_(self, buf) -> None:
        a = as_numpy(buf).reshape(-1)
        for i in range(0, max(a.size, 1), _CHUNK):
            self.comm.Allreduce(MPI.IN_PLACE, a[i:i + _CHUNK], op=MPI.SUM)

    def gather_rows(self, rows: np.ndarray, counts: list[int]) -> np.ndarray | None:
        rows = np.ascontiguousarray(rows)
        row = int(np.prod(rows.shape[1:], dtype=np.int64))
        sizes = [c * row for c in counts]
        if sum(sizes) >= _CHUNK:
            raise ValueError("gather_rows: more than 2**31 elements; write per-rank files instead")
        out = np.empty((sum(counts), *rows.shape[1:]), dtype=rows.dtype) if self.rank == 0 else None
        recv = [out, (sizes, None)] if self.rank == 0 else None
        self.comm.Gatherv(rows.reshape(-1), recv, root=0)
        return out

    def bcast_str(self, text: str) -> str:
        data = np.frombuffer(text.encode(), dtype=np.uint8) if self.rank == 0 else None
        n = np.array([0 if data is None else data.size], dtype=np.int64)
        self.comm.Bcast(n, root=0)
        buf = data.copy() if self.rank == 0 else np.empty(int(n[0]), dtype=np.uint8)
        self.comm.Bcast(buf, root=0)
        return buf.tobytes().decode()

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int) -> None:
        self.comm.Abort(code)
