"""The batched local work (algorithms/batched.py) equals the per-client reference loop.

In-process (one rank): every algorithm with a batched path, full and partial participation,
epochs and fixed steps, momentum and weight decay. Under MPI: the per-client loop on one
rank against the batched path on 1, 2 and 4 ranks (partial participation), final shared
parameters and client state to 1e-6.
"""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc.algorithms import batched
from tests.conftest import engine_for, fedmtl

BATCHED = ("fedavg", "fedem", "local", "fedprox", "fedavg_plus")


def _engine(alg, mode, **train):
    return engine_for({"data": {"n_clients": 30, "max_train": 300, "test_per_client": 20, "unseen_clients": 3},
                       "train": {"lr": 1.0, "batched": mode, **train}, "algorithm": {"name": alg}})


def _run(alg, mode, rounds=3, **train):
    eng = _engine(alg, mode, **train)
    eng.before_training()
    losses = [eng.step().train_loss for _ in range(rounds)]
    return eng, losses


@pytest.mark.parametrize("alg", BATCHED)
@pytest.mark.parametrize("train", [{}, {"participation": 0.3},
                                   {"participation": 0.5, "momentum": 0.9, "weight_decay": 1e-3, "local_steps": 4,
                                    "batch_size": 32}])
def test_batched_equals_the_per_client_loop(alg, train):
    ref, l_ref = _run(alg, "off", **train)
    got, l_got = _run(alg, "on", **train)
    assert got.batched and not ref.batched
    if ref.shared.numel():
        torch.testing.assert_close(got.shared, ref.shared, rtol=0, atol=1e-6)
    for k, t in ref.store.tensors.items():
        torch.testing.assert_close(got.store.tensors[k], t, rtol=0, atol=1e-6)
    np.testing.assert_allclose(l_got, l_ref, rtol=0, atol=1e-6)
    a, b = ref.evaluate(), got.evaluate()
    assert abs(a["test_acc_mean"] - b["test_acc_mean"]) < 1e-9


def test_fedprox_mu_zero_is_batched_fedavg_bit_for_bit():
    b, _ = _run("fedavg", "on")
    c, _ = _run("fedprox", "on")
    d = engine_for({"data": {"n_clients": 30, "max_train": 300, "test_per_client": 20, "unseen_clients": 3},
                    "train": {"lr": 1.0, "batched": "on"}, "algorithm": {"name": "fedprox", "fedprox": {"mu": 0.0}}})
    d.before_training()
    for _ in range(3):
        d.step()
    assert torch.equal(d.shared, b.shared) and not torch.equal(c.shared, b.shared)


def test_auto_chooses_batched_where_supported_and_on_names_the_key_where_not():
    assert _engine("fedem", "auto").batched and not _engine("fedem", "off").batched
    assert not _engine("ditto", "auto").batched
    from fedmtl_hpc.errors import ConfigError
    with pytest.raises(ConfigError, match="train.batched"):
        _engine("ditto", "on")


def test_a_subclass_that_overrides_local_update_falls_back():
    from fedmtl_hpc.algorithms.fedavg import FedAvg

    class Odd(FedAvg):
        def local_update(self, data, start, state, gen):
            return super().local_update(data, start, state, gen)
    eng = _engine("fedavg", "off")
    assert batched.algorithm_supports(eng.algo) and not batched.algorithm_supports(Odd(eng.cfg, eng.model,
                                                                                        eng.algo.factory, eng.device))


@pytest.mark.parametrize("train", [{}, {"local_epochs": 2, "batch_size": 32}, {"local_steps": 5, "batch_size": 32},
                                   {"local_steps": 2, "batch_size": 100}])
def test_batch_plan_draws_exactly_what_sgd_batches_draws(train):
    from dataclasses import replace

    from fedmtl_hpc import rng
    cfg = replace(_engine("fedavg", "on").cfg.train, **train)
    n = np.array([5, 300, 129, 128, 0, 1, 64, 257], dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(n)[:-1]])
    for gens in ([rng.torch_stream(1, rng.TRAIN, c, 0) for c in range(len(n))],
                 rng.TorchStreams(1, rng.TRAIN, range(len(n)), 0)):
        _check_plan(batched.plan_batches(n, off, cfg, gens, rows=64), n, off, cfg)


def _check_plan(plan, n, off, cfg):
    from fedmtl_hpc import rng
    from fedmtl_hpc.algorithms.sgd import batches
    for p, j in enumerate(plan.order):
        want = list(batches(int(n[j]), cfg, rng.torch_stream(1, rng.TRAIN, int(j), 0), "cpu"))
        assert plan.steps[p] == len(want)
        for s, b in enumerate(want):
            assert torch.equal(plan.batch(p, s), b + int(off[j]))
    assert list(plan.active) == sorted(plan.active, reverse=True)
    # the tasks cover every step of every client once (rows in increasing order), padded by repeating
    # the batch's last row at weight 0
    seen = {}
    for t in plan.tasks:
        rows = t.rows.view(len(t.ids), t.w)
        for a, p in enumerate(t.ids.tolist()):
            b = plan.batch(p, t.s).sort().values
            assert (p, t.s) not in seen and torch.equal(rows[a, :len(b)], b) and bool((rows[a, len(b):] == b[-1]).all())
            assert torch.equal(t.inv[a, 0, 0], torch.where(torch.arange(t.w) < len(b), 1.0 / len(b), 0.0))
            first = t.s < -(-int(plan.n[p]) // cfg.batch_size)        # in the client's first epoch
            assert torch.equal(t.once[a, 0, 0], ((torch.arange(t.w) < len(b)) & first).float())
            seen[p, t.s] = True
    assert len(seen) == int(plan.steps.sum())


def test_vectorized_stream_seeds_equal_torch_stream():
    from fedmtl_hpc import rng
    cids = np.concatenate([np.arange(200), np.random.default_rng(1).integers(0, 2**32, 200), [2**32 - 1]])
    for seed, purpose, rest in [(1234, rng.TRAIN, (7,)), (2**40 + 5, rng.EVAL, (0,)), (3, rng.DATA, ())]:
        streams = rng.TorchStreams(seed, purpose, cids, *rest)
        for j in (0, 5, 250, len(cids) - 1):
            want = rng.torch_stream(seed, purpose, int(cids[j]), *rest)
            assert streams[j].initial_seed() == want.initial_seed()
    assert rng.TorchStreams(1, rng.TRAIN, [2**33], 0).seeds[0] == rng.torch_stream(1, rng.TRAIN, 2**33, 0).initial_seed()


def _final(run_dir: Path) -> dict:
    path = ck.list_checkpoints(str(run_dir / "checkpoints"))[-1]
    with h5py.File(path) as f:
        out = {"params": f["global/params"][()]}
        for k in f["clients/state"]:
            out[k] = f["clients/state"][k][()]
    return out


@pytest.mark.parametrize("alg", ["fedem", "fedavg", "local", "fedprox"])
def test_batched_on_1_2_4_ranks_equals_the_loop(tmp_path, cfg_file, alg):
    cfg = cfg_file(run={"rounds": 3, "eval_every": 3}, checkpoint={"every": 3},
                   data={"n_clients": 16, "max_train": 200, "unseen_clients": 2, "test_per_client": 30},
                   train={"participation": 0.5}, algorithm={"name": alg})
    ref = tmp_path / "ref"
    fedmtl(["run", str(cfg), "--run-dir", str(ref), "--set", "train.batched=off"], n=1, check=True)
    want = _final(ref)
    for n in (1, 2, 4):
        d = tmp_path / f"b{n}"
        fedmtl(["run", str(cfg), "--run-dir", str(d), "--set", "train.batched=on", "--set", "run.eval_every=3"],
               n=n, check=True)
        got = _final(d)
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, rtol=0, atol=1e-6, err_msg=f"{alg} {k} at {n} ranks")


@pytest.mark.parametrize("alg", BATCHED)
@pytest.mark.parametrize("train", [{"participation": 0.5}, {"participation": 0.3, "local_steps": 3, "batch_size": 16}])
def test_batched_evaluation_and_unseen_adaptation_equal_the_loop(alg, train):
    """Evaluation (personalization, unseen adaptation) on the batched path: the same per-client
    correct counts as the loop (ties to float32 rounding do not occur on this data)."""
    ref, _ = _run(alg, "off", **train)
    got, _ = _run(alg, "on", **train)
    a, b = ref.evaluate(), got.evaluate()
    np.testing.assert_array_equal(b["_client_test_acc"], a["_client_test_acc"])
    np.testing.assert_array_equal(b["_unseen_test_acc"], a["_unseen_test_acc"])
    assert b["test_acc_mean"] == a["test_acc_mean"] and b["test_acc_unseen"] == a["test_acc_unseen"]


def test_batched_fedem_adaptation_equals_fit_mixture_weights():
    from fedmtl_hpc.algorithms.fedem import fit_mixture_weights
    from fedmtl_hpc.data.base import ClientBlock
    eng, _ = _run("fedem", "on")
    datas = eng.unseen
    block = ClientBlock.pack(datas)
    states = {"pi": torch.stack([eng.algo.init_state(d.cid)["pi"] for d in datas])}
    eng.algo.adapt_batch(block, np.arange(len(datas)), eng.shared, states)
    for j, d in enumerate(datas):
        want = fit_mixture_weights(eng.algo.init_state(d.cid)["pi"], eng.model.losses(eng.shared, d.iter_train()),
                                   eng.algo.params.adapt_iters)
        torch.testing.assert_close(states["pi"][j], want, rtol=0, atol=1e-6)

