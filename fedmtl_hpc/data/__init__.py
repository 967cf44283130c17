"""Datasets: ``build_dataset(cfg)`` gives the engine a FederatedData for ``data.name``.

synthetic: the FedEM mixture (synthetic.py); cifar10, cifar100, mnist,
fashion_mnist, emnist: released files pooled and partitioned (images.py);
femnist, shakespeare: LEAF's writers / roles as clients (natural.py).
"""

from __future__ import annotations

from ..config import Config
from .base import ClientData, FederatedData, contiguous_block

__all__ = ["build_dataset", "ClientData", "FederatedData", "contiguous_block"]


def build_dataset(cfg: Config, rank: int = 0, size: int = 1, samples: bool = True) -> FederatedData:
    """The dataset named by ``cfg.data.name`` (raises DataError / ConfigError on bad input).

    rank, size: real datasets materialise only the clients that rank holds in
    the engine's contiguous blocks (every client when size is 1); the
    partition itself is computed whole, identically, on every rank.
    samples: False builds the partition and per-client label counts only
    (``fedmtl-hpc partition``). The synthetic mixture generates any client
    on demand and ignores all three.
    """
    if cfg.data.name == "synthetic":
        from .synthetic import SyntheticMixture
        return SyntheticMixture(cfg.data, cfg.run.seed)
    from .splits import partition_seed
    seed = partition_seed(cfg.data, cfg.run.seed)
    if cfg.data.name in ("femnist", "shakespeare"):
        from .natural import build_natural
        return build_natural(cfg.data, seed, rank, size, samples)
    from .images import build_images
    return build_images(cfg.data, seed, rank, size, samples)
