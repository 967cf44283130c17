"""Datasets: ``build_dataset(cfg)`` gives the engine a FederatedData for ``data.name``."""

from __future__ import annotations

from ..config import Config
from .base import ClientData, FederatedData, contiguous_block

__all__ = ["build_dataset", "ClientData", "FederatedData", "contiguous_block"]


def build_dataset(cfg: Config) -> FederatedData:
    """The dataset named by ``cfg.data.name`` (raises DataError / ConfigError on bad input)."""
    from .synthetic import SyntheticMixture
    return SyntheticMixture(cfg.data, cfg.run.seed)
