"""What the engine needs from a dataset: per-client tensors and a digest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import torch

__all__ = ["ClientData", "FederatedData", "contiguous_block"]


@dataclass
class ClientData:
    """One client's samples. x: ``[n, *input_shape]`` float32, y: ``[n]`` int64."""

    cid: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.y_test.shape[0])

    def to(self, device: torch.device | str) -> "ClientData":
        return ClientData(self.cid, self.x_train.to(device), self.y_train.to(device),
                          self.x_test.to(device), self.y_test.to(device))

    # The engine and algorithms read samples only through these three methods, so a
    # subclass can augment batches or build samples lazily (Shakespeare windows).
    def train_batch(self, idx: torch.Tensor, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training minibatch ``idx`` (``gen``: the client's stream, for augmentation)."""
        return self.x_train[idx], self.y_train[idx]

    def iter_train(self, chunk: int = 4096) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """All training samples in order, in chunks, without augmentation (E-step, losses)."""
        for i in range(0, self.n_train, chunk):
            yield self.x_train[i:i + chunk], self.y_train[i:i + chunk]

    def iter_test(self, chunk: int = 4096) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """All test samples in order, in chunks."""
        for i in range(0, self.n_test, chunk):
            yield self.x_test[i:i + chunk], self.y_test[i:i + chunk]


class FederatedData(Protocol):
    """A federated dataset. Client ids 0..n_clients-1 train; the next n_unseen never do."""

    n_clients: int
    n_unseen: int
    input_shape: tuple[int, ...]
    n_classes: int

    def client(self, cid: int) -> ClientData: ...

    def partition_info(self) -> dict:
        """{'kind', 'seed', 'sha256', ...}: identifies the split for checkpoints."""
        ...


def contiguous_block(n: int, size: int, rank: int) -> range:
    """Client ids of ``rank`` when n clients are dealt to ``size`` ranks in contiguous blocks."""
    return range(rank * n // size, (rank + 1) * n // size)
