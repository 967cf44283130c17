"""mtrl_surrogate: MTRL (Zhang & Yeung 2010) by the decomposable surrogate of PMTL (Zhang, ICDM 2015).

min_{W, Omega} sum_t f_t(w_t) + lam/2 tr(W Omega^-1 W^T) + lam2/2 ||W||_F^2, Omega PSD, tr Omega = 1.
Alternating: with Omega fixed, W takes ``inner_iters`` accelerated steps, each the exact minimiser of a
separable quadratic upper bound (per task w_t <- z_t - grad_t / L, L = L_f + lam2 + lam lambda_max(Omega^-1)),
so the tasks update in parallel; then Omega = (W^T W + eps I)^(1/2) / tr((W^T W + eps I)^(1/2)) in closed
form. eps > 0 keeps Omega invertible; the run then minimises the eps-perturbed objective whose Omega-minimum
is F_eps(W) = sum_t f_t + lam/2 (tr (W^T W + eps I)^(1/2))^2 + lam2/2 ||W||_F^2 (the reported objective).
"""

from __future__ import annotations

import numpy as np

from . import objective as obj
from .solver import FistaLoop

__all__ = ["MTRLSurrogate"]


class MTRLSurrogate(FistaLoop):
    needs_full = True

    def __init__(self, cfg, comm, meta):
        super().__init__(cfg, comm, meta)
        self.eps, self.inner = cfg.algorithm.params.eps, cfg.algorithm.params.inner_iters
        self.Omega = np.eye(self.T) / self.T
        self.Omega_inv = np.eye(self.T) * self.T

    def lipschitz_extra(self) -> float:
        return self.m.lam * float(np.linalg.eigvalsh(self.Omega_inv)[-1])

    def before_round(self) -> None:
        if self.round % self.inner == 0:   # closed-form Omega step, then a fresh surrogate
            self.Omega, self.Omega_inv, _ = obj.mtrl_omega(self.Wf @ self.Wf.T, self.eps)
            self.L = self.Lf + self.lipschitz_extra()
            self.t = self.tprev = 1.0

    def coupling(self, Wfull):
        return 0.5 * self.m.lam * obj.mtrl_coupling(Wfull @ Wfull.T, self.eps)

    def smooth_grad(self, Zf):
        return self.m.lam * (self.Omega_inv[self.own.start:self.own.stop] @ Zf)

    def state_arrays(self):
        return {"Omega": self.Omega, "Omega_inv": self.Omega_inv}

    def state_arrays_names(self):
        return ("Omega", "Omega_inv")

    def restore_state(self, attrs, arrays):
        super().restore_state(attrs, arrays)
        self.Omega, self.Omega_inv = np.array(arrays["Omega"]), np.array(arrays["Omega_inv"])

    def summary_extra(self, Wfull):
        return {"task_correlation": np.round(self._corr(), 6).tolist()}

    def _corr(self):
        s = np.sqrt(np.diag(self.Omega))
        return self.Omega / np.outer(s, s)

    def describe(self) -> str:
        return f"mtrl_surrogate: PMTL surrogate, {self.inner} W steps per Omega update, eps = {self.eps}"
