"""Clients dealt to ranks in contiguous blocks balanced by training samples."""

import numpy as np
import pytest

from fedmtl_hpc.data.base import balanced_block, balanced_bounds
from fedmtl_hpc.data.splits import client_ids
from fedmtl_hpc.engine import deal


@pytest.mark.parametrize("seed", range(20))
def test_blocks_cover_every_client_once_contiguously_and_balance_samples(seed):
    g = np.random.default_rng(seed)
    n = int(g.integers(1, 3000))
    sizes = np.minimum(np.floor(g.lognormal(4, 2, size=n)) + 50, 1000).astype(np.int64)
    if seed % 5 == 0:
        sizes[g.integers(n)] = 0
    for size in (1, 2, 3, 4, 7, 8, 64):
        b = balanced_bounds(sizes, size)
        assert b[0] == 0 and b[-1] == n and np.all(np.diff(b) >= 0)
        ids = [c for r in range(size) for c in balanced_block(sizes, size, r)]
        assert ids == list(range(n))                                   # every client exactly once, in order
        w = np.maximum(sizes, 1)
        per = np.add.reduceat(w, b[:-1])[np.diff(b) > 0] if n else w
        assert per.max() <= w.sum() / size + w.max()
        if n >= size:
            assert np.all(np.diff(b) >= 1)                              # no rank without clients


def test_balance_beats_equal_counts_on_the_default_workload():
    from fedmtl_hpc.config import parse_config
    from fedmtl_hpc.data.synthetic import SyntheticMixture
    cfg = parse_config({})
    sizes = SyntheticMixture(cfg.data, cfg.run.seed).train_sizes()[:300]
    for size in (2, 8):
        b = balanced_bounds(sizes, size)
        eq = np.arange(size + 1) * 300 // size
        bal = lambda bb: np.add.reduceat(sizes, bb[:-1]).max() / (sizes.sum() / size)  # noqa: E731
        assert bal(b) <= bal(eq) and bal(b) < 1.1


def test_real_data_ranks_hold_the_engines_blocks():
    sizes = np.array([10, 500, 3, 3, 3, 200, 7, 1, 90, 40, 5, 5], dtype=np.int64)   # 10 training + 2 unseen
    for size in (1, 2, 3, 4):
        tb, ub = deal(sizes, 10, 2, size)
        held = [client_ids(10, 2, r, size, sizes) for r in range(size)]
        for r in range(size):
            assert held[r] == [*range(tb[r], tb[r + 1]), *(10 + u for u in range(ub[r], ub[r + 1]))]
        assert sorted(c for h in held for c in h) == list(range(12))
