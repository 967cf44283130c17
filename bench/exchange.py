"""Cost of the engine's round exchange relative to one raw MPI all-reduce of the same bytes.

What is measured, for each payload size, all in one run on one communicator:

* ``raw64``: one ``MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, buf)`` of a float64 numpy array
  with as many elements as the engine's buffer (payload + 3 engine slots);
* ``exchange``: ``AllreduceExchange.reduce()`` of a real Engine (float64 wire): the engine
  slots, then the planned all-reduce of the buffer (an MPI-4 persistent collective,
  ``Start``/``Wait``, unless ``FEDMTL_PERSISTENT=0``); on the CPU the buffer is the
  algorithm's accumulator, so there is nothing to pack;
* ``finish``: the whole ``AllreduceExchange.finish()`` (the above + the algorithm's
  ``finish_round``: for FedEM the float64 -> float32 cast into the shared stack);
* ``raw32`` / ``exchange32``: the same with ``train.wire_dtype: float32`` (float32 raw
  all-reduce of as many elements; the exchange packs the float64 accumulator into the
  float32 buffer, reduces, unpacks).

Ratios: exchange / raw64 (target <= 1.10 from 100 KB up), finish / raw64, exchange32 /
raw32 (the packing's cost) and exchange32 / exchange (what float32 saves end to end).

How: an Engine per size and wire dtype from a synthetic FedEM config whose ``data.dim``
makes the K x P stack reach the size (P = (dim + 1) * 2; one train and one test sample
per client, so memory stays small). Right before each timing, outside the timed region,
its buffer is refilled, then a barrier; the five timings take turns going first.
Each repetition's time is the max over ranks; the figure is the median over
repetitions (``--reps``, a third above 50 MB).

    .venv/bin/mpiexec -n 2 .venv/bin/python bench/exchange.py [--sizes 100KB,1MB] [--reps 60]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from mpi4py import MPI

from _common import header, parse_bytes
from fedmtl_hpc import engine as engine_mod
from fedmtl_hpc.comm.mpi import MPIComm
from fedmtl_hpc.config import parse_config
from fedmtl_hpc.data.synthetic import SyntheticMixture
from fedmtl_hpc.models import build_model
from fedmtl_hpc.params import FlatModel

TARGET = 1.10


def _engine(target: int, k: int, comm, wire: str):
    """A real Engine whose exchanged payload is about ``target`` bytes in float64."""
    dim = max(1, round(target / (8 * k * 2)) - 1)
    cfg = parse_config({"run": {"name": "bench-exchange"},
                        "data": {"n_clients": comm.size, "dim": dim, "min_train": 1, "max_train": 1,
                                 "test_per_client": 1, "n_components": k},
                        "algorithm": {"name": "fedem", "fedem": {"n_components": k}},
                        "train": {"wire_dtype": wire}})
    data = SyntheticMixture(cfg.data, cfg.run.seed)
    factory = lambda: build_model(cfg.model.name, data.input_shape, data.n_classes)  # noqa: E731
    return engine_mod.Engine(cfg, MPIComm(comm), data, FlatModel(factory()), factory, torch.device("cpu"))


def _refill(eng) -> None:
    """The accumulator as a round leaves it: the pre-scaled model (reduce() sets the slots)."""
    eng.exchange.views["shared"].copy_(eng.shared)


def _timed(comm, fn) -> float:
    comm.Barrier()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10KB,100KB,1MB,10MB,100MB", help="payload bytes in float64")
    ap.add_argument("--reps", type=int, default=60, help="repetitions per size (a third above 50 MB, >= 5)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--components", type=int, default=3, help="K: FedEM components sharing the buffer")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    header(comm, "bench/exchange.py: the engine's round exchange vs one raw in-place Allreduce of the same bytes")
    cols = ("raw64", "exchange", "finish", "raw32", "exchange32")
    if comm.rank == 0:
        print(f"# K = {args.components}; ms = max over ranks, median over reps; exchange = "
              f"AllreduceExchange.reduce(), finish = AllreduceExchange.finish(); target exchange/raw64 <= "
              f"{TARGET:.2f} from 100 KB up\n"
              f"{'size':>7} {'bytes64':>11} {'reps':>4} {'how':>10} " + " ".join(f"{c + ' ms':>13}" for c in cols)
              + f" {'ex/raw64':>8} {'fin/raw64':>9} {'ex32/raw32':>10} {'ex32/ex64':>9}  ok", flush=True)
    for text in args.sizes.split(","):
        e64, e32 = (_engine(parse_bytes(text), args.components, comm, w) for w in ("float64", "float32"))
        n = e64.exchange.buffer.numel()
        raw64, raw32 = np.ones(n, dtype=np.float64), np.ones(n, dtype=np.float32)
        reps = args.reps if 8 * n < 50e6 else max(5, args.reps // 3)
        times = np.zeros((len(cols), reps), dtype=np.float64)
        runs = [(lambda: raw64.fill(1.0), lambda: comm.Allreduce(MPI.IN_PLACE, raw64)),
                (lambda: _refill(e64), lambda: e64.exchange.reduce(1.0, 1.0, False)),
                (lambda: _refill(e64), lambda: e64.exchange.finish(1.0, 1.0, False)),
                (lambda: raw32.fill(1.0), lambda: comm.Allreduce(MPI.IN_PLACE, raw32)),
                (lambda: _refill(e32), lambda: e32.exchange.reduce(1.0, 1.0, False))]
        for i in range(-args.warmup, reps):
            for j in np.roll(np.arange(len(runs)), i):   # each measurement goes first in turn
                prep, fn = runs[j]
                prep()   # outside the timed region, right before: every buffer as warm as the others
                t = _timed(comm, fn)
                if i >= 0:
                    times[j, i] = t
        comm.Allreduce(MPI.IN_PLACE, times, op=MPI.MAX)
        ms = dict(zip(cols, np.median(times, axis=1) * 1e3))
        if comm.rank == 0:
            how = "persistent" if e64.exchange._plan.persistent else "blocking"
            r = ms["exchange"] / ms["raw64"]
            ok = "yes" if r <= TARGET else ("NO" if 8 * n >= 1e5 else "-")
            print(f"{text:>7} {8 * n:>11} {reps:>4} {how:>10} " + " ".join(f"{ms[c]:>13.3f}" for c in cols)
                  + f" {r:>8.2f} {ms['finish'] / ms['raw64']:>9.2f} {ms['exchange32'] / ms['raw32']:>10.2f}"
                    f" {ms['exchange32'] / ms['exchange']:>9.2f}  {ok}", flush=True)
        e64.exchange.close()
        e32.exchange.close()
        e64 = e32 = raw64 = raw32 = runs = None   # before the next size is built
    comm.Barrier()


if __name__ == "__main__":
    main()
