"""Per-eval-round metrics: an in-memory table mirrored to CSV and HDF5 (rank 0).

Columns (fixed names): round, train_loss, test_acc_mean, test_acc_weighted,
test_acc_p10, bytes_exchanged, t_compute, t_exchange, t_eval, t_checkpoint,
plus test_acc_unseen when unseen clients exist, plus consensus_distance in
decentralized mode (mean over clients of ||theta_t - theta_bar||^2 summed over
all K*P numbers, theta_bar the average of the clients' components; each client's
accuracy there is that of its OWN components). ``bytes_exchanged`` and the
``t_*`` columns are totals over the rounds since the previous row (seconds on
rank 0; bytes summed over ranks), so a column's sum is the run's total.

Per-client values ride in a row under keys starting with ``_`` (``Engine.evaluate``
returns ``_client_test_acc`` and, with unseen clients, ``_unseen_test_acc``): they
are kept as one array per row and written to metrics.h5 (and to checkpoints, so a
resumed run's file is complete) as 2-D datasets ``client_test_acc [rows, clients]``
and ``unseen_test_acc [rows, unseen clients]``; metrics.csv keeps the scalar columns.
"""

from __future__ import annotations

import csv
import math
import os

import h5py
import numpy as np


from .atomic import write_atomic

__all__ = ["COLUMNS", "TIMING", "PER_CLIENT", "MetricsTable", "write_atomic"]

COLUMNS = ("round", "train_loss", "test_acc_mean", "test_acc_weighted", "test_acc_p10",
           "bytes_exchanged", "t_compute", "t_exchange", "t_eval", "t_checkpoint")
TIMING = ("t_compute", "t_exchange", "t_eval", "t_checkpoint")
PER_CLIENT = ("client_test_acc", "unseen_test_acc")  # [rows, clients] datasets, from "_" row keys


class MetricsTable:
    """Rows of metrics; ``write`` mirrors them to ``metrics.csv`` and ``metrics.h5``."""

    def __init__(self, extra: tuple[str, ...] = ()):
        self.columns = COLUMNS + tuple(extra)
        self.rows: list[dict] = []
        self.arrays: dict[str, list] = {}  # name -> one 1-D array (or None) per row

    def append(self, row: dict) -> None:
        self.rows.append({c: float(row.get(c, math.nan)) for c in self.columns})
        names = set(self.arrays) | {k[1:] for k in row if k.startswith("_")}
        for name in sorted(names):
            value = row.get("_" + name)
            kept = self.arrays.setdefault(name, [None] * (len(self.rows) - 1))
            kept.append(None if value is None else np.asarray(value, dtype=np.float64).reshape(-1).copy())

    def array(self, name: str) -> np.ndarray:
        """Per-client values ``[rows, clients]`` float64 (rows without them: NaN)."""
        kept = self.arrays.get(name, [])
        width = max((len(a) for a in kept if a is not None), default=0)
        out = np.full((len(kept), width), np.nan)
        for i, a in enumerate(kept):
            if a is not None:
                out[i, :len(a)] = a
        return out

    def column(self, name: str) -> np.ndarray:
        return np.array([r[name] for r in self.rows], dtype=np.float64)

    def deterministic(self) -> dict[str, np.ndarray]:
        """Every column but the timings, and the per-client arrays: what a checkpoint stores."""
        out = {c: self.column(c) for c in self.columns if c not in TIMING}
        out.update({name: self.array(name) for name in sorted(self.arrays)})
        return out

    def restore(self, stored: dict[str, np.ndarray], csv_path: str | None) -> None:
        """Rebuild from a checkpoint's columns, taking timings from an older CSV where rounds match."""
        timings = {}
        if csv_path and os.path.exists(csv_path):
            with open(csv_path, newline="") as fh:
                for r in csv.DictReader(fh):
                    try:
                        timings[int(float(r["round"]))] = {c: float(r[c]) for c in TIMING}
                    except (KeyError, ValueError):
                        continue
        self.rows, self.arrays = [], {}
        per_client = {k: v for k, v in stored.items() if k not in self.columns and np.ndim(v) == 2}
        for i in range(len(stored.get("round", []))):
            row = {c: float(stored[c][i]) for c in stored if c in self.columns}
            row.update(timings.get(int(row["round"]), {}))
            row.update({"_" + k: v[i] for k, v in per_client.items() if i < len(v)})
            self.append(row)

    def write(self, run_dir: str) -> None:
        """Rewrite metrics.csv and metrics.h5 atomically from the table (each: tmp, fsync, rename).

        A crash or a full disk between two writes leaves the previous complete files; a
        storage failure raises ``StorageError`` naming the file and removes the temporary one.
        """
        def csv_file(tmp):
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(self.columns)
                for r in self.rows:
                    w.writerow([int(r[c]) if c in ("round", "bytes_exchanged") else repr(r[c])
                                for c in self.columns])

        def h5_file(tmp):
            with h5py.File(tmp, "w") as f:
                f.attrs["note"] = "one row per evaluation round; t_* in seconds, bytes_exchanged in bytes"
                for c in self.columns:
                    f.create_dataset(c, data=self.column(c))
                for name in sorted(self.arrays):
                    d = f.create_dataset(name, data=self.array(name))
                    d.attrs["note"] = "one row per evaluation round, one column per client (client id order)"

        write_atomic(os.path.join(run_dir, "metrics.csv"), csv_file, "metrics")
        write_atomic(os.path.join(run_dir, "metrics.h5"), h5_file, "metrics")

    def last(self) -> dict:
        return dict(self.rows[-1]) if self.rows else {}
