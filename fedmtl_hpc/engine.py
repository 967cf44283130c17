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

from . import rng, signals, watchdog
from .algorithms import ALGORITHMS
from .config import Config, config_to_yaml
from .algorithms import batched as batched_mod
from .algorithms.base import LocalResult
from .data.base import ClientBlock, ClientData, balanced_bounds, train_sizes
from .errors import CheckpointError, ConfigError, NumericalError
from .exchange import make_exchange
from .loop import Loop, RoundStats
from .metrics import MetricsTable
from .schedule import lr_at

__all__ = ["Engine", "ClientStore", "build_engine", "check_local_result", "sample_clients", "accuracy_row",
           "eval_selection", "deal"]

LAZY_BYTES = 256 * 2**20   # data.lazy auto: regenerate samples when a rank's would exceed this (and participation < 1)


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


def eval_selection(seed: int, rnd: int, n: int, u: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``[n]``, ``[u]`` of the clients evaluated at ``rnd`` (``run.eval_clients`` = k).

    k == 0 or k >= n: all. Else k training clients and round(k u / n) (at least 1) unseen ones,
    drawn from (seed, EVAL, rnd) (EVAL streams of clients carry two keys, (cid, round)).
    """
    if k <= 0 or k >= n:
        return np.ones(n, dtype=bool), np.ones(u, dtype=bool)
    g = rng.np_stream(seed, rng.EVAL, rnd)
    tr, un = np.zeros(n, dtype=bool), np.zeros(u, dtype=bool)
    tr[g.choice(n, size=k, replace=False)] = True
    if u:
        un[g.choice(u, size=min(u, max(1, int(round(k * u / n)))), replace=False)] = True
    return tr, un


def deal(sizes: np.ndarray | None, n: int, u: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Block bounds ``[size + 1]`` of the training clients and of the unseen ones (0-based among them):
    balanced by training samples when the sizes are known, else equal counts."""
    if sizes is None:
        eq = lambda m: np.arange(size + 1, dtype=np.int64) * m // size  # noqa: E731  (= contiguous_block)
        return eq(n), eq(u)
    return balanced_bounds(sizes[:n], size), balanced_bounds(sizes[n:n + u], size)


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
        t0 = time.perf_counter()
        self.sizes = self._gather_sizes()                            # train samples per client, or None
        tb, ubs = deal(self.sizes, n, u, comm.size)
        self.train_ids = range(int(tb[comm.rank]), int(tb[comm.rank + 1]))
        self.unseen_ids = range(n + int(ubs[comm.rank]), n + int(ubs[comm.rank + 1]))
        self.counts = [int(c) for c in np.diff(tb)]
        self.lazy = self._choose_lazy()
        self.block: ClientBlock | None = None         # the batched path's samples (eager data)
        if self.lazy:   # samples regenerated when a client trains or is evaluated; none held
            self.clients, self.unseen = None, None
            self.weights = [float(self.sizes[c]) for c in self.train_ids]
        else:
            self.clients = self._build_clients()
            self.unseen = [dataset.client(c).to(device) for c in self.unseen_ids]
            self.weights = [self.algo.weight(d) for d in self.clients]
        self.w_np = np.asarray(self.weights, dtype=np.float64)     # the same weights, for array work
        self.batched = self._choose_batched()
        if self.batched and not self.lazy and self.block is None:   # one tensor of the rank's training samples
            self.block = ClientBlock.pack(self.clients)
            self.clients = self.block.views(self.clients)
        self.t_setup = time.perf_counter() - t0
        self.store = ClientStore(self.algo.state_shapes(), len(self.train_ids), device)
        for i, cid in enumerate(self.train_ids):
            for k, v in self.algo.init_state(cid).items():
                self.store.tensors[k][i].copy_(v)
        self.exchange = make_exchange(self)
        self._w_total: float | None = None                            # sum of all clients' weights
        self.round = 0                                               # rounds completed
        self.callbacks: list = []
        extra = ("test_acc_unseen",) if u else ()
        if cfg.run.eval_clients:
            extra = ("eval_clients",) + extra
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
        w_s, loss_s = (self._local_batched if self.batched else self._local_loop)(mask, r, inv)
        t1 = time.perf_counter()
        watchdog.phase(watchdog.EXCHANGE, r + 1)
        loss, stop, nbytes, extra = self.exchange.finish(w_s, loss_s, signals.requested())
        t2 = time.perf_counter()
        self.round += 1
        return RoundStats(round=self.round, train_loss=loss, t_compute=t1 - t0, t_exchange=t2 - t1,
                          bytes_exchanged=nbytes, stop=stop or self.round == cfg.run.stop_after, extra=extra)

    # -- local work (the reference loop and the batched path, algorithms/batched.py) ------------
    def _local_loop(self, mask: np.ndarray, r: int, inv: float) -> tuple[float, float]:
        """The per-client reference path: one ``local_update`` per sampled client, in id order."""
        sampled = self._idle_then_sampled(mask, inv)
        lo, w_s, loss_s = self.train_ids.start, 0.0, 0.0
        for i in sampled.tolist():
            cid, w = lo + i, self.weights[i]
            data = self.clients[i] if self.clients is not None else self._regen(cid, test=False)
            gen = rng.torch_stream(self.cfg.run.seed, rng.TRAIN, cid, r)
            res = self.algo.local_update(data, self.exchange.start(i, cid), self.store.state(i), gen)
            check_local_result(res, cid, r)  # finite contributions -> a finite aggregate
            self.exchange.trained(i, cid, w * inv, res)
            w_s += w
            loss_s += w * res.loss
        return w_s, loss_s

    def _idle_then_sampled(self, mask: np.ndarray, inv: float) -> np.ndarray:
        """Hand the exchange this rank's non-sampled clients (one call); return the sampled local indices."""
        lo = self.train_ids.start
        local = mask[lo:self.train_ids.stop]
        idle = np.flatnonzero(~local)
        self.exchange.idle(idle, idle + lo, self.w_np[idle] * inv)
        return np.flatnonzero(local)

    def _local_batched(self, mask: np.ndarray, r: int, inv: float) -> tuple[float, float]:
        """All sampled clients of the rank in one ``local_update_batch``; then the same exchange
        calls, in the same order, as the reference loop."""
        sampled = self._idle_then_sampled(mask, inv)
        lo, w = self.train_ids.start, self.w_np
        if not len(sampled):
            return 0.0, 0.0
        if self.lazy:
            if hasattr(self.dataset, "train_block"):   # drawn straight into one block (synthetic)
                block = self.dataset.train_block(lo + sampled, reuse=True)   # valid for this round
            else:
                block, _ = ClientBlock.build((self._regen(lo + int(i), test=False) for i in sampled),
                                             int(self.sizes[lo + sampled].sum()))   # filled client by client
            sel = np.arange(len(sampled))
        else:
            block, sel = self.block, sampled
        seed = self.cfg.run.seed
        gens = rng.TorchStreams(seed, rng.TRAIN, lo + sampled, r)     # seeds hashed at once, Generators on demand
        starts = [self.exchange.start(int(i), lo + int(i)) for i in sampled]
        starts = starts[0] if all(s is starts[0] for s in starts) else torch.stack(starts)
        idx = torch.from_numpy(sampled)
        states = {k: t[idx] for k, t in self.store.tensors.items()}      # copies; written back below
        res = self.algo.local_update_batch(block, sel, starts, states, gens)
        for k, t in self.store.tensors.items():
            t[idx] = states[k]
        losses, params = res.losses, res.params
        # one float64 sum is finite iff every float32 entry is (float32 values cannot overflow it)
        if not (np.isfinite(losses).all() and (params is None or math.isfinite(float(params.sum(dtype=torch.float64))))):
            for j, i in enumerate(sampled.tolist()):   # name the first bad client, as the loop would
                check_local_result(LocalResult(None if params is None else params[j], float(losses[j])), lo + i, r)
        ws = w[sampled]
        self.exchange.trained_batch(sampled, lo + sampled, ws * inv, res)   # the rank's clients at once
        return float(ws.sum()), float((ws * losses).sum())

    def _build_clients(self) -> list[ClientData]:
        """The rank's training clients; where the batched path will run and the sizes are known,
        built straight into one block of samples (``self.block``; the clients view it)."""
        ds, ids = self.dataset, self.train_ids
        if (self.cfg.train.batched != "off" and self.sizes is not None and self.device.type == "cpu"
                and batched_mod.supported(self.algo, self.model) is None):
            try:
                self.block, clients = ClientBlock.build((ds.client(c) for c in ids),
                                                        int(self.sizes[ids.start:ids.stop].sum()))
                return clients
            except ValueError:
                self.block = None
        return [ds.client(c).to(self.device) for c in ids]

    def _regen(self, cid: int, test: bool = True) -> ClientData:
        """A lazily held client's samples, regenerated from its stream (identical to the eager ones)."""
        return self.dataset.client(cid, test=test).to(self.device)

    # -- set-up ----------------------------------------------------------------------------
    def _gather_sizes(self) -> np.ndarray | None:
        """Train samples of every client (training then unseen), for dealing clients to ranks.

        A dataset that draws per-client headers (the synthetic mixture) draws them split over
        the ranks and shares them in one all-reduce; one that knows its partition answers
        ``train_sizes()``; otherwise None (equal-count blocks).
        """
        ds, comm = self.dataset, self.comm
        if hasattr(ds, "headers") and getattr(ds, "_n", None) is None and comm.size > 1:
            total = ds.n_clients + ds.n_unseen
            lo, hi = total * comm.rank // comm.size, total * (comm.rank + 1) // comm.size
            n, pi = ds.headers(lo, hi)
            buf = np.zeros((total, 1 + pi.shape[1]), dtype=np.float64)
            buf[lo:hi, 0], buf[lo:hi, 1:] = n, pi
            comm.allreduce_(buf.reshape(-1))          # one owner per row: the sum is exact
            ds.set_headers(buf[:, 0].astype(np.int64), buf[:, 1:].copy())
        return train_sizes(ds)

    def _choose_lazy(self) -> bool:
        """data.lazy: hold no samples; regenerate a client's when it trains or is evaluated."""
        mode = getattr(self.cfg.data, "lazy", "off")
        able = (hasattr(self.dataset, "sample_bytes") and self.sizes is not None
                and self.cfg.algorithm.mode == "client-server")
        if mode == "on" and not able:
            raise ConfigError("data.lazy: on needs a dataset that regenerates clients (synthetic) "
                              "in client-server mode")
        if mode != "auto" or not able:
            return mode == "on"
        held = sum(self.dataset.sample_bytes(int(self.sizes[c])) for c in self.train_ids)
        return self.cfg.train.participation < 1.0 and held > LAZY_BYTES

    def _choose_batched(self) -> bool:
        """train.batched: auto (where supported), on (exit 2 where not), off (reference loop)."""
        mode = self.cfg.train.batched
        if mode == "off":
            return False
        why = batched_mod.supported(self.algo, self.model)
        if why is None and self.device.type != "cpu":
            why = "the batched path runs on CPU"
        if why is None and self.clients is not None and not batched_mod.data_supports(self.clients):
            why = "the data set builds or augments its training batches itself"
        if why is not None and mode == "on":
            raise ConfigError(f"train.batched: on is not supported here: {why}")
        return why is None

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
        ev_tr, ev_un = self._eval_masks()
        with torch.no_grad():
            (self._evaluate_batched if self.batched else self._evaluate_loop)(v, ev_tr, ev_un, ref)
            if k:
                self.exchange.fill_eval(v[-k:])
        self.comm.allreduce_(v)
        sampled = not (ev_tr.all() and ev_un.all())
        out = accuracy_row(v.numpy(), n, u, np.concatenate([ev_tr, ev_un]) if sampled else None)
        if self.cfg.run.eval_clients:
            out["eval_clients"] = float(ev_tr.sum())
        if k:
            out.update(self.exchange.read_eval(v[-k:].numpy()))
        # per-client accuracies (not metric columns: "_" keys go to metrics.h5 as [rows, clients])
        with np.errstate(invalid="ignore", divide="ignore"):   # clients not evaluated (eval_clients): NaN
            acc = v[0:2 * (n + u):2].numpy() / v[1:2 * (n + u):2].numpy()
        if sampled:
            acc[~np.concatenate([ev_tr, ev_un])] = np.nan
        out["_client_test_acc"] = acc[:n].copy()
        if u:
            out["_unseen_test_acc"] = acc[n:].copy()
        return out

    def _evaluate_loop(self, v: torch.Tensor, ev_tr: np.ndarray, ev_un: np.ndarray, ref) -> None:
        """``evaluate``'s per-client work, client by client: the reference path. Fills v's
        ``[correct, total]`` pairs of the clients this evaluation covers."""
        n = self.dataset.n_clients
        for i, cid in enumerate(self.train_ids):
            if not ev_tr[cid]:
                continue
            data = self.clients[i] if self.clients is not None else self._regen(cid)
            shared, state = self._personal(data, self.exchange.eval_params(i, data.cid), self.store.state(i))
            v[2 * data.cid:2 * data.cid + 2] = torch.tensor(
                [self._correct(data, shared, state), data.n_test], dtype=torch.float64)
        for j, cid in enumerate(self.unseen_ids):
            if not ev_un[cid - n]:
                continue
            data = self.unseen[j] if self.unseen is not None else self._regen(cid)
            state = {key: val.clone() for key, val in self.algo.init_state(data.cid).items()}
            self.algo.adapt(data, ref, state)
            shared, state = self._personal(data, ref, state)
            v[2 * data.cid:2 * data.cid + 2] = torch.tensor(
                [self._correct(data, shared, state), data.n_test], dtype=torch.float64)

    def _evaluate_batched(self, v: torch.Tensor, ev_tr: np.ndarray, ev_un: np.ndarray, ref) -> None:
        """``evaluate``'s per-client work on the batched path: chunks of ``EVAL_CLIENTS`` clients, each
        one computation (``batched.correct_counts``); ``_evaluate_loop`` stays the reference."""
        lo, n, seed, r = self.train_ids.start, self.dataset.n_clients, self.cfg.run.seed, self.round
        un_lo = self.unseen_ids.start - n
        for unseen, ids in ((False, np.flatnonzero(ev_tr[lo:self.train_ids.stop])),
                            (True, np.flatnonzero(ev_un[un_lo:self.unseen_ids.stop - n]))):
            for part in np.array_split(ids, -(-len(ids) // batched_mod.EVAL_CLIENTS)) if len(ids) else ():
                if unseen:
                    datas = [self.unseen[j] if self.unseen is not None else self._regen(n + un_lo + j)
                             for j in part.tolist()]
                    fresh = [self.algo.init_state(d.cid) for d in datas]
                    states = {k: torch.stack([f[k] for f in fresh]) for k in self.store.tensors}
                    shared = ref
                else:
                    datas = [self.clients[i] if self.clients is not None else self._regen(lo + i)
                             for i in part.tolist()]
                    starts = [self.exchange.eval_params(i, lo + i) for i in part.tolist()]
                    shared = starts[0] if all(s is starts[0] for s in starts) else torch.stack(starts)
                    idx = torch.from_numpy(part)
                    states = {k: t[idx] for k, t in self.store.tensors.items()}   # copies: never written back
                gens = lambda ds=datas: rng.TorchStreams(seed, rng.EVAL, [d.cid for d in ds], r)  # noqa: E731
                correct = batched_mod.correct_counts(self.algo, datas, shared, states, gens, adapt=unseen)
                cids = torch.tensor([d.cid for d in datas])
                v[2 * cids] = torch.from_numpy(correct)
                v[2 * cids + 1] = torch.tensor([float(d.n_test) for d in datas], dtype=torch.float64)

    def _eval_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """Which training / unseen clients this evaluation covers (``run.eval_clients``)."""
        return eval_selection(self.cfg.run.seed, self.round, self.dataset.n_clients, self.dataset.n_unseen,
                              self.cfg.run.eval_clients)

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
        """This rank's Snapshot: its own client rows on every rank (nothing is gathered: each rank
        writes its shard, ``checkpoint.save``), the rest identical everywhere. Collective.

        The checkpoint is the union of what each part declares: the algorithm (shared stack,
        ``state_dict`` -> /algorithm), the client store (/clients/state), the exchange (each
        client's own components and /topology in gossip mode), the metrics table.
        """
        from .checkpoint import Snapshot
        comm, cfg, rows = self.comm, self.cfg, self.train_ids
        tensors = {**self.store.tensors, **self.exchange.client_tensors()}
        snap = Snapshot(
            round=self.round, algorithm=cfg.algorithm.name, config_text=config_to_yaml(cfg),
            shared=self.shared.detach().cpu().numpy(), layout=self.model.layout.as_dict(),
            client_ids=np.arange(rows.start, rows.stop, dtype=np.int64),
            client_weight=self.w_np.copy(),
            client_state={k: t.detach().cpu().numpy() for k, t in tensors.items()},
            seed=cfg.run.seed, partition=self.dataset.partition_info(),
            groups={"algorithm": self.algo.state_dict()},
            metrics=self.metrics.deterministic(),
            pending={"bytes_exchanged": self.window["bytes_exchanged"]},
            attrs={"rounds_total": cfg.run.rounds, "world_size": comm.size},
            n_rows=self.dataset.n_clients, row_start=rows.start)
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
        ev = self._eval_masks()[0]        # eval_clients: the clients of the last evaluation
        for i, cid in enumerate(self.train_ids):
            if ev[cid]:
                d = self.clients[i] if self.clients is not None else self._regen(cid)
                v[cid] = self.dataset.oracle_correct(cid, d) / d.n_test
        self.comm.allreduce_(v)
        return {"oracle_test_acc": float(v[ev].mean())}

    def summary_line(self) -> str:
        return (f"{self.cfg.data.n_clients} clients, {self.cfg.algorithm.name}, {self.model.n_params} params x "
                f"{self.shared.shape[0]} shared component(s)")


def accuracy_row(v: np.ndarray, n: int, u: int, evaluated: np.ndarray | None = None) -> dict:
    """Metrics from the reduced ``[correct_c, total_c]`` pairs of n training + u unseen clients
    (``evaluated``: mask ``[n + u]`` of the clients evaluated; None: all)."""
    correct, total = v[0:2 * (n + u):2], v[1:2 * (n + u):2]
    if evaluated is not None:
        tr, un = evaluated[:n], evaluated[n:]
        correct = np.concatenate([correct[:n][tr], correct[n:][un]])
        total = np.concatenate([total[:n][tr], total[n:][un]])
        n, u = int(tr.sum()), int(un.sum())
    acc = correct[:n] / total[:n]
    out = {"test_acc_mean": float(acc.mean()),
           "test_acc_weighted": float(correct[:n].sum() / total[:n].sum()),
           "test_acc_p10": float(np.percentile(acc, 10))}
    if u:
        out["test_acc_unseen"] = float((correct[n:] / total[n:]).mean())
    return out
