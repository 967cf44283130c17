"""User graph files for decentralized mode: edge lists and mixing matrices.

Edge-list files (``topology.kind: edges``): one ``i j`` pair per line, ``#`` starts a
comment, blank lines are skipped; ``i j`` and ``j i`` (or a repeated pair) are the same
undirected edge and are merged silently, since hand-written lists often carry both
directions. Matrix files (``topology.weights: PATH``): n lines of n numbers (``0.25`` or
``1/4``), same comment rules; only the non-zeros are kept (a ``scipy.sparse.csr_array``).
Every error names the file and the line (exit 2).
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from fedmtl_hpc.errors import ConfigError

__all__ = ["EdgeArray", "canon_edges", "adjacency", "read_edge_file", "read_matrix_file"]


EdgeArray = np.ndarray  # (E, 2) int64, i < j, unique, lexicographically sorted


def canon_edges(n: int, pairs) -> EdgeArray:
    """Canonical edge array: drop self-loops (degenerate wraparounds), order i < j, dedupe."""
    e = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    e = np.sort(e[e[:, 0] != e[:, 1]], axis=1)
    if not len(e):
        return np.zeros((0, 2), np.int64)
    if e.min() < 0:  # no valid graph has these; keep the general (slower) lexicographic unique
        return np.unique(e, axis=0)
    # one int64 key per pair sorts like (i, j); sort + neighbour compare (numpy's hash-based unique
    # is ~10x slower here at 10^6 edges, unique(axis=0) slower still)
    base = max(int(n), int(e.max()) + 1)
    key = np.sort(e[:, 0] * base + e[:, 1])
    key = key[np.r_[True, key[1:] != key[:-1]]]
    return np.stack(np.divmod(key, base), axis=1)


def read_edge_file(path: str | os.PathLike, n: int) -> np.ndarray:
    """Parse an ``i j`` edge-list file for nodes 0..n-1; errors name the file and line."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"topology.file {str(path)!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"topology.file {str(path)!r}: not UTF-8 text (byte {exc.start})") from None
    pairs = []
    for lineno, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        where = f"topology.file {str(path)!r} line {lineno}"
        try:
            i, j = map(int, text.split())  # a wrong token count is a ValueError too
        except ValueError:
            raise ConfigError(f"{where}: expecting two integers 'i j', got {text!r}") from None
        if not (0 <= i < n and 0 <= j < n):
            raise ConfigError(f"{where}: node out of range in {text!r}, nodes are 0..{n - 1}")
        if i == j:
            raise ConfigError(f"{where}: self-loop {text!r}; the diagonal of W is implicit")
        pairs.append((i, j))
    return canon_edges(n, pairs)


def _number(tok: str) -> float:
    """A finite number written like 0.25, 1e-3 or 1/4 (ValueError otherwise; no huge-exponent parsing)."""
    from fractions import Fraction
    if "/" in tok:
        num, _, den = tok.partition("/")
        if len(tok) > 64 or "e" in tok.lower():
            raise ValueError(tok)
        value = float(Fraction(int(num), int(den)))
    else:
        value = float(tok)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(tok)
    return value


def read_matrix_file(path: str | os.PathLike, n: int, edges: np.ndarray | None = None,
                     tol: float = 1e-12) -> sp.csr_array:
    """Parse a user mixing matrix: n lines of n numbers; every rule names the file and line.

    Per row: n numbers, non-negative, summing to 1, positive self-weight, zero off ``edges``
    (when given); then symmetry (which, with the row sums, makes W doubly stochastic).
    Returns the (n, n) float64 matrix as a canonical csr_array of its non-zeros.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"topology.weights {str(path)!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"topology.weights {str(path)!r}: not UTF-8 text (byte {exc.start})") from None
    adj = None if edges is None else adjacency(n, np.asarray(edges, dtype=np.int64).reshape(-1, 2))
    cols, vals, where = [], [], []
    for lineno, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        at = f"topology.weights {str(path)!r} line {lineno}"
        if len(where) == n:
            raise ConfigError(f"{at}: more than n = {n} rows")
        try:
            row = [_number(tok) for tok in text.replace(",", " ").split()]
        except (ValueError, ZeroDivisionError, OverflowError):
            raise ConfigError(f"{at}: expecting {n} numbers like 0.25 or 1/4, got {text!r}") from None
        if len(row) != n:
            raise ConfigError(f"{at}: expecting {n} numbers (one row of the {n} x {n} matrix), got {len(row)}")
        i = len(where)
        if min(row) < 0.0:
            raise ConfigError(f"{at}: entries must be non-negative, W[{i},{row.index(min(row))}] = {min(row):.6g}")
        if abs(sum(row) - 1.0) > tol:
            raise ConfigError(f"{at}: not doubly stochastic, row {i} sums to {sum(row)!r}, must be 1")
        if row[i] <= 0.0:
            raise ConfigError(f"{at}: the self-weight W[{i},{i}] must be positive, got {row[i]:.6g}")
        nz = np.flatnonzero(row)
        if adj is not None:
            off = nz[(nz != i) & ~np.isin(nz, adj.indices[adj.indptr[i]:adj.indptr[i + 1]])]
            if len(off):
                j = int(off[0])
                raise ConfigError(f"{at}: W[{i},{j}] = {row[j]:.6g} but ({i}, {j}) is not an "
                                  f"edge of the graph; weights must be zero off the edges")
        cols.append(nz)
        vals.append(np.asarray(row)[nz])
        where.append(at)
    if len(where) != n:
        raise ConfigError(f"topology.weights {str(path)!r}: expecting {n} rows (one per client), got {len(where)}")
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int64)
    W = sp.csr_array((np.concatenate(vals), np.concatenate(cols).astype(np.int64), indptr), shape=(n, n))
    # symmetric + rows summing to 1 => columns sum to 1 (doubly stochastic); first bad row named
    D = abs(W - W.T).tocsr()
    D.sort_indices()
    row_max = np.zeros(n)
    rows = np.repeat(np.arange(n), np.diff(D.indptr))
    np.maximum.at(row_max, rows, D.data)
    bad = np.flatnonzero(row_max > tol)
    if len(bad):
        i = int(bad[0])
        seg = slice(D.indptr[i], D.indptr[i + 1])
        j = int(D.indices[seg][np.argmax(D.data[seg])])
        raise ConfigError(f"{where[i]}: not symmetric, W[{i},{j}] = {W[i, j]:.6g} but "
                          f"W[{j},{i}] = {W[j, i]:.6g}")
    return W


def adjacency(n: int, edges: np.ndarray) -> sp.csr_array:
    """Symmetric 0/1 adjacency with sorted neighbour lists (``indices[indptr[i]:indptr[i+1]]``)."""
    i, j = edges[:, 0], edges[:, 1]
    A = sp.csr_array((np.ones(2 * len(edges), np.int8), (np.concatenate([i, j]), np.concatenate([j, i]))),
                     shape=(n, n))
    A.sum_duplicates()
    return A
