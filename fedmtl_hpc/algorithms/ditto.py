"""Ditto (Li, Hu, Beirami, Smith, ICML 2021, "Ditto: Fair and Robust Federated Learning
Through Personalization", Alg. 1).

The global model is trained exactly as FedAvg (that is what goes into the all-reduce).
In addition, each sampled client t updates a personal model v_t on

    min_v  f_t(v) + lam/2 ||v - theta^r||^2        (theta^r: the global model received this round)

with ``personal_steps`` minibatch steps (0: as many as the global local work). Alg. 1 takes
the explicit step v <- v - eta (grad f_t(v) + lam (v - theta^r)), which diverges once
eta * lam >= 2 (and overshoots theta^r from eta * lam > 1). We take the proximal-gradient
step on the same objective instead -- explicit on f_t, exact on the quadratic:

    v <- (v - eta g + eta lam theta^r) / (1 + eta lam),     g = grad f_t(v; xi) (+ weight decay)

It has the same fixed points, agrees with Alg. 1's step to first order in eta * lam, and is
stable for every lam (lam -> inf gives v = theta^r; lam = 0 is local SGD). train.momentum acts
on g. The personal minibatches come after the global ones from the client's stream, so the
global model is bit-for-bit FedAvg's. The reported training loss is the global (FedAvg) one;
a NaN/Inf in v_t raises NumericalError naming client and round.

Per client: ``/clients/state/v`` [N, 1, P], initialised to the initial global model. A client
predicts with v_t. Unseen clients: v starts at the global model and takes the same number of
FULL-BATCH proximal-gradient steps on their training data (deterministic: adapt gets no stream).
"""

from __future__ import annotations

import dataclasses

import torch

from .base import Algorithm, LocalResult, PersonalModels
from .sgd import batches

__all__ = ["Ditto", "full_batch_grad", "prox_step"]


def full_batch_grad(model, theta, data, wd=0.0):
    """Mean loss and gradient of f_t over all training samples (chunked), plus weight decay."""
    n, obj, grad = data.n_train, 0.0, torch.zeros_like(theta)
    with torch.enable_grad():
        for x, y in data.iter_train():
            o, g = model.objective_and_grad(theta, x, y)
            grad.add_(g, alpha=len(y) / n)
            obj += float(o) * len(y) / n
    if wd:
        grad.add_(theta, alpha=wd)
    return obj, grad


def prox_step(v, g, anchor, lr, lam):
    """v <- (v - lr g + lr lam anchor) / (1 + lr lam), in place."""
    c = lr * lam
    v.add_(g, alpha=-lr)
    if c:
        v.add_(anchor, alpha=c).div_(1.0 + c)


class Ditto(PersonalModels, Algorithm):
    name = "ditto"
    n_shared = 1

    def personal_config(self):
        k = int(self.params.personal_steps)
        return dataclasses.replace(self.cfg.train, local_steps=k) if k else self.cfg.train

    def n_steps(self, n: int) -> int:
        """Personal steps of a client with n samples (the count ``batches`` would yield)."""
        t = self.personal_config()
        return t.local_steps or t.local_epochs * -(-n // t.batch_size)

    def local_update(self, data, start, state, gen):
        theta = start.clone()
        loss = self.sgd(theta, data, gen)                      # the FedAvg part, unchanged
        cfg, lam = self.personal_config(), float(self.params.lam)
        lr = float(self.params.personal_lr) or self.lr
        v = state["v"].clone()
        buf = torch.zeros_like(v) if cfg.momentum > 0 else None
        for idx in batches(data.n_train, cfg, gen, v.device):
            x, y = data.train_batch(idx, gen)
            _, g = self.model.objective_and_grad(v, x, y)
            with torch.no_grad():
                if cfg.weight_decay:
                    g.add_(v, alpha=cfg.weight_decay)
                if buf is not None:
                    g = buf.mul_(cfg.momentum).add_(g)
                prox_step(v, g, start, lr, lam)
        self.check_personal(data.cid, v)
        state["v"].copy_(v)
        return LocalResult(theta, loss)

    def predict_proba(self, x, shared, state):
        return self.model.proba(state["v"], x)[0]

    def adapt(self, data, shared, state):
        lam, lr = float(self.params.lam), float(self.params.personal_lr) or self.lr
        v = shared.clone()
        for _ in range(self.n_steps(data.n_train)):
            _, g = full_batch_grad(self.model, v, data, self.cfg.train.weight_decay)
            prox_step(v, g, shared, lr, lam)
        state["v"].copy_(v)
