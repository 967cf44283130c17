"""Run under ``mpiexec -n N``: checks of comm/gossip.py over real MPI, one JSON line per case.

Rank 0 prints ``{"case": ..., ...}`` lines that tests/comm/test_exchange.py asserts on.
Every rank builds the same global float64 stack X (seeded) and keeps its own rows; the
results are gathered to rank 0 here, in the test only (the library never gathers).
No torch import: a launch takes well under a second.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from fedmtl_hpc.comm import topology as T
from fedmtl_hpc.comm.gossip import Gossip, rank_hops
from fedmtl_hpc.comm.mpi import MPIComm

COMM = MPIComm()
RANK, SIZE = COMM.rank, COMM.size
WIDTH = 7


def gather(g: Gossip, n: int) -> np.ndarray | None:
    counts = np.bincount(T.block_owner(n, SIZE), minlength=SIZE).tolist()
    return COMM.gather_rows(np.ascontiguousarray(g.rows), counts)


def report(**fields) -> None:
    if RANK == 0:
        print(json.dumps(fields), flush=True)


def one_step_cases() -> None:
    """(3): k steps over MPI == W^k X in one process, 1e-12 in float64."""
    for kind in ("ring", "erdos_renyi", "torus", "star", "complete"):
        for per_rank in (1, 3, 5):
            n = SIZE * per_rank + (1 if per_rank == 5 else 0)  # an uneven split too
            t = T.build_topology(kind, n, p=0.3, seed=5)
            owner = T.block_owner(n, SIZE)
            X = np.random.default_rng(n).normal(size=(n, WIDTH))
            g = Gossip(COMM, T.local_blocks(t.W, owner, SIZE), WIDTH, np.float64)
            g.rows[...] = X[owner == RANK]
            errs, ref = [], X
            for _ in range(3):  # three steps: each one reads the previous one's rows in place
                g.mix_()
                ref = T.mix_reference(t.W, ref)
                got = gather(g, n)
                errs.append(float(np.abs(got - ref).max()) if RANK == 0 else 0.0)
            packed = np.array([float(g.p)])
            COMM.allreduce_(packed)  # > 0: some rank sent rows that are not one run (the pack path)
            report(case="exact", kind=kind, n=n, size=SIZE, err=max(errs), bytes=g.bytes_per_step,
                   packed=int(packed[0]))
            g.free()


def time_varying_case() -> None:
    """A new graph every step (communicator rebuilt): still the product of the W_t."""
    for kind in ("erdos_renyi", "ring"):
        n = 3 * SIZE + 1
        sched = T.TopologySchedule(kind, n, change_every=1, seed=3, p=0.3)
        owner = T.block_owner(n, SIZE)
        X = np.random.default_rng(1).normal(size=(n, WIDTH))
        g = Gossip(COMM, T.local_blocks(sched.at(0).W, owner, SIZE), WIDTH, np.float64)
        g.rows[...] = X[owner == RANK]
        ref, err = X, 0.0
        for step in range(6):
            W = sched.at(step).W
            g.set_blocks(T.local_blocks(W, owner, SIZE))
            g.mix_()
            ref = W @ ref
            got = gather(g, n)
            err = max(err, float(np.abs(got - ref).max()) if RANK == 0 else 0.0)
        live = len([q for q in getattr(g.nb, "_plans", []) if not q.freed])  # old plans let go of old buffers
        report(case="time_varying", kind=kind, n=n, size=SIZE, err=err, live_plans=live)
        g.free()


def convergence_case() -> None:
    """(2): repeated mixing reaches the exact initial average at rate (1 - gap)^k or faster."""
    for kind, n in (("ring", 2 * SIZE + 2), ("torus", 4 * SIZE)):
        t = T.build_topology(kind, n)
        owner = T.block_owner(n, SIZE)
        X = np.random.default_rng(7).uniform(-1, 1, size=(n, WIDTH))
        mean = X.mean(axis=0)
        g = Gossip(COMM, T.local_blocks(t.W, owner, SIZE), WIDTH, np.float64)
        g.rows[...] = X[owner == RANK]
        d0 = np.linalg.norm(X - mean)
        worst_rate, mean_drift, steps = 0.0, 0.0, 0
        while True:
            g.mix_()
            steps += 1
            got = gather(g, n)
            done = np.zeros(1)
            if RANK == 0:
                d = np.linalg.norm(got - mean)
                bound = (1 - t.spectral_gap) ** steps * d0
                worst_rate = max(worst_rate, (d - 1e-13) / bound)
                mean_drift = max(mean_drift, float(np.abs(got.mean(axis=0) - mean).max()))
                done[0] = float(np.abs(got - mean).max() < 1e-12 or steps >= 5000)
            COMM.comm.Bcast(done, root=0)
            if done[0]:
                break
        report(case="converge", kind=kind, n=n, size=SIZE, gap=t.spectral_gap, steps=steps,
               worst_rate=worst_rate, mean_drift=mean_drift,
               final=float(np.abs(got - mean).max()) if RANK == 0 else 0.0)
        g.free()


def control_case() -> None:
    """A control value from the last rank reaches every rank in exactly rank_hops steps."""
    n = 2 * SIZE
    blocks = T.local_blocks(T.build_topology("ring", n).W, T.block_owner(n, SIZE), SIZE)
    g = Gossip(COMM, blocks, WIDTH, np.float64)
    known, first = (5.0 if RANK == SIZE - 1 else np.inf), None
    for step in range(SIZE + 2):
        known = g.mix_(known)
        if known == 5.0 and first is None:
            first = step + 1
    firsts = np.array([first or -1], dtype=np.float64)
    allf = np.zeros(SIZE) if RANK == 0 else None
    COMM.comm.Gather(firsts, allf, root=0)
    report(case="control", size=SIZE, hops=rank_hops(blocks),
           first=[int(v) for v in allf] if RANK == 0 else [])
    g.free()


if __name__ == "__main__":
    for fn in (one_step_cases, time_varying_case, convergence_case, control_case):
        fn()
    COMM.barrier()
    sys.exit(0)
