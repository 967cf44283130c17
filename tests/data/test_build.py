"""build_dataset on tiny files in the released formats: partitions, held clients, tensors, digests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedmtl_hpc.config import parse_config
from fedmtl_hpc.data import build_dataset
from fedmtl_hpc.data.clients import AugmentedClientData, TextClientData
from fedmtl_hpc.data import images
from fedmtl_hpc.data.images import NORMALISATION
from fedmtl_hpc.data.leaf import SEQ_LEN, encode_text
from fedmtl_hpc.data.natural import chain_windows
from fedmtl_hpc.errors import ConfigError, DataError
from fedmtl_hpc.models.augment import sample_crop_offsets
from tests.data.fabricate import (leaf_windows, write_cifar10, write_cifar100, write_emnist, write_femnist,
                                  write_mnist, write_shakespeare)

torch.set_num_threads(1)
TEXT = np.random.default_rng(5).choice(list("abcdefgh ijk,.;\nLMNOP"), 4000)
ROLES = {f"ROLE_{i}": "".join(TEXT[i * 150:i * 150 + 500 + 40 * i]) for i in range(9)}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("released")
    write_cifar10(base / "cifar10", per_batch=[30, 31, 32, 33, 34], n_test=40)
    write_cifar100(base / "cifar100", 300, 60)
    write_mnist(base / "mnist", 300, 60)
    write_mnist(base / "fashion", 200, 50, seed=3)
    write_emnist(base / "emnist", "balanced", 300, 60, n_classes=47)
    sizes = {f"f{i:04d}_{i % 7}": 6 + 5 * i for i in range(14)}
    sizes["f9999_tiny"] = 2
    write_femnist(base / "femnist", sizes)
    write_shakespeare(base / "shakespeare", ROLES)
    return {"cifar10": base / "cifar10", "cifar100": base / "cifar100", "mnist": base / "mnist",
            "fashion_mnist": base / "fashion", "emnist": base / "emnist", "femnist": base / "femnist",
            "shakespeare": base / "shakespeare"}


MODEL = {"cifar10": "cifar_cnn", "cifar100": "mobilenet_v2", "mnist": "linear", "fashion_mnist": "femnist_cnn",
         "emnist": "femnist_cnn", "femnist": "femnist_cnn", "shakespeare": "lstm"}
SHAPE = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
         "emnist": (1, 28, 28), "femnist": (1, 28, 28), "shakespeare": (SEQ_LEN,)}
CLASSES = {"cifar10": 10, "cifar100": 100, "mnist": 10, "fashion_mnist": 10, "emnist": 47, "femnist": 62,
           "shakespeare": 81}


def config(roots, name, **data):
    raw = {"run": {"seed": 3}, "model": {"name": MODEL[name]},
           "data": {"name": name, "root": str(roots[name]), "n_clients": 6, "unseen_clients": 2,
                    "emnist_split": "balanced", **data}}
    return parse_config(raw)


@pytest.mark.parametrize("name", list(MODEL))
def test_every_dataset_builds_all_clients(roots, name):
    ds = build_dataset(config(roots, name))
    assert ds.input_shape == SHAPE[name] and ds.n_classes == CLASSES[name]
    assert (ds.n_clients, ds.n_unseen) == (6, 2) and sorted(ds.clients) == list(range(8))
    info = ds.partition_info()
    assert info["seed"] == 3 and len(info["sha256"]) == 64 and info["kind"].startswith(name + "/")
    for cid in range(8):
        c = ds.client(cid)
        assert c.n_train >= 1 and c.n_test >= 1 and c.cid == cid
        x, y = c.train_batch(torch.arange(min(4, c.n_train)))
        assert tuple(x.shape[1:]) == SHAPE[name] and y.dtype == torch.int64
        assert x.dtype == (torch.int64 if name == "shakespeare" else torch.float32)
        assert int(y.min()) >= 0 and int(y.max()) < CLASSES[name]
        assert sum(len(yb) for _, yb in c.iter_test(chunk=3)) == c.n_test
        assert np.array_equal(ds.hist[cid][0], np.bincount(torch.cat([yb for _, yb in c.iter_train(5)]).numpy(),
                                                           minlength=CLASSES[name]))


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "emnist"])
def test_image_clients_hold_exactly_their_pooled_samples(roots, name):
    """Every pooled sample lands in one client's train or test share, normalised, upright (EMNIST)."""
    cfg = config(roots, name, partition="iid" if name != "cifar100" else "pachinko")
    ds = build_dataset(cfg)
    parts, sizes, labels, _, transposed = images._pool(cfg.data)
    everything = np.concatenate([np.concatenate([s.train, s.test, s.val]) for s in ds.splits])
    assert np.array_equal(np.sort(everything), np.arange(len(labels)))
    mean, std = (np.array(v, np.float32)[:, None, None] for v in NORMALISATION[name])
    for cid in (0, 7):
        c, sp = ds.client(cid), ds.splits[cid]
        raw = images._gather(parts, {"t": sp.test}, sizes)["t"].astype(np.float32) / 255.0
        if transposed:
            raw = raw.transpose(0, 2, 1)
        want = (raw.reshape(len(sp.test), *SHAPE[name]) - mean) / std
        np.testing.assert_allclose(c.x_test.numpy(), want, rtol=0, atol=1e-5)
        assert np.array_equal(c.y_test.numpy(), labels[sp.test])


def test_same_seed_same_split_other_seed_other_split(roots):
    a = build_dataset(config(roots, "cifar10"))
    b = build_dataset(config(roots, "cifar10"))
    c = build_dataset(config(roots, "cifar10", seed=99))
    assert a.partition_info() == b.partition_info()
    assert torch.equal(a.client(3).x_train, b.client(3).x_train)
    assert c.partition_info()["sha256"] != a.partition_info()["sha256"] and c.partition_info()["seed"] == 99


@pytest.mark.parametrize("name", ["cifar100", "femnist", "shakespeare"])
def test_ranks_hold_their_blocks_and_agree_with_one_rank(roots, name):
    whole = build_dataset(config(roots, name))
    held = {}
    for rank in range(3):
        part = build_dataset(config(roots, name), rank, 3)
        assert part.partition_info() == whole.partition_info()
        held.update({cid: part.client(cid) for cid in part.clients})
        others = [cid for cid in range(8) if cid not in part.clients]
        with pytest.raises(DataError, match=f"client {others[0]} is not held here"):
            part.client(others[0])
    assert sorted(held) == list(range(8))  # blocks [0..1][2..3][4..5] + unseen [6][7]
    for cid, c in held.items():
        x, y = c.train_batch(torch.arange(c.n_train))
        wx, wy = whole.client(cid).train_batch(torch.arange(c.n_train))
        assert torch.equal(x, wx) and torch.equal(y, wy)


def test_changed_labels_change_the_digest(roots, tmp_path):
    base = build_dataset(config(roots, "mnist", partition="iid")).partition_info()
    write_mnist(tmp_path / "m", 300, 60, seed=11)  # same sizes, other labels
    moved = build_dataset(config({"mnist": tmp_path / "m"}, "mnist", partition="iid")).partition_info()
    assert moved["sha256"] != base["sha256"]


def test_counts_only_build_matches_and_holds_no_samples(roots):
    full = build_dataset(config(roots, "femnist"))
    counts = build_dataset(config(roots, "femnist"), samples=False)
    assert counts.partition_info() == full.partition_info() and not counts.clients
    assert all(np.array_equal(counts.hist[c][0], full.hist[c][0]) for c in range(8))
    with pytest.raises(DataError, match="no samples"):
        counts.client(0)


def test_augmented_batches_are_seeded_crops_and_flips(roots):
    ds = build_dataset(config(roots, "cifar10", augment=True, partition="iid"))
    c = ds.client(0)
    assert isinstance(c, AugmentedClientData) and isinstance(c.to("cpu"), AugmentedClientData)
    idx = torch.arange(c.n_train)
    a = c.train_batch(idx, torch.Generator().manual_seed(4))[0]
    b = c.train_batch(idx, torch.Generator().manual_seed(4))[0]
    assert torch.equal(a, b) and not torch.equal(a, c.x_train)
    assert torch.equal(next(c.iter_train())[0], c.x_train)  # E-step / losses see plain images
    # padding is black (pixel value 0, normalised), not the mean: images whose crop moved them down
    # (row offset < 4, drawn first from the same stream) start with a black row
    dy, _ = sample_crop_offsets(c.n_train, torch.Generator().manual_seed(4))
    black = -torch.tensor(NORMALISATION["cifar10"][0]) / torch.tensor(NORMALISATION["cifar10"][1])
    moved = torch.nonzero(dy < 4).flatten()
    assert len(moved) and torch.allclose(a[moved, :, 0, :], black[None, :, None].expand(len(moved), 3, 32))
    assert not torch.allclose(c.x_train[moved, :, 0, :], black[None, :, None].expand(len(moved), 3, 32))


def test_shakespeare_windows_are_the_role_text_split_by_position(roots):
    ds = build_dataset(config(roots, "shakespeare", val_fraction=0.1))
    for cid, role in enumerate(ds.users):
        c = ds.client(cid)
        assert isinstance(c, TextClientData) and isinstance(c.to("cpu"), TextClientData)
        text = encode_text(ROLES[role])
        assert torch.equal(c.codes, torch.from_numpy(text)), "LEAF windows put back into one text"
        tr, te = c.train_starts.numpy(), c.test_starts.numpy()
        assert np.array_equal(tr, np.arange(len(tr))) and te.min() > tr.max() + SEQ_LEN
        x, y = c.train_batch(torch.tensor([0, len(tr) - 1]))
        for row, s in zip(range(2), (0, len(tr) - 1)):
            assert torch.equal(x[row], torch.from_numpy(text[s:s + SEQ_LEN]).long())
            assert y[row] == int(text[s + SEQ_LEN])


def test_chain_keeps_every_window_when_text_repeats():
    xs, ys = leaf_windows("abcdefghij" * 12 + "xyz" * 40)
    x = encode_text("".join(xs)).reshape(-1, SEQ_LEN)
    y = encode_text("".join(ys)).astype(np.int64)
    codes, starts = chain_windows(x[::-1].copy(), y[::-1].copy())
    got = sorted(bytes(codes[s:s + SEQ_LEN + 1]) for s in starts)
    assert got == sorted(bytes(np.append(x[i], y[i]).astype(np.uint8)) for i in range(len(x)))


def test_eval_split_val_reports_the_validation_share(roots):
    ds = build_dataset(config(roots, "mnist", partition="iid", val_fraction=0.25, eval_split="val"))
    labels = images._pool(config(roots, "mnist").data)[2]
    for cid in range(8):
        c, sp = ds.client(cid), ds.splits[cid]
        assert c.n_test == len(sp.val) > 0 and np.array_equal(c.y_test.numpy(), labels[sp.val])
        assert np.array_equal(ds.hist[cid][1], np.bincount(labels[sp.val], minlength=10))
        assert c.n_train + len(sp.test) + len(sp.val) == len(sp.train) + len(sp.test) + len(sp.val)


def test_natural_picks_users_by_seeded_hash_and_skips_small_ones(roots):
    a = build_dataset(config(roots, "femnist", min_samples=10), samples=False)
    b = build_dataset(config(roots, "femnist", min_samples=10, seed=8), samples=False)
    assert "f9999_tiny" not in a.users and len(set(a.users)) == 8 and set(a.users) != set(b.users)
    with pytest.raises(DataError, match=r"13 of 15 femnist users have >= data.min_samples=10.*= 14 asks"):
        build_dataset(config(roots, "femnist", min_samples=10, n_clients=12), samples=False)


@pytest.mark.parametrize("data, error, text", [
    ({"name": "mnist", "n_groups": 11}, ConfigError, "data.n_groups must be <= the 10 labels of mnist"),
    ({"name": "mnist", "partition": "dirichlet", "partition_alpha": 0.001, "min_samples": 40}, DataError,
     "min_samples=40"),
    ({"name": "mnist", "n_clients": 400}, DataError, "cannot give 402 clients"),
    ({"name": "cifar10", "root": "/nonexistent/x"}, DataError, "cifar-10-python.tar.gz"),
])
def test_impossible_requests_fail_with_the_key(roots, data, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(")):
        build_dataset(config(roots, data.pop("name"), **data))


def test_root_falls_back_to_the_environment(roots, monkeypatch):
    monkeypatch.setenv("FEDMTL_DATA", str(roots["mnist"].parent))
    (roots["mnist"].parent / "fashion_mnist").symlink_to(roots["fashion_mnist"])
    cfg = parse_config({"data": {"name": "fashion_mnist", "n_clients": 4}, "model": {"name": "linear"}})
    assert build_dataset(cfg, samples=False).n_classes == 10
    monkeypatch.delenv("FEDMTL_DATA")
    cfg = parse_config({"data": {"name": "emnist", "n_clients": 4}, "model": {"name": "linear"}})
    with pytest.raises(DataError, match=r"data.root and \$FEDMTL_DATA are both unset.*gzip.zip"):
        build_dataset(cfg)
