"""The communicator interface and its one-process double.

Only ``comm/mpi.py`` imports mpi4py. Buffers are numpy arrays or CPU tensors
(shared memory with numpy); every reduction is in place. Decentralized mode
talks to graph neighbours only, through a ``Neighborhood`` (``comm.neighborhood``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["Communicator", "Exchange", "Neighborhood", "SelfComm", "SelfNeighborhood", "SelfWatchChannel",
           "as_numpy"]


def as_numpy(buf) -> np.ndarray:
    """A contiguous numpy view of buf (a numpy array or CPU tensor; no copy) for MPI."""
    if not isinstance(buf, np.ndarray):  # a torch tensor: torch is not imported here on purpose
        if buf.device.type != "cpu":
            raise TypeError("MPI buffers must live on the CPU (stage GPU tensors first)")
        buf = buf.numpy()
    if not buf.flags.c_contiguous:
        raise TypeError("MPI buffers must be contiguous")
    return buf


class Neighborhood(Protocol):
    """The ranks one rank exchanges with in decentralized mode (an MPI distributed graph).

    ``sources`` / ``destinations``: sorted rank ids it receives from / sends to.
    """

    sources: tuple[int, ...]
    destinations: tuple[int, ...]

    def alltoallv_(self, send: np.ndarray, send_counts: np.ndarray, send_displs: np.ndarray,
                   recv: np.ndarray, recv_counts: np.ndarray, recv_displs: np.ndarray) -> None:
        """One neighbourhood all-to-all on rows: C-contiguous 2-D ``send``/``recv`` of one dtype
        and row length; block i of ``send`` (``send_counts[i]`` rows from row ``send_displs[i]``;
        blocks may overlap) goes to ``destinations[i]``, block j of ``recv`` comes from ``sources[j]``.
        """

    def plan_alltoallv(self, send: np.ndarray, send_counts: np.ndarray, send_displs: np.ndarray,
                       recv: np.ndarray, recv_counts: np.ndarray, recv_displs: np.ndarray) -> "Exchange":
        """The same exchange set up once (collective) on buffers that stay put: ``run()`` per round."""

    def free(self) -> None:
        """Release the communicator and its plans (also when the graph changes)."""


class Exchange(Protocol):
    def run(self) -> None:
        """Do the planned exchange once (blocking)."""

    def free(self) -> None:
        """Release the plan (before its buffers go away)."""


class Communicator(Protocol):
    rank: int
    size: int

    def allreduce_(self, buf) -> None:
        """Sum buf over all ranks, in place (one collective)."""

    def plan_allreduce(self, buf) -> Exchange:
        """Collective: ``allreduce_(buf)`` set up once for a buffer that stays put (same address and
        size): ``run()`` per round, ``free()`` before the buffer goes; ``persistent`` says whether it
        is an MPI-4 persistent collective or the blocking call."""

    def gather_rows(self, rows: np.ndarray, counts: list[int]) -> np.ndarray | None:
        """Concatenate every rank's ``[n_r, ...]`` rows on rank 0 (None elsewhere)."""

    def allgather_rows(self, rows: np.ndarray, counts: list[int]) -> np.ndarray:
        """Every rank's ``[n_r, ...]`` rows concatenated in rank order, on every rank."""

    def isend(self, buf: np.ndarray, dest: int, tag: int = 0):
        """Non-blocking point-to-point send of a numpy buffer; returns a request (``wait()``, ``Test()``)."""

    def irecv(self, buf: np.ndarray, source: int, tag: int = 0):
        """Non-blocking receive into a numpy buffer; returns a request."""

    def waitany(self, requests: list) -> int:
        """Index of a completed request among requests (blocks)."""

    def waitall(self, requests: list) -> None: ...

    def bcast_str(self, text: str) -> str:
        """Rank 0's string on every rank (set-up only: never in the round loop)."""

    def barrier(self) -> None: ...

    def abort(self, code: int) -> None:
        """End every rank of the job now."""

    def neighborhood(self, sources, destinations) -> Neighborhood:
        """A graph communicator for these neighbour ranks (collective over all ranks)."""

    def threads_ok(self) -> bool:
        """True when a second thread may make MPI calls (MPI_THREAD_MULTIPLE): the watchdog needs it."""

    def watch_channel(self, observers: tuple[int, ...], width: int):
        """Collective: the hang watchdog's heartbeat channel: ``post(record)`` (to the observers),
        ``poll() -> [(source, record)]`` (observers), ``close()`` (collective), ``abort(code)``.
        ``post``/``poll`` never wait on another rank (watchdog.py)."""


class SelfWatchChannel:
    """The heartbeat channel of the only rank: nobody to tell; ``abort`` ends the process."""

    def post(self, record) -> None:
        pass

    def poll(self) -> list:
        return []

    def close(self) -> None:
        pass

    @staticmethod
    def abort(code: int) -> None:
        import os
        os._exit(code)  # called from the watchdog thread: SystemExit there would end only the thread


class SelfNeighborhood:
    """The neighbourhood of the only rank: nobody, so an exchange moves nothing."""

    sources: tuple[int, ...] = ()
    destinations: tuple[int, ...] = ()

    def alltoallv_(self, send, send_counts, send_displs, recv, recv_counts, recv_displs):
        if len(send_counts) or len(recv_counts):
            raise ValueError("a single rank has no neighbours to exchange with")

    def plan_alltoallv(self, send, send_counts, send_displs, recv, recv_counts, recv_displs):
        self.alltoallv_(send, send_counts, send_displs, recv, recv_counts, recv_displs)  # the same check
        return self

    def run(self):
        pass

    def free(self):
        pass


class _SelfAllreduce:
    """The planned all-reduce of the only rank: the sum is the buffer itself."""

    persistent = False

    def run(self) -> None:
        pass

    def free(self) -> None:
        pass


class _SelfRequest:
    """A request of the one-process double: sends complete at once, receives match queued sends."""

    def __init__(self, comm: "SelfComm", buf=None, tag: int = 0):
        self.comm, self.buf, self.tag, self.done = comm, buf, tag, buf is None

    def Test(self) -> bool:
        if not self.done:
            for i, (tag, data) in enumerate(self.comm._mailbox):
                if tag == self.tag:
                    self.buf.reshape(-1)[:] = data.reshape(-1)
                    del self.comm._mailbox[i]
                    self.done = True
                    break
        return self.done

    def wait(self):
        if not self.Test():
            raise RuntimeError("SelfComm: a receive with no matching send would wait forever")

    Wait = wait


class SelfComm:
    """One rank, no MPI: the identity communicator for unit tests."""

    rank, size = 0, 1
    library = "none (single process)"

    def __init__(self):
        self._mailbox: list = []

    def allreduce_(self, buf):
        as_numpy(buf)

    def plan_allreduce(self, buf):
        as_numpy(buf)   # the same buffer rules as MPI
        return _SelfAllreduce()

    def gather_rows(self, rows, counts):
        return np.array(rows, copy=True)

    def allgather_rows(self, rows, counts):
        return np.array(rows, copy=True)

    def isend(self, buf, dest, tag=0):
        if dest != 0:
            raise ValueError(f"rank 0 of 1 cannot send to rank {dest}")
        self._mailbox.append((tag, np.array(as_numpy(buf), copy=True)))
        return _SelfRequest(self)

    def irecv(self, buf, source, tag=0):
        if source != 0:
            raise ValueError(f"rank 0 of 1 cannot receive from rank {source}")
        return _SelfRequest(self, as_numpy(buf), tag)

    def waitany(self, requests):
        for i, r in enumerate(requests):
            if r.Test():
                return i
        raise RuntimeError("SelfComm: no request can complete")

    def waitall(self, requests):
        for r in requests:
            r.wait()

    def bcast_str(self, text):
        return text

    def barrier(self):
        pass

    def abort(self, code):
        raise SystemExit(code)

    def threads_ok(self):
        return True

    def watch_channel(self, observers, width):
        return SelfWatchChannel()

    def neighborhood(self, sources, destinations):
        if list(sources) or list(destinations):
            raise ValueError(f"rank 0 of 1 has no neighbour ranks, got {list(sources)} / {list(destinations)}")
        return SelfNeighborhood()
