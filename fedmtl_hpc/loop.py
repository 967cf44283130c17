"""The loop protocol every training program implements: federated engine and MTL solvers alike.

The runner, the callbacks (evaluation, metrics files, progress, checkpoints) and resume
talk to a ``Loop`` only through this narrow surface::

    cfg, comm, round, metrics (MetricsTable), window (totals since the last metrics row),
    callbacks, before_training(), step() -> RoundStats, evaluate() -> dict,
    snapshot() -> checkpoint.Snapshot | None (rank 0 gets it), restore(snapshot),
    describe() -> str, summary_line() -> str,
    checkpoint_rows() -> range | None (the /clients rows this rank loads on resume),
    check_resume(snapshot) (raise CheckpointError when the data changed since the checkpoint),
    summary_fields() -> dict (collective: program-specific summary.json entries)

A "round" is whatever one iteration of the program is (a communication round of FedEM,
an iteration of a proximal-gradient solver). ``run`` is shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import watchdog

__all__ = ["Loop", "RoundStats"]


@dataclass
class RoundStats:
    """What one round produced; callbacks read it."""

    round: int                       # 1-based number of the round just finished
    train_loss: float
    t_compute: float
    t_exchange: float
    bytes_exchanged: int
    stop: bool = False
    extra: dict = field(default_factory=dict)   # values of columns a part declared (metrics rows)


class Loop:
    """Base of the training programs: the shared ``run`` over ``step`` and the callbacks."""

    callbacks: list
    round: int

    def before_training(self) -> None:
        """Once before the first round (after a restore too)."""

    def done(self) -> bool:
        """True when no round is left (default: cfg.run.rounds reached)."""
        return self.round >= self.cfg.run.rounds

    def run(self) -> str:
        """Run until done or a stop signal; returns 'done' or 'stopped'."""
        self.before_training()
        for cb in self.callbacks:
            cb.on_train_begin(self)
        status = "done"
        while not self.done():
            watchdog.phase(watchdog.LOCAL, self.round + 1)     # progress marks for the hang watchdog
            stats = self.step()
            for cb in self.callbacks:
                watchdog.phase(watchdog.callback_phase(cb), stats.round)
                cb.after_round(self, stats)
            if stats.stop:
                status = "stopped"
                break
        watchdog.phase(watchdog.FINISH, self.round)
        for cb in self.callbacks:
            cb.on_train_end(self, status)
        return status

    # the rest is each program's own
    def step(self) -> RoundStats: raise NotImplementedError
    def evaluate(self) -> dict: raise NotImplementedError
    def snapshot(self): raise NotImplementedError
    def restore(self, snap) -> None: raise NotImplementedError
    def describe(self) -> str: return ""
    def summary_line(self) -> str: return ""

    # resume and summary hooks (the runner stays program-agnostic)
    def checkpoint_rows(self):
        """Rows of /clients this rank loads on resume (``checkpoint.load(rows=...)``); None: all."""
        return None

    def check_resume(self, snap) -> None:
        """Raise CheckpointError if the checkpoint does not fit this run's data (before ``restore``)."""

    def summary_fields(self) -> dict:
        """Extra summary.json entries; called on every rank after training (may be collective)."""
        return {}
