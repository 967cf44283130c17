"""bench/gpu.py runs here: without a GPU it says so, says what it would measure, and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from tests.conftest import REPO


def test_gpu_bench_reports_cuda_aware_mpi_and_exits_0():
    small = [] if not torch.cuda.is_available() else ["--clients", "20", "--cnn-clients", "4", "--rounds", "1"]
    p = subprocess.run([sys.executable, "gpu.py", *small], capture_output=True, text=True, timeout=300,
                       cwd=REPO / "bench", env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    assert "# CUDA-aware MPI: " in p.stdout, p.stdout
    if torch.cuda.is_available():
        assert "engine loop" in p.stdout and "plain torch" in p.stdout, p.stdout
    else:
        assert "# no GPU: torch.cuda.is_available() is False here, so nothing is measured." in p.stdout
        assert "On a GPU node this measures seconds per round" in p.stdout
