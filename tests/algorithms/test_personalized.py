"""Personalized baselines on one process: FedProx, FedAvg+, APFL, Ditto, pFedMe.

Every reference here is written out by hand in float64 with autograd on the linear model
(logits = x W^T + b), independently of the models' closed-form gradients and of sgd.py.
"""

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc import rng
from fedmtl_hpc.algorithms.sgd import local_sgd
from fedmtl_hpc.errors import NumericalError
from tests.conftest import engine_for

D = 150  # synthetic dim: the linear model has 2 * D + 2 parameters


def make(algo, params=None, **sections):
    raw = {"data": {"n_clients": 6, "unseen_clients": 2, "max_train": 80, "test_per_client": 20},
           "train": {"lr": 1.0}, "algorithm": {"name": algo, **({algo: params} if params else {})}}
    eng = engine_for(raw, **sections)
    eng.before_training()
    assert eng.model.n_params == 2 * D + 2
    return eng


def full_batch(**train):
    return {"batch_size": 10_000, "momentum": 0.0, **train}


def loss64(w, x, y):
    """Mean cross-entropy of the linear model with flat parameters w [P] (float64)."""
    return nn.functional.cross_entropy(x.double() @ w[:2 * D].view(2, D).T + w[2 * D:], y)


def grad64(w, x, y):
    w = w.detach().double().requires_grad_(True)
    (g,) = torch.autograd.grad(loss64(w, x, y), w)
    return g


def gen(eng, cid, rnd=0):
    return rng.torch_stream(eng.cfg.run.seed, rng.TRAIN, cid, rnd)


def run(eng, rounds):
    for _ in range(rounds):
        eng.step()


# -- FedProx -------------------------------------------------------------------------------------
def _datasets(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        # content_sha256 digests everything, the algorithm name too
        root = {k: v for k, v in f.attrs.items() if k not in ("algorithm", "config_sha256", "content_sha256")}
        algo = {k: v for k, v in f["algorithm"].attrs.items() if k != "name"}
    out.pop("config")
    return out, root, algo


def test_fedprox_with_mu_zero_is_bitwise_fedavg(tmp_path):
    train = {"participation": 0.5, "momentum": 0.5, "batch_size": 32}
    a, b = make("fedavg", train=train), make("fedprox", {"mu": 0.0}, train=train)
    for _ in range(3):
        sa, sb = a.step(), b.step()
        assert sa.train_loss == sb.train_loss
    assert torch.equal(a.shared, b.shared)
    fa = ck.save(a.snapshot(), str(tmp_path / "a"), keep=1)
    fb = ck.save(b.snapshot(), str(tmp_path / "b"), keep=1)
    (da, ra, ga), (db, rb, gb) = _datasets(fa), _datasets(fb)
    assert da.keys() == db.keys() and "global/params" in da
    for k in da:
        assert da[k].dtype == db[k].dtype and da[k].tobytes() == db[k].tobytes(), k
    assert ra == rb and ga == gb


def test_fedprox_proximal_term_matches_hand_computation():
    mu, lr = 0.7, 0.5
    eng = make("fedprox", {"mu": mu}, train=full_batch(lr=lr, local_steps=3))
    data, start = eng.clients[2], eng.shared.clone()
    res = eng.algo.local_update(data, eng.shared, eng.store.state(2), gen(eng, data.cid))
    w0 = start[0].double()
    w = w0.clone()
    for _ in range(3):
        w = w - lr * (grad64(w, data.x_train, data.y_train) + mu * (w - w0))
    assert torch.allclose(res.params[0].double(), w, atol=1e-5)
    plain = eng.shared.clone()
    local_sgd(eng.model, plain, data, eng.cfg.train, gen(eng, data.cid), lr=lr)
    assert (plain - res.params).abs().max() > 1e-3, "the proximal term must change the result"
    assert torch.equal(eng.shared, start)


# -- FedAvg+ -------------------------------------------------------------------------------------
def _acc(eng, proba_of, clients):
    return [int(sum((proba_of(d, x).argmax(1) == y).sum() for x, y in d.iter_test())) / d.n_test
            for d in clients]


def test_fedavg_plus_evaluates_a_tuned_copy_and_leaves_training_state_alone():
    eng = make("fedavg_plus", {"tune_epochs": 2, "tune_lr": 0.5}, train={"batch_size": 16})
    run(eng, 2)
    before = eng.shared.detach().cpu().numpy().tobytes()
    out = eng.evaluate()
    assert eng.shared.detach().cpu().numpy().tobytes() == before
    assert eng.evaluate()["test_acc_mean"] == out["test_acc_mean"], "evaluation must not change any state"
    # reference: each client tunes its own copy with 2 epochs at lr 0.5 from its EVAL stream
    tcfg = eng.algo.tune_config()
    assert (tcfg.local_epochs, tcfg.local_steps) == (2, 0)
    tuned = {}
    for d in [*eng.clients, *eng.unseen]:
        t = eng.shared.clone()
        local_sgd(eng.model, t, d, tcfg, rng.torch_stream(eng.cfg.run.seed, rng.EVAL, d.cid, eng.round), lr=0.5)
        tuned[d.cid] = t
        assert (t - eng.shared).abs().max() > 1e-3
    acc = _acc(eng, lambda d, x: eng.model.proba(tuned[d.cid], x)[0], eng.clients)
    unseen = _acc(eng, lambda d, x: eng.model.proba(tuned[d.cid], x)[0], eng.unseen)
    assert out["test_acc_mean"] == pytest.approx(np.mean(acc), abs=1e-12)
    assert out["test_acc_unseen"] == pytest.approx(np.mean(unseen), abs=1e-12)
    plain = _acc(eng, lambda d, x: eng.model.proba(eng.shared, x)[0], eng.clients)
    assert acc != plain, "the tuned models must predict differently from the global one"


def test_fedavg_plus_trains_exactly_as_fedavg():
    a, b = make("fedavg", train={"participation": 0.5}), make("fedavg_plus", train={"participation": 0.5})
    for _ in range(2):
        a.step(), b.step()
        b.evaluate()
    assert torch.equal(a.shared, b.shared)


# -- APFL ----------------------------------------------------------------------------------------
def test_apfl_with_alpha_fixed_at_zero_is_fedavg():
    train = {"participation": 0.5, "momentum": 0.5, "batch_size": 32}
    a, b = make("fedavg", train=train), make("apfl", {"alpha": 0.0, "learn_alpha": False}, train=train)
    for _ in range(3):
        sa, sb = a.step(), b.step()
        assert abs(sa.train_loss - sb.train_loss) < 1e-6
    assert (a.shared - b.shared).abs().max() < 1e-6
    ea, eb = a.evaluate(), b.evaluate()
    for k in ("test_acc_mean", "test_acc_weighted", "test_acc_p10", "test_acc_unseen"):
        assert abs(ea[k] - eb[k]) < 1e-6, k
    assert (b.store.tensors["alpha"] == 0).all()


def test_apfl_step_matches_autograd_on_the_mixed_model():
    lr, alpha_lr, a0 = 0.5, 0.7, 0.3
    eng = make("apfl", {"alpha": a0, "learn_alpha": True, "alpha_lr": alpha_lr},
               train=full_batch(lr=lr, local_steps=1))
    data, i = eng.clients[1], 1
    st = eng.store.state(i)
    noise = torch.randn(st["v"].shape, generator=torch.Generator().manual_seed(0)) * 0.3
    st["v"].add_(noise)  # v != w, so the alpha gradient <v - w, g> is not zero
    v0, w0 = st["v"][0].double().clone(), eng.shared[0].double().clone()
    res = eng.algo.local_update(data, eng.shared, st, gen(eng, data.cid))
    # reference: autograd through alpha v + (1 - alpha) w
    a = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
    v = v0.clone().requires_grad_(True)
    ga, gv = torch.autograd.grad(loss64(a * v + (1 - a) * w0, data.x_train, data.y_train), (a, v))
    assert abs(float(ga)) > 1e-3, "choose a problem where alpha moves"
    want_alpha = float(torch.clamp(a0 - alpha_lr * ga, 0.0, 1.0))
    assert float(st["alpha"][0]) == pytest.approx(want_alpha, abs=1e-5)
    assert torch.allclose(st["v"][0].double(), v0 - lr * gv, atol=1e-5)
    assert torch.allclose(res.params[0].double(), w0 - lr * grad64(w0, data.x_train, data.y_train), atol=1e-5)
    # predictions use the parameter mix with the global model
    x = data.x_test[:5]
    mix = float(st["alpha"][0]) * st["v"] + (1 - float(st["alpha"][0])) * eng.shared
    assert torch.allclose(eng.algo.predict_proba(x, eng.shared, st), torch.softmax(
        x.double() @ mix[0, :2 * D].double().view(2, D).T + mix[0, 2 * D:].double(), 1).float(), atol=1e-6)


def test_apfl_alpha_is_clipped_to_the_unit_interval():
    eng = make("apfl", {"alpha": 0.5, "alpha_lr": 1e6}, train=full_batch(local_steps=1))
    st = eng.store.state(0)
    st["v"].add_(torch.randn(st["v"].shape, generator=torch.Generator().manual_seed(2)))  # far from w
    eng.algo.local_update(eng.clients[0], eng.shared, st, gen(eng, 0))
    assert float(st["alpha"][0]) in (0.0, 1.0)


# -- Ditto ---------------------------------------------------------------------------------------
def test_ditto_global_model_is_fedavg_and_large_lambda_pins_personal_to_global():
    # the per-client path for both (Ditto has no batched path; batched FedAvg equals it to 1e-6, not bitwise)
    train = {"participation": 1.0, "batch_size": 32, "batched": "off"}
    a, b = make("fedavg", train=train), make("ditto", {"lam": 1e4, "personal_steps": 5}, train=train)
    for _ in range(3):
        received = b.shared.clone()
        sa, sb = a.step(), b.step()
        assert sa.train_loss == sb.train_loss
        assert torch.equal(a.shared, b.shared), "Ditto's global model is FedAvg's, bit for bit"
        # every client trained this round: its v is the model it received, to 1e-4
        assert (b.store.tensors["v"] - received).abs().max() < 1e-4
    assert (b.store.tensors["v"] - b.shared).abs().max() > 1e-3  # ... the received one, not the new one


def test_ditto_personal_step_matches_hand_reference():
    lam, plr, lr = 0.5, 0.3, 0.8
    eng = make("ditto", {"lam": lam, "personal_lr": plr, "personal_steps": 3},
               train=full_batch(lr=lr, local_steps=2))
    data, i = eng.clients[4], 4
    st = eng.store.state(i)
    st["v"].add_(torch.randn(st["v"].shape, generator=torch.Generator().manual_seed(1)) * 0.2)
    v, th = st["v"][0].double().clone(), eng.shared[0].double().clone()
    res = eng.algo.local_update(data, eng.shared, st, gen(eng, data.cid))
    w = th.clone()
    for _ in range(2):  # the global part: two plain SGD steps
        w = w - lr * grad64(w, data.x_train, data.y_train)
    for _ in range(3):  # the personal part: proximal-gradient steps toward the received model
        v = (v - plr * grad64(v, data.x_train, data.y_train) + plr * lam * th) / (1 + plr * lam)
    assert torch.allclose(res.params[0].double(), w, atol=1e-5)
    assert torch.allclose(st["v"][0].double(), v, atol=1e-5)


def test_ditto_personal_model_minimises_the_regularised_objective():
    lam = 2.0
    eng = make("ditto", {"lam": lam, "personal_lr": 1.0, "personal_steps": 400}, train=full_batch(local_steps=1))
    data, st = eng.clients[0], eng.store.state(0)
    eng.algo.local_update(data, eng.shared, st, gen(eng, 0))
    v, th = st["v"][0].double(), eng.shared[0].double()
    g = grad64(v, data.x_train, data.y_train) + lam * (v - th)   # gradient of f(v) + lam/2 ||v - th||^2
    assert g.abs().max() < 1e-5
    assert (v - th).abs().max() > 1e-3


# -- pFedMe --------------------------------------------------------------------------------------
def _argmin_inner(x, y, w, lam):
    """argmin_theta f(theta) + lam/2 ||theta - w||^2 by L-BFGS in float64."""
    th = w.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([th], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        obj = loss64(th, x, y) + lam / 2 * (th - w).pow(2).sum()
        obj.backward()
        return obj
    opt.step(closure)
    return th.detach()


def test_pfedme_one_step_with_solved_inner_problem_matches_hand_reference():
    lam, lr = 15.0, 0.02
    eng = make("pfedme", {"lam": lam, "inner_steps": 200, "personal_lr": 0.05, "beta": 1.0},
               train=full_batch(lr=lr, local_steps=1))
    w0 = eng.shared[0].double().clone()
    eng.step()
    weights = np.array(eng.weights)
    new = torch.zeros_like(w0)
    for i, d in enumerate(eng.clients):
        th = _argmin_inner(d.x_train, d.y_train, w0, lam)
        assert torch.allclose(eng.store.tensors["theta_hat"][i, 0].double(), th, atol=1e-5)
        new += weights[i] / weights.sum() * (w0 - lr * lam * (w0 - th))
    assert torch.allclose(eng.shared[0].double(), new, atol=1e-5)
    assert (eng.shared[0].double() - w0).abs().max() > 1e-4


def test_pfedme_beta_mixes_the_average_with_the_old_global_model():
    p = {"lam": 15.0, "inner_steps": 3, "personal_lr": 0.05}
    train = {"participation": 0.5, "lr": 0.05}
    one, two = make("pfedme", {**p, "beta": 1.0}, train=train), make("pfedme", {**p, "beta": 2.0}, train=train)
    old = one.shared.clone().double()
    one.step(), two.step()
    assert torch.allclose(two.shared.double(), -old + 2 * one.shared.double(), atol=1e-6)


# -- every method ----------------------------------------------------------------------------------
STATEFUL = {"apfl": ("v", "alpha"), "ditto": ("v",), "pfedme": ("theta_hat",)}


@pytest.mark.parametrize("algo", sorted(STATEFUL))
def test_updating_one_client_leaves_the_others_untouched(algo):
    eng = make(algo, train={"batch_size": 32})
    assert tuple(eng.store.tensors) == STATEFUL[algo]
    for i in range(len(eng.clients)):  # distinct rows, so shared storage would show
        for t in eng.store.tensors.values():
            t[i].add_(0.01 * (i + 1)) if t.shape[-1] > 1 else t[i].fill_(0.1 * (i + 1))
    before = {k: t.clone() for k, t in eng.store.tensors.items()}
    shared = eng.shared.clone()
    eng.algo.local_update(eng.clients[3], eng.shared, eng.store.state(3), gen(eng, eng.clients[3].cid))
    for k, t in eng.store.tensors.items():
        changed = [i for i in range(len(t)) if not torch.equal(t[i], before[k][i])]
        assert changed == [3], f"{k}: rows {changed} changed"
    assert torch.equal(eng.shared, shared), "local work must not write the shared stack"


@pytest.mark.parametrize("algo", ["fedprox", "fedavg_plus", "apfl", "ditto", "pfedme"])
def test_nan_in_one_client_names_client_and_round(algo):
    eng = make(algo)
    run(eng, 1)
    eng.clients[4].x_train[3, 0] = float("nan")  # one poisoned sample on client 4
    with pytest.raises(NumericalError, match=r"on client 4 in round 2"):
        eng.step()


@pytest.mark.parametrize("algo", ["apfl", "ditto"])
def test_nan_in_one_personal_model_is_reported(algo):
    eng = make(algo)
    eng.store.tensors["v"][2, 0, 7] = float("nan")  # only the private state is bad
    with pytest.raises(NumericalError, match=r"personal model holds NaN or Inf on client 2 in round 1"):
        eng.step()


@pytest.mark.parametrize("algo", ["fedprox", "fedavg_plus", "apfl", "ditto", "pfedme"])
def test_unseen_clients_adapt_without_touching_training_state(algo):
    eng = make(algo, {"lam": 1e4} if algo == "ditto" else None)
    run(eng, 2)
    shared, store = eng.shared.clone(), {k: t.clone() for k, t in eng.store.tensors.items()}
    out = eng.evaluate()
    assert 0.0 <= out["test_acc_unseen"] <= 1.0
    assert torch.equal(eng.shared, shared)
    assert all(torch.equal(t, store[k]) for k, t in eng.store.tensors.items())
    d = eng.unseen[0]
    state = {k: v.clone() for k, v in eng.algo.init_state(d.cid).items()}
    with torch.no_grad():  # as the engine calls it
        eng.algo.adapt(d, eng.shared, state)
    if algo == "apfl":  # v = global, alpha = its initial value: predicts with the global model
        assert torch.equal(state["v"], eng.shared) and float(state["alpha"][0]) == 0.5
    if algo == "ditto":  # lam = 1e4: the adapted personal model is the global one
        assert (state["v"] - eng.shared).abs().max() < 1e-4
    if algo == "pfedme":  # inner_steps full-batch steps from the global model
        th = eng.shared[0].double()
        lam, plr = eng.algo.params.lam, eng.algo.params.personal_lr
        for _ in range(eng.algo.params.inner_steps):
            th = th - plr * (grad64(th, d.x_train, d.y_train) + lam * (th - eng.shared[0].double()))
        assert torch.allclose(state["theta_hat"][0].double(), th, atol=1e-6)
