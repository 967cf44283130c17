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
import colorsys

import numpy as np

__all__ = ["HELP", "add_arguments", "main", "label_counts", "draw"]

HELP = "print per-client sample counts and label histograms of a config's split (no training)"
_TEN = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


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


def _colour(label: int, n_classes: int) -> tuple[int, int, int]:
    if n_classes <= len(_TEN):
        return _TEN[label]
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.65, 0.9)  # golden-ratio hues stay apart
    return int(r * 255), int(g * 255), int(b * 255)


def draw(train: np.ndarray, path: str, height: int = 320) -> None:
    """One stacked bar per client: height = training samples, colour = label (plotpng.Canvas)."""
    from ..plotpng import Canvas
    n, c = train.shape
    bar = max(1, min(16, 1600 // max(n, 1)))
    gap = 1 if bar >= 4 else 0
    margin = 10
    canvas = Canvas(2 * margin + n * (bar + gap), height + 2 * margin)
    scale = height / max(int(train.sum(axis=1).max()), 1)
    for k in range(n):
        x0, y = margin + k * (bar + gap), float(height + margin)
        for label in range(c):
            h = train[k, label] * scale
            if h > 0:
                canvas.rect(x0, y - h, x0 + bar - 1, y, color=_colour(label, c))
                y -= h
    canvas.line(margin, height + margin, margin + n * (bar + gap), height + margin, color=(0, 0, 0))
    canvas.save(path)


def main(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data import build_dataset
    cfg = load_config(args.config, args.set)
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
        draw(train, args.png)
        print(f"wrote {args.png}")
    return 0
