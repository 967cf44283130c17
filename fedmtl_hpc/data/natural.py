"""LEAF datasets with their natural clients: FEMNIST writers, Shakespeare roles.

Two passes over LEAF's JSON (``train/`` and, when present, ``test/``):

1. counts: every rank reads only the ``users`` / ``num_samples`` head of each
   file (leaf.read_counts), pools each user's train and test samples, keeps
   users with at least ``data.min_samples`` samples whose split leaves a train
   and a test sample, and takes the first ``n_clients + unseen_clients`` of
   them in seeded-hash order (splits.user_order): client k is the k-th. The
   choice does not depend on file order and needs no sample.
2. samples: a rank parses only the files holding its own clients and keeps
   only their samples (FEMNIST float32 ``[n, 1, 28, 28]``, as given by LEAF).

Shakespeare: a role's LEAF windows (train and test) are put back in text
order by matching each window's last 79 characters + target with the next
window's input, so the role's text is stored once (data/clients.py) and the
split is by position: train first, then val, then test, with the ``seq_len``
windows after each cut dropped so no held-out window sees a training target
(FedEM splits each role's lines the same way). FEMNIST splits each writer's
samples at random (data.test_fraction), as FedEM does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from .base import ClientData
from .clients import TextClientData
from .federated import HeldClients, missing_root, resolve_root
from .leaf import FEMNIST_CLASSES, SEQ_LEN, VOCAB_SIZE, femnist_user, file_users, leaf_files, read_counts, \
    shakespeare_user
from .partition import ClientSplit, train_test_split
from .splits import client_ids, digest, share, stream, user_order

__all__ = ["build_natural", "text_split", "chain_windows"]


def text_split(n: int, test_fraction: float, val_fraction: float, gap: int = SEQ_LEN) -> tuple[int, int, int]:
    """(train, val, test) window counts of a role with n windows in text order, ``gap`` dropped per cut."""
    cuts = 1 + (val_fraction > 0)
    avail = max(n - gap * cuts, 0)
    n_test, n_val = share(avail, test_fraction), share(avail, val_fraction)
    return max(avail - n_test - n_val, 0), n_val, n_test


def _sizes(cfg: DataConfig, n: int) -> tuple[int, int, int]:
    if cfg.name == "shakespeare":
        return text_split(n, cfg.test_fraction, cfg.val_fraction)
    n_test, n_val = share(n, cfg.test_fraction), share(n, cfg.val_fraction)
    return n - n_test - n_val, n_val, n_test


def _counts(cfg: DataConfig, root: Path) -> tuple[dict[str, list[int]], dict[str, set[Path]], list[Path]]:
    """Per user: [train-file samples, test-file samples], the files holding it, and all file sizes' paths."""
    counts: dict[str, list[int]] = {}
    where: dict[str, set[Path]] = {}
    paths = []
    for k, split in enumerate(("train", "test")):
        if split == "test" and not (root / "test").is_dir():
            continue  # LEAF run without a split: everything is in train/
        seen: dict[str, Path] = {}
        for path in leaf_files(root, split, cfg.name):
            paths.append(path)
            for user, c in zip(*read_counts(path)):
                if user in seen:
                    raise DataError(f"{path}: user '{user}' already read from {seen[user]}")
                seen[user] = path
                counts.setdefault(user, [0, 0])[k] = c
                where.setdefault(user, set()).add(path)
    return counts, where, paths


def chain_windows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Windows x uint8 ``[n, L]`` + targets y ``[n]`` -> (text codes uint8, window starts int64 ``[n]``).

    Window j links to window k when ``x_k == x_j[1:] + y_j`` (unique match);
    following the links from windows nobody links to gives text order. The
    returned starts are in that order, and ``codes[s:s+L], codes[s+L]``
    reproduces each window exactly, also where the chain breaks.
    """
    n, length = x.shape
    full = np.concatenate([x, y.astype(np.uint8)[:, None]], axis=1)            # [n, L+1]
    key = np.ascontiguousarray(full[:, :length]).view(f"V{length}").ravel()   # window input
    nxt = np.ascontiguousarray(full[:, 1:]).view(f"V{length}").ravel()        # input of its successor
    uniq, first, count = np.unique(key, return_index=True, return_counts=True)
    pos = np.minimum(np.searchsorted(uniq, nxt), len(uniq) - 1)
    succ = np.where((uniq[pos] == nxt) & (count[pos] == 1), first[pos], -1)
    succ[succ == np.arange(n)] = -1
    targets, hits = np.unique(succ[succ >= 0], return_counts=True)
    succ[np.isin(succ, targets[hits > 1])] = -1                                # two claim one successor
    has_pred = np.zeros(n, bool)
    has_pred[succ[succ >= 0]] = True
    order, seen = [], np.zeros(n, bool)
    for head in [*np.flatnonzero(~has_pred), *range(n)]:  # heads, then whatever a cycle left
        j = int(head)
        while j >= 0 and not seen[j]:
            seen[j] = True
            order.append(j)
            j = int(succ[j])
    order = np.asarray(order, dtype=np.int64)
    new = np.ones(n, bool)
    new[1:] = succ[order[:-1]] != order[1:]                                    # a segment starts here
    take = full[order]
    keep = new[:, None] | (np.arange(length + 1) == length)                    # whole window, or its target
    starts = np.cumsum(np.where(new, length + 1, 1)) - (length + 1)
    return np.ascontiguousarray(take[keep]), starts.astype(np.int64)


def _text_client(cfg: DataConfig, cid: int, x: np.ndarray, y: np.ndarray) -> tuple[ClientData, np.ndarray,
                                                                                       np.ndarray]:
    codes, starts = chain_windows(x, y)
    n_train, n_val, n_test = text_split(len(starts), cfg.test_fraction, cfg.val_fraction)
    val = starts[n_train + SEQ_LEN:n_train + SEQ_LEN + n_val]
    held = val if cfg.eval_split == "val" else starts[len(starts) - n_test:]
    train = starts[:n_train]
    t = torch.from_numpy
    data = TextClientData(cid, t(codes), t(train.copy()), t(held.copy()), SEQ_LEN)
    return data, codes[train + SEQ_LEN], codes[held + SEQ_LEN]


def _image_client(cid: int, split: ClientSplit, eval_split: str, x: np.ndarray,
                  y: np.ndarray) -> tuple[ClientData, np.ndarray, np.ndarray]:
    held = split.val if eval_split == "val" else split.test
    t = torch.from_numpy
    data = ClientData(cid, t(x[split.train]), t(y[split.train]), t(x[held]), t(y[held]))
    return data, y[split.train], y[held]


def build_natural(cfg: DataConfig, seed: int, rank: int = 0, size: int = 1, samples: bool = True) -> HeldClients:
    """FEMNIST or Shakespeare over its writers / roles; tensors only for this rank's clients."""
    root = resolve_root(cfg)
    missing_root(cfg, root)
    counts, where, paths = _counts(cfg, root)
    ok = sorted(u for u, c in counts.items() if sum(c) >= cfg.min_samples
                and _sizes(cfg, sum(c))[0] >= 1 and _sizes(cfg, sum(c))[2] >= 1)
    need = cfg.n_clients + cfg.unseen_clients
    if len(ok) < need:
        raise DataError(f"{root}: {len(ok)} of {len(counts)} {cfg.name} users have >= data.min_samples="
                        f"{cfg.min_samples} samples and a train/test split; data.n_clients + data.unseen_clients "
                        f"= {need} asks for more")
    users = [ok[i] for i in user_order(ok, seed)[:need]]
    totals = [sum(counts[u]) for u in users]
    # FEMNIST: random per-writer split; Shakespeare: positional (digest the cut sizes).
    if cfg.name == "femnist":
        splits = train_test_split([np.arange(n) for n in totals], stream(seed, 3), cfg.test_fraction,
                                  cfg.val_fraction)
        cuts = np.zeros(0, np.int64)
    else:
        splits = []
        cuts = np.array([_sizes(cfg, n) for n in totals], np.int64)
    names = np.frombuffer("\0".join(users).encode("utf-8"), np.uint8)
    sizes = np.array([p.stat().st_size for p in paths], np.int64)
    info = {"kind": f"{cfg.name}/natural", "seed": seed,
            "sha256": digest(splits, names, np.array([counts[u] for u in users]), cuts, sizes)}
    # deal by training samples (Shakespeare: the training cut of each role's text)
    train_n = (np.array([len(sp.train) for sp in splits], np.int64) if cfg.name == "femnist"
               else cuts.reshape(len(users), -1)[:, 0].astype(np.int64))
    held = {users[c]: c for c in client_ids(cfg.n_clients, cfg.unseen_clients, rank, size, train_n)}
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {u: [] for u in held}
    convert = femnist_user if cfg.name == "femnist" else shakespeare_user
    for split_dir in ("train", "test"):
        seen: dict[str, Path] = {}
        for path in (p for p in paths if p.parent.name == split_dir):
            if any(path in where[u] for u in held):
                for p, user, xs, ys in file_users(path, seen):
                    if user in parts:
                        x, y = convert(p, user, xs, ys)
                        parts[user].append((x if samples or cfg.name == "shakespeare" else x[:0], y))
    clients: dict[int, ClientData] = {}
    hist: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    n_classes = FEMNIST_CLASSES if cfg.name == "femnist" else VOCAB_SIZE
    for user, cid in held.items():
        x = np.concatenate([p[0] for p in parts[user]])
        y = np.concatenate([p[1] for p in parts[user]])
        if cfg.name == "femnist":
            sp = splits[cid]
            data, y_tr, y_te = (_image_client(cid, sp, cfg.eval_split, x, y) if samples else
                                (None, y[sp.train], y[sp.val if cfg.eval_split == "val" else sp.test]))
        else:
            data, y_tr, y_te = _text_client(cfg, cid, x, y)
        hist[cid] = (np.bincount(y_tr, minlength=n_classes), np.bincount(y_te, minlength=n_classes))
        if samples:
            clients[cid] = data
    shape = (1, 28, 28) if cfg.name == "femnist" else (SEQ_LEN,)
    return HeldClients(cfg, shape, n_classes, info, clients, hist, splits=splits or None, users=users,
                       sizes=train_n)
