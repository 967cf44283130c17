"""Local SGD on a flat ``[K, P]`` stack: the M-step of FedEM, the local step of FedAvg.

All K rows train at once on the same minibatches: row k minimises
``(1/B) sum_i w_ki l(theta_k; x_i, y_i)``; the rows are independent, so the
gradient of the summed objective w.r.t. the stack is each row's gradient.
Semantics follow torch.optim.SGD (dampening 0, no Nesterov); momentum
buffers live for one call (one local round), so there is no optimizer state
to carry between rounds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import torch

from ..data.base import ClientData
from ..params import FlatModel

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["batches", "local_sgd"]


def batches(n: int, cfg: TrainConfig, gen: torch.Generator, device) -> Iterator[torch.Tensor]:
    """Index batches: ``local_epochs`` reshuffled passes, or exactly ``local_steps`` batches."""
    steps = 0
    if n == 0:
        return  # a client without training samples takes no step (and must not loop forever)
    while True:
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, cfg.batch_size):
            yield perm[i:i + cfg.batch_size]
            steps += 1
            if cfg.local_steps and steps == cfg.local_steps:
                return
        if not cfg.local_steps and steps >= cfg.local_epochs * -(-n // cfg.batch_size):
            return


def local_sgd(model: FlatModel, theta: torch.Tensor, data: ClientData,
              cfg: TrainConfig, gen: torch.Generator, weights: torch.Tensor | None = None,
              extra_grad: Callable[[torch.Tensor], torch.Tensor] | None = None,
              lr: float | None = None) -> float:
    """Train ``theta [K, P]`` in place; returns the mean minibatch objective.

    weights: ``[K, n]`` per-sample weights (None: all ones).
    extra_grad: optional ``theta -> [K, P]`` gradient of a regulariser
    (proximal terms of FedProx / Ditto plug in here).
    lr: step size (None: ``cfg.lr``; algorithms pass the round's scheduled lr).
    """
    lr = cfg.lr if lr is None else lr
    buf = torch.zeros_like(theta) if cfg.momentum > 0 else None
    total, count = 0.0, 0
    for idx in batches(data.n_train, cfg, gen, theta.device):
        x, y = data.train_batch(idx, gen)
        obj, grad = model.objective_and_grad(theta, x, y, None if weights is None else weights[:, idx])
        with torch.no_grad():
            if cfg.weight_decay:
                grad.add_(theta, alpha=cfg.weight_decay)
            if extra_grad is not None:
                grad.add_(extra_grad(theta))
            if buf is not None:
                grad = buf.mul_(cfg.momentum).add_(grad)
            theta.add_(grad, alpha=-lr)
        total += float(obj.detach())
        count += 1
    return total / max(count, 1)
