"""Hang watchdog: a job whose ranks stop making progress ends with a report, not at walltime.

A rank that stops (SIGSTOP, swapped out), loops forever in model code, hangs in I/O or
never enters a collective the others wait in would otherwise hold the whole allocation
until the scheduler's walltime. ``run.watchdog_s`` bounds that (docs/debugging.md).

Mechanism (chosen over MPI one-sided windows, see below):

* **Progress marks, no MPI.** The main thread writes where it is into module-level slots:
  round and phase (``phase()``, called by ``loop.py`` and ``engine.py``: local work,
  exchange, evaluation, checkpoint, ...) and every collective it enters and leaves
  (``enter()`` / ``leave()``, called by ``comm/mpi.py``; collectives are numbered in call
  order, identically on every rank). A mark is a few list stores (well under 1 us).
* **Heartbeats that never wait.** A daemon thread per rank wakes every ``period`` seconds
  and sends a small float64 record (round, phase, collective number, inside it or not,
  seconds since the last mark, beat number) to the *observer* ranks 0 and 1 with
  non-blocking point-to-point sends on a private duplicate of COMM_WORLD
  (``comm.watch_channel``). Sends are only ``Test``-ed: while a send to a peer is pending
  (the peer is stopped and does not drain its queue) the next beats to it are skipped.
  Observers poll their posted receives with ``Test``. No call made by the thread waits on
  another rank, so a stopped rank cannot block anyone's watchdog; each observer judges
  from what is in its own memory: the last record of every rank and when it arrived
  (local clock; records carry durations only, so node clocks need not agree).
* **Why not an MPI window** (mpi4py's ``util/sync.py`` Counter pattern): a passive-target
  ``Put`` completes only at ``Unlock``/``Flush``, which waits for remote completion; with
  MPICH over a network without hardware RMA (and for windows not in shared memory) that
  needs the *target's* progress engine, so a put to a SIGSTOPped rank can block the
  putting thread. Reading only local window memory does not help the writer side. The
  point-to-point heartbeat has no completion step that waits on the peer.
* **Decision and report.** Each rank's thread fires when its own main thread has made no
  mark for ``limit`` seconds: in a hang every rank stops marking (the healthy ones sit
  inside the collective the stuck one never enters). It prints its state and Python stack
  (``faulthandler``, all threads) to stderr, every line prefixed ``[rank N]``. The reporter
  (rank 0, or rank 1 when rank 0's heartbeats stopped) prints which ranks did not reach the
  collective the others wait in, every rank's round and phase, and which ranks stopped
  sending heartbeats (stopped, dead, or stuck in C code holding the GIL), waits ``grace``
  seconds for the other ranks' stacks, and calls ``MPI_Abort``. Every other rank aborts by
  itself a little later, in case the reporter is the stuck one.
* **Limit.** ``run.watchdog_s`` > 0: that many seconds without progress. -1 (default):
  max(120 s, 20 x the slowest round so far, measured round start to round start, so a
  round's evaluation and checkpoint count). 0: off. A debug session (``--debug-rank``)
  turns it off. Set-up (data loading) is not watched; it ends with the training loop.

Requires MPI initialised with ``MPI_THREAD_MULTIPLE`` (mpi4py's default); with less the
watchdog is off and says so.
"""

from __future__ import annotations

import atexit
import faulthandler
import os
import sys
import tempfile
import threading
import time

import numpy as np

__all__ = ["phase", "enter", "leave", "callback_phase", "start", "Watchdog", "PHASES", "OPS",
           "SETUP", "LOCAL", "EXCHANGE", "EVALUATION", "CHECKPOINT", "AFTER_ROUND", "FINISH",
           "AUTO_MIN_S", "AUTO_FACTOR"]

SETUP, LOCAL, EXCHANGE, EVALUATION, CHECKPOINT, AFTER_ROUND, FINISH = range(7)
PHASES = ("set-up", "local work", "exchange", "evaluation", "checkpoint", "after-round bookkeeping",
          "finishing")
# collective kinds (comm/mpi.py); WAIT is a point-to-point wait: not numbered as a collective
ALLREDUCE, GATHER, ALLGATHER, BCAST, BARRIER, NEIGHBOR, WAIT = range(1, 8)
OPS = {0: "none", ALLREDUCE: "allreduce", GATHER: "gather", ALLGATHER: "allgather", BCAST: "bcast",
       BARRIER: "barrier", NEIGHBOR: "neighbour exchange", WAIT: "point-to-point wait"}
AUTO_MIN_S, AUTO_FACTOR = 120.0, 20.0

# the main thread's marks: read (never written) by the watchdog thread
_ROUND, _PHASE, _MARK_T, _SEQ, _INSIDE, _OP, _ROUND_T, _SLOWEST = range(8)
_S = [0.0, float(SETUP), time.monotonic(), 0.0, 0.0, 0.0, 0.0, 0.0]
_now = time.monotonic

# heartbeat record sent to the observers
_R_ROUND, _R_PHASE, _R_SEQ, _R_INSIDE, _R_OP, _R_STALL, _R_BEAT, _R_LIMIT = range(8)
RECORD = 8


def phase(code: int, rnd: int) -> None:
    """The main thread starts phase ``code`` of 1-based round ``rnd`` (LOCAL starts a round)."""
    s, now = _S, _now()
    if code == LOCAL:
        if s[_ROUND_T] and now - s[_ROUND_T] > s[_SLOWEST]:
            s[_SLOWEST] = now - s[_ROUND_T]
        s[_ROUND_T] = now
    s[_ROUND], s[_PHASE], s[_MARK_T] = rnd, code, now


def enter(op: int) -> None:
    """The main thread enters a collective (``op`` in OPS); WAIT marks a point-to-point wait."""
    s = _S
    if op != WAIT:
        s[_SEQ] += 1
    s[_INSIDE], s[_OP], s[_MARK_T] = 1.0, op, _now()


def leave() -> None:
    s = _S
    s[_INSIDE], s[_MARK_T] = 0.0, _now()


_CB_PHASES = {"Evaluate": EVALUATION, "Checkpoint": CHECKPOINT}


def callback_phase(cb) -> int:
    """The phase a round-loop callback runs in (by class name: callbacks need not know about us)."""
    return _CB_PHASES.get(type(cb).__name__, AFTER_ROUND)


def auto_limit(slowest_round: float) -> float:
    return max(AUTO_MIN_S, AUTO_FACTOR * slowest_round)


def _ranks(rs) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    rs, out, i = sorted(rs), [], 0
    while i < len(rs):
        j = i
        while j + 1 < len(rs) and rs[j + 1] == rs[j] + 1:
            j += 1
        out.append(str(rs[i]) if i == j else f"{rs[i]}-{rs[j]}")
        i = j + 1
    return ",".join(out)


def _who(rs) -> str:
    return f"rank {rs[0]}" if len(rs) == 1 else f"ranks {_ranks(rs)}"


def _where(rec) -> str:
    return f"round {int(rec[_R_ROUND])}, {PHASES[int(rec[_R_PHASE])]}"


def _coll(rec) -> str:
    op, seq = int(rec[_R_OP]), int(rec[_R_SEQ])
    if rec[_R_INSIDE]:
        return f"inside {OPS[op]}" + (f" (collective #{seq})" if op != WAIT else "")
    return f"working (last collective #{seq})"


def _write(text: str) -> None:
    """One write to fd 2 (lines of different ranks interleave less than print's pieces)."""
    data = text.encode(errors="replace")
    try:
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - stderr may be closed; the fd write still works
        pass
    while data:
        n = os.write(2, data)
        data = data[n:]


def _stack(rank: int) -> str:
    """The Python stacks of this process's other threads (the main one first of all), each line
    prefixed ``[rank N]``; the calling thread (the watchdog's own, "Current thread") is left out."""
    with tempfile.TemporaryFile() as fh:  # faulthandler needs a real file descriptor
        faulthandler.dump_traceback(file=fh, all_threads=True)
        fh.seek(0)
        text = fh.read().decode(errors="replace")
    blocks = [b for b in text.split("\n\n") if b.strip() and not b.lstrip().startswith("Current thread")]
    return "".join(f"[rank {rank}] {line}\n" for b in blocks for line in b.splitlines())


class Watchdog:
    """The heartbeat thread of one rank; see the module docstring. ``close()`` is collective."""

    def __init__(self, channel, rank: int, size: int, limit_s: float, *, period: float | None = None,
                 grace: float | None = None, log_path: str | None = None, abort=None):
        self.channel, self.rank, self.size = channel, rank, size
        self.fixed = float(limit_s) if limit_s > 0 else None       # None: auto
        self.period = period or (min(1.0, max(0.05, self.fixed / 8)) if self.fixed else 1.0)
        self.grace = grace if grace is not None else 2 * self.period + 1.0
        self.stale_after = max(3 * self.period, 2.0)                # heartbeat age that means "not responding"
        self.observers = tuple(range(min(size, 2)))
        self.log_path = log_path
        self._abort = abort or channel.abort
        self._seen: dict[int, tuple[np.ndarray, float]] = {}        # rank -> (record, local arrival time)
        self._stop = threading.Event()
        self._beat = 0
        self.fired = False
        self._thread = threading.Thread(target=self._loop, name="fedmtl-watchdog", daemon=True)

    def limit(self) -> float:
        return self.fixed if self.fixed else auto_limit(_S[_SLOWEST])

    def start(self) -> "Watchdog":
        _S[_MARK_T] = _now()
        self._thread.start()
        atexit.register(self._halt)  # after mpi4py's finalizer in registration order: runs before it
        return self

    def _halt(self) -> None:
        """At interpreter exit without close() (should not happen): no MPI call from the thread after this."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self.period + 1)

    def close(self) -> None:
        """Stop the thread, then settle the heartbeat messages (collective: every rank, same point)."""
        self._stop.set()
        self._thread.join()
        atexit.unregister(self._halt)
        self.channel.close()

    # -- the thread ---------------------------------------------------------------------------
    def _record(self, now: float) -> np.ndarray:
        s = list(_S)  # one consistent copy
        self._beat += 1
        return np.array([s[_ROUND], s[_PHASE], s[_SEQ], s[_INSIDE], s[_OP], now - s[_MARK_T], self._beat,
                         self.limit()], dtype=np.float64)

    def _loop(self) -> None:
        try:
            wait = 0.0  # the first beat at once: observers know every rank from the start
            while not self._stop.wait(wait):
                wait = self.period
                now = _now()
                rec = self._record(now)
                self.channel.post(rec)
                for src, r in self.channel.poll():
                    self._seen[src] = (r, now)
                self._seen[self.rank] = (rec, now)
                if rec[_R_STALL] > rec[_R_LIMIT] and not self._stop.is_set():
                    self.fired = True
                    self._fire(rec, now)
                    return
        except Exception as exc:  # noqa: BLE001 - the watchdog must never take a healthy run down
            _write(f"[rank {self.rank}] watchdog: disabled after an internal error: {type(exc).__name__}: {exc}\n")

    def _reporter(self, now: float) -> bool:
        if self.rank not in self.observers:
            return False
        for o in self.observers:
            if o == self.rank:
                return True
            seen = self._seen.get(o)
            if seen is not None and now - seen[1] <= self.stale_after:
                return False  # a lower observer is alive: it reports
        return True

    def _fire(self, rec: np.ndarray, now: float) -> None:
        own = (f"[rank {self.rank}] watchdog: no progress for {rec[_R_STALL]:.1f} s (limit {rec[_R_LIMIT]:.0f} s): "
               f"{_where(rec)}, {_coll(rec)}; Python stack:\n")
        reporter = self._reporter(now)
        report = self.report(now) if reporter else ""
        _write(report + own + _stack(self.rank))
        if reporter and self.log_path and self.rank == 0:
            try:
                with open(self.log_path, "a") as fh:
                    fh.write(report)
            except OSError:
                pass
        time.sleep(self.grace if reporter else self.grace + 2 * self.period + 2.0)
        if reporter:
            _write(f"watchdog: aborting the job (MPI_Abort) after {self.grace:.0f} s for the stacks\n")
        self._abort(1)

    def report(self, now: float) -> str:
        """The reporter's view of every rank: who is silent, who is stuck outside any collective, which
        collective the others wait in and who has not reached it, then each rank's round and phase."""
        recs, ages = {}, {}
        for r in range(self.size):
            seen = self._seen.get(r)
            if seen is not None:
                recs[r], ages[r] = seen[0], now - seen[1]
        silent = sorted(r for r in range(self.size) if r not in recs or ages[r] > self.stale_after)
        live = [r for r in recs if r not in silent]
        inside = [r for r in live if recs[r][_R_INSIDE] and recs[r][_R_OP] != WAIT]
        busy = sorted(r for r in live if not recs[r][_R_INSIDE])
        own = self._seen[self.rank][0]
        lines = [f"watchdog: no progress for {own[_R_STALL]:.1f} s (limit {own[_R_LIMIT]:.0f} s, run.watchdog_s); "
                 f"seen from rank {self.rank}:"]
        if silent:
            lines.append(f"watchdog: {_who(silent)} sent no heartbeat for > {self.stale_after:.0f} s "
                         f"(process stopped, swapped out, dead, or stuck in C code holding the GIL)")
        if busy:
            lines.append(f"watchdog: {_who(busy)} {'is' if len(busy) == 1 else 'are'} not inside any collective: "
                         f"stuck in {'its' if len(busy) == 1 else 'their'} own work (see the stack below)")
        if inside:
            current = max(recs[r][_R_SEQ] for r in inside)
            waiting = sorted(r for r in inside if recs[r][_R_SEQ] == current)
            missing = sorted(r for r in range(self.size) if r not in waiting)
            w = recs[waiting[0]]
            lines.append(f"watchdog: {_who(waiting)} wait{'s' if len(waiting) == 1 else ''} in collective "
                         f"#{int(current)} ({OPS[int(w[_R_OP])]}, {_where(w)})"
                         + (f"; {_who(missing)} did not reach it" if missing else ""))
        groups: dict[str, list[int]] = {}
        for r in range(self.size):
            if r not in recs:
                groups.setdefault("never reported", []).append(r)
                continue
            text = f"{_where(recs[r])}, {_coll(recs[r])}"
            if r in silent:
                text = f"silent for {ages[r]:.1f} s; its last heartbeat said: {text}"
            groups.setdefault(text, []).append(r)
        for text, rs in groups.items():
            lines.append(f"watchdog:   {_who(rs)}: {text}")
        lines.append("watchdog: Python stacks follow ([rank N] lines) from every rank that can still print one")
        return "".join(line + "\n" for line in lines)


class _Off:
    """No watchdog (run.watchdog_s = 0, a debug session, or no MPI_THREAD_MULTIPLE)."""

    fired = False

    def close(self) -> None:
        pass


def start(comm, setting: float, *, debug: bool = False, log_path: str | None = None, say=None):
    """Start the watchdog for the training loop (every rank, same arguments: creating it is collective).

    ``setting``: run.watchdog_s (-1 auto, 0 off, > 0 seconds). Returns an object with ``close()``,
    to be called on every rank after training (collective).
    """
    if setting == 0:
        return _Off()
    if debug:
        if say:
            say("watchdog: off during a debug session (--debug-rank)")
        return _Off()
    if not getattr(comm, "threads_ok", lambda: True)():
        if say:
            say("watchdog: off (MPI was not initialised with MPI_THREAD_MULTIPLE)")
        return _Off()
    channel = comm.watch_channel(tuple(range(min(comm.size, 2))), RECORD)
    return Watchdog(channel, comm.rank, comm.size, setting, log_path=log_path).start()
