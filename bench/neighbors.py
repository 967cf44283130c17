"""Cost of one decentralized exchange relative to the raw MPI neighbour exchange.

What is measured, for a ring and a torus over the ranks' clients and several row sizes:

* raw: ONE bare ``Neighbor_alltoallv`` (``MPI.FLOAT``, counts in elements) on the gossip's
  own distributed-graph communicator, between two preallocated numpy arrays, moving exactly
  the rows the gossip moves (same counts, same bytes, same neighbours);
* exchange: ``Gossip.exchange_()``, what decentralized mode adds around that call: stamp the
  control column (the stop-request value), pack rows that are not one run, the same collective
  through ``comm/mpi.py`` (row datatype; an MPI-4 persistent request planned once per graph,
  where the library has them), and the min over the received control values;
* persist: the bare persistent request of the same plan (``Start``/``Wait`` only), to show what
  the Python around it costs;
* step: ``Gossip.mix_()`` = exchange + the W-weighted sum (one product over own + received rows:
  a GEMM for small blocks, a sparse product above ``comm/gossip.py``'s ``_DENSE_HALO``),
  i.e. one whole gossip round of the engine's exchange phase.

Target: exchange / raw <= 1.10. step / raw is reported too: the weighted sum must read every
own and received row once more (deg + 1 rows per own row), which no neighbour collective does,
so it is a floor set by memory bandwidth, not by overhead.

Then the degree sweep: circulant graphs over one client per rank with degree 2, 4, ... up to
complete, time of one exchange and of one step per degree (and per neighbour).

Each repetition: barrier, time, then the max over ranks; the figure is the median over
repetitions; raw, exchange and step alternate within a repetition.

    .venv/bin/mpiexec -n 8 .venv/bin/python bench/neighbors.py [--clients-per-rank 1] [--sizes 10KB,1MB,10MB]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mpi4py import MPI

from _common import header, parse_bytes
from fedmtl_hpc.comm import topology as T
from fedmtl_hpc.comm.gossip import Gossip
from fedmtl_hpc.comm.mpi import MPIComm



def _circulant(n: int, degree: int) -> np.ndarray:
    """Edges of the circulant graph C_n(1..k) (+ the antipodal chord when degree is odd)."""
    pairs = [(i, (i + s) % n) for i in range(n) for s in range(1, degree // 2 + 1)]
    if degree % 2:
        pairs += [(i, (i + n // 2) % n) for i in range(n)]
    e = np.sort(np.array(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    return np.unique(e[e[:, 0] != e[:, 1]], axis=0)


class Raw:
    """The bare collective the gossip step is built on, on the same communicator and rows."""

    def __init__(self, g: Gossip):
        w = g.width + 1
        self.send = np.ones((g.p + g.m, w), dtype=g.dtype)
        self.recv = np.zeros((g.r, w), dtype=g.dtype)
        as_int = lambda a: (np.asarray(a) * w).astype(np.int32)  # noqa: E731 - rows -> elements
        self.s = (as_int(g.send_counts), as_int(g.send_displs))
        self.rv = (as_int(g.recv_counts), as_int(g.recv_displs))
        self.graph = g.nb.graph

    def __call__(self) -> None:
        self.graph.Neighbor_alltoallv([self.send, self.s, MPI.FLOAT], [self.recv, self.rv, MPI.FLOAT])


def _persistent(g: Gossip):
    req = g._plan.request
    if req is None:
        return lambda: None

    def run() -> None:
        req.Start()
        req.Wait()
    return run


def _time(comm: MPI.Comm, fns: dict, reps: int, warmup: int = 3) -> dict[str, float]:
    """Median over reps of the max over ranks of one call of each fn, in ms (fns alternate)."""
    times = np.zeros((len(fns), reps))
    for i in range(-warmup, reps):
        for k, fn in enumerate(fns.values()):
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            if i >= 0:
                times[k, i] = time.perf_counter() - t0
    comm.Allreduce(MPI.IN_PLACE, times, op=MPI.MAX)
    return {name: 1e3 * float(np.median(times[k])) for k, name in enumerate(fns)}


def _gossip(comm: MPIComm, W, width: int) -> Gossip:
    """Gossip over W (a sparse csr_array, as Topology.W) with random float32 rows of ``width``."""
    owner = T.block_owner(W.shape[0], comm.size)
    g = Gossip(comm, T.local_blocks(W, owner, comm.size), width, np.float32)
    g.rows[...] = np.random.default_rng(comm.rank).normal(size=g.rows.shape)
    return g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10KB,100KB,1MB,10MB", help="bytes of one client's row (float32)")
    ap.add_argument("--clients-per-rank", type=int, default=1)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--sweep-size", default="1MB", help="row size of the degree sweep")
    args = ap.parse_args()
    comm = MPIComm()
    world = comm.comm
    n = comm.size * args.clients_per_rank
    header(world, "bench/neighbors.py: Gossip.exchange_() / mix_() vs one raw Neighbor_alltoallv",
           f"  clients {n}")
    if comm.rank == 0:
        print(f"# time = max over ranks, median over {args.reps} reps; target exchange/raw <= 1.10", flush=True)
        print(f"{'graph':>6} {'row':>6} {'sent/rank':>10} {'raw ms':>8} {'persist':>8} {'exch ms':>8} "
              f"{'step ms':>8} {'exch/raw':>8} {'step/raw':>8}  ok", flush=True)
    for kind in ("ring", "torus"):
        t = T.build_topology(kind, n)
        for text in args.sizes.split(","):
            g = _gossip(comm, t.W, max(1, parse_bytes(text) // 4))
            raw = Raw(g)
            ms = _time(world, {"raw": raw, "persist": _persistent(g), "exch": g.exchange_, "step": g.mix_},
                       args.reps)
            if comm.rank == 0:
                r = ms["exch"] / ms["raw"]
                print(f"{kind:>6} {text:>6} {g.bytes_sent:>10} {ms['raw']:>8.3f} {ms['persist']:>8.3f} {ms['exch']:>8.3f} "
                      f"{ms['step']:>8.3f} {r:>8.2f} {ms['step'] / ms['raw']:>8.2f}  {'yes' if r <= 1.10 else 'NO'}",
                      flush=True)
            g.free()
    if comm.rank == 0:
        print(f"\n# degree sweep: circulant graphs over {comm.size} ranks, one client each, row {args.sweep_size}\n"
              f"{'degree':>6} {'raw ms':>8} {'exch ms':>8} {'step ms':>8} {'exch ms/nbr':>11}", flush=True)
    for degree in sorted({d for d in (1, 2, 3, 4, 6, 8, 12, 16) if d < comm.size} | {comm.size - 1}):
        if degree < 1 or (degree == 1 and comm.size > 2):
            continue
        W = T.metropolis_weights(comm.size, _circulant(comm.size, degree))
        g = _gossip(comm, W, max(1, parse_bytes(args.sweep_size) // 4))
        ms = _time(world, {"raw": Raw(g), "exch": g.exchange_, "step": g.mix_}, args.reps)
        if comm.rank == 0:
            print(f"{degree:>6} {ms['raw']:>8.3f} {ms['exch']:>8.3f} {ms['step']:>8.3f} "
                  f"{ms['exch'] / degree:>11.3f}", flush=True)
        g.free()
    world.Barrier()


if __name__ == "__main__":
    main()
