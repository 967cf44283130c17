"""Algorithm registry: the config's ``algorithm.name`` -> class."""

from __future__ import annotations

from .base import Algorithm, LocalResult
from .fedavg import FedAvg
from .fedem import FedEM
from .local import Local

__all__ = ["ALGORITHMS", "Algorithm", "LocalResult"]

ALGORITHMS: dict[str, type[Algorithm]] = {"fedem": FedEM, "fedavg": FedAvg, "local": Local}
