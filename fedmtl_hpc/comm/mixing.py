"""Mixing matrices W of decentralized mode, stored sparsely on the graph's edges.

W is a canonical ``scipy.sparse.csr_array`` (float64, sorted column indices, no duplicate
and no stored zero entries): symmetric, non-negative, doubly stochastic, non-zero only on
edges and the diagonal, positive diagonal. Its whole content is (edges, W[i, j] on each
edge, the diagonal), which is what checkpoints store (``sparse_parts`` /
``mixing_from_parts``). Everything here is O(E + N) time and memory, except the row sums of
graphs with at most ``DENSE_MAX`` nodes, which follow a dense row's summation order so that
small graphs keep the W (bit for bit) they had when W was a dense array.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fedmtl_hpc.errors import ConfigError

__all__ = ["DENSE_MAX", "degrees", "csr_from_coo", "mixing_from_parts", "sparse_parts",
           "metropolis_weights", "uniform_weights", "validate_mixing"]

DENSE_MAX = 2000  # up to this many nodes: dense-order row sums, dense eigvalsh for the gap


def degrees(n: int, edges: np.ndarray) -> np.ndarray:
    """(n,) int64 number of neighbours of each node."""
    return np.bincount(edges.ravel(), minlength=n).astype(np.int64)


def csr_from_coo(n: int, rows, cols, vals) -> sp.csr_array:
    """Canonical (n, n) float64 csr_array of (rows, cols, vals) triplets; zeros are dropped."""
    A = sp.csr_array((np.asarray(vals, dtype=np.float64), (np.asarray(rows, dtype=np.int64),
                                                            np.asarray(cols, dtype=np.int64))), shape=(n, n))
    A.sum_duplicates()  # also sorts the indices: canonical, as every consumer assumes
    A.eliminate_zeros()
    return A


def mixing_from_parts(n: int, edges, edge_weight, self_weight) -> sp.csr_array:
    """W from its parts: W[i, j] = W[j, i] = edge_weight[k] for edges[k] = (i, j), diagonal self_weight."""
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    ew, sw = np.asarray(edge_weight, dtype=np.float64), np.asarray(self_weight, dtype=np.float64)
    if ew.shape != (len(e),) or sw.shape != (n,):
        raise ValueError(f"expecting edge_weight ({len(e)},) and self_weight ({n},), got {ew.shape} and {sw.shape}")
    d = np.arange(n, dtype=np.int64)
    return csr_from_coo(n, np.concatenate([e[:, 0], e[:, 1], d]), np.concatenate([e[:, 1], e[:, 0], d]),
                        np.concatenate([ew, ew, sw]))


def sparse_parts(W, edges) -> tuple[np.ndarray, np.ndarray]:
    """(edge_weight (E,), self_weight (N,)) float64 of a dense or sparse W: W[i, j] per edge, W's diagonal."""
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if not sp.issparse(W):
        W = np.asarray(W, dtype=np.float64)
        return W[e[:, 0], e[:, 1]].copy(), np.diagonal(W).copy()
    A = sp.csr_array(W, dtype=np.float64)
    if not A.has_canonical_format:
        A = A.copy()
        A.sum_duplicates()
    n = A.shape[0]
    keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(A.indptr)) * n + A.indices  # sorted: canonical
    want = e[:, 0] * n + e[:, 1]
    ew = np.zeros(len(e))
    if len(keys):  # an edge W has no entry for (a zero weight) gets 0
        pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        ew = np.where(keys[pos] == want, A.data[pos], 0.0)
    return ew, A.diagonal().astype(np.float64)


def _row_sums(n: int, edges: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Sum of each row's off-diagonal weights (w on both (i, j) and (j, i)).

    Up to DENSE_MAX nodes in numpy's pairwise order over a dense row (blocks of rows, never
    n x n at once): the Metropolis diagonal then equals the dense W's bit for bit.
    """
    rows, vals = np.concatenate([edges[:, 0], edges[:, 1]]), np.concatenate([w, w])
    if n > DENSE_MAX:  # pairwise sums per row (reduceat), not bincount's running sum: a hub of
        order = np.argsort(rows, kind="stable")  # degree 10^5 would otherwise be off by ~1e-11
        count = np.bincount(rows, minlength=n)
        out, has = np.zeros(n), count > 0
        out[has] = np.add.reduceat(vals[order], (np.cumsum(count) - count)[has])
        return out
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    out, step = np.empty(n), max(1, (1 << 20) // max(n, 1))
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        sel = (rows >= lo) & (rows < hi)
        block = np.zeros((hi - lo, n))
        block[rows[sel] - lo, cols[sel]] = vals[sel]
        out[lo:hi] = block.sum(axis=1)
    return out


def metropolis_weights(n: int, edges: np.ndarray) -> sp.csr_array:
    """Metropolis-Hastings W: 1/(1 + max(d_i, d_j)) on edges, 1 - row sum on the diagonal."""
    d = degrees(n, edges)
    w = 1.0 / (1.0 + np.maximum(d[edges[:, 0]], d[edges[:, 1]]))
    return mixing_from_parts(n, edges, w, 1.0 - _row_sums(n, edges, w))


def uniform_weights(n: int, edges: np.ndarray) -> sp.csr_array:
    """1/(d + 1) on edges and diagonal; doubly stochastic only on a d-regular graph."""
    d = degrees(n, edges)
    if n > 1 and d.min() != d.max():
        raise ConfigError(f"topology.weights = 'uniform' needs a regular graph (all degrees "
                          f"equal), got degrees {d.min()}..{d.max()}; use 'metropolis'")
    w = 1.0 / (1.0 + (d[0] if n else 0))
    return mixing_from_parts(n, edges, np.full(len(edges), w), np.full(n, w))


def validate_mixing(W, n: int, edges: np.ndarray, tol: float = 1e-12) -> sp.csr_array:
    """Check a user W, dense or sparse (square, symmetric, >= 0, doubly stochastic, on edges + diag,
    W_ii > 0) without forming an n x n array; returns it as a canonical csr_array."""
    bad = "topology.weights: mixing matrix"
    if not sp.issparse(W):
        W = np.array(W, dtype=np.float64)
    if W.shape != (n, n):
        raise ConfigError(f"{bad} must be square ({n}, {n}), got shape {W.shape}")
    A = sp.csr_array(W, dtype=np.float64, copy=True)  # a copy: canonicalizing must not touch the caller's
    A.sum_duplicates()
    if not np.all(np.isfinite(A.data)):
        raise ConfigError(f"{bad} has NaN or Inf entries")
    A.eliminate_zeros()
    D = (A - A.T).tocsr()
    D.sum_duplicates()
    pos = lambda M: (np.repeat(np.arange(n), np.diff(M.indptr)), M.indices)  # noqa: E731 - (row, col) per entry
    # the first maximum in row-major order, as np.argmax over the dense matrix would name it
    checks = [(np.abs(D.data), pos(D), tol, "must be symmetric, |W[i,j] - W[j,i]|"),
              (-A.data, pos(A), 0.0, "must be non-negative, -W[i,j]"),
              (np.abs(A.sum(axis=1) - 1.0), (np.arange(n),), tol, "rows must sum to 1, |row sum - 1|"),
              (np.abs(A.sum(axis=0) - 1.0), (np.arange(n),), tol, "columns must sum to 1, |column sum - 1|")]
    for err, where, limit, rule in checks:
        if len(err) and err.max() > limit:
            k = int(np.argmax(err))
            raise ConfigError(f"{bad} {rule} = {err.max():.3g} at {tuple(int(w[k]) for w in where)}")
    r, c = pos(A)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    allowed = np.concatenate([e[:, 0] * n + e[:, 1], e[:, 1] * n + e[:, 0]])
    off = np.flatnonzero((r != c) & ~np.isin(r * n + c, allowed))
    if len(off):
        i, j = int(r[off[0]]), int(c[off[0]])
        raise ConfigError(f"{bad} must be zero off the graph edges, W[{i},{j}] = {A.data[off[0]]:.3g}")
    diag = A.diagonal()
    if n and diag.min() <= 0.0:
        i = int(np.argmin(diag))
        raise ConfigError(f"{bad} must have a positive diagonal, W[{i},{i}] = {diag[i]:.3g}")
    return A
