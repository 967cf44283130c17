"""Graphs, mixing matrices and spectral gaps for decentralized mode (README "Decentralized mode").

Pure numpy, no MPI: this is the single-process reference that ``comm/mpi.py``'s
neighbour exchange is tested against. A graph is ``(n, edges)`` with ``edges``
an (E, 2) int64 array of undirected pairs, i < j, unique, sorted by rows; every
graph used for mixing must be connected. Mixing matrices are (n, n) float64,
symmetric and doubly stochastic, supported on edges + diagonal. Gossip
x <- W x converges to the mean at rate (1 - gap)^k, gap = 1 - max_{k>=2} |lambda_k|
(Boyd, Diaconis, Xiao, "Fastest mixing Markov chain", SIAM Rev. 2004).

User edge-list and matrix files are read by ``comm/graph_files.py``; the split of W
over ranks (``block_owner``, ``RankBlock``, ``local_blocks``) lives in ``comm/blocks.py``.
Both are re-exported here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmtl_hpc.errors import ConfigError

from .blocks import RankBlock, block_owner, local_blocks
from .graph_files import EdgeArray, canon_edges as _canon, read_edge_file, read_matrix_file

__all__ = ["KINDS", "WEIGHTS", "ER_MAX_TRIES", "Topology", "TopologySchedule", "RankBlock",
           "ring_edges", "torus_shape", "torus_edges", "complete_edges", "star_edges",
           "erdos_renyi_edges", "read_edge_file", "read_matrix_file", "degrees", "is_connected",
           "metropolis_weights", "uniform_weights", "validate_mixing", "spectral_gap",
           "build_topology", "schedule_from_config", "mix_reference", "block_owner",
           "local_blocks", "draw_png"]

KINDS = ("ring", "torus", "complete", "star", "erdos_renyi", "edges")
_ALIASES = {"file": "edges"}  # the kind's first name; kept so old configs and scripts still work
WEIGHTS = ("metropolis", "uniform")
ER_MAX_TRIES = 100
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
    """G(n, p) drawn from ``rng``, redrawn until connected, at most ``max_tries`` draws."""
    if not 0.0 < p <= 1.0:
        raise ConfigError(f"topology.p must be in (0, 1], got {p}")
    iu = np.stack(np.triu_indices(n, 1), axis=1)
    for _ in range(max_tries):
        e = _canon(n, iu[rng.random(len(iu)) < p])
        if is_connected(n, e):
            return e
    hint = f"; G(n, p) is connected w.h.p. for p > ln(n)/n = {math.log(n) / n:.3g}"
    raise ConfigError(f"topology.p = {p} gave no connected G(n={n}, p) graph in {max_tries} "
                      f"seeded tries; use a larger topology.p{hint}")


def degrees(n: int, edges: EdgeArray) -> np.ndarray:
    """(n,) int64 number of neighbours of each node."""
    return np.bincount(edges.ravel(), minlength=n).astype(np.int64)


def _adjacency(n: int, edges: EdgeArray) -> list[list[int]]:
    adj: list[list[int]] = [[] for _ in range(n)]
    for i, j in edges.tolist():
        adj[i].append(j)
        adj[j].append(i)
    return [sorted(a) for a in adj]


def _reachable(n: int, edges: EdgeArray) -> set[int]:
    """Nodes reachable from node 0 (breadth-first search)."""
    adj, seen, frontier = _adjacency(n, edges), {0}, [0]
    while frontier:
        frontier = [j for i in frontier for j in adj[i] if j not in seen and not seen.add(j)]
    return seen


def is_connected(n: int, edges: EdgeArray) -> bool:
    """True when every node is reachable from node 0."""
    return len(_reachable(n, edges)) == n


def _first_unreachable(n: int, edges: EdgeArray) -> int:
    return min(set(range(n)) - _reachable(n, edges))


def metropolis_weights(n: int, edges: EdgeArray) -> np.ndarray:
    """Metropolis-Hastings W: 1/(1 + max(d_i, d_j)) on edges, 1 - row sum on the diagonal."""
    d, W = degrees(n, edges), np.zeros((n, n))
    i, j = edges[:, 0], edges[:, 1]
    W[i, j] = W[j, i] = 1.0 / (1.0 + np.maximum(d[i], d[j]))
    W[np.diag_indices(n)] = 1.0 - W.sum(axis=1)
    return W


def uniform_weights(n: int, edges: EdgeArray) -> np.ndarray:
    """1/(d + 1) on edges and diagonal; doubly stochastic only on a d-regular graph."""
    d = degrees(n, edges)
    if n > 1 and d.min() != d.max():
        raise ConfigError(f"topology.weights = 'uniform' needs a regular graph (all degrees "
                          f"equal), got degrees {d.min()}..{d.max()}; use 'metropolis'")
    W = np.zeros((n, n))
    w = 1.0 / (1.0 + (d[0] if n else 0))
    W[edges[:, 0], edges[:, 1]] = W[edges[:, 1], edges[:, 0]] = w
    W[np.diag_indices(n)] = w
    return W


def validate_mixing(W, n: int, edges: EdgeArray, tol: float = 1e-12) -> np.ndarray:
    """Check a user W (square, symmetric, >= 0, doubly stochastic, on edges + diag, W_ii > 0)."""
    W = np.array(W, dtype=np.float64)
    bad = "topology.weights: mixing matrix"
    if W.shape != (n, n):
        raise ConfigError(f"{bad} must be square ({n}, {n}), got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ConfigError(f"{bad} has NaN or Inf entries")
    checks = [(np.abs(W - W.T), tol, "must be symmetric, |W[i,j] - W[j,i]|"),
              (-W, 0.0, "must be non-negative, -W[i,j]"),
              (np.abs(W.sum(axis=1) - 1.0), tol, "rows must sum to 1, |row sum - 1|"),
              (np.abs(W.sum(axis=0) - 1.0), tol, "columns must sum to 1, |column sum - 1|")]
    for err, limit, rule in checks:
        if err.max() > limit:
            at = np.unravel_index(np.argmax(err), err.shape)
            raise ConfigError(f"{bad} {rule} = {err.max():.3g} at {tuple(map(int, at))}")
    allowed = np.eye(n, dtype=bool)
    allowed[edges[:, 0], edges[:, 1]] = allowed[edges[:, 1], edges[:, 0]] = True
    off = np.argwhere((W != 0) & ~allowed)
    if len(off):
        i, j = map(int, off[0])
        raise ConfigError(f"{bad} must be zero off the graph edges, W[{i},{j}] = {W[i, j]:.3g}")
    if np.diag(W).min() <= 0.0:
        i = int(np.argmin(np.diag(W)))
        raise ConfigError(f"{bad} must have a positive diagonal, W[{i},{i}] = {W[i, i]:.3g}")
    return W


def spectral_gap(W: np.ndarray) -> float:
    """1 - second largest |eigenvalue| of symmetric W; 1.0 for n = 1."""
    if len(W) <= 1:
        return 1.0
    mags = np.sort(np.abs(np.linalg.eigvalsh(W)))  # the top one is 1 for doubly stochastic W
    return float(max(0.0, 1.0 - mags[-2]))  # clip: round-off can put |lambda_2| a hair above 1


@dataclass(frozen=True, eq=False)
class Topology:
    """A connected graph with its mixing matrix; arrays are read-only.

    n: nodes; edges: (E, 2) int64, i < j; W: (n, n) float64 mixing matrix;
    kind: one of KINDS; spectral_gap: 1 - |lambda_2(W)|; degrees: (n,) int64.
    """

    n: int
    edges: EdgeArray
    W: np.ndarray
    kind: str
    spectral_gap: float
    degrees: np.ndarray

    def __post_init__(self) -> None:
        for a in (self.edges, self.W, self.degrees):
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

    weights: 'metropolis', 'uniform', an (n, n) array, or the path of a matrix file.
    ``seed`` only matters for erdos_renyi; ``file`` for kind 'edges'; ``shape`` for torus.
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
    gap = spectral_gap(W)
    if n > 1 and gap <= 1e-12:  # only a user W can get here: zero weights that cut the graph
        raise ConfigError(f"topology.weights: spectral gap {gap:.3g}, the mixing matrix does not "
                          f"connect the graph (gossip would never reach consensus)")
    return Topology(n, edges, W, kind, gap, degrees(n, edges))


def _relabel(t: Topology, perm: np.ndarray) -> Topology:
    """Same graph with node i renamed perm[i]; the spectrum (so the gap) is unchanged."""
    W = np.empty_like(t.W)
    W[np.ix_(perm, perm)] = t.W
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


def mix_reference(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    """One gossip step on stacked parameters: (n, n) W @ (n, P) X -> (n, P)."""
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
    return TopologySchedule(t.kind, cfg.data.n_clients, t.change_every, t.seed, p=t.p,
                            file=t.file or None, shape=t.shape, weights=t.weights)


def draw_png(topology: Topology, path: str | os.PathLike, size: int = 512) -> Path:
    """Picture of the graph (matplotlib, ``size`` x ``size`` pixels): nodes on a circle, node 0 at
    the top, clockwise, coloured by degree when degrees differ; edges grey; title with the
    spectral gap. Needs the ``plot`` extra (PlotUnavailable, exit 2, otherwise)."""
    from fedmtl_hpc.plotting import topology_figure  # drawing is optional; keep the maths import light

    title = (f"{topology.kind}: {topology.n} nodes, {len(topology.edges)} edges, "
             f"spectral gap {topology.spectral_gap:.3g}")
    return topology_figure(topology.n, np.asarray(topology.edges).reshape(-1, 2), topology.degrees, path,
                           size=size, title=title)
