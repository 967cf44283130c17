"""The round all-reduce of client-server mode: planned once (MPI-4 persistent collective), the
float32 wire, and their config/env rules, under real ``mpiexec`` (no mocks).

tests/comm/allreduce_mpi.py runs the in-process cases once per rank count; the CLI cases
run ``fedmtl-hpc run`` under ``mpiexec -n 2``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from fedmtl_hpc.comm.base import SelfComm
from tests.conftest import MPIEXEC, fedmtl, small_config, write_config

pytestmark = pytest.mark.mpi
SCRIPT = Path(__file__).with_name("allreduce_mpi.py")
RANKS = (2, 4)
FLOAT32_ACC_TOL = 0.01   # |test_acc_mean(float32 wire) - test_acc_mean(float64)| on the small config


@pytest.fixture(scope="module")
def cases() -> dict[int, dict[str, dict]]:
    out = {}
    for n in RANKS:
        p = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(SCRIPT)], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=str(SCRIPT.parents[2]))
        assert p.returncode == 0, f"{n} ranks: {p.stdout}\n{p.stderr}"
        rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        out[n] = {(r["case"], r.get("dtype"), r.get("n")): r for r in rows}
    return out


@pytest.mark.parametrize("size", RANKS)
def test_planned_allreduce_is_persistent_and_bitwise_equal_to_the_blocking_call(cases, size):
    for n in (1000, 10**6):
        for dtype in ("float64", "float32"):
            c = cases[size][("plan", dtype, n)]
            assert c["persistent"] and c["requests"] == 1 and c["bitwise"], c
            assert c["live_after_free"] == 0, c
    off = cases[size][("plan_off", "float64", 1000)]
    assert not off["persistent"] and off["requests"] == 0 and off["bitwise"], off


@pytest.mark.parametrize("size", RANKS)
def test_each_chunk_below_the_count_limit_gets_its_own_persistent_request(cases, size):
    c = cases[size][("chunked", "float64", 1000)]   # chunk limit lowered to 300 elements for the test
    assert c["persistent"] and c["requests"] == 4 and c["bitwise"], c


@pytest.mark.parametrize("size", RANKS)
def test_relayout_reinitialises_the_persistent_request(cases, size):
    """Clustered FL's splits grow the payload: a new buffer and a new persistent request each time,
    and the run equals the blocking path bit for bit."""
    c = cases[size][("clustered", None, None)]
    on, off = c["on"], c["off"]
    assert on["persistent"] and not off["persistent"]
    assert on["plans"] == len(set(on["sizes"])) >= 3, on["sizes"]          # initial layout + splits
    assert len(set(on["cluster_of"])) >= 3
    assert on["shared"] == off["shared"] and on["cluster_of"] == off["cluster_of"]
    assert "persistent (MPI_Allreduce_init)" in on["describe"] and ", blocking," in off["describe"]


def test_cuda_aware_detection_answers_for_this_library(cases):
    c = cases[2][("cuda", None, None)]
    assert c["ok"] is False and c["source"] == "MPIX_Query_cuda_support", c   # the MPICH wheel: no CUDA


def test_the_one_process_double_plans_an_identity_allreduce():
    buf = np.arange(4.0)
    plan = SelfComm().plan_allreduce(buf)
    plan.run()
    plan.free()
    assert not plan.persistent and buf.tolist() == [0.0, 1.0, 2.0, 3.0]


# -- the CLI: checkpoints, metrics, run.log -------------------------------------------------
def _content(run_dir: Path) -> str:
    """The final checkpoint's content digest (every dataset and attribute; checkpoint.py)."""
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt-*.h5"))
    with h5py.File(ckpts[-1]) as f:
        return str(f.attrs["content_sha256"])


def _metrics(run_dir: Path) -> dict[str, np.ndarray]:
    rows = np.genfromtxt(run_dir / "metrics.csv", delimiter=",", names=True)
    return {k: np.atleast_1d(rows[k]) for k in rows.dtype.names}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same small FedEM run three ways: persistent (default), FEDMTL_PERSISTENT=0, float32 wire."""
    d = tmp_path_factory.mktemp("wire")
    cfg = write_config(d / "cfg.yaml", small_config())
    ways = {"persistent": ([], {}), "blocking": ([], {"FEDMTL_PERSISTENT": "0"}),
            "float32": (["--set", "train.wire_dtype=float32"], {})}
    for name, (extra, env) in ways.items():
        fedmtl(["run", str(cfg), "--run-dir", str(d / name), *extra], n=2, env=env, check=True)
    return {name: d / name for name in ways}


def test_persistent_and_blocking_runs_write_the_same_checkpoint_and_say_which(runs):
    a, b = runs["persistent"], runs["blocking"]
    assert _content(a) == _content(b)
    ma, mb = _metrics(a), _metrics(b)
    for k in ("train_loss", "test_acc_mean", "test_acc_unseen", "bytes_exchanged"):
        assert np.array_equal(ma[k], mb[k]), k
    assert "float64 Allreduce per round, persistent (MPI_Allreduce_init)" in (a / "run.log").read_text()
    assert "float64 Allreduce per round, blocking" in (b / "run.log").read_text()


def test_float32_wire_halves_the_bytes_and_stays_near_float64_accuracy(runs):
    m64, m32 = _metrics(runs["persistent"]), _metrics(runs["float32"])
    # buffer = payload + 3 engine slots, all in the wire dtype: exactly half the bytes
    assert np.array_equal(m32["bytes_exchanged"] * 2, m64["bytes_exchanged"])
    assert abs(m32["test_acc_mean"][-1] - m64["test_acc_mean"][-1]) <= FLOAT32_ACC_TOL
    assert _content(runs["float32"]) != _content(runs["persistent"])   # it did round differently
    assert "float32 Allreduce per round, persistent" in (runs["float32"] / "run.log").read_text()


@pytest.mark.parametrize("args, env, message", [
    (["--set", "train.wire_dtype=float16"], {}, "config error: train.wire_dtype must be one of"),
    (["--set", "algorithm.mode=decentralized", "--set", "train.wire_dtype=float32"], {},
     "config error: train.wire_dtype = float32 applies to the federated client-server all-reduce only"),
    ([], {"FEDMTL_PERSISTENT": "yes"}, "FEDMTL_PERSISTENT must be 0 or 1, got 'yes'"),
])
def test_bad_wire_dtype_or_persistent_switch_exits_2_naming_it(tmp_path, args, env, message):
    cfg = write_config(tmp_path / "cfg.yaml", small_config())
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "r"), *args], n=2 if env else None, env=env)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()
