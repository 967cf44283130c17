"""Image datasets (CIFAR-10/100, MNIST, Fashion-MNIST, EMNIST) split over clients.

As in FedEM's generate_data.py, the released train and test files are pooled
(CIFAR-10: 60,000 images) and the pool is partitioned; each client's share is
then split into its own train / test (/ val) samples (data.test_fraction).

Memory, per rank: the partition needs only the labels, and a rank keeps only
its held clients' samples, as normalised float32 ``[n, C, H, W]`` tensors
(CIFAR-10, 80 clients on 8 ranks: ~7,500 images, 48-120 MB a rank). CIFAR is
read one file at a time, twice: labels first (each file's images dropped at
once), then each file again to copy out the held rows, so at most one file's
images (30 MB; CIFAR-100's train file 150 MB) are in memory besides the held
ones. IDX files are single gzip streams: the reader holds a split's whole
array (EMNIST byclass train: 547 MB, plus the reader's decompression copy)
until the held rows are copied. The pool is never concatenated. Images are
kept float32 (not uint8 converted per batch) so ``x_train`` is what the model
eats and a batch costs one index; bench/data.py prints the peaks.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..config import DataConfig
from ..models.augment import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from .base import ClientData
from .cifar import cifar_files, read_cifar_file
from .clients import AugmentedClientData
from .federated import HeldClients, missing_root, resolve_root
from .idx import EMNIST_CLASSES, load_emnist, load_fashion_mnist, load_mnist
from .splits import client_ids, digest, partition_kind, split_pool

__all__ = ["IMAGE_DATASETS", "NORMALISATION", "build_images", "image_shape", "image_classes"]

IMAGE_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "emnist")
# per-channel (mean, std) of the training pixels in [0, 1]; EMNIST uses MNIST's, as FedEM does
NORMALISATION = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
                 "mnist": ((0.1307,), (0.3081,)), "fashion_mnist": ((0.2860,), (0.3530,)),
                 "emnist": ((0.1307,), (0.3081,))}


def image_shape(name: str) -> tuple[int, int, int]:
    return (3, 32, 32) if name.startswith("cifar") else (1, 28, 28)


def image_classes(cfg: DataConfig) -> int:
    return {"cifar10": 10, "cifar100": 100, "mnist": 10, "fashion_mnist": 10}.get(
        cfg.name) or EMNIST_CLASSES[cfg.emnist_split]


def _pool(cfg: DataConfig) -> tuple[list[Callable[[], np.ndarray]], list[int], np.ndarray, np.ndarray | None, bool]:
    """(image parts, their sizes, pooled labels int64 [N], coarse labels or None, images stored transposed?).

    A part is a callable returning one released file's uint8 images; parts
    concatenate (train files, then test files) to the pool. CIFAR parts re-read
    their file when called, so only one file's images are ever in memory
    (labels come from a first pass that drops each file's images at once);
    IDX parts hand out the arrays the readers returned.
    """
    root = resolve_root(cfg)
    missing_root(cfg, root)
    if cfg.name.startswith("cifar"):
        files = cifar_files(root, cfg.name, cfg.verify)
        read = [read_cifar_file(f, cfg.name)[1:] for f in files]  # labels, coarse; images dropped
        coarse = None if read[0][1] is None else np.concatenate([r[1] for r in read])
        parts = [lambda f=f: read_cifar_file(f, cfg.name)[0] for f in files]
        return parts, [len(r[0]) for r in read], np.concatenate([r[0] for r in read]), coarse, False
    if cfg.name == "emnist":  # transposed as stored: only the kept images are turned upright
        arrays = [load_emnist(root, cfg.emnist_split, train, upright=False) for train in (True, False)]
    else:
        load = load_mnist if cfg.name == "mnist" else load_fashion_mnist
        arrays = [load(root, train) for train in (True, False)]
    parts = [lambda a=a: a[0] for a in arrays]
    return parts, [len(a[1]) for a in arrays], np.concatenate([a[1] for a in arrays]), None, cfg.name == "emnist"


def _gather(parts: Sequence[Callable[[], np.ndarray]], wanted: dict, sizes: Sequence[int]) -> dict:
    """key -> rows ``wanted[key]`` (sorted pooled indices) of the pool, reading each part once."""
    out = {}
    start = 0
    for part, n in zip(parts, sizes):
        images = part()
        for key, idx in wanted.items():
            if key not in out:
                out[key] = np.empty((len(idx), *images.shape[1:]), images.dtype)
            sel = (idx >= start) & (idx < start + n)
            out[key][sel] = images[idx[sel] - start]
        start += n
        del images  # CIFAR: the file's images go before the next file is read
    return out


def _tensor(images: np.ndarray, shape: tuple[int, ...], mean: torch.Tensor, std: torch.Tensor,
            transposed: bool) -> torch.Tensor:
    """uint8 images -> normalised float32 ``[n, *shape]``."""
    if transposed:
        images = images.transpose(0, 2, 1)
    x = torch.from_numpy(np.ascontiguousarray(images)).reshape(len(images), *shape)
    return x.to(torch.float32).div_(255.0).sub_(mean).div_(std)


def build_images(cfg: DataConfig, seed: int, rank: int = 0, size: int = 1, samples: bool = True) -> HeldClients:
    """The partitioned image dataset; tensors only for this rank's clients (none if not ``samples``)."""
    parts, part_sizes, labels, coarse, transposed = _pool(cfg)
    n_classes, shape = image_classes(cfg), image_shape(cfg.name)
    splits = split_pool(cfg, seed, labels, n_classes, coarse)
    info = {"kind": f"{cfg.name}/{partition_kind(cfg)}", "seed": seed, "sha256": digest(splits, labels)}
    m, s = NORMALISATION[cfg.name]
    mean, std = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in (m, s))
    sizes = np.array([len(sp.train) for sp in splits], dtype=np.int64)   # deal by training samples
    held = client_ids(cfg.n_clients, cfg.unseen_clients, rank, size, sizes)
    tests = {cid: splits[cid].val if cfg.eval_split == "val" else splits[cid].test for cid in held}
    hist = {cid: (np.bincount(labels[splits[cid].train], minlength=n_classes),
                  np.bincount(labels[tests[cid]], minlength=n_classes)) for cid in held}
    clients: dict[int, ClientData] = {}
    if samples:
        wanted = {**{(cid, 0): splits[cid].train for cid in held}, **{(cid, 1): tests[cid] for cid in held}}
        got = _gather(parts, wanted, part_sizes)
        for cid in held:
            x_train = _tensor(got.pop((cid, 0)), shape, mean, std, transposed)
            x_test = _tensor(got.pop((cid, 1)), shape, mean, std, transposed)
            xy = [x_train, torch.from_numpy(labels[splits[cid].train]), x_test, torch.from_numpy(labels[tests[cid]])]
            clients[cid] = (AugmentedClientData(cid, *xy, black=-mean / std) if cfg.augment
                            else ClientData(cid, *xy))
    return HeldClients(cfg, shape, n_classes, info, clients, hist, splits=splits, sizes=sizes)
