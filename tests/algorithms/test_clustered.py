"""Clustered FL without MPI: the maths (cosines, complete linkage, split rule, sketches) and the
algorithm's server step, evaluation and checkpoint state on hand-made inputs."""

import itertools

import numpy as np
import pytest
import torch

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc.algorithms import cluster_math as cm
from fedmtl_hpc.algorithms.base import LocalResult
from fedmtl_hpc.algorithms.clustered import ClusteredFL
from fedmtl_hpc.config import parse_config
from fedmtl_hpc.data.base import ClientData
from fedmtl_hpc.errors import CheckpointError
from fedmtl_hpc.models import build_model
from fedmtl_hpc.params import FlatModel
from tests.conftest import engine_for, small_config


# -- maths --------------------------------------------------------------------------------
def test_cosine_matrix_matches_the_definition_and_handles_zero_rows():
    u = np.random.default_rng(0).normal(size=(5, 7))
    u[3] = 0.0
    s = cm.cosine_matrix(u)
    for i, j in itertools.product(range(5), repeat=2):
        if i == j:
            want = 1.0
        elif 3 in (i, j):
            want = 0.0
        else:
            want = u[i] @ u[j] / np.linalg.norm(u[i]) / np.linalg.norm(u[j])
        assert s[i, j] == pytest.approx(want, abs=1e-12), (i, j)
    assert np.array_equal(s, s.T)


def test_update_norms_are_the_weighted_mean_norm_and_the_max_norm():
    u = np.array([[3.0, 4.0], [-3.0, 0.0], [1.0, 1.0]])
    w = np.array([1.0, 1.0, 2.0])
    mean, top = cm.update_norms(u, w)
    assert mean == pytest.approx(np.linalg.norm([(3 - 3 + 2) / 4, (4 + 0 + 2) / 4]))
    assert top == pytest.approx(5.0)


def test_complete_linkage_hand_example_differs_from_single_linkage():
    # merge {0,1} (1.0); then {0,1}-2 = max(1.5, 5) = 5 under complete linkage (1.5 under single),
    # {0,1}-3 = 6 and 2-3 = 2: complete merges {2,3} -> {0,1} | {2,3}; single would give {0,1,2} | {3}
    d = np.array([[0, 1.0, 1.5, 6.0],
                  [1.0, 0, 5.0, 6.0],
                  [1.5, 5.0, 0, 2.0],
                  [6.0, 6.0, 2.0, 0]])
    assert cm.complete_linkage_bipartition(d).tolist() == [0, 0, 1, 1]
    assert cm.complete_linkage_bipartition(d[:2, :2]).tolist() == [0, 1]


def naive_complete_linkage(d: np.ndarray) -> np.ndarray:
    """Reference straight from the definition: cluster distance = max over member pairs, recomputed."""
    clusters = [[i] for i in range(len(d))]
    while len(clusters) > 2:
        best = None
        for a, b in itertools.combinations(range(len(clusters)), 2):
            dist = max(d[i, j] for i in clusters[a] for j in clusters[b])
            if best is None or dist < best[0]:
                best = (dist, a, b)
        _, a, b = best
        clusters[a] = clusters[a] + clusters[b]
        del clusters[b]
    labels = np.zeros(len(d), dtype=np.int64)
    labels[clusters[1] if 0 in clusters[0] else clusters[0]] = 1
    return labels


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13])
def test_complete_linkage_equals_the_naive_definition(n):
    for seed in range(15):
        g = np.random.default_rng(100 * n + seed)
        u = g.normal(size=(n, 6)) + (g.normal(size=6) if seed % 2 else 0.0)
        d = 1.0 - cm.cosine_matrix(u)
        assert cm.complete_linkage_bipartition(d).tolist() == naive_complete_linkage(d).tolist(), (n, seed)


def test_planted_directions_are_recovered():
    g = np.random.default_rng(3)
    a, b = g.normal(size=50), g.normal(size=50)
    who = g.permutation([0] * 7 + [1] * 5)
    u = np.stack([(a if k == 0 else b) + 0.3 * g.normal(size=50) for k in who])
    labels = cm.complete_linkage_bipartition(1.0 - cm.cosine_matrix(u))
    assert (labels == (who != who[0])).all()


@pytest.mark.parametrize("mean, top, want", [
    (0.39, 1.61, True), (0.40, 1.61, False), (0.41, 5.0, False),
    (0.0, 1.60, False), (0.0, 1.59, False), (0.1, 100.0, True),
])
def test_split_criterion_is_strict_on_both_thresholds(mean, top, want):
    assert cm.split_wanted(mean, top, 0.4, 1.6) is want


def test_split_members_places_non_sampled_clients_and_names_the_keeping_side():
    members = np.array([1, 2, 4, 5, 7, 8, 9])
    sampled = np.array([2, 4, 5, 8, 9])
    # sampled 2, 5 on one side, 4, 8, 9 on the other: non-sampled 1, 7 join the larger side
    keep, move = cm.split_members(members, sampled, np.array([0, 1, 0, 1, 1]), 2)
    assert keep.tolist() == [1, 4, 7, 8, 9] and move.tolist() == [2, 5]
    # a tie goes to the side of the smallest sampled id (2)
    keep, move = cm.split_members(members, np.array([2, 4, 8, 9]), np.array([0, 1, 0, 1]), 2)
    assert keep.tolist() == [1, 2, 5, 7, 8] and move.tolist() == [4, 9]
    # a side with fewer than min_size sampled clients: no split
    assert cm.split_members(members, sampled, np.array([0, 0, 0, 0, 1]), 2) is None
    assert cm.split_members(members, sampled, np.array([0, 0, 0, 0, 1]), 1) is not None


def test_sketch_is_one_seeded_matrix_whatever_the_cache():
    p, d = 2 * cm.SKETCH_BLOCK + 17, 8      # three blocks, the last one short
    v = np.random.default_rng(1).normal(size=p)
    a = cm.Sketch(5, p, d)
    b = cm.Sketch(5, p, d, cache_bytes=0)  # every block redrawn on use
    g = a.matrix()
    assert g.shape == (p, d) and a.n_cached == a.n_blocks == 3 and b.n_cached == 0
    first = b.project(v)
    assert np.array_equal(first, a.project(v)) and np.array_equal(first, a.project(v))  # drawn, then cached
    np.testing.assert_allclose(first, v.astype(np.float32) @ g.astype(np.float64), rtol=1e-5, atol=1e-5)
    rows = np.random.default_rng(2).normal(size=(3, p))
    both = a.project(np.stack([rows[0], v, rows[1]]))   # a row's sketch does not depend on the others
    assert both.shape == (3, d) and np.array_equal(both[1], first) and np.array_equal(both[0], a.project(rows[0]))
    assert abs(g.std() * np.sqrt(d) - 1.0) < 0.01 and abs(g.mean()) < 0.01
    assert not np.array_equal(cm.Sketch(6, p, d).matrix(), g)


def test_sketch_cosines_approximate_exact_ones_within_jl_tolerance():
    g = np.random.default_rng(2)
    base = g.normal(size=3000)
    u = np.stack([base * s + g.normal(size=3000) * k for s, k in ((1, 0.2), (-1, 0.3), (1, 1.0), (0, 1.0),
                                                                  (1, 3.0), (-1, 0.5))])
    sk = cm.Sketch(11, 3000, 4096)
    z = np.stack([sk.project(r) for r in u])
    err = np.abs(cm.cosine_matrix(z) - cm.cosine_matrix(u)).max()
    assert err < 0.1, err                        # JL: std ~ 1/sqrt(4096) ~ 0.016 per pair
    small = cm.Sketch(11, 3000, 16)
    zs = np.stack([small.project(r) for r in u])
    assert np.abs(cm.cosine_matrix(zs) - cm.cosine_matrix(u)).max() > err  # fewer dims, coarser


# -- the algorithm's server step on hand-made payloads --------------------------------------
def make_algo(n_clients=6, dim=3, **params) -> ClusteredFL:
    cfg = parse_config({"algorithm": {"name": "clustered", "clustered": {"split_from": 0, **params}},
                        "data": {"n_clients": n_clients, "dim": dim}})
    fac = lambda: build_model("linear", (dim,), 2)  # noqa: E731
    algo = ClusteredFL(cfg, FlatModel(fac()), fac, torch.device("cpu"))
    algo.setup(n_clients, 1.0)
    return algo


def payload_views(algo):
    return {k: torch.zeros(s, dtype=torch.float64) for k, s in algo.payload().items()}


def one_round(algo, updates: dict[int, np.ndarray], rnd=0, weights=None):
    """Clients in ``updates`` send theta_c + dW; the rest are idle. Returns finish_round's dict."""
    n = len(algo.cluster_of)
    w = weights if weights is not None else np.full(n, 1.0 / n)
    mask = np.zeros(n, dtype=bool)
    mask[list(updates)] = True
    algo.begin_round(rnd, mask)
    views = payload_views(algo)
    for cid, dw in updates.items():
        theta = algo.start(cid)[0] + torch.as_tensor(dw, dtype=torch.float32)
        algo.accumulate(views, cid, float(w[cid]), LocalResult(theta[None].clone(), 0.0))
    idle = [c for c in range(n) if not mask[c]]
    algo.accumulate_idle(views, idle, [float(w[c]) for c in idle])
    return algo.finish_round(views)


def flip_updates(p, a, m):
    """Three clients along +a e0, three along -a e0, all with m e1: mean norm m, max sqrt(a^2 + m^2)."""
    out = {}
    for cid in range(6):
        v = np.zeros(p)
        v[0], v[1] = (a if cid < 3 else -a), m
        out[cid] = v
    return out


@pytest.mark.parametrize("a, m, splits", [(1.6, 0.35, True), (1.6, 0.45, False), (1.4, 0.35, False),
                                          (1.0, 0.0, False), (2.0, 0.0, True)])
def test_split_triggers_exactly_when_mean_below_eps1_and_max_above_eps2(a, m, splits):
    algo = make_algo()
    p = algo.model.n_params
    out = one_round(algo, flip_updates(p, a, m))
    want_max = np.hypot(a, m)
    assert (want_max > 1.6 and m < 0.4) == splits  # the case table itself is what the rule says
    assert out == {"n_clusters": 2.0 if splits else 1.0}
    if splits:
        assert algo.cluster_of.tolist() == [0, 0, 0, 1, 1, 1]
        assert torch.equal(algo.shared[0], algo.shared[1])   # both sides start from the parent's new model


def test_sketched_path_uses_exact_norms(monkeypatch):
    seen = []
    real = cm.split_wanted
    monkeypatch.setattr(cm, "split_wanted", lambda *a: seen.append(a[:2]) or real(*a))
    for sketch in (0, 4):
        algo = make_algo(dim=6, sketch_dim=sketch)
        one_round(algo, flip_updates(algo.model.n_params, 1.7, 0.3))
        assert algo.cluster_of.tolist() == [0, 0, 0, 1, 1, 1], sketch
    (m0, t0), (m1, t1) = seen
    assert m0 == pytest.approx(0.3, rel=1e-6) and t0 == pytest.approx(np.hypot(1.7, 0.3), rel=1e-6)
    assert m1 == pytest.approx(m0, rel=1e-6) and t1 == pytest.approx(t0, rel=1e-12)


def test_no_split_before_split_from_below_min_size_or_at_max_clusters():
    for params, rnd, n_sampled in (({"split_from": 3}, 2, 6), ({"min_cluster_size": 4}, 0, 6),
                                   ({"max_clusters": 1}, 0, 6), ({}, 0, 3)):
        algo = make_algo(**params)
        ups = flip_updates(algo.model.n_params, 2.0, 0.0)
        out = one_round(algo, {c: ups[c] for c in list(ups)[:n_sampled]}, rnd=rnd)
        assert out["n_clusters"] == 1.0, params


def test_one_clusters_update_leaves_the_others_untouched():
    algo = make_algo()
    p = algo.model.n_params
    one_round(algo, flip_updates(p, 2.0, 0.0))           # two clusters: {0,1,2}, {3,4,5}
    before = algo.shared.clone()
    start = algo.start(4)
    assert start.shape == (1, p) and start.data_ptr() == algo.shared[1].data_ptr()
    out = one_round(algo, {0: np.full(p, 0.1), 1: np.full(p, 0.3)}, rnd=1)   # cluster 1 all idle
    assert out["n_clusters"] == 2.0
    assert torch.equal(algo.shared[1], before[1])
    # cluster 0: weights 1/6 each over its 3 members, client 2 idle: theta + (0.1 + 0.3) / 3
    torch.testing.assert_close(algo.shared[0], before[0] + 0.4 / 3, rtol=0, atol=1e-6)


def test_local_update_trains_a_copy_from_its_clusters_model():
    algo = make_algo(dim=3)
    algo.shared = torch.stack([algo.shared[0], -algo.shared[0]])
    algo.cluster_of[:] = [0, 0, 0, 1, 1, 1]
    algo.begin_round(0, np.ones(6, dtype=bool))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 3, generator=g)
    data = ClientData(4, x, (x[:, 0] > 0.5).long(), x, (x[:, 0] > 0.5).long())
    before = algo.shared.clone()
    res = algo.local_update(data, algo.start(4), {}, g)
    assert torch.equal(algo.shared, before) and not torch.equal(res.params[0], before[1])


def test_unseen_client_picks_the_cluster_model_of_lowest_training_loss():
    algo = make_algo(dim=3)
    w = torch.zeros(algo.model.n_params)
    w[:6] = torch.tensor([-4.0, 0, 0, 4.0, 0, 0])   # class-1 logit 4 x0, class-0 logit -4 x0
    shared = torch.stack([w, -w])
    x = torch.rand(50, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    y = (x[:, 0] > 0).long()
    for labels, k in ((y, 0), (1 - y, 1)):
        data = ClientData(9, x, labels, x, labels)
        got, _ = algo.personalize(data, shared, {}, None)
        assert torch.equal(got, shared[k:k + 1])
        acc = (algo.predict_proba(x, got, {}).argmax(1) == labels).float().mean()
        assert acc == 1.0
    mine = shared[1:2]                               # a training client's own [1, P]: kept as it is
    assert torch.equal(algo.personalize(ClientData(0, x, y, x, y), mine, {}, None)[0], mine)


def test_without_splits_clustered_is_fedavg():
    raw = small_config(train={"participation": 0.5})
    runs = {}
    for name, algo in (("fedavg", {"name": "fedavg"}), ("clustered", {"name": "clustered"})):
        raw["algorithm"] = algo            # split_from 20 > the 4 rounds here
        e = engine_for(raw)
        e.before_training()
        for _ in range(4):
            e.step()
        runs[name] = e.shared.clone()
    assert runs["clustered"].shape == (1, runs["fedavg"].shape[1])
    torch.testing.assert_close(runs["clustered"], runs["fedavg"], rtol=0, atol=1e-6)


# -- checkpoint state ------------------------------------------------------------------------
def test_state_dict_round_trip_changes_the_number_of_clusters():
    a = make_algo()
    one_round(a, flip_updates(a.model.n_params, 2.0, 0.0))
    a.shared = torch.cat([a.shared, a.shared[:1] + 1.0])
    a.cluster_of[:] = [0, 2, 0, 1, 1, 2]
    sd = a.state_dict()
    assert sd["attrs"]["n_clusters"] == 3 and sd["attrs"]["name"] == "clustered"
    ids = sd["arrays"]["cluster_id"]
    assert ids.dtype == np.int64 and ids.tolist() == [0, 2, 0, 1, 1, 2]
    b = make_algo()
    assert b.shared.shape[0] == 1
    b.load_state_dict(sd, a.shared.numpy())
    assert torch.equal(b.shared, a.shared) and b.cluster_of.tolist() == [0, 2, 0, 1, 1, 2]
    assert b.payload()["sums"] == (3, a.model.n_params)
    assert torch.equal(b.start(5)[0], a.shared[2])
    b.setup(6, 1.0)                                  # a restore keeps its assignment
    assert b.cluster_of.tolist() == [0, 2, 0, 1, 1, 2]
    with pytest.raises(CheckpointError, match="assigns 6 clients"):
        b.setup(7, 1.0)
    with pytest.raises(CheckpointError, match="cluster_id"):
        make_algo().load_state_dict({"attrs": {}, "arrays": {}}, a.shared.numpy())
    bad = {"attrs": {}, "arrays": {"cluster_id": np.array([0, 3, 0, 0, 0, 0])}}
    with pytest.raises(CheckpointError, match=r"ids in \[0, 3\)"):
        make_algo().load_state_dict(bad, a.shared.numpy())


def test_checkpoint_file_restores_clusters_into_a_fresh_engine(tmp_path):
    raw = small_config(train={"participation": 0.5})
    raw["algorithm"] = {"name": "clustered", "clustered": {"split_from": 1, "eps1": 1e9, "eps2": 0.0}}
    e = engine_for(raw)
    e.before_training()
    for _ in range(3):
        e.step()
    assert e.shared.shape[0] >= 2
    path = ck.save(e.snapshot(), str(tmp_path), keep=1)
    f = engine_for(raw)
    f.restore(ck.load(path))
    f.before_training()
    assert torch.equal(f.shared, e.shared) and np.array_equal(f.algo.cluster_of, e.algo.cluster_of)
    e.step()
    f.step()
    assert torch.equal(f.shared, e.shared) and np.array_equal(f.algo.cluster_of, e.algo.cluster_of)
