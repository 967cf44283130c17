"""Linear (multinomial logistic regression) model with a stacked fast path."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearModel"]


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
        w, b = views["linear.weight"], views["linear.bias"]
        return torch.einsum("bd,kcd->kbc", x.flatten(1), w) + b[:, None, :]
