"""Engine rules on one process: sampling, the unbiased aggregate, client isolation."""

import numpy as np
import pytest
import torch

from fedmtl_hpc.config import parse_config
from fedmtl_hpc.data.base import contiguous_block
from fedmtl_hpc.data.synthetic import SyntheticMixture
from fedmtl_hpc.engine import sample_clients
from tests.conftest import engine_for


def make_engine(**sections):
    return engine_for({"data": {"n_clients": 8, "max_train": 80, "test_per_client": 20},
                       "train": {"lr": 1.0}}, **sections)


def test_contiguous_blocks_cover_all_clients_once():
    for n, size in [(300, 8), (7, 7), (10, 3)]:
        ids = [c for r in range(size) for c in contiguous_block(n, size, r)]
        assert ids == list(range(n))


def test_sampling_is_seeded_and_sized():
    a = sample_clients(1, 5, 100, 0.3)
    assert a.sum() == 30 and np.array_equal(a, sample_clients(1, 5, 100, 0.3))
    assert not np.array_equal(a, sample_clients(1, 6, 100, 0.3))
    assert sample_clients(1, 0, 10, 1.0).all() and sample_clients(1, 0, 10, 0.01).sum() == 1


def test_partial_participation_uses_the_unbiased_rule():
    eng = make_engine(algorithm={"name": "fedavg"}, train={"participation": 0.5, "lr": 1.0})
    before = eng.shared.clone().double()
    mask = sample_clients(eng.cfg.run.seed, 0, 8, 0.5)
    local = {}
    for i, data in enumerate(eng.clients):  # what each sampled client would send
        if mask[data.cid]:
            from fedmtl_hpc import rng
            gen = rng.torch_stream(eng.cfg.run.seed, rng.TRAIN, data.cid, 0)
            local[data.cid] = eng.algo.local_update(data, eng.shared, eng.store.state(i), gen).params.double()
    eng.step()
    w = np.array(eng.weights)
    want = sum(w[c] * (local[c] if mask[c] else before) for c in range(8)) / w.sum()
    assert torch.allclose(eng.shared.double(), want, atol=1e-6)


@pytest.mark.parametrize("algo", ["fedem", "local"])
def test_updating_one_client_leaves_the_others_untouched(algo):
    eng = make_engine(algorithm={"name": algo})
    if algo == "fedem":  # make every client's pi distinct so a shared tensor would show
        for i in range(len(eng.clients)):
            eng.store.tensors["pi"][i].copy_(torch.tensor([0.2, 0.3, 0.5]))
    before = {k: t.clone() for k, t in eng.store.tensors.items()}
    shared = eng.shared.clone()
    from fedmtl_hpc import rng
    eng.algo.local_update(eng.clients[3], eng.shared, eng.store.state(3), rng.torch_stream(1, rng.TRAIN, 3, 0))
    for k, t in eng.store.tensors.items():
        changed = [i for i in range(len(t)) if not torch.equal(t[i], before[k][i])]
        assert changed == [3], f"{k}: rows {changed} changed"
    assert torch.equal(eng.shared, shared), "local work must not write the shared stack"


def test_store_rows_do_not_share_memory():
    eng = make_engine(algorithm={"name": "local"})
    a, b = eng.store.state(0)["params"], eng.store.state(1)["params"]
    assert a.data_ptr() != b.data_ptr()
    a.add_(1.0)
    assert not torch.equal(a, b)


def test_synthetic_generator_keeps_its_promises():
    cfg = parse_config({"data": {"n_clients": 40, "test_per_client": 400}})
    ds = SyntheticMixture(cfg.data, 7)
    sizes = [ds.train_size(c) for c in range(40)]
    assert min(sizes) >= 50 and max(sizes) <= 1000
    pis = np.array([ds.mixture_weights(c) for c in range(40)])
    assert np.allclose(pis.sum(1), 1) and (pis.max(1) > 0.5).mean() > 0.5  # Dir(0.4) is peaked
    d = ds.client(3)
    assert d.x_test.shape == (400, 150) and d.x_train.abs().max() <= 1
    # the labels really come from the mixture: the Bayes rule built from the true
    # theta and pi beats any single component's rule on this client
    oracle = ds.oracle_correct(3, d) / 400
    single = max(((d.x_test.double() @ torch.from_numpy(ds.theta[m]) > 0).long() == d.y_test).double().mean().item()
                 for m in range(3))
    assert oracle >= single - 1e-12 and oracle > 0.7
    assert torch.equal(ds.client(3).x_train, d.x_train), "a client's data depends on (seed, id) only"


def test_fedem_recovers_the_true_mixture_weights():
    """After training, each client's pi matches its true pi up to a permutation of components."""
    eng = make_engine(data={"n_clients": 60, "max_train": 400, "test_per_client": 20}, train={"lr": 3.0})
    for _ in range(60):
        eng.step()
    learned = eng.store.tensors["pi"].numpy()
    true = np.array([eng.dataset.mixture_weights(c) for c in range(60)])
    import itertools
    err = min(np.abs(learned[:, list(p)] - true).mean() for p in itertools.permutations(range(3)))
    assert err < 0.12, err  # a uniform guess is ~0.3 off


def test_nan_loss_names_client_and_round():
    eng = make_engine(algorithm={"name": "fedavg"})
    eng.clients[5].x_train[3, 0] = float("nan")  # one poisoned sample on client 5
    from fedmtl_hpc.errors import NumericalError
    with pytest.raises(NumericalError, match=r"training loss is nan on client 5 in round 1"):
        eng.step()
