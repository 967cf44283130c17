"""The round loop. It knows the phases, not MPI internals, files or metrics.

Per round: sample clients (same seeded answer on every rank), local work for
each of the rank's participating clients, reduce the rank's contributions
locally into one float64 buffer, ONE in-place all-reduce, finish the
aggregate. Evaluation, metrics, checkpoints, progress and stop handling are
callbacks (``callbacks.py``). The reduced buffer's layout is:

    [ sum_t (w_t / W) theta_t (K*P) | sum_sampled w_t | sum_sampled w_t loss_t | stop votes ]

with W = sum of all clients' weights (reduced once, before round 1), so the reduced
parameter block already is the new global model. Non-sampled clients contribute
(w_t / W) theta_global (the unbiased rule for partial participation). Decentralized mode (no server, gossip over a graph
of clients) is ``decentralized.DecentralizedEngine``, a subclass that replaces
the local round, the exchange and the evaluation; ``build_engine`` picks the
class from ``algorithm.mode``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import rng, signals
from .algorithms import ALGORITHMS
from .config import Config
from .data.base import ClientData, contiguous_block
from .errors import NumericalError
from .metrics import MetricsTable

__all__ = ["Engine", "RoundStats", "build_engine", "check_local_result", "sample_clients"]

_WS, _LOSS, _STOP = range(3)  # slots after the parameters
_SLOTS = 3


def sample_clients(seed: int, rnd: int, n: int, participation: float) -> np.ndarray:
    """Boolean mask ``[n]`` of the clients taking part in round ``rnd`` (identical on all ranks)."""
    if participation >= 1.0:
        return np.ones(n, dtype=bool)
    k = max(1, int(round(participation * n)))
    mask = np.zeros(n, dtype=bool)
    mask[rng.np_stream(seed, rng.SAMPLE, rnd).choice(n, size=k, replace=False)] = True
    return mask


def check_local_result(res, cid: int, rnd: int) -> None:
    """NaN/Inf in a client's loss or parameters stops the run, naming client and round (1-based)."""
    if not math.isfinite(res.loss):
        raise NumericalError(f"training loss is {res.loss} on client {cid} in round {rnd + 1}")
    if res.params is not None and res.params.numel() and not bool(torch.isfinite(res.params).all()):
        raise NumericalError(f"parameters hold NaN or Inf on client {cid} in round {rnd + 1}")


def build_engine(cfg: Config, comm, dataset, model, factory, device: torch.device) -> "Engine":
    """The engine for ``cfg.algorithm.mode``: Engine (client-server) or DecentralizedEngine."""
    if cfg.algorithm.mode == "decentralized":
        from .decentralized import DecentralizedEngine
        return DecentralizedEngine(cfg, comm, dataset, model, factory, device)
    return Engine(cfg, comm, dataset, model, factory, device)


@dataclass
class RoundStats:
    """What one round produced; callbacks read it."""

    round: int                       # 1-based number of the round just finished
    train_loss: float
    t_compute: float
    t_exchange: float
    bytes_exchanged: int
    stop: bool = False
    extra: dict = field(default_factory=dict)


class ClientStore:
    """Private state of a rank's clients: one ``[n_local, *shape]`` tensor per name.

    ``state(i)`` returns row views; algorithms update them with ``copy_``,
    so one client's update can never reach another client's row.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], n_local: int, device):
        self.tensors = {k: torch.zeros((n_local, *s), device=device) for k, s in shapes.items()}

    def state(self, i: int) -> dict[str, torch.Tensor]:
        return {k: t[i] for k, t in self.tensors.items()}


class Engine:
    """Owns the run's state on this rank and runs rounds; see the module docstring."""

    def __init__(self, cfg: Config, comm, dataset, model, factory, device: torch.device):
        self.cfg, self.comm, self.dataset, self.model = cfg, comm, dataset, model
        self.device = device
        self.algo = ALGORITHMS[cfg.algorithm.name](cfg, model, factory, device)
        n, u = dataset.n_clients, dataset.n_unseen
        self.train_ids = contiguous_block(n, comm.size, comm.rank)
        self.unseen_ids = range(n + contiguous_block(u, comm.size, comm.rank).start,
                                n + contiguous_block(u, comm.size, comm.rank).stop)
        self.counts = [len(contiguous_block(n, comm.size, r)) for r in range(comm.size)]
        self.clients: list[ClientData] = [dataset.client(c).to(device) for c in self.train_ids]
        self.unseen: list[ClientData] = [dataset.client(c).to(device) for c in self.unseen_ids]
        self.weights = [self.algo.weight(d) for d in self.clients]
        self.shared = self.algo.init_shared()                       # [K, P] float32
        self.store = ClientStore(self.algo.state_shapes(), len(self.clients), device)
        for i, cid in enumerate(self.train_ids):
            for k, v in self.algo.init_state(cid).items():
                self.store.tensors[k][i].copy_(v)
        kp = self.shared.numel()
        # the one exchanged buffer (CPU, float64); numpy allocates it so large buffers get huge pages
        self.buffer = torch.from_numpy(np.zeros(kp + _SLOTS))
        self._slots = self.buffer.numpy()[kp:]
        self._cast = (self.shared.view(-1), self.buffer[:kp])  # (float32 target, float64 source) views
        self._w_total: float | None = None                            # sum of all clients' weights
        self.round = 0                                               # rounds completed
        self.callbacks: list = []
        self.metrics = MetricsTable(("test_acc_unseen",) if dataset.n_unseen else ())
        # totals since the last metrics row (callbacks.Evaluate turns them into a row)
        self.window = {"bytes_exchanged": 0.0, "t_compute": 0.0, "t_exchange": 0.0, "t_checkpoint": 0.0}

    # -- the loop ---------------------------------------------------------------
    def run(self) -> str:
        """Run until cfg.run.rounds or a stop signal; returns 'done' or 'stopped'."""
        self._total_weight()  # before round 1, so that every round has exactly one collective
        for cb in self.callbacks:
            cb.on_train_begin(self)
        status = "done"
        while self.round < self.cfg.run.rounds:
            stats = self.step()
            for cb in self.callbacks:
                cb.after_round(self, stats)
            if stats.stop:
                status = "stopped"
                break
        for cb in self.callbacks:
            cb.on_train_end(self, status)
        return status

    def step(self) -> RoundStats:
        """One round: local work on this rank's sampled clients, then the exchange."""
        t0 = time.perf_counter()
        self.local_round()
        t1 = time.perf_counter()
        loss, stop = self.exchange()
        t2 = time.perf_counter()
        self.round += 1
        stop = stop or self.round == self.cfg.run.stop_after
        return RoundStats(round=self.round, train_loss=loss, t_compute=t1 - t0, t_exchange=t2 - t1,
                          bytes_exchanged=self.buffer.numel() * self.buffer.element_size() * self.comm.size,
                          stop=stop)

    def local_round(self) -> None:
        """Train the rank's sampled clients; leave their (n_t / n)-weighted sum in ``self.buffer``.

        Contributions are scaled by the total weight n (reduced once before the first
        round), so the reduced buffer already is the new global model: the exchange
        costs one all-reduce and one cast, nothing else.
        """
        cfg, r = self.cfg, self.round
        mask = sample_clients(cfg.run.seed, r, self.dataset.n_clients, cfg.train.participation)
        kp, inv = self.shared.numel(), 1.0 / self._total_weight()
        on_cpu = self.device.type == "cpu"
        acc = self.buffer[:kp] if on_cpu else torch.zeros(kp, dtype=torch.float64, device=self.device)
        acc.zero_()
        w_s = loss_s = idle = 0.0
        for i, (cid, data) in enumerate(zip(self.train_ids, self.clients)):
            w = self.weights[i]
            if not mask[cid]:
                idle += w  # unbiased rule: a non-sampled client contributes the current global model
                continue
            gen = rng.torch_stream(cfg.run.seed, rng.TRAIN, cid, r)
            res = self.algo.local_update(data, self.shared, self.store.state(i), gen)
            check_local_result(res, cid, r)  # finite contributions -> a finite convex combination
            if kp:
                acc.add_(res.params.reshape(-1), alpha=w * inv)
            w_s += w
            loss_s += w * res.loss
        if kp and idle:
            acc.add_(self.shared.reshape(-1), alpha=idle * inv)
        if not on_cpu:
            self.buffer[:kp].copy_(acc)
        self._slots[_WS], self._slots[_LOSS] = w_s, loss_s

    def _total_weight(self) -> float:
        """sum_t n_t over all training clients (one small all-reduce, the first call only)."""
        if self._w_total is None:
            v = np.array([sum(self.weights)], dtype=np.float64)
            self.comm.allreduce_(v)
            self._w_total = float(v[0])
        return self._w_total

    def exchange(self) -> tuple[float, bool]:
        """The round's one in-place all-reduce; the result is cast into the shared stack.

        Returns (weighted mean training loss of the sampled clients, stop agreed).
        """
        slots = self._slots
        slots[_STOP] = 1.0 if signals.requested() else 0.0
        self.comm.allreduce_(self.buffer)
        if self._cast[0].numel():
            self._cast[0].copy_(self._cast[1])  # float64 -> float32, into the existing shared storage
        return float(slots[_LOSS] / slots[_WS]), bool(slots[_STOP] > 0)

    # -- evaluation ---------------------------------------------------------------
    def evaluate(self) -> dict:
        """Per-client test accuracy, reduced over ranks (one all-reduce)."""
        n, u = self.dataset.n_clients, self.dataset.n_unseen
        v = torch.zeros(2 * (n + u), dtype=torch.float64)
        with torch.no_grad():
            for i, data in enumerate(self.clients):
                v[2 * data.cid:2 * data.cid + 2] = torch.tensor(
                    [self._correct(data, self.store.state(i)), data.n_test], dtype=torch.float64)
            for data in self.unseen:
                state = {k: val.clone() for k, val in self.algo.init_state(data.cid).items()}
                self.algo.adapt(data, self.shared, state)
                v[2 * data.cid:2 * data.cid + 2] = torch.tensor(
                    [self._correct(data, state), data.n_test], dtype=torch.float64)
        self.comm.allreduce_(v)
        return accuracy_row(v.numpy(), n, u)

    def _correct(self, data: ClientData, state, shared: torch.Tensor | None = None) -> float:
        shared = self.shared if shared is None else shared
        return float(sum((self.algo.predict_proba(x, shared, state).argmax(dim=1) == y).sum()
                         for x, y in data.iter_test()))

    # -- checkpoint hooks (callbacks.snapshot) ----------------------------------
    def client_tensors(self) -> dict[str, torch.Tensor]:
        """Per-client ``[n_local, ...]`` tensors a checkpoint gathers (name -> tensor)."""
        return self.store.tensors

    def finish_snapshot(self, snap) -> None:
        """Rank 0: add what this mode stores beyond the common Snapshot (nothing here)."""

    def describe(self) -> str:
        """A start-up line about the exchange beyond the common one ('' for client-server)."""
        return ""

    # -- resume -------------------------------------------------------------------
    def restore(self, snap) -> None:
        """Load a checkpoint Snapshot whose client rows are this rank's (``checkpoint.load(rows=...)``)."""
        from .errors import CheckpointError
        if snap.algorithm != self.cfg.algorithm.name or tuple(snap.shared.shape) != tuple(self.shared.shape):
            raise CheckpointError(f"checkpoint holds {snap.algorithm} with shared shape {tuple(snap.shared.shape)}, "
                                  f"the run needs {self.cfg.algorithm.name} with {tuple(self.shared.shape)}")
        if list(snap.client_ids) != list(self.train_ids):
            raise CheckpointError("checkpoint client ids do not match this rank's clients")
        self.shared.copy_(torch.from_numpy(snap.shared))
        for k, t in self.store.tensors.items():
            if k not in snap.client_state or tuple(snap.client_state[k].shape) != tuple(t.shape):
                raise CheckpointError(f"checkpoint client state {k!r} is missing or has the wrong shape")
            t.copy_(torch.from_numpy(snap.client_state[k]))
        self.round = snap.round
        self.window["bytes_exchanged"] = float(snap.pending.get("bytes_exchanged", 0.0))


def accuracy_row(v: np.ndarray, n: int, u: int) -> dict:
    """Metrics from the reduced ``[correct_c, total_c]`` pairs of n training + u unseen clients."""
    correct, total = v[0:2 * (n + u):2], v[1:2 * (n + u):2]
    acc = correct[:n] / total[:n]
    out = {"test_acc_mean": float(acc.mean()),
           "test_acc_weighted": float(correct[:n].sum() / total[:n].sum()),
           "test_acc_p10": float(np.percentile(acc, 10))}
    if u:
        out["test_acc_unseen"] = float((correct[n:] / total[n:]).mean())
    return out
