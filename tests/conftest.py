"""Shared helpers: launch real ``mpiexec`` jobs of the CLI, write small configs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent
MPIEXEC = str(BIN / "mpiexec")
REPO = Path(__file__).resolve().parents[1]


def small_config(**sections) -> dict:
    """The default synthetic config shrunk for tests; ``sections`` override per section."""
    cfg = yaml.safe_load((REPO / "configs" / "synthetic_fedem.yaml").read_text())
    cfg["data"].update(n_clients=24, unseen_clients=4, test_per_client=100, max_train=300)
    cfg["run"].update(rounds=6, eval_every=2)
    cfg["checkpoint"].update(every=2, keep=3)
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def fedmtl(args: list[str], n: int | None = None, timeout: float = 600, env: dict | None = None,
           check: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run ``fedmtl-hpc ARGS`` alone (n=None) or under ``mpiexec -n n``."""
    cmd = [sys.executable, "-m", "fedmtl_hpc.cli", *args]
    if n is not None:
        cmd = [MPIEXEC, "-n", str(n), *cmd]
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, cwd=kw.pop("cwd", None), **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


@pytest.fixture
def cfg_file(tmp_path):
    """Factory: write a small config with overrides, return its path."""
    def make(name="cfg.yaml", **sections):
        return write_config(tmp_path / name, small_config(**sections))
    return make


def rank_pids(marker: str) -> list[int]:
    """PIDs of live fedmtl-hpc rank processes (``-m fedmtl_hpc.cli`` or the console script, running
    ``run``/``resume``) whose command line contains marker (e.g. the run dir)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (cmd and b"python" in cmd[0] and state != "Z"
                and any(c.endswith((b"fedmtl-hpc", b"fedmtl_hpc.cli")) for c in cmd)
                and any(marker.encode() in c for c in cmd) and any(c in (b"run", b"resume") for c in cmd)):
            pids.append(int(d))
    return sorted(pids)


@contextlib.contextmanager
def running_job(cfg: Path, run_dir: Path, n: int, min_checkpoints: int = 1):
    """``fedmtl-hpc run`` under ``mpiexec -n n`` in the background; yields (proc, rank pids)
    once ``min_checkpoints`` checkpoints exist; the job is killed if still running on exit."""
    from fedmtl_hpc import checkpoint as ck
    cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "fedmtl_hpc.cli", "run", str(cfg), "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(ck.list_checkpoints(str(run_dir / "checkpoints"))) < min_checkpoints:
            time.sleep(0.2)
        pids = rank_pids(str(run_dir))
        assert len(pids) == n, pids
        yield proc, pids
    finally:
        if proc.poll() is None:
            proc.kill()
        if not proc.stdout.closed:
            proc.communicate()


def engine_for(raw: dict, **sections):
    """An in-process engine (one-process communicator) on synthetic data; ``sections`` update ``raw``."""
    import torch
    from fedmtl_hpc.comm.base import SelfComm
    from fedmtl_hpc.config import parse_config
    from fedmtl_hpc.data.synthetic import SyntheticMixture
    from fedmtl_hpc.engine import build_engine
    from fedmtl_hpc.models import build_model
    from fedmtl_hpc.params import FlatModel
    raw = {k: dict(v) for k, v in raw.items()}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    cfg = parse_config(raw)
    ds = SyntheticMixture(cfg.data, cfg.run.seed)
    fac = lambda: build_model("linear", ds.input_shape, 2)  # noqa: E731
    return build_engine(cfg, SelfComm(), ds, FlatModel(fac()), fac, torch.device("cpu"))
