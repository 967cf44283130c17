"""MobileNetV2 for 32x32 images (CIFAR variant) with GroupNorm instead of BatchNorm.

Reference: Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks" (CVPR 2018). Block structure, channel rounding and initialisation
follow torchvision's ``mobilenet_v2``; FedEM (omarfoq/FedEM ``models.py::
get_mobilenet``) uses that ImageNet model with pretrained weights for CIFAR-10/100.
We use no pretrained weights and the common CIFAR adaptation
(https://github.com/kuangliu/pytorch-cifar ``models/mobilenetv2.py``): the stem
convolution has stride 1 instead of 2 and the second stage (24 channels) stride 1
instead of 2, so a 32x32 input reaches the last stage at 4x4 (overall stride 8
instead of 32). Differences from torchvision, all deliberate:

* GroupNorm instead of BatchNorm (no running-stat buffers; works with the flat
  parameter store, ``functional_call`` and ``vmap``). Groups per layer follow
  :func:`fedmtl_hpc.models.resnet.gn_groups`: the largest divisor ``G`` of the
  channel count with ``G <= 32`` and at least 2 channels per group, e.g.
  32 -> 16, 16 -> 8, 24 -> 12, 144 -> 24, 96/192/384/576/960/320/1280 -> 32.
* No dropout before the classifier: random ops under ``vmap`` need an explicit
  randomness mode, and the CIFAR ports do not use it either.

Parameter counts (weights and biases; identical to the BatchNorm model because
GroupNorm has the same affine parameters; checked by the tests), width_mult=1.0:
``2,223,872 + 1281 * n_classes``, i.e. 2,236,682 for 10 classes and 2,351,972
for 100 classes.

Input ``[B, 3, 32, 32]`` float, output logits ``[B, n_classes]`` (any side
divisible by 8 works: global average pooling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import group_norm

__all__ = ["MobileNetV2", "InvertedResidual"]

# (expansion t, output channels c, repeats n, first stride s); CIFAR strides.
_CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 in the ImageNet model
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (torchvision's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # never round down by more than 10 %
        rounded += divisor
    return rounded


def _conv_gn_relu6(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias, the norm has one) -> GroupNorm -> ReLU6."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
        group_norm(out_ch),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> linear project 1x1, residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_gn_relu6(in_ch, hidden, kernel=1))
        layers += [
            _conv_gn_relu6(hidden, hidden, kernel=3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            group_norm(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Out-of-place residual sum (no in-place ops on inputs under functional_call)."""
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2 with GroupNorm.

    Args:
        n_classes: number of output classes.
        width_mult: channel multiplier (channels rounded to multiples of 8).
        in_channels: image channels (3 for CIFAR).
    """

    def __init__(self, n_classes: int = 10, width_mult: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        self.n_classes = n_classes
        in_ch = _make_divisible(32 * width_mult)
        self.last_channels = _make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [_conv_gn_relu6(in_channels, in_ch, kernel=3, stride=1)]
        for t, c, n, s in _CIFAR_SETTINGS:
            out_ch = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        layers.append(_conv_gn_relu6(in_ch, self.last_channels, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(self.last_channels, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``[B, C, H, W]`` to logits ``[B, n_classes]``."""
        out = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(out)
