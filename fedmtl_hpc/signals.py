"""Stop requests from the scheduler (SIGTERM, SIGUSR1), noticed at round boundaries.

The handler only sets a flag; the engine puts the flag into the round's
all-reduce, so every rank agrees on the same round to stop, checkpoints and
exits with EXIT_PREEMPTED.
"""

from __future__ import annotations

import signal

__all__ = ["install", "requested", "request", "clear"]

_flag = {"signal": None}


def _handler(signum, frame):  # noqa: ARG001
    _flag["signal"] = signum


def install(signums=(signal.SIGTERM, signal.SIGUSR1)) -> None:
    """Catch the scheduler's stop signals instead of dying mid-round."""
    for s in signums:
        signal.signal(s, _handler)


def requested() -> bool:
    return _flag["signal"] is not None


def request(signum: int = signal.SIGUSR1) -> None:
    """Ask for a stop from code (tests, a max-walltime policy)."""
    _flag["signal"] = signum


def clear() -> None:
    _flag["signal"] = None
