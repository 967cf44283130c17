"""Spectral gap of a mixing matrix: 1 - second largest |eigenvalue| of symmetric, doubly stochastic W.

Gossip x <- W x converges to the mean at rate (1 - gap)^k (Boyd, Diaconis, Xiao, "Fastest
mixing Markov chain", SIAM Rev. 2004). Three ways, by size and kind:

* n <= DENSE_MAX: dense ``eigvalsh`` (exact; the only way before W became sparse).
* ring, torus, complete, star with Metropolis or uniform weights: closed forms
  (``closed_form_gap``), O(n) at most; these graphs are regular (star aside), so
  W = I - L / (1 + d) with L the graph Laplacian, whose spectrum is known.
* otherwise ARPACK on the sparse W restricted to the complement of the all-ones vector
  (the eigenvalue 1); where the top of the spectrum is clustered (long paths, grids:
  Lanczos stalls), shift-invert on L + delta I with a sparse LU, which such graphs factor
  cheaply (small separators); expanders (Erdos-Renyi) converge in tens of products instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh, splu

from .mixing import DENSE_MAX

__all__ = ["spectral_gap", "closed_form_gap"]

_NCV = 40            # Lanczos basis size
_RESTARTS = 5        # plain Lanczos budget (~ _RESTARTS * _NCV products) before shift-invert
_TOL = 1e-10         # ARPACK relative tolerance on the eigenvalue


def spectral_gap(W, method: str = "auto") -> float:
    """1 - second largest |eigenvalue| of symmetric W (dense or sparse); 1.0 for n = 1.

    method: 'dense' (eigvalsh), 'sparse' (ARPACK, then shift-invert), or 'auto' (dense up to
    DENSE_MAX nodes).
    """
    if method not in ("auto", "dense", "sparse"):
        raise ValueError(f"method must be auto, dense or sparse, got {method!r}")
    n = W.shape[0]
    if n <= 1:
        return 1.0
    if method == "dense" or (method == "auto" and n <= DENSE_MAX):
        dense = W.toarray() if sp.issparse(W) else np.asarray(W)
        mags = np.sort(np.abs(np.linalg.eigvalsh(dense)))  # the top one is 1 for doubly stochastic W
        return float(max(0.0, 1.0 - mags[-2]))  # clip: round-off can put |lambda_2| a hair above 1
    return _sparse_gap(sp.csr_array(W, dtype=np.float64))


def _cycle(m: int) -> tuple[int, float, float]:
    """(degree, smallest non-zero, largest Laplacian eigenvalue) of the torus side C_m.

    A side of 1 is a point, of 2 a single edge (the torus does not wrap twice), else a cycle
    with Laplacian eigenvalues 4 sin^2(pi k / m), written so that no 1 - cos cancels.
    """
    if m == 1:
        return 0, math.inf, 0.0
    if m == 2:
        return 1, 2.0, 2.0
    return 2, 4.0 * math.sin(math.pi / m) ** 2, 4.0 * math.sin(math.pi * (m // 2) / m) ** 2


def closed_form_gap(kind: str, n: int, shape: Sequence[int] | None = None) -> float | None:
    """Gap of the Metropolis W (= uniform W where the graph is regular) of a ring, torus
    (``shape`` = (rows, cols), required), complete graph or star on n nodes; None for other kinds.

    Regular graphs: W = I - L / (1 + d), so the gap is min(l_2, 2(1 + d) - l_max) / (1 + d) with
    l_2, l_max the smallest non-zero and the largest Laplacian eigenvalue; a torus is the
    Cartesian product of two cycles, whose Laplacian eigenvalues add. Star (n >= 3): the
    spectrum is {1, 0, 1 - 1/n (n - 2 times)}, so the gap is 1/n.
    """
    if kind not in ("ring", "torus", "complete", "star"):
        return None
    if n <= 2 or kind == "complete":  # W = J / n: every other eigenvalue is 0
        return 1.0
    if kind == "star":
        return 1.0 / n
    rows, cols = (1, n) if kind == "ring" else (int(shape[0]), int(shape[1]))
    (dr, l2r, lmr), (dc, l2c, lmc) = _cycle(rows), _cycle(cols)
    d, l2, lmax = dr + dc, min(l2r, l2c), lmr + lmc
    return float(min(1.0, max(0.0, min(l2, 2.0 * (1 + d) - lmax) / (1 + d))))


def _v0(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(n)  # fixed start: the same gap on every rank and run


def _centered(x: np.ndarray) -> np.ndarray:
    x = x.ravel()
    return x - x.mean()  # projection off the all-ones vector (numpy's sum: no BLAS threads)


def _sparse_gap(W: sp.csr_array) -> float:
    return float(f"{_arpack_gap(W):.10g}")  # ARPACK's last bits follow BLAS threading; ranks and runs must agree


def _arpack_gap(W: sp.csr_array) -> float:
    n = W.shape[0]
    deflated = LinearOperator((n, n), matvec=lambda x: _centered(W @ _centered(x)), dtype=np.float64)
    try:
        lam = eigsh(deflated, k=1, which="LM", ncv=min(_NCV, n - 1), tol=_TOL, maxiter=_RESTARTS,
                    v0=_v0(n), return_eigenvectors=False)
        return float(max(0.0, 1.0 - abs(lam[0])))
    except ArpackNoConvergence:
        pass
    # Clustered near +1 (or -1): shift-invert makes the wanted end of the spectrum well separated.
    eye = sp.identity(n, format="csc")
    delta = 1.0 / n ** 2  # below the gap of any ring or path on n nodes, far above round-off
    top = _largest_inverse(eye * (1.0 + delta) - W, deflate=True)        # 1 / (1 - lambda_2 + delta)
    gap = 1.0 / top - delta
    lowest_bound = 1.0 - 2.0 * float(W.diagonal().min())  # Gershgorin: -lambda_min <= 1 - 2 min W_ii
    if lowest_bound > 1.0 - gap:  # the bottom end might be the larger |eigenvalue|: look there too
        bottom = _largest_inverse(eye * (1.0 + delta) + W, deflate=False)  # 1 / (1 + lambda_min + delta)
        gap = min(gap, 1.0 / bottom - delta)
    return float(min(1.0, max(0.0, gap)))


def _largest_inverse(M, deflate: bool) -> float:
    """Largest eigenvalue of M^-1 (M symmetric positive definite, on the all-ones complement if ``deflate``)."""
    # minimum degree on M + M^T (M is symmetric): about half the fill of the default COLAMD on grids
    lu = splu(sp.csc_matrix(M), permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    solve = (lambda x: _centered(lu.solve(_centered(x)))) if deflate else (lambda x: lu.solve(x.ravel()))
    n = M.shape[0]
    op = LinearOperator((n, n), matvec=solve, dtype=np.float64)
    return float(eigsh(op, k=1, which="LA", ncv=min(_NCV, n - 1), tol=_TOL, v0=_v0(n),
                       return_eigenvectors=False)[0])
