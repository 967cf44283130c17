"""A real single-node Slurm for the job-template tests, and helpers to submit to it.

The session fixture ``slurm`` runs ``.ci/slurm.sh install`` and ``up`` once and
``down`` at the end of the session, also when a test fails: every daemon it
started is stopped by its pid. Tests that need it skip with a reason when the
machine cannot run it (not root, no apt, packages not installable).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
BIN = Path(sys.executable).parent
SLURM_SH = REPO / ".ci" / "slurm.sh"

# 24 clients, 240 short rounds: about 7 s of training on 4 ranks here; a checkpoint every 20.
# local_epochs=8 gives each round deterministic work, so a signal sent after the first
# checkpoints surely lands mid-run (with 1 epoch the whole run took under 2 s)
SMALL = ("data.n_clients=24 data.unseen_clients=0 data.test_per_client=100 data.max_train=300 "
         "train.local_epochs=8 run.rounds=240 run.eval_every=60 checkpoint.every=20 checkpoint.keep=2")
RANKS = 4


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: submits jobs to a real single-node Slurm (.ci/slurm.sh)")


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _can_run_slurm() -> str | None:
    """None if a Slurm can be installed and started here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (daemons, /etc/slurm)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get"
    return None


@pytest.fixture(scope="session")
def slurm():
    """A running single-node Slurm (8 CPUs, partition debug); always shut down afterwards."""
    why = _can_run_slurm()
    if why:
        pytest.skip(f"real Slurm: {why}")
    p = subprocess.run(["bash", str(SLURM_SH), "install"], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        pytest.skip(f"real Slurm: packages not installable: {p.stderr.strip()[-300:]}")
    try:
        p = subprocess.run(["bash", str(SLURM_SH), "up"], capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, f"slurm.sh up failed:\n{p.stdout}\n{p.stderr}"
        yield
    finally:
        subprocess.run(["bash", str(SLURM_SH), "down"], capture_output=True, text=True, timeout=120)


def job_env(**extra) -> dict:
    """The environment sbatch passes into the job: this venv first on PATH, the checkout as FEDMTL_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDMTL_", "SLURM_", "PBS_"))}
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["FEDMTL_HOME"] = str(REPO)
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def submit(script, cwd: Path, env: dict, args=(), sbatch_opts=(), wait=True, timeout=240):
    """``sbatch --parsable [--wait]``; returns (job id, exit status). Output lands in cwd."""
    cmd = ["sbatch", "--parsable", *(["--wait"] if wait else []), *sbatch_opts, str(script), *args]
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    job = p.stdout.strip().split(";")[0]
    if not job:
        raise AssertionError(f"sbatch failed ({p.returncode}): {p.stderr}")
    return job, p.returncode


class Job:
    """A job submitted with ``sbatch --wait`` in the background, found by its unique name."""

    def __init__(self, script, cwd: Path, env: dict, args=(), sbatch_opts=()):
        self.name = f"t-{uuid.uuid4().hex[:10]}"
        cmd = ["sbatch", "--parsable", "--wait", f"--job-name={self.name}", *sbatch_opts, str(script), *args]
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.id = self._find_id()

    def _find_id(self, timeout=30.0) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["squeue", "-h", "-n", self.name, "-o", "%i"], capture_output=True,
                                 text=True).stdout.split()
            if out:
                return out[0]
            if self.proc.poll() is not None:
                raise AssertionError(f"sbatch ended early: {self.proc.communicate()}")
            time.sleep(0.1)
        raise AssertionError(f"job {self.name} never showed up in squeue")

    def wait(self, timeout=240) -> int:
        try:
            self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            subprocess.run(["scancel", self.id])
            self.proc.kill()
            self.proc.communicate()
            raise
        return self.proc.returncode


def newest_round(root: Path) -> int:
    """Round of the newest checkpoint under root/runs/*/checkpoints (0 if none).

    Wait on this, not on one file name: ``checkpoint.keep`` prunes older files.
    """
    return max((int(p.stem.split("-")[1]) for p in root.glob("runs/*/checkpoints/ckpt-*.h5")), default=0)


def wait_for(predicate, timeout: float, what: str, step: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def inspect(path) -> dict:
    import json
    p = subprocess.run([sys.executable, "-m", "fedmtl_hpc.cli", "inspect", "--json", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def one_run_dir(cwd: Path) -> Path:
    dirs = sorted(d for d in (cwd / "runs").iterdir() if d.is_dir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def final_ckpt(run_dir: Path) -> Path:
    files = sorted((run_dir / "checkpoints").glob("ckpt-*.h5"))
    assert files, f"no checkpoint in {run_dir}"
    return files[-1]


@pytest.fixture(scope="session")
def reference(slurm, tmp_path_factory):
    """jobs/run_synthetic.slurm, uninterrupted, with the SMALL config on RANKS ranks.

    Submitted from outside the checkout with neither FEDMTL_HOME nor the venv on PATH:
    the job finds the checkout from the script path Slurm records and the venv in it.
    Returns (submit dir, job id, exit status, seconds).
    """
    cwd = tmp_path_factory.mktemp("reference")
    env = job_env(FEDMTL_SET=SMALL)
    del env["FEDMTL_HOME"]
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not p.startswith(str(REPO)))
    t0 = time.time()
    job, rc = submit(JOBS / "run_synthetic.slurm", cwd, env, sbatch_opts=[f"--ntasks-per-node={RANKS}"])
    return cwd, job, rc, time.time() - t0
