"""linear_mtl.objective and data: losses, proxes, couplings, clustering, the mtl_h5 reader (no MPI)."""

import numpy as np
import pytest

from fedmtl_hpc.config import parse_config
from fedmtl_hpc.errors import DataError
from fedmtl_hpc.linear_mtl import objective as obj
from fedmtl_hpc.linear_mtl.data import load_tasks, task_block, task_meta


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_gradient_matches_finite_differences(loss):
    rs = np.random.default_rng(0)
    X, w = rs.standard_normal((30, 5)), rs.standard_normal(5)
    y = np.sign(rs.standard_normal(30)) if loss == "logistic" else rs.standard_normal(30)
    g = obj.task_grad(loss, X, y, w)
    e = np.eye(5) * 1e-6
    fd = [(obj.task_loss(loss, X, y, w + e[i]) - obj.task_loss(loss, X, y, w - e[i])) / 2e-6 for i in range(5)]
    assert np.allclose(g, fd, atol=1e-7)
    L = obj.lipschitz(loss, X)
    assert np.isclose(L, np.linalg.norm(X, 2) ** 2 / 30 / (4 if loss == "logistic" else 1))


def test_power_iteration_bound_is_above_the_norm():
    X = np.random.default_rng(1).standard_normal((500, 450))
    assert 1.0 <= obj.lipschitz("squared", X) / (np.linalg.norm(X, 2) ** 2 / 500) <= 1.1 + 1e-9


def test_proxes_satisfy_their_optimality_conditions():
    rs = np.random.default_rng(2)
    V = rs.standard_normal((4, 6)) * np.array([3, 0.1, 2, 0.05, 1, 0.2])  # tasks x features
    W, norms = obj.prox_l21(V, (V * V).sum(0), 0.5)
    for j in range(6):
        vj, wj = V[:, j], W[:, j]
        if np.linalg.norm(vj) <= 0.5:
            assert not wj.any()
        else:
            assert np.allclose(vj - wj, 0.5 * wj / np.linalg.norm(wj))
    assert np.isclose(norms.sum(), obj.l21(W))
    Wn, nuc = obj.prox_nuclear(V, 1.0)
    s = np.linalg.svd(V, compute_uv=False)
    assert np.allclose(np.linalg.svd(Wn, compute_uv=False)[:4], np.maximum(s - 1.0, 0)) and np.isclose(nuc, obj.nuclear(Wn))


def test_cmtl_gamma_beats_random_feasible_points():
    rs = np.random.default_rng(3)
    sig, eta, k = rs.uniform(0, 5, 7) ** 2, 0.5, 3
    g = obj.cmtl_gamma(sig, eta, k)
    assert np.isclose(g.sum(), k) and (g >= 0).all() and (g <= 1).all()
    best = (sig / (eta + g)).sum()
    for _ in range(2000):
        h = rs.dirichlet(np.ones(7)) * k
        if (h <= 1).all():
            assert (sig / (eta + h)).sum() >= best - 1e-12


def test_mtrl_omega_is_the_closed_form():
    W = np.random.default_rng(4).standard_normal((5, 3))
    Om, Oi, tr = obj.mtrl_omega(W @ W.T, 1e-8)
    assert np.isclose(np.trace(Om), 1) and np.allclose(Om @ Oi, np.eye(5), atol=1e-6)
    assert np.isclose(obj.mtrl_coupling(W @ W.T, 0.0 + 1e-12), np.linalg.svd(W, compute_uv=False).sum() ** 2)


def test_adjusted_rand_index_and_spectral_clusters():
    assert obj.adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    assert np.isclose(obj.adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]), 0.5714285714285714)
    assert obj.adjusted_rand_index([0, 0, 0, 0], [0, 1, 2, 3]) == 0.0
    rs = np.random.default_rng(5)
    C = rs.standard_normal((3, 20))
    W = C[np.arange(9) % 3] + 0.05 * rs.standard_normal((9, 20))
    lab = obj.spectral_clusters(W @ W.T, 3)
    assert obj.adjusted_rand_index(lab, np.arange(9) % 3) == 1.0


def test_task_blocks_cover_tasks_in_order():
    assert [list(task_block(7, 3, r)) for r in range(3)] == [[0, 1], [2, 3], [4, 5, 6]]


def _write(path, tasks):
    import h5py
    with h5py.File(path, "w") as f:
        for name, arrays in tasks.items():
            for k, v in arrays.items():
                f[f"tasks/{name}/{k}"] = v


def test_mtl_h5_reader_orders_tasks_maps_labels_and_names_bad_data(tmp_path):
    rs = np.random.default_rng(6)
    p = tmp_path / "t.h5"
    _write(p, {"b": {"X": rs.standard_normal((4, 3)), "y": np.array([0, 1, 1, 0])},
               "a": {"X": rs.standard_normal((5, 3)).astype(np.float32), "y": np.array([1, -1, 1, 1, -1]),
                     "X_test": rs.standard_normal((2, 3)), "y_test": np.array([1, -1])}})
    cfg = parse_config({"algorithm": {"name": "prox_sync"}, "data": {"name": "mtl_h5", "path": str(p)},
                        "mtl": {"loss": "logistic"}})
    meta = task_meta(cfg)
    assert meta.names == ["a", "b"] and meta.d == 3 and meta.n_train == [5, 4] and meta.n_test == [2, 0]
    ts = load_tasks(cfg, meta, range(0, 2))
    assert ts.y[1].tolist() == [-1, 1, 1, -1] and ts.X[0].dtype == np.float64
    X = rs.standard_normal((4, 3))
    X[2, 1] = np.nan
    _write(p, {"a": {"X": X, "y": np.ones(4)}})
    with pytest.raises(DataError, match="task a: dataset X holds NaN or Inf"):
        load_tasks(cfg, task_meta(cfg), range(0, 1))
    _write(p, {"a": {"X": rs.standard_normal((4, 3))}})
    with pytest.raises(DataError, match="dataset /tasks/a/y is missing"):
        task_meta(cfg)


@pytest.mark.parametrize("solver", ["prox_sync", "mtrl_surrogate", "clustered_mtl", "dsml"])
def test_solver_in_one_process_checkpoints_documented_objects(tmp_path, solver):
    """SelfComm run of a few iterations; every object of its checkpoint is in docs/checkpoint-format.md."""
    import re
    from pathlib import Path

    import h5py

    from fedmtl_hpc import checkpoint as ck
    from fedmtl_hpc.comm.base import SelfComm
    from fedmtl_hpc.linear_mtl import build_solver

    cfg = parse_config({"algorithm": {"name": solver}, "data": {"name": "mtl_synthetic", "n_tasks": 4, "dim": 6,
                        "samples_per_task": 20, "test_per_task": 5}, "mtl": {"max_iters": 3}})
    loop = build_solver(cfg, SelfComm())
    loop.before_training()
    while not loop.done():
        loop.step()
    path = ck.save(loop.snapshot(), str(tmp_path), keep=1)
    snap = ck.load(path)
    assert snap.shared is None and snap.groups["mtl"]["arrays"]["W"].shape == (6, 4)
    again = build_solver(cfg, SelfComm())
    again.restore(snap)
    assert np.array_equal(again.W, loop.W) and again.round == loop.round
    doc = (Path(__file__).resolve().parents[2] / "docs" / "checkpoint-format.md").read_text()
    names = []
    with h5py.File(path) as f:
        f.visit(names.append)
        assert "global" not in f and ck.verify(path)["mtl"]["solver"] == solver
    for n in names:
        generic = re.sub(r"^(clients/state|metrics)/.*", r"\1/<", n)
        assert f"`/{generic}" in doc, f"/{n} is not documented"


MTL_CONFIGS = sorted((__import__("pathlib").Path(__file__).resolve().parents[2] / "configs").glob("mtl_*.yaml"))


@pytest.mark.parametrize("path", MTL_CONFIGS, ids=[p.stem for p in MTL_CONFIGS])
def test_shipped_mtl_configs_are_valid(path):
    from fedmtl_hpc.config import load_config
    from fedmtl_hpc.linear_mtl import check
    cfg = load_config(str(path))
    assert cfg.program == "mtl" and cfg.run.name == path.stem.replace("_" + cfg.algorithm.name, "-" + cfg.algorithm.name)
    assert check(cfg, 2).T == cfg.data.n_tasks


@pytest.mark.skipif(not __import__("os").path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_one_vs_rest_tasks():
    cfg = parse_config({"algorithm": {"name": "prox_sync"}, "mtl": {"loss": "logistic"},
                        "data": {"name": "mtl_fashion_mnist", "n_tasks": 10, "samples_per_task": 100,
                                 "test_per_task": 40}})
    meta = task_meta(cfg)
    ts = load_tasks(cfg, meta, range(8, 10))
    assert meta.names[9] == "class9-boot" and meta.d == 196
    assert ts.X[0].shape == (100, 196) and ts.X_test[1].shape == (40, 196)
    assert (ts.y[0] == 1).sum() == 50 and set(np.unique(ts.y[1])) == {-1.0, 1.0}
    assert np.isfinite(ts.X[0]).all() and abs(ts.X[0].mean()) < 0.5
