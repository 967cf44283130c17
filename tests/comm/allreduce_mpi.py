"""The planned round all-reduce (comm/mpi.py ``plan_allreduce``) under real ``mpiexec``.

Run by tests/comm/test_allreduce.py once per rank count; prints one JSON line per case
from rank 0::

    mpiexec -n 2 python tests/comm/allreduce_mpi.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedmtl_hpc.comm import mpi as mpi_mod  # noqa: E402
from fedmtl_hpc.comm.mpi import MPIComm  # noqa: E402


def out(comm, **case) -> None:
    if comm.rank == 0:
        print(json.dumps(case), flush=True)


def contribution(rank: int, n: int, dtype) -> np.ndarray:
    """Values whose sum depends on the order of addition (rounding), different on every rank."""
    g = np.random.default_rng(100 + rank)
    return (g.standard_normal(n) * 10.0 ** g.integers(-8, 8, n)).astype(dtype)


def plan_vs_blocking(comm: MPIComm, dtype, n: int, rounds: int = 3) -> dict:
    """``rounds`` planned all-reduces on one buffer (refilled each round) against ``allreduce_``."""
    same, buf = True, np.zeros(n, dtype=dtype)
    plan = comm.plan_allreduce(buf)
    for r in range(rounds):
        x = contribution(comm.rank + 10 * r, n, dtype)
        buf[:] = x
        plan.run()
        ref = x.copy()
        comm.allreduce_(ref)
        same &= buf.tobytes() == ref.tobytes()
    persistent, requests = plan.persistent, len(plan.requests)
    plan.free()
    return {"dtype": np.dtype(dtype).name, "n": n, "bitwise": bool(same), "persistent": persistent,
            "requests": requests, "live_after_free": len(mpi_mod._LIVE)}


def clustered(comm: MPIComm, persistent: bool) -> dict:
    """Clustered FL on two planted groups: splits change the payload size (re-layout)."""
    import torch

    from fedmtl_hpc.config import parse_config
    from fedmtl_hpc.data.synthetic import SyntheticMixture
    from fedmtl_hpc.engine import build_engine
    from fedmtl_hpc.models import build_model
    from fedmtl_hpc.params import FlatModel
    from tests.mpi.test_clustered import N_CLIENTS, flipped
    comm.persistent = persistent
    cfg = parse_config({
        "run": {"seed": 7, "rounds": 8}, "model": {"name": "linear"},
        "data": {"n_clients": N_CLIENTS, "unseen_clients": 0, "dim": 10, "n_components": 1,
                 "min_train": 40, "max_train": 150, "test_per_client": 10},
        "algorithm": {"name": "clustered", "clustered": {"split_from": 2, "eps1": 1e9, "eps2": 0.0,
                                                         "max_clusters": 4}},
        "train": {"lr": 3.0, "batch_size": 32}, "checkpoint": {"every": 0}})
    ds = flipped(SyntheticMixture(cfg.data, cfg.run.seed))
    fac = lambda: build_model("linear", ds.input_shape, 2)  # noqa: E731
    engine = build_engine(cfg, comm, ds, FlatModel(fac()), fac, torch.device("cpu"))
    engine.before_training()
    sizes = []
    for _ in range(cfg.run.rounds):
        engine.step()
        sizes.append(engine.exchange.buffer.numel())
    ex = engine.exchange
    used, line = bool(ex._plan.persistent), ex.describe()
    ex.close()
    return {"persistent": used, "plans": ex.plans, "sizes": sizes, "shared": engine.shared.numpy().tobytes().hex(),
            "cluster_of": engine.algo.cluster_of.tolist(), "describe": line}


def main() -> None:
    comm = MPIComm()
    for n in (1000, 10**6):   # small and large messages take different MPI algorithms
        for dtype in (np.float64, np.float32):
            out(comm, case="plan", **plan_vs_blocking(comm, dtype, n))
    comm.persistent = False
    out(comm, case="plan_off", **plan_vs_blocking(comm, np.float64, 1000))
    comm.persistent = True
    chunk, mpi_mod._CHUNK = mpi_mod._CHUNK, 300   # the > 2**31-element rule, on a small buffer
    out(comm, case="chunked", **plan_vs_blocking(comm, np.float64, 1000))
    mpi_mod._CHUNK = chunk
    on, off = clustered(comm, True), clustered(comm, False)
    out(comm, case="clustered", on=on, off=off)
    ok, source = comm.cuda_aware()
    out(comm, case="cuda", ok=ok, source=source)
    MPI.COMM_WORLD.Barrier()


if __name__ == "__main__":
    main()
