"""jobs/run_synthetic.pbs as PBS Pro would run it, without a PBS server.

No PBS server installs here, so the PBS side is played by the environment PBS
sets (PBS_JOBID, PBS_O_WORKDIR, PBS_NODEFILE) and fake ``qstat``/``qsub``
commands that record their arguments; the ranks are real (MPICH hydra mpiexec).
A stop signal makes the job checkpoint, exit 3 and resubmit itself with qsub;
running the resubmitted job (with the variables qsub was given) resumes it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from tests.hpc.conftest import BIN, JOBS, REPO, final_ckpt, inspect, newest_round, wait_for

pytestmark = pytest.mark.mpi

SET = ("data.n_clients=8 data.unseen_clients=0 data.test_per_client=50 data.max_train=100 "
       "train.local_epochs=20 run.rounds=400 run.eval_every=100 checkpoint.every=10 checkpoint.keep=2")


def _fake_pbs(tmp_path):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    (bindir / "qstat").write_text("#!/bin/sh\necho \"Job Id: $2\"\necho '    Resource_List.walltime = 01:00:00'\n")
    (bindir / "qsub").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path}/qsub.args\necho 78.fake\n")
    for f in bindir.iterdir():
        f.chmod(0o755)
    (tmp_path / "nodes").write_text("localhost\nlocalhost\n")
    return bindir


def _env(tmp_path, bindir, jobid, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDMTL_", "SLURM_", "PBS_"))}
    env.update(PATH=f"{bindir}:{BIN}:{env.get('PATH', '/usr/bin:/bin')}", PBS_JOBID=jobid,
               PBS_O_WORKDIR=str(tmp_path), PBS_NODEFILE=str(tmp_path / "nodes"), OMP_NUM_THREADS="1",
               FEDMTL_HOME=str(REPO))
    env.update(extra)
    return env


def test_pbs_stop_resubmits_with_qsub_and_the_next_job_resumes(tmp_path):
    bindir = _fake_pbs(tmp_path)
    script = JOBS / "run_synthetic.pbs"
    env = _env(tmp_path, bindir, "77.fake", FEDMTL_SET=SET)
    proc = subprocess.Popen(["bash", str(script)], cwd="/", env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: newest_round(tmp_path) >= 10, 120, "a checkpoint at round >= 10")
        os.kill(proc.pid, signal.SIGUSR1)  # what the self-armed timer or a qsig -s USR1 delivers
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, out
    run_dir = tmp_path / "runs" / "synthetic-fedem-77"  # PBS_O_WORKDIR/runs/<name>-<job id w/o server>
    assert "scheduler pbs, job 77.fake (key 77, restart 0), 2 ranks x 1 threads via mpiexec" in out, out
    assert "warning signal armed: SIGUSR1 in 3300s (300s before the 3600s limit)" in out, out
    k = int(re.search(r"stopped by signal after round (\d+)", out).group(1))
    assert 10 <= k < 400 and inspect(final_ckpt(run_dir))["round"] == k

    args = (tmp_path / "qsub.args").read_text().split("\n")[:-1]
    assert args[:2] == ["-W", "depend=afterany:77.fake"] and args[2] == "-v" and args[4] == str(script), args
    passed = dict(item.split("=", 1) for item in args[3].split(","))
    assert passed["FEDMTL_RUN_DIR"] == str(run_dir) and passed["FEDMTL_REQUEUE_COUNT"] == "1", passed

    # PBS starts the resubmitted job: new id, the variables from -v; it resumes the same run
    env2 = _env(tmp_path, bindir, "78.fake", **passed)
    p = subprocess.run(["bash", args[4]], cwd="/", env=env2, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"resumed from {run_dir}/checkpoints/ckpt-{k:06d}.h5 at round {k}" in p.stdout, p.stdout
    assert "restart 1" in p.stdout and "done: 400 rounds" in p.stdout, p.stdout
    assert inspect(final_ckpt(run_dir))["round"] == 400


def test_pbs_bad_config_exits_2_before_any_rank(tmp_path):
    bindir = _fake_pbs(tmp_path)
    env = _env(tmp_path, bindir, "79.fake", FEDMTL_SET="train.lr=-1")
    p = subprocess.run(["bash", str(JOBS / "run_synthetic.pbs")], cwd="/", env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "train.lr" in p.stderr and "fedmtl-job: run:" not in p.stdout, p.stdout + p.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "qsub.args").exists()
