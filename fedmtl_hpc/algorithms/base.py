"""The algorithm interface: the phases one round loop calls, client side and server side.

An algorithm owns its *server state*: ``self.shared``, a ``[K, P]`` float32 stack of
shared parameter vectors (K = M for FedEM, 1 for FedAvg, 0 for Local; Clustered FL keeps
one row per cluster), plus whatever else the server needs (a partition into clusters,
...). Per-client *private* state (FedEM's mixture weights, a personal model) lives in the
engine's ``ClientStore`` as rows the algorithm reads and updates in place (``copy_``).

A round, in client-server mode (``exchange/allreduce.py``)::

    begin_round(rnd, mask)                   every rank, same answer (lr schedule, ...)
    for each sampled client on this rank:
        res = local_update(data, start(cid), state, gen)
        accumulate(views, cid, scale, res)   scale = n_t / n (total weight of all clients)
    accumulate_idle(views, idle_cids, scales)    the unbiased rule for the non-sampled
    <ONE in-place Allreduce of the buffer laid out by payload()>
    finish_round(views) -> metrics           the server step, on every rank

``payload()`` declares the buffer (name -> shape, float64); the default carries the
pre-scaled weighted mean of the shared stack, so the reduced buffer already is the new
model (as pfl-research's ``process_aggregated_statistics`` / Flower's ``aggregate_train``,
with the transport left to the engine). An algorithm never imports mpi4py, h5py or a
metrics writer. In decentralized mode (``exchange/gossip.py``) clients train from their
own copies and mix with neighbours; only ``local_update`` and evaluation are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import rng
from ..data.base import ClientData
from ..errors import CheckpointError, NumericalError
from ..params import FlatModel, fresh_vector
from ..schedule import lr_at
from .sgd import local_sgd

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Algorithm", "LocalResult", "PersonalModels"]


@dataclass
class LocalResult:
    """What one client sends: its new shared stack (None when K == 0) and its training objective."""

    params: torch.Tensor | None
    loss: float


class Algorithm:
    """Base class: FedAvg-style aggregation; subclasses override the phases they change."""

    name = "base"
    n_shared = 0
    columns: tuple[str, ...] = ()   # metric columns this algorithm adds (values from finish_round)

    def __init__(self, cfg: "Config", model: FlatModel, factory, device: torch.device):
        self.cfg, self.model, self.factory, self.device = cfg, model, factory, device
        self.params = cfg.algorithm.params          # this algorithm's own config section
        self.round, self.lr = 0, cfg.train.lr
        self.n_clients, self.total_weight = 0, 0.0
        self.shared = self.init_shared()

    def setup(self, n_clients: int, total_weight: float) -> None:
        """Called once before round 1 with the number of training clients and sum_t n_t."""
        self.n_clients, self.total_weight = n_clients, total_weight

    # -- initial state ---------------------------------------------------------
    def init_shared(self) -> torch.Tensor:
        """``[K, P]``: component k from its own stream (seed, INIT, 0, k), same on every rank."""
        seed = self.cfg.run.seed
        rows = [fresh_vector(self.model, self.factory, _int_seed(seed, 0, k)) for k in range(self.n_shared)]
        out = torch.stack(rows) if rows else torch.zeros(0, self.model.n_params)
        return out.to(self.device)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the private per-client tensors (without the client dimension)."""
        return {}

    def init_state(self, cid: int) -> dict[str, torch.Tensor]:
        """Fresh private state of client cid (derived from (seed, cid), not from the rank)."""
        return {}

    # -- one round, server side ----------------------------------------------------
    def begin_round(self, rnd: int, mask: np.ndarray) -> None:
        """Before local work (0-based ``rnd``; ``mask[cid]``: sampled). Same on every rank."""
        self.round = rnd
        self.lr = lr_at(self.cfg.train, self.cfg.run.rounds, rnd)

    def start(self, cid: int) -> torch.Tensor:
        """The ``[K, P]`` stack client cid trains from (do not modify it in place)."""
        return self.shared

    def payload(self) -> dict[str, tuple[int, ...]]:
        """Layout of what the round's all-reduce carries: name -> shape (float64)."""
        return {"shared": tuple(self.shared.shape)} if self.shared.numel() else {}

    def accumulate(self, views: dict[str, torch.Tensor], cid: int, scale: float, res: LocalResult) -> None:
        """Add a trained client's contribution (scale = n_t / n) into the payload views."""
        if "shared" in views:
            views["shared"].add_(res.params, alpha=scale)

    def accumulate_batch(self, views: dict[str, torch.Tensor], cids: np.ndarray, scales: np.ndarray, res) -> None:
        """``accumulate`` of many trained clients at once (the batched path; ``res``: a ``BatchResult``,
        rows in ``cids`` order): the default rule as one float64 weighted sum, any other rule client by
        client, in order."""
        if type(self).accumulate is not Algorithm.accumulate:
            for j, cid in enumerate(cids.tolist()):
                self.accumulate(views, cid, float(scales[j]),
                                LocalResult(None if res.params is None else res.params[j], float(res.losses[j])))
        elif "shared" in views and len(cids):
            flat = res.params.reshape(len(cids), -1).double()
            views["shared"].add_((torch.from_numpy(np.asarray(scales, dtype=np.float64)) @ flat).view_as(views["shared"]))

    def accumulate_idle(self, views: dict[str, torch.Tensor], cids, scales) -> None:
        """Non-sampled clients contribute the current model (the unbiased rule); one add
        (``cids``/``scales``: sequences or arrays, in id order)."""
        if "shared" in views and len(cids):
            # numpy's cumsum adds in order, as Python's sum of a list did: the same alpha to the last bit
            views["shared"].add_(self.shared, alpha=float(np.cumsum(scales, dtype=np.float64)[-1]))

    def finish_round(self, views: dict[str, torch.Tensor]) -> dict[str, float]:
        """The server step from the reduced payload; returns values of ``columns``."""
        if "shared" in views:
            self.shared.copy_(views["shared"])   # float64 -> float32 into the existing storage
        return {}

    # -- one round, client side --------------------------------------------------------
    def local_update(self, data: ClientData, start: torch.Tensor, state: dict[str, torch.Tensor],
                     gen: torch.Generator) -> LocalResult:
        """Train one client from ``start``; update ``state`` in place (``copy_``)."""
        raise NotImplementedError

    def weight(self, data: ClientData) -> float:
        """Aggregation weight of a client: n_t (so the average is sum_t n_t/n theta_t)."""
        return float(data.n_train)

    def sgd(self, theta: torch.Tensor, data: ClientData, gen: torch.Generator, **kw) -> float:
        """``local_sgd`` at this round's learning rate (``lr=`` overrides it)."""
        kw.setdefault("lr", self.lr)
        return local_sgd(self.model, theta, data, self.cfg.train, gen, **kw)

    # -- evaluation ------------------------------------------------------------
    def predict_proba(self, x: torch.Tensor, shared: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities ``[B, C]`` of the client's model."""
        raise NotImplementedError

    def adapt(self, data: ClientData, shared: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        """Prepare a client never seen in training (``state`` is its fresh copy)."""

    def personalize(self, data: ClientData, shared: torch.Tensor, state: dict[str, torch.Tensor],
                    gen: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Evaluation only: the (shared, state) a client predicts with. Never flows back."""
        return shared, state

    # batched evaluation (algorithms/batched.py): the same phases for A clients at once; an algorithm
    # that has a batched path defines each next to the per-client method it mirrors
    def adapt_batch(self, block, sel, shared: torch.Tensor, states: dict[str, torch.Tensor]) -> None:
        """``adapt`` of the clients ``sel`` of ``block`` (states: their rows ``[A, ...]``, updated in place)."""

    def personalize_batch(self, block, sel, shared: torch.Tensor, states: dict[str, torch.Tensor], gens):
        """``personalize`` of the clients ``sel`` of ``block``: the (shared ``[K, P]`` or ``[A, K, P]``,
        states) they predict with."""
        return shared, states

    # -- checkpoint ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What ``/algorithm`` of a checkpoint holds: ``{"attrs": {...}, "arrays": {name: ndarray}}``.

        ``/global/params`` (the shared stack) and ``/clients/state`` are written by the engine.
        """
        t = self.cfg.train
        return {"attrs": {"name": self.name, "optimizer": "sgd", "momentum": t.momentum,
                          "weight_decay": t.weight_decay, "lr_schedule": t.lr_schedule,
                          "lr_last_round": self.lr,
                          "note": "local SGD momentum buffers restart every round; the lr schedule is "
                                  "a function of the round: no optimizer state carries over"},
                "arrays": {}}

    def load_state_dict(self, group: dict, shared: np.ndarray) -> None:
        """Restore from a checkpoint's ``/algorithm`` group and ``/global/params``."""
        if tuple(shared.shape) != tuple(self.shared.shape):
            raise CheckpointError(f"checkpoint holds shared shape {tuple(shared.shape)}, "
                                  f"{self.name} needs {tuple(self.shared.shape)}")
        self.shared.copy_(torch.from_numpy(shared))


class PersonalModels:
    """Mixin for methods whose clients keep personal model(s) ``[1, P]`` in their private state.

    Every personal model starts at the initial global model (identical on every rank);
    ``personal`` names them, ``check_personal`` reports a NaN/Inf naming client and round.
    """

    personal: tuple[str, ...] = ("v",)

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.initial = self.shared.clone()

    def state_shapes(self):
        return {**super().state_shapes(), **{k: (1, self.model.n_params) for k in self.personal}}

    def init_state(self, cid):
        return {**super().init_state(cid), **{k: self.initial.clone() for k in self.personal}}

    def check_personal(self, cid: int, *tensors: torch.Tensor) -> None:
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            raise NumericalError(f"{self.name} personal model holds NaN or Inf on client {cid} "
                                 f"in round {self.round + 1}")


def _int_seed(seed: int, *keys: int) -> int:
    return int(rng.np_stream(seed, rng.INIT, *keys).integers(0, 2**63 - 1))
