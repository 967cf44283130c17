"""End-to-end runs under real ``mpiexec``: accuracy, determinism, resume, rank counts, crashes."""

import csv
import hashlib
import os
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from fedmtl_hpc import checkpoint as ck
from tests.conftest import REPO, fedmtl, rank_pids, running_job

pytestmark = pytest.mark.mpi
DEFAULT = str(REPO / "configs" / "synthetic_fedem.yaml")
DETERMINISTIC = ("round", "train_loss", "test_acc_mean", "test_acc_weighted", "test_acc_p10", "test_acc_unseen")


def metrics(run_dir) -> dict[str, np.ndarray]:
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def final_ckpt(run_dir) -> str:
    return ck.list_checkpoints(str(Path(run_dir) / "checkpoints"))[-1]


def test_fedem_reaches_oracle_and_beats_fedavg_and_local(tmp_path):
    """Issue bar: FedEM within 3 points of the Bayes oracle, >= 5 points above FedAvg and Local.

    The full default workload (300 clients, d=150, M=3) on 2 ranks, 100 of its 200 rounds
    (FedEM is at ~84.5% by then against an oracle of ~86.1%).
    """
    acc = {}
    for algo in ("fedem", "fedavg", "local"):
        d = tmp_path / algo
        fedmtl(["run", DEFAULT, "--run-dir", str(d), "--set", f"algorithm.name={algo}", "--set", "run.rounds=100",
                "--set", "run.eval_every=50", "--set", "checkpoint.every=0"], n=2, check=True)
        import json
        summary = json.loads((d / "summary.json").read_text())
        acc[algo] = summary["test_acc_mean"]
        oracle = summary["oracle_test_acc"]
    assert 0.84 < oracle < 0.89, oracle
    assert acc["fedem"] >= oracle - 0.03, (acc, oracle)
    assert acc["fedem"] >= acc["fedavg"] + 0.05 and acc["fedem"] >= acc["local"] + 0.05, acc


def test_same_seed_gives_byte_identical_checkpoints(tmp_path, cfg_file):
    cfg = cfg_file(train={"participation": 0.5})
    for name in ("a", "b"):
        fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / name)], n=2, check=True)
    files_a = ck.list_checkpoints(str(tmp_path / "a" / "checkpoints"))
    files_b = ck.list_checkpoints(str(tmp_path / "b" / "checkpoints"))
    assert len(files_a) == 3 and [Path(p).name for p in files_a] == [Path(p).name for p in files_b]
    for fa, fb in zip(files_a, files_b):
        assert sha(fa) == sha(fb), f"{fa} differs from {fb}"


@pytest.mark.parametrize("algo", ["fedem", "local"])
def test_stop_and_resume_equals_uninterrupted_run(tmp_path, cfg_file, algo):
    cfg = cfg_file(algorithm={"name": algo}, train={"participation": 0.5, "momentum": 0.5})
    fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "full")], n=2, check=True)
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "cut"), "--set", "run.stop_after=3"], n=2)
    assert p.returncode == 3, p.stderr
    assert Path(final_ckpt(tmp_path / "cut")).name == "ckpt-000003.h5"
    fedmtl(["resume", str(tmp_path / "cut"), "--set", "run.stop_after=0"], n=2, check=True)
    # the resumed run's final checkpoint is the same file, byte for byte
    assert sha(final_ckpt(tmp_path / "full")) == sha(final_ckpt(tmp_path / "cut"))
    ma, mb = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    for k in DETERMINISTIC:
        assert np.array_equal(ma[k], mb[k]), k


def test_resume_across_a_learning_rate_milestone_is_byte_identical(tmp_path, cfg_file):
    """multistep: stopped before the milestone (round 3 of 6, milestone from round 4 on), resumed after."""
    cfg = cfg_file(train={"lr_schedule": "multistep", "lr_milestones": [0.5, 0.75], "participation": 0.5})
    fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "full")], n=2, check=True)
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "cut"), "--set", "run.stop_after=2"], n=2)
    assert p.returncode == 3, p.stderr
    fedmtl(["resume", str(tmp_path / "cut"), "--set", "run.stop_after=0"], n=2, check=True)
    assert sha(final_ckpt(tmp_path / "full")) == sha(final_ckpt(tmp_path / "cut"))
    with h5py.File(final_ckpt(tmp_path / "full")) as f:
        assert f["algorithm"].attrs["lr_schedule"] == "multistep"
        assert np.isclose(f["algorithm"].attrs["lr_last_round"], 3.0 * 0.01)  # two milestones passed
    # and the schedule mattered: a constant-lr run ends elsewhere
    fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "const"), "--set", "train.lr_schedule=constant"],
           n=2, check=True)
    assert sha(final_ckpt(tmp_path / "full")) != sha(final_ckpt(tmp_path / "const"))


def test_one_two_four_ranks_agree(tmp_path, cfg_file):
    cfg = cfg_file(train={"participation": 0.5})
    runs = {}
    for n in (1, 2, 4):
        fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / f"n{n}")], n=n, check=True)
        runs[n] = metrics(tmp_path / f"n{n}")
        with h5py.File(final_ckpt(tmp_path / f"n{n}")) as f:
            runs[n]["params"] = f["global/params"][()]
            runs[n]["pi"] = f["clients/state/pi"][()]
    for n in (2, 4):
        for k in (*DETERMINISTIC, "params", "pi"):
            np.testing.assert_allclose(runs[n][k], runs[1][k], rtol=0, atol=1e-5, err_msg=f"{k} at {n} ranks")


def test_three_hundred_clients_on_eight_ranks(tmp_path):
    p = fedmtl(["run", DEFAULT, "--run-dir", str(tmp_path / "r"), "--set", "run.rounds=2",
                "--set", "run.eval_every=2"], n=8, check=True)
    assert "8 ranks, 300 clients" in p.stdout
    m = metrics(tmp_path / "r")
    assert m["round"].tolist() == [2.0] and 0.5 < m["test_acc_mean"][0] < 1.0


def test_sigkill_of_one_rank_ends_the_job_and_leaves_a_valid_checkpoint(tmp_path, cfg_file):
    cfg = cfg_file(run={"rounds": 100000, "eval_every": 50}, checkpoint={"every": 2, "keep": 2})
    run_dir = tmp_path / "killed"
    with running_job(cfg, run_dir, 4, min_checkpoints=2) as (proc, pids):
        os.kill(pids[2], signal.SIGKILL)
        t0 = time.time()
        proc.wait(timeout=30)
        elapsed = time.time() - t0
    assert proc.returncode != 0 and elapsed < 30
    assert not rank_pids(str(run_dir)), "no rank survives"
    newest = ck.newest_valid(str(run_dir / "checkpoints"))
    assert newest is not None and ck.verify(newest)["round"] >= 2


def test_nan_stops_the_whole_job_naming_client_and_round(tmp_path, cfg_file):
    # lr * weight_decay >> 2: every SGD step multiplies theta by ~(1 - 3000): overflow, NaN
    cfg = cfg_file(algorithm={"name": "fedavg"}, train={"weight_decay": 1000.0})
    t0 = time.time()
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "nan")], n=2, timeout=60)
    assert p.returncode not in (0, 2) and time.time() - t0 < 30
    assert "numerical error" in p.stderr and "on client" in p.stderr and "in round" in p.stderr
    import re
    assert re.search(r"^rank \d: numerical error", p.stderr, re.M), p.stderr
