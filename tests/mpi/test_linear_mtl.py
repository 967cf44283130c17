"""The linear MTL solvers as real MPI programs against centralized references written in the tests."""

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from fedmtl_hpc import checkpoint as ck
from tests.conftest import fedmtl
from tests.linear_mtl import reference as ref

pytestmark = pytest.mark.mpi


def mtl_config(algorithm="prox_sync", params=None, data=None, mtl=None, run=None) -> dict:
    raw = {"run": {"name": "mtl", "seed": 11, "eval_every": 1000},
           "data": {"name": "mtl_synthetic", "n_tasks": 8, "dim": 12, "samples_per_task": 40, "test_per_task": 20,
                    "structure": "group_sparse", "support": 4, "noise_std": 0.3},
           "algorithm": {"name": algorithm, **({algorithm: params} if params else {})},
           "mtl": {"loss": "squared", "regularizer": "l21", "lam": 0.05, "tol": 1e-13, "max_iters": 5000},
           "checkpoint": {"every": 0, "keep": 2}}
    for k, v in (("data", data), ("mtl", mtl), ("run", run)):
        raw[k].update(v or {})
    return raw


def run(tmp_path, raw, n, name="r", extra=(), expect=0):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / name), *extra], n=n)
    assert p.returncode == expect, p.stderr
    return tmp_path / name


def summary(d):
    return json.loads((Path(d) / "summary.json").read_text())


def final_W(d):
    path = ck.list_checkpoints(str(Path(d) / "checkpoints"))[-1]
    with h5py.File(path) as f:
        return f["mtl/W"][()], [n.decode() for n in f["mtl/tasks"][()]]


def last_row(d):
    with open(Path(d) / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))[-1]


def close(d, F, W):
    s = summary(d)
    Wm, names = final_W(d)
    assert names == [f"task{t:04d}" for t in range(Wm.shape[1])]
    assert abs(s["objective"] - F) <= 1e-6 * abs(F), (s["objective"], F)
    assert np.abs(Wm - W).max() <= 1e-4 * max(1.0, np.abs(W).max()), np.abs(Wm - W).max()
    return s


@pytest.mark.parametrize("loss, regularizer, ranks", [
    ("squared", "l21", (1, 4)), ("logistic", "nuclear", (2, 8)), ("logistic", "l21", (2,)), ("squared", "nuclear", (4,))])
def test_prox_sync_reaches_the_centralized_optimum(tmp_path, loss, regularizer, ranks):
    data = {"structure": "group_sparse" if regularizer == "l21" else "low_rank"}
    raw = mtl_config(mtl={"loss": loss, "regularizer": regularizer, "lam": 0.05 if loss == "squared" else 0.02},
                     data=data)
    cfg, Xs, ys = ref.tasks(raw)
    W = ref.fista_prox(loss, regularizer, Xs, ys, cfg.mtl.lam)
    F = ref.objective_prox(loss, regularizer, Xs, ys, W, cfg.mtl.lam)
    objs = []
    for n in ranks:
        s = close(run(tmp_path, raw, n, f"n{n}"), F, W)
        assert s["stop_reason"] in ("objective", "prox_grad") and s["iterations"] < 5000
        objs.append(s["objective"])
    # 1 and 4 ranks (and 2 and 8) agree far below the solver tolerance
    assert max(objs) - min(objs) <= 1e-10 * abs(F)


def test_clustered_mtl_matches_alternating_reference_and_finds_clusters(tmp_path):
    raw = mtl_config("clustered_mtl", {"k": 2, "eta": 1.0}, mtl={"lam": 0.05},
                     data={"structure": "clustered", "clusters": 2, "dim": 10})
    cfg, Xs, ys = ref.tasks(raw)
    lam, eta, k = 0.05, 1.0, 2
    c = lam * eta * (1 + eta)

    def B(W):
        sig, Q = np.linalg.eigh(W.T @ W)
        g = ref.cmtl_gamma_ref(np.clip(sig, 0, None), eta, k)
        return 2 * c * Q @ np.diag(1 / (eta + g)) @ Q.T
    W = ref.alternating_quadratic(Xs, ys, B, np.zeros((10, 8)))
    F = ref.cmtl_objective(Xs, ys, W, lam, eta, k)
    for n in (1, 2, 4, 8):
        s = close(run(tmp_path, raw, n, f"n{n}"), F, W)
        assert s["cluster_ari"] >= 0.95 and len(s["clusters"]) == 8
    with h5py.File(ck.list_checkpoints(str(tmp_path / "n8" / "checkpoints"))[-1]) as f:
        assert list(f["mtl/clusters"][()]) == s["clusters"]


def test_mtrl_surrogate_matches_alternating_reference(tmp_path):
    raw = mtl_config("mtrl_surrogate", {"eps": 1e-6, "inner_iters": 5}, mtl={"lam": 0.01, "lam2": 0.01},
                     data={"structure": "related", "n_tasks": 8, "dim": 10})
    cfg, Xs, ys = ref.tasks(raw)
    lam, lam2, eps = 0.01, 0.01, 1e-6

    def Omega_inv(W):
        c, Q = np.linalg.eigh(W.T @ W + eps * np.eye(W.shape[1]))
        s = np.sqrt(c)
        return lam * s.sum() * Q @ np.diag(1 / s) @ Q.T
    W = ref.alternating_quadratic(Xs, ys, Omega_inv, np.zeros((10, 8)), lam2=lam2)
    s_eps = np.sqrt(np.linalg.eigvalsh(W.T @ W + eps * np.eye(8))).sum()
    F = sum(ref.loss("squared", X, y, W[:, t]) for t, (X, y) in enumerate(zip(Xs, ys))) \
        + 0.5 * lam * s_eps ** 2 + 0.5 * lam2 * (W ** 2).sum()
    for n in (1, 2, 4, 8):
        close(run(tmp_path, raw, n, f"n{n}"), F, W)


@pytest.mark.parametrize("algorithm, params", [("prox_sync", None), ("mtrl_surrogate", {"inner_iters": 3}),
                                               ("clustered_mtl", {"k": 2})])
def test_stop_and_resume_gives_bitwise_the_same_W(tmp_path, algorithm, params):
    raw = mtl_config(algorithm, params, mtl={"lam": 0.05 if algorithm == "prox_sync" else 0.01, "tol": 1e-15,
                                             "max_iters": 40},
                     data={"structure": "related"} if algorithm != "prox_sync" else None)
    raw["checkpoint"]["every"] = 7
    full = run(tmp_path, raw, 2, "full")
    cut = run(tmp_path, raw, 2, "cut", ["--set", "run.stop_after=17"], expect=3)
    assert Path(ck.list_checkpoints(str(cut / "checkpoints"))[-1]).name == "ckpt-000017.h5"
    p = fedmtl(["resume", str(cut), "--set", "run.stop_after=0"], n=2)
    assert p.returncode == 0, p.stderr
    a, b = final_W(full)[0], final_W(cut)[0]
    assert a.tobytes() == b.tobytes()
    assert summary(full)["objective"] == summary(cut)["objective"] and summary(cut)["iterations"] == 40


def test_prox_async_matches_sync_and_a_slow_rank_does_not_hold_the_others(tmp_path):
    raw = mtl_config(mtl={"lam": 0.05, "tol": 1e-12, "max_iters": 300}, data={"n_tasks": 6})
    sync = run(tmp_path, raw, 1, "sync")
    Fs = summary(sync)["objective"]
    a = mtl_config("prox_async", mtl={"lam": 0.05, "tol": 1e-12, "max_iters": 300}, data={"n_tasks": 6},
                   run={"eval_every": 1})
    s = summary(run(tmp_path, a, 3, "async"))
    assert abs(s["objective"] - Fs) <= 1e-4 * abs(Fs), (s["objective"], Fs)
    slow = mtl_config("prox_async", {"delay_ranks": [2], "delay_seconds": 0.02, "max_staleness": 0,
                                     "updates_per_round": 60},
                      mtl={"lam": 0.05, "tol": 1e-12, "max_iters": 2}, data={"n_tasks": 6}, run={"eval_every": 1})
    d = run(tmp_path, slow, 3, "slow")
    row = last_row(d)
    fast = [float(row[f"updates_{t}"]) for t in range(3)]     # rank 1's tasks
    slowed = [float(row[f"updates_{t}"]) for t in range(3, 6)]  # rank 2's tasks (delayed)
    assert min(fast) > 2 * max(slowed), (fast, slowed)
    assert summary(d)["updates_per_task"] == [int(v) for v in fast + slowed]


def test_dsml_recovers_the_shared_support_with_one_exchange(tmp_path):
    raw = mtl_config("dsml", data={"dim": 30, "samples_per_task": 150, "support": 4, "noise_std": 0.5})
    d = run(tmp_path, raw, 2, "dsml")
    s = summary(d)
    assert (s["support_true_found"], s["support_false_found"]) == (4, 0)
    row = last_row(d)
    assert float(row["exchanges"]) == 1 and float(row["round"]) == 1
    assert int(row["bytes_exchanged"]) == 8 * 2 * 30 * 8  # one Allgatherv of [debiased, variance] per task


def _h5(path, tasks):
    with h5py.File(path, "w") as f:
        for name, (X, y) in tasks.items():
            g = f.create_group(f"tasks/{name}")
            g["X"], g["y"] = X, y


@pytest.mark.parametrize("case, message", [
    ("negative_lam", "mtl.lam must be >= 0.0, got -1"),
    ("regularizer", "mtl.regularizer must be one of l21 | nuclear, got 'trace'"),
    ("mismatched_d", "task b: X has d = 4 features, task a has 3"),
    ("empty_task", "task b: X has no samples (n_t = 0)"),
    ("too_many_ranks", "3 tasks, fewer than the 4 MPI ranks"),
])
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, case, message):
    raw = mtl_config(data={"n_tasks": 3})
    n = 2
    if case == "negative_lam":
        raw["mtl"]["lam"] = -1
    elif case == "regularizer":
        raw["mtl"]["regularizer"] = "trace"
    elif case == "too_many_ranks":
        n = 4
    else:
        rs = np.random.default_rng(0)
        b = (rs.standard_normal((5, 4)), rs.standard_normal(5)) if case == "mismatched_d" else \
            (np.zeros((0, 3)), np.zeros(0))
        _h5(tmp_path / "tasks.h5", {"a": (rs.standard_normal((5, 3)), rs.standard_normal(5)), "b": b})
        raw["data"] = {"name": "mtl_h5", "path": str(tmp_path / "tasks.h5")}
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "out")], n=n)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], p.stderr
    assert not (tmp_path / "out").exists()
