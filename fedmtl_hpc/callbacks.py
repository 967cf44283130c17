"""Side effects of the round loop: evaluation, metrics files, progress, checkpoints.

Each callback owns its policy (*when*) and calls a module that knows *how*
(``metrics.py``, ``checkpoint.py``). Callbacks that communicate (evaluation,
checkpoint gathering) make the same decision on every rank, from the round
number and the reduced stop flag only.
"""

from __future__ import annotations

import sys
import time


from . import checkpoint as ckpt
from .metrics import COLUMNS

__all__ = ["Evaluate", "WriteMetrics", "Progress", "Checkpoint"]


class Callback:
    def on_train_begin(self, engine) -> None: ...
    def after_round(self, engine, stats) -> None: ...
    def on_train_end(self, engine, status: str) -> None: ...


class Evaluate(Callback):
    """Every ``every`` rounds and after the last: evaluate and append a metrics row."""

    def __init__(self, every: int):
        self.every = every

    def after_round(self, engine, stats):
        w = engine.window  # engine-owned so a checkpoint carries the deterministic part
        w["bytes_exchanged"] += stats.bytes_exchanged
        w["t_compute"] += stats.t_compute
        w["t_exchange"] += stats.t_exchange
        # a due row is written even in a round that stops (else a resumed run would lack it)
        if not (stats.round % self.every == 0 or engine.done()):
            return
        t0 = time.perf_counter()
        # decentralized evaluate() returns the all-ranks train_loss (stats holds a rank-local one)
        row = {"train_loss": stats.train_loss, **engine.evaluate()}
        row.update(w, round=stats.round, t_eval=time.perf_counter() - t0)
        row.update(stats.extra)
        engine.metrics.append(row)
        for k in w:
            w[k] = 0.0


class WriteMetrics(Callback):
    """Rank 0: mirror the table to metrics.csv / metrics.h5 whenever it grows."""

    def __init__(self, run_dir: str):
        self.run_dir, self.n = run_dir, None

    def on_train_begin(self, engine):
        self.n = len(engine.metrics.rows)

    def after_round(self, engine, stats):
        if len(engine.metrics.rows) != self.n:
            engine.metrics.write(self.run_dir)
            self.n = len(engine.metrics.rows)


class Progress(Callback):
    """Rank 0: a line per metrics row; on a terminal also a live per-round status."""

    def __init__(self, log, stream=sys.stdout):
        self.log, self.tty = log, stream.isatty()
        self.stream, self.n, self.t, self.prev = stream, 0, None, 0

    def on_train_begin(self, engine):
        self.n, self.t, self.prev = len(engine.metrics.rows), time.perf_counter(), engine.round

    def after_round(self, engine, stats):
        now = time.perf_counter()
        spr, self.t = now - self.t, now
        if self.tty:
            self.stream.write(f"\rround {stats.round}/{engine.cfg.run.rounds}  loss {stats.train_loss:.4f}  "
                              f"{spr:.3f} s/round ")
            self.stream.flush()
        if len(engine.metrics.rows) != self.n:
            self.n = len(engine.metrics.rows)
            r = engine.metrics.last()
            per_round = (r["t_compute"] + r["t_exchange"]) / max(stats.round - self.prev, 1)
            self.prev = stats.round
            # columns declared by the algorithm or the exchange (consensus distance, clusters, ...)
            extra = "".join(f"  {c} {r[c]:.4g}" for c in engine.metrics.columns
                            if c not in COLUMNS and c != "test_acc_unseen")
            self.log(("\r" if self.tty else "") + f"round {int(r['round']):>5}/{engine.cfg.run.rounds}  "
                     f"train_loss {r['train_loss']:.4f}  test_acc {r['test_acc_mean']:.4f} "
                     f"(p10 {r['test_acc_p10']:.4f}){extra}  {per_round:.3f} s/round")


class Checkpoint(Callback):
    """Every ``every`` rounds, after the last round and on a stop: each rank writes its shard,
    rank 0 the master (one file on one rank; see checkpoint.py)."""

    def __init__(self, directory: str, every: int, keep: int):
        self.directory, self.every, self.keep = directory, every, keep
        self.last_path = None

    def after_round(self, engine, stats):
        due = stats.stop or engine.done() or (self.every and stats.round % self.every == 0)
        if not due:
            return
        t0 = time.perf_counter()
        snap = engine.snapshot()  # collective: every rank (its rows, or None off rank 0 if it gathered)
        path = ckpt.save(snap, self.directory, self.keep, engine.comm)   # collective when sharded
        if engine.comm.rank == 0:
            self.last_path = path
        engine.window["t_checkpoint"] += time.perf_counter() - t0

