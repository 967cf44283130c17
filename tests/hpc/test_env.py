"""The cluster environment: env/setup-cluster.sh and the modulefile under both module systems."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.hpc.conftest import REPO

SETUP = REPO / "env" / "setup-cluster.sh"


def _setup(profile: str, timeout=600, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FEDMTL_")}
    e.update(env)
    return subprocess.run(["bash", str(SETUP), profile], capture_output=True, text=True, env=e, timeout=timeout)


@pytest.mark.slow
def test_setup_cluster_wheel_fallback_builds_and_checks_a_venv(tmp_path):
    """No MPI module named: mpi4py + MPICH wheels, torch from FEDMTL_TORCH_SPEC, checks pass; rerun is a no-op."""
    venv = tmp_path / "venv"
    env = {"FEDMTL_VENV": str(venv), "FEDMTL_MODULES": "", "FEDMTL_TORCH_INDEX": "",
           "FEDMTL_TORCH_SPEC": "torch==2.13.0"}
    p = _setup("generic-slurm", **env)  # the Slurm profile, its site values overridden
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "MPI: the mpi4py + mpich wheels (no site MPI named)" in out, out
    assert "MPICH 5.0.2, MPICH Version:" in out and f"library {venv}/lib/libmpi" in out, out
    assert "torch 2.13.0" in out and "torch.cuda.is_available() = False" in out, out
    assert "write/read ok" in out and "fedmtl_hpc 0.1.0" in out, out
    assert f"FEDMTL_VENV={venv} module load fedmtl_hpc" in out
    ver = subprocess.run([str(venv / "bin" / "fedmtl-hpc"), "--version"], capture_output=True, text=True)
    assert ver.stdout.strip() == "fedmtl_hpc 0.1.0"
    again = _setup("generic-slurm", **env)
    assert again.returncode == 0 and "is up to date; checking it" in again.stdout, again.stdout + again.stderr


@pytest.mark.parametrize("profile,env,needle", [
    ("no-such-site", {}, "no site profile 'no-such-site' (have: generic-pbs generic-slurm local-wheels"),
    ("generic-slurm", {"FEDMTL_MPI": "magic"}, "MPI=magic: expecting auto, source or wheel"),
    ("generic-slurm", {"FEDMTL_VENV": ""}, "the profile sets no VENV"),
    ("generic-slurm", {"FEDMTL_MODULES": "", "FEDMTL_MPI": "source", "PATH": "<bare>"},
     "MPI=source but no mpicc on PATH"),
])
def test_setup_cluster_bad_input_exits_2(profile, env, needle, tmp_path):
    env.setdefault("FEDMTL_VENV", str(tmp_path / "v"))
    if env.get("PATH") == "<bare>":  # only what the script needs before it looks for mpicc
        bare = tmp_path / "bin"
        bare.mkdir()
        for tool in ("bash", "dirname"):
            (bare / tool).symlink_to(shutil.which(tool))
        env["PATH"] = str(bare)
    p = _setup(profile, **env)
    assert p.returncode == 2 and needle in p.stderr, p.stdout + p.stderr
    assert not (tmp_path / "v").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FEDMTL_TEST_MPI_SOURCE") != "1",
                    reason="builds mpi4py from source against the system MPICH (libmpich-dev): about 4.5 min "
                           "on 2 cores; set FEDMTL_TEST_MPI_SOURCE=1 to run it")
def test_setup_cluster_builds_mpi4py_against_the_loaded_mpi(tmp_path):
    if not shutil.which("mpicc", path="/usr/bin"):
        pytest.skip("no /usr/bin/mpicc (apt-get install libmpich-dev)")
    p = _setup("generic-slurm", timeout=1200, FEDMTL_VENV=str(tmp_path / "venv"), FEDMTL_MODULES="",
               FEDMTL_MPI="source", FEDMTL_TORCH_INDEX="")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "building mpi4py against /usr/bin/mpicc" in p.stdout
    assert "library /usr/lib/x86_64-linux-gnu/libmpich.so" in p.stdout, p.stdout


@pytest.mark.slow
def test_modulefile_loads_under_environment_modules_and_lmod():
    """.ci/modules_check.sh: install Environment Modules, load, `fedmtl-hpc --version`, purge; then Lmod."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("installs and purges environment-modules and lmod with apt-get: needs root and apt")
    if any(os.path.exists(p) for p in ("/usr/share/modules/init/bash", "/usr/share/lmod/lmod/init/bash")):
        pytest.skip("a module system is installed here; modules_check.sh would remove it")
    p = subprocess.run(["bash", str(REPO / ".ci" / "modules_check.sh")], capture_output=True, text=True,
                       timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    for tool in ("environment-modules", "lmod"):
        assert f"[{tool}] FEDMTL_HOME={REPO} python={REPO}/.venv/bin/python" in out, out
        assert f"[{tool}] fedmtl_hpc 0.1.0" in out, out  # `fedmtl-hpc --version` from the loaded module
        assert f"modules_check: {tool}: ok" in out, out
    assert "neither is left installed" in out
