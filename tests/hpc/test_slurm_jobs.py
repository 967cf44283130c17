"""The job templates under a real single-node Slurm: run, PBS via sbatch, preemption, sweep, render-job.

Every check reads the job's output and run directory, not only sbatch's exit
status (a broken Slurm set-up can report COMPLETED with no output at all).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from fedmtl_hpc.hpc import RankEnv
from fedmtl_hpc.jobcheck import check_file
from tests.hpc.conftest import (
    BIN, JOBS, RANKS, REPO, SMALL, Job, final_ckpt, inspect, job_env, newest_round, one_run_dir, sha, submit, wait_for,
)

pytestmark = pytest.mark.slurm


def _out(cwd, pattern="*.out") -> str:
    files = sorted(cwd.glob(pattern))
    assert len(files) == 1, files
    return files[0].read_text()


def _errors(path):
    return [p for p in check_file(path) if p.severity == "error"]


def test_run_synthetic_slurm(reference):
    """sbatch --wait jobs/run_synthetic.slurm completes: output, world size, metrics, a verified checkpoint."""
    cwd, job, rc, _ = reference
    out = _out(cwd)
    assert rc == 0, out
    assert f"fedmtl_hpc 0.1.0: {RANKS} ranks, 24 clients, fedem" in out, out
    assert f"{RANKS} ranks on 1 node ({RANKS} on this node, launcher slurm), job {job}" in out, out
    assert f"{RANKS} ranks x 1 threads via srun" in out and "fedmtl-job: run:" in out, out
    assert "done: 240 rounds" in out and "launcher exited with 0" in out, out
    run_dir = one_run_dir(cwd)
    assert run_dir.name == f"synthetic-fedem-{job}"  # keyed by the job id, under the submit dir
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("round,") and [r.split(",")[0] for r in rows[1:]] == ["60", "120", "180", "240"]
    assert (run_dir / "metrics.h5").is_file()
    info = inspect(final_ckpt(run_dir))
    assert info["round"] == 240 and info["world_size"] == RANKS and info["n_clients"] == 24


def test_preemption_requeue_resume_is_bitwise_identical(reference, tmp_path):
    """The warning signal mid-run: checkpoint, exit 3, scontrol requeue, resume; same final file."""
    ref_dir = one_run_dir(reference[0])
    job = Job(JOBS / "run_synthetic.slurm", tmp_path, job_env(FEDMTL_SET=SMALL),
              sbatch_opts=[f"--ntasks-per-node={RANKS}"])
    wait_for(lambda: newest_round(tmp_path) >= 20, 180, "a checkpoint at round >= 20")
    # what --signal=B:USR1@N delivers at N seconds before the limit: SIGUSR1 to the batch shell only
    subprocess.run(["scancel", "--signal=USR1", "--batch", job.id], check=True)
    rc = job.wait()
    out = _out(tmp_path)
    assert rc == 0, out
    stop = re.search(r"stopped by signal after round (\d+)", out)
    assert stop and 20 <= int(stop.group(1)) < 240, out
    k = int(stop.group(1))
    for needle in ("got SIGUSR1", "forwarding SIGUSR1 to the launcher", "launcher exited with 3", f"requeueing job {job.id} (restart 1)",
                   f"job {job.id} (key {job.id}, restart 1)", "fedmtl-job: resume:",
                   f"resumed from {tmp_path}/runs/synthetic-fedem-{job.id}/checkpoints/ckpt-{k:06d}.h5 at round {k}",
                   "done: 240 rounds", "launcher exited with 0"):
        assert needle in out, (needle, out)
    run_dir = one_run_dir(tmp_path)  # the requeued job found the same run directory
    assert sha(final_ckpt(run_dir)) == sha(final_ckpt(ref_dir))
    ref_rows = (ref_dir / "metrics.csv").read_text().splitlines()
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in rows] == [r.split(",")[:3] for r in ref_rows]  # round, loss, acc


def test_scancel_sigterm_checkpoints_and_a_resubmission_continues(reference, tmp_path):
    """scancel (SIGTERM to every process of the job): the ranks checkpoint within KillWait; a
    cancelled job is not requeued; resubmitting with FEDMTL_RUN_DIR finishes it, same final file."""
    ref_dir = one_run_dir(reference[0])
    job = Job(JOBS / "run_synthetic.slurm", tmp_path, job_env(FEDMTL_SET=SMALL),
              sbatch_opts=[f"--ntasks-per-node={RANKS}"])
    wait_for(lambda: newest_round(tmp_path) >= 20, 180, "a checkpoint at round >= 20")
    subprocess.run(["scancel", job.id], check=True)
    job.wait()
    out = _out(tmp_path)
    stop = re.search(r"stopped by signal after round (\d+)", out)
    assert stop and 20 <= int(stop.group(1)) < 240, out
    # the batch shell is killed with the job soon after its ranks exit: no requeue of a cancelled job
    assert "got SIGTERM" in out and "requeueing job" not in out, out
    run_dir = one_run_dir(tmp_path)
    assert inspect(final_ckpt(run_dir))["round"] == int(stop.group(1))
    # the continuation the job printed: same script, FEDMTL_RUN_DIR=<run dir>
    job2, rc = submit(JOBS / "run_synthetic.slurm", tmp_path, job_env(FEDMTL_RUN_DIR=run_dir),
                      sbatch_opts=[f"--ntasks-per-node={RANKS}", "--output=second.log"])
    log = (tmp_path / "second.log").read_text()
    assert rc == 0 and f"resumed from {run_dir}/checkpoints/ckpt-{int(stop.group(1)):06d}.h5" in log, log
    assert sha(final_ckpt(run_dir)) == sha(final_ckpt(ref_dir))


def test_pbs_template_runs_under_sbatch(reference, tmp_path):
    """jobs/run_synthetic.pbs: passes jobcheck, runs through sbatch (which reads #PBS), falls back
    from PBS_* to SLURM_* variables, launches with mpiexec (hydra), same result as the srun job."""
    assert _errors(JOBS / "run_synthetic.pbs") == []
    env = job_env(FEDMTL_SET=SMALL, FEDMTL_NP=RANKS)
    job, rc = submit(JOBS / "run_synthetic.pbs", tmp_path, env, sbatch_opts=["--output=pbs.log"])
    out = (tmp_path / "pbs.log").read_text()
    assert rc == 0, out
    assert f"scheduler slurm, job {job}" in out and f"{RANKS} ranks x 1 threads via mpiexec" in out, out
    assert f"fedmtl_hpc 0.1.0: {RANKS} ranks" in out and "launcher mpich" in out, out
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "JobName=fedmtl-synthetic" in info and "TimeLimit=01:00:00" in info, info  # #PBS -N, walltime
    run_dir = one_run_dir(tmp_path)
    assert run_dir.name == f"synthetic-fedem-{job}"
    assert sha(final_ckpt(run_dir)) == sha(final_ckpt(one_run_dir(reference[0])))


def test_render_job_slurm_runs(slurm, tmp_path):
    """A rendered Slurm script passes jobcheck and runs for real."""
    script = tmp_path / "mine.slurm"
    p = subprocess.run([sys.executable, "-m", "fedmtl_hpc.cli", "render-job", "--scheduler", "slurm",
                        "--nodes", "1", "--ranks-per-node", "2", "--walltime", "00:10:00",
                        "--warn-seconds", "60", "--config", "configs/synthetic_fedem.yaml",
                        "--job-name", "rendered", "--output", str(script)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert _errors(script) == []
    env = job_env(FEDMTL_SET=SMALL.replace("run.rounds=240", "run.rounds=20"))
    del env["FEDMTL_HOME"]  # the rendered script names the checkout itself
    job, rc = submit(script, tmp_path, env)
    out = (tmp_path / f"rendered-{job}.out").read_text()
    assert rc == 0 and "fedmtl_hpc 0.1.0: 2 ranks" in out and "done: 20 rounds" in out, out
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "TimeLimit=00:10:00" in info and "NumTasks=2" in info, info


def test_sweep_array(slurm, tmp_path):
    """jobs/sweep.slurm: array task k runs row k of the table, each in its own run directory."""
    table = tmp_path / "table.tsv"
    table.write_text("# seeds x lr\nrun.seed\ttrain.lr\n7\t3.0\n8\t1.5\n")
    env = job_env(FEDMTL_SET=SMALL.replace("run.rounds=240", "run.rounds=10"), FEDMTL_SWEEP_TABLE=table)
    job, rc = submit(JOBS / "sweep.slurm", tmp_path, env, sbatch_opts=["--array=1-2", "--ntasks-per-node=2"])
    outs = {p.name: p.read_text() for p in tmp_path.glob("*.out")}
    assert rc == 0 and len(outs) == 2, outs
    seen = {}
    for k, (seed, lr) in ((1, (7, 3.0)), (2, (8, 1.5))):
        run_dir = tmp_path / "runs" / f"synthetic-fedem-{job}_{k}"
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        seen[k] = (cfg["run"]["seed"], cfg["train"]["lr"])
        assert seen[k] == (seed, lr)
        assert inspect(final_ckpt(run_dir))["round"] == 10
    out = outs[f"fedmtl-sweep-{job}_1.out"]
    assert "sweep row 1 of" in out and "run.seed=7 train.lr=3.0" in out and "2 ranks" in out, out


def test_decentralized_template(slurm, tmp_path):
    """jobs/run_decentralized.slurm runs its config (when the decentralized config exists)."""
    if not (REPO / "configs" / "synthetic_dfedem.yaml").is_file():
        pytest.skip("configs/synthetic_dfedem.yaml not in the checkout yet")
    env = job_env(FEDMTL_SET=SMALL.replace("run.rounds=240", "run.rounds=10").replace(" checkpoint.every=20", ""))
    job, rc = submit(JOBS / "run_decentralized.slurm", tmp_path, env, sbatch_opts=[f"--ntasks-per-node={RANKS}"])
    out = _out(tmp_path)
    assert rc == 0 and f"{RANKS} ranks" in out and "done: 10 rounds" in out, out


def test_rank_detection_under_real_launchers(slurm, tmp_path):
    """hpc.detect_local_rank inside real srun and mpiexec (hydra) steps of one allocation."""
    # one write() per line: with PYTHONUNBUFFERED, print(a, b, c) writes piecewise and ranks' lines mix
    probe = ("import os, sys; from fedmtl_hpc.hpc import detect_local_rank as d; r = d(os.environ); "
             "sys.stdout.write('RANK %d %d %s\\n' % (r.local_rank, r.local_size, r.launcher)); sys.stdout.flush()")
    script = tmp_path / "probe.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH -n 3 -o {tmp_path}/probe.out\n"
                      f"srun {sys.executable} -c \"{probe}\"\n"
                      f"{BIN}/mpiexec -n 2 {sys.executable} -c \"{probe}\"\n")
    _, rc = submit(script, tmp_path, job_env())
    lines = sorted(line for line in (tmp_path / "probe.out").read_text().splitlines() if line.startswith("RANK"))
    got = sorted((c, int(a), int(b)) for _, a, b, c in (line.split() for line in lines))
    want = [RankEnv(i, 2, "mpich") for i in range(2)] + [RankEnv(i, 3, "slurm") for i in range(3)]
    assert rc == 0 and got == [(r.launcher, r.local_rank, r.local_size) for r in want], lines
