"""Graphs, mixing matrices and spectral gaps for decentralized mode (README "Decentralized mode").

numpy + scipy.sparse, no MPI: this is the single-process reference that ``comm/mpi.py``'s
neighbour exchange is tested against. A graph is ``(n, edges)`` with ``edges``
an (E, 2) int64 array of undirected pairs, i < j, unique, sorted by rows; every
graph used for mixing must be connected. Mixing matrices are (n, n) float64
``scipy.sparse.csr_array``s, symmetric and doubly stochastic, supported on edges +
diagonal (``comm/mixing.py``); nothing on this path is O(n^2), so graphs of 10^5 and more
nodes build in seconds. Gossip x <- W x converges to the mean at rate (1 - gap)^k,
gap = 1 - max_{k>=2} |lambda_k| (``comm/spectral.py``).

User edge-list and matrix files are read by ``comm/graph_files.py``; the split of W
over ranks (``block_owner``, ``RankBlock``, ``local_blocks``) lives in ``comm/blocks.py``.
All are re-exported here.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from fedmtl_hpc.errors import ConfigError

from .blocks import RankBlock, block_owner, local_blocks
from .graph_files import EdgeArray, canon_edges as _canon, read_edge_file, read_matrix_file
from .mixing import (DENSE_MAX, csr_from_coo, degrees, metropolis_weights, mixing_from_parts,
                     sparse_parts, uniform_weights, validate_mixing)
from .spectral import closed_form_gap, spectral_gap

__all__ = ["KINDS", "WEIGHTS", "ER_MAX_TRIES", "Topology", "TopologySchedule", "RankBlock",
           "ring_edges", "torus_shape", "torus_edges", "complete_edges", "star_edges",
           "erdos_renyi_edges", "read_edge_file", "read_matrix_file", "degrees", "is_connected",
           "metropolis_weights", "uniform_weights", "validate_mixing", "spectral_gap",
           "closed_form_gap", "sparse_parts", "mixing_from_parts", "DENSE_MAX",
           "build_topology", "schedule_from_config", "mix_reference", "block_owner",
           "local_blocks", "draw_png"]

KINDS = ("ring", "torus", "complete", "star", "erdos_renyi", "edges")
_ALIASES = {"file": "edges"}  # the kind's first name; kept so old configs and scripts still work
WEIGHTS = ("metropolis", "uniform")
ER_MAX_TRIES = 100
PNG_EDGES = 20_000  # most edges draw_png draws


def ring_edges(n: int) -> EdgeArray:
    """Cycle 0-1-...-(n-1)-0; n=1 has no edge and n=2 a single edge."""
    i = np.arange(n)
    return _canon(n, np.stack([i, (i + 1) % n], axis=1))


def torus_shape(n: int) -> tuple[int, int]:
    """Most square rows x cols = n, rows <= cols: the largest divisor <= sqrt(n) as rows.

    That also gives rows, cols >= 3 (true wraparound both ways) whenever n has such a
    factorization; otherwise 2 x n/2 (a ladder ring) or 1 x n (a ring, n prime).
    """
    return max((r, n // r) for r in range(1, math.isqrt(n) + 1) if n % r == 0)


def torus_edges(n: int, shape: Sequence[int] | None = None) -> EdgeArray:
    """2-D torus on a rows x cols grid, node id = row * cols + col; a side < 3 does not wrap twice."""
    rows, cols = torus_shape(n) if shape is None else (int(shape[0]), int(shape[1]))
    if rows < 1 or cols < 1 or rows * cols != n:
        raise ConfigError(f"topology.shape = ({rows}, {cols}) gives {rows * cols} nodes, "
                          f"expected rows * cols = n = {n}")
    r, c = np.divmod(np.arange(n), cols)
    right, down = r * cols + (c + 1) % cols, ((r + 1) % rows) * cols + c
    i = np.arange(n)
    return _canon(n, np.concatenate([np.stack([i, right], 1), np.stack([i, down], 1)]))


def complete_edges(n: int) -> EdgeArray:
    """Every pair i < j."""
    return _canon(n, np.stack(np.triu_indices(n, 1), axis=1))


def star_edges(n: int) -> EdgeArray:
    """Hub node 0 joined to every other node."""
    return _canon(n, np.stack([np.zeros(n - 1, np.int64), np.arange(1, n)], axis=1))


def erdos_renyi_edges(n: int, p: float, rng: np.random.Generator,
                      max_tries: int = ER_MAX_TRIES) -> EdgeArray:
    """G(n, p) drawn from ``rng``, redrawn until connected, at most ``max_tries`` draws.

    Up to DENSE_MAX nodes one uniform draw per pair i < j in row-major order (the graphs of
    earlier versions, draw for draw); above, the gaps between kept pairs are geometric, so a
    draw costs O(E), not O(n^2) (same distribution, another stream).
    """
    if not 0.0 < p <= 1.0:
        raise ConfigError(f"topology.p must be in (0, 1], got {p}")
    draw = _pairs_each if n <= DENSE_MAX else _pairs_skipping
    for _ in range(max_tries):
        e = _canon(n, draw(n, p, rng))
        if is_connected(n, e):
            return e
    hint = f"; G(n, p) is connected w.h.p. for p > ln(n)/n = {math.log(n) / n:.3g}"
    raise ConfigError(f"topology.p = {p} gave no connected G(n={n}, p) graph in {max_tries} "
                      f"seeded tries; use a larger topology.p{hint}")


def _row_offsets(n: int, i: np.ndarray) -> np.ndarray:
    """Row-major index of pair (i, i + 1) among all pairs i < j of n nodes."""
    return i * (n - 1) - i * (i - 1) // 2


def _pairs_each(n: int, p: float, rng) -> np.ndarray:
    """Pairs kept by one rng.random() per pair, in row blocks (a block's draws continue the stream)."""
    out, step = [], max(1, (1 << 20) // max(n, 1))
    for lo in range(0, n, step):
        rows = np.arange(lo, min(lo + step, n), dtype=np.int64)
        count = n - 1 - rows
        i = np.repeat(rows, count)
        j = np.arange(len(i), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count) + i + 1
        keep = rng.random(len(i)) < p
        out.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def _pairs_skipping(n: int, p: float, rng) -> np.ndarray:
    """Each pair i < j kept with probability p: row-major pair indices with Geometric(p) gaps."""
    total, chunk = n * (n - 1) // 2, int(p * n * (n - 1) / 2 * 1.05) + 1024
    picked, last = [], -1
    while last < total:
        t = last + np.cumsum(rng.geometric(p, size=chunk))
        last = int(t[-1])
        picked.append(t[t < total])
    t = np.concatenate(picked)
    b = 2.0 * n - 1.0  # row i = largest i with offset(i) <= t; float root, then exact integer fix-ups
    i = np.floor((b - np.sqrt(np.maximum(b * b - 8.0 * t, 0.0))) / 2.0).astype(np.int64)
    while np.any(low := _row_offsets(n, i) > t):
        i -= low
    while np.any(high := _row_offsets(n, i + 1) <= t):
        i += high
    return np.stack([i, t - _row_offsets(n, i) + i + 1], axis=1)


def is_connected(n: int, edges: EdgeArray) -> bool:
    """True when every node is reachable from node 0."""
    return n <= 1 or connected_components(_upper(n, edges), directed=False)[0] == 1


def _upper(n: int, edges: EdgeArray) -> sp.csr_array:
    return sp.csr_array((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))


def _first_unreachable(n: int, edges: EdgeArray) -> int:
    labels = connected_components(_upper(n, edges), directed=False)[1]
    return int(np.flatnonzero(labels != labels[0])[0])


@dataclass(frozen=True, eq=False)
class Topology:
    """A connected graph with its mixing matrix; arrays are read-only.

    n: nodes; edges: (E, 2) int64, i < j; W: (n, n) float64 mixing matrix, a canonical
    ``scipy.sparse.csr_array`` (its parts: ``sparse_parts(W, edges)``); kind: one of KINDS;
    spectral_gap: 1 - |lambda_2(W)|; degrees: (n,) int64.
    """

    n: int
    edges: EdgeArray
    W: sp.csr_array
    kind: str
    spectral_gap: float
    degrees: np.ndarray

    def __post_init__(self) -> None:
        for a in (self.edges, self.W.data, self.W.indices, self.W.indptr, self.degrees):
            a.setflags(write=False)  # frozen means frozen: shared by every round of a schedule

    def neighbors(self, i: int) -> list[int]:
        """Sorted neighbours of node i (not i itself)."""
        e = self.edges
        return sorted(e[e[:, 0] == i, 1].tolist() + e[e[:, 1] == i, 0].tolist())


def _edges_for(kind: str, n: int, rng: np.random.Generator, p: float,
               file: str | os.PathLike | None, shape: Sequence[int] | None) -> EdgeArray:
    if kind not in KINDS:
        raise ConfigError(f"topology.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "edges":
        if not file:
            raise ConfigError("topology.file is required when topology.kind = 'edges'")
        return read_edge_file(file, n)
    if kind == "torus":
        return torus_edges(n, shape)
    if kind == "erdos_renyi":
        return erdos_renyi_edges(n, p, rng)
    return {"ring": ring_edges, "complete": complete_edges, "star": star_edges}[kind](n)


def build_topology(kind: str, n: int, *, p: float = 0.5, seed: int | np.random.SeedSequence = 7,
                   file: str | os.PathLike | None = None, shape: Sequence[int] | None = None,
                   weights: str | np.ndarray = "metropolis") -> Topology:
    """Graph of ``kind`` on n nodes + its mixing matrix.

    weights: 'metropolis', 'uniform', an (n, n) dense or scipy.sparse matrix, or the path of a
    matrix file. ``seed`` only matters for erdos_renyi; ``file`` for kind 'edges'; ``shape`` for torus.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"topology needs an integer n >= 1 nodes, got {n!r}")
    n, kind = int(n), _ALIASES.get(kind, kind)
    from_file = isinstance(weights, (str, os.PathLike)) and str(weights) not in WEIGHTS
    if from_file and not os.path.isfile(weights):
        raise ConfigError(f"topology.weights must be one of {', '.join(WEIGHTS)} or the path of an "
                          f"(n, n) matrix file, got {str(weights)!r} (no such file)")
    edges = _edges_for(kind, n, np.random.default_rng(seed), p, file, shape)
    if not is_connected(n, edges):
        lost = _first_unreachable(n, edges)
        source = f"topology.file {str(file)!r}" if kind == "edges" else f"topology.kind = {kind!r} with n = {n}"
        raise ConfigError(f"{source} gives a disconnected graph: no path joins node {lost} to node 0; "
                          f"every client must be reachable")
    if from_file:
        weights = read_matrix_file(weights, n, edges)
    if isinstance(weights, str):
        if weights not in WEIGHTS:
            raise ConfigError(f"topology.weights must be one of {', '.join(WEIGHTS)} "
                              f"or an (n, n) matrix, got {weights!r}")
        W = metropolis_weights(n, edges) if weights == "metropolis" else uniform_weights(n, edges)
    else:
        W = validate_mixing(weights, n, edges)
    gap = None
    if n > DENSE_MAX and isinstance(weights, str):  # small graphs keep the dense eigvalsh value
        gap = closed_form_gap(kind, n, (shape or torus_shape(n)) if kind == "torus" else None)
    gap = spectral_gap(W) if gap is None else gap
    if n > 1 and gap <= 1e-12:  # only a user W can get here: zero weights that cut the graph
        raise ConfigError(f"topology.weights: spectral gap {gap:.3g}, the mixing matrix does not "
                          f"connect the graph (gossip would never reach consensus)")
    return Topology(n, edges, W, kind, gap, degrees(n, edges))


def _relabel(t: Topology, perm: np.ndarray) -> Topology:
    """Same graph with node i renamed perm[i]; the spectrum (so the gap) is unchanged."""
    coo = t.W.tocoo()
    W = csr_from_coo(t.n, perm[coo.row], perm[coo.col], coo.data)
    d = np.empty_like(t.degrees)
    d[perm] = t.degrees
    return Topology(t.n, _canon(t.n, perm[t.edges]), W, t.kind, t.spectral_gap, d)


class TopologySchedule:
    """Topology of round r for a static (change_every=0) or time-varying graph.

    Stateless: the only state is (seed, r). Round r is in period k = r // change_every,
    and period k's graph comes from SeedSequence([seed, k]) alone, so a resumed run
    asks for round r and gets the same graph in any order. erdos_renyi draws a fresh
    G(n, p) per period; deterministic kinds (ring, torus, complete, star, file) keep
    their shape and apply a seeded random node relabeling per period instead. A static
    schedule is exactly build_topology(..., seed=seed) with no relabeling.
    """

    def __init__(self, kind: str, n: int, change_every: int = 0, seed: int = 7, *,
                 p: float = 0.5, file: str | os.PathLike | None = None,
                 shape: Sequence[int] | None = None,
                 weights: str | np.ndarray = "metropolis") -> None:
        if not isinstance(change_every, (int, np.integer)) or change_every < 0:
            raise ConfigError(f"topology.change_every must be an integer >= 0 (0 = static), "
                              f"got {change_every!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"topology.seed must be an integer >= 0, got {seed!r}")
        if change_every and not (isinstance(weights, str) and weights in WEIGHTS):
            raise ConfigError("topology.weights: a fixed matrix cannot follow a time-varying "
                              "graph; use 'metropolis' or 'uniform', or change_every: 0")
        kind = _ALIASES.get(kind, kind)
        self.kind, self.n, self.change_every, self.seed = kind, int(n), int(change_every), int(seed)
        self._kw = dict(p=p, file=file, shape=shape, weights=weights)
        # Built now so config errors surface at start-up, not at the first graph change.
        self._static = build_topology(kind, n, seed=seed, **self._kw)
        self._last: tuple[int, Topology] = (-1, self._static)  # speed only, never changes results

    def period(self, r: int) -> int:
        """Index of the graph used in round r (0 for a static schedule)."""
        if r < 0:
            raise ValueError(f"round must be >= 0, got {r}")
        return r // self.change_every if self.change_every else 0

    def at(self, r: int) -> Topology:
        """Topology for round r; a pure function of (seed, r)."""
        k = self.period(r)
        if not self.change_every:
            return self._static
        if self._last[0] != k:
            ss = np.random.SeedSequence([self.seed, k])
            if self.kind == "erdos_renyi":
                topo = build_topology(self.kind, self.n, seed=ss, **self._kw)
            else:
                topo = _relabel(self._static, np.random.default_rng(ss).permutation(self.n))
            self._last = (k, topo)
        return self._last[1]


def mix_reference(W, X: np.ndarray) -> np.ndarray:
    """One gossip step on stacked parameters: (n, n) W (dense or sparse) @ (n, P) X -> (n, P)."""
    X = np.asarray(X)
    if X.shape[0] != W.shape[0]:
        raise ValueError(f"expecting X with {W.shape[0]} rows (one per node), got {X.shape}")
    return W @ X


def schedule_from_config(cfg) -> TopologySchedule:
    """The schedule a run uses: cfg.topology over the cfg.data.n_clients training clients.

    Builds (and so validates) the first graph: every graph, file and matrix error is a
    ConfigError raised identically on every rank before any collective.
    """
    t = cfg.topology
    # the config check and the exchange both need it: build a 10^5-node graph once, not twice
    # (a user file is keyed by its mtime and size too, so an edited file is read again)
    stamp = _file_stamp(t.file) + _file_stamp(t.weights if t.weights not in ("metropolis", "uniform") else "")
    return _schedule(t.kind, cfg.data.n_clients, t.change_every, t.seed, t.p, t.file or None,
                     tuple(t.shape) if t.shape else t.shape, t.weights, stamp)


def _file_stamp(path: str | None) -> tuple:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return (path,)            # missing: TopologySchedule raises the ConfigError
    return (path, st.st_mtime_ns, st.st_size) if st else ()


@functools.lru_cache(maxsize=2)
def _schedule(kind, n, change_every, seed, p, file, shape, weights, stamp) -> TopologySchedule:
    return TopologySchedule(kind, n, change_every, seed, p=p, file=file, shape=shape, weights=weights)


def draw_png(topology: Topology, path: str | os.PathLike, size: int = 512) -> Path:
    """Picture of the graph (matplotlib, ``size`` x ``size`` pixels): nodes on a circle, node 0 at
    the top, clockwise, coloured by degree when degrees differ; edges grey; title with the
    spectral gap. Above PNG_EDGES edges a seeded sample of PNG_EDGES is drawn (the title says
    so): more cannot be told apart at this size, and they would cost seconds each 10^5.
    Needs the ``plot`` extra (PlotUnavailable, exit 2, otherwise)."""
    from fedmtl_hpc.plotting import topology_figure  # drawing is optional; keep the maths import light

    edges = np.asarray(topology.edges).reshape(-1, 2)
    shown = ""
    if len(edges) > PNG_EDGES:
        edges = edges[np.sort(np.random.default_rng(0).choice(len(edges), PNG_EDGES, replace=False))]
        shown = f" ({PNG_EDGES} drawn)"
    title = (f"{topology.kind}: {topology.n} nodes, {len(topology.edges)} edges{shown}, "
             f"spectral gap {topology.spectral_gap:.3g}")
    return topology_figure(topology.n, edges, topology.degrees, path, size=size, title=title)
