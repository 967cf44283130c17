"""Decentralized mode: D-FedEM (fedem) and D-SGD (fedavg) by gossip over a graph of clients.

Every client keeps its OWN copy of the K shared components (rows of a ``[n_local, K, P]``
tensor on its rank). A round: each sampled client runs ``algorithm.local_update`` on its
own copy (same phases, RNG streams and number of local steps as client-server mode);
then every client, sampled or not, mixes: theta_t <- sum_s W_ts theta_s over the round's
graph. Clients on one rank mix in memory; cross-rank edges travel in ONE
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
which clients unseen in training adapt; the evaluation's all-reduce carries the consensus
distance (mean_t ||theta_t - theta_bar||^2 over all K*P numbers) and the round's
training-loss sums. Each training client is evaluated with its OWN components.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..comm.gossip import Gossip, rank_hops
from ..comm.topology import local_blocks, schedule_from_config, sparse_parts
from ..errors import CheckpointError

__all__ = ["GossipExchange", "check_config", "SCHEDULE_NOTE"]

SCHEDULE_NOTE = ("stateless: the graph of round r (0-based) is rebuilt from SeedSequence([seed, "
                 "r // change_every]) (erdos_renyi redraws, other kinds relabel nodes; change_every 0 = "
                 "static), so (seed, next_round) is the schedule's whole state")


def check_config(cfg) -> None:
    """Build the graph once so graph, edge-file and matrix errors exit 2 before any collective."""
    if cfg.algorithm.mode == "decentralized":
        schedule_from_config(cfg)


class GossipExchange:
    columns = ("consensus_distance",)
    eval_slots = 3   # consensus distance, sum w_t, sum w_t loss_t

    def __init__(self, engine):
        self.engine, self.comm, self.cfg = engine, engine.comm, engine.cfg
        shared = engine.algo.shared
        self.schedule = schedule_from_config(self.cfg)
        # the engine's contiguous blocks (balanced by samples when the data set knows its sizes)
        self.owner = np.repeat(np.arange(self.comm.size, dtype=np.int64), engine.counts)
        self.gossip: Gossip | None = None
        self.topology, self._period, self._delay = None, None, 0
        self._n_shared = shared.numel()
        self._sync_graph(0)
        # every client starts from the same seeded init (identical on every rank)
        self.gossip.rows[...] = shared.detach().cpu().reshape(1, -1).numpy()
        k, p = shared.shape
        self._shape = (len(engine.clients), k, p)
        # off the CPU the rows live on the device and are staged through the MPI buffer
        self._dev = None if engine.device.type == "cpu" else self._host_params().to(engine.device)
        self._stop_at = math.inf           # earliest stop request (exchange index) this rank knows
        self._loss = (0.0, 0.0)            # this round's (sum w_t, sum w_t loss_t) over sampled clients
        self._bar = None

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
            self.gossip = Gossip(self.comm, blocks, self._n_shared, np.float32)
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
    def begin_round(self, rnd):
        self._sync_graph(rnd)
        self._round = rnd

    def start(self, i, cid):
        return self.params[i]

    def trained(self, i, cid, scale, res):
        self.params[i].copy_(res.params)

    def trained_batch(self, idx, cids, scales, res):
        self.params.index_copy_(0, torch.from_numpy(idx), res.params.to(self.params.dtype))

    def idle(self, idx, cids, scales):
        pass   # a client that did not train keeps its own copy

    def finish(self, w_s, loss_s, stop):
        """One gossip step for every client; the train loss is rank-local (evaluation reduces it)."""
        r = self._round
        self._loss = (w_s, loss_s)
        if self._dev is not None:
            self._host_params().copy_(self._dev)
        self._stop_at = self.gossip.mix_(min(self._stop_at, r if stop else math.inf))
        if self._dev is not None:
            self._dev.copy_(self._host_params())
        loss = loss_s / w_s if w_s else math.nan
        return loss, r >= self._stop_at + self._delay, self.gossip.bytes_per_step, {}

    # -- evaluation ---------------------------------------------------------------
    def eval_params(self, i, cid):
        return self.params[i]

    def reference(self):
        """theta_bar, the network average of the clients' components (one all-reduce)."""
        bar = self.params.detach().to(torch.float64).sum(dim=0).cpu()          # [K, P]
        self.comm.allreduce_(bar)
        bar /= self.engine.dataset.n_clients
        self._bar = bar.to(device=self.engine.device)
        return self._bar.to(torch.float32)

    def fill_eval(self, tail):
        tail[0] = float(((self.params.to(torch.float64) - self._bar) ** 2).sum())
        tail[1], tail[2] = self._loss

    def read_eval(self, tail):
        n = self.engine.dataset.n_clients
        return {"consensus_distance": float(tail[0] / n),
                "train_loss": float(tail[2] / tail[1]) if tail[1] else math.nan}

    # -- checkpoints -------------------------------------------------------------
    def client_tensors(self):
        return {"components": self.params}

    def finish_snapshot(self, snap) -> None:
        """/global/params = the network average; /topology = the last round's graph + schedule state:
        edges, W on each edge and W's diagonal (O(E + N); the dense W is never formed).

        Collective: ``snap.client_state`` holds this rank's rows only (sharded checkpoints).
        """
        total = snap.client_state["components"].astype(np.float64).sum(axis=0)
        self.engine.comm.allreduce_(total)
        snap.shared = (total / self.engine.dataset.n_clients).astype(np.float32)
        rnd = self.engine.round
        topo, t = self.schedule.at(max(rnd - 1, 0)), self.cfg.topology
        edge_weight, self_weight = sparse_parts(topo.W, topo.edges)
        snap.topology = {"edges": topo.edges, "edge_weight": edge_weight, "self_weight": self_weight, "attrs": {
            "kind": topo.kind, "weights": t.weights, "seed": t.seed, "change_every": t.change_every,
            "p": t.p, "n_nodes": topo.n, "spectral_gap": topo.spectral_gap,
            "graph_round": max(rnd - 1, 0), "period": self.schedule.period(max(rnd - 1, 0)),
            "next_round": rnd, "schedule": SCHEDULE_NOTE}}
        snap.attrs["mode"] = "decentralized"

    def restore(self, snap) -> None:
        comps = snap.client_state.get("components")
        if comps is None or tuple(comps.shape) != self._shape:
            raise CheckpointError(f"checkpoint holds no per-client components of shape {self._shape}: "
                                  f"not a decentralized run of this config")
        if snap.topology is None:
            raise CheckpointError("checkpoint holds no /topology: not a decentralized run")
        topo, saved = self.schedule.at(max(snap.round - 1, 0)), snap.topology
        same = np.array_equal(topo.edges, saved["edges"])
        if same:  # (edges, W on the edges, diagonal) is all of W: exact equality without the dense W
            same = all(map(np.array_equal, sparse_parts(topo.W, topo.edges),
                           (saved["edge_weight"], saved["self_weight"])))
        if not same:
            raise CheckpointError("the topology differs from the checkpoint's /topology (edge or matrix "
                                  "file changed?); refusing to resume on another graph")
        self._sync_graph(snap.round)
        self.params.copy_(torch.from_numpy(comps))
        self._stop_at = math.inf
