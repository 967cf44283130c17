"""Per-sample losses a FlatModel evaluates on ``[K, B, C]`` outputs (pluggable by name).

``cross_entropy`` for classification (the federated algorithms), ``squared`` for
regression tasks (one output column: 1/2 (z - y)^2).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LOSSES", "CrossEntropy", "Squared"]


class CrossEntropy:
    name = "cross_entropy"

    @staticmethod
    def per_sample(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``z [K, B, C]`` logits, ``y [B]`` int64 labels -> ``[K, B]``."""
        k, b, c = z.shape
        return nn.functional.cross_entropy(z.reshape(k * b, c), y.repeat(k), reduction="none").view(k, b)

    @staticmethod
    def predict(z: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[K, B, C]``."""
        return torch.softmax(z, dim=-1)


class Squared:
    name = "squared"

    @staticmethod
    def per_sample(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``z [K, B, 1]`` outputs, ``y [B]`` real targets -> ``1/2 (z - y)^2``, ``[K, B]``."""
        return 0.5 * (z[..., 0] - y.to(z.dtype)) ** 2

    @staticmethod
    def predict(z: torch.Tensor) -> torch.Tensor:
        return z


LOSSES = {c.name: c for c in (CrossEntropy, Squared)}
