"""The shared Loop of the linear MTL solvers: this rank's tasks, metrics, snapshot/restore of W, summary.

Tasks are dealt to ranks in contiguous blocks; W lives task-major on each rank (``self.W`` [T_local, d],
row i = w of task ``own[i]``), so every task's vector is contiguous and X_t @ w_t is the same
computation whatever the rank count. Per-task scalars are reduced as a [T, k] array in which each task
row has exactly one contributor (exact sums), then summed over tasks in task order on every rank:
objectives do not depend on the rank count's reduction order.

``FistaLoop`` is the accelerated proximal-gradient iteration that prox_sync, clustered_mtl and
mtrl_surrogate share: Z = W + beta (W - W_prev); V = Z - grad(Z) / L; W_new = prox(V); X Z comes from
X W and X W_prev (no extra pass over the data); momentum restarts when F goes up.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from .. import signals
from ..config import config_to_yaml
from ..errors import CheckpointError, NumericalError
from ..loop import Loop, RoundStats
from ..metrics import MetricsTable
from . import objective as obj
from .data import TaskMeta, load_tasks, task_block

__all__ = ["MTLSolver", "FistaLoop"]

RNG_SCHEME = ("numpy SeedSequence([seed, purpose, *keys]); linear MTL purposes TRUTH=21 TASK_DATA=22 (task) "
              "TASK_SPLIT=23 (task); deterministic solvers draw nothing else")
COLUMNS = ("objective", "rel_change", "prox_grad", "test_error_mean", "param_error")


class MTLSolver(Loop):
    """Base of the five solvers; subclasses implement ``step`` and their state hooks."""

    columns: tuple[str, ...] = ()          # extra metric columns of the solver

    def __init__(self, cfg, comm, meta: TaskMeta):
        self.config_text = config_to_yaml(cfg)   # the run's config as given (checkpoints store it)
        # callbacks read cfg.run.rounds as the planned length (progress line): here that is mtl.max_iters
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, rounds=cfg.mtl.max_iters))
        self.cfg, self.comm, self.meta = cfg, comm, meta
        self.m = cfg.mtl
        self.params = cfg.algorithm.params
        self.T, self.d = meta.T, meta.d
        self.counts = [len(self.block(r)) for r in range(comm.size)]
        self.own = self.block(comm.rank)
        self.data = load_tasks(cfg, meta, self.own)
        self.W = np.zeros((len(self.own), self.d))
        self.round = 0
        self.callbacks: list = []
        self.converged: str | None = None         # "objective" | "prox_grad" | "one_shot" once stopped by the rule
        self.F = math.nan                          # objective at W (agreed on every rank)
        self.device, self.local = "cpu", None
        self.metrics = MetricsTable(COLUMNS + tuple(self.columns))
        self.window = {"bytes_exchanged": 0.0, "t_compute": 0.0, "t_exchange": 0.0, "t_checkpoint": 0.0}

    # -- layout -------------------------------------------------------------------------------------
    def block(self, rank: int) -> range:
        """Tasks of ``rank`` (contiguous blocks over all ranks; prox_async: over the task ranks)."""
        return task_block(self.T, self.comm.size, rank)

    def gathered(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """Every rank's task rows in task order, on every rank; and the bytes sent (summed over ranks)."""
        full = self.comm.allgather_rows(np.ascontiguousarray(rows), self.counts)
        return full, full.nbytes

    def reduced(self, buf: np.ndarray) -> int:
        """In-place all-reduce; returns the bytes sent (buffer x ranks, as the federated exchange counts)."""
        self.comm.allreduce_(buf)
        return buf.nbytes * self.comm.size

    def task_rows(self, k: int) -> np.ndarray:
        return np.zeros((self.T, k))

    # -- the loop protocol ----------------------------------------------------------------------------
    def done(self) -> bool:
        return self.converged is not None or self.round >= self.m.max_iters

    def vote(self) -> float:
        return 1.0 if signals.requested() else 0.0

    def stats(self, t_compute: float, t_exchange: float, nbytes: int, stop_vote: float, **extra) -> RoundStats:
        if not math.isfinite(self.F):
            raise NumericalError(f"objective is {self.F} in iteration {self.round}")
        stop = stop_vote > 0 or self.round == self.cfg.run.stop_after
        return RoundStats(round=self.round, train_loss=self.F, t_compute=t_compute, t_exchange=t_exchange,
                          bytes_exchanged=int(nbytes), stop=stop, extra={"objective": self.F, **extra})

    def returned_W(self) -> np.ndarray:
        """This rank's rows of the W the solver returns (task-major)."""
        return self.W

    def evaluate(self) -> dict:
        """Per-task test error (+ accuracy for logistic) and the parameter error against the truth: one
        all-reduce of a [T, 4] array."""
        buf = self.task_rows(4)
        W, truth = self.returned_W(), self.data.truth
        for i, t in enumerate(self.own):
            Xt, yt = self.data.X_test[i], self.data.y_test[i]
            if len(yt):
                buf[t, 0] = obj.test_error(self.m.loss, Xt, yt, W[i])
                buf[t, 1] = len(yt)
            if truth is not None:
                diff = W[i] - truth["W"][t]
                buf[t, 2] = diff @ diff
                buf[t, 3] = truth["W"][t] @ truth["W"][t]
        self.reduced(buf)
        out = {}
        has = buf[:, 1] > 0
        if has.any():
            err = buf[has, 0]
            out["test_error_mean"] = float(err.mean())
            if self.m.loss == "logistic":
                acc = 1.0 - err
                out.update(test_acc_mean=float(acc.mean()), test_acc_p10=float(np.percentile(acc, 10)),
                           test_acc_weighted=float((acc * buf[has, 1]).sum() / buf[has, 1].sum()))
        if truth is not None:
            out["param_error"] = float(math.sqrt(buf[:, 2].sum() / max(buf[:, 3].sum(), 1e-300)))
        return out

    # -- checkpoint -------------------------------------------------------------------------------------
    def state_rows(self) -> dict[str, np.ndarray]:
        """Per-task rows [T_local, ...] the solver needs to resume (gathered into /mtl/<name>, task-major)."""
        return {}

    def state_attrs(self) -> dict:
        """Scalars to resume (attrs of /mtl); identical on every rank."""
        return {}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Whole arrays identical on every rank (e.g. Omega), stored in /mtl."""
        return {}

    def restore_state(self, attrs: dict, arrays: dict) -> None:
        """Set the solver's state from /mtl (every rank reads the whole group)."""

    def snapshot(self):
        from ..checkpoint import Snapshot
        cfg, comm = self.cfg, self.comm
        W = comm.gather_rows(np.ascontiguousarray(self.W), self.counts)
        rows = {k: comm.gather_rows(np.ascontiguousarray(v), self.counts) for k, v in self.state_rows().items()}
        if comm.rank != 0:
            return None
        names = np.array([n.encode() for n in self.meta.names])
        arrays = {"W": np.ascontiguousarray(W.T), "tasks": names,
                  "n_train": np.asarray(self.meta.n_train, dtype=np.int64),
                  **{k: np.ascontiguousarray(v.T) if v.ndim == 2 else v for k, v in rows.items()},
                  **self.state_arrays()}
        attrs = {"solver": cfg.algorithm.name, "loss": self.m.loss, "regularizer": self.m.regularizer,
                 "lam": self.m.lam, "lam2": self.m.lam2, "d": self.d, "n_tasks": self.T, "objective": self.F,
                 "iterations": self.round, "converged": self.converged or "", **self.state_attrs()}
        return Snapshot(
            round=self.round, algorithm=cfg.algorithm.name, config_text=self.config_text, shared=None,
            layout=[], client_ids=np.arange(self.T, dtype=np.int64),
            client_weight=np.asarray(self.meta.n_train, dtype=np.float64), client_state={}, seed=cfg.run.seed,
            partition=self.partition_info(), groups={"mtl": {"attrs": attrs, "arrays": arrays}},
            metrics=self.metrics.deterministic(), pending={"bytes_exchanged": self.window["bytes_exchanged"]},
            attrs={"rounds_total": self.m.max_iters, "world_size": comm.size}, rng_scheme=RNG_SCHEME)

    def partition_info(self) -> dict:
        d = self.cfg.data
        extra = {"path": d.path} if d.name == "mtl_h5" else {"seed": self.cfg.run.seed, "noise": d.noise_std}
        return {"kind": self.meta.kind, "seed": self.cfg.run.seed, "sha256": self.meta.digest(extra)}

    def check_resume(self, snap) -> None:
        digest = self.partition_info()["sha256"]
        if snap.partition.get("sha256") != digest:
            raise CheckpointError(f"the tasks changed since the checkpoint (sha256 {snap.partition.get('sha256')} "
                                  f"!= {digest}); refusing to resume")

    def restore(self, snap) -> None:
        if snap.algorithm != self.cfg.algorithm.name:
            raise CheckpointError(f"checkpoint holds {snap.algorithm}, the run needs {self.cfg.algorithm.name}")
        g = snap.groups.get("mtl")
        if g is None or "W" not in g["arrays"]:
            raise CheckpointError("checkpoint has no /mtl/W")
        arrays, attrs = g["arrays"], g["attrs"]
        names = [bytes(n).decode() for n in arrays.get("tasks", [])]
        if names != self.meta.names or arrays["W"].shape != (self.d, self.T):
            raise CheckpointError(f"checkpoint /mtl holds tasks {names[:3]}... with W {arrays['W'].shape}, "
                                  f"the run has {self.T} tasks x d = {self.d}")
        self.W = np.ascontiguousarray(arrays["W"].T[self.own.start:self.own.stop])
        self.round = snap.round
        self.F = float(attrs["objective"])
        self.converged = str(attrs.get("converged", "")) or None
        self.window["bytes_exchanged"] = float(snap.pending.get("bytes_exchanged", 0.0))
        full = {k: (np.ascontiguousarray(v.T) if v.ndim == 2 and k not in self.state_arrays_names() else v)
                for k, v in arrays.items()}
        self.restore_state(attrs, full)

    def state_arrays_names(self) -> tuple[str, ...]:
        """Names of whole arrays (not task-row arrays) in /mtl: not transposed on restore."""
        return ()

    # -- summary ----------------------------------------------------------------------------------------
    def coupling(self, Wfull: np.ndarray) -> float:
        """The coupling term of the solver's objective at the full task-major W (lam Omega etc.)."""
        raise NotImplementedError

    def exact_objective(self) -> tuple[float, np.ndarray]:
        """F at the returned W, float64, over all tasks (collective); and the full task-major W."""
        W = self.returned_W()
        Wfull, _ = self.gathered(W)
        buf = self.task_rows(1)
        for i, t in enumerate(self.own):
            buf[t, 0] = obj.task_loss(self.m.loss, self.data.X[i], self.data.y[i], W[i])
        self.reduced(buf)
        return float(buf[:, 0].sum() + 0.5 * self.m.lam2 * (Wfull * Wfull).sum() + self.coupling(Wfull)), Wfull

    def summary_fields(self) -> dict:
        F, Wfull = self.exact_objective()
        out = {"rounds": self.m.max_iters, "objective": F, "iterations": self.round,
               "stop_reason": self.converged or ("max_iters" if self.round >= self.m.max_iters else "stopped")}
        truth = self.data.truth
        if truth is not None:
            Wt = truth["W"]
            out["param_error"] = float(np.linalg.norm(Wfull - Wt) / max(np.linalg.norm(Wt), 1e-300))
            if truth.get("support") is not None:
                rows = np.sqrt((Wfull * Wfull).sum(axis=0))
                found = set(np.flatnonzero(rows > 1e-10 * max(rows.max(), 1e-300)).tolist())
                true = set(int(j) for j in truth["support"])
                out["support_true_found"] = len(found & true)
                out["support_false_found"] = len(found - true)
                out["support_size"] = len(true)
            if truth["structure"] == "low_rank":
                r = self.cfg.data.rank
                U1 = np.linalg.svd(Wfull.T, full_matrices=False)[0][:, :r]
                U2 = np.linalg.svd(Wt.T, full_matrices=False)[0][:, :r]
                cosines = np.clip(np.linalg.svd(U1.T @ U2, compute_uv=False), -1.0, 1.0)
                out["subspace_angle_deg"] = float(np.degrees(np.arccos(cosines.min())))
        out.update(self.summary_extra(Wfull))
        return out

    def summary_extra(self, Wfull: np.ndarray) -> dict:
        return {}

    def summary_line(self) -> str:
        return (f"{self.T} tasks x d = {self.d} ({self.meta.kind}), {self.cfg.algorithm.name}, loss {self.m.loss}, "
                f"lam {self.m.lam}, lam2 {self.m.lam2}, tasks per rank {min(self.counts)}-{max(self.counts)}")


class FistaLoop(MTLSolver):
    """Accelerated proximal gradient over the rank's task columns (see the module docstring).

    Hooks: ``prox(V)`` -> (W_new rows, coupling value or None, bytes, seconds) may communicate;
    ``smooth_grad(Zfull)`` -> own rows of the smooth coupling's gradient (needs_full solvers);
    ``lipschitz_extra()`` -> what the coupling adds to L.
    """

    needs_full = False        # True: every rank holds the full W each iteration (one Allgatherv per iteration)
    restart = True

    def __init__(self, cfg, comm, meta):
        super().__init__(cfg, comm, meta)
        self.Wp = self.W.copy()
        self.t, self.tprev = 1.0, 1.0
        self.L = math.nan
        self.restarts = 0
        self.Wf = np.zeros((self.T, self.d)) if self.needs_full else None
        self.Wfp = self.Wf.copy() if self.needs_full else None
        self._fresh = True

    # hooks
    def prox(self, V):
        return V, None, 0, 0.0

    def smooth_grad(self, Zfull):
        return 0.0

    def lipschitz_extra(self) -> float:
        return 0.0

    def before_round(self) -> None:
        """Called at the start of every iteration (MTRL refreshes Omega here)."""

    def before_training(self) -> None:
        X, y = self.data.X, self.data.y
        buf = self.task_rows(1)
        for i, t in enumerate(self.own):
            buf[t, 0] = obj.lipschitz(self.m.loss, X[i])
        self.reduced(buf)
        self.Lf = float(buf[:, 0].max()) + self.m.lam2     # the losses' (+ ridge) gradient Lipschitz constant
        self.L = self.Lf + self.lipschitz_extra()
        self.xw = [X[i] @ self.W[i] for i in range(len(self.own))]
        self.xwp = [X[i] @ self.Wp[i] for i in range(len(self.own))]
        if self._fresh:
            buf = self.task_rows(1)
            for i, t in enumerate(self.own):
                buf[t, 0] = obj.loss_xw(self.m.loss, self.xw[i], y[i])
            self.reduced(buf)
            Wfull = self.Wf if self.needs_full else self.gathered(self.W)[0]
            self.F = float(buf[:, 0].sum() + 0.5 * self.m.lam2 * (Wfull * Wfull).sum() + self.coupling(Wfull))

    def step(self) -> RoundStats:
        m, X, y = self.m, self.data.X, self.data.y
        t0 = time.perf_counter()
        t_ex, nbytes = 0.0, 0
        self.before_round()
        beta = (self.tprev - 1.0) / self.t
        Z = self.W + beta * (self.W - self.Wp)
        G = np.empty_like(Z)
        for i in range(len(self.own)):
            xz = (1.0 + beta) * self.xw[i] - beta * self.xwp[i]
            G[i] = obj.grad_xw(m.loss, X[i], xz, y[i])
        if m.lam2:
            G += m.lam2 * Z
        if self.needs_full:
            Zf = self.Wf + beta * (self.Wf - self.Wfp)
            G += self.smooth_grad(Zf)
        V = Z - G / self.L
        Wn, cval, b, te = self.prox(V)
        t_ex += te
        nbytes += b
        xwn = [X[i] @ Wn[i] for i in range(len(self.own))]
        vote = self.vote()
        if self.needs_full:
            rows = np.empty((len(self.own), self.d + 4))
            rows[:, :self.d] = Wn
            for i in range(len(self.own)):
                dz = Wn[i] - Z[i]
                rows[i, self.d:] = (obj.loss_xw(m.loss, xwn[i], y[i]), dz @ dz, Wn[i] @ Wn[i], vote)
            t1 = time.perf_counter()
            full, b = self.gathered(rows)
            t_ex += time.perf_counter() - t1
            nbytes += b
            Wfn = np.ascontiguousarray(full[:, :self.d])
            per = full[:, self.d:]
            cval = self.coupling(Wfn)
            vote = float(per[:, 3].max())
        else:
            buf = self.task_rows(3)
            for i, t in enumerate(self.own):
                dz = Wn[i] - Z[i]
                buf[t] = (obj.loss_xw(m.loss, xwn[i], y[i]), dz @ dz, Wn[i] @ Wn[i])
            buf = np.concatenate([buf.reshape(-1), [vote]])
            t1 = time.perf_counter()
            nbytes += self.reduced(buf)
            t_ex += time.perf_counter() - t1
            vote = float(buf[-1])
            per = buf[:-1].reshape(self.T, 3)
        Fn = float(per[:, 0].sum() + 0.5 * m.lam2 * per[:, 2].sum() + cval)
        rel = abs(self.F - Fn) / max(abs(Fn), 1e-300)
        pg = self.L * math.sqrt(per[:, 1].sum()) / max(1.0, math.sqrt(per[:, 2].sum()))
        restarted = self.restart and Fn > self.F
        if restarted:
            self.t = self.tprev = 1.0
            self.restarts += 1
        else:
            self.tprev, self.t = self.t, 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * self.t * self.t))
        self.Wp, self.W = self.W, Wn
        self.xwp, self.xw = self.xw, xwn
        if self.needs_full:
            self.Wfp, self.Wf = self.Wf, Wfn
        self.F = Fn
        self.round += 1
        if not restarted and rel <= m.tol:
            self.converged = "objective"
        elif pg <= m.tol:
            self.converged = "prox_grad"
        return self.stats(time.perf_counter() - t0 - t_ex, t_ex, nbytes, vote, rel_change=rel, prox_grad=pg,
                          **self.round_extra())

    def round_extra(self) -> dict:
        return {}

    # -- checkpoint state ---------------------------------------------------------------------------------
    def state_rows(self):
        return {"W_prev": self.Wp}

    def state_attrs(self):
        return {"fista_t": self.t, "fista_t_prev": self.tprev, "step_L": self.L, "restarts": self.restarts}

    def restore_state(self, attrs, arrays):
        self.Wp = np.ascontiguousarray(arrays["W_prev"][self.own.start:self.own.stop])
        self.t, self.tprev = float(attrs["fista_t"]), float(attrs["fista_t_prev"])
        self.restarts = int(attrs.get("restarts", 0))
        if self.needs_full:
            self.Wf = np.ascontiguousarray(arrays["W"])
            self.Wfp = np.ascontiguousarray(arrays["W_prev"])
        self._fresh = False
