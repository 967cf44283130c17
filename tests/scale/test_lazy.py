"""Lazily regenerated synthetic clients equal the eagerly built ones; eval sampling."""

import numpy as np
import pytest
import torch

from fedmtl_hpc.config import parse_config
from fedmtl_hpc.data.synthetic import SyntheticMixture, components
from fedmtl_hpc.engine import eval_selection
from tests.conftest import engine_for


def test_regenerated_clients_are_bitwise_the_eager_ones():
    cfg = parse_config({"data": {"n_clients": 50, "unseen_clients": 5}})
    a, b = SyntheticMixture(cfg.data, 7), SyntheticMixture(cfg.data, 7)
    b.train_sizes()                                  # headers drawn once and kept
    for cid in (0, 3, 17, 49, 54):
        full, train = a.client(cid), b.client(cid, test=False)
        assert torch.equal(full.x_train, train.x_train) and torch.equal(full.y_train, train.y_train)
        assert train.n_test == 0 and torch.equal(full.x_test, b.client(cid).x_test)
        assert b.train_size(cid) == full.n_train and np.array_equal(b.mixture_weights(cid), a.mixture_weights(cid))


def test_partition_digest_is_unchanged_by_the_kept_headers():
    cfg = parse_config({"data": {"n_clients": 40, "unseen_clients": 4}})
    ds = SyntheticMixture(cfg.data, 3)
    import hashlib
    h = hashlib.sha256(ds.theta.tobytes())
    for cid in range(44):                            # the per-client digest of before
        _, n, pi = ds._header(cid)
        h.update(np.int64(n).tobytes() + pi.tobytes())
    assert ds.partition_info()["sha256"] == h.hexdigest()


@pytest.mark.parametrize("batched", ["on", "off"])
@pytest.mark.parametrize("alg", ["fedem", "fedavg"])
def test_lazy_engine_equals_eager(batched, alg):
    raw = {"data": {"n_clients": 30, "max_train": 200, "test_per_client": 20, "unseen_clients": 3},
           "train": {"lr": 1.0, "participation": 0.3, "batched": batched}, "algorithm": {"name": alg},
           "run": {"eval_clients": 10}}
    engines = []
    for lazy in ("off", "on"):
        eng = engine_for(raw, data={**raw["data"], "lazy": lazy})
        assert eng.lazy == (lazy == "on") and (eng.clients is None) == eng.lazy
        eng.before_training()
        losses = [eng.step().train_loss for _ in range(3)]
        engines.append((eng, losses, eng.evaluate()))
    (a, la, ea), (b, lb, eb) = engines
    torch.testing.assert_close(b.shared, a.shared, rtol=0, atol=1e-6)
    for k in a.store.tensors:
        torch.testing.assert_close(b.store.tensors[k], a.store.tensors[k], rtol=0, atol=1e-6)
    np.testing.assert_allclose(lb, la, rtol=0, atol=1e-6)
    assert ea["eval_clients"] == eb["eval_clients"] == 10
    assert ea["test_acc_mean"] == pytest.approx(eb["test_acc_mean"], abs=1e-9)
    assert np.isnan(ea["_client_test_acc"]).sum() == 20


def test_eval_selection_is_seeded_and_sized():
    tr, un = eval_selection(5, 10, 1000, 20, 100)
    assert tr.sum() == 100 and un.sum() == 2
    tr2, _ = eval_selection(5, 10, 1000, 20, 100)
    assert np.array_equal(tr, tr2) and not np.array_equal(tr, eval_selection(5, 20, 1000, 20, 100)[0])
    assert eval_selection(5, 10, 50, 3, 0)[0].all() and eval_selection(5, 10, 50, 3, 60)[0].all()


def test_train_block_is_bitwise_the_clients():
    """The lazy path's one-block regeneration draws exactly ``client(cid, test=False)``."""
    cfg = parse_config({"data": {"n_clients": 40, "unseen_clients": 2}})
    ds = SyntheticMixture(cfg.data, 11)
    cids = [0, 5, 17, 39, 41]
    block = ds.train_block(cids)
    for j, cid in enumerate(cids):
        c = ds.client(cid, test=False)
        o, m = int(block.off[j]), int(block.n[j])
        assert m == c.n_train and torch.equal(block.x[o:o + m], c.x_train) and torch.equal(block.y[o:o + m], c.y_train)
    ds.train_sizes()                                 # headers kept: sizes looked up, not drawn
    for cids in ([3, 9, 40], [1, 2, 3, 4, 5, 6, 7, 8, 39], [20]):   # one buffer, grown, then reused
        block = ds.train_block(cids, reuse=True)
        for j, cid in enumerate(cids):
            c = ds.client(cid, test=False)
            o, m = int(block.off[j]), int(block.n[j])
            assert torch.equal(block.x[o:o + m], c.x_train) and torch.equal(block.y[o:o + m], c.y_train)


def test_component_draws_are_numpys_choice():
    """``_draw`` picks components by numpy's inverse cdf, as ``Generator.choice(p=...)`` does: the same
    indices and the same stream position after (so the data set is unchanged)."""
    r = np.random.default_rng(5)
    for _ in range(300):
        m = int(r.integers(1, 6))
        pi = r.dirichlet(np.full(m, float(r.choice([0.05, 0.4, 5.0]))))
        n, seed = int(r.integers(0, 1200)), int(r.integers(0, 2**32))
        g1, g2 = np.random.default_rng(seed), np.random.default_rng(seed)
        want, got = g1.choice(m, size=n, p=pi), components(g2, pi, n)
        assert np.array_equal(got, want) and got.dtype == want.dtype and g1.random() == g2.random()
