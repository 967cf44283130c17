"""Stop requests from the scheduler (SIGTERM, SIGUSR1), noticed at round boundaries.

The handler only sets a flag; the engine puts the flag into the round's
all-reduce, so every rank agrees on the same round to stop, checkpoints and
exits with EXIT_PREEMPTED.

SIGUSR2 (which no scheduler uses for preemption) is not a stop request: it makes the rank
print every thread's Python stack to stderr and carry on (``install_stack_dump``; C-level
faulthandler, so it works while the rank is blocked inside an MPI call).
"""

from __future__ import annotations

import faulthandler
import signal

__all__ = ["install", "install_stack_dump", "requested", "request", "clear"]

_flag = {"signal": None}


def _handler(signum, frame):  # noqa: ARG001
    _flag["signal"] = signum


def install(signums=(signal.SIGTERM, signal.SIGUSR1)) -> None:
    """Catch the scheduler's stop signals instead of dying mid-round."""
    for s in signums:
        signal.signal(s, _handler)


def install_stack_dump(signum: int = signal.SIGUSR2) -> None:
    """``kill -USR2 <pid>`` (or ``scancel --signal=USR2 <job>``): Python stacks to stderr, no stop."""
    faulthandler.register(signum, all_threads=True, chain=False)


def requested() -> bool:
    return _flag["signal"] is not None


def request(signum: int = signal.SIGUSR1) -> None:
    """Ask for a stop from code (tests, a max-walltime policy)."""
    _flag["signal"] = signum


def clear() -> None:
    _flag["signal"] = None
