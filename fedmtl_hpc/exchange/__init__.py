"""How a round's results travel: the engine's exchange strategy, chosen by ``algorithm.mode``.

* ``allreduce.AllreduceExchange`` (client-server): the algorithm's payload plus three
  engine slots in ONE in-place float64 ``Allreduce``; the algorithm finishes the round.
* ``gossip.GossipExchange`` (decentralized): every client keeps its own copy of the
  shared stack and mixes it with its graph neighbours (``Neighbor_alltoallv``).

Both implement the same small protocol (``Exchange`` below), so the round loop, the
evaluation, checkpoints and resume are one code path for every algorithm and mode.
"""

from __future__ import annotations

from typing import Protocol

import torch

__all__ = ["Exchange", "make_exchange"]


class Exchange(Protocol):
    columns: tuple[str, ...]   # metric columns this exchange adds
    eval_slots: int            # float64 slots it adds to the evaluation's all-reduce

    def begin_round(self, rnd: int) -> None: ...
    def start(self, i: int, cid: int) -> torch.Tensor:
        """The stack client i (local index; global id cid) trains from."""
    def trained(self, i: int, cid: int, scale: float, res) -> None:
        """Record a trained client's result (scale = n_t / n)."""
    def trained_batch(self, idx, cids, scales, res) -> None:
        """The batched path's ``trained``: the rank's trained clients at once (numpy local indices,
        client ids and scales; ``res`` a ``batched.BatchResult`` with rows in that order)."""
    def idle(self, idx, cids, scales) -> None:
        """Record the rank's clients not sampled this round (numpy arrays, in id order: local
        indices, client ids, scales n_t / n); called once per round, before any ``trained``."""
    def finish(self, w_s: float, loss_s: float, stop: bool) -> tuple[float, bool, int, dict]:
        """Exchange; returns (train loss, stop agreed, bytes moved, extra metrics)."""
    def eval_params(self, i: int, cid: int) -> torch.Tensor:
        """The stack training client i is evaluated with."""
    def reference(self) -> torch.Tensor:
        """The stack unseen clients adapt from (a collective in gossip mode: call on every rank)."""
    def fill_eval(self, tail) -> None: ...
    def read_eval(self, tail) -> dict: ...
    def client_tensors(self) -> dict[str, torch.Tensor]: ...
    def finish_snapshot(self, snap) -> None: ...
    def restore(self, snap) -> None: ...
    def describe(self) -> str: ...


def make_exchange(engine) -> Exchange:
    """The exchange of ``engine.cfg.algorithm.mode`` (the spec says which modes an algorithm has)."""
    if engine.cfg.algorithm.mode == "decentralized":
        from .gossip import GossipExchange
        return GossipExchange(engine)
    from .allreduce import AllreduceExchange
    return AllreduceExchange(engine)
