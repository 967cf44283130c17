"""Shared helpers: launch real ``mpiexec`` jobs of the CLI, write small configs."""

from __future__ import annotations

import os
import subprocess
import sys
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
