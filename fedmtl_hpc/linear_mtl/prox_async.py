"""prox_async: asynchronous proximal gradient with a proximal server (in the spirit of AMTL, Baytas et al. 2016).

Rank 0 is the server and holds V (the forward points of all T tasks) and W = prox(V); ranks 1..P-1 hold
contiguous blocks of tasks. A task rank loops: forward step on its own columns u_t = w_t - (grad f_t(w_t)
+ lam2 w_t) / L, ``Isend`` of u to the server, ``Irecv`` of fresh columns; no global barrier. The server
waits on any task rank (``Waitany`` over pre-posted ``Irecv``s), relaxes v_t <- v_t + relax (u_t - v_t)
for that rank's tasks, recomputes W = prox_{lam/L}(V) (l21: row norms; nuclear: SVD of V) and answers
with that rank's fresh columns (``Isend``). Bounded staleness: a rank whose tasks are more than
``max_staleness`` updates ahead of the slowest task waits for its reply until the slowest catches up.

A round ends after ``updates_per_round`` server updates: every task rank's next reply says "pause",
then all ranks meet in two collectives (the server's W to everyone; per-task losses, update counts and
the stop vote), which gives the metrics row, checkpoints and stop handling of the other solvers.
Round-to-round relative objective change <= mtl.tol stops the run.
"""

from __future__ import annotations

import math
import time

import numpy as np

from . import objective as obj
from .data import task_block
from .solver import MTLSolver

__all__ = ["ProxAsync"]

TAG_UP, TAG_DOWN = 11, 12
CONTINUE, PAUSE = 0.0, 1.0


class ProxAsync(MTLSolver):
    def __init__(self, cfg, comm, meta):
        p = cfg.algorithm.params
        super().__init__(cfg, comm, meta)
        self.p = p
        self.per_round = p.updates_per_round or 10 * self.T
        self.updates = np.zeros(self.T, dtype=np.int64)          # server's count per task (agreed at round ends)
        self.V = np.zeros((self.T, self.d)) if comm.rank == 0 else None
        self.Wsrv = np.zeros((self.T, self.d)) if comm.rank == 0 else None
        self.delay = p.delay_seconds if comm.rank in p.delay_ranks else 0.0
        self.L = math.nan

    @property
    def columns(self):
        return ("updates_min", "updates_max", "held", *(f"updates_{t}" for t in range(self.T) if self.T <= 64))

    def block(self, rank: int) -> range:
        if rank == 0:
            return range(0, 0)
        return task_block(self.T, self.comm.size - 1, rank - 1)

    # -- set-up --------------------------------------------------------------------------------------
    def before_training(self) -> None:
        buf = self.task_rows(1)
        for i, t in enumerate(self.own):
            buf[t, 0] = obj.lipschitz(self.m.loss, self.data.X[i])
        self.reduced(buf)
        self.L = float(buf[:, 0].max()) + self.m.lam2
        if not math.isfinite(self.F):
            self.F = self._sync_objective()[0]

    def _prox(self) -> float:
        """Server: W = prox(V); returns lam * Omega(W)."""
        tau = self.m.lam / self.L
        if self.m.regularizer == "l21":
            self.Wsrv, norms = obj.prox_l21(self.V, (self.V * self.V).sum(axis=0), tau)
            return self.m.lam * float(norms.sum())
        self.Wsrv, nuc = obj.prox_nuclear(self.V, tau)
        return self.m.lam * nuc

    def _sync_objective(self, extra: np.ndarray | None = None):
        """Round end (collective): the server's W to every rank, then per-task losses; returns (F, reduced extra)."""
        rows = self.Wsrv if self.comm.rank == 0 else np.zeros((0, self.d))
        counts = [self.T] + [0] * (self.comm.size - 1)
        full = self.comm.allgather_rows(np.ascontiguousarray(rows), counts)
        self.W = np.ascontiguousarray(full[self.own.start:self.own.stop])
        buf = self.task_rows(2)
        for i, t in enumerate(self.own):
            buf[t] = (obj.task_loss(self.m.loss, self.data.X[i], self.data.y[i], self.W[i]), self.W[i] @ self.W[i])
        tail = np.zeros(4) if extra is None else extra
        flat = np.concatenate([buf.reshape(-1), tail])
        self.comm.allreduce_(flat)
        per = flat[:2 * self.T].reshape(self.T, 2)
        F = float(per[:, 0].sum() + 0.5 * self.m.lam2 * per[:, 1].sum()
                  + self.m.lam * obj.omega(self.m.regularizer, full))
        return F, flat[2 * self.T:], full.nbytes + flat.nbytes * self.comm.size

    # -- one round ------------------------------------------------------------------------------------------
    def step(self):
        t0 = time.perf_counter()
        if self.comm.rank == 0:
            nbytes, t_wait, held_total = self._serve()
        else:
            nbytes, t_wait, held_total = self._work(), 0.0, 0
        extra = np.zeros(4)
        extra[0] = self.vote()
        if self.comm.rank == 0:
            extra[1] = nbytes
            extra[2] = held_total
        F, red, b = self._sync_objective(extra)
        rel = abs(self.F - F) / max(abs(F), 1e-300)
        self.F = F
        self.round += 1
        if rel <= self.m.tol:
            self.converged = "objective"
        counts = self._counts()
        ex = {"rel_change": rel, "updates_min": float(counts.min()), "updates_max": float(counts.max()),
              "held": float(red[2])}
        if self.T <= 64:
            ex.update({f"updates_{t}": float(c) for t, c in enumerate(counts)})
        t_all = time.perf_counter() - t0
        return self.stats(t_all - t_wait, t_wait, int(red[1]) + b, float(red[0]), **ex)

    def _counts(self) -> np.ndarray:
        """Update counts per task on every rank (they ride in the round end's all-reduce next time; here:
        the server's, broadcast through a small all-reduce)."""
        c = self.updates.astype(np.float64) if self.comm.rank == 0 else np.zeros(self.T)
        self.comm.allreduce_(c)
        self.updates = c.astype(np.int64)
        return self.updates

    def _work(self) -> int:
        """Task rank: push forward steps until the server says pause."""
        m, X, y = self.m, self.data.X, self.data.y
        n = len(self.own)
        send = np.empty(n * self.d)
        recv = np.empty(n * self.d + 1)
        while True:
            if self.delay:
                time.sleep(self.delay)
            U = send.reshape(n, self.d)
            for i in range(n):
                g = obj.task_grad(m.loss, X[i], y[i], self.W[i])
                if m.lam2:
                    g = g + m.lam2 * self.W[i]
                U[i] = self.W[i] - g / self.L
            rq = [self.comm.isend(send, 0, TAG_UP), self.comm.irecv(recv, 0, TAG_DOWN)]
            self.comm.waitall(rq)
            self.W = recv[:-1].reshape(n, self.d).copy()
            if recv[-1] == PAUSE:
                return 0

    def _serve(self):
        """Server: apply pushes as they come, answer with fresh columns, pause everyone after per_round."""
        comm, P, d = self.comm, self.comm.size, self.d
        blocks = [self.block(r) for r in range(P)]
        up = {r: np.empty(len(blocks[r]) * d) for r in range(1, P)}
        down = {r: np.empty(len(blocks[r]) * d + 1) for r in range(1, P)}
        sends: dict[int, object] = {}
        recvs = [comm.irecv(up[r], r, TAG_UP) for r in range(1, P)]
        live = set(range(1, P))
        held: list[int] = []
        applied, nbytes, t_wait, held_total = 0, 0, 0.0, 0
        relax, s = self.p.relax, self.p.max_staleness

        def reply(r, flag):
            nonlocal nbytes
            if r in sends:
                sends[r].Wait()
            b = blocks[r]
            down[r][:-1] = self.Wsrv[b.start:b.stop].reshape(-1)
            down[r][-1] = flag
            sends[r] = comm.isend(down[r], r, TAG_DOWN)
            nbytes += down[r].nbytes
            if flag == PAUSE:
                live.discard(r)
            else:
                recvs[r - 1] = comm.irecv(up[r], r, TAG_UP)

        while live:
            t1 = time.perf_counter()
            i = comm.waitany([recvs[r - 1] for r in range(1, P)])
            t_wait += time.perf_counter() - t1
            r = i + 1
            b = blocks[r]
            U = up[r].reshape(len(b), d)
            self.V[b.start:b.stop] += relax * (U - self.V[b.start:b.stop])
            self.updates[b.start:b.stop] += 1
            applied += 1
            nbytes += up[r].nbytes
            self._prox()
            pausing = applied >= self.per_round
            if pausing:
                reply(r, PAUSE)
                for q in held:
                    reply(q, PAUSE)
                held.clear()
                continue
            lo = self.updates.min()
            if s and self.updates[b.start:b.stop].min() > lo + s:
                held.append(r)
                held_total += 1
            else:
                reply(r, CONTINUE)
            for q in list(held):
                bq = blocks[q]
                if self.updates[bq.start:bq.stop].min() <= lo + s:
                    held.remove(q)
                    reply(q, CONTINUE)
        for req in sends.values():
            req.Wait()
        return nbytes, t_wait, held_total

    # -- checkpoint / summary ---------------------------------------------------------------------------
    def state_attrs(self):
        return {"step_L": self.L, "updates_per_round": self.per_round}

    def state_arrays(self):
        out = {"updates": self.updates.copy()}
        if self.comm.rank == 0:
            out["V"] = np.ascontiguousarray(self.V.T)
        return out

    def state_arrays_names(self):
        return ("updates", "V")

    def restore_state(self, attrs, arrays):
        self.updates = np.asarray(arrays["updates"], dtype=np.int64).copy()
        if self.comm.rank == 0:
            self.V = np.ascontiguousarray(np.asarray(arrays["V"]).T)
            self.Wsrv = np.ascontiguousarray(np.asarray(arrays["W"]))

    def coupling(self, Wfull):
        return self.m.lam * obj.omega(self.m.regularizer, Wfull)

    def summary_extra(self, Wfull):
        return {"updates_per_task": [int(c) for c in self.updates]}

    def summary_line(self) -> str:
        return super().summary_line() + f"; rank 0 is the proximal server, {self.comm.size - 1} task rank(s)"

    def describe(self) -> str:
        return (f"prox_async: Omega = {self.m.regularizer}, relax {self.p.relax}, max_staleness "
                f"{self.p.max_staleness or 'unbounded'}, {self.per_round} server updates per round"
                + (f", ranks {self.p.delay_ranks} slowed by {self.p.delay_seconds} s per update"
                   if self.p.delay_seconds and self.p.delay_ranks else ""))
