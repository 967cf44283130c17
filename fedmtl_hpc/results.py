"""Reading finished runs and compare outputs back: no torch, no MPI.

``load_run(dir)`` returns a :class:`Run`: the run's ``summary.json`` (None while it
has not finished), its metrics as numpy arrays (from metrics.h5, else metrics.csv),
the per-client test accuracies ``[evaluations, clients]`` (metrics.h5
``client_test_acc`` / ``unseen_test_acc``), its resolved config and, when pandas is
installed, the metrics as a DataFrame. ``load_compare(dir)`` reads what
``fedmtl-hpc compare`` wrote (table.csv, cells.csv, compare.json).

The compare table's numbers are defined here (``run_values``), so a test or a
notebook can recompute them from a run's own files.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import yaml

from .errors import EXIT_BAD_INPUT, FedMTLError

__all__ = ["Run", "load_run", "is_run_dir", "find_runs", "run_values", "aggregate", "VALUES",
           "newest_checkpoint", "read_checkpoint_array", "run_label", "load_compare", "NotARun"]

# (key, heading, unit, better): the compare table's columns, in order
VALUES = (
    ("test_acc_mean", "mean acc", "%", "max"),
    ("test_acc_weighted", "weighted acc", "%", "max"),
    ("test_acc_p10", "p10 acc", "%", "max"),
    ("test_acc_unseen", "unseen acc", "%", "max"),
    ("train_loss", "train loss", "", "min"),
    ("bytes_exchanged", "bytes exchanged", "B", "min"),
    ("seconds_per_round", "time/round", "s", "min"),
)
_TIMING = ("t_compute", "t_exchange", "t_eval", "t_checkpoint")
_METHOD_NAMES = {"fedem": "FedEM", "fedavg": "FedAvg", "local": "Local", "fedprox": "FedProx",
                 "fedavg_plus": "FedAvg+", "clustered": "Clustered FL", "apfl": "APFL", "ditto": "Ditto",
                 "pfedme": "pFedMe"}


class NotARun(FedMTLError):
    """A directory that holds no run (no config.yaml, no metrics): exit 2."""

    exit_code = EXIT_BAD_INPUT
    prefix = "error"


@dataclass
class Run:
    path: str
    config: dict                       # the resolved config (config.yaml) as plain data
    config_text: str
    summary: dict | None               # summary.json; None if the run never finished a summary
    metrics: dict[str, np.ndarray]     # column -> float64 [rows]
    client_acc: np.ndarray | None      # float64 [rows, clients] (training clients), None if not stored
    unseen_acc: np.ndarray | None      # float64 [rows, unseen clients]
    frame: object = None               # pandas.DataFrame of metrics when pandas is installed
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        """done | stopped | unfinished (no summary.json)."""
        return (self.summary or {}).get("status", "unfinished")

    @property
    def finished(self) -> bool:
        return self.status == "done"  # MTL solvers may stop early by their convergence rule: still done

    @property
    def config_sha256(self) -> str:
        if self.summary and self.summary.get("config_sha256"):
            return self.summary["config_sha256"]
        from .config import config_sha256
        return config_sha256(self.config_text)

    @property
    def method(self) -> str:
        return run_label(self.config, seed=False)

    @property
    def seed(self) -> int | None:
        return (self.config.get("run") or {}).get("seed")

    def label(self) -> str:
        return run_label(self.config)


def run_label(config: dict, seed: bool = True) -> str:
    """'FedEM, seed 1'; decentralized runs 'D-FedEM' / 'D-SGD'."""
    alg = config.get("algorithm") or {}
    name = alg.get("name", "?")
    text = _METHOD_NAMES.get(name, name)
    if alg.get("mode") == "decentralized":
        text = {"fedavg": "D-SGD"}.get(name, "D-" + text)
    if seed and (config.get("run") or {}).get("seed") is not None:
        text += f", seed {config['run']['seed']}"
    return text


def is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.yaml"))


def _read_metrics(path: str) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    h5 = os.path.join(path, "metrics.h5")
    if os.path.isfile(h5):
        import h5py
        try:
            with h5py.File(h5, "r") as f:
                cols, arrays = {}, {}
                for k in f:
                    data = f[k][()]
                    (cols if np.ndim(data) == 1 else arrays)[k] = np.asarray(data, dtype=np.float64)
            return cols, arrays.get("client_test_acc"), arrays.get("unseen_test_acc")
        except OSError:
            pass  # being rewritten, or broken: fall back to the CSV
    csv_path = os.path.join(path, "metrics.csv")
    if os.path.isfile(csv_path):
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        names = list(rows[0]) if rows else []
        return {c: np.array([float(r[c]) for r in rows], dtype=np.float64) for c in names}, None, None
    return {}, None, None


def load_run(path: str) -> Run:
    """Everything a run directory holds except checkpoints; raises NotARun (exit 2) if it is not one."""
    path = str(path)
    cfg_path = os.path.join(path, "config.yaml")
    if not os.path.isdir(path):
        raise NotARun(f"{path} is not a run directory (no such directory)")
    if not os.path.isfile(cfg_path):
        raise NotARun(f"{path} is not a run directory (no config.yaml)")
    metrics, client, unseen = _read_metrics(path)
    if not metrics.get("round", np.zeros(0)).size:
        raise NotARun(f"{path} is not a run directory with results (no metrics.h5 / metrics.csv rows yet)")
    with open(cfg_path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise NotARun(f"{path} is not a run directory (config.yaml is not YAML)") from None
    summary = None
    sp = os.path.join(path, "summary.json")
    if os.path.isfile(sp):
        try:
            with open(sp) as fh:
                summary = json.load(fh)
        except (OSError, ValueError):
            summary = None
    run = Run(path=path, config=config, config_text=text, summary=summary, metrics=metrics,
              client_acc=client, unseen_acc=unseen)
    try:
        import pandas as pd
        run.frame = pd.DataFrame(metrics)
    except ImportError:
        pass
    return run


def find_runs(roots, depth: int = 3) -> list[str]:
    """Run directories (holding config.yaml) at most ``depth`` levels below each root, sorted."""
    found = set()
    for root in roots:
        root = os.path.abspath(root)
        if not os.path.isdir(root):
            continue
        base = root.count(os.sep)
        for d, subdirs, files in os.walk(root):
            if "config.yaml" in files:
                found.add(d)
                subdirs[:] = []
                continue
            if d.count(os.sep) - base >= depth:
                subdirs[:] = []
            subdirs[:] = [s for s in subdirs if s not in ("checkpoints", "figures") and not s.startswith(".")]
    return sorted(found)


def run_values(run: Run) -> dict[str, float]:
    """The compare table's numbers for one finished run.

    Accuracies and train loss: the final metrics row (= summary.json); bytes: the sum of
    the ``bytes_exchanged`` column (each row holds the total since the previous one);
    seconds per round: the sum of the timing columns (compute + exchange + evaluation +
    checkpoint, rank 0) over the final round number.
    """
    s, m = run.summary or {}, run.metrics
    out = {k: float(s.get(k, math.nan)) if s.get(k) is not None else math.nan
           for k in ("test_acc_mean", "test_acc_weighted", "test_acc_p10", "test_acc_unseen", "train_loss")}
    out["bytes_exchanged"] = float(np.sum(m["bytes_exchanged"])) if "bytes_exchanged" in m else math.nan
    rounds = float(s.get("round", m["round"][-1] if m.get("round", np.zeros(0)).size else math.nan))
    t = sum(float(np.sum(m[c])) for c in _TIMING if c in m)
    out["seconds_per_round"] = t / rounds if rounds and rounds > 0 else math.nan
    return out


def aggregate(values: list[float]) -> dict[str, float]:
    """mean, std (sample, ddof 1; NaN for one value), min, max over the finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not v.size:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else math.nan,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def newest_checkpoint(path: str) -> str | None:
    import glob
    import re
    files = [p for p in glob.glob(os.path.join(path, "checkpoints", "ckpt-*.h5")) if re.search(r"ckpt-(\d+)\.h5$", p)]
    return max(files, key=lambda p: int(re.search(r"ckpt-(\d+)\.h5$", p).group(1))) if files else None


def read_checkpoint_array(path: str, name: str) -> np.ndarray | None:
    """One dataset (e.g. ``clients/state/pi``, ``mtl/W``) of the run's newest checkpoint, or None."""
    ck = newest_checkpoint(path)
    if not ck:
        return None
    import h5py
    try:
        with h5py.File(ck, "r") as f:
            return np.asarray(f[name][()]) if name in f else None
    except OSError:
        return None


def _num(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def load_compare(path: str) -> dict:
    """A compare output: ``table`` (rows of table.csv, numbers as floats), ``cells`` (cells.csv),
    ``spec`` (compare.json), and ``frame`` (table as a DataFrame) when pandas is installed."""
    path = str(path)
    tp = os.path.join(path, "table.csv")
    if not os.path.isfile(tp):
        raise NotARun(f"{path} is not a compare output (no table.csv)")
    with open(tp, newline="") as fh:
        table = [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    cells = []
    cp = os.path.join(path, "cells.csv")
    if os.path.isfile(cp):
        with open(cp, newline="") as fh:
            cells = list(csv.DictReader(fh))
    meta = {}
    mp = os.path.join(path, "compare.json")
    if os.path.isfile(mp):
        with open(mp) as fh:
            meta = json.load(fh)
    out = {"table": table, "cells": cells, "spec": meta.get("spec"), "meta": meta}
    try:
        import pandas as pd
        out["frame"] = pd.DataFrame(table)
    except ImportError:
        pass
    return out
