"""The pure maths of Clustered FL (Sattler, Mueller, Samek 2020): numpy in, numpy out.

No torch, no MPI, no state: cosine similarities of client updates, the split criterion,
the complete-linkage bipartition, the rule that places a split cluster's clients, and the
seeded Gaussian sketch of an update. ``clustered.py`` calls these on every rank with the
same (all-reduced) inputs, so every rank takes the same decisions.
"""

from __future__ import annotations

import math

import numpy as np

from .. import rng

__all__ = ["cosine_matrix", "update_norms", "split_wanted", "complete_linkage_bipartition",
           "split_members", "sketch_block", "Sketch", "SKETCH_BLOCK", "SKETCH_KEY",
           "SKETCH_CACHE_BYTES"]

SKETCH_BLOCK = 4096     # rows of the [P, D] sketch matrix drawn from one stream (part of the contract)
SKETCH_KEY = 0         # stream (seed, SKETCH, SKETCH_KEY, block) of block ``block`` of the sketch matrix
SKETCH_CACHE_BYTES = 2 * 2**30   # per rank: blocks of the sketch matrix kept between rounds (float32)


def cosine_matrix(u: np.ndarray) -> np.ndarray:
    """``[n, n]`` cosine similarities of the rows of ``u`` ``[n, D]`` (float64).

    A zero row has similarity 0 with every other row (and 1 with itself).
    """
    u = np.asarray(u, dtype=np.float64)
    norms = np.sqrt(np.einsum("nd,nd->n", u, u))
    safe = np.where(norms > 0, norms, 1.0)
    v = u / safe[:, None]
    s = np.clip(v @ v.T, -1.0, 1.0)
    np.fill_diagonal(s, 1.0)
    return s


def update_norms(u: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """``(||sum_t w_t u_t / sum_t w_t||, max_t ||u_t||)`` over the rows of ``u`` (weights ``w``)."""
    u, w = np.asarray(u, dtype=np.float64), np.asarray(w, dtype=np.float64)
    mean = float(np.linalg.norm(w @ u) / w.sum())
    return mean, float(np.sqrt(np.einsum("nd,nd->n", u, u).max()))


def split_wanted(mean_norm: float, max_norm: float, eps1: float, eps2: float) -> bool:
    """Sattler et al.'s criterion: the cluster is near a stationary point of its joint objective
    (mean update norm < eps1) while some client is still far from its own (max update norm > eps2)."""
    return mean_norm < eps1 and max_norm > eps2


def complete_linkage_bipartition(dist: np.ndarray) -> np.ndarray:
    """Agglomerative clustering with complete linkage, stopped at two clusters: labels ``[n]`` in {0, 1}.

    ``dist`` is a symmetric ``[n, n]`` dissimilarity (n >= 2). Repeatedly merges the two
    clusters whose *largest* pairwise distance is smallest (d(A u B, K) = max(d(A, K), d(B, K)),
    Lance-Williams), ties broken by the smallest (row, column) pair, until two clusters remain.
    Point 0 always gets label 0. O(n^2) memory; each merge rescans only the rows whose
    nearest neighbour was one of the merged clusters.
    """
    d = np.array(dist, dtype=np.float64)
    n = d.shape[0]
    if d.shape != (n, n) or n < 2:
        raise ValueError(f"need a square matrix of at least 2 points, got {d.shape}")
    np.fill_diagonal(d, np.inf)
    rep = np.arange(n)                      # rep[p]: the cluster (its smallest point) p belongs to
    arg = np.argmin(d, axis=1)               # nearest active cluster of each active row (first on ties)
    best = d[np.arange(n), arg]
    for _ in range(n - 2):
        r = int(np.argmin(best))
        c = int(arg[r])
        i, j = min(r, c), max(r, c)          # j merges into i; i keeps the smaller index
        d[i] = np.maximum(d[i], d[j])
        d[i, i] = np.inf
        d[:, i] = d[i]
        d[j] = np.inf
        d[:, j] = np.inf
        rep[rep == j] = i
        best[j] = np.inf
        stale = np.flatnonzero((arg == i) | (arg == j))
        stale = np.union1d(stale[np.isfinite(best[stale])], [i])
        arg[stale] = np.argmin(d[stale], axis=1)
        best[stale] = d[stale, arg[stale]]
    return (rep != rep[0]).astype(np.int64)


def split_members(members: np.ndarray, sampled: np.ndarray, labels: np.ndarray,
                  min_size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Place every member of a cluster that splits: ``(keep, move)`` client-id arrays, or None.

    ``members``: the cluster's client ids (ascending); ``sampled``: the members that trained
    this round (ascending); ``labels``: their bipartition (0/1, aligned with ``sampled``).
    Each side needs >= ``min_size`` sampled clients, else no split (None). Members that did
    not train this round have no update to compare, so they join the side with more sampled
    clients (on a tie: the side of the smallest sampled id), the larger group being the likelier
    home of a client drawn at random. ``keep`` is the side holding the cluster's smallest client id
    (it keeps the cluster id), ``move`` the other (it becomes a new cluster).
    """
    members, sampled, labels = np.asarray(members), np.asarray(sampled), np.asarray(labels)
    sides = [sampled[labels == s] for s in (0, 1)]
    if min(len(sides[0]), len(sides[1])) < min_size:
        return None
    first = int(labels[np.argmin(sampled)])
    big = first if len(sides[first]) >= len(sides[1 - first]) else 1 - first
    rest = np.setdiff1d(members, sampled)
    sides[big] = np.union1d(sides[big], rest)
    sides[1 - big] = np.sort(sides[1 - big])
    if sides[0].size and (not sides[1].size or sides[0][0] < sides[1][0]):
        return sides[0], sides[1]
    return sides[1], sides[0]


def sketch_block(seed: int, block: int, rows: int, dim: int) -> np.ndarray:
    """Rows ``[block * SKETCH_BLOCK, + rows)`` of the sketch matrix: N(0, 1/dim) as float32 ``[rows, dim]``."""
    g = rng.np_stream(seed, rng.SKETCH, SKETCH_KEY, block)
    return (g.standard_normal((rows, dim)) / math.sqrt(dim)).astype(np.float32)


class Sketch:
    """``v -> v G`` for the seeded Gaussian ``G`` ``[P, dim]`` (entries N(0, 1/dim), stored as float32).

    E[<vG, wG>] = <v, w>, so cosines of sketches approximate those of the updates within
    O(1/sqrt(dim)) (Johnson-Lindenstrauss). ``G`` is drawn in blocks of ``SKETCH_BLOCK`` rows,
    each from its own stream, so any block can be redrawn alone and every rank draws the same
    matrix. Blocks are kept while they fit in ``cache_bytes`` (P * dim * 4 bytes for all of
    them); the others are redrawn at every ``project`` call (about 10 ns per number on one
    core), which is why ``project`` takes all of a rank's vectors of a round at once.
    """

    def __init__(self, seed: int, n_params: int, dim: int, cache_bytes: int = SKETCH_CACHE_BYTES):
        self.seed, self.n_params, self.dim = seed, n_params, dim
        self.n_blocks = -(-n_params // SKETCH_BLOCK)
        self.n_cached = min(self.n_blocks, cache_bytes // (SKETCH_BLOCK * dim * 4))
        self._cache: dict[int, np.ndarray] = {}

    def _block(self, b: int) -> np.ndarray:
        m = self._cache.get(b)
        if m is None:
            m = sketch_block(self.seed, b, min(SKETCH_BLOCK, self.n_params - b * SKETCH_BLOCK), self.dim)
            if b < self.n_cached:
                self._cache[b] = m
        return m

    def project(self, rows: np.ndarray) -> np.ndarray:
        """Sketches ``[k, dim]`` (float64) of the rows of ``[k, P]`` (or ``[dim]`` of one ``[P]``).

        Each row is projected on its own (one matrix-vector product per block, float32, summed
        in float64), so a row's sketch does not depend on which other rows came with it.
        """
        rows = np.asarray(rows)
        one = rows.ndim == 1
        rows = np.atleast_2d(rows)
        if rows.shape[1] != self.n_params:
            raise ValueError(f"expected rows of {self.n_params} numbers, got {rows.shape}")
        out = np.zeros((rows.shape[0], self.dim))
        for b in range(self.n_blocks):
            g = self._block(b)
            part = rows[:, b * SKETCH_BLOCK:(b + 1) * SKETCH_BLOCK].astype(np.float32, copy=False)
            for i in range(rows.shape[0]):
                out[i] += part[i] @ g
        return out[0] if one else out

    def matrix(self) -> np.ndarray:
        """The whole ``[P, dim]`` matrix (tests, small P only)."""
        return np.concatenate([self._block(b) for b in range(self.n_blocks)])
