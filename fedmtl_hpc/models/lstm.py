"""Next-character LSTM for Shakespeare (LEAF / FedEM).

Reference: Caldas et al., "LEAF: A Benchmark for Federated Settings" (2018),
``models/shakespeare/stacked_lstm.py``, and Marfoq et al. (NeurIPS 2021),
https://github.com/omarfoq/FedEM ``models.py::NextCharacterLSTM`` with
``utils/constants.py::SHAKESPEARE_CONFIG`` (embed 8, hidden 256, 2 layers,
sequences of 80 characters). Layer names mirror FedEM (``encoder``, ``rnn``,
``decoder``). Two deliberate differences:

* Vocabulary: FedEM uses ``string.printable`` (100 symbols) for input and
  output; LEAF and this project's data reader use LEAF's 80-character set plus
  one explicit "unknown" index, so the default is ``vocab_size = n_classes = 81``.
* Output: FedEM returns logits for every time step (as ``[B, C, T]``); LEAF's
  task, and ours by default, predicts only the character after the 80-character
  input, so ``forward`` returns the last step's logits ``[B, n_classes]``.
  ``return_sequence=True`` gives every step as ``[B, T, n_classes]``.

Parameter count: ``8 * vocab_size + 798,720 + 257 * n_classes`` (embedding,
two LSTM layers with PyTorch's two bias vectors, decoder), i.e. 820,185 for
81/81 (default) and 825,220 for FedEM's 100/100. Checked by the tests.

``torch.func`` support (torch 2.13, CPU): ``functional_call`` works with the
fused ``nn.LSTM`` path. ``vmap`` over stacked parameters does NOT: the forward
raises "Batching rule not implemented for aten::lstm.input". Inside
``vmap(grad(...))`` it runs, but only because the op is decomposed into
``mkldnn_rnn_layer``, which vmap executes through its slow per-component
fallback with a performance warning (CPU; the cuDNN path is untested). Set
``unrolled=True`` (constructor or attribute) to run the same parameters through
an explicit per-time-step implementation built from ``F.linear`` and pointwise
ops, which works under ``vmap`` and gives the same numbers as ``nn.LSTM`` up to
float rounding. The fused path is faster when looping over components (cuDNN
on GPU; on CPU about 2x faster than the unrolled one for B=64, T=80), which is
what :meth:`NextCharacterLSTM.forward_stack` does unless ``unrolled`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

__all__ = ["NextCharacterLSTM", "SHAKESPEARE_SEQ_LEN"]

SHAKESPEARE_SEQ_LEN = 80  # characters per input sample (LEAF, FedEM chunk_len)


class NextCharacterLSTM(nn.Module):
    """Embedding -> stacked LSTM -> linear decoder.

    Args:
        vocab_size: number of input symbols (token ids in ``[0, vocab_size)``).
        n_classes: number of output symbols; defaults to ``vocab_size``.
        embed_size: embedding width (8 in LEAF/FedEM).
        hidden_size: LSTM hidden width (256).
        n_layers: stacked LSTM layers (2).
        unrolled: use the vmap-compatible per-step implementation.
        return_sequence: return logits for all steps ``[B, T, C]`` instead of the last ``[B, C]``.
    """

    def __init__(
        self,
        vocab_size: int = 81,
        n_classes: int | None = None,
        embed_size: int = 8,
        hidden_size: int = 256,
        n_layers: int = 2,
        unrolled: bool = False,
        return_sequence: bool = False,
    ) -> None:
        super().__init__()
        n_classes = vocab_size if n_classes is None else n_classes
        for name, value in (("vocab_size", vocab_size), ("n_classes", n_classes), ("embed_size", embed_size),
                            ("hidden_size", hidden_size), ("n_layers", n_layers)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.vocab_size = vocab_size
        self.n_classes = n_classes
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.unrolled = unrolled
        self.return_sequence = return_sequence
        self.encoder = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.LSTM(embed_size, hidden_size, num_layers=n_layers, batch_first=True)
        self.decoder = nn.Linear(hidden_size, n_classes)

    def _rnn_unrolled(self, x: torch.Tensor) -> torch.Tensor:
        """``nn.LSTM`` semantics (zero initial state, gate order i, f, g, o) step by step."""
        batch = x.shape[0]
        for layer in range(self.n_layers):
            w_ih = getattr(self.rnn, f"weight_ih_l{layer}")
            w_hh = getattr(self.rnn, f"weight_hh_l{layer}")
            bias = getattr(self.rnn, f"bias_ih_l{layer}") + getattr(self.rnn, f"bias_hh_l{layer}")
            # Input projections for all steps in one matmul; only h @ W_hh is sequential.
            # unbind (not gates_x[:, t]) so autograd stacks the step gradients once
            # instead of materialising a zero [B, T, 4H] tensor per step.
            gates_x = F.linear(x, w_ih, bias).unbind(1)
            h = x.new_zeros(batch, self.hidden_size)
            c = x.new_zeros(batch, self.hidden_size)
            outputs = []
            for gx in gates_x:
                gates = gx + F.linear(h, w_hh)
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
            x = torch.stack(outputs, dim=1)
        return x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Map token ids ``[B, T]`` to logits ``[B, n_classes]`` (or ``[B, T, n_classes]``).

        Any integer dtype is accepted (the LEAF reader keeps uint8 windows);
        ids are cast to int64 for the embedding.
        """
        embedded = self.encoder(tokens.long())
        if self.unrolled:
            hidden = self._rnn_unrolled(embedded)
        else:
            hidden, _ = self.rnn(embedded)
        if not self.return_sequence:
            hidden = hidden[:, -1]
        return self.decoder(hidden)

    def forward_stack(self, views: Mapping[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
        """K parameter sets at once: ``views`` maps names to ``[K, *shape]`` -> logits ``[K, B, ...]``.

        The fast-path hook of ``fedmtl_hpc.params.FlatModel``. ``nn.LSTM`` has no
        vmap batching rule, so the fused path loops over the K components (cuDNN
        on GPU); with ``unrolled=True`` the unrolled implementation is vmapped.
        Gradients flow back into ``views`` either way.
        """
        if self.unrolled:
            return vmap(lambda v: functional_call(self, v, (tokens,)))(dict(views))
        k = next(iter(views.values())).shape[0]
        return torch.stack([
            functional_call(self, {name: v[i] for name, v in views.items()}, (tokens,)) for i in range(k)
        ])
