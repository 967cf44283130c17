"""clustered_mtl: parallel convex clustered MTL (Zhou, Chen, Ye, NIPS 2011; MALSAR's CMTL).

F(W) = sum_t f_t(w_t) + lam eta (1 + eta) min_M tr(W (eta I + M)^-1 W^T) (+ lam2/2 ||W||_F^2),
M in {tr M = k, 0 <= M <= I}. The inner minimum has a closed form from the eigendecomposition of the
T x T matrix W^T W (``objective.cmtl_coupling``), so F is convex and smooth in W (gradient
2 lam eta (1 + eta) W (eta I + M*)^-1, Lipschitz <= 2 lam (1 + eta)), with a unique optimum for n_t > d.
Solved by the shared accelerated loop: every iteration one Allgatherv of the new columns (d + 4 numbers
per task) gives every rank the full W, hence W^T W, M* and its own columns' coupling gradient. Task
clusters: spectral clustering (top-k eigenvectors of M*, k-means) of the final M*.
"""

from __future__ import annotations

import numpy as np

from . import objective as obj
from .solver import FistaLoop

__all__ = ["ClusteredMTL"]


class ClusteredMTL(FistaLoop):
    needs_full = True

    @property
    def columns(self):
        return ("cluster_ari", *(f"cluster_{t}" for t in range(self.T) if self.T <= 64))

    def __init__(self, cfg, comm, meta):
        super().__init__(cfg, comm, meta)
        p = cfg.algorithm.params
        self.k, self.eta = p.k, p.eta
        self.c = self.m.lam * self.eta * (1.0 + self.eta)

    def lipschitz_extra(self) -> float:
        return 2.0 * self.c / self.eta

    def coupling(self, Wfull):
        return self.c * obj.cmtl_coupling(Wfull @ Wfull.T, self.eta, self.k)[0]

    def smooth_grad(self, Zf):
        _, B, _ = obj.cmtl_coupling(Zf @ Zf.T, self.eta, self.k)
        return 2.0 * self.c * (B[self.own.start:self.own.stop] @ Zf)

    def clusters(self, Wfull=None) -> np.ndarray:
        Wfull = self.Wf if Wfull is None else Wfull
        M = obj.cmtl_coupling(Wfull @ Wfull.T, self.eta, self.k)[2]
        return obj.spectral_clusters(M, self.k, seed=self.cfg.run.seed)

    def evaluate(self) -> dict:
        out = super().evaluate()
        lab = self.clusters()
        if self.T <= 64:
            out.update({f"cluster_{t}": float(c) for t, c in enumerate(lab)})
        truth = self.data.truth
        if truth is not None and truth.get("clusters") is not None:
            out["cluster_ari"] = obj.adjusted_rand_index(truth["clusters"], lab)
        return out

    def summary_extra(self, Wfull):
        lab = self.clusters(Wfull)
        out = {"clusters": [int(v) for v in lab]}
        truth = self.data.truth
        if truth is not None and truth.get("clusters") is not None:
            out["cluster_ari"] = obj.adjusted_rand_index(truth["clusters"], lab)
        return out

    def state_arrays(self):
        return {"clusters": self.clusters().astype(np.int64)}

    def state_arrays_names(self):
        return ("clusters",)

    def describe(self) -> str:
        return f"clustered_mtl: convex CMTL, k = {self.k}, eta = {self.eta}, accelerated gradient with restart"
