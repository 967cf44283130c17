"""One gossip step X <- W X on the rows a rank owns; only cross-rank edges travel over MPI.

The graph's nodes (clients) are dealt to ranks in contiguous blocks; rank r owns the
rows ``nodes`` of the global ``(n, w)`` stack X and computes its rows of W @ X from its
own rows plus the rows its neighbour ranks send (``topology.RankBlock``). Clients on
the same rank mix in memory, inside the GEMM below.

Buffer: one halo array of shape ``[p + m + r, w + 1]`` (own rows live in it, so the engine's
per-client components ARE these rows: no second copy of every client's model):

    rows [0, p)        packed copies of own rows, for neighbours whose rows are not one run
    rows [p, p + m)    own rows in node order (``rows``: the live ``[m, w]`` view)
    rows [p + m, end)  rows received, by source rank, then node id
    column w           one control value per row: the sender's ``control`` rides along

One step: stamp the control column, copy the pack rows, ONE ``Neighbor_alltoallv`` (a
persistent request planned once per graph)
(sends read rows [0, p + m) and receives write rows [p + m, end): disjoint), then the
product ``W_halo [m, m + r] @ halo[p:, :w]``, column block by column block into a scratch
of about ``_SCRATCH`` bytes that is copied back over the own rows while still in cache.
W_halo is a dense GEMM operand while it has at most ``_DENSE_HALO`` entries (every small
graph: the arithmetic W had when it was dense), a scipy CSR matrix above (O(edges) memory
and work, whatever the number of clients per rank).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from .topology import RankBlock

__all__ = ["Gossip", "rank_hops"]

_SCRATCH = 1 << 20  # bytes of the GEMM's output block: small enough to stay in L2
_DENSE_HALO = 1 << 22  # entries of W_halo up to which it is a dense matrix (16 MiB in float32)


def _adjacency(blocks: Sequence[RankBlock]) -> tuple:
    """The rank graph as data every rank computes alike: ((sources, destinations) per rank)."""
    return tuple((tuple(sorted(b.recv)), tuple(sorted(b.send))) for b in blocks)


def rank_hops(blocks: Sequence[RankBlock]) -> int:
    """Diameter of the rank graph: exchanges a value needs to reach every rank from any rank."""
    adj = [set(src) | set(dst) for src, dst in _adjacency(blocks)]
    worst = 0
    for start in range(len(adj)):
        seen, frontier, hops = {start}, [start], 0
        while frontier:
            frontier = [q for r in frontier for q in adj[r] if q not in seen and not seen.add(q)]
            hops += bool(frontier)
        if len(seen) < len(adj):
            raise ValueError("the rank graph is disconnected (the node graph must be connected)")
        worst = max(worst, hops)
    return worst


class Gossip:
    """This rank's share of X <- W X; see the module docstring for the buffer layout.

    comm: a Communicator (``neighborhood`` is called collectively on every graph change);
    blocks: every rank's ``RankBlock`` of the same W (``topology.local_blocks``), so each rank
    can tell, without talking, whether the rank graph changed; width: w, numbers per row;
    dtype: of the rows, the messages and the GEMM (the engine uses its float32 parameters).
    """

    def __init__(self, comm, blocks: Sequence[RankBlock], width: int, dtype=np.float32):
        self.comm, self.width, self.dtype = comm, int(width), np.dtype(dtype)
        self.nb, self._adj, self._H, self._plan = None, None, None, None
        self.set_blocks(blocks)

    # -- plan -----------------------------------------------------------------------
    def set_blocks(self, blocks: Sequence[RankBlock]) -> None:
        """Adopt the plan of a new W (time-varying graph); own rows keep their values.

        Collective when the rank graph changes: every rank must call it in the same round.
        """
        if self._plan is not None:  # it pins the old buffer: release it first
            self._plan.free()
        b, w = blocks[self.comm.rank], self.width
        m, sources, dests = len(b.nodes), sorted(b.recv), sorted(b.send)
        pack, s_counts, s_where = [], [], []
        for q in dests:  # a contiguous run of own rows is sent in place, anything else packed
            idx = np.searchsorted(b.nodes, b.send[q])
            run = bool(np.all(np.diff(idx) == 1))
            s_where.append((run, int(idx[0]) if run else len(pack)))
            s_counts.append(len(idx))
            if not run:
                pack.extend(idx.tolist())
        p = len(pack)
        # C ints, in rows (comm/mpi.py sends whole rows as one derived datatype)
        self.send_counts = np.array(s_counts, dtype=np.intc)
        self.send_displs = np.array([p + at if run else at for run, at in s_where], dtype=np.intc)
        self.recv_counts = np.array([len(b.recv[q]) for q in sources], dtype=np.intc)
        self.recv_displs = np.concatenate([[0], np.cumsum(self.recv_counts)])[:len(sources)].astype(np.intc)
        r = int(self.recv_counts.sum())
        self._pack = np.array(pack, dtype=np.int64) if p else None
        self._Wh = _halo_matrix(b, sources, self.dtype)
        old = None if self._H is None else self.rows.copy()
        H = self._H = np.zeros((p + m + r, w + 1), dtype=self.dtype)
        self.p, self.m, self.r = p, m, r
        # views made once per plan: per round, slicing costs more than a small message
        self._views = (H[:p + m], H[p + m:], H[p:p + m, w], H[p + m:, w], H[p:p + m], H[:p])
        self._cols = max(1, min(w, _SCRATCH // (max(m, 1) * self.dtype.itemsize)))
        self._scratch = np.empty((m, self._cols), dtype=self.dtype)
        if old is not None:
            self.rows[...] = old
        adj = _adjacency(blocks)
        if adj != self._adj:  # same decision on every rank: adj is global data
            if self.nb is not None:
                self.nb.free()
            self.nb, self._adj = self.comm.neighborhood(sources, dests), adj
        send, recv = self._views[:2]  # every rank plans (a collective), even one with nothing to send
        self._plan = self.nb.plan_alltoallv(send, self.send_counts, self.send_displs,
                                            recv, self.recv_counts, self.recv_displs)
        row_bytes = (w + 1) * self.dtype.itemsize
        self.bytes_sent = int(self.send_counts.sum()) * row_bytes
        self.bytes_per_step = sum(len(v) for bl in blocks for v in bl.send.values()) * row_bytes

    @property
    def rows(self) -> np.ndarray:
        """``[m, w]`` view of this rank's rows (node order); valid until the next ``set_blocks``."""
        return self._H[self.p:self.p + self.m, :self.width]

    # -- one step -------------------------------------------------------------------
    def exchange_(self, control: float = np.inf) -> float:
        """Send own rows to the neighbour ranks, receive theirs; min of ``control`` and theirs."""
        send, recv, stamp, got, own, packed = self._views
        stamp[...] = control
        if self._pack is not None:
            np.take(own, self._pack, axis=0, out=packed)
        self._plan.run()
        return float(min(control, *got.tolist())) if self.r else float(control)

    def combine_(self) -> None:
        """Own rows <- W_halo @ (own rows; received rows), in place, one column block at a time."""
        src, own, tmp, w = self._H[self.p:], self._views[4], self._scratch, self.width
        dense = isinstance(self._Wh, np.ndarray)
        for c0 in range(0, w, self._cols):
            c1 = min(c0 + self._cols, w)
            if dense:
                out = tmp[:, :c1 - c0]
                np.matmul(self._Wh, src[:, c0:c1], out=out)
                own[:, c0:c1] = out
            else:  # the sparse product returns a new array: no aliasing of the rows it reads
                own[:, c0:c1] = self._Wh @ src[:, c0:c1]

    def mix_(self, control: float = np.inf) -> float:
        """One gossip step on ``rows``; returns min(control, every neighbour rank's control)."""
        got = self.exchange_(control)
        self.combine_()
        return got

    def free(self) -> None:
        """Release the plan and the graph communicator (collective under MPI)."""
        if self.nb is not None:
            self.nb.free()
            self.nb, self._plan, self._adj = None, None, None


def _halo_matrix(b: RankBlock, sources: list[int], dtype: np.dtype):
    """``[m, m + r]`` weights of (own rows; received rows) in ``dtype``: dense up to _DENSE_HALO
    entries, else a csr_array.

    Below float64 the self-weight is re-derived as 1 - (the rounded off-diagonal row sum),
    so rows (and, W being symmetric, columns) still sum to 1 as closely as dtype allows
    and the network average does not drift.
    """
    Wh = sp.hstack([b.W_local] + [b.W_remote[q] for q in sources], format="csr")
    m = len(b.nodes)
    if m * Wh.shape[1] <= _DENSE_HALO:
        Wh = Wh.toarray().astype(dtype)
        if dtype != np.float64:
            diag = np.arange(m)
            off = Wh.astype(np.float64).sum(axis=1) - Wh[diag, diag].astype(np.float64)
            Wh[diag, diag] = (1.0 - off).astype(dtype)
        return np.ascontiguousarray(Wh)
    Wh = sp.csr_array(Wh, dtype=dtype)
    Wh.sum_duplicates()
    if dtype != np.float64:
        rows = np.repeat(np.arange(m), np.diff(Wh.indptr))
        on_diag = Wh.indices == rows  # W has a positive diagonal, so every row holds its entry
        off = np.bincount(rows[~on_diag], Wh.data[~on_diag].astype(np.float64), minlength=m)
        Wh.data[on_diag] = (1.0 - off[rows[on_diag]]).astype(dtype)
    return Wh
