"""Per-eval-round metrics: an in-memory table mirrored to CSV and HDF5 (rank 0).

Columns (fixed names): round, train_loss, test_acc_mean, test_acc_weighted,
test_acc_p10, bytes_exchanged, t_compute, t_exchange, t_eval, t_checkpoint,
plus test_acc_unseen when unseen clients exist, plus consensus_distance in
decentralized mode (mean over clients of ||theta_t - theta_bar||^2 summed over
all K*P numbers, theta_bar the average of the clients' components; each client's
accuracy there is that of its OWN components). ``bytes_exchanged`` and the
``t_*`` columns are totals over the rounds since the previous row (seconds on
rank 0; bytes summed over ranks), so a column's sum is the run's total.
"""

from __future__ import annotations

import csv
import math
import os

import h5py
import numpy as np

__all__ = ["COLUMNS", "TIMING", "MetricsTable"]

COLUMNS = ("round", "train_loss", "test_acc_mean", "test_acc_weighted", "test_acc_p10",
           "bytes_exchanged", "t_compute", "t_exchange", "t_eval", "t_checkpoint")
TIMING = ("t_compute", "t_exchange", "t_eval", "t_checkpoint")


class MetricsTable:
    """Rows of metrics; ``write`` mirrors them to ``metrics.csv`` and ``metrics.h5``."""

    def __init__(self, extra: tuple[str, ...] = ()):
        self.columns = COLUMNS + tuple(extra)
        self.rows: list[dict] = []

    def append(self, row: dict) -> None:
        self.rows.append({c: float(row.get(c, math.nan)) for c in self.columns})

    def column(self, name: str) -> np.ndarray:
        return np.array([r[name] for r in self.rows], dtype=np.float64)

    def deterministic(self) -> dict[str, np.ndarray]:
        """Every column but the timings: what a checkpoint stores."""
        return {c: self.column(c) for c in self.columns if c not in TIMING}

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
        self.rows = []
        for i in range(len(stored.get("round", []))):
            row = {c: float(stored[c][i]) for c in stored if c in self.columns}
            row.update(timings.get(int(row["round"]), {}))
            self.append(row)

    def write(self, run_dir: str) -> None:
        """Rewrite metrics.csv and metrics.h5 atomically from the table."""
        tmp = os.path.join(run_dir, ".metrics.csv.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(self.columns)
            for r in self.rows:
                w.writerow([int(r[c]) if c in ("round", "bytes_exchanged") else repr(r[c]) for c in self.columns])
        os.replace(tmp, os.path.join(run_dir, "metrics.csv"))
        tmp = os.path.join(run_dir, ".metrics.h5.tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["note"] = "one row per evaluation round; t_* in seconds, bytes_exchanged in bytes"
            for c in self.columns:
                f.create_dataset(c, data=self.column(c))
        os.replace(tmp, os.path.join(run_dir, "metrics.h5"))

    def last(self) -> dict:
        return dict(self.rows[-1]) if self.rows else {}
