"""Time jobs/run_synthetic.slurm under the single-node test Slurm (.ci/slurm.sh): two figures.

1. sbatch -> first training round, 8 ranks: from the sbatch call to the line rank 0
   prints after round 1 (eval_every=1, so that line comes right after the round).
2. one preemption cycle: from the warning signal (scancel --signal=USR1 --batch, what
   --signal=B:USR1@N delivers) to the first round line after the requeued job resumed,
   with its parts: stop + checkpoint, launcher exit, requeue wait, restart, resume.

Every time is when a line appeared in the job's output (polled every 20 ms).

    python bench/slurm_timing.py [--repeat 3] [--ranks 8] [--launcher srun|mpiexec]

Needs root (it starts the test Slurm if it is not running, and stops it again).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLURM_SH = REPO / ".ci" / "slurm.sh"
# the default workload (300 clients, d=150, M=3), evaluated every round so each round prints a line
SET = "run.rounds=100000 run.eval_every=1 checkpoint.every=50 checkpoint.keep=2"


def _watch(path: Path, patterns: dict[str, str], t0: float, timeout: float) -> dict[str, float]:
    """Seconds after t0 at which each regex first matched a line of path (polled)."""
    found: dict[str, float] = {}
    deadline = time.time() + timeout
    while time.time() < deadline and len(found) < len(patterns):
        text = path.read_text() if path.exists() else ""
        now = time.time()
        for key, pat in patterns.items():
            if key not in found and re.search(pat, text, re.M):
                found[key] = now - t0
        time.sleep(0.02)
    missing = set(patterns) - set(found)
    if missing:
        raise RuntimeError(f"{path}: no line for {sorted(missing)} within {timeout} s:\n{path.read_text()[-2000:]}")
    return found


def one(ranks: int, launcher: str, workdir: Path) -> dict[str, float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    out = workdir / f"{name}.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDMTL_", "SLURM_"))}
    env.update(FEDMTL_HOME=str(REPO), FEDMTL_SET=SET, FEDMTL_LAUNCHER=launcher,
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}")
    t0 = time.time()
    job = subprocess.run(["sbatch", "--parsable", f"--job-name={name}", f"--output={out}",
                          f"--ntasks-per-node={ranks}", str(REPO / "jobs" / "run_synthetic.slurm")],
                         cwd=workdir, env=env, capture_output=True, text=True, check=True).stdout.strip()
    try:
        first = _watch(out, {"batch script": r"^fedmtl-job: scheduler",
                             "ranks up": rf"^fedmtl_hpc: {ranks} ranks on",
                             "round 1": r"^round +1/"}, t0, 300)
        _watch(out, {"round 20": r"^round +20/"}, t0, 300)
        t_sig = time.time()
        subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
        cyc = _watch(out, {"stopped + checkpoint": r"^stopped by signal after round",
                           "launcher exit 3": r"launcher exited with 3",
                           "requeued": r"^fedmtl-job: requeueing job",
                           "job restarted": r"^fedmtl-job: scheduler .*restart 1\)",
                           "state resumed": r"^resumed from",
                           "first round after": r"^resumed from .*\n(?:.*\n)*?round +\d+/"}, t_sig, 300)
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    return {**{f"start: {k}": v for k, v in first.items()}, **{f"cycle: {k}": v for k, v in cyc.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--launcher", default="srun", choices=("srun", "mpiexec"))
    args = ap.parse_args()
    started = subprocess.run(["bash", str(SLURM_SH), "status"], capture_output=True).returncode != 0
    if started:
        subprocess.run(["bash", str(SLURM_SH), "install"], check=True, capture_output=True)
        subprocess.run(["bash", str(SLURM_SH), "up"], check=True, capture_output=True)
    try:
        with tempfile.TemporaryDirectory(prefix="slurm-bench-") as d:
            runs = [one(args.ranks, args.launcher, Path(d)) for _ in range(args.repeat)]
    finally:
        if started:
            subprocess.run(["bash", str(SLURM_SH), "down"], capture_output=True)
    cores = os.cpu_count()
    print(f"jobs/run_synthetic.slurm, default synthetic workload, {args.ranks} ranks via {args.launcher}, "
          f"single-node test Slurm on {cores} cores ({args.repeat} runs; seconds: median [min, max])")
    for key in runs[0]:
        vals = [r[key] for r in runs]
        ref = "after sbatch" if key.startswith("start") else "after the signal"
        print(f"  {key:<32} {statistics.median(vals):6.1f}  [{min(vals):.1f}, {max(vals):.1f}]  {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
