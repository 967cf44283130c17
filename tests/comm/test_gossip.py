"""comm/gossip.py in one process (SelfComm): the plan, the halo step, graph changes, rank hops.

The same code over real MPI (1, 2, 4, 8 ranks) is tests/comm/test_exchange.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fedmtl_hpc.comm import topology as T
from fedmtl_hpc.comm.base import SelfComm, SelfNeighborhood
from fedmtl_hpc.comm.gossip import Gossip, rank_hops


def one_rank(W, width: int = 4, dtype=np.float64) -> Gossip:
    return Gossip(SelfComm(), T.local_blocks(W, T.block_owner(W.shape[0], 1), 1), width, dtype)


@pytest.mark.parametrize("kind,n", [("ring", 1), ("ring", 9), ("torus", 16), ("erdos_renyi", 20), ("star", 7)])
def test_one_rank_step_is_w_times_x(kind: str, n: int) -> None:
    t = T.build_topology(kind, n, p=0.3, seed=4)
    g = one_rank(t.W)
    X = np.random.default_rng(0).normal(size=(n, 4))
    g.rows[...] = X
    assert g.mix_(2.0) == 2.0  # no neighbour rank: the control value comes back unchanged
    np.testing.assert_allclose(g.rows, t.W @ X, rtol=0, atol=1e-13)
    g.mix_()  # in place: the second step reads the first one's result
    np.testing.assert_allclose(g.rows, t.W @ (t.W @ X), rtol=0, atol=1e-13)
    assert g.bytes_per_step == 0 and g.p == 0 and g.r == 0


@pytest.mark.parametrize("scratch", [8, 200, 1 << 20])
def test_column_blocks_of_the_in_place_product(monkeypatch, scratch: int) -> None:
    """The GEMM runs in column blocks through a small scratch; any block size gives W @ X."""
    import fedmtl_hpc.comm.gossip as G
    monkeypatch.setattr(G, "_SCRATCH", scratch)
    t = T.build_topology("erdos_renyi", 9, p=0.4, seed=2)
    g = one_rank(t.W, width=37)
    assert g._cols == max(1, min(37, scratch // (9 * 8)))
    X = np.random.default_rng(3).normal(size=(9, 37))
    g.rows[...] = X
    g.mix_()
    np.testing.assert_allclose(g.rows, t.W @ X, rtol=0, atol=1e-13)


def test_set_blocks_keeps_rows_and_uses_the_new_w() -> None:
    a, b = T.build_topology("ring", 6), T.build_topology("complete", 6)
    g = one_rank(a.W)
    X = np.arange(24.0).reshape(6, 4)
    g.rows[...] = X
    g.mix_()
    g.set_blocks(T.local_blocks(b.W, T.block_owner(6, 1), 1))
    np.testing.assert_allclose(g.rows, a.W @ X, atol=1e-13)  # values survive the new buffers
    g.mix_()
    np.testing.assert_allclose(g.rows, b.W @ (a.W @ X), atol=1e-13)


def test_float32_rows_keep_the_network_average() -> None:
    """Below float64 the halo self-weight is re-derived so the rounded W still sums to 1 per row."""
    t = T.build_topology("erdos_renyi", 30, p=0.2, seed=1)
    g = one_rank(t.W, width=50, dtype=np.float32)
    X = np.random.default_rng(2).uniform(-1, 1, size=(30, 50)).astype(np.float32)
    g.rows[...] = X
    for _ in range(300):
        g.mix_()
    mean = X.astype(np.float64).mean(axis=0)
    assert np.abs(g.rows.astype(np.float64) - mean).max() < 1e-5  # consensus on the initial average
    Wh = g._Wh.astype(np.float64)
    assert np.abs(Wh.sum(axis=1) - 1).max() < 1e-7 and np.array_equal(g._Wh, g._Wh.T)


def test_plan_sends_runs_in_place_and_packs_the_rest() -> None:
    """Torus 4 x 6 over 8 ranks: rank 0 (nodes 0-2) owes rank 1 nodes 0 and 2, not a run: packed."""
    t = T.build_topology("torus", 24)
    blocks = T.local_blocks(t.W, T.block_owner(24, 8), 8)

    class FakeComm(SelfComm):  # rank 0 of 8; planning needs no messages
        rank, size = 0, 8

        def neighborhood(self, sources, destinations):
            nb = PlanOnly()
            nb.sources, nb.destinations = tuple(sources), tuple(destinations)
            return nb

    class PlanOnly(SelfNeighborhood):
        def plan_alltoallv(self, *args):
            return self

    g = Gossip(FakeComm(), blocks, 3)
    assert blocks[0].send[1].tolist() == [0, 2] and g.p >= 2
    dests = g.nb.destinations
    at = dests.index(1)
    assert g.send_displs[at] < g.p  # rank 1's rows come from the pack area
    for q, count, displ in zip(dests, g.send_counts, g.send_displs):
        ids = blocks[0].send[q]
        if len(ids) == ids[-1] - ids[0] + 1:  # a run of own rows is sent from where it lives
            assert displ == g.p + np.searchsorted(blocks[0].nodes, ids[0]) and count == len(ids)
    assert g.r == sum(len(v) for v in blocks[0].recv.values())
    row_bytes = (3 + 1) * 4  # 3 numbers + the control column, float32
    assert g.bytes_per_step == sum(len(v) for b in blocks for v in b.send.values()) * row_bytes


@pytest.mark.parametrize("kind,n,size,hops", [("ring", 8, 8, 4), ("ring", 16, 4, 2), ("complete", 8, 8, 1),
                                              ("star", 8, 8, 2), ("ring", 5, 1, 0), ("torus", 16, 16, 4)])
def test_rank_hops_is_the_rank_graph_diameter(kind: str, n: int, size: int, hops: int) -> None:
    W = T.build_topology(kind, n).W
    assert rank_hops(T.local_blocks(W, T.block_owner(n, size), size)) == hops


def test_rank_hops_refuses_a_disconnected_rank_graph() -> None:
    with pytest.raises(ValueError, match="disconnected"):
        rank_hops(T.local_blocks(np.eye(4), T.block_owner(4, 2), 2))


def test_self_comm_has_no_neighbours() -> None:
    with pytest.raises(ValueError, match="no neighbour ranks"):
        SelfComm().neighborhood([1], [1])
    nb = SelfComm().neighborhood([], [])
    empty = np.zeros((0, 3))
    nb.alltoallv_(empty, [], [], empty, [], [])  # nothing to move
    with pytest.raises(ValueError, match="no neighbours"):
        nb.alltoallv_(empty, [1], [0], empty, [1], [0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_halo_equals_the_dense_one(monkeypatch, dtype) -> None:
    """Above _DENSE_HALO entries W_halo is a CSR matrix: the same step up to rounding, rows still sum to 1."""
    import fedmtl_hpc.comm.gossip as G
    t = T.build_topology("erdos_renyi", 40, p=0.15, seed=3)
    X = np.random.default_rng(5).normal(size=(40, 33)).astype(dtype)
    dense = one_rank(t.W, width=33, dtype=dtype)
    monkeypatch.setattr(G, "_DENSE_HALO", 0)
    monkeypatch.setattr(G, "_SCRATCH", 40 * 8 * 4)  # column blocks of 4 (or 8) in the sparse path too
    sparse = one_rank(t.W, width=33, dtype=dtype)
    assert isinstance(dense._Wh, np.ndarray) and sp.issparse(sparse._Wh) and sparse._Wh.dtype == dtype
    assert sparse._Wh.nnz == 2 * len(t.edges) + 40  # edges + diagonal, nothing else
    Wh = sparse._Wh.toarray().astype(np.float64)
    assert np.abs(Wh.sum(axis=1) - 1).max() < (1e-7 if dtype == np.float32 else 1e-15)
    np.testing.assert_array_equal(sparse._Wh.toarray(), dense._Wh)  # same weights, self-weight rule included
    for g in (dense, sparse):
        g.rows[...] = X
        g.mix_()
        g.mix_()
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(sparse.rows, dense.rows, rtol=0, atol=tol)
    np.testing.assert_allclose(sparse.rows, t.W @ (t.W @ X.astype(np.float64)), rtol=0, atol=10 * tol)
