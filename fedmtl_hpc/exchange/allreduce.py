"""Client-server mode: the algorithm's payload and three engine slots in ONE Allreduce.

The buffer (float64, CPU, allocated once and again only when the payload's layout
changes, e.g. when Clustered FL splits a cluster) is::

    [ algorithm payload (payload() order) | sum_sampled w_t | sum_sampled w_t loss_t | stop votes ]

Contributions are pre-scaled by n = sum_t n_t (reduced once before round 1), so for
the default payload the reduced block already is the new model: the exchange is the
all-reduce plus one cast. Off the CPU the algorithm accumulates into a device copy
that is staged through the buffer.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["AllreduceExchange"]

_WS, _LOSS, _STOP = range(3)


class AllreduceExchange:
    columns: tuple[str, ...] = ()
    eval_slots = 0

    def __init__(self, engine):
        self.engine, self.algo, self.comm = engine, engine.algo, engine.comm
        self.device = engine.device
        self._layout = None
        self.buffer = torch.zeros(0, dtype=torch.float64)
        self._idle: tuple[list, list] = ([], [])
        self._relayout()

    def _relayout(self) -> None:
        """(Re)allocate the buffer for the algorithm's payload; views by name."""
        layout = tuple((k, tuple(s)) for k, s in self.algo.payload().items())
        if layout == self._layout:
            return
        sizes = [math.prod(s) for _, s in layout]
        n = sum(sizes)
        # numpy allocates it so large buffers get huge pages
        self.buffer = torch.from_numpy(np.zeros(n + 3))
        self._slots = self.buffer.numpy()[n:]
        acc = self.buffer[:n] if self.device.type == "cpu" else torch.zeros(n, dtype=torch.float64, device=self.device)
        self._acc, self._layout, off = acc, layout, 0
        self.views = {}
        for (k, s), m in zip(layout, sizes):
            self.views[k] = acc[off:off + m].view(s)
            off += m

    # -- one round -----------------------------------------------------------------
    def begin_round(self, rnd: int) -> None:
        self._relayout()
        self._acc.zero_()
        self._idle = ([], [])

    def start(self, i, cid):
        return self.algo.start(cid)

    def trained(self, i, cid, scale, res):
        self.algo.accumulate(self.views, cid, scale, res)

    def idle(self, idx, cids, scales):
        self._idle[0].extend(cids.tolist())
        self._idle[1].extend(scales.tolist())

    def finish(self, w_s, loss_s, stop):
        self.algo.accumulate_idle(self.views, *self._idle)
        if self._acc.data_ptr() != self.buffer.data_ptr():
            self.buffer[:self._acc.numel()].copy_(self._acc)
        s = self._slots
        s[_WS], s[_LOSS], s[_STOP] = w_s, loss_s, 1.0 if stop else 0.0
        self.comm.allreduce_(self.buffer)
        if self._acc.data_ptr() != self.buffer.data_ptr():
            self._acc.copy_(self.buffer[:self._acc.numel()])
        extra = self.algo.finish_round(self.views)
        nbytes = self.buffer.numel() * self.buffer.element_size() * self.comm.size
        return float(s[_LOSS] / s[_WS]), bool(s[_STOP] > 0), nbytes, extra

    # -- evaluation ------------------------------------------------------------------
    def eval_params(self, i, cid):
        return self.algo.start(cid)

    def reference(self):
        return self.algo.shared

    def fill_eval(self, tail):
        pass

    def read_eval(self, tail):
        return {}

    # -- checkpoint ----------------------------------------------------------------------
    def client_tensors(self):
        return {}

    def finish_snapshot(self, snap):
        pass

    def restore(self, snap):
        self._layout = None   # the algorithm's state (and payload) may have changed
        self._relayout()

    def describe(self) -> str:
        return ""
