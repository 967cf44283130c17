"""Tasks for the linear MTL solvers: synthetic generators (the truth kept), the user's HDF5 file, Fashion-MNIST.

Tasks are dealt to ranks in contiguous blocks (``task_block``); a rank materialises only its own
tasks. ``task_meta`` reads names and shapes only (no samples): it runs on every rank before any
collective, so a bad file ends every rank identically with exit 2 and one line.

mtl_h5 layout: ``/tasks/<name>/X`` float32/float64 [n_t, d], ``/tasks/<name>/y`` [n_t] (real for squared
loss; {-1, +1} or {0, 1} for logistic), optional ``X_test`` [m_t, d] and ``y_test`` [m_t]; tasks in
sorted name order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

__all__ = ["TaskMeta", "TaskSet", "task_block", "task_meta", "load_tasks", "stream"]

# purpose codes of the MTL random streams (SeedSequence([seed, purpose, *keys]), as rng.py; never renumber)
TRUTH, TASK_DATA, TASK_SPLIT = 21, 22, 23


def stream(seed: int, purpose: int, *keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(purpose), *map(int, keys)])))


def task_block(n_tasks: int, size: int, rank: int) -> range:
    """Task ids of ``rank`` when n_tasks are dealt to ``size`` ranks in contiguous blocks."""
    return range(rank * n_tasks // size, (rank + 1) * n_tasks // size)


@dataclass
class TaskMeta:
    """What every rank knows about all tasks without reading samples."""

    names: list[str]
    d: int
    n_train: list[int]
    n_test: list[int]
    kind: str

    @property
    def T(self) -> int:
        return len(self.names)

    def digest(self, extra: dict) -> str:
        blob = json.dumps({"names": self.names, "d": self.d, "n": self.n_train, "m": self.n_test,
                           "kind": self.kind, **extra}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class TaskSet:
    """The meta of all tasks plus this rank's tasks' samples (float64) and the truth when synthetic."""

    meta: TaskMeta
    own: range
    X: list = field(default_factory=list)
    y: list = field(default_factory=list)
    X_test: list = field(default_factory=list)
    y_test: list = field(default_factory=list)
    truth: dict | None = None      # {"W": [T, d] task-major, "clusters": [T] | None, "structure": str}


# -- meta (no samples) ---------------------------------------------------------------------------------
def _h5_meta(path: str) -> TaskMeta:
    import h5py
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise DataError(f"data.path {path}: file not found") from None
    except OSError as exc:
        raise DataError(f"data.path {path}: not a readable HDF5 file ({exc})") from None
    with f:
        if "tasks" not in f or not isinstance(f["tasks"], h5py.Group) or not len(f["tasks"]):
            raise DataError(f"{path}: no /tasks group with at least one task")
        names, n_train, n_test, d = sorted(f["tasks"].keys()), [], [], None
        for name in names:
            g = f["tasks"][name]
            where = f"{path}: task {name}"
            for ds in ("X", "y"):
                if ds not in g or not isinstance(g[ds], h5py.Dataset):
                    raise DataError(f"{where}: dataset /tasks/{name}/{ds} is missing")
            X, y = g["X"], g["y"]
            if X.ndim != 2 or X.dtype.kind != "f":
                raise DataError(f"{where}: X must be a 2-D float array [n_t, d], got {X.dtype} {X.shape}")
            if y.ndim != 1 or y.dtype.kind not in "fiu":
                raise DataError(f"{where}: y must be a 1-D numeric array [n_t], got {y.dtype} {y.shape}")
            if X.shape[0] == 0:
                raise DataError(f"{where}: X has no samples (n_t = 0)")
            if y.shape[0] != X.shape[0]:
                raise DataError(f"{where}: y has {y.shape[0]} entries, X has {X.shape[0]} rows")
            d = X.shape[1] if d is None else d
            if X.shape[1] != d:
                raise DataError(f"{where}: X has d = {X.shape[1]} features, task {names[0]} has {d}")
            m = 0
            if ("X_test" in g) != ("y_test" in g):
                raise DataError(f"{where}: X_test and y_test must both be present or both absent")
            if "X_test" in g:
                Xt, yt = g["X_test"], g["y_test"]
                if Xt.ndim != 2 or Xt.shape[1] != d or Xt.dtype.kind != "f":
                    raise DataError(f"{where}: X_test must be float [m_t, {d}], got {Xt.dtype} {Xt.shape}")
                if yt.ndim != 1 or yt.shape[0] != Xt.shape[0]:
                    raise DataError(f"{where}: y_test must have {Xt.shape[0]} entries, got shape {yt.shape}")
                m = Xt.shape[0]
            n_train.append(int(X.shape[0]))
            n_test.append(int(m))
    return TaskMeta(names, int(d), n_train, n_test, "mtl_h5")


_FASHION = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def task_meta(cfg) -> TaskMeta:
    """Names and shapes of every task (reads no samples; the same on every rank)."""
    d = cfg.data
    if d.name == "mtl_h5":
        return _h5_meta(d.path)
    T = d.n_tasks
    if d.name == "mtl_fashion_mnist":
        return TaskMeta([f"class{t}-{_FASHION[t]}" for t in range(T)], 196, [d.samples_per_task] * T,
                        [d.test_per_task] * T, "mtl_fashion_mnist")
    return TaskMeta([f"task{t:04d}" for t in range(T)], d.dim, [d.samples_per_task] * T, [d.test_per_task] * T,
                    f"mtl_synthetic/{d.structure}")


# -- samples -----------------------------------------------------------------------------------------------
def synthetic_truth(cfg) -> dict:
    """The true W (task-major [T, d]) of mtl_synthetic, drawn from (seed, TRUTH): identical on every rank."""
    d, T, s = cfg.data.dim, cfg.data.n_tasks, cfg.data.structure
    rs = stream(cfg.run.seed, TRUTH)
    clusters = None
    if s == "group_sparse":
        rows = np.sort(rs.choice(d, size=min(cfg.data.support, d), replace=False))
        W = np.zeros((T, d))
        W[:, rows] = rs.choice([-1.0, 1.0], size=(T, rows.size)) * rs.uniform(0.5, 1.5, size=(T, rows.size))
        return {"W": W, "clusters": None, "structure": s, "support": rows}
    if s == "low_rank":
        r = min(cfg.data.rank, d, T)
        W = rs.standard_normal((T, r)) @ rs.standard_normal((r, d))
    elif s == "clustered":
        k = min(cfg.data.clusters, T)
        centers = rs.standard_normal((k, d))
        clusters = np.arange(T) % k
        W = centers[clusters] + 0.2 * rs.standard_normal((T, d))
    else:  # related
        W = rs.standard_normal(d)[None, :] + 0.3 * rs.standard_normal((T, d))
    W *= 2.0 / np.sqrt((W * W).sum(axis=1).mean())   # mean ||w_t||^2 = 4
    return {"W": W, "clusters": clusters, "structure": s, "support": None}


def _labels(loss: str, z: np.ndarray) -> np.ndarray:
    return np.where(z >= 0, 1.0, -1.0) if loss == "logistic" else z


def _synthetic(cfg, meta: TaskMeta, own: range) -> TaskSet:
    truth = synthetic_truth(cfg)
    ts = TaskSet(meta, own, truth=truth)
    for t in own:
        rs = stream(cfg.run.seed, TASK_DATA, t)
        w = truth["W"][t]
        for n, Xs, ys in ((meta.n_train[t], ts.X, ts.y), (meta.n_test[t], ts.X_test, ts.y_test)):
            X = rs.standard_normal((n, meta.d))
            Xs.append(X)
            ys.append(_labels(cfg.mtl.loss, X @ w + cfg.data.noise_std * rs.standard_normal(n)))
    return ts


def _h5(cfg, meta: TaskMeta, own: range) -> TaskSet:
    import h5py
    path, ts = cfg.data.path, TaskSet(meta, own)
    with h5py.File(path, "r") as f:
        for t in own:
            name = meta.names[t]
            g = f["tasks"][name]
            for key, out in (("X", ts.X), ("y", ts.y), ("X_test", ts.X_test), ("y_test", ts.y_test)):
                if key not in g:
                    out.append(np.zeros((0, meta.d)) if key == "X_test" else np.zeros(0))
                    continue
                a = np.asarray(g[key][()], dtype=np.float64)
                if not np.isfinite(a).all():
                    raise DataError(f"{path}: task {name}: dataset {key} holds NaN or Inf")
                if key.startswith("y") and cfg.mtl.loss == "logistic":
                    vals = set(np.unique(a).tolist())
                    if not (vals <= {-1.0, 1.0} or vals <= {0.0, 1.0}):
                        raise DataError(f"{path}: task {name}: dataset {key} must hold {{-1, +1}} or {{0, 1}} "
                                        f"labels for mtl.loss logistic, got values {sorted(vals)[:5]}")
                    a = np.where(a > 0, 1.0, -1.0)
                out.append(a)
    return ts


def _fashion(cfg, meta: TaskMeta, own: range) -> TaskSet:
    """One-vs-rest per class on 2x2-pooled (14x14 = 196) pixels, standardised with the training set's
    per-pixel mean and std; each task draws half positives, half negatives (seeded)."""
    from pathlib import Path

    from ..data.idx import FASHION_MNIST_DEBIAN_DIR, load_fashion_mnist
    import os
    root = cfg.data.root or (os.path.join(os.environ["FEDMTL_DATA"], "fashion_mnist") if os.environ.get("FEDMTL_DATA")
                             else str(FASHION_MNIST_DEBIAN_DIR))
    xtr, ytr = load_fashion_mnist(Path(root), train=True)
    xte, yte = load_fashion_mnist(Path(root), train=False)

    def pool(x):
        x = x.astype(np.float64).reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(-1, 196) / 255.0
        return x
    ftr, fte = pool(xtr), pool(xte)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-2
    ts = TaskSet(meta, own)
    for t in own:
        rs = stream(cfg.run.seed, TASK_SPLIT, t)
        for feats, labels, n, Xs, ys in ((ftr, ytr, meta.n_train[t], ts.X, ts.y),
                                         (fte, yte, meta.n_test[t], ts.X_test, ts.y_test)):
            pos, neg = np.flatnonzero(labels == t), np.flatnonzero(labels != t)
            k = n // 2
            idx = np.concatenate([rs.choice(pos, size=min(k, pos.size), replace=False),
                                  rs.choice(neg, size=n - min(k, pos.size), replace=False)])
            Xs.append((feats[idx] - mu) / sd)
            ys.append(np.where(labels[idx] == t, 1.0, -1.0))
    return ts


def load_tasks(cfg, meta: TaskMeta, own: range) -> TaskSet:
    """This rank's tasks (DataError on bad samples: NaN/Inf, labels)."""
    if cfg.data.name == "mtl_h5":
        return _h5(cfg, meta, own)
    if cfg.data.name == "mtl_fashion_mnist":
        return _fashion(cfg, meta, own)
    return _synthetic(cfg, meta, own)
