"""Which rank owns which graph node, and what crosses ranks in one gossip step.

Nodes (clients) are dealt to ranks in the engine's contiguous blocks
(``data.base.contiguous_block``). ``local_blocks`` splits a mixing matrix W into one
``RankBlock`` per rank: the rows it computes, the weights of its own and of received
rows, and the node ids it receives from / sends to each neighbour rank. Pure numpy:
``comm/gossip.py`` turns a block into buffers and one neighbourhood collective.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["block_owner", "RankBlock", "local_blocks"]


def block_owner(n: int, size: int) -> np.ndarray:
    """(n,) int64 rank of each node: the engine's contiguous blocks, rank r owns [r*n//size, (r+1)*n//size)."""
    bounds = np.arange(size + 1, dtype=np.int64) * n // size  # = data.base.contiguous_block, without torch
    return np.repeat(np.arange(size, dtype=np.int64), np.diff(bounds))


@dataclass(frozen=True, eq=False)
class RankBlock:
    """What rank ``rank`` needs to compute its rows of W @ X with neighbour messages only.

    nodes: (m,) global ids it owns; W_local: (m, m) = W[nodes][:, nodes].
    recv[q]: sorted global ids of rank q's nodes whose vectors it reads, and
    W_remote[q]: (m, len(recv[q])) = W[nodes][:, recv[q]]; row a, column b non-zero
    means own node nodes[a] needs remote node recv[q][b]. send[q]: own ids rank q
    reads (= q's recv[rank]), in that order. Ranks absent from recv/send share no edge.
    """

    rank: int
    nodes: np.ndarray
    W_local: np.ndarray
    recv: dict[int, np.ndarray] = field(default_factory=dict)
    send: dict[int, np.ndarray] = field(default_factory=dict)
    W_remote: dict[int, np.ndarray] = field(default_factory=dict)

    def mix(self, X_local: np.ndarray, received: dict[int, np.ndarray]) -> np.ndarray:
        """Own rows of W @ X: (m, P) local rows + {q: (len(recv[q]), P)} -> (m, P)."""
        out = self.W_local @ X_local
        for q, Wq in self.W_remote.items():
            out += Wq @ received[q]
        return out


def local_blocks(W: np.ndarray, owner: np.ndarray, size: int | None = None) -> list[RankBlock]:
    """Split W by rank: owner[i] = rank of node i (non-decreasing, i.e. contiguous blocks).

    Communication follows W's off-diagonal non-zeros, so a zero-weight edge sends nothing.
    Returns one RankBlock per rank 0..size-1 (size defaults to max(owner) + 1).
    """
    W, owner = np.asarray(W), np.asarray(owner, dtype=np.int64)
    n = len(W)
    if owner.shape != (n,) or (n and owner.min() < 0) or np.any(np.diff(owner) < 0):
        raise ValueError(f"owner must be ({n},) non-negative and non-decreasing, got {owner}")
    size = int(owner.max()) + 1 if size is None else size
    talk = (W != 0) & ~np.eye(n, dtype=bool)
    on = [owner == r for r in range(size)]  # (n,) mask of each rank's nodes
    reads = [talk[m].any(axis=0) for m in on]  # (n,) columns any row of that rank uses
    blocks = []
    for r in range(size):
        nodes = np.flatnonzero(on[r])
        recv, send, W_remote = {}, {}, {}
        for q in range(size):
            if q == r:
                continue
            ids = np.flatnonzero(reads[r] & on[q])  # q's nodes my rows need
            out = np.flatnonzero(reads[q] & on[r])  # my nodes q's rows need
            if len(ids):
                recv[q], W_remote[q] = ids, W[np.ix_(nodes, ids)]
            if len(out):
                send[q] = out
        blocks.append(RankBlock(r, nodes, W[np.ix_(nodes, nodes)], recv, send, W_remote))
    return blocks
