"""ClientData subclasses: augmented CIFAR batches and lazily cut Shakespeare windows.

The engine and the algorithms read samples only through ``train_batch``,
``iter_train`` and ``iter_test`` (data/base.py), so these classes change what
a batch is without touching the training code. Both keep their class across
``to(device)``, which the engine calls once per client.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..models.augment import augment_cifar
from .base import ClientData

__all__ = ["AugmentedClientData", "TextClientData"]


class AugmentedClientData(ClientData):
    """Normalised CIFAR images whose training batches are randomly cropped (pad 4) and flipped.

    x_*: float32 ``[n, 3, 32, 32]`` already normalised; ``black``: float32
    ``[3, 1, 1]``, the normalised value of a black pixel. Padding must be black
    (torchvision pads before normalising), so a batch is shifted to make black
    zero, augmented (models/augment.py) and shifted back. Randomness comes only
    from the generator handed to ``train_batch`` (the client's round stream);
    without one, or in ``iter_train`` / ``iter_test``, images are unchanged.
    """

    def __init__(self, cid: int, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                 y_test: torch.Tensor, black: torch.Tensor):
        super().__init__(cid, x_train, y_train, x_test, y_test)
        self.black = black

    def to(self, device: torch.device | str) -> "AugmentedClientData":
        return AugmentedClientData(self.cid, self.x_train.to(device), self.y_train.to(device),
                                   self.x_test.to(device), self.y_test.to(device), self.black.to(device))

    def train_batch(self, idx: torch.Tensor, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.x_train[idx], self.y_train[idx]
        if gen is None:
            return x, y
        return augment_cifar(x - self.black, gen) + self.black, y


class TextClientData(ClientData):
    """Next-character windows cut on demand from one role's text (LEAF Shakespeare).

    codes: uint8 ``[L]`` vocabulary indices of the role's text (data/leaf.py);
    train_starts / test_starts: int64 ``[n]`` offsets of each window in
    ``codes``. Window i is ``codes[s_i : s_i + seq_len]`` (x, int64
    ``[seq_len]``) and its target ``codes[s_i + seq_len]`` (y). Only the text
    is stored (one byte a character plus 8 bytes a window offset) instead of
    ``seq_len`` bytes per window; the ``x_*``/``y_*`` fields stay empty.
    """

    def __init__(self, cid: int, codes: torch.Tensor, train_starts: torch.Tensor, test_starts: torch.Tensor,
                 seq_len: int = 80):
        empty_x = torch.empty(0, seq_len, dtype=torch.int64, device=codes.device)
        empty_y = torch.empty(0, dtype=torch.int64, device=codes.device)
        super().__init__(cid, empty_x, empty_y, empty_x, empty_y)
        self.codes, self.seq_len = codes, seq_len
        self.train_starts, self.test_starts = train_starts, test_starts
        self._span = torch.arange(seq_len + 1, device=codes.device)

    @property
    def n_train(self) -> int:
        return int(self.train_starts.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_starts.shape[0])

    def to(self, device: torch.device | str) -> "TextClientData":
        return TextClientData(self.cid, self.codes.to(device), self.train_starts.to(device),
                              self.test_starts.to(device), self.seq_len)

    def windows(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x int64 ``[B, seq_len]`` and y int64 ``[B]`` of the windows at ``starts [B]``."""
        w = self.codes[starts.to(self._span.device)[:, None] + self._span].long()  # [B, seq_len + 1]
        return w[:, :-1], w[:, -1]

    def train_batch(self, idx: torch.Tensor, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.windows(self.train_starts[idx.to(self.train_starts.device)])

    def iter_train(self, chunk: int = 4096) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, self.n_train, chunk):
            yield self.windows(self.train_starts[i:i + chunk])

    def iter_test(self, chunk: int = 4096) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, self.n_test, chunk):
            yield self.windows(self.test_starts[i:i + chunk])
