"""Cost of the engine's per-round exchange relative to one raw MPI all-reduce.

What is measured: for each model size, the wall time of ``AllreduceExchange.finish()``
(stop slot, ONE in-place float64 ``Allreduce`` of ``engine.buffer``, whose
parameter block already is the weighted mean, then its float32 cast into
``engine.shared``) divided by the time of one raw
``MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, buf)`` on a float64 numpy array of
the same byte count, in the same run, on the same communicator.

How: a real Engine is built from a synthetic config whose ``data.dim`` makes
the linear model's stack (K x P, P = (dim + 1) * 2) reach the target; each
client holds 1 train and 1 test sample, so memory stays small. The exchanged
buffer is float64: bytes = 8 * K * P + 24. Before every repetition (outside
the timed region) both buffers are refilled (the engine's parameter slots
with its shared stack), then a barrier; raw and engine
repetitions alternate. Each repetition's time is the max over ranks; the
figure is the median over repetitions (``--reps``, fewer above 50 MB).
``--breakdown`` also times the step after the all-reduce alone.

Target: engine / raw <= 1.10 at every size.

    .venv/bin/mpiexec -n 2 .venv/bin/python bench/exchange.py [--sizes 10KB,1MB] [--reps 30]
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
from fedmtl_hpc.config import parse_config
from fedmtl_hpc.data.synthetic import SyntheticMixture
from fedmtl_hpc.models import build_model
from fedmtl_hpc.params import FlatModel



def _engine(target: int, k: int, comm):
    """A real Engine whose exchanged parameter block is about ``target`` bytes."""
    from fedmtl_hpc.comm.mpi import MPIComm
    dim = max(1, round(target / (8 * k * 2)) - 1)
    cfg = parse_config({"run": {"name": "bench-exchange"},
                        "data": {"n_clients": comm.size, "dim": dim, "min_train": 1, "max_train": 1,
                                 "test_per_client": 1, "n_components": k},
                        "algorithm": {"name": "fedem", "fedem": {"n_components": k}}})
    data = SyntheticMixture(cfg.data, cfg.run.seed)
    factory = lambda: build_model(cfg.model.name, data.input_shape, data.n_classes)  # noqa: E731
    return engine_mod.Engine(cfg, MPIComm(comm), data, FlatModel(factory()), factory, torch.device("cpu"))


def _refill(eng) -> None:
    kp = eng.shared.numel()
    eng.exchange.buffer[:kp].copy_(eng.shared.reshape(-1))
    eng.exchange.buffer[kp:].fill_(1.0)              # loss/weight slots (the stop vote is overwritten by exchange)


def _breakdown(eng) -> dict[str, float]:
    """The one step of AllreduceExchange.finish() after the all-reduce, timed alone (a replica; keep in sync)."""
    kp = eng.shared.numel()
    t = time.perf_counter()
    eng.shared.view(-1).copy_(eng.exchange.buffer[:kp])
    return {"cast-copy f64->f32 into shared": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10KB,100KB,1MB,10MB,100MB", help="parameter-block bytes (float64)")
    ap.add_argument("--reps", type=int, default=30, help="repetitions per size (a third above 50 MB, >= 5)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--components", type=int, default=3, help="K: FedEM components sharing the buffer")
    ap.add_argument("--breakdown", action="store_true", help="also time the post-all-reduce steps")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    header(comm, "bench/exchange.py: AllreduceExchange.finish() vs one raw in-place float64 Allreduce")
    if comm.rank == 0:
        print(f"# K = {args.components}; time = max over ranks, median over reps; target ratio <= 1.10\n"
              f"{'size':>7} {'bytes':>11} {'reps':>4} {'raw ms':>9} {'engine ms':>10} {'ratio':>6}  ok",
              flush=True)
    for text in args.sizes.split(","):
        eng = _engine(parse_bytes(text), args.components, comm)
        n = eng.exchange.buffer.numel()
        raw = np.ones(n, dtype=np.float64)
        reps = args.reps if 8 * n < 50e6 else max(5, args.reps // 3)
        times = np.zeros((2, reps), dtype=np.float64)
        for i in range(-args.warmup, reps):
            raw.fill(1.0)
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, raw)
            t1 = time.perf_counter()
            _refill(eng)
            comm.Barrier()
            t2 = time.perf_counter()
            eng.exchange.finish(1.0, 1.0, False)
            t3 = time.perf_counter()
            if i >= 0:
                times[:, i] = (t1 - t0, t3 - t2)
        comm.Allreduce(MPI.IN_PLACE, times, op=MPI.MAX)
        r_ms, e_ms = np.median(times, axis=1) * 1e3
        if comm.rank == 0:
            ratio = e_ms / r_ms
            print(f"{text:>7} {8 * n:>11} {reps:>4} {r_ms:>9.3f} {e_ms:>10.3f} {ratio:>6.2f}  "
                  f"{'yes' if ratio <= 1.10 else 'NO'}", flush=True)
        if args.breakdown:
            parts = []
            for _ in range(max(3, reps // 2)):
                _refill(eng)
                comm.Barrier()
                parts.append(_breakdown(eng))
            if comm.rank == 0:
                print("        after the all-reduce (rank 0, median ms): " + ", ".join(
                    f"{k} {1e3 * np.median([p[k] for p in parts]):.3f}" for k in parts[0]), flush=True)
        del eng, raw
    comm.Barrier()


if __name__ == "__main__":
    main()
