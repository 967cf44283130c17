"""A rank of a real Slurm job SIGKILLed mid-run; the requeued job resumes; the end result is unchanged.

What a node failure or an OOM kill does to a ``--requeue`` job: one rank dies, the whole
step ends (no rank is left hanging in a collective), the job fails; Slurm then requeues it
(here ``scontrol requeue`` stands in for the controller's node-failure requeue), and the
job template's run-or-resume path finds the same run directory (keyed by the job id, which
a requeue keeps) and resumes from the newest checkpoint that verifies. The final checkpoint
is byte-identical to the uninterrupted reference job's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import rank_pids
from tests.hpc.conftest import (
    JOBS, RANKS, SMALL, Job, final_ckpt, inspect, job_env, newest_round, one_run_dir, sha, wait_for,
)

pytestmark = pytest.mark.slurm




def _state(job: str) -> str:
    p = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return p.stdout.strip()


def test_sigkill_of_a_rank_then_requeue_resumes_bitwise_identical(reference, tmp_path):
    ref_dir = one_run_dir(reference[0])
    # the template's mpiexec launcher (MPICH hydra inside the allocation): hydra ends every rank as
    # soon as one dies. (Plain srun leaves the others waiting in the next collective until the
    # watchdog fires; srun --kill-on-bad-exit=1 ends the step, but the SIGTERM it sends first is
    # taken as a stop request by ranks that can no longer agree, so they last KillWait, and this
    # test Slurm then cancelled the requeued job's step 0 too.)
    job = Job(JOBS / "run_synthetic.slurm", tmp_path, job_env(FEDMTL_SET=SMALL, FEDMTL_LAUNCHER="mpiexec"),
              sbatch_opts=[f"--ntasks-per-node={RANKS}"])
    wait_for(lambda: newest_round(tmp_path) >= 20, 180, "a checkpoint at round >= 20")
    run_dir = one_run_dir(tmp_path)
    pids = wait_for(lambda: (lambda p: p if len(p) == RANKS else None)(rank_pids(str(run_dir))), 30,
                    f"{RANKS} rank processes")
    os.kill(pids[len(pids) // 2], signal.SIGKILL)
    t_kill = time.time()
    rc = job.wait(timeout=120)
    ended = time.time() - t_kill
    assert rc != 0 and ended < 30, (rc, ended)
    wait_for(lambda: not rank_pids(str(run_dir)), 30, "every rank gone")
    out = "".join(p.read_text() for p in sorted(tmp_path.glob("*.out")))
    assert "launcher exited with" in out and "launcher exited with 0" not in out, out
    k = inspect(final_ckpt(run_dir))["round"]
    assert 20 <= k < 240, k
    subprocess.run(["scontrol", "requeue", job.id], check=True, capture_output=True, text=True)
    wait_for(lambda: _state(job.id) == "", 240, "the requeued job to finish", step=0.5)
    out = "".join(p.read_text() for p in sorted(tmp_path.glob("*.out")))
    m = re.search(r"resumed from (\S+)/checkpoints/ckpt-(\d{6})\.h5 at round (\d+)", out)
    assert m and Path(m.group(1)) == run_dir and int(m.group(3)) >= k, out
    assert "done: 240 rounds" in out and "launcher exited with 0" in out, out
    assert sha(final_ckpt(run_dir)) == sha(final_ckpt(ref_dir))
