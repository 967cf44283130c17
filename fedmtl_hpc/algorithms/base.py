"""The algorithm interface: a few phases called by the one round loop.

An algorithm owns K *shared* parameter vectors (a ``[K, P]`` stack the
engine exchanges: K = M for FedEM, 1 for FedAvg, 0 for Local) and a dict of
*private* per-client tensors (FedEM's mixture weights, Local's own model).
It never sees MPI, files or metrics writers: the engine hands it one client
at a time and reduces what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import rng
from ..config import Config
from ..data.base import ClientData
from ..params import FlatModel, fresh_vector

__all__ = ["Algorithm", "LocalResult"]


@dataclass
class LocalResult:
    """What one client sends: its new shared stack (None when K == 0) and its training objective."""

    params: torch.Tensor | None
    loss: float


class Algorithm:
    """Base class; subclasses set ``n_shared`` and override the phases they need."""

    name = "base"
    n_shared = 0

    def __init__(self, cfg: Config, model: FlatModel, factory, device: torch.device):
        self.cfg, self.model, self.factory, self.device = cfg, model, factory, device

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

    # -- one round ---------------------------------------------------------------
    def local_update(self, data: ClientData, shared: torch.Tensor, state: dict[str, torch.Tensor],
                     gen: torch.Generator) -> LocalResult:
        """Train one client from the shared stack; update ``state`` in place (``copy_``)."""
        raise NotImplementedError

    def weight(self, data: ClientData) -> float:
        """Aggregation weight of a client: n_t (so the average is sum_t n_t/n theta_t)."""
        return float(data.n_train)

    # -- evaluation ------------------------------------------------------------
    def predict_proba(self, x: torch.Tensor, shared: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities ``[B, C]`` of the client's model."""
        raise NotImplementedError

    def adapt(self, data: ClientData, shared: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        """Prepare a client never seen in training (default: nothing to adapt)."""


def _int_seed(seed: int, *keys: int) -> int:
    return int(rng.np_stream(seed, rng.INIT, *keys).integers(0, 2**63 - 1))
