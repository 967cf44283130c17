"""Decentralized engine rules on one process (SelfComm): the round, isolation, evaluation,
checkpoint round trip, stop handling and config validation. Multi-rank runs: tests/mpi/."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc import rng, signals
from fedmtl_hpc.config import parse_config
from fedmtl_hpc.exchange.allreduce import AllreduceExchange
from fedmtl_hpc.exchange.gossip import GossipExchange
from fedmtl_hpc.engine import sample_clients
from fedmtl_hpc.errors import CheckpointError, ConfigError
from tests.conftest import engine_for


def make_engine(**sections):
    return engine_for({"data": {"n_clients": 8, "max_train": 80, "test_per_client": 20, "unseen_clients": 2},
                       "algorithm": {"mode": "decentralized"}, "topology": {"kind": "erdos_renyi", "p": 0.4}},
                      **sections)


def test_build_engine_picks_the_mode():
    assert type(make_engine().exchange) is GossipExchange
    assert type(make_engine(algorithm={"mode": "client-server"}).exchange) is AllreduceExchange


@pytest.mark.parametrize("algo", ["fedem", "fedavg"])
def test_one_round_is_own_local_updates_then_w_mixing(algo):
    """D-FedEM / D-SGD: sampled clients train their OWN copy; then every client (sampled or
    not) takes sum_s W_ts theta_s. Reference: the same local updates by hand, W @ X in float64."""
    eng = make_engine(algorithm={"name": algo}, train={"participation": 0.5})
    eng.step()  # round 0: clients now hold different copies
    X = eng.exchange.params.detach().clone()
    r, n = eng.round, eng.dataset.n_clients
    mask = sample_clients(eng.cfg.run.seed, r, n, 0.5)
    assert 0 < mask.sum() < n
    state = {k: t.clone() for k, t in eng.store.tensors.items()}
    want = X.clone()
    for i, data in enumerate(eng.clients):
        if mask[data.cid]:
            st = {k: t[i].clone() for k, t in state.items()}
            gen = rng.torch_stream(eng.cfg.run.seed, rng.TRAIN, data.cid, r)
            want[i] = eng.algo.local_update(data, X[i].clone(), st, gen).params
    W = eng.exchange.schedule.at(r).W
    want = torch.from_numpy(W @ want.reshape(n, -1).double().numpy()).view_as(X).float()
    eng.step()
    torch.testing.assert_close(eng.exchange.params, want, rtol=0, atol=2e-6)
    assert not torch.equal(eng.exchange.params, X)


def test_updating_one_client_leaves_the_other_copies_untouched():
    """Python references bite: per-client components are rows that never share memory."""
    eng = make_engine()
    eng.step()
    before = eng.exchange.params.clone()
    pis = eng.store.tensors["pi"].clone()
    p = eng.exchange.params
    p[3].add_(1.0)
    changed = [i for i in range(len(p)) if not torch.equal(p[i], before[i])]
    assert changed == [3]
    assert torch.equal(eng.store.tensors["pi"], pis)
    assert eng.exchange.params.data_ptr() == p.data_ptr()  # the view is the live storage, not a copy


def test_evaluation_uses_each_clients_own_model_and_reports_consensus():
    eng = make_engine(data={"unseen_clients": 0})
    g = torch.Generator().manual_seed(0)
    own = torch.randn(eng.exchange.params.shape, generator=g)
    eng.exchange.params.copy_(own)
    out = eng.evaluate()
    K, P = eng.shared.shape
    bar = own.double().mean(dim=0)
    assert out["consensus_distance"] == pytest.approx(float(((own.double() - bar) ** 2).sum()) / 8, rel=1e-12)
    acc_own, acc_bar = [], []
    for i, d in enumerate(eng.clients):
        acc_own.append(eng._correct(d, own[i], eng.store.state(i)) / d.n_test)
        acc_bar.append(eng._correct(d, bar.float(), eng.store.state(i)) / d.n_test)
    assert out["test_acc_mean"] == pytest.approx(np.mean(acc_own), abs=1e-12)
    assert abs(np.mean(acc_own) - np.mean(acc_bar)) > 1e-3  # so the check above can tell them apart
    eng.exchange.params.copy_(own[0].expand_as(own))
    assert eng.evaluate()["consensus_distance"] == 0.0


def test_eval_train_loss_and_metrics_columns():
    eng = make_engine()
    stats = eng.step()
    out = eng.evaluate()
    assert out["train_loss"] == pytest.approx(stats.train_loss, rel=1e-12)  # one rank: local == global
    assert "consensus_distance" in eng.metrics.columns and "test_acc_unseen" in out


def test_checkpoint_round_trip_continues_exactly(tmp_path):
    a = make_engine(train={"participation": 0.5}, topology={"change_every": 1})
    for _ in range(3):
        a.step()
    snap = a.snapshot()
    assert snap.topology["attrs"]["next_round"] == 3 and snap.attrs["mode"] == "decentralized"
    W = a.exchange.schedule.at(2).W.toarray()  # the graph's W, stored as edges + weights + diagonal
    e = snap.topology["edges"]
    assert "W" not in snap.topology and e.dtype == np.int64 and np.all(e[:, 0] < e[:, 1])
    np.testing.assert_array_equal(snap.topology["edge_weight"], W[e[:, 0], e[:, 1]])
    np.testing.assert_array_equal(snap.topology["self_weight"], np.diag(W))
    np.testing.assert_allclose(snap.shared, a.exchange.params.double().mean(dim=0).numpy(), atol=1e-6)
    path = ck.save(snap, str(tmp_path), keep=1)
    b = make_engine(train={"participation": 0.5}, topology={"change_every": 1})
    b.restore(ck.load(path, rows=b.train_ids))
    assert b.round == 3 and torch.equal(b.exchange.params, a.exchange.params)
    a.step(), b.step()
    assert torch.equal(b.exchange.params, a.exchange.params) and torch.equal(b.store.tensors["pi"], a.store.tensors["pi"])
    with h5py.File(path) as f:
        assert "W" not in f["topology"] and f["topology/self_weight"].shape == (8,)
    one_ulp = lambda v: np.where(np.arange(len(v)) == 0, np.nextafter(v, 2.0), v)  # noqa: E731
    for key, edit in (("edges", lambda v: v[1:]), ("edge_weight", one_ulp), ("self_weight", one_ulp)):
        other = copy.deepcopy(ck.load(path))
        other.topology[key] = edit(other.topology[key])
        with pytest.raises(CheckpointError, match="topology differs"):
            make_engine(train={"participation": 0.5}, topology={"change_every": 1}).restore(other)


def test_client_server_checkpoint_has_no_topology(tmp_path):
    eng = make_engine(algorithm={"mode": "client-server"})
    eng.step()
    snap = eng.snapshot()
    assert snap.topology is None and "mode" not in snap.attrs and set(snap.client_state) == {"pi"}
    with pytest.raises(CheckpointError, match="no per-client components"):
        make_engine().restore(ck.load(ck.save(snap, str(tmp_path), keep=1)))


def test_stop_request_on_a_single_rank_stops_in_that_round():
    eng = make_engine()
    eng.step()
    signals.request()
    try:
        stats = eng.step()
    finally:
        signals.clear()
    assert stats.stop and stats.round == 2 and eng.exchange._stop_at == 1
    assert not make_engine(run={"stop_after": 2}).step().stop


@pytest.mark.parametrize("raw,text", [
    ({"algorithm": {"mode": "decentralized", "name": "local"}}, "algorithm.mode = decentralized needs"),
    ({"algorithm": {"mode": "gossip"}}, "algorithm.mode must be one of client-server | decentralized"),
    ({"topology": {"kind": "mesh"}}, "topology.kind must be one of ring"),
    ({"topology": {"kind": "edges"}}, "topology.file is required"),
    ({"topology": {"p": 1.5}}, "topology.p must be in (0, 1]"),
    ({"topology": {"change_every": -1}}, "topology.change_every must be >= 0"),
    ({"topology": {"shape": [3, "x"]}}, "topology.shape must be null or [rows, cols]"),
    ({"topology": {"shape": [3, 4]}}, "topology.shape applies to kind torus only"),
    ({"topology": {"weights": "w.txt", "change_every": 2}}, "cannot follow a time-varying graph"),
    ({"topology": {"seed": -3}}, "topology.seed must be >= 0"),
])
def test_config_errors_name_the_key(raw, text):
    with pytest.raises(ConfigError, match=None) as info:
        parse_config(raw)
    assert text in str(info.value)
