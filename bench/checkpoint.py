"""Checkpoint cost as the client state grows: sharded write vs the one file it replaces.

For each total client-state size (``--sizes``, float32 rows of ``--row`` floats: a
Local-style ``params [N, 1, P]`` state), all in one run on one communicator:

* ``sharded``: the real ``checkpoint.save`` with the rows split over the ranks (each rank
  its shard, rank 0 the master): seconds (max over ranks) and rank 0's resident memory
  added during the save (VmHWM after resetting it, minus VmRSS before);
* ``gathered``: what format 3 did: ``Gatherv`` of every rank's rows to rank 0, which writes
  one file with the same layout (``checkpoint.save`` without a communicator);
* ``verify``: ``checkpoint.verify`` of the sharded master on rank 0 (reads every shard).

    .venv/bin/mpiexec -n 2 .venv/bin/python bench/checkpoint.py [--sizes 64MB,256MB,1GB] [--row 250000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
from mpi4py import MPI

from _common import header, parse_bytes
from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc import rng  # noqa: F401  (save reads rng.SCHEME; a real run has it and torch loaded)
from fedmtl_hpc.comm.mpi import MPIComm
from fedmtl_hpc.hpc import memory_kib, reset_peak_memory


def snapshot(rows: np.ndarray, start: int, n: int, width: int, sharded: bool) -> ck.Snapshot:
    return ck.Snapshot(round=1, algorithm="local", config_text="run: {}\n", shared=np.zeros((0, width), np.float32),
                       layout=[], client_ids=np.arange(start, start + len(rows), dtype=np.int64),
                       client_weight=np.ones(len(rows)), client_state={"params": rows}, seed=1,
                       partition={"kind": "bench", "seed": 1, "sha256": "x"},
                       n_rows=n if sharded else None, row_start=start if sharded else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64MB,256MB,1GB", help="total client state (float32 bytes)")
    ap.add_argument("--row", type=int, default=250_000, help="floats per client (1 MB rows by default)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = ap.parse_args()
    comm, world = MPIComm(), MPI.COMM_WORLD
    header(world, "checkpoint: sharded write vs gather-to-rank-0, as client state grows")
    base = world.bcast(args.dir or (tempfile.mkdtemp(prefix="ckbench-") if comm.rank == 0 else None))
    if comm.rank == 0:
        print(f"{'state':>8} {'clients':>8} {'sharded s':>10} {'GB/s':>6} {'rank0 +MB':>10} "
              f"{'gathered s':>11} {'rank0 +MB':>10} {'verify s':>9}", flush=True)
    for size in args.sizes.split(","):
        n = max(comm.size, parse_bytes(size) // (4 * args.row))
        lo, hi = n * comm.rank // comm.size, n * (comm.rank + 1) // comm.size
        mine = np.random.default_rng(comm.rank).standard_normal((hi - lo, 1, args.row), dtype=np.float32)
        out = {}
        for how in ("sharded", "gathered"):
            d = os.path.join(base, f"{how}-{size}")
            world.Barrier()
            before = reset_peak_memory()
            t0 = time.perf_counter()
            if how == "sharded":
                path = ck.save(snapshot(mine, lo, n, args.row, True), d, keep=1, comm=comm)
            else:
                allrows = comm.gather_rows(mine, [n * (r + 1) // comm.size - n * r // comm.size
                                                  for r in range(comm.size)])
                path = ck.save(snapshot(allrows, 0, n, args.row, False), d, keep=1) if comm.rank == 0 else None
                del allrows
            dt = world.allreduce(time.perf_counter() - t0, op=MPI.MAX)
            out[how] = (dt, (memory_kib("VmHWM") - before) / 1024, path)
        if comm.rank == 0:
            t0 = time.perf_counter()
            ck.verify(out["sharded"][2])
            tv = time.perf_counter() - t0
            gb = n * args.row * 4 / 1e9
            print(f"{size:>8} {n:>8} {out['sharded'][0]:>10.2f} {gb / out['sharded'][0]:>6.2f} "
                  f"{out['sharded'][1]:>10.0f} {out['gathered'][0]:>11.2f} {out['gathered'][1]:>10.0f} "
                  f"{tv:>9.2f}", flush=True)
            for how in out:
                shutil.rmtree(os.path.join(base, f"{how}-{size}"), ignore_errors=True)
        world.Barrier()
    if comm.rank == 0 and not args.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
