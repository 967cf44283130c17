"""mpi4py communicator: upper-case, buffer-based calls only.

Reductions are ``Allreduce(IN_PLACE, buf)`` on contiguous arrays, split into
chunks below 2**31 elements (MPI counts are C ints). Nothing here pickles
in the round loop; ``bcast_str`` is for set-up only. Decentralized mode uses
a distributed graph communicator (``Create_dist_graph_adjacent``) and one
``Neighbor_alltoallv`` per round whose unit is a whole parameter row (a
contiguous derived datatype), so counts and displacements are row numbers
and stay far below 2**31 whatever the model size. The round's exchange is an
MPI-4 persistent collective (``Neighbor_alltoallv_init`` once per graph, then
``Start``/``Wait``): arguments are parsed once, not every round. Libraries
without MPI-4 persistent collectives get the blocking call instead.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from .base import as_numpy

__all__ = ["MPIComm", "MPINeighborhood", "MPIExchange", "library_version", "local_rank_and_size"]

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


class MPIExchange:
    """One planned neighbour all-to-all on fixed buffers: a persistent request, or the blocking call."""

    def __init__(self, graph: MPI.Comm, send: list, recv: list):
        self.graph, self.send, self.recv = graph, send, recv  # the specs also keep the buffers alive
        self.freed = False
        try:
            self.request = graph.Neighbor_alltoallv_init(send, recv)
        except (AttributeError, NotImplementedError):  # mpi4py < 4 / MPI library < 4.0
            self.request = None

    def run(self) -> None:
        if self.request is None:
            self.graph.Neighbor_alltoallv(self.send, self.recv)
        else:
            self.request.Start()
            self.request.Wait()

    def free(self) -> None:
        if self.request is not None:
            self.request.Free()
        self.request, self.send, self.recv, self.freed = None, None, None, True  # let the buffers go


class MPINeighborhood:
    """A distributed graph communicator over ``sources`` -> me -> ``destinations`` (no reordering)."""

    def __init__(self, comm: MPI.Comm, sources, destinations):
        self.sources = tuple(int(q) for q in sources)
        self.destinations = tuple(int(q) for q in destinations)
        self.graph = comm.Create_dist_graph_adjacent(self.sources, self.destinations, reorder=False)
        self._types: dict[tuple[str, int], MPI.Datatype] = {}
        self._plans: list[MPIExchange] = []

    def _row_type(self, a: np.ndarray) -> MPI.Datatype:
        key = (a.dtype.str, a.shape[1])
        t = self._types.get(key)
        if t is None:  # built once per row shape: the round loop only looks it up
            t = self._types[key] = from_numpy_dtype(a.dtype).Create_contiguous(a.shape[1]).Commit()
        return t

    def _specs(self, send, send_counts, send_displs, recv, recv_counts, recv_displs) -> tuple[list, list]:
        if send.dtype != recv.dtype or send.shape[1:] != recv.shape[1:] or send.ndim != 2:
            raise ValueError(f"send {send.dtype}{send.shape} and recv {recv.dtype}{recv.shape} must be "
                             f"2-D rows of one dtype and length")
        t = self._row_type(send)
        return ([as_numpy(send), (send_counts, send_displs), t], [as_numpy(recv), (recv_counts, recv_displs), t])

    def alltoallv_(self, send, send_counts, send_displs, recv, recv_counts, recv_displs) -> None:
        self.graph.Neighbor_alltoallv(*self._specs(send, send_counts, send_displs, recv, recv_counts, recv_displs))

    def plan_alltoallv(self, send, send_counts, send_displs, recv, recv_counts, recv_displs) -> MPIExchange:
        """Collective: the same exchange as ``alltoallv_``, set up once for repeated ``run()``."""
        plan = MPIExchange(self.graph, *self._specs(send, send_counts, send_displs, recv, recv_counts, recv_displs))
        self._plans = [q for q in self._plans if not q.freed] + [plan]
        return plan

    def free(self) -> None:
        for plan in self._plans:  # requests before the communicator they live on
            plan.free()
        self._plans.clear()
        for t in self._types.values():
            t.Free()
        self._types.clear()
        if self.graph != MPI.COMM_NULL:
            self.graph.Free()


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

    def allgather_rows(self, rows: np.ndarray, counts: list[int]) -> np.ndarray:
        """Every rank's ``[n_r, ...]`` rows concatenated in rank order, on every rank (one Allgatherv)."""
        rows = np.ascontiguousarray(rows)
        row = int(np.prod(rows.shape[1:], dtype=np.int64))
        sizes = [c * row for c in counts]
        if sum(sizes) >= _CHUNK:
            raise ValueError("allgather_rows: more than 2**31 elements")
        out = np.empty((sum(counts), *rows.shape[1:]), dtype=rows.dtype)
        self.comm.Allgatherv(rows.reshape(-1), [out.reshape(-1), (sizes, None)])
        return out

    def isend(self, buf: np.ndarray, dest: int, tag: int = 0) -> MPI.Request:
        """Non-blocking send of a contiguous numpy buffer (keep it alive and unchanged until the wait)."""
        return self.comm.Isend(as_numpy(buf), dest=dest, tag=tag)

    def irecv(self, buf: np.ndarray, source: int, tag: int = 0) -> MPI.Request:
        """Non-blocking receive into a contiguous numpy buffer."""
        return self.comm.Irecv(as_numpy(buf), source=source, tag=tag)

    @staticmethod
    def waitany(requests: list) -> int:
        """Index of a completed request (blocks until one completes)."""
        return MPI.Request.Waitany(requests)

    @staticmethod
    def waitall(requests: list) -> None:
        MPI.Request.Waitall(requests)

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

    def neighborhood(self, sources, destinations) -> MPINeighborhood:
        """Collective over all ranks: every rank calls it at the same point (set-up, graph change)."""
        return MPINeighborhood(self.comm, sources, destinations)
