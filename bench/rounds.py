"""Seconds per round of the default synthetic workload, and how it scales with ranks.

What is measured: ``Engine.step()`` (local work of the rank's clients, the one
all-reduce, the aggregate, the round bookkeeping) on configs/synthetic_fedem.yaml
(300 clients, FedEM, linear model), without the callbacks (evaluation every
10 rounds, checkpoints), so the figure is the training round alone.

How: data and engine are built as ``fedmtl-hpc run`` builds them; then
``--warmup`` untimed rounds and ``--rounds`` timed rounds, each after a
barrier (outside the timed region). Per round the step time and the rank's
local-compute time (``RoundStats.t_compute``, i.e. the local work of ``Engine.step()``) and
exchange time (``t_exchange``, ``exchange.finish()``) are reduced with MPI max.
s/round is the median over timed rounds of the max-over-ranks step time; the
share outside local computation is the median of
(round time - max-over-ranks local compute) / round time; balance is the
median of mean-over-ranks / max-over-ranks local compute (1.0 = no rank waits).

Run without mpiexec it launches itself (``mpiexec -n N python bench/rounds.py
--worker``) for each of ``--ranks`` (default 1,2,4,8) with OMP_NUM_THREADS=1
and prints one table; under ``mpiexec -n N`` it prints one row.

``--batched on|off|auto`` sets ``train.batched`` (the batched local work of
algorithms/batched.py, or the per-client reference loop); bench/scale.py runs both
paths at growing client counts.

Targets: 2 ranks >= 1.8x faster than 1 rank; exchange + bookkeeping < 10 % of a round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time

_MPI_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALRANKID")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _worker(args) -> dict:
    """One rank count: time the rounds, reduce over ranks; returns rank 0's figures."""
    import numpy as np
    import torch
    from mpi4py import MPI

    from fedmtl_hpc.comm.mpi import MPIComm
    from fedmtl_hpc.config import load_config
    from fedmtl_hpc.data.synthetic import SyntheticMixture
    from fedmtl_hpc.engine import Engine
    from fedmtl_hpc.models import build_model
    from fedmtl_hpc.params import FlatModel

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    comm = MPIComm()
    cfg = load_config(args.config, [f"algorithm.name={args.algorithm}", f"train.batched={args.batched}"])
    cfg.check_world(comm.size)
    t_build = time.perf_counter()
    data = SyntheticMixture(cfg.data, cfg.run.seed)
    factory = lambda: build_model(cfg.model.name, data.input_shape, data.n_classes)  # noqa: E731
    engine = Engine(cfg, comm, data, FlatModel(factory()), factory, torch.device("cpu"))
    t_build = time.perf_counter() - t_build
    n = args.warmup + args.rounds
    t = np.zeros((3, n))                          # step, local compute, exchange
    for r in range(n):
        comm.barrier()
        t0 = time.perf_counter()
        stats = engine.step()
        t[:, r] = (time.perf_counter() - t0, stats.t_compute, stats.t_exchange)
    mean = t[1].copy()
    comm.comm.Allreduce(MPI.IN_PLACE, mean, op=MPI.SUM)
    comm.comm.Allreduce(MPI.IN_PLACE, t, op=MPI.MAX)
    step, local, exch = t[:, args.warmup:]
    balance = mean[args.warmup:] / comm.size / local              # 1.0: every rank computes as long as the slowest
    return {"ranks": comm.size, "s_round": float(np.median(step)), "local_max": float(np.median(local)),
            "exchange_max": float(np.median(exch)), "outside": float(np.median((step - local) / step)),
            "balance": float(np.median(balance)),
            "build_s": t_build, "bytes": engine.exchange.buffer.numel() * engine.exchange.buffer.element_size(), "mpi": " ".join(comm.library.split()),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def _header(ranks: str, res: dict, args, load: float) -> None:
    import mpi4py
    print(f"# bench/rounds.py: seconds per round, {args.config}, algorithm {args.algorithm}, "
          f"train.batched {args.batched}, "
          f"{args.warmup} warm-up + {args.rounds} timed rounds\n"
          f"# date {time.strftime('%Y-%m-%d %H:%M:%S %z')}  host {socket.gethostname()}  cores {os.cpu_count()}  "
          f"ranks {ranks}  load avg before {load:.2f}\n"
          f"# python {platform.python_version()}  torch {res['torch']} ({res['threads']} thread(s)/rank)  "
          f"mpi4py {mpi4py.__version__}  MPI {res['mpi']}\n"
          f"# exchanged buffer {res['bytes']} bytes/rank/round; times: max over ranks, median over rounds;\n"
          f"# exch s includes waiting for the slowest rank; outside % = (round - max local) / round")
    print(f"{'ranks':>5} {'s/round':>9} {'speedup':>8} {'local s':>9} {'exch s':>9} {'outside %':>9} {'balance':>7}")


def _row(res: dict, base: float | None) -> None:
    sp = f"{base / res['s_round']:.2f}x" if base else "-"
    print(f"{res['ranks']:>5} {res['s_round']:>9.4f} {sp:>8} {res['local_max']:>9.4f} "
          f"{res['exchange_max']:>9.5f} {100 * res['outside']:>8.1f}% {res['balance']:>7.2f}", flush=True)


def _targets(rows: dict[int, dict]) -> None:
    if 1 in rows and 2 in rows:
        sp = rows[1]["s_round"] / rows[2]["s_round"]
        print(f"target: 2 ranks >= 1.8x faster than 1 rank: {sp:.2f}x  {'met' if sp >= 1.8 else 'NOT met'}")
    worst = max(rows.values(), key=lambda r: r["outside"])
    print(f"target: exchange + bookkeeping < 10% of a round: worst {100 * worst['outside']:.1f}% "
          f"at {worst['ranks']} ranks  {'met' if worst['outside'] < 0.10 else 'NOT met'}"
          + "".join(f"; {n} ranks {'ok' if r['outside'] < 0.10 else 'over'}" for n, r in rows.items()))


def _launch(args) -> None:
    """Driver: one mpiexec per rank count, then the table."""
    mpiexec = args.mpiexec or shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if not mpiexec:
        raise SystemExit("bench/rounds.py: no mpiexec found; pass --mpiexec PATH")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows, load = {}, os.getloadavg()[0]
    for n in [int(x) for x in args.ranks.split(",")]:
        cmd = [mpiexec, "-n", str(n), sys.executable, os.path.abspath(__file__), "--worker",
               "--config", args.config, "--algorithm", args.algorithm, "--batched", args.batched,
               "--rounds", str(args.rounds), "--warmup", str(args.warmup)]
        print(f"# running: {' '.join(cmd)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, cwd=_ROOT, capture_output=True, text=True)
        if out.returncode:
            sys.stderr.write(out.stdout + out.stderr)
            raise SystemExit(f"bench/rounds.py: {n} ranks failed with exit code {out.returncode}")
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
        rows[n] = json.loads(line[len("RESULT "):])
        print(f"#   {n} ranks: {time.perf_counter() - t0:.1f} s wall (build {rows[n]['build_s']:.1f} s)",
              file=sys.stderr, flush=True)
    _header(args.ranks, rows[min(rows)], args, load)
    base = rows.get(1, {}).get("s_round")
    for res in rows.values():
        _row(res, base)
    _targets(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(_ROOT, "configs", "synthetic_fedem.yaml"))
    ap.add_argument("--algorithm", default="fedem", help="overrides algorithm.name (fedem | fedavg | local)")
    ap.add_argument("--batched", default="auto", choices=("auto", "on", "off"),
                    help="train.batched: on = the batched local work (algorithms/batched.py), off = the per-client loop")
    ap.add_argument("--rounds", type=int, default=10, help="timed rounds")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--ranks", default="1,2,4,8", help="driver: rank counts to launch")
    ap.add_argument("--mpiexec", help="driver: mpiexec to use (default: the one next to this python)")
    ap.add_argument("--worker", action="store_true", help="internal: run as one rank of an mpiexec job")
    args = ap.parse_args()
    if not (args.worker or any(v in os.environ for v in _MPI_ENV)):
        return _launch(args)
    load = os.getloadavg()[0]
    res = _worker(args)
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_rank() == 0:
        if args.worker:
            print("RESULT " + json.dumps(res), flush=True)
        else:
            _header(str(res["ranks"]), res, args, load)
            _row(res, None)
            _targets({res["ranks"]: res})


if __name__ == "__main__":
    main()
