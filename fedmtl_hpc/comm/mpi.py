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
without MPI-4 persistent collectives get the blocking call instead. The same
holds for client-server mode's round all-reduce (``plan_allreduce``:
``Allreduce_init`` per chunk); ``FEDMTL_PERSISTENT=0`` in the environment
makes it the blocking ``Allreduce`` (same op, same bytes: a check, and a way
around a library whose persistent collectives misbehave).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import weakref

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from .. import watchdog as _wd
from ..errors import ConfigError
from .base import as_numpy

__all__ = ["MPIComm", "MPINeighborhood", "MPIExchange", "MPIAllreduce", "MPIWatchChannel", "library_version",
           "local_rank_and_size", "persistent_wanted", "cuda_query"]

_CHUNK = 2**31 - 1
_LIVE: weakref.WeakSet = weakref.WeakSet()   # planned all-reduces (persistent requests) not yet freed


@atexit.register  # registered after mpi4py's finalizer, so it runs before MPI_Finalize
def _free_live() -> None:
    if not MPI.Is_finalized():
        for plan in list(_LIVE):
            plan.free()


def persistent_wanted(env=os.environ) -> bool:
    """FEDMTL_PERSISTENT: unset or 1 = persistent collectives where the library has them, 0 = blocking calls."""
    raw = env.get("FEDMTL_PERSISTENT", "1").strip()
    if raw not in ("0", "1", ""):
        raise ConfigError(f"environment variable FEDMTL_PERSISTENT must be 0 or 1, got {raw!r}")
    return raw != "0"


def cuda_query():
    """``MPIX_Query_cuda_support`` of the loaded MPI library as a callable returning 0/1, or None
    where the library has no such extension (mpi4py does not wrap it; MPICH and Open MPI export it)."""
    try:
        with open("/proc/self/maps") as fh:   # where mpi4py loaded libmpi from (not in the global namespace)
            libs = dict.fromkeys(ln.split()[-1] for ln in fh if "libmpi" in ln.rsplit("/", 1)[-1])
    except OSError:   # not Linux
        libs = {}
    for path in [*libs, None]:   # None: symbols the process already exports
        fn = getattr(ctypes.CDLL(path), "MPIX_Query_cuda_support", None)
        if fn is not None:
            fn.restype, fn.argtypes = ctypes.c_int, []
            return fn
    return None


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
        _wd.enter(_wd.NEIGHBOR)
        if self.request is None:
            self.graph.Neighbor_alltoallv(self.send, self.recv)
        else:
            self.request.Start()
            self.request.Wait()
        _wd.leave()

    def free(self) -> None:
        if self.request is not None:
            self.request.Free()
        self.request, self.send, self.recv, self.freed = None, None, None, True  # let the buffers go


def _ompi_info() -> str:
    import subprocess
    try:
        return subprocess.run(["ompi_info", "--parsable", "--all"], capture_output=True, text=True,
                              timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


class MPIAllreduce:
    """One planned in-place sum over a fixed buffer: persistent ``Allreduce_init`` requests (one per
    chunk of < 2**31 elements), or the blocking ``Allreduce`` where ``persistent`` is off or the
    library lacks MPI-4 persistent collectives. Same op on the same bytes either way."""

    def __init__(self, comm: MPI.Comm, buf, persistent: bool):
        a = as_numpy(buf).reshape(-1)
        self.comm, self.buf = comm, a      # the plan keeps its buffer alive
        self.chunks = [a[i:i + _CHUNK] for i in range(0, max(a.size, 1), _CHUNK)]
        self.requests: list = []
        if persistent:
            try:
                self.requests = [comm.Allreduce_init(MPI.IN_PLACE, c, op=MPI.SUM) for c in self.chunks]
            except (AttributeError, NotImplementedError):  # mpi4py < 4 / MPI library < 4.0
                self.requests = []
        self.persistent = bool(self.requests)
        _LIVE.add(self)

    def run(self) -> None:
        _wd.enter(_wd.ALLREDUCE)
        if len(self.requests) == 1:   # the usual case: no request list to build
            self.requests[0].Start()
            self.requests[0].Wait()
        elif self.requests:
            MPI.Prequest.Startall(self.requests)
            MPI.Request.Waitall(self.requests)
        else:
            for c in self.chunks:
                self.comm.Allreduce(MPI.IN_PLACE, c, op=MPI.SUM)
        _wd.leave()

    def free(self) -> None:
        for r in self.requests:
            r.Free()
        self.requests, self.chunks, self.buf = [], [], None
        _LIVE.discard(self)


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
        specs = self._specs(send, send_counts, send_displs, recv, recv_counts, recv_displs)
        _wd.enter(_wd.NEIGHBOR)
        self.graph.Neighbor_alltoallv(*specs)
        _wd.leave()

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
        self.persistent = None   # FEDMTL_PERSISTENT, read at the first plan_allreduce

    def cuda_aware(self, ask_ompi_info: bool = False) -> tuple[bool | None, str]:
        """``hpc.cuda_aware_mpi`` for this library (``ask_ompi_info``: may run ``ompi_info``, ~1 s)."""
        from ..hpc import cuda_aware_mpi
        return cuda_aware_mpi(os.environ, self.library, cuda_query(), _ompi_info if ask_ompi_info else None)

    def plan_allreduce(self, buf) -> MPIAllreduce:
        """Collective: ``allreduce_(buf)`` set up once for a buffer that stays put; ``run()`` per round."""
        if self.persistent is None:
            self.persistent = persistent_wanted()
        plan = MPIAllreduce(self.comm, buf, self.persistent)
        self.persistent = plan.persistent   # detected once: a library without it is not asked again
        return plan

    def allreduce_(self, buf) -> None:
        a = as_numpy(buf).reshape(-1)
        _wd.enter(_wd.ALLREDUCE)
        for i in range(0, max(a.size, 1), _CHUNK):
            self.comm.Allreduce(MPI.IN_PLACE, a[i:i + _CHUNK], op=MPI.SUM)
        _wd.leave()

    def gather_rows(self, rows: np.ndarray, counts: list[int]) -> np.ndarray | None:
        rows = np.ascontiguousarray(rows)
        row = int(np.prod(rows.shape[1:], dtype=np.int64))
        sizes = [c * row for c in counts]
        if sum(sizes) >= _CHUNK:
            raise ValueError("gather_rows: more than 2**31 elements; write per-rank files instead")
        out = np.empty((sum(counts), *rows.shape[1:]), dtype=rows.dtype) if self.rank == 0 else None
        recv = [out, (sizes, None)] if self.rank == 0 else None
        _wd.enter(_wd.GATHER)
        self.comm.Gatherv(rows.reshape(-1), recv, root=0)
        _wd.leave()
        return out

    def allgather_rows(self, rows: np.ndarray, counts: list[int]) -> np.ndarray:
        """Every rank's ``[n_r, ...]`` rows concatenated in rank order, on every rank (one Allgatherv)."""
        rows = np.ascontiguousarray(rows)
        row = int(np.prod(rows.shape[1:], dtype=np.int64))
        sizes = [c * row for c in counts]
        if sum(sizes) >= _CHUNK:
            raise ValueError("allgather_rows: more than 2**31 elements")
        out = np.empty((sum(counts), *rows.shape[1:]), dtype=rows.dtype)
        _wd.enter(_wd.ALLGATHER)
        self.comm.Allgatherv(rows.reshape(-1), [out.reshape(-1), (sizes, None)])
        _wd.leave()
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
        _wd.enter(_wd.WAIT)
        i = MPI.Request.Waitany(requests)
        _wd.leave()
        return i

    @staticmethod
    def waitall(requests: list) -> None:
        _wd.enter(_wd.WAIT)
        MPI.Request.Waitall(requests)
        _wd.leave()

    def bcast_str(self, text: str) -> str:
        data = np.frombuffer(text.encode(), dtype=np.uint8) if self.rank == 0 else None
        n = np.array([0 if data is None else data.size], dtype=np.int64)
        _wd.enter(_wd.BCAST)
        self.comm.Bcast(n, root=0)
        buf = data.copy() if self.rank == 0 else np.empty(int(n[0]), dtype=np.uint8)
        self.comm.Bcast(buf, root=0)
        _wd.leave()
        return buf.tobytes().decode()

    def barrier(self) -> None:
        _wd.enter(_wd.BARRIER)
        self.comm.Barrier()
        _wd.leave()

    def abort(self, code: int) -> None:
        self.comm.Abort(code)

    @staticmethod
    def threads_ok() -> bool:
        """MPI runs with MPI_THREAD_MULTIPLE (the watchdog thread may call MPI beside the main thread)."""
        return MPI.Query_thread() >= MPI.THREAD_MULTIPLE

    def watch_channel(self, observers: tuple[int, ...], width: int) -> "MPIWatchChannel":
        """Collective: the watchdog's heartbeat channel (a private duplicate of this communicator)."""
        return MPIWatchChannel(self.comm, observers, width)

    def neighborhood(self, sources, destinations) -> MPINeighborhood:
        """Collective over all ranks: every rank calls it at the same point (set-up, graph change)."""
        return MPINeighborhood(self.comm, sources, destinations)


class MPIWatchChannel:
    """Heartbeats of the hang watchdog (``watchdog.py``): float64 records of ``width`` numbers from
    every rank to the ``observers``, as non-blocking point-to-point messages on a duplicate
    communicator. ``post`` and ``poll`` only ever ``Test`` requests: a peer that is stopped or dead
    can leave a send pending (the next beats to it are skipped) but never blocks the caller.
    ``close`` (collective, after the thread stopped) matches every message sent and frees it all.
    """

    TAG = 77

    def __init__(self, comm: MPI.Comm, observers: tuple[int, ...], width: int):
        self.comm = comm.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.observers = tuple(observers)
        self.targets = [o for o in self.observers if o != self.rank]
        self.sendbuf = {t: np.zeros(width) for t in self.targets}
        self.sendreq: dict[int, MPI.Request | None] = {t: None for t in self.targets}
        self.sent = {t: 0 for t in self.targets}
        self.observer = self.rank in self.observers
        self.sources = [s for s in range(self.size) if s != self.rank] if self.observer else []
        self.recvbuf = np.zeros((self.size, width))
        self.received = np.zeros(self.size, dtype=np.int64)
        self.recvreq = {s: self._irecv(s) for s in self.sources}

    def _irecv(self, s: int) -> MPI.Request:
        return self.comm.Irecv(self.recvbuf[s], source=s, tag=self.TAG)

    def post(self, record: np.ndarray) -> None:
        for t in self.targets:
            req = self.sendreq[t]
            if req is not None and not req.Test():
                continue  # the previous beat to t is still pending (t is not draining): skip
            self.sendbuf[t][:] = record
            self.sendreq[t] = self.comm.Isend(self.sendbuf[t], dest=t, tag=self.TAG)
            self.sent[t] += 1

    def poll(self) -> list[tuple[int, np.ndarray]]:
        out = []
        for s in self.sources:
            if self.recvreq[s].Test():
                out.append((s, self.recvbuf[s].copy()))
                self.received[s] += 1
                self.recvreq[s] = self._irecv(s)
        return out

    def close(self) -> None:
        counts = np.zeros((self.size, max(len(self.observers), 1)), dtype=np.int64)
        for i, o in enumerate(self.observers):
            counts[self.rank, i] = self.sent.get(o, 0)
        self.comm.Allreduce(MPI.IN_PLACE, counts, op=MPI.SUM)
        if self.observer:
            col = self.observers.index(self.rank)
            for s in self.sources:
                req = self.recvreq[s]
                while self.received[s] < counts[s, col]:
                    req.Wait()
                    self.received[s] += 1
                    req = self._irecv(s)
                req.Cancel()
                req.Wait()
        for req in self.sendreq.values():
            if req is not None:
                req.Wait()
        self.comm.Free()

    @staticmethod
    def abort(code: int) -> None:
        MPI.COMM_WORLD.Abort(code)
