"""Learning-rate schedules: a pure function of (config, round), so every rank and a resume agree.

``multistep``: the FedEM paper's decay, lr x factor at each milestone; milestone share s
of ``run.rounds`` R takes effect from 0-based round ``floor(s * R + 1/2)`` on (half rounds up,
not to even). The schedule has
no state: a checkpoint's round number is all a resume needs.
"""

from __future__ import annotations

import math

__all__ = ["milestone_rounds", "lr_at"]


def milestone_rounds(train, rounds: int) -> list[int]:
    """0-based rounds from which each milestone's factor applies ([] for constant)."""
    if train.lr_schedule == "constant":
        return []
    return [math.floor(s * rounds + 0.5) for s in train.lr_milestones]


def lr_at(train, rounds: int, rnd: int) -> float:
    """Learning rate of 0-based round ``rnd`` in a run of ``rounds`` rounds."""
    passed = sum(1 for m in milestone_rounds(train, rounds) if rnd >= m)
    return train.lr * train.lr_factor ** passed
