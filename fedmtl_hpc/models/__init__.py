"""Model registry: ``build_model(name, input_shape, n_classes)``.

The dataset gives the input shape and class count (data/); each entry checks
that its architecture fits them, so a mismatch is a one-line ConfigError
rather than a shape error deep in the first forward pass.

==============  ==========================  ========================================
name            input                       module
==============  ==========================  ========================================
linear          any float shape (flattened)  LinearModel (multinomial logistic)
femnist_cnn     [1, 28, 28]                 FemnistCNN (LEAF / FedEM)
cifar_cnn       [3, 32, 32]                 CIFAR10CNN (FedEM)
mobilenet_v2    [C, H, W], H, W % 8 == 0     MobileNetV2, GroupNorm, CIFAR strides
resnet18        [C, H, W], H, W % 8 == 0     ResNet18, GroupNorm, CIFAR stem
lstm            [80] token ids               NextCharacterLSTM (2 x 256, fused nn.LSTM)
==============  ==========================  ========================================
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError
from .cnn import CIFAR10CNN, FemnistCNN
from .linear import LinearModel
from .lstm import NextCharacterLSTM
from .mobilenet import MobileNetV2
from .resnet import ResNet18

__all__ = ["MODELS", "build_model", "Looped"]


class Looped:
    """FlatModel's fast-path hook for image models: the K components one after another.

    Without ``forward_stack`` FlatModel runs ``vmap(functional_call)``; on CPU
    (torch 2.13) that made MobileNetV2 training steps 2.2x and the CIFAR CNN
    1.5x slower than this loop (bench/data.py): batched-weight convolutions
    leave the fast mkldnn path and GroupNorm's affine part is decomposed into
    separate multiply/add kernels. A convolution already batches B images, so
    looping over K costs nothing comparable.
    """

    def forward_stack(self, views, x):
        """``views``: name -> ``[K, *shape]``; x ``[B, ...]`` -> logits ``[K, B, C]``."""
        # unbind, not v[i]: its backward stacks the K gradients once, where each v[i]
        # would allocate and zero a full [K, *shape] gradient (SelectBackward)
        rows = {n: v.unbind(0) for n, v in views.items()}
        k = len(next(iter(rows.values())))
        return torch.stack([functional_call(self, {n: r[i] for n, r in rows.items()}, (x,)) for i in range(k)])


class _FemnistCNN(Looped, FemnistCNN):
    pass


class _CIFAR10CNN(Looped, CIFAR10CNN):
    pass


class _MobileNetV2(Looped, MobileNetV2):
    pass


class _ResNet18(Looped, ResNet18):
    pass


def _need(name: str, shape: tuple[int, ...], ok: bool, what: str) -> None:
    if not ok:
        raise ConfigError(f"model.name {name} needs {what} inputs, the dataset gives shape {list(shape)}")


def _images(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[1] % 8 == 0 and shape[2] % 8 == 0


def _femnist(shape, c):
    _need("femnist_cnn", shape, tuple(shape) == (1, 28, 28), "[1, 28, 28]")
    return _FemnistCNN(c)


def _cifar(shape, c):
    _need("cifar_cnn", shape, tuple(shape) == (3, 32, 32), "[3, 32, 32]")
    return _CIFAR10CNN(c)


def _mobilenet(shape, c):
    _need("mobilenet_v2", shape, _images(shape), "[C, H, W] image (H, W multiples of 8)")
    return _MobileNetV2(c, in_channels=shape[0])


def _resnet(shape, c):
    _need("resnet18", shape, _images(shape), "[C, H, W] image (H, W multiples of 8)")
    return _ResNet18(c, in_channels=shape[0])


def _lstm(shape, c):
    _need("lstm", shape, len(shape) == 1, "[seq_len] token-id")
    # The fused nn.LSTM path: FlatModel calls forward_stack, which loops over the
    # K components (vmap has no batching rule for aten::lstm; models/lstm.py).
    return NextCharacterLSTM(vocab_size=c, n_classes=c)


MODELS: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "linear": lambda shape, c: LinearModel(math.prod(shape), c),
    "femnist_cnn": _femnist,
    "cifar_cnn": _cifar,
    "mobilenet_v2": _mobilenet,
    "resnet18": _resnet,
    "lstm": _lstm,
}


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A fresh module (initialised from torch's current global RNG)."""
    if name not in MODELS:
        raise ConfigError(f"model.name must be one of {' | '.join(MODELS)}, got {name}")
    return MODELS[name](tuple(input_shape), n_classes)
