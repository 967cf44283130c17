"""Static checks of jobs/ and unit tests of jobs/lib/fedmtl_job.sh's helpers (no scheduler needed)."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from fedmtl_hpc.config import load_config
from fedmtl_hpc.jobcheck import check_file
from tests.hpc.conftest import JOBS, REPO

TEMPLATES = sorted(JOBS.glob("*.slurm")) + sorted(JOBS.glob("*.pbs"))
LIB = JOBS / "lib" / "fedmtl_job.sh"
BOOT = "# ---- common bootstrap"


def test_all_templates_exist():
    names = {p.name for p in TEMPLATES}
    assert names == {"run_synthetic.slurm", "run_cifar.slurm", "run_decentralized.slurm", "sweep.slurm",
                     "run_cifar.pbs", "run_synthetic.pbs"}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_passes_jobcheck_and_carries_the_contract(path):
    assert [p for p in check_file(path) if p.severity == "error"] == []
    text = path.read_text()
    assert text.startswith("#!/bin/bash -l\n")  # `module` exists in a login shell
    assert re.search(r'^: "\$\{FEDMTL_CONFIG:=configs/[a-z0-9_]+\.yaml\}"', text, re.M)
    if path.suffix == ".slurm":
        for directive in ("--requeue", "--open-mode=append", "--output="):
            assert f"#SBATCH {directive}" in text
        assert re.search(r"^#SBATCH --signal=B:USR1@\d+$", text, re.M)
        assert re.search(r"^#SBATCH --cpus-per-task=\d+$", text, re.M)  # -> OMP_NUM_THREADS
    else:
        assert "#PBS -r y" in text and re.search(r"^#PBS -l select=\d+:ncpus=\d+:mpiprocs=\d+:ompthreads=\d+",
                                                  text, re.M)


def test_bootstrap_is_identical_everywhere():
    blocks = {p.name: p.read_text().split(BOOT, 1)[1] for p in TEMPLATES}
    assert len(set(blocks.values())) == 1, "the bootstrap differs between templates"
    assert next(iter(blocks.values())).rstrip().endswith('fedmtl_job "$@"')


def test_configs_named_by_templates():
    for path in TEMPLATES:
        config = re.search(r'FEDMTL_CONFIG:=([^}]+)\}', path.read_text()).group(1)
        if config in ("configs/cifar10_fedem.yaml", "configs/synthetic_dfedem.yaml") \
                and not (REPO / config).is_file():
            continue  # written in parallel by the data / decentralized work
        assert (REPO / config).is_file(), f"{path.name} names {config}"
        load_config(str(REPO / config))  # the template's default config is valid as it stands


def test_sweep_array_matches_its_table():
    rows = [line for line in (JOBS / "sweep.tsv").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    header, data = rows[0].split("\t"), [r.split("\t") for r in rows[1:]]
    m = re.search(r"^#SBATCH --array=1-(\d+)(%\d+)?$", (JOBS / "sweep.slurm").read_text(), re.M)
    assert m and int(m.group(1)) == len(data)
    for row in data:
        assert len(row) == len(header)
        load_config(str(REPO / "configs" / "synthetic_fedem.yaml"), [f"{k}={v}" for k, v in zip(header, row)])


def _lib(code: str, timeout=30, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f". {LIB}; {code}"], capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_lib_syntax_and_time_parsing():
    assert subprocess.run(["bash", "-n", str(LIB)]).returncode == 0
    p = _lib("for t in 01:00:00 59:30 45 1-02:03:04 12:00:00; do _fj_seconds $t; done; _fj_seconds 1:2:3:4 || echo bad")
    assert p.stdout.split() == ["3600", "3570", "45", "93784", "43200", "bad"]


@pytest.mark.parametrize("env,key", [
    ({"SLURM_JOB_ID": "41"}, "41"),
    ({"SLURM_JOB_ID": "45", "SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "3"}, "41_3"),
    ({"PBS_JOBID": "1234.pbs01.site"}, "1234"),
    ({"PBS_JOBID": "1234[7].pbs01"}, "1234_7"),
    ({"PBS_JOBID": "77", "SLURM_JOB_ID": "9"}, "77"),  # PBS first
])
def test_lib_job_key(env, key):
    assert _lib("_fj_sched=$(_fj_scheduler); _fj_job_key", **env).stdout.strip() == key


def test_lib_sweep_rows(tmp_path):
    t = tmp_path / "t.tsv"
    t.write_text("# comment\n\nrun.seed\ttrain.lr\n1\t3.0\n2\t0.5\n# x\n3\t1.0 2\n")
    assert _lib(f"_fj_sweep_row {t} 2").stdout.split("\n")[:2] == ["run.seed=2", "train.lr=0.5"]
    assert _lib(f"_fj_sweep_row {t} 3").stdout.split("\n")[1] == "train.lr=1.0 2"  # cells may hold spaces
    p = _lib(f"_fj_sweep_row {t} 4")
    assert p.returncode == 1 and p.stdout.strip() == "ERROR: 3 rows, no row 4"
    t.write_text("a\tb\n1\n")
    assert _lib(f"_fj_sweep_row {t} 1").stdout.strip() == "ERROR: row 1 has 1 columns, the header 2"


def test_lib_self_armed_warning_signal():
    """The PBS stand-in for --signal: SIGUSR1 to the batch shell WARN seconds before the limit."""
    code = ("_fj_sched=none; FEDMTL_WALLTIME=00:00:03 FEDMTL_WARN_SECONDS=2; "
            "trap 'echo got USR1 after $SECONDS s; exit 0' USR1; _fj_arm_timer; "
            "for i in $(seq 50); do sleep 0.1; done; echo no signal")
    t0 = time.time()
    p = _lib(code)
    assert "warning signal armed: SIGUSR1 in 1s (2s before the 3s limit)" in p.stdout, p.stdout
    assert "got USR1" in p.stdout and time.time() - t0 < 4, p.stdout


def test_lib_timer_reads_pbs_walltime_from_qstat(tmp_path):
    fake = tmp_path / "qstat"
    fake.write_text("#!/bin/sh\necho 'Job Id: 5.srv'\necho '    Resource_List.walltime = 02:00:00'\n")
    fake.chmod(0o755)
    p = _lib("_fj_sched=pbs; _fj_arm_timer; kill $_fj_timer", PATH=f"{tmp_path}:/usr/bin:/bin", PBS_JOBID="5.srv")
    assert "SIGUSR1 in 6900s (300s before the 7200s limit)" in p.stdout, p.stdout
