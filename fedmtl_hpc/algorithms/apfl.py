"""APFL (Deng, Kamani, Mahdavi 2020, "Adaptive Personalized Federated Learning", Alg. 1 with
its adaptive alpha update).

Client t keeps a personal model v_t and a mixing weight alpha_t in [0, 1]; its personalized
model is the parameter mix  v_bar = alpha_t v_t + (1 - alpha_t) w. On each local minibatch xi,
all gradients taken at the values before the step:

    w       <- w - lr grad f_t(w; xi)                                   (the FedAvg step)
    v_t     <- v_t - lr grad_v f_t(v_bar; xi) = v_t - lr alpha_t g,     g = grad f_t(v_bar; xi)
    alpha_t <- clip(alpha_t - alpha_lr <v_t - w, g>, 0, 1)              (learn_alpha only)

train.weight_decay is part of f_t (added to both gradients at their own point), train.momentum
applies to w and v_t separately (buffers restart every round), not to alpha_t. The server
averages w as FedAvg. A client predicts with softmax(v_bar) built from the CURRENT global
model: alpha_t v_t + (1 - alpha_t) theta. The reported training loss is the mean minibatch
loss at v_bar. With alpha = 0 and learn_alpha false, w follows FedAvg exactly.

Per client (checkpoint ``/clients/state/v`` [N, 1, P], ``/clients/state/alpha`` [N, 1]):
v starts as the initial global model (the same on every rank), alpha as ``apfl.alpha``.
Unseen clients: v = the global model, alpha = ``apfl.alpha`` (they predict with the global model).
"""

from __future__ import annotations

import math

import torch

from .base import Algorithm, LocalResult, PersonalModels
from .sgd import batches

__all__ = ["APFL", "apfl_step"]


def apfl_step(model, w, v, alpha, x, y, lr, alpha_lr, learn_alpha, wd=0.0, bufs=None, momentum=0.0):
    """One APFL step on a minibatch, in place on ``w``, ``v`` ([1, P]) and ``alpha`` ([1]).

    Returns the loss at the mixed point (a 0-d tensor).
    """
    a = float(alpha[0])
    mixed = a * v + (1.0 - a) * w
    _, gw = model.objective_and_grad(w, x, y)
    obj, g = model.objective_and_grad(mixed, x, y)
    with torch.no_grad():
        if wd:
            gw.add_(w, alpha=wd)
            g.add_(mixed, alpha=wd)
        d_alpha = float((v - w).mul(g).sum()) if learn_alpha else 0.0
        gv = g.mul(a)
        if bufs is not None:
            gw = bufs[0].mul_(momentum).add_(gw)
            gv = bufs[1].mul_(momentum).add_(gv)
        w.add_(gw, alpha=-lr)
        v.add_(gv, alpha=-lr)
        if learn_alpha:
            new = a - alpha_lr * d_alpha          # NaN stays NaN (and is reported), +-Inf clips
            alpha.fill_(new if math.isnan(new) else min(1.0, max(0.0, new)))
    return obj.detach()


class APFL(PersonalModels, Algorithm):
    name = "apfl"
    n_shared = 1

    def state_shapes(self):
        return {**super().state_shapes(), "alpha": (1,)}

    def init_state(self, cid):
        return {**super().init_state(cid), "alpha": torch.full((1,), float(self.params.alpha), device=self.device)}

    def local_update(self, data, start, state, gen):
        cfg, p = self.cfg.train, self.params
        w, v, alpha = start.clone(), state["v"].clone(), state["alpha"].clone()
        alpha_lr = float(p.alpha_lr) or self.lr
        bufs = (torch.zeros_like(w), torch.zeros_like(v)) if cfg.momentum > 0 else None
        total, count = 0.0, 0
        for idx in batches(data.n_train, cfg, gen, w.device):
            x, y = data.train_batch(idx, gen)
            total += float(apfl_step(self.model, w, v, alpha, x, y, self.lr, alpha_lr, bool(p.learn_alpha),
                                     cfg.weight_decay, bufs, cfg.momentum))
            count += 1
        self.check_personal(data.cid, v, alpha)
        state["v"].copy_(v)
        state["alpha"].copy_(alpha)
        return LocalResult(w, total / max(count, 1))

    def mixed(self, shared, state):
        a = float(state["alpha"][0])
        return a * state["v"] + (1.0 - a) * shared

    def predict_proba(self, x, shared, state):
        return self.model.proba(self.mixed(shared, state), x)[0]

    def adapt(self, data, shared, state):
        state["v"].copy_(shared)
        state["alpha"].fill_(float(self.params.alpha))
