"""ResNet-18 for 32x32 images (CIFAR stem) with GroupNorm instead of BatchNorm.

Reference: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016);
the CIFAR adaptation (3x3 stride-1 stem, no max-pool, stages 64-128-256-512 with
strides 1-2-2-2, 1x1 projection shortcuts) follows the widely used port
https://github.com/kuangliu/pytorch-cifar (``models/resnet.py``). FedEM
(omarfoq/FedEM ``models.py::get_resnet18``) uses torchvision's ImageNet
ResNet-18 with pretrained weights; we use no pretrained weights.

Normalisation: BatchNorm keeps running statistics (buffers that change in
training) and mixes samples of a batch, which breaks the flat-parameter,
``functional_call`` + ``vmap`` engine and is known to hurt under non-IID
federated data (Hsieh et al., ICML 2020). We use GroupNorm (Wu & He, ECCV 2018)
with the group rule of :func:`gn_groups`: the largest divisor ``G`` of the
channel count ``C`` with ``G <= 32`` and ``C / G >= 2``. For ResNet-18 every
channel count (64..512) gets Wu & He's default of 32 groups. GroupNorm has the
same affine parameters as BatchNorm (weight and bias per channel) and no
buffers, so parameter counts equal the BatchNorm model's.

Parameter counts (checked by ``tests/models/test_models.py``):
``11,168,832 + 513 * n_classes``, i.e. 11,173,962 for 10 classes and
11,220,132 for 100 classes.

Input ``[B, 3, 32, 32]`` float, output logits ``[B, n_classes]``. Any input side
divisible by 8 works (global average pooling). Initialisation: Kaiming-normal
(fan_out) convolutions, GroupNorm weight 1 / bias 0, default Linear, as in
torchvision; deterministic under ``torch.manual_seed``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResNet18", "BasicBlock", "gn_groups", "group_norm"]


def gn_groups(num_channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups for ``num_channels``.

    The largest divisor ``G`` of ``num_channels`` with ``G <= max_groups`` and at
    least two channels per group (one channel per group would be InstanceNorm).
    Examples: 16 -> 8, 24 -> 12, 32 -> 16, 64 -> 32, 144 -> 24, 1280 -> 32.
    """
    if num_channels < 2:
        raise ValueError(f"GroupNorm needs at least 2 channels, got {num_channels}")
    for groups in range(min(max_groups, num_channels // 2), 0, -1):
        if num_channels % groups == 0:
            return groups
    return 1  # unreachable: groups == 1 always divides


def group_norm(num_channels: int) -> nn.GroupNorm:
    """GroupNorm layer with :func:`gn_groups` groups and affine parameters."""
    return nn.GroupNorm(gn_groups(num_channels), num_channels)


class BasicBlock(nn.Module):
    """Two 3x3 conv-GN layers with an identity or 1x1 conv-GN projection shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.gn1 = group_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.gn2 = group_norm(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                group_norm(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block; out-of-place additions keep autograd and vmap happy."""
        out = F.relu(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18 with GroupNorm.

    Args:
        n_classes: number of output classes.
        in_channels: image channels (3 for CIFAR).
        zero_init_residual: start each block's last GroupNorm weight at 0 so every
            block begins as the identity (Goyal et al. 2017); off by default.
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 3, zero_init_residual: bool = False) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.n_classes = n_classes
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.gn1 = group_norm(64)
        self.layer1 = self._make_stage(64, 64, stride=1)
        self.layer2 = self._make_stage(64, 128, stride=2)
        self.layer3 = self._make_stage(128, 256, stride=2)
        self.layer4 = self._make_stage(256, 512, stride=2)
        self.fc = nn.Linear(512, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.gn2.weight)

    @staticmethod
    def _make_stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        """Two basic blocks; only the first one changes resolution / width."""
        return nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``[B, C, H, W]`` to logits ``[B, n_classes]``."""
        out = F.relu(self.gn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)
