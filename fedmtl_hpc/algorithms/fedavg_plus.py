"""FedAvg+ : FedAvg followed by local fine-tuning before evaluation.

The "FedAvg+" baseline of the FedEM paper (Marfoq et al., NeurIPS 2021, Sec. 5 and App. I.1,
following Jiang et al. 2019 "Improving federated learning personalization via model agnostic
meta learning"): training is FedAvg, unchanged (McMahan et al. 2017); at evaluation each
client (also a client never seen in training) runs ``tune_epochs`` local epochs -- or exactly
``tune_steps`` steps -- of SGD on its own training data, starting from the current global
model, and predicts with that tuned COPY. The copy never flows back: the global model and
every other piece of training state are untouched by an evaluation.

Keys (``algorithm.fedavg_plus``): ``tune_epochs`` (1, FedEM paper), ``tune_steps`` (0: use
epochs), ``tune_lr`` (0: the lr of the last training round). Nothing is stored per client.
"""

from __future__ import annotations

import dataclasses

from .fedavg import FedAvg
from .sgd import local_sgd

__all__ = ["FedAvgPlus"]


class FedAvgPlus(FedAvg):
    name = "fedavg_plus"
    n_shared = 1

    def tune_config(self):
        """The train config of the fine-tuning (None: no tuning at all)."""
        p = self.params
        if p.tune_steps > 0:
            return dataclasses.replace(self.cfg.train, local_steps=int(p.tune_steps))
        if p.tune_epochs > 0:
            return dataclasses.replace(self.cfg.train, local_steps=0, local_epochs=int(p.tune_epochs))
        return None

    def personalize(self, data, shared, state, gen):
        tcfg = self.tune_config()
        if tcfg is None:
            return shared, state
        tuned = shared.clone()              # a copy: the global model is never written
        lr = float(self.params.tune_lr) or self.lr
        local_sgd(self.model, tuned, data, tcfg, gen, lr=lr)
        return tuned, state

    def personalize_batch(self, block, sel, shared, states, gens):
        """``personalize`` of the clients ``sel`` of ``block``: their tuned copies ``[A, 1, P]``."""
        from .batched import batched_sgd, expand_starts
        tcfg = self.tune_config()
        if tcfg is None:
            return shared, states
        tuned = expand_starts(shared, len(sel))
        batched_sgd(self.model, tuned, block, sel, tcfg, gens, float(self.params.tune_lr) or self.lr)
        return tuned, states
