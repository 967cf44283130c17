"""Partitioners: coverage, determinism, heterogeneity, bounded failure, digest."""

from __future__ import annotations

import hashlib
import struct
import time
from typing import Callable

import numpy as np
import pytest

from fedmtl_hpc.data.partition import (dirichlet, fraction_subsample, iid,
                                       label_group_dirichlet, natural, pachinko,
                                       partition_digest, pathological,
                                       train_test_split)
from fedmtl_hpc.errors import DataError

LABELS = np.repeat(np.arange(10), 1000)  # 10 classes x 1000 samples
COARSE = np.repeat(np.arange(20), 150)   # CIFAR-100-like: 20 x 5 x 30
FINE = np.repeat(np.arange(100), 30)

PARTITIONERS: dict[str, Callable[[object], list[np.ndarray]]] = {
    "iid": lambda s: iid(len(LABELS), 7, s),
    "dirichlet": lambda s: dirichlet(LABELS, 7, 0.5, s),
    "label_group": lambda s: label_group_dirichlet(LABELS, 7, 3, 0.5, s),
    "pathological": lambda s: pathological(LABELS, 7, s, shards_per_client=3),
    "pachinko": lambda s: pachinko(COARSE, FINE, [100] * 30, s),
}


def _label_shares(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    counts = np.array([np.bincount(labels[p], minlength=labels.max() + 1)
                       for p in parts], dtype=float)
    return counts / counts.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name", PARTITIONERS)
def test_each_sample_in_exactly_one_client(name: str) -> None:
    parts = PARTITIONERS[name](0)
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)  # sorted, unique
    allidx = np.concatenate(parts)
    n = len(FINE) if name == "pachinko" else len(LABELS)
    assert len(np.unique(allidx)) == len(allidx)  # no sample twice
    assert allidx.min() >= 0 and allidx.max() < n
    if name != "pachinko":  # pachinko below asks for all 3000 samples
        assert len(allidx) == n


@pytest.mark.parametrize("name", PARTITIONERS)
def test_same_seed_same_partition(name: str) -> None:
    make = PARTITIONERS[name]
    a, b, c = make(3), make(np.random.default_rng(3)), make(4)
    assert partition_digest(a) == partition_digest(b)
    assert partition_digest(a) != partition_digest(c)


def test_dirichlet_alpha_controls_heterogeneity() -> None:
    flat = _label_shares(LABELS, dirichlet(LABELS, 10, 1000.0, 1))
    tv = 0.5 * np.abs(flat - 0.1).sum(axis=1)
    assert tv.max() < 0.12  # about what iid gives (~0.05)
    assert flat.max(axis=1).mean() < 0.15
    skew = _label_shares(LABELS, dirichlet(LABELS, 10, 0.05, 1))
    assert skew.max(axis=1).mean() > 0.45  # one label dominates a client
    assert (skew < 0.01).sum(axis=1).mean() > 4  # many labels nearly absent


def _label_clusters(parts: list[np.ndarray], threshold: float = 0.95) -> list[int]:
    """Sizes of groups of labels whose per-client counts are near-proportional."""
    counts = np.array([np.bincount(LABELS[p], minlength=10) for p in parts], float)
    corr = np.corrcoef(counts.T)
    root = list(range(10))

    def find(i: int) -> int:
        while root[i] != i:
            i = root[i]
        return i
    for i in range(10):
        for j in range(i + 1, 10):
            if corr[i, j] > threshold:
                root[find(j)] = find(i)
    return sorted(np.bincount([find(i) for i in range(10)]).tolist())[::-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_groups_share_one_split(seed: int) -> None:
    # Labels of one group are cut by one Dir draw, so their per-client counts
    # are proportional; different groups (and plain dirichlet) are not.
    grouped = label_group_dirichlet(LABELS, 10, 2, 0.1, seed)
    assert [s for s in _label_clusters(grouped) if s > 0][:2] == [5, 5]
    plain = dirichlet(LABELS, 10, 0.1, seed)
    assert max(_label_clusters(plain)) <= 2
    with pytest.raises(DataError, match=r"n_groups must be in \[1, 10\]"):
        label_group_dirichlet(LABELS, 10, 11, 0.1, seed)


@pytest.mark.parametrize("n_clients, spc", [(5, 2), (10, 2), (4, 5), (20, 1)])
def test_pathological_shard_counts(n_clients: int, spc: int) -> None:
    parts = pathological(LABELS, n_clients, seed=n_clients, shards_per_client=spc)
    shard = len(LABELS) // (n_clients * spc)  # label-pure: 1000 % shard == 0
    for p in parts:
        assert len(p) == spc * shard
        counts = np.bincount(LABELS[p])
        blocks = counts[counts > 0]
        # Each label present comes in whole shards: exactly spc label-blocks.
        assert np.all(blocks % shard == 0) and (blocks // shard).sum() == spc
        assert len(blocks) <= spc


def test_pathological_keeps_every_sample_when_uneven() -> None:
    labels = np.arange(1003) % 7
    parts = pathological(labels, 6, seed=0, shards_per_client=2)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1003))
    assert max(map(len, parts)) - min(map(len, parts)) <= 2


def test_pachinko_sizes_and_skew() -> None:
    sizes = [50, 120, 7, 0, 300] + [100] * 20
    parts = pachinko(COARSE, FINE, sizes, seed=5)
    assert [len(p) for p in parts] == sizes
    assert len(np.unique(np.concatenate(parts))) == sum(sizes)
    # Exhausting the dataset works (labels run out and weights renormalise).
    full = pachinko(COARSE, FINE, [100] * 30, seed=5)
    assert sorted(np.concatenate(full).tolist()) == list(range(3000))
    # Dir(0.4) over coarse labels skews clients far beyond iid (~0.1).
    skew = pachinko(COARSE, FINE, [100] * 20, seed=6)
    top = np.mean([np.bincount(COARSE[p], minlength=20).max() / 100 for p in skew])
    assert top > 0.2


def test_pachinko_input_errors() -> None:
    with pytest.raises(DataError, match="sum to at most 3000 samples, got sum 3001"):
        pachinko(COARSE, FINE, [3001], seed=0)
    bad_coarse = COARSE.copy()
    bad_coarse[0] = 7  # fine label 0 now under coarse 0 and 7
    with pytest.raises(DataError, match="fine label appears under two coarse"):
        pachinko(bad_coarse, FINE, [10], seed=0)


def test_natural_groups() -> None:
    parts = natural(np.array(["w2", "w1", "w2", "w3", "w1"]))
    assert [p.tolist() for p in parts] == [[1, 4], [0, 2], [3]]
    assert all(p.dtype == np.int64 for p in parts)


def test_impossible_splits_fail_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"after 100 draws a client still had \d+ "
                                        r"< min_samples=150"):
        dirichlet(LABELS[::5], 10, 0.01, seed=0, min_samples=150)
    with pytest.raises(DataError, match="cannot give 10 clients at least 300"):
        dirichlet(LABELS[::5], 10, 0.01, seed=0, min_samples=300)
    with pytest.raises(DataError, match="cannot give 30 clients"):
        iid(20, 30, seed=0)
    with pytest.raises(DataError, match="one sample per shard"):
        pathological(np.arange(10) % 2, 6, seed=0)
    with pytest.raises(DataError, match="alpha must be > 0"):
        dirichlet(LABELS, 10, 0.0, seed=0)
    assert time.perf_counter() - start < 5
    # A feasible min_samples is met by retrying.
    parts = dirichlet(LABELS, 10, 0.3, seed=0, min_samples=200)
    assert min(map(len, parts)) >= 200


def test_fraction_subsample() -> None:
    keep = fraction_subsample(1000, 0.25, seed=1)
    assert len(keep) == 250 and keep.dtype == np.int64
    assert np.all(np.diff(keep) > 0) and keep.max() < 1000
    np.testing.assert_array_equal(keep, fraction_subsample(1000, 0.25, seed=1))
    assert not np.array_equal(keep, fraction_subsample(1000, 0.25, seed=2))
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(DataError, match=r"fraction must be in \(0, 1\]"):
            fraction_subsample(1000, bad, seed=1)
    with pytest.raises(DataError, match="keeps no sample"):
        fraction_subsample(10, 0.05, seed=1)


def test_train_test_split() -> None:
    parts = [np.arange(10), np.arange(10, 13), np.arange(100, 200)]
    splits = train_test_split(parts, seed=0)
    assert [(len(s.train), len(s.test), len(s.val)) for s in splits] == \
        [(8, 2, 0), (2, 1, 0), (80, 20, 0)]
    for part, s in zip(parts, splits):
        both = np.concatenate([s.train, s.test])
        assert sorted(both.tolist()) == part.tolist()
    again = train_test_split(parts, seed=0)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(splits, again))
    three = train_test_split(parts, seed=0, test_fraction=0.2, val_fraction=0.1)
    assert (len(three[0].train), len(three[0].test), len(three[0].val)) == (7, 2, 1)
    assert len(np.intersect1d(three[2].val, three[2].test)) == 0
    with pytest.raises(DataError, match=r"client 1 has 1 samples: .* leaves 0 "
                                        r"< min_train=1"):
        train_test_split([np.arange(5), np.array([7])], seed=0)
    with pytest.raises(DataError, match="must be >= 0 and sum below 1"):
        train_test_split(parts, seed=0, test_fraction=0.6, val_fraction=0.4)


def test_digest_encoding() -> None:
    lists = [np.array([3, 1], np.int32), np.array([], np.int64), np.array([2])]
    h = hashlib.sha256(b"fedmtl-partition-v1\x00")
    h.update(struct.pack("<Q", 3))
    for values in ([3, 1], [], [2]):
        h.update(struct.pack("<Q", len(values)))
        h.update(struct.pack(f"<{len(values)}q", *values))
    assert partition_digest(lists) == h.hexdigest()
    # Order and boundaries matter; the integer dtype does not.
    assert partition_digest([[0, 1], [2]]) != partition_digest([[0], [1, 2]])
    assert partition_digest([[0], [1]]) != partition_digest([[1], [0]])
    assert partition_digest([np.arange(4, dtype=np.uint8)]) == \
        partition_digest([np.arange(4)])
    with pytest.raises(DataError, match="expected integer indices"):
        partition_digest([np.array([0.5])])
