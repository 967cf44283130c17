"""The FederatedData of a real dataset, and where its files are found.

A rank holds only its own clients (the contiguous blocks of ``engine.py``):
the builders (images.py, natural.py) compute the whole partition from labels
or counts, identically on every rank, then turn only the held clients'
samples into tensors and drop the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .base import ClientData
from .idx import FASHION_MNIST_DEBIAN_DIR

__all__ = ["DATA_ENV", "DATA_DIRS", "resolve_root", "missing_root", "HeldClients"]

DATA_ENV = "FEDMTL_DATA"
# sub-folder of $FEDMTL_DATA per dataset ("": the CIFAR readers find their released folder below it)
DATA_DIRS = {"cifar10": "", "cifar100": "", "mnist": "mnist", "fashion_mnist": "fashion_mnist",
             "emnist": "emnist", "femnist": "femnist", "shakespeare": "shakespeare"}
_WHERE = {
    "cifar10": "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it there",
    "cifar100": "download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and extract it there",
    "mnist": "put the four *-ubyte.gz files of https://ossci-datasets.s3.amazonaws.com/mnist/ there",
    "fashion_mnist": ("apt-get install dataset-fashion-mnist (installs /usr/share/datasets/fashion-mnist) "
                      "or put the four files of https://github.com/zalandoresearch/fashion-mnist there"),
    "emnist": "unzip https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip there",
    "femnist": "generate it with LEAF (https://github.com/TalwalkarLab/leaf, data/femnist) and use its data/ folder",
    "shakespeare": ("generate it with LEAF (https://github.com/TalwalkarLab/leaf, data/shakespeare) and use its "
                    "data/ folder"),
}


def resolve_root(cfg: DataConfig) -> Path:
    """data.root, else $FEDMTL_DATA/<DATA_DIRS[name]>, else (fashion_mnist) Debian's folder."""
    if cfg.root:
        return Path(cfg.root).expanduser()
    env = os.environ.get(DATA_ENV, "")
    debian = cfg.name == "fashion_mnist" and FASHION_MNIST_DEBIAN_DIR.is_dir()
    if env:
        path = Path(env).expanduser() / DATA_DIRS[cfg.name]
        return FASHION_MNIST_DEBIAN_DIR if debian and not path.is_dir() else path
    if debian:
        return FASHION_MNIST_DEBIAN_DIR
    raise DataError(f"no folder holds {cfg.name}: data.root and ${DATA_ENV} are both unset; set data.root "
                    f"(or ${DATA_ENV}, read as ${DATA_ENV}/{DATA_DIRS[cfg.name] or '.'}) and {_WHERE[cfg.name]}")


def missing_root(cfg: DataConfig, root: Path) -> None:
    """DataError naming the folder and where to get the dataset, if ``root`` does not exist."""
    if not root.is_dir():
        raise DataError(f"dataset root {root} (data.root or ${DATA_ENV}) does not exist; {_WHERE[cfg.name]}")


class HeldClients:
    """FederatedData holding only this rank's clients.

    clients: cid -> ClientData for the held clients (empty when built without
    samples, e.g. by ``fedmtl-hpc partition``); hist: cid -> (train, test)
    label counts int64 ``[n_classes]`` of the held clients; info: the
    partition's {kind, seed, sha256}; splits: every client's (train, test,
    val) indices into the pooled samples (image datasets) or into its user's
    samples (FEMNIST), None for Shakespeare (split by position); users: client
    k's writer / role name (natural datasets), else None.
    """

    def __init__(self, cfg: DataConfig, input_shape: tuple[int, ...], n_classes: int, info: dict,
                 clients: dict[int, ClientData], hist: dict[int, tuple[np.ndarray, np.ndarray]],
                 splits: list | None = None, users: list[str] | None = None, sizes=None):
        self.name = cfg.name
        self.n_clients, self.n_unseen = cfg.n_clients, cfg.unseen_clients
        self.input_shape, self.n_classes = tuple(input_shape), int(n_classes)
        self.info, self.clients, self.hist = dict(info), clients, hist
        self.splits, self.users = splits, users
        self._sizes = None if sizes is None else np.asarray(sizes, dtype=np.int64)

    def train_sizes(self):
        """Training samples of every client (training then unseen), known from the partition; the
        engine deals clients to ranks by them (``splits.client_ids`` used the same)."""
        return self._sizes

    def client(self, cid: int) -> ClientData:
        if cid not in self.clients:
            held = sorted(self.clients)
            what = f"clients {held[0]}..{held[-1]}" if held else "no samples (built for counts only)"
            raise DataError(f"{self.name}: client {cid} is not held here (this rank holds {what})")
        return self.clients[cid]

    def partition_info(self) -> dict:
        return dict(self.info)
