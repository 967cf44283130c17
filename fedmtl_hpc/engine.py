"""The round loop of the federated algorithms. It knows the phases, not MPI internals, files or metrics.

Per round: sample clients (same seeded answer on every rank), ``algorithm.begin_round``,
local work for each of the rank's participating clients, then the exchange strategy of
``algorithm.mode`` (``exchange/``): client-server reduces the algorithm's payload in ONE
in-place all-reduce and lets the algorithm finish the round; decentralized mixes each
client's own copy with its graph neighbours. Evaluation, metrics, checkpoints, progress
and stop handling are callbacks (``callbacks.py``).

The engine implements the loop protocol the runner and callbacks rely on (``loop.py``):
``run``, ``step``, ``evaluate``, ``snapshot``, ``restore``, ``describe``, ``metrics``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from . import rng, signals
from .algorithms import ALGORITHMS
from .config import Config, config_to_yaml
from .data.base import ClientData, contiguous_block
from .errors import CheckpointError, NumericalError
from .exchange import make_exchange
from .loop import Loop, RoundStats
from .metrics import MetricsTable
from .schedule import lr_at

__all__ = ["Engine", "ClientStore", "build_engine", "check_local_result", "sample_clients", "accuracy_row"]


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
    """The federated engine; ``algorithm.mode`` picks its exchange strategy."""
    return Engine(cfg, comm, dataset, model, factory, device)


class ClientStore:
    """Private state of a rank's clients: one ``[n_local, *shape]`` tensor per name.

    ``state(i)`` returns row views; algorithms update them with ``copy_``,
    so one client's update can never reach another client's row.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], n_local: int, device):
        self.tensors = {k: torch.zeros((n_local, *s), device=device) for k, s in shapes.items()}

    def state(self, i: int) -> dict[str, torch.Tensor]:
        return {k: t[i] for k, t in self.tensors.items()}


class Engine(Loop):
    """Owns the run's state on this rank and runs rounds; see the module docstring."""

    def __init__(self, cfg: Config, comm, dataset, model, factory, device: torch.device):
        self.cfg, self.comm, self.dataset, self.model = cfg, comm, dataset, model
        self.device = device
        self.algo = ALGORITHMS[cfg.algorithm.name](cfg, model, factory, device)
        n, u = dataset.n_clients, dataset.n_unseen
        self.train_ids = contiguous_block(n, comm.size, comm.rank)
        ub = contiguous_block(u, comm.size, comm.rank)
        self.unseen_ids = range(n + ub.start, n + ub.stop)
        self.counts = [len(contiguous_block(n, comm.size, r)) for r in range(comm.size)]
        self.clients: list[ClientData] = [dataset.client(c).to(device) for c in self.train_ids]
        self.unseen: list[ClientData] = [dataset.client(c).to(device) for c in self.unseen_ids]
        self.weights = [self.algo.weight(d) for d in self.clients]
        self.store = ClientStore(self.algo.state_shapes(), len(self.clients), device)
        for i, cid in enumerate(self.train_ids):
            for k, v in self.algo.init_state(cid).items():
                self.store.tensors[k][i].copy_(v)
        self.exchange = make_exchange(self)
        self._w_total: float | None = None                            # sum of all clients' weights
        self.round = 0                                               # rounds completed
        self.callbacks: list = []
        extra = ("test_acc_unseen",) if u else ()
        self.metrics = MetricsTable(extra + tuple(self.exchange.columns) + tuple(self.algo.columns))
        # totals since the last metrics row (callbacks.Evaluate turns them into a row)
        self.window = {"bytes_exchanged": 0.0, "t_compute": 0.0, "t_exchange": 0.0, "t_checkpoint": 0.0}

    @property
    def shared(self) -> torch.Tensor:
        """The algorithm's shared stack ``[K, P]`` (the server state every rank holds)."""
        return self.algo.shared

    # -- the loop ---------------------------------------------------------------
    def before_training(self) -> None:
        """sum_t n_t over all clients (one small all-reduce, before round 1, so every round has one)."""
        self.algo.setup(self.dataset.n_clients, self._total_weight())

    def step(self) -> RoundStats:
        """One round: local work on this rank's sampled clients, then the exchange."""
        cfg, r = self.cfg, self.round
        mask = sample_clients(cfg.run.seed, r, self.dataset.n_clients, cfg.train.participation)
        t0 = time.perf_counter()
        self.algo.begin_round(r, mask)
        self.exchange.begin_round(r)
        inv = 1.0 / self._total_weight()
        w_s = loss_s = 0.0
        for i, (cid, data) in enumerate(zip(self.train_ids, self.clients)):
            w = self.weights[i]
            if not mask[cid]:
                self.exchange.idle(i, cid, w * inv)
                continue
            gen = rng.torch_stream(cfg.run.seed, rng.TRAIN, cid, r)
            res = self.algo.local_update(data, self.exchange.start(i, cid), self.store.state(i), gen)
            check_local_result(res, cid, r)  # finite contributions -> a finite aggregate
            self.exchange.trained(i, cid, w * inv, res)
            w_s += w
            loss_s += w * res.loss
        t1 = time.perf_counter()
        loss, stop, nbytes, extra = self.exchange.finish(w_s, loss_s, signals.requested())
        t2 = time.perf_counter()
        self.round += 1
        return RoundStats(round=self.round, train_loss=loss, t_compute=t1 - t0, t_exchange=t2 - t1,
                          bytes_exchanged=nbytes, stop=stop or self.round == cfg.run.stop_after, extra=extra)

    def _total_weight(self) -> float:
        if self._w_total is None:
            v = np.array([sum(self.weights)], dtype=np.float64)
            self.comm.allreduce_(v)
            self._w_total = float(v[0])
        return self._w_total

    # -- evaluation ---------------------------------------------------------------
    def evaluate(self) -> dict:
        """Per-client test accuracy (+ the exchange's extras), reduced over ranks in one all-reduce."""
        n, u = self.dataset.n_clients, self.dataset.n_unseen
        k = self.exchange.eval_slots
        v = torch.zeros(2 * (n + u) + k, dtype=torch.float64)
        ref = self.exchange.reference()   # a collective in gossip mode: every rank, every evaluation
        with torch.no_grad():
            for i, data in enumerate(self.clients):
                shared, state = self._personal(data, self.exchange.eval_params(i, data.cid), self.store.state(i))
                v[2 * data.cid:2 * data.cid + 2] = torch.tensor(
                    [self._correct(data, shared, state), data.n_test], dtype=torch.float64)
            for data in self.unseen:
                state = {key: val.clone() for key, val in self.algo.init_state(data.cid).items()}
                self.algo.adapt(data, ref, state)
                shared, state = self._personal(data, ref, state)
                v[2 * data.cid:2 * data.cid + 2] = torch.tensor(
                    [self._correct(data, shared, state), data.n_test], dtype=torch.float64)
            if k:
                self.exchange.fill_eval(v[-k:])
        self.comm.allreduce_(v)
        out = accuracy_row(v.numpy(), n, u)
        if k:
            out.update(self.exchange.read_eval(v[-k:].numpy()))
        # per-client accuracies (not metric columns: "_" keys go to metrics.h5 as [rows, clients])
        acc = v[0:2 * (n + u):2].numpy() / v[1:2 * (n + u):2].numpy()
        out["_client_test_acc"] = acc[:n].copy()
        if u:
            out["_unseen_test_acc"] = acc[n:].copy()
        return out

    def _personal(self, data: ClientData, shared: torch.Tensor, state: dict):
        """What the client predicts with at this evaluation (FedAvg+ fine-tunes a copy here)."""
        gen = rng.torch_stream(self.cfg.run.seed, rng.EVAL, data.cid, self.round)
        with torch.enable_grad():
            return self.algo.personalize(data, shared, state, gen)

    def _correct(self, data: ClientData, shared: torch.Tensor, state) -> float:
        return float(sum((self.algo.predict_proba(x, shared, state).argmax(dim=1) == y).sum()
                         for x, y in data.iter_test()))

    # -- checkpoint --------------------------------------------------------------------
    def snapshot(self):
        """Gather every client's state to rank 0 and build the Snapshot (None on other ranks).

        The checkpoint is the union of what each part declares: the algorithm (shared stack,
        ``state_dict`` -> /algorithm), the client store (/clients/state), the exchange (each
        client's own components and /topology in gossip mode), the metrics table.
        """
        from .checkpoint import Snapshot
        comm, cfg = self.comm, self.cfg
        tensors = {**self.store.tensors, **self.exchange.client_tensors()}
        states = {k: comm.gather_rows(t.detach().cpu().numpy(), self.counts) for k, t in tensors.items()}
        weights = comm.gather_rows(np.asarray(self.weights, dtype=np.float64), self.counts)
        if comm.rank != 0:
            return None
        snap = Snapshot(
            round=self.round, algorithm=cfg.algorithm.name, config_text=config_to_yaml(cfg),
            shared=self.shared.detach().cpu().numpy(), layout=self.model.layout.as_dict(),
            client_ids=np.arange(self.dataset.n_clients, dtype=np.int64), client_weight=weights,
            client_state=states, seed=cfg.run.seed, partition=self.dataset.partition_info(),
            groups={"algorithm": self.algo.state_dict()},
            metrics=self.metrics.deterministic(),
            pending={"bytes_exchanged": self.window["bytes_exchanged"]},
            attrs={"rounds_total": cfg.run.rounds, "world_size": comm.size})
        self.exchange.finish_snapshot(snap)
        return snap

    def restore(self, snap) -> None:
        """Load a checkpoint Snapshot whose client rows are this rank's (``checkpoint.load(rows=...)``)."""
        if snap.algorithm != self.cfg.algorithm.name:
            raise CheckpointError(f"checkpoint holds {snap.algorithm}, the run needs {self.cfg.algorithm.name}")
        if list(snap.client_ids) != list(self.train_ids):
            raise CheckpointError("checkpoint client ids do not match this rank's clients")
        self.algo.load_state_dict(snap.groups.get("algorithm", {"attrs": {}, "arrays": {}}), snap.shared)
        for k, t in self.store.tensors.items():
            if k not in snap.client_state or tuple(snap.client_state[k].shape) != tuple(t.shape):
                raise CheckpointError(f"checkpoint client state {k!r} is missing or has the wrong shape")
            t.copy_(torch.from_numpy(snap.client_state[k]))
        self.round = snap.round
        # as during a run: the algorithm holds the 0-based index of the last round and its lr
        self.algo.round = max(snap.round - 1, 0)
        self.algo.lr = lr_at(self.cfg.train, self.cfg.run.rounds, self.algo.round)
        self.exchange.restore(snap)
        self.window["bytes_exchanged"] = float(snap.pending.get("bytes_exchanged", 0.0))

    def describe(self) -> str:
        return self.exchange.describe()

    def checkpoint_rows(self):
        return self.train_ids

    def check_resume(self, snap) -> None:
        """Refuse a checkpoint whose data partition differs from this run's."""
        digest = self.dataset.partition_info()["sha256"]
        if snap.partition.get("sha256") != digest:
            raise CheckpointError(f"the data partition changed since the checkpoint "
                                  f"(sha256 {snap.partition.get('sha256')} != {digest}); refusing to resume")

    def summary_fields(self) -> dict:
        """The Bayes oracle's mean client test accuracy (synthetic data; None otherwise). Collective."""
        if not hasattr(self.dataset, "oracle_correct"):
            return {"oracle_test_acc": None}
        n = self.dataset.n_clients
        v = np.zeros(n, dtype=np.float64)
        for d in self.clients:
            v[d.cid] = self.dataset.oracle_correct(d.cid, d) / d.n_test
        self.comm.allreduce_(v)
        return {"oracle_test_acc": float(v.mean())}

    def summary_line(self) -> str:
        return (f"{self.cfg.data.n_clients} clients, {self.cfg.algorithm.name}, {self.model.n_params} params x "
                f"{self.shared.shape[0]} shared component(s)")


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
