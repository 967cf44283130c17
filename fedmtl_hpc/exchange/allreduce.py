"""Client-server mode: the algorithm's payload and three engine slots in ONE Allreduce.

The buffer (CPU, allocated once and again only when the payload's layout changes,
e.g. when Clustered FL splits a cluster) is::

    [ algorithm payload (payload() order) | sum_sampled w_t | sum_sampled w_t loss_t | stop votes ]

Contributions are pre-scaled by n = sum_t n_t (reduced once before round 1), so for
the default payload the reduced block already is the new model: the exchange is the
all-reduce plus one cast. The all-reduce is planned once per layout
(``comm.plan_allreduce``: an MPI-4 persistent collective where the library has one) and
freed when the layout changes. The algorithm always accumulates in float64; the buffer
that travels is that accumulator itself (float64 on the CPU), or a separate one it is
packed into and unpacked from: off the CPU (staging) and with ``train.wire_dtype:
float32`` (half the bytes; each rank's partial sum is rounded to float32 and the
cross-rank sum runs in float32).
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
        self.wire = np.dtype(engine.cfg.train.wire_dtype)
        self._layout, self._plan, self.plans = None, None, 0   # plans: how many were set up (tests)
        self.buffer = torch.zeros(0, dtype=torch.float64)
        self._idle: tuple[list, list] = ([], [])
        self._relayout()

    def _relayout(self) -> None:
        """(Re)allocate the buffer for the algorithm's payload and plan its all-reduce; views by name.
        Collective when the layout changed (it changes on every rank at once: server state)."""
        layout = tuple((k, tuple(s)) for k, s in self.algo.payload().items())
        if layout == self._layout:
            return
        sizes = [math.prod(s) for _, s in layout]
        n = sum(sizes)
        self.close()
        # numpy allocates it so large buffers get huge pages
        self.buffer = torch.from_numpy(np.zeros(n + 3, dtype=self.wire))
        self._slots = self.buffer.numpy()[n:]
        self._packed = self.device.type != "cpu" or self.wire != np.float64
        acc = torch.zeros(n, dtype=torch.float64, device=self.device) if self._packed else self.buffer[:n]
        self._acc, self._layout, off = acc, layout, 0
        self.views = {}
        for (k, s), m in zip(layout, sizes):
            self.views[k] = acc[off:off + m].view(s)
            off += m
        self._plan = self.comm.plan_allreduce(self.buffer)
        self.plans += 1

    def close(self) -> None:
        """Free the planned all-reduce (a layout change, the end of the run)."""
        if self._plan is not None:
            self._plan.free()
            self._plan = None

    # -- one round -----------------------------------------------------------------
    def begin_round(self, rnd: int) -> None:
        self._relayout()
        self._acc.zero_()
        self._idle = ([], [])

    def start(self, i, cid):
        return self.algo.start(cid)

    def trained(self, i, cid, scale, res):
        self.algo.accumulate(self.views, cid, scale, res)

    def trained_batch(self, idx, cids, scales, res):
        self.algo.accumulate_batch(self.views, cids, scales, res)

    def idle(self, idx, cids, scales):
        # kept as the arrays they come in: a million clients' Python ints and floats a round cost ~50 ms
        if len(self._idle[0]):
            cids, scales = np.concatenate([self._idle[0], cids]), np.concatenate([self._idle[1], scales])
        self._idle = (cids, scales)

    def finish(self, w_s, loss_s, stop):
        self.algo.accumulate_idle(self.views, *self._idle)
        loss, stop, nbytes = self.reduce(w_s, loss_s, stop)
        return loss, stop, nbytes, self.algo.finish_round(self.views)

    def reduce(self, w_s: float, loss_s: float, stop: bool) -> tuple[float, bool, int]:
        """The all-reduce of the accumulated payload and the engine slots (packing included);
        returns (train loss, stop agreed, bytes moved over all ranks)."""
        if self._packed:   # one copy: device -> host and float64 -> wire dtype together
            self.buffer[:self._acc.numel()].copy_(self._acc)
        s = self._slots
        s[_WS], s[_LOSS], s[_STOP] = w_s, loss_s, 1.0 if stop else 0.0
        self._plan.run()
        if self._packed:
            self._acc.copy_(self.buffer[:self._acc.numel()])
        return float(s[_LOSS] / s[_WS]), bool(s[_STOP] > 0), self.buffer.nbytes * self.comm.size

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
        # the restored server state may lay the payload out anew (more clusters): only then is a
        # new buffer planned, on every rank alike (the snapshot is the same everywhere)
        self._relayout()

    def describe(self) -> str:
        how = "persistent (MPI_Allreduce_init)" if getattr(self._plan, "persistent", False) else "blocking"
        line = (f"client-server: one in-place {self.wire.name} Allreduce per round, {how}, "
                f"{self.buffer.nbytes} bytes per rank")
        if hasattr(self.comm, "cuda_aware"):   # MPI only (one symbol look-up: cheap)
            ok, source = self.comm.cuda_aware()
            line += f"; CUDA-aware MPI: {'unknown' if ok is None else 'yes' if ok else 'no'} ({source})"
        return line
