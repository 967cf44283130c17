"""pFedMe (T. Dinh, Tran, Nguyen, NeurIPS 2020, "Personalized Federated Learning with Moreau
Envelopes", Alg. 1).

Client t holds a local copy w of the global model. On each local minibatch xi it first
approximately solves the personalized problem (the Moreau envelope's inner argmin)

    theta_hat = argmin_theta  f_t(theta; xi) + lam/2 ||theta - w||^2

with K = ``inner_steps`` gradient steps at ``personal_lr`` (warm-started from the previous
step's theta_hat, from w at the start of the round, as the authors' code), then takes the
outer step on the Moreau envelope:  w <- w - lr lam (w - theta_hat).
After the local steps it sends w; the server mixes

    theta <- (1 - beta) theta + beta sum_t n_t/n w_t

where non-sampled clients contribute theta (the engine's unbiased rule), so beta = 1 is FedAvg's
aggregation of the w_t. train.weight_decay is part of f_t (inner gradient); train.momentum acts
on the outer step (buffers restart every round). The reported training loss is the mean over
local steps of f_t(theta; xi) at the last inner iterate evaluated.

Per client: ``/clients/state/theta_hat`` [N, 1, P], the personalized model of the client's
last local step (initially the initial global model); a client predicts with it. Unseen
clients: theta_hat from the global model by ``inner_steps`` FULL-BATCH steps on their
training data (deterministic: adapt gets no stream).
"""

from __future__ import annotations

import torch

from .base import Algorithm, LocalResult, PersonalModels
from .ditto import full_batch_grad
from .sgd import batches

__all__ = ["PFedMe"]


class PFedMe(PersonalModels, Algorithm):
    name = "pfedme"
    n_shared = 1
    personal = ("theta_hat",)

    def inner(self, theta, w, x, y):
        """K steps on f_t(theta; x, y) + lam/2 ||theta - w||^2, in place; returns the last loss."""
        p, wd = self.params, self.cfg.train.weight_decay
        lam, plr = float(p.lam), float(p.personal_lr)
        obj = 0.0
        for _ in range(int(p.inner_steps)):
            o, g = self.model.objective_and_grad(theta, x, y)
            with torch.no_grad():
                if wd:
                    g.add_(theta, alpha=wd)
                g.add_(theta - w, alpha=lam)
                theta.add_(g, alpha=-plr)
            obj = float(o)
        return obj

    def local_update(self, data, start, state, gen):
        cfg, lam = self.cfg.train, float(self.params.lam)
        w = start.clone()
        theta = start.clone()
        buf = torch.zeros_like(w) if cfg.momentum > 0 else None
        total, count = 0.0, 0
        for idx in batches(data.n_train, cfg, gen, w.device):
            x, y = data.train_batch(idx, gen)
            total += self.inner(theta, w, x, y)
            count += 1
            with torch.no_grad():
                d = (w - theta).mul_(lam)
                if buf is not None:
                    d = buf.mul_(cfg.momentum).add_(d)
                w.add_(d, alpha=-self.lr)
        self.check_personal(data.cid, theta)
        state["theta_hat"].copy_(theta)
        return LocalResult(w, total / max(count, 1))

    def finish_round(self, views):
        beta = float(self.params.beta)
        if "shared" in views:
            if beta == 1.0:
                self.shared.copy_(views["shared"])
            else:
                self.shared.copy_(self.shared.double().mul_(1.0 - beta).add_(views["shared"], alpha=beta))
        return {}

    def predict_proba(self, x, shared, state):
        return self.model.proba(state["theta_hat"], x)[0]

    def adapt(self, data, shared, state):
        p, wd = self.params, self.cfg.train.weight_decay
        theta = shared.clone()
        for _ in range(int(p.inner_steps)):
            _, g = full_batch_grad(self.model, theta, data, wd)
            g.add_(theta - shared, alpha=float(p.lam))
            theta.add_(g, alpha=-float(p.personal_lr))
        state["theta_hat"].copy_(theta)
