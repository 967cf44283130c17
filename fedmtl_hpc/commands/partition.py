"""``fedmtl-hpc partition CONFIG.yaml [--set k=v] [--png FILE]``: show a split without training.

Builds the dataset exactly as ``fedmtl-hpc run`` does (same seed, same
partition, same digest), but only the labels: no sample becomes a tensor.
Prints one line per client (train and test sizes, its most frequent training
labels) and a summary; ``--png`` draws one stacked bar per client, the
height its number of training samples and each colour one label (label 0 at
the bottom), so label skew and size skew show at a glance.
"""

from __future__ import annotations

import argparse

import numpy as np

__all__ = ["HELP", "add_arguments", "main", "label_counts", "draw"]

HELP = "print per-client sample counts and label histograms of a config's split (no training)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (the data and run sections are used)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--png", metavar="FILE", help="also draw the label distribution across clients")
    parser.add_argument("--top", type=int, default=4, metavar="K", help="labels listed per client (default 4)")


def label_counts(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Train and test label counts int64 ``[clients, n_classes]`` of every client (unseen ones last)."""
    n = dataset.n_clients + dataset.n_unseen
    train = np.zeros((n, dataset.n_classes), np.int64)
    test = np.zeros_like(train)
    for cid in range(n):
        if hasattr(dataset, "hist"):  # real data: counted while building, no samples needed
            train[cid], test[cid] = dataset.hist[cid]
        else:  # the synthetic mixture generates a client on demand
            data = dataset.client(cid)
            train[cid] = np.bincount(data.y_train.numpy(), minlength=dataset.n_classes)
            test[cid] = np.bincount(data.y_test.numpy(), minlength=dataset.n_classes)
    return train, test


def _top(row: np.ndarray, k: int) -> str:
    nonzero = np.flatnonzero(row)
    order = nonzero[np.argsort(-row[nonzero], kind="stable")]
    text = " ".join(f"{c}:{row[c]}" for c in order[:k])
    return text + (f" (+{len(order) - k} labels)" if len(order) > k else "")


def draw(train: np.ndarray, path: str, n_unseen: int = 0, title: str = "") -> None:
    """One stacked bar per client: height = training samples, colour = label (matplotlib; see plotting.py)."""
    from ..plotting import partition_figure
    partition_figure(train, path, n_unseen=n_unseen, title=title)


def main(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data import build_dataset
    from ..errors import ConfigError
    cfg = load_config(args.config, args.set)
    if cfg.program != "federated":
        raise ConfigError(f"partition shows how a federated data set is split among clients; "
                          f"data.name {cfg.data.name} holds the tasks of a linear MTL solver (one task per "
                          f"group in its file or generator), got algorithm.name {cfg.algorithm.name}")
    if args.png:
        from ..plotting import pyplot
        pyplot()  # missing matplotlib: exit 2 before the data is read
    dataset = build_dataset(cfg, samples=False)
    train, test = label_counts(dataset)
    info = dataset.partition_info()
    print(f"{info['kind']}  seed {info['seed']}  sha256 {info['sha256']}")
    print(f"{dataset.n_clients} clients + {dataset.n_unseen} unseen, {dataset.n_classes} classes, "
          f"input {list(dataset.input_shape)}, eval split {cfg.data.eval_split}")
    print(f"{'client':>6} {'train':>7} {'test':>6}  labels (train: label:count)")
    users = getattr(dataset, "users", None)  # natural datasets: the writer / role behind each client
    for cid in range(len(train)):
        tag = "*" if cid >= dataset.n_clients else " "
        who = f"  [{users[cid]}]" if users else ""
        print(f"{cid:>5}{tag} {train[cid].sum():>7} {test[cid].sum():>6}  {_top(train[cid], args.top)}{who}")
    sizes, held = train.sum(axis=1), test.sum(axis=1)
    labels = (train > 0).sum(axis=1)
    print(f"train per client: min {sizes.min()}, median {int(np.median(sizes))}, max {sizes.max()}, "
          f"total {sizes.sum()}; test total {held.sum()}; labels per client: min {labels.min()}, "
          f"median {int(np.median(labels))}, max {labels.max()}" + ("  (* unseen)" if dataset.n_unseen else ""))
    if args.png:
        draw(train, args.png, n_unseen=dataset.n_unseen,
             title=f"{info['kind']}: {dataset.n_clients} clients, {dataset.n_classes} labels")
        print(f"wrote {args.png}")
    return 0
