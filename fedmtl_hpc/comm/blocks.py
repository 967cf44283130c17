"""Which rank owns which graph node, and what crosses ranks in one gossip step.

Nodes (clients) are dealt to ranks in the engine's contiguous blocks
(``data.base.contiguous_block``). ``local_blocks`` splits a mixing matrix W into one
``RankBlock`` per rank: the rows it computes, the weights of its own and of received
rows (sparse, as W), and the node ids it receives from / sends to each neighbour rank.
O(nnz(W) + n) work, no n x n array: ``comm/gossip.py`` turns a block into buffers and one
neighbourhood collective.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

__all__ = ["block_owner", "RankBlock", "local_blocks"]


def block_owner(n: int, size: int) -> np.ndarray:
    """(n,) int64 rank of each node: the engine's contiguous blocks, rank r owns [r*n//size, (r+1)*n//size)."""
    bounds = np.arange(size + 1, dtype=np.int64) * n // size  # = data.base.contiguous_block, without torch
    return np.repeat(np.arange(size, dtype=np.int64), np.diff(bounds))


@dataclass(frozen=True, eq=False)
class RankBlock:
    """What rank ``rank`` needs to compute its rows of W @ X with neighbour messages only.

    nodes: (m,) global ids it owns; W_local: (m, m) = W[nodes][:, nodes], a csr_array as W.
    recv[q]: sorted global ids of rank q's nodes whose vectors it reads, and
    W_remote[q]: (m, len(recv[q])) csr_array = W[nodes][:, recv[q]]; row a, column b non-zero
    means own node nodes[a] needs remote node recv[q][b]. send[q]: own ids rank q
    reads (= q's recv[rank]), in that order. Ranks absent from recv/send share no edge.
    """

    rank: int
    nodes: np.ndarray
    W_local: sp.csr_array
    recv: dict[int, np.ndarray] = field(default_factory=dict)
    send: dict[int, np.ndarray] = field(default_factory=dict)
    W_remote: dict[int, sp.csr_array] = field(default_factory=dict)

    def mix(self, X_local: np.ndarray, received: dict[int, np.ndarray]) -> np.ndarray:
        """Own rows of W @ X: (m, P) local rows + {q: (len(recv[q]), P)} -> (m, P)."""
        out = self.W_local @ X_local
        for q, Wq in self.W_remote.items():
            out += Wq @ received[q]
        return out


def local_blocks(W, owner: np.ndarray, size: int | None = None) -> list[RankBlock]:
    """Split W (sparse or dense) by rank: owner[i] = rank of node i (non-decreasing: contiguous blocks).

    Communication follows W's off-diagonal non-zeros, so a zero-weight edge sends nothing.
    Returns one RankBlock per rank 0..size-1 (size defaults to max(owner) + 1).
    """
    W = sp.csr_array(W, dtype=np.float64)
    if not (W.has_canonical_format and W.data.all()):  # a copy: a Topology's W is read-only
        W = W.copy()
        W.sum_duplicates()
        W.eliminate_zeros()
    owner = np.asarray(owner, dtype=np.int64)
    n = W.shape[0]
    if owner.shape != (n,) or (n and owner.min() < 0) or np.any(np.diff(owner) < 0):
        raise ValueError(f"owner must be ({n},) non-negative and non-decreasing, got {owner}")
    size = int(owner.max()) + 1 if size is None else size
    bounds = np.searchsorted(owner, np.arange(size + 1))  # rank r owns nodes [bounds[r], bounds[r+1])
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(W.indptr))
    cross = owner[rows] != owner[W.indices]
    # every (reading rank, owning rank, node) once, sorted: the recv lists of all ranks at once
    key = np.sort((owner[rows[cross]] * size + owner[W.indices[cross]]) * n + W.indices[cross])
    key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key  # (np.unique hashes: slower)
    pair, node = np.divmod(key, n)
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]]) if len(pair) else np.zeros(0, np.int64)
    recv: list[dict] = [{} for _ in range(size)]
    send: list[dict] = [{} for _ in range(size)]
    for a, b in zip(starts, np.r_[starts[1:], len(pair)].astype(np.int64)):
        r, q = divmod(int(pair[a]), size)
        recv[r][q] = send[q][r] = node[a:b]  # q sends r exactly the nodes r's rows read
    blocks = []
    for r in range(size):
        lo, hi = int(bounds[r]), int(bounds[r + 1])
        mine = W[lo:hi]
        W_remote = {q: _canonical(mine[:, ids]) for q, ids in recv[r].items()}
        blocks.append(RankBlock(r, np.arange(lo, hi, dtype=np.int64), _canonical(mine[:, lo:hi]),
                                recv[r], dict(sorted(send[r].items())), W_remote))
    return blocks


def _canonical(M) -> sp.csr_array:
    M = sp.csr_array(M)
    M.sum_duplicates()
    return M
