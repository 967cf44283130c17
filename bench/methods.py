"""The cost of personalization: seconds per round of every method relative to FedAvg.

What is measured: ``Engine.step()`` (local work of the rank's clients, the round's one
all-reduce, the algorithm's server step) for each method on the same workload (default:
configs/synthetic_fedem.yaml, 300 clients, linear model), built as ``fedmtl-hpc run`` builds
it, without evaluation or checkpoints; and the bytes the round moves (buffer x ranks).
FedAvg+ costs nothing per round (its fine-tuning happens at evaluation): its evaluation
time relative to FedAvg's is printed too.

How: under ``mpiexec -n N python bench/methods.py`` (default N = 2 if launched without
mpiexec). Methods are timed round-robin in the same process (one round of each method
in turn, ``--rounds`` times, after ``--warmup`` rounds each), so machine load drifts
affect all methods alike; per method the median over rounds of the max-over-ranks step time.

Targets (extra arithmetic only): FedEM with 3 components <= ~3.3x FedAvg; Ditto, APFL
<= ~2.3x (two models trained per step); pFedMe <= 1 + K (K = inner_steps gradient
evaluations per local step on top of FedAvg's one: its extra arithmetic, ~6x at K = 5);
Clustered FL <= 1.2x plus its similarity computation.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
METHODS = ("fedavg", "fedem", "fedprox", "fedavg_plus", "clustered", "apfl", "ditto", "pfedme", "local")
TARGETS = {"fedem": 3.3, "ditto": 2.3, "apfl": 2.3, "clustered": 1.2, "fedprox": 1.2,
           "fedavg_plus": 1.1, "local": 1.1}   # pfedme: 1 + inner_steps, read from its config


def _engine(cfg_path, method, overrides, comm):
    import torch
    from fedmtl_hpc.config import load_config
    from fedmtl_hpc.data.synthetic import SyntheticMixture
    from fedmtl_hpc.engine import Engine
    from fedmtl_hpc.models import build_model
    from fedmtl_hpc.params import FlatModel
    cfg = load_config(cfg_path, [f"algorithm.name={method}", *overrides])
    data = SyntheticMixture(cfg.data, cfg.run.seed)
    factory = lambda: build_model(cfg.model.name, data.input_shape, data.n_classes)  # noqa: E731
    eng = Engine(cfg, comm, data, FlatModel(factory()), factory, torch.device("cpu"))
    eng.before_training()
    return eng


def worker(args) -> None:
    import numpy as np
    import torch
    from mpi4py import MPI

    from bench._common import header
    from fedmtl_hpc.comm.mpi import MPIComm

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    comm = MPIComm()
    methods = [m for m in args.methods.split(",") if m]
    overrides = [s for s in args.set]
    engines = {m: _engine(args.config, m, overrides, comm) for m in methods}
    header(comm.comm, "bench/methods.py: s/round of each method vs FedAvg, same workload, same run",
           f"  config {os.path.relpath(args.config, _ROOT)}")
    times = {m: [] for m in methods}
    nbytes = {}
    for r in range(args.warmup + args.rounds):
        for m, eng in engines.items():
            comm.barrier()
            t0 = time.perf_counter()
            stats = eng.step()
            t = np.array([time.perf_counter() - t0])
            comm.comm.Allreduce(MPI.IN_PLACE, t, op=MPI.MAX)
            if r >= args.warmup:
                times[m].append(float(t[0]))
            nbytes[m] = stats.bytes_exchanged
    evals = {}
    for m in ("fedavg", "fedavg_plus"):
        if m in engines:
            comm.barrier()
            t0 = time.perf_counter()
            engines[m].evaluate()
            evals[m] = time.perf_counter() - t0
    if comm.rank != 0:
        return
    base = float(np.median(times["fedavg"])) if "fedavg" in times else None
    print(f"# {comm.size} ranks, {args.warmup} warm-up + {args.rounds} timed rounds per method, round-robin; "
          f"bytes = all-reduce buffer x ranks per round")
    print(f"{'method':<12} {'s/round':>9} {'x fedavg':>9} {'bytes/round':>12} {'extra bytes':>12} {'target':>8}  ok")
    for m in methods:
        s = float(np.median(times[m]))
        ratio = s / base if base else float("nan")
        extra = nbytes[m] - nbytes.get("fedavg", 0)
        tgt = 1 + engines[m].algo.params.inner_steps if m == "pfedme" else TARGETS.get(m)
        ok = "-" if tgt is None or base is None else ("yes" if ratio <= tgt else "NO")
        print(f"{m:<12} {s:>9.4f} {ratio:>9.2f} {nbytes[m]:>12d} {extra:>12d} "
              f"{(f'<= {tgt}' if tgt else '-'):>8}  {ok}", flush=True)
    if len(evals) == 2:
        print(f"# evaluation (rank 0): fedavg {evals['fedavg']:.3f} s, fedavg_plus {evals['fedavg_plus']:.3f} s "
              f"({evals['fedavg_plus'] / evals['fedavg']:.1f}x: fine-tuning every client before it is evaluated)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(_ROOT, "configs", "synthetic_fedem.yaml"))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--ranks", type=int, default=2, help="ranks when launched without mpiexec")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker or any(k in os.environ for k in ("PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")):
        worker(args)
        return
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [mpiexec, "-n", str(args.ranks), sys.executable, os.path.abspath(__file__), "--worker", *sys.argv[1:]]
    raise SystemExit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    main()
