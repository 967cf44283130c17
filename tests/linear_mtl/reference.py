"""Centralized reference solvers written independently of fedmtl_hpc.linear_mtl (plain numpy, whole W)."""

from __future__ import annotations

import numpy as np

from fedmtl_hpc.config import parse_config
from fedmtl_hpc.linear_mtl.data import load_tasks, task_meta


def tasks(raw: dict):
    """All tasks of a config (X, y lists) as one process sees them."""
    cfg = parse_config(raw)
    meta = task_meta(cfg)
    ts = load_tasks(cfg, meta, range(meta.T))
    return cfg, ts.X, ts.y


def loss(kind, X, y, w):
    z = X @ w
    if kind == "squared":
        return 0.5 * np.mean((z - y) ** 2)
    return np.mean(np.log1p(np.exp(-y * z)))


def grad(kind, X, y, w):
    z = X @ w
    if kind == "squared":
        return X.T @ (z - y) / len(y)
    return -X.T @ (y / (1 + np.exp(y * z))) / len(y)


def reg(kind, W):  # W is d x T
    if kind == "l21":
        return np.linalg.norm(W, axis=1).sum()
    return np.linalg.svd(W, compute_uv=False).sum()


def prox(kind, V, tau):
    if kind == "l21":
        n = np.linalg.norm(V, axis=1, keepdims=True)
        return V * np.maximum(0, 1 - tau / np.maximum(n, 1e-300))
    U, s, Vt = np.linalg.svd(V, full_matrices=False)
    return U @ np.diag(np.maximum(s - tau, 0)) @ Vt


def objective_prox(kind, rkind, Xs, ys, W, lam, lam2=0.0):
    return sum(loss(kind, X, y, W[:, t]) for t, (X, y) in enumerate(zip(Xs, ys))) + lam * reg(rkind, W) \
        + 0.5 * lam2 * (W ** 2).sum()


def fista_prox(kind, rkind, Xs, ys, lam, lam2=0.0, iters=20000):
    """Proximal gradient with FISTA momentum and gradient restart, fixed step 1/L (exact L)."""
    d, T = Xs[0].shape[1], len(Xs)
    L = max(np.linalg.eigvalsh(X.T @ X / len(X))[-1] for X in Xs) * (0.25 if kind == "logistic" else 1) + lam2
    W = np.zeros((d, T))
    Z, t = W.copy(), 1.0
    for _ in range(iters):
        G = np.column_stack([grad(kind, X, y, Z[:, i]) for i, (X, y) in enumerate(zip(Xs, ys))]) + lam2 * Z
        Wn = prox(rkind, Z - G / L, lam / L)
        if np.sum((Z - Wn) * (Wn - W)) > 0:  # gradient restart
            t, Z = 1.0, Wn.copy()
        else:
            tn = (1 + np.sqrt(1 + 4 * t * t)) / 2
            Z, t = Wn + (t - 1) / tn * (Wn - W), tn
        if np.abs(Wn - W).max() < 1e-15:
            W = Wn
            break
        W = Wn
    return W


def cmtl_objective(Xs, ys, W, lam, eta, k, lam2=0.0):
    sig = np.clip(np.linalg.eigvalsh(W.T @ W), 0, None)
    g = cmtl_gamma_ref(sig, eta, k)
    c = lam * eta * (1 + eta)
    return sum(loss("squared", X, y, W[:, t]) for t, (X, y) in enumerate(zip(Xs, ys))) \
        + c * (sig / (eta + g)).sum() + 0.5 * lam2 * (W ** 2).sum()


def cmtl_gamma_ref(sig, eta, k):
    """min sum sig/(eta+g), sum g = k, 0 <= g <= 1 by bisection on the multiplier (sig > 0 assumed)."""
    lo, hi = 1e-30, 1e30
    for _ in range(400):
        th = np.sqrt(lo * hi)
        g = np.clip(np.sqrt(sig / th) - eta, 0, 1)
        lo, hi = (th, hi) if g.sum() > k else (lo, th)
    return np.clip(np.sqrt(sig / np.sqrt(lo * hi)) - eta, 0, 1)


def alternating_quadratic(Xs, ys, coupling_B, W0, lam2=0.0, iters=3000, tol=1e-14):
    """Exact alternating minimisation for squared losses: W-step solves the dT x dT linear system
    (X_t^T X_t / n_t) w_t + sum_s B_ts w_s + lam2 w_t = X_t^T y_t / n_t for B = coupling_B(W)."""
    d, T = W0.shape
    W = W0.copy()
    A = np.zeros((d * T, d * T))
    b = np.concatenate([X.T @ y / len(y) for X, y in zip(Xs, ys)])
    for _ in range(iters):
        B = coupling_B(W)
        A[:] = np.kron(B, np.eye(d))
        for t, X in enumerate(Xs):
            A[t * d:(t + 1) * d, t * d:(t + 1) * d] += X.T @ X / len(X) + lam2 * np.eye(d)
        Wn = np.linalg.solve(A, b).reshape(T, d).T
        if np.abs(Wn - W).max() < tol:
            return Wn
        W = Wn
    return W
