"""Decentralized mode: D-FedEM (fedem) and D-SGD (fedavg) by gossip over a graph of clients.

DESIGN.md sections 3-4. The graph's nodes are the training clients; every client keeps
its OWN copy of the K shared components (rows of a ``[n_local, K, P]`` tensor on its
rank). A round:

1. local work: each sampled client runs ``algorithm.local_update`` on its own copy (same
   phases, RNG streams and number of local steps as client-server mode);
2. mixing, for every client, sampled or not: theta_t <- sum_s W_ts theta_s over the
   round's graph. Clients on one rank mix in memory; cross-rank edges travel in ONE
   ``Neighbor_alltoallv`` on a distributed graph communicator (``comm/gossip.py``).

No global collective in the training path. What a round needs agreed travels with the
parameters: a stop request (SIGTERM/SIGUSR1) noticed by a rank before exchange q is
stamped into the control column of the rows it sends, every rank forwards the earliest
request it knows, and every rank stops after exchange q + D, where D is the number of
extra exchanges the value needs to reach every rank (rank-graph diameter - 1 for a static
graph; size - 2 for a time-varying one, as each round's graph is connected). So all ranks
stop, checkpoint and exit 3 in the same round, up to D rounds after the signal (send
SIGUSR1 that much ahead of the walltime). ``run.stop_after`` needs no agreement.

Evaluation rounds (the only collectives besides checkpoints and graph changes): one
Allreduce of the clients' summed components gives the network average theta_bar, from
which clients unseen in training adapt; one Allreduce of per-client test counts plus
the consensus distance (mean_t ||theta_t - theta_bar||^2 over all K*P numbers) and the
round's training-loss sums. Each training client is evaluated with its OWN components.
A time-varying graph rebuilds the graph communicator (a collective) only in rounds where
the rank-level graph changes.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from . import rng, signals
from .comm.gossip import Gossip, rank_hops
from .comm.topology import block_owner, local_blocks, schedule_from_config
from .engine import Engine, RoundStats, accuracy_row, check_local_result, sample_clients
from .errors import CheckpointError
from .metrics import MetricsTable

__all__ = ["DecentralizedEngine", "check_config", "SCHEDULE_NOTE"]

SCHEDULE_NOTE = ("stateless: the graph of round r (0-based) is rebuilt from SeedSequence([seed, "
                 "r // change_every]) (erdos_renyi redraws, other kinds relabel nodes; change_every 0 = "
                 "static), so (seed, next_round) is the schedule's whole state")


def check_config(cfg) -> None:
    """Build the graph once so graph, edge-file and matrix errors exit 2 before any collective."""
    if cfg.algorithm.mode == "decentralized":
        schedule_from_config(cfg)


class DecentralizedEngine(Engine):
    """The round loop of decentralized mode (module docstring); callbacks are unchanged."""

    def __init__(self, cfg, comm, dataset, model, factory, device):
        super().__init__(cfg, comm, dataset, model, factory, device)
        self.buffer = torch.zeros(0, dtype=torch.float64)  # client-server's all-reduce buffer: unused
        self.schedule = schedule_from_config(cfg)
        self.owner = block_owner(dataset.n_clients, comm.size)  # = the engine's contiguous blocks
        self.gossip: Gossip | None = None
        self.topology, self._period, self._delay = None, None, 0
        self._sync_graph(0)
        # every client starts from the same seeded init (identical on every rank)
        self.gossip.rows[...] = self.shared.detach().cpu().reshape(1, -1).numpy()
        k, p = self.shared.shape
        self._shape = (len(self.clients), k, p)
        # off the CPU the rows live on the device and are staged through the MPI buffer
        self._dev = None if device.type == "cpu" else self._host_params().to(device)
        self._stop_at = math.inf           # earliest stop request (exchange index) this rank knows
        self._loss = (0.0, 0.0)            # this round's (sum w_t, sum w_t loss_t) over sampled clients
        extra = ("test_acc_unseen",) if dataset.n_unseen else ()
        self.metrics = MetricsTable(extra + ("consensus_distance",))

    # -- the clients' own components ---------------------------------------------
    def _host_params(self) -> torch.Tensor:
        return torch.from_numpy(self.gossip.rows).view(self._shape)

    @property
    def params(self) -> torch.Tensor:
        """``[n_local, K, P]`` float32: this rank's clients' own components (rows are views)."""
        return self._host_params() if self._dev is None else self._dev

    def _sync_graph(self, rnd: int) -> None:
        """Use round rnd's graph; a new period gives a new plan (collective if ranks' links change)."""
        period = self.schedule.period(rnd)
        if period == self._period:
            return
        topo = self.schedule.at(rnd)
        blocks = local_blocks(topo.W, self.owner, self.comm.size)
        if self.gossip is None:
            self.gossip = Gossip(self.comm, blocks, self.shared.numel(), np.float32)
        else:
            self.gossip.set_blocks(blocks)
        self.topology, self._period = topo, period
        hops = self.comm.size - 1 if self.schedule.change_every else rank_hops(blocks)
        self._delay = max(hops - 1, 0)

    def describe(self) -> str:
        t, d = self.topology, self.topology.degrees
        vary = f", a new graph every {self.schedule.change_every} rounds" if self.schedule.change_every else ""
        return (f"decentralized: {t.kind} over {t.n} clients (degree {d.min()}..{d.max()}, spectral gap "
                f"{t.spectral_gap:.4g}{vary}); {self.gossip.bytes_per_step} bytes cross ranks per round")

    # -- one round ----------------------------------------------------------------
    def step(self) -> RoundStats:
        self._sync_graph(self.round)
        t0 = time.perf_counter()
        self.local_round()
        t1 = time.perf_counter()
        stop = self.exchange()
        t2 = time.perf_counter()
        self.round += 1
        w_s, loss_s = self._loss
        return RoundStats(round=self.round, train_loss=loss_s / w_s if w_s else math.nan,  # rank-local
                          t_compute=t1 - t0, t_exchange=t2 - t1,
                          bytes_exchanged=self.gossip.bytes_per_step,
                          stop=stop or self.round == self.cfg.run.stop_after)

    def local_round(self) -> None:
        """Each sampled client trains its own copy in place; the others keep theirs."""
        cfg, r = self.cfg, self.round
        mask = sample_clients(cfg.run.seed, r, self.dataset.n_clients, cfg.train.participation)
        params, w_s, loss_s = self.params, 0.0, 0.0
        for i, (cid, data) in enumerate(zip(self.train_ids, self.clients)):
            if not mask[cid]:
                continue
            gen = rng.torch_stream(cfg.run.seed, rng.TRAIN, cid, r)
            res = self.algo.local_update(data, params[i], self.store.state(i), gen)
            check_local_result(res, cid, r)
            params[i].copy_(res.params)
            w_s += self.weights[i]
            loss_s += self.weights[i] * res.loss
        self._loss = (w_s, loss_s)

    def exchange(self) -> bool:
        """One gossip step for every client; returns whether all ranks stop after this round."""
        r = self.round
        if self._dev is not None:
            self._host_params().copy_(self._dev)
        self._stop_at = self.gossip.mix_(min(self._stop_at, r if signals.requested() else math.inf))
        if self._dev is not None:
            self._dev.copy_(self._host_params())
        return r >= self._stop_at + self._delay

    # -- evaluation ---------------------------------------------------------------
    def evaluate(self) -> dict:
        """Own-model accuracies, unseen clients from theta_bar, consensus distance, train loss."""
        n, u = self.dataset.n_clients, self.dataset.n_unseen
        params = self.params
        bar = params.detach().to(torch.float64).sum(dim=0).cpu()          # [K, P]
        self.comm.allreduce_(bar)
        bar /= n
        bar_dev = bar.to(device=self.device)
        v = torch.zeros(2 * (n + u) + 3, dtype=torch.float64)
        with torch.no_grad():
            for i, data in enumerate(self.clients):
                v[2 * data.cid] = self._correct(data, self.store.state(i), params[i])
                v[2 * data.cid + 1] = data.n_test
            theta = bar_dev.to(torch.float32)
            for data in self.unseen:
                state = {k: val.clone() for k, val in self.algo.init_state(data.cid).items()}
                self.algo.adapt(data, theta, state)
                v[2 * data.cid], v[2 * data.cid + 1] = self._correct(data, state, theta), data.n_test
            v[-3] = float(((params.to(torch.float64) - bar_dev) ** 2).sum())
        v[-2], v[-1] = self._loss
        self.comm.allreduce_(v)
        out = accuracy_row(v.numpy(), n, u)
        out["consensus_distance"] = float(v[-3] / n)
        out["train_loss"] = float(v[-1] / v[-2]) if v[-2] else math.nan
        return out

    # -- checkpoints -------------------------------------------------------------
    def client_tensors(self) -> dict[str, torch.Tensor]:
        return {**self.store.tensors, "components": self.params}

    def finish_snapshot(self, snap) -> None:
        """/global/params = the network average; /topology = the last round's graph + schedule state."""
        snap.shared = snap.client_state["components"].astype(np.float64).mean(axis=0).astype(np.float32)
        topo, t = self.schedule.at(max(self.round - 1, 0)), self.cfg.topology
        snap.topology = {"edges": topo.edges, "W": topo.W, "attrs": {
            "kind": topo.kind, "weights": t.weights, "seed": t.seed, "change_every": t.change_every,
            "p": t.p, "n_nodes": topo.n, "spectral_gap": topo.spectral_gap,
            "graph_round": max(self.round - 1, 0), "period": self.schedule.period(max(self.round - 1, 0)),
            "next_round": self.round, "schedule": SCHEDULE_NOTE}}
        snap.attrs["mode"] = "decentralized"

    def restore(self, snap) -> None:
        super().restore(snap)
        comps = snap.client_state.get("components")
        if comps is None or tuple(comps.shape) != self._shape:
            raise CheckpointError(f"checkpoint holds no per-client components of shape {self._shape}: "
                                  f"not a decentralized run of this config")
        if snap.topology is None:
            raise CheckpointError("checkpoint holds no /topology: not a decentralized run")
        topo = self.schedule.at(max(snap.round - 1, 0))
        if not (np.array_equal(topo.edges, snap.topology["edges"]) and np.array_equal(topo.W, snap.topology["W"])):
            raise CheckpointError("the topology differs from the checkpoint's /topology (edge or matrix "
                                  "file changed?); refusing to resume on another graph")
        self._sync_graph(self.round)
        self.params.copy_(torch.from_numpy(comps))
        self._stop_at = math.inf
