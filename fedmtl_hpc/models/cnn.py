"""Small CNNs of the LEAF / FedEM benchmarks (FEMNIST / EMNIST and CIFAR-10).

Reference: Caldas et al., "LEAF: A Benchmark for Federated Settings" (2018),
https://github.com/TalwalkarLab/leaf (``models/femnist/cnn.py``), and
Marfoq et al., "Federated Multi-Task Learning under a Mixture of Distributions"
(NeurIPS 2021), https://github.com/omarfoq/FedEM (``models.py``: ``FemnistCNN``,
``CIFAR10CNN``). Layer sizes mirror FedEM exactly: 5x5 convolutions without
padding ("valid"; LEAF uses "same"), each followed by ReLU and 2x2 max-pooling,
then a 2048-unit dense layer and the output layer.

Parameter counts (weights + biases, checked by ``tests/models/test_models.py``):

=====================  ==========  ============
model                  n_classes   parameters
=====================  ==========  ============
FemnistCNN (1x28x28)   62          2,278,334
FemnistCNN (1x28x28)   10          2,171,786
CIFAR10CNN (3x32x32)   10          3,353,034
CIFAR10CNN (3x32x32)   100         3,537,444
=====================  ==========  ============

General form: ``conv1 + conv2 + fc1 + 2049 * n_classes`` with
FemnistCNN = 832 + 51,264 + 2,099,200 and CIFAR10CNN = 2,432 + 51,264 + 3,278,848.

Both models have no buffers, no dropout and no data-dependent control flow, so
they run under ``torch.func.functional_call`` and ``torch.func.vmap`` over a
stack of parameter vectors. Initialisation is PyTorch's default (as in FedEM),
deterministic under ``torch.manual_seed``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FemnistCNN", "CIFAR10CNN"]


class _TwoConvCNN(nn.Module):
    """conv5x5 -> ReLU -> maxpool2 -> conv5x5 -> ReLU -> maxpool2 -> dense -> out."""

    def __init__(self, in_channels: int, image_size: int, n_classes: int, hidden: int = 2048) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.n_classes = n_classes
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5)
        # Spatial size after two (valid conv 5x5, pool 2) stages: 28 -> 4, 32 -> 5.
        side = ((image_size - 4) // 2 - 4) // 2
        self.flat_features = 64 * side * side
        self.fc1 = nn.Linear(self.flat_features, hidden)
        self.output = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``[B, C, H, W]`` or flat ``[B, C*H*W]`` (float) to logits ``[B, n_classes]``."""
        if x.dim() == 2:  # LEAF stores FEMNIST images as 784 floats per sample
            x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        # flatten(1) rather than view(-1, k): keeps the batch dimension explicit,
        # which is what vmap and non-contiguous inputs need.
        x = F.relu(self.fc1(x.flatten(1)))
        return self.output(x)


class FemnistCNN(_TwoConvCNN):
    """LEAF/FedEM FEMNIST CNN: input ``[B, 1, 28, 28]`` (or flat ``[B, 784]``), output ``[B, n_classes]``.

    Args:
        n_classes: number of output classes (62 for FEMNIST / EMNIST byclass).
    """

    def __init__(self, n_classes: int = 62) -> None:
        super().__init__(in_channels=1, image_size=28, n_classes=n_classes)


class CIFAR10CNN(_TwoConvCNN):
    """FedEM's small CIFAR CNN: input ``[B, 3, 32, 32]``, output logits ``[B, n_classes]``.

    Args:
        n_classes: number of output classes (10 for CIFAR-10, 100 for CIFAR-100).
    """

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__(in_channels=3, image_size=32, n_classes=n_classes)
