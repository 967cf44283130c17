"""Model registry: ``build_model(name, input_shape, n_classes)``."""

from __future__ import annotations

import math
from typing import Callable

from torch import nn

from .linear import LinearModel

__all__ = ["MODELS", "build_model"]

MODELS: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "linear": lambda shape, c: LinearModel(math.prod(shape), c),
}


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A fresh module (initialised from torch's current global RNG)."""
    return MODELS[name](input_shape, n_classes)
