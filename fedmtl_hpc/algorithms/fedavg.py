"""FedAvg (McMahan et al., 2017): local SGD from the global model, n_t-weighted average."""

from __future__ import annotations

from .base import Algorithm, LocalResult
from .sgd import local_sgd

__all__ = ["FedAvg"]


class FedAvg(Algorithm):
    name = "fedavg"
    n_shared = 1

    def local_update(self, data, shared, state, gen):
        theta = shared.clone()
        loss = local_sgd(self.model, theta, data, self.cfg.train, gen)
        return LocalResult(theta, loss)

    def predict_proba(self, x, shared, state):
        return self.model.proba(shared, x)[0]
