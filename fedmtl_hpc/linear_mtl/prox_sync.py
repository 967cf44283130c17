"""prox_sync: synchronous FISTA proximal gradient for F(W) = sum_t f_t(w_t) + lam Omega(W) (+ lam2/2 ||W||_F^2).

Per iteration, besides the local gradients (two passes over each task's data: X^T r and X w_new):
l21 -- one Allreduce of the d squared row norms of V = Z - grad / L (each rank's columns' contribution),
then every rank shrinks its own columns; nuclear -- one Allgatherv of V's columns (d x T is small), every
rank takes the SVD of the same bytes and keeps its own columns. Then one Allreduce of [T, 3] per-task
scalars (loss, ||w_new - z||^2, ||w_new||^2) and the stop vote.
"""

from __future__ import annotations

import time

import numpy as np

from . import objective as obj
from .solver import FistaLoop

__all__ = ["ProxSync"]


class ProxSync(FistaLoop):
    def __init__(self, cfg, comm, meta):
        super().__init__(cfg, comm, meta)
        self.restart = cfg.algorithm.params.restart

    def prox(self, V):
        tau = self.m.lam / self.L
        t0 = time.perf_counter()
        if self.m.regularizer == "l21":
            rowsq = (V * V).sum(axis=0) if len(V) else np.zeros(self.d)
            nbytes = self.reduced(rowsq)
            te = time.perf_counter() - t0
            Wn, norms = obj.prox_l21(V, rowsq, tau)
            return Wn, self.m.lam * float(norms.sum()), nbytes, te
        Vf, nbytes = self.gathered(V)
        te = time.perf_counter() - t0
        Wf, nuc = obj.prox_nuclear(Vf, tau)
        return np.ascontiguousarray(Wf[self.own.start:self.own.stop]), self.m.lam * nuc, nbytes, te

    def coupling(self, Wfull):
        return self.m.lam * obj.omega(self.m.regularizer, Wfull)

    def describe(self) -> str:
        return (f"prox_sync: FISTA{' with restart' if self.restart else ''}, Omega = {self.m.regularizer}, "
                f"tol {self.m.tol}, max_iters {self.m.max_iters}")
