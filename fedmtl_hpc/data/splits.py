"""From ``data.*`` keys to client index lists: fraction, partitioner, per-client split.

Every draw comes from a counter-based stream ``(seed, DATA, _TAG, stage)``
(fedmtl_hpc.rng), so each rank computes the same partition from the labels
alone, with no communication. Stages: 0 fraction subsample, 1 partitioner,
2 per-client train/test/val split, 3 FEMNIST's per-writer split. ``seed`` is ``data.seed``, or ``run.seed``
when that is -1.

Natural partitions (writers, roles) choose their users with
:func:`user_order`: a seeded BLAKE2 hash of each user name, so the choice
depends neither on the order of the files nor on reading all users' samples.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .. import rng
from ..config import DataConfig
from ..errors import ConfigError, DataError
from .base import balanced_block, contiguous_block
from .partition import (ClientSplit, dirichlet, fraction_subsample, iid, label_group_dirichlet, pachinko,
                        partition_digest, pathological, train_test_split)

__all__ = ["DEFAULT_PARTITION", "partition_kind", "partition_seed", "split_pool", "user_order", "digest",
           "share", "client_ids", "stream"]

# the paper's split per dataset (FedEM: CIFAR-10 / EMNIST label groups, CIFAR-100 Pachinko)
DEFAULT_PARTITION = {"cifar10": "label_group", "cifar100": "pachinko", "mnist": "label_group",
                     "fashion_mnist": "label_group", "emnist": "label_group", "femnist": "natural",
                     "shakespeare": "natural"}
_TAG = 0x5350  # "SP": keeps these streams apart from the synthetic generator's (seed, DATA, cid)
_TRIES = 100   # redraws of a Dirichlet split before giving up (partition.py)


def partition_kind(cfg: DataConfig) -> str:
    """``data.partition`` with ``auto`` resolved to the dataset's paper split."""
    return DEFAULT_PARTITION[cfg.name] if cfg.partition == "auto" else cfg.partition


def partition_seed(cfg: DataConfig, run_seed: int) -> int:
    return run_seed if cfg.seed < 0 else cfg.seed


def stream(seed: int, stage: int) -> np.random.Generator:
    """Stage ``stage`` of the partition stream (seed, DATA, _TAG, stage)."""
    return rng.np_stream(seed, rng.DATA, _TAG, stage)


def share(n: int, fraction: float) -> int:
    """Held-out count of a client with n samples (partition.train_test_split's rounding)."""
    return 0 if fraction == 0 else max(1, int(np.floor(n * fraction + 0.5)))


def client_ids(n_clients: int, n_unseen: int, rank: int, size: int, sizes=None) -> list[int]:
    """Ids this rank holds: its contiguous block of training clients, then of unseen ones, dealt as
    the engine deals them (``engine.deal``): balanced by ``sizes`` (train samples of every client,
    training then unseen) when given, else equal counts."""
    if sizes is None:
        block = contiguous_block(n_clients, size, rank)
        unseen = contiguous_block(n_unseen, size, rank)
    else:
        sizes = np.asarray(sizes, dtype=np.int64)
        block = balanced_block(sizes[:n_clients], size, rank)
        unseen = balanced_block(sizes[n_clients:n_clients + n_unseen], size, rank)
    return [*block, *(n_clients + u for u in unseen)]


def split_pool(cfg: DataConfig, seed: int, labels: np.ndarray, n_classes: int,
               coarse: np.ndarray | None = None) -> list[ClientSplit]:
    """Per-client (train, test, val) indices into ``labels [N]`` for ``n_clients + unseen_clients`` clients.

    labels: int64 ``[N]`` in ``[0, n_classes)`` of the pooled samples; coarse:
    CIFAR-100's coarse labels ``[N]`` (pachinko only). Raises DataError when the
    split cannot be made (too few samples, min_samples not reachable).
    """
    kind, n = partition_kind(cfg), cfg.n_clients + cfg.unseen_clients
    # a client needs one train and one test sample (and one val) before min_samples matters
    least = max(cfg.min_samples, 2 + (cfg.val_fraction > 0))
    keep = (np.arange(len(labels), dtype=np.int64) if cfg.fraction >= 1.0
            else fraction_subsample(len(labels), cfg.fraction, stream(seed, 0)))
    sub, g = labels[keep], stream(seed, 1)
    if kind == "iid":
        parts = iid(len(keep), n, g)
    elif kind == "dirichlet":
        parts = dirichlet(sub, n, cfg.partition_alpha, g, least, _TRIES)
    elif kind == "label_group":
        if cfg.n_groups > n_classes:
            raise ConfigError(f"data.n_groups must be <= the {n_classes} labels of {cfg.name}, got {cfg.n_groups}")
        parts = label_group_dirichlet(sub, n, cfg.n_groups or None, cfg.partition_alpha, g,
                                      least, _TRIES)
    elif kind == "pathological":
        parts = pathological(sub, n, g, cfg.shards_per_client)
    elif kind == "pachinko":
        sizes = [len(p) for p in np.array_split(np.arange(len(keep)), n)]  # equal sizes, as TFF / FedEM
        parts = pachinko(coarse[keep], sub, sizes, g, cfg.partition_alpha, cfg.pachinko_beta)
    else:
        raise ConfigError(f"data.partition {kind} does not apply to {cfg.name}")
    sizes = np.array([len(p) for p in parts])
    if sizes.min() < least:
        k = int(sizes.argmin())
        raise DataError(f"{kind} split of {len(keep)} {cfg.name} samples over {n} clients gives client {k} "
                        f"{sizes[k]} samples, fewer than data.min_samples={cfg.min_samples} or the {least} a "
                        f"train/test split needs; use fewer clients or a larger data.fraction")
    parts = [keep[p] for p in parts]
    return train_test_split(parts, stream(seed, 2), cfg.test_fraction, cfg.val_fraction, min_train=1)


def user_order(names: list[str], seed: int) -> list[int]:
    """Positions of ``names`` sorted by a seeded BLAKE2b-64 hash (ties: by name)."""
    def key(i: int) -> tuple[int, str]:
        h = hashlib.blake2b(names[i].encode("utf-8"), digest_size=8, key=str(seed).encode())
        return int.from_bytes(h.digest(), "little"), names[i]
    return sorted(range(len(names)), key=key)


def digest(splits: list[ClientSplit], *extra: np.ndarray) -> str:
    """partition_digest over every client's train, test and val lists, then ``extra`` integer arrays.

    Callers pass the pooled labels (image datasets) or user names and counts
    (natural ones), so a changed dataset is refused on resume, not only a
    changed split.
    """
    lists = [a for s in splits for a in (s.train, s.test, s.val)]
    return partition_digest([*lists, *(np.asarray(e).astype(np.int64).reshape(-1) for e in extra)])
