"""The fixed objective pieces, pure numpy float64: losses, gradients, proximal operators, couplings.

F(W) = sum_t f_t(w_t) + lam * Omega(W) (+ lam2/2 ||W||_F^2), W = [w_1 .. w_T] (d x T);
squared f_t(w) = 1/(2 n_t) ||X_t w - y_t||^2, logistic f_t(w) = 1/n_t sum_i log(1 + exp(-y_i x_i^T w)),
y in {-1, +1}; l21 Omega = sum_j ||W[j, :]||_2, nuclear Omega = sum of singular values.
Also the task couplings of MTRL and convex clustered MTL (closed-form inner minimisations over
T x T matrices), spectral clustering with a deterministic k-means, and the adjusted Rand index.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["loss_xw", "grad_xw", "task_loss", "task_grad", "lipschitz", "prox_l21", "prox_nuclear",
           "l21", "nuclear", "omega", "cmtl_gamma", "cmtl_coupling", "mtrl_omega", "mtrl_coupling",
           "kmeans", "spectral_clusters", "adjusted_rand_index", "test_error"]


def loss_xw(loss: str, xw: np.ndarray, y: np.ndarray) -> float:
    """f_t from the margins/predictions X_t w (so callers reuse X_t w)."""
    if loss == "squared":
        r = xw - y
        return 0.5 * float(r @ r) / y.size
    return float(np.logaddexp(0.0, -y * xw).mean())


def _dloss(loss: str, xw: np.ndarray, y: np.ndarray) -> np.ndarray:
    if loss == "squared":
        return (xw - y) / y.size
    m = y * xw
    return -y * (0.5 * (1.0 - np.tanh(0.5 * m))) / y.size     # -y sigmoid(-m) / n, stable


def grad_xw(loss: str, X: np.ndarray, xw: np.ndarray, y: np.ndarray) -> np.ndarray:
    """grad f_t(w) = X_t^T l'(X_t w) / n_t, from X_t w."""
    return X.T @ _dloss(loss, xw, y)


def task_loss(loss: str, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return loss_xw(loss, X @ w, y)


def task_grad(loss: str, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    return grad_xw(loss, X, X @ w, y)


def lipschitz(loss: str, X: np.ndarray, iters: int = 30) -> float:
    """An estimate of the Lipschitz constant of grad f_t: ||X||_2^2 / n (squared) or / (4 n) (logistic).

    Exact (eigvalsh of X^T X) when d <= 400; otherwise 30 power iterations from a fixed start,
    times 1.1 (power iteration approaches ||X||_2 from below). Deterministic.
    """
    n, d = X.shape
    if d <= 400 or n <= 400:
        G = X.T @ X if d <= n else X @ X.T
        s = float(np.linalg.eigvalsh(G)[-1])
    else:
        v = np.cos(np.arange(d, dtype=np.float64) + 1.0)
        v /= np.linalg.norm(v)
        s = 0.0
        for _ in range(iters):
            u = X.T @ (X @ v)
            s = float(np.linalg.norm(u))
            v = u / s
        s *= 1.1
    return s / n / (4.0 if loss == "logistic" else 1.0)


def prox_l21(V: np.ndarray, rowsq: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of V (task-major [T_local, d]: rows are tasks, so a feature row is a column here) shrunk by
    max(0, 1 - tau / ||row||) using the all-task squared row norms ``rowsq`` [d]; also the new row norms."""
    r = np.sqrt(rowsq)
    scale = np.where(r > tau, 1.0 - tau / np.where(r > 0, r, 1.0), 0.0)
    return V * scale[None, :], np.maximum(r - tau, 0.0)


def prox_nuclear(V: np.ndarray, tau: float) -> tuple[np.ndarray, float]:
    """Singular values of the full task-major V [T, d] shrunk by tau; returns (W, nuclear norm of W)."""
    U, s, Vt = np.linalg.svd(V, full_matrices=False)
    s = np.maximum(s - tau, 0.0)
    return (U * s[None, :]) @ Vt, float(s.sum())


def l21(W: np.ndarray) -> float:
    """sum_j ||W[j, :]||_2 for task-major W [T, d] (feature j is column j here)."""
    return float(np.sqrt((W * W).sum(axis=0)).sum())


def nuclear(W: np.ndarray) -> float:
    return float(np.linalg.svd(W, compute_uv=False).sum())


def omega(regularizer: str, W: np.ndarray) -> float:
    return l21(W) if regularizer == "l21" else nuclear(W)


# -- convex clustered MTL (Zhou, Chen, Ye 2011; MALSAR CMTL) ---------------------------------------------
def cmtl_gamma(sig: np.ndarray, eta: float, k: int) -> np.ndarray:
    """argmin_g sum_i sig_i / (eta + g_i) s.t. sum g = k, 0 <= g <= 1 (eigenvalues of the optimal M).

    KKT: g_i = clip(sqrt(sig_i / theta) - eta, 0, 1); theta by bisection, then the exact value on
    the active set. Zero eigenvalues are indifferent: leftover mass is spread evenly over them.
    """
    T = sig.size
    sig = np.maximum(sig, 0.0)
    if k >= T:
        return np.ones(T)
    pos = sig > 0
    if pos.sum() <= k:
        g = np.where(pos, 1.0, 0.0)
        if (~pos).any():
            g[~pos] = (k - pos.sum()) / (~pos).sum()
        return g

    def gam(theta):
        return np.clip(np.sqrt(sig / theta) - eta, 0.0, 1.0)

    lo = math.log(sig[pos].min() / (1.0 + eta) ** 2 * 0.5)   # every positive g_i = 1: sum > k
    hi = math.log(sig.max() / eta ** 2 * 2.0)                  # all 0: sum < k
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if gam(math.exp(mid)).sum() > k:
            lo = mid
        else:
            hi = mid
    g = gam(math.exp(0.5 * (lo + hi)))
    free = (g > 0) & (g < 1)
    if free.any():  # exact theta on the active set
        ones = (g >= 1).sum()
        st = np.sqrt(sig[free]).sum() / (k - ones + eta * free.sum())
        g2 = np.clip(np.sqrt(sig) / st - eta, 0.0, 1.0)
        if abs(g2.sum() - k) < abs(g.sum() - k) + 1e-12:
            g = g2
    return g


def cmtl_coupling(gram: np.ndarray, eta: float, k: int) -> tuple[float, np.ndarray, np.ndarray]:
    """min_M tr(W (eta I + M)^-1 W^T) over {tr M = k, 0 <= M <= I} from gram = W^T W [T, T].

    Returns (value, B = (eta I + M*)^-1, M*); grad_W of the value is 2 W B (Danskin).
    """
    sig, Q = np.linalg.eigh(0.5 * (gram + gram.T))
    g = cmtl_gamma(sig, eta, k)
    value = float((np.maximum(sig, 0.0) / (eta + g)).sum())
    B = (Q / (eta + g)[None, :]) @ Q.T
    M = (Q * g[None, :]) @ Q.T
    return value, B, M


# -- MTRL (Zhang & Yeung 2010) -------------------------------------------------------------------------
def mtrl_omega(gram: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Omega = (W^T W + eps I)^(1/2) / tr(...), its inverse, and tr((W^T W + eps I)^(1/2))."""
    c, Q = np.linalg.eigh(0.5 * (gram + gram.T) + eps * np.eye(gram.shape[0]))
    s = np.sqrt(np.maximum(c, eps))
    tr = float(s.sum())
    return (Q * (s / tr)[None, :]) @ Q.T, (Q * (tr / s)[None, :]) @ Q.T, tr


def mtrl_coupling(gram: np.ndarray, eps: float) -> float:
    """min over Omega (PSD, trace 1) of tr(Omega^-1 (W^T W + eps I)) = (tr (W^T W + eps I)^(1/2))^2."""
    return mtrl_omega(gram, eps)[2] ** 2


# -- clustering ------------------------------------------------------------------------------------------
def kmeans(P: np.ndarray, k: int, seed: int = 0, n_init: int = 10, iters: int = 100) -> np.ndarray:
    """Lloyd's k-means with seeded k-means++ starts; the lowest-inertia labelling, relabelled by first
    appearance (deterministic)."""
    n = P.shape[0]
    k = min(k, n)
    rs = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 11])))
    best, best_in = None, np.inf
    for _ in range(n_init):
        centers = [P[rs.integers(n)]]
        for _ in range(1, k):
            d2 = np.min(((P[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
            centers.append(P[rs.choice(n, p=p)])
        C = np.array(centers)
        for _ in range(iters):
            lab = np.argmin(((P[:, None, :] - C[None]) ** 2).sum(-1), axis=1)
            newC = np.array([P[lab == j].mean(0) if (lab == j).any() else C[j] for j in range(k)])
            if np.allclose(newC, C):
                break
            C = newC
        inertia = float(((P - C[lab]) ** 2).sum())
        if inertia < best_in - 1e-12:
            best, best_in = lab, inertia
    _, first = np.unique(best, return_index=True)
    order = np.argsort(first)
    remap = np.empty(k, dtype=np.int64)
    remap[np.unique(best)[order]] = np.arange(order.size)
    return remap[best]


def spectral_clusters(S: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster the T tasks from a symmetric PSD T x T matrix (CMTL's M or W^T W): the top-k eigenvectors,
    rows normalised to unit length, then k-means."""
    _, Q = np.linalg.eigh(0.5 * (S + S.T))
    E = Q[:, ::-1][:, :k]
    E = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-300)
    return kmeans(E, k, seed)


def adjusted_rand_index(a, b) -> float:
    """Hubert & Arabie's adjusted Rand index of two labellings (1: identical partitions)."""
    a, b = np.asarray(a), np.asarray(b)
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1)

    def c2(x):
        return (x * (x - 1) / 2.0).sum()
    index, sa, sb, total = c2(table), c2(table.sum(1)), c2(table.sum(0)), c2(np.array([a.size]))
    expected = sa * sb / total if total else 0.0
    top = 0.5 * (sa + sb) - expected
    return 1.0 if top == 0 else float((index - expected) / top)


def test_error(loss: str, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Misclassification rate (logistic) or mean squared error (squared) on a task's test data."""
    p = X @ w
    if loss == "logistic":
        return float(np.mean(np.where(p >= 0, 1.0, -1.0) != y))
    return float(np.mean((p - y) ** 2))
