"""Run under mpiexec: rank 0's peak memory while every rank checkpoints big client rows.

    mpiexec -n 4 python tests/mpi/shard_memory.py DIR ROWS_PER_RANK ROW_FLOATS

Each rank holds ROWS_PER_RANK clients of ROW_FLOATS float32 each (a Local-style
``params [N, 1, P]`` state) and calls the real ``checkpoint.save`` (shards + master).
Rank 0 prints one JSON line: the resident memory it added during the save above what it
held before (peak RSS, /proc/self/status VmHWM after resetting it), and its own rows' bytes.
"""

import json
import sys

import numpy as np

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc.comm.mpi import MPIComm
from fedmtl_hpc.hpc import memory_kib, reset_peak_memory
from fedmtl_hpc import rng  # noqa: F401  (save reads rng.SCHEME; a real run has it and torch loaded)


def main() -> None:
    directory, rows, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    comm = MPIComm()
    n = rows * comm.size
    start = rows * comm.rank
    state = np.random.default_rng(comm.rank).standard_normal((rows, 1, width), dtype=np.float32)
    snap = ck.Snapshot(round=1, algorithm="local", config_text="run: {}\n",
                       shared=np.zeros((0, width), np.float32), layout=[],
                       client_ids=np.arange(start, start + rows, dtype=np.int64),
                       client_weight=np.ones(rows), client_state={"params": state}, seed=1,
                       partition={"kind": "test", "seed": 1, "sha256": "x"}, n_rows=n, row_start=start)
    comm.barrier()
    before = reset_peak_memory()   # VmHWM := the current RSS
    path = ck.save(snap, directory, keep=1, comm=comm)
    extra = memory_kib("VmHWM") - before
    if comm.rank == 0:
        info = ck.verify(path)
        print(json.dumps({"clients": n, "extra_kib": extra, "own_kib": state.nbytes // 1024,
                          "total_kib": n * width * 4 // 1024, "shards": len(info["shards"])}), flush=True)


if __name__ == "__main__":
    main()
