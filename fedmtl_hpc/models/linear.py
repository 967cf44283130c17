"""Linear (multinomial logistic regression) model with a stacked fast path."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearModel"]

_W, _B = "linear.weight", "linear.bias"


class LinearModel(nn.Module):
    """logits = x W^T + b; parameters ``weight [C, d]`` and ``bias [C]`` ((d + 1) C in all)."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))

    @staticmethod
    def forward_stack(views: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """K models at once: one batched matmul, ``[K, B, C]``."""
        return torch.einsum("bd,kcd->kbc", x.flatten(1), views[_W]) + views[_B][:, None, :]

    @staticmethod
    def loss_grad_stack(views: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                        weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form gradient of ``(1/B) sum_i w_ki CE(z_ki, y_i)`` for every row k.

        Returns (objective summed over k (scalar), gradient ``[K, P]`` in layout order
        weight then bias). About 2x faster than autograd on the default workload.
        """
        x = x.flatten(1)
        k, b = views[_B].shape[0], x.shape[0]
        logp = torch.log_softmax(torch.einsum("bd,kcd->kbc", x, views[_W]) + views[_B][:, None, :], dim=-1)
        rows = torch.arange(b, device=x.device)
        loss = -logp[:, rows, y]                                      # [K, B]
        scale = (weights if weights is not None else torch.ones_like(loss)) / b
        dz = logp.exp_()
        dz[:, rows, y] -= 1.0
        dz.mul_(scale[..., None])                                     # dL/dz, [K, B, C]
        grad = torch.cat([torch.einsum("kbc,bd->kcd", dz, x).reshape(k, -1), dz.sum(1)], dim=1)
        return (loss * scale).sum(), grad
