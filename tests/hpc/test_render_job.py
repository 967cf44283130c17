"""``fedmtl-hpc render-job``: output passes the shipped templates' checks; bad arguments exit 2 with one line."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import pytest

from fedmtl_hpc import cli
from fedmtl_hpc.jobcheck import check_text
from tests.hpc.conftest import JOBS, REPO

BASE = ["--nodes", "2", "--walltime", "12:00:00", "--config", "configs/synthetic_fedem.yaml"]


def render(*args, cwd=REPO) -> subprocess.CompletedProcess:
    """``fedmtl-hpc render-job ARGS`` in this process (the CLI's parser and exit codes), run in cwd."""
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(["render-job", *args])
            except SystemExit as exc:
                rc = exc.code
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def _body(text: str) -> str:
    return text.split("# ---- common bootstrap", 1)[1]


@pytest.mark.parametrize("scheduler,gpus,template", [
    ("slurm", 0, "run_synthetic.slurm"), ("slurm", 4, "run_cifar.slurm"),
    ("pbs", 0, "run_synthetic.pbs"), ("pbs", 4, "run_cifar.pbs"),
])
def test_render_passes_jobcheck_and_keeps_the_template(scheduler, gpus, template):
    p = render("--scheduler", scheduler, "--gpus-per-node", str(gpus), "--partition", "gpu", "--account", "p42",
               *BASE)
    assert p.returncode == 0, p.stderr
    text = p.stdout
    assert [x for x in check_text(text) if x.severity == "error"] == []
    assert _body(text) == _body((JOBS / template).read_text())  # the bootstrap is the shipped one
    assert f"from jobs/{template}" in text
    assert ': "${FEDMTL_CONFIG:=configs/synthetic_fedem.yaml}"' in text
    assert f': "${{FEDMTL_HOME:={REPO}}}"' in text
    ranks = gpus or 8
    if scheduler == "slurm":
        for d in ("--nodes=2", f"--ntasks-per-node={ranks}", "--time=12:00:00", "--partition=gpu",
                  "--account=p42", "--requeue", f"--signal=B:USR1@{600 if gpus else 300}"):
            assert f"#SBATCH {d}\n" in text, d
        assert ("#SBATCH --gpus-per-node=4\n" in text) == bool(gpus)
    else:
        cpus = 8 if gpus else 1
        sel = f"select=2:ncpus={ranks * cpus}:mpiprocs={ranks}:ompthreads={cpus}" + (":ngpus=4" if gpus else "")
        for d in (f"-l {sel}", "-l walltime=12:00:00", "-q gpu", "-A p42", "-r y"):
            assert f"#PBS {d}\n" in text, d
        assert f': "${{FEDMTL_WARN_SECONDS:={600 if gpus else 300}}}"' in text


def test_render_to_file_and_options(tmp_path):
    out = tmp_path / "job.pbs"
    p = render("--scheduler", "pbs", "--ranks-per-node", "4", "--cpus-per-rank", "2", "--launcher", "mpirun",
               "--modules", "python/3.11 openmpi fedmtl_hpc", "--warn-seconds", "900", "--output", str(out), *BASE)
    assert p.returncode == 0 and p.stdout == "" and "wrote" in p.stderr, p.stderr
    text = out.read_text()
    assert "#PBS -l select=2:ncpus=8:mpiprocs=4:ompthreads=2\n" in text
    for line in ('FEDMTL_LAUNCHER:=mpirun}', 'FEDMTL_MODULES:=python/3.11 openmpi fedmtl_hpc}',
                 'FEDMTL_WARN_SECONDS:=900}', f'FEDMTL_JOB_SCRIPT:={out}}}'):  # qsub resubmits the rendered file
        assert line in text, line
    assert out.stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(out)]).returncode == 0


def test_config_outside_the_checkout_becomes_absolute(tmp_path):
    (tmp_path / "mine.yaml").write_text("run: {name: x}\n")
    p = render("--scheduler", "slurm", "--nodes", "1", "--walltime", "01:00:00", "--config", "mine.yaml",
               cwd=tmp_path)
    assert p.returncode == 0 and f'FEDMTL_CONFIG:={tmp_path}/mine.yaml}}' in p.stdout
    assert "#SBATCH --job-name=fedmtl-mine\n" in p.stdout


@pytest.mark.parametrize("args,needle", [
    (["--scheduler", "slurm", "--nodes", "0"], "--nodes 0: expecting an integer >= 1"),
    (["--scheduler", "slurm", "--nodes", "two"], "invalid int value: 'two'"),
    (["--scheduler", "slurm", "--walltime", "1:00"], "--walltime '1:00': expecting HH:MM:SS"),
    (["--scheduler", "slurm", "--walltime", "12:75:00"], "expecting HH:MM:SS"),
    (["--scheduler", "slurm", "--walltime", "00:00:00"], "needs some time"),
    (["--scheduler", "lsf"], "invalid choice: 'lsf'"),
    (["--scheduler", "pbs", "--gpus-per-node", "-1"], "--gpus-per-node -1"),
    (["--scheduler", "pbs", "--ranks-per-node", "0"], "--ranks-per-node 0"),
    (["--scheduler", "slurm", "--walltime", "00:05:00", "--warn-seconds", "300"], "--warn-seconds 300"),
    (["--scheduler", "slurm", "--config", "x.json"], "expecting a .yaml file"),
    (["--scheduler", "slurm", "--config", "a$(reboot).yaml"], "only letters"),
    (["--scheduler", "slurm", "--partition", "gpu;rm"], "--partition"),
    (["--scheduler", "slurm", "--job-name", "1job"], "--job-name"),
    (["--nodes", "1"], "the following arguments are required"),
])
def test_bad_arguments_exit_2_with_one_line(args, needle):
    full = {"--nodes": "1", "--walltime": "01:00:00", "--config": "configs/synthetic_fedem.yaml"}
    given = dict(zip(args[::2], args[1::2]))
    rest = [x for k, v in full.items() if k not in given for x in (k, v)] if "--scheduler" in given else args
    p = render(*args, *rest) if "--scheduler" in given else render(*args)
    assert p.returncode == 2 and p.stdout == "", (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedmtl-hpc render-job: error: ") and needle in lines[0], lines


def test_no_torch_import():
    code = ("import sys, argparse; from fedmtl_hpc.commands import render_job as r; p = argparse.ArgumentParser(); "
            "r.add_arguments(p); a = p.parse_args(['--scheduler', 'slurm', '--nodes', '1', '--walltime', "
            "'01:00:00', '--config', 'configs/synthetic_fedem.yaml']); assert r.main(a) == 0; "
            "assert 'torch' not in sys.modules and 'mpi4py' not in sys.modules, 'heavy import'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
