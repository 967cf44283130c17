"""FedAvg (McMahan et al., 2017): local SGD from the global model, n_t-weighted average."""

from __future__ import annotations

from .base import Algorithm, LocalResult

__all__ = ["FedAvg"]


class FedAvg(Algorithm):
    name = "fedavg"
    n_shared = 1

    def local_update(self, data, start, state, gen):
        theta = start.clone()
        loss = self.sgd(theta, data, gen)
        return LocalResult(theta, loss)

    def local_update_batch(self, block, sel, starts, states, gens):
        """``local_update`` of the clients ``sel`` of ``block`` as one computation (algorithms/batched.py)."""
        from .batched import BatchResult, batched_sgd, expand_starts
        theta = expand_starts(starts, len(sel))
        return BatchResult(theta, batched_sgd(self.model, theta, block, sel, self.cfg.train, gens, self.lr))

    def predict_proba(self, x, shared, state):
        return self.model.proba(shared, x)[0]

    def predict_batch(self, x, shared, states):
        """``predict_proba`` of A clients on ``x [A, w, d]`` (shared ``[1, P]`` or ``[A, 1, P]``): ``[A, w, C]``."""
        from .batched import stack_proba
        return stack_proba(self.model, shared, x)[:, 0]
