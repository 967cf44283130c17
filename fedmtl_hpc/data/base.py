"""What the engine needs from a dataset: per-client tensors and a digest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

__all__ = ["ClientData", "ClientBlock", "FederatedData", "contiguous_block", "balanced_bounds", "balanced_block",
           "train_sizes"]


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
    """Client ids of ``rank`` when n clients are dealt to ``size`` ranks in equal-count contiguous blocks."""
    return range(rank * n // size, (rank + 1) * n // size)


def balanced_bounds(sizes, size: int) -> np.ndarray:
    """``[size + 1]`` block bounds: contiguous blocks balanced by sample count.

    Bound r is the first client whose cumulative count (samples of the clients before it)
    reaches r/size of the total (clients with 0 samples count as 1, so an all-empty split
    still deals clients evenly). A block then holds at most total/size + the largest
    client's samples; when there are at least as many clients as ranks every rank gets one. Every rank computes the same bounds from the same sizes.
    """
    w = np.maximum(np.asarray(sizes, dtype=np.int64), 1)
    cum = np.concatenate([[0], np.cumsum(w)])
    targets = np.arange(size + 1, dtype=np.float64) * (cum[-1] / size)
    bounds = np.searchsorted(cum, targets, side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, len(w)
    bounds = np.maximum.accumulate(np.minimum(bounds, len(w)))
    if len(w) >= size:                     # no rank without clients (one huge client can't empty a rank)
        for r in range(1, size):
            bounds[r] = max(bounds[r], bounds[r - 1] + 1)
        for r in range(size - 1, 0, -1):
            bounds[r] = min(bounds[r], bounds[r + 1] - 1)
    return bounds


def balanced_block(sizes, size: int, rank: int) -> range:
    """Client ids of ``rank`` under :func:`balanced_bounds`."""
    b = balanced_bounds(sizes, size)
    return range(int(b[rank]), int(b[rank + 1]))


def train_sizes(dataset) -> np.ndarray | None:
    """Training samples per client ``[n_clients + n_unseen]`` when the dataset knows them without
    loading samples (``dataset.train_sizes()``), else None (equal-count blocks)."""
    f = getattr(dataset, "train_sizes", None)
    v = None if f is None else f()
    return None if v is None else np.asarray(v, dtype=np.int64)


@dataclass
class ClientBlock:
    """Training samples of several clients in one tensor: client j owns rows ``off[j]:off[j] + n[j]``.

    The batched local work (``algorithms/batched.py``) gathers every client's minibatch of
    a step from it in one indexing operation.
    """

    x: torch.Tensor
    y: torch.Tensor
    off: np.ndarray      # [C] int64
    n: np.ndarray        # [C] int64
    cids: np.ndarray     # [C] int64

    @property
    def n_clients(self) -> int:
        return len(self.n)

    @classmethod
    def pack(cls, datas: Sequence[ClientData]) -> "ClientBlock":
        """One tensor of the clients' training samples (a copy)."""
        n = np.array([d.n_train for d in datas], dtype=np.int64)
        off = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64) if len(n) else n
        cids = np.array([d.cid for d in datas], dtype=np.int64)
        if not datas:
            return cls(torch.zeros(0), torch.zeros(0, dtype=torch.int64), off, n, cids)
        return cls(torch.cat([d.x_train for d in datas]), torch.cat([d.y_train for d in datas]), off, n, cids)

    @classmethod
    def build(cls, datas: Iterable[ClientData], total: int) -> tuple["ClientBlock", list[ClientData]]:
        """Fill a block of ``total`` rows client by client (no second copy of the samples held at
        once); returns it and the clients with views into it. ValueError if a client is not plain
        ``ClientData`` or the rows do not add up to ``total``."""
        x = y = None
        out, n, o = [], [], 0
        for d in datas:
            m = d.n_train
            if type(d) is not ClientData or o + m > total:
                raise ValueError("clients do not fit a block")
            if x is None:   # numpy allocates: a large block gets transparent huge pages (fewer TLB misses
                # in the batched path's row gathers); torch.empty would not ask for them
                x = torch.from_numpy(np.empty((total, *d.x_train.shape[1:]),
                                              dtype=torch.empty(0, dtype=d.x_train.dtype).numpy().dtype))
                y = torch.empty(total, dtype=d.y_train.dtype)
            x[o:o + m].copy_(d.x_train)
            y[o:o + m].copy_(d.y_train)
            out.append(ClientData(d.cid, x[o:o + m], y[o:o + m], d.x_test, d.y_test))
            n.append(m)
            o += m
        if x is None or o != total:
            raise ValueError("clients do not fit a block")
        nn = np.array(n, dtype=np.int64)
        off = np.concatenate([[0], np.cumsum(nn)[:-1]]).astype(np.int64)
        return cls(x, y, off, nn, np.array([d.cid for d in out], dtype=np.int64)), out

    def views(self, datas: Sequence[ClientData]) -> list[ClientData]:
        """The same clients with ``x_train``/``y_train`` as views into this block (no copies)."""
        out = []
        for j, d in enumerate(datas):
            o, m = int(self.off[j]), int(self.n[j])
            out.append(ClientData(d.cid, self.x[o:o + m], self.y[o:o + m], d.x_test, d.y_test))
        return out
