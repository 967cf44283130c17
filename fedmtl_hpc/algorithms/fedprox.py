"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, MLSys 2020, Alg. 2: FedProx).

Client t, starting from the global model theta^r it received, approximately minimises

    h_t(theta; theta^r) = f_t(theta) + mu/2 ||theta - theta^r||^2

by local SGD (the proximal gradient ``mu (theta - theta^r)`` is added to every minibatch
gradient); the server averages the local models with weights n_t / n exactly as FedAvg.
With ``mu == 0`` the proximal term is not evaluated at all, so FedProx is bit-for-bit FedAvg.

Key: ``algorithm.fedprox.mu`` (default 0.01; Li et al. tune mu in {0.001, 0.01, 0.1, 1}).
"""

from __future__ import annotations

from .fedavg import FedAvg
from .base import LocalResult

__all__ = ["FedProx"]


class FedProx(FedAvg):
    name = "fedprox"
    n_shared = 1

    def local_update(self, data, start, state, gen):
        mu = float(self.params.mu)
        theta = start.clone()
        if mu == 0.0:                       # exactly FedAvg: no "+ 0 * ..." in the update
            loss = self.sgd(theta, data, gen)
        else:
            anchor = start.clone()          # theta^r, never modified during the local work
            loss = self.sgd(theta, data, gen, extra_grad=lambda th: (th - anchor).mul_(mu))
        return LocalResult(theta, loss)

    def local_update_batch(self, block, sel, starts, states, gens):
        from .batched import BatchResult, batched_sgd, expand_starts
        mu = float(self.params.mu)
        theta = expand_starts(starts, len(sel))
        loss = batched_sgd(self.model, theta, block, sel, self.cfg.train, gens, self.lr, mu=mu,
                           anchor=starts if mu != 0.0 else None)
        return BatchResult(theta, loss)
