"""Cost of the hang watchdog: s/round of the same run with it (default, auto limit) and without (0).

    .venv/bin/python bench/watchdog.py [--ranks 2] [--rounds 300] [--repeats 3] [--clients 24]

Runs ``fedmtl-hpc run`` under mpiexec alternately with ``run.watchdog_s=0`` and the default,
best of ``--repeats`` each, s/round = training wall time (summary.json) / rounds, no evaluation
or checkpoint until the end; prints both and the ratio, plus the in-process cost of one round's
progress marks (the only work the watchdog adds to the main thread).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_once(cfg: Path, out: Path, ranks: int, watchdog_s: float) -> float:
    cmd = [str(BIN / "mpiexec"), "-n", str(ranks), sys.executable, "-m", "fedmtl_hpc.cli", "run", str(cfg),
           "--run-dir", str(out), "--set", f"run.watchdog_s={watchdog_s}"]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    s = json.loads((out / "summary.json").read_text())
    return s["wall_seconds"] / s["round"]


def marks_cost(n: int = 200000) -> float:
    """Seconds of one round's marks: a round start, exchange, two callbacks, one collective in and out."""
    sys.path.insert(0, str(REPO))
    from fedmtl_hpc import watchdog as wd
    t0 = time.perf_counter()
    for i in range(n):
        wd.phase(wd.LOCAL, i)
        wd.phase(wd.EXCHANGE, i)
        wd.enter(wd.ALLREDUCE)
        wd.leave()
        wd.phase(wd.EVALUATION, i)
        wd.phase(wd.CHECKPOINT, i)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clients", type=int, default=24)
    a = ap.parse_args()
    cfg = yaml.safe_load((REPO / "configs" / "synthetic_fedem.yaml").read_text())
    cfg["data"].update(n_clients=a.clients, unseen_clients=0, test_per_client=100, max_train=300)
    cfg["run"].update(rounds=a.rounds, eval_every=a.rounds)
    cfg["checkpoint"].update(every=0, keep=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        best = {0: float("inf"), -1: float("inf")}
        for i in range(a.repeats):
            for w in (0, -1):  # alternate, so load drifts hit both alike
                best[w] = min(best[w], run_once(path, Path(tmp) / f"r{i}_{w}", a.ranks, w))
    print(f"# bench/watchdog.py  {time.strftime('%Y-%m-%d %H:%M:%S %z')}  cores {os.cpu_count()}  "
          f"load avg {os.getloadavg()[0]:.2f}  ranks {a.ranks}  clients {a.clients}  rounds {a.rounds}  "
          f"best of {a.repeats}")
    print(f"without watchdog (run.watchdog_s=0):   {best[0] * 1e3:.3f} ms/round")
    print(f"with watchdog (default, auto limit):   {best[-1] * 1e3:.3f} ms/round")
    print(f"ratio with/without: {best[-1] / best[0]:.3f}")
    print(f"progress marks per round (main thread, in process): {marks_cost() * 1e6:.2f} us")


if __name__ == "__main__":
    main()
