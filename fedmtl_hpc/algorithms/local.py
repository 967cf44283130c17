"""Local: every client trains its own model and nothing is exchanged."""

from __future__ import annotations

from .base import Algorithm, LocalResult, _int_seed
from ..params import fresh_vector

__all__ = ["Local"]


class Local(Algorithm):
    name = "local"
    n_shared = 0

    def state_shapes(self):
        return {"params": (1, self.model.n_params)}

    def init_state(self, cid):
        v = fresh_vector(self.model, self.factory, _int_seed(self.cfg.run.seed, 1, cid))
        return {"params": v[None].to(self.device)}

    def local_update(self, data, start, state, gen):
        theta = state["params"].clone()
        loss = self.sgd(theta, data, gen)
        state["params"].copy_(theta)
        return LocalResult(None, loss)

    def local_update_batch(self, block, sel, starts, states, gens):
        from .batched import BatchResult, batched_sgd
        theta = states["params"].clone()
        loss = batched_sgd(self.model, theta, block, sel, self.cfg.train, gens, self.lr)
        states["params"].copy_(theta)
        return BatchResult(None, loss)

    def predict_proba(self, x, shared, state):
        return self.model.proba(state["params"], x)[0]

    def predict_batch(self, x, shared, states):
        from .batched import stack_proba
        return stack_proba(self.model, states["params"], x)[:, 0]
