"""dsml: one-shot distributed multi-task learning (Wang, Kolar, Srebro, AISTATS 2016).

Each task (squared loss): lasso  w_t = argmin f_t(w) + lam ||w||_1;  debias with the nodewise-lasso
approximate inverse Theta of Sigma_t = X_t^T X_t / n_t:  u_t = w_t + Theta X_t^T (y_t - X_t w_t) / n_t;
exactly ONE exchange (an Allgatherv of [u_t, v_t], v_t the estimated variances of u_t's coordinates,
v_tj = sigma_t^2 (Theta Sigma Theta^T)_jj / n_t); every rank applies the same group hard threshold to the
row norms ||U[j, :]|| to get the shared support S; each task refits least squares (+ lam2 ridge) on S.
Threshold (``algorithm.dsml.threshold`` = 0): row j is kept when ||U[j, :]||^2 exceeds the Laurent-Massart
bound sum_t v_tj + 2 sqrt(x sum_t v_tj^2) + 2 x max_t v_tj with x = log(d) + 5 (a null row passes with
probability <= e^-5 / d). Reported objective: sum_t f_t(w_t) + lam2/2 ||W||_F^2 at the refit W.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .solver import MTLSolver

__all__ = ["DSML", "lasso_gram", "nodewise_theta"]


def lasso_gram(G: np.ndarray, c: np.ndarray, lam: float, iters: int, tol: float = 1e-12,
               zero_diag: bool = False) -> np.ndarray:
    """argmin 1/2 w^T G w - c^T w + lam ||w||_1 by FISTA (columns of c solved at once; c may be [d] or
    [d, m]); ``zero_diag`` keeps w's diagonal at 0 (the nodewise regressions, ``c = G``)."""
    L = float(np.linalg.eigvalsh(G)[-1]) or 1.0
    w = np.zeros_like(c)
    z, t = w.copy(), 1.0
    eye = np.eye(G.shape[0], dtype=bool) if zero_diag else None
    for _ in range(iters):
        v = z - (G @ z - c) / L
        wn = np.sign(v) * np.maximum(np.abs(v) - lam / L, 0.0)
        if eye is not None:
            wn[eye] = 0.0
        tn = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
        z = wn + ((t - 1) / tn) * (wn - w)
        done = np.abs(wn - w).max() <= tol * max(1.0, np.abs(wn).max())
        w, t = wn, tn
        if done:
            break
    return w


def nodewise_theta(G: np.ndarray, lam: float, iters: int, tol: float = 1e-10) -> np.ndarray:
    """The nodewise-lasso approximate inverse of G (van de Geer et al. 2014): all d regressions at once,
    column j of Gamma regresses feature j on the others (Gamma_jj = 0); Theta[j] = (e_j - gamma_j) / tau_j^2."""
    d = G.shape[0]
    Gm = lasso_gram(G, G, lam, iters, tol, zero_diag=True)   # column j: gamma_j, Gamma_jj = 0
    diagG = np.diag(G)
    tau2 = diagG - 2 * (Gm * G).sum(0) + (Gm * (G @ Gm)).sum(0) + lam * np.abs(Gm).sum(0)
    C = np.eye(d) - Gm.T          # row j: e_j - gamma_j
    return C / np.maximum(tau2, 1e-12)[:, None]


class DSML(MTLSolver):
    columns = ("support_size", "exchanges")

    def __init__(self, cfg, comm, meta):
        super().__init__(cfg, comm, meta)
        self.U = np.zeros_like(self.W)          # debiased estimates of this rank's tasks
        self.support = np.zeros(self.d, dtype=bool)

    def done(self) -> bool:
        return self.round >= 1

    def before_training(self) -> None:
        pass

    def step(self):
        p, m = self.params, self.m
        t0 = time.perf_counter()
        rows = np.zeros((len(self.own), 2 * self.d))
        for i in range(len(self.own)):
            X, y = self.data.X[i], self.data.y[i]
            n = y.size
            G, c = X.T @ X / n, X.T @ y / n
            w = lasso_gram(G, c, m.lam, p.lasso_iters)
            node_lam = p.node_lam or math.sqrt(2.0 * math.log(self.d) / n)
            Theta = nodewise_theta(G, node_lam, p.lasso_iters)
            u = w + Theta @ (c - G @ w)
            r = y - X @ w
            sigma2 = float(r @ r) / max(n - int((w != 0).sum()), 1)
            rows[i, :self.d] = u
            rows[i, self.d:] = sigma2 * np.einsum("ij,jk,ik->i", Theta, G, Theta) / n
        t1 = time.perf_counter()
        full, nbytes = self.gathered(rows)            # the ONE exchange
        t2 = time.perf_counter()
        U, var = full[:, :self.d], full[:, self.d:]
        norms2 = (U * U).sum(axis=0)
        if p.threshold > 0:
            keep = norms2 > p.threshold ** 2
        else:
            x = math.log(self.d) + 5.0
            bound = var.sum(0) + 2.0 * np.sqrt(x * (var * var).sum(0)) + 2.0 * x * var.max(0)
            keep = norms2 > bound
        S = np.flatnonzero(keep)
        self.support = keep
        self.U = np.ascontiguousarray(U[self.own.start:self.own.stop])
        W = np.zeros_like(self.W)
        for i in range(len(self.own)):
            if S.size:
                X, y = self.data.X[i][:, S], self.data.y[i]
                n = y.size
                A = X.T @ X / n + m.lam2 * np.eye(S.size)
                W[i, S] = np.linalg.lstsq(A, X.T @ y / n, rcond=None)[0]
        self.W = W
        buf = self.task_rows(2)
        for i, t in enumerate(self.own):
            r = self.data.X[i] @ W[i] - self.data.y[i]
            buf[t] = (0.5 * float(r @ r) / r.size, W[i] @ W[i])
        vote = np.concatenate([buf.reshape(-1), [self.vote()]])
        self.comm.allreduce_(vote)                     # the objective for the metrics row (not an exchange of W)
        per = vote[:-1].reshape(self.T, 2)
        self.F = float(per[:, 0].sum() + 0.5 * m.lam2 * per[:, 1].sum())
        self.round = 1
        self.converged = "one_shot"
        return self.stats(time.perf_counter() - t0 - (t2 - t1), t2 - t1, nbytes, float(vote[-1]),
                          support_size=int(S.size), exchanges=1)

    def coupling(self, Wfull):
        return 0.0

    def summary_extra(self, Wfull):
        return {"support": [int(j) for j in np.flatnonzero(self.support)], "exchanges": 1}

    def state_rows(self):
        return {"debiased": self.U}

    def state_arrays(self):
        return {"support": self.support.astype(np.int8)}

    def state_arrays_names(self):
        return ("support",)

    def restore_state(self, attrs, arrays):
        self.U = np.ascontiguousarray(arrays["debiased"][self.own.start:self.own.stop])
        self.support = np.asarray(arrays["support"]).astype(bool)

    def describe(self) -> str:
        return "dsml: lasso + nodewise-lasso debiasing per task, one Allgatherv, group hard threshold, refit"
