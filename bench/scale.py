"""Seconds per round, clients trained per second, set-up time and peak memory as clients grow.

For each client count of ``--sizes`` (default 300, 10,000, 100,000, 1,000,000), each
rank count of ``--ranks`` (default 1,2) and each path of ``--paths`` (``loop``: the
per-client reference path, ``batched``: algorithms/batched.py) it launches one
``mpiexec -n R python bench/scale.py --worker`` job on the FedEM synthetic workload
(configs/synthetic_fedem.yaml: d = 150, M = 3; unseen clients 0; ``--set`` overrides)
and prints one table row:

* ``setup s``: dataset + engine construction, max over ranks (the synthetic headers of
  all clients drawn split over the ranks + one all-reduce, the dealing, the samples of
  the rank's clients unless they are regenerated per round, ``data.lazy``);
* ``s/round``: median over ``--rounds`` timed rounds (after one warm-up round) of the
  max-over-ranks ``Engine.step()`` time (local work, the all-reduce, the aggregate;
  no evaluation, no checkpoints);
* ``clients/s``: clients trained per round / s/round;
* ``VmHWM MB``: peak resident memory per rank (``/proc/self/status``), max and sum
  over ranks.

Participation per size: ``--participation`` (default 1 up to 10,000 clients, 0.1 at
100,000, 0.01 at 1,000,000). A cell whose job fails or runs past ``--timeout`` prints
its reason and the table goes on. Run without mpiexec; OMP_NUM_THREADS=1 per rank.

Targets (2-core machine): default FedEM round (300 clients, 2 ranks) <= 0.028 s (100x the
FedEM reference code's ~2.8 s); >= 25,000 clients trained/s at 10,000 clients on 2 ranks;
1,000,000 clients at 1 % within 4 GB total and <= 2 s/round; 2 ranks >= 1.8x faster than
1 at 10,000 clients.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)


def _hwm_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM"):
                return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _worker(args) -> None:
    import numpy as np
    import torch

    from fedmtl_hpc.comm.mpi import MPIComm
    from fedmtl_hpc.config import load_config
    from fedmtl_hpc.data.synthetic import SyntheticMixture
    from fedmtl_hpc.engine import Engine
    from fedmtl_hpc.models import build_model
    from fedmtl_hpc.params import FlatModel

    torch.set_num_threads(1)
    comm = MPIComm()
    sets = [f"data.n_clients={args.clients}", "data.unseen_clients=0", f"train.participation={args.part}",
            f"train.batched={'on' if args.path == 'batched' else 'off'}", *args.set]
    cfg = load_config(args.config, sets)
    comm.barrier()
    t0 = time.perf_counter()
    data = SyntheticMixture(cfg.data, cfg.run.seed)
    factory = lambda: build_model(cfg.model.name, data.input_shape, data.n_classes)  # noqa: E731
    engine = Engine(cfg, comm, data, FlatModel(factory()), factory, torch.device("cpu"))
    engine.before_training()
    t_setup = time.perf_counter() - t0
    n = 1 + args.rounds
    t = np.zeros(n)
    for r in range(n):
        comm.barrier()
        t1 = time.perf_counter()
        engine.step()
        t[r] = time.perf_counter() - t1
    from mpi4py import MPI
    c = comm.comm
    c.Allreduce(MPI.IN_PLACE, t, op=MPI.MAX)
    setup = c.allreduce(t_setup, op=MPI.MAX)
    hwm = c.gather(_hwm_kb(), root=0)
    trained = int(round(args.part * args.clients)) if args.part < 1 else args.clients
    if comm.rank == 0:
        print("RESULT " + json.dumps({
            "clients": args.clients, "ranks": comm.size, "path": args.path, "participation": args.part,
            "trained": trained, "setup_s": setup, "s_round": float(np.median(t[1:])),
            "hwm_mb": [h / 1024 for h in hwm], "lazy": bool(engine.lazy), "batched": bool(engine.batched)}),
            flush=True)


def _parts(text: str) -> dict[int, float]:
    return {int(k): float(v) for k, v in (x.split(":") for x in text.split(","))}


def _participation(n: int, table: dict[int, float]) -> float:
    keys = sorted(k for k in table if k <= n)
    return table[keys[-1]] if keys else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(_ROOT, "configs", "synthetic_fedem.yaml"))
    ap.add_argument("--sizes", default="300,10000,100000,1000000", help="client counts")
    ap.add_argument("--ranks", default="1,2", help="rank counts")
    ap.add_argument("--paths", default="loop,batched", help="loop | batched | both (comma list)")
    ap.add_argument("--participation", default="0:1,100000:0.1,1000000:0.01",
                    help="size:participation steps (the largest size <= n applies)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per cell before it is abandoned")
    ap.add_argument("--set", action="append", default=[], help="extra config override key=value")
    ap.add_argument("--mpiexec", help="mpiexec to use (default: the one next to this python)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 300 and 3,000 clients, 1 timed round (the full sizes are minutes each)")
    ap.add_argument("--json", help="write the figures (one row per cell, with date and load) to this JSON file")
    ap.add_argument("--png", help="draw the weak- and strong-scaling figure (plotting.scaling_figure) here")
    ap.add_argument("--from-json", help="no runs: draw --png from a JSON written by --json")
    ap.add_argument("--worker", action="store_true", help="internal")
    ap.add_argument("--clients", type=int, help="internal")
    ap.add_argument("--part", type=float, help="internal")
    ap.add_argument("--path", help="internal")
    args = ap.parse_args()
    if args.worker:
        return _worker(args)
    if args.from_json:
        return _figure(json.load(open(args.from_json))["rows"], args.png)
    if args.quick:
        args.sizes, args.rounds = "300,3000", 1
    mpiexec = args.mpiexec or shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    table = _parts(args.participation)
    print(f"# bench/scale.py: FedEM synthetic (d=150, M=3), {args.rounds} timed rounds + 1 warm-up; "
          f"times max over ranks, median over rounds; a round is Engine.step() (local work + the all-reduce: "
          f"no evaluation, no checkpoints); OMP_NUM_THREADS=1, 1 torch thread per rank\n"
          f"# date {time.strftime('%Y-%m-%d %H:%M:%S %z')}  cores {os.cpu_count()}  "
          f"load avg before {os.getloadavg()[0]:.2f}  overrides {args.set or '-'}", flush=True)
    print(f"{'clients':>9} {'part':>5} {'ranks':>5} {'path':>8} {'setup s':>8} {'s/round':>9} {'clients/s':>10} "
          f"{'VmHWM MB max':>12} {'sum':>7} {'load':>5}", flush=True)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        part = _participation(n, table)
        for r in [int(x) for x in args.ranks.split(",")]:
            for path in args.paths.split(","):
                cmd = [mpiexec, "-n", str(r), sys.executable, os.path.abspath(__file__), "--worker",
                       "--config", args.config, "--clients", str(n), "--part", str(part), "--path", path,
                       "--rounds", str(args.rounds), *sum((["--set", s] for s in args.set), [])]
                try:
                    out = subprocess.run(cmd, env=env, cwd=_ROOT, capture_output=True, text=True,
                                         timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    print(f"{n:>9} {part:>5g} {r:>5} {path:>8}  timed out after {args.timeout:.0f} s", flush=True)
                    continue
                lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
                if out.returncode or not lines:
                    tail = (out.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"{n:>9} {part:>5g} {r:>5} {path:>8}  failed ({out.returncode}): {tail}", flush=True)
                    continue
                res = json.loads(lines[-1][len("RESULT "):])
                res["load"] = os.getloadavg()[0]
                rows.append(res)
                print(f"{n:>9} {part:>5g} {r:>5} {path:>8} {res['setup_s']:>8.2f} {res['s_round']:>9.4f} "
                      f"{res['trained'] / res['s_round']:>10.0f} {max(res['hwm_mb']):>12.0f} "
                      f"{sum(res['hwm_mb']):>7.0f} {os.getloadavg()[0]:>5.2f}", flush=True)
    _targets(rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cores": os.cpu_count(),
                       "overrides": args.set, "rows": rows}, fh, indent=1)
    if args.png:
        _figure(rows, args.png)


def _figure(rows: list[dict], png: str | None) -> None:
    if not png:
        raise SystemExit("bench/scale.py: --from-json needs --png")
    from fedmtl_hpc.plotting import scaling_figure
    print(f"figure: {scaling_figure(rows, png)}")


def _targets(rows: list[dict]) -> None:
    def get(n, r, path):
        return next((x for x in rows if (x["clients"], x["ranks"], x["path"]) == (n, r, path)), None)
    d = get(300, 2, "batched")
    if d:
        print(f"target: default FedEM round on 2 ranks <= 0.028 s: {d['s_round']:.4f} s  "
              f"{'met' if d['s_round'] <= 0.028 else 'NOT met'}")
    t = get(10000, 2, "batched")
    if t:
        cps = t["trained"] / t["s_round"]
        print(f"target: >= 25,000 clients trained/s at 10,000 clients on 2 ranks: {cps:.0f}  "
              f"{'met' if cps >= 25000 else 'NOT met'}")
        o = get(10000, 1, "batched")
        if o:
            sp = o["s_round"] / t["s_round"]
            print(f"target: 2 ranks >= 1.8x faster than 1 at 10,000 clients: {sp:.2f}x  {'met' if sp >= 1.8 else 'NOT met'}")
    m = get(1000000, 2, "batched")
    if m:
        mem = sum(m["hwm_mb"]) / 1024
        print(f"target: 1,000,000 clients at 1% within 4 GB and <= 2 s/round: {mem:.2f} GB, {m['s_round']:.2f} s  "
              f"{'met' if mem <= 4 and m['s_round'] <= 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
