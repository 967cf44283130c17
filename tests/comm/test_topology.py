"""Tests for comm/topology.py (graphs, mixing matrices, schedules, blocks, the matplotlib picture)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from fedmtl_hpc.comm import topology as T
from fedmtl_hpc.errors import ConfigError

SIZES = [1, 2, 3, 4, 9, 16, 64]
RANDOM_KINDS = ["ring", "torus", "complete", "star", "erdos_renyi"]


def check_mixing(t: T.Topology) -> None:
    """Every rule a mixing matrix must satisfy, checked independently of validate_mixing."""
    assert isinstance(t.W, sp.csr_array) and t.W.has_canonical_format and t.W.data.all()
    W, n = t.W.toarray(), t.n
    assert W.dtype == np.float64 and W.shape == (n, n)
    assert np.array_equal(W, W.T)
    assert np.abs(W.sum(axis=0) - 1).max() <= 1e-12 and np.abs(W.sum(axis=1) - 1).max() <= 1e-12
    assert W.min() >= 0 and np.diag(W).min() > 0
    allowed = np.eye(n, dtype=bool)
    allowed[t.edges[:, 0], t.edges[:, 1]] = allowed[t.edges[:, 1], t.edges[:, 0]] = True
    assert not np.any((W != 0) & ~allowed)
    off = W[~np.eye(n, dtype=bool)]
    assert np.all(off[allowed[~np.eye(n, dtype=bool)]] > 0)  # MH/uniform weight every edge


def check_edges(t: T.Topology) -> None:
    e = t.edges
    assert e.dtype == np.int64 and e.ndim == 2 and e.shape[1] == 2
    assert np.all(e[:, 0] < e[:, 1]) and e.min(initial=0) >= 0 and e.max(initial=0) < t.n
    assert np.array_equal(e, np.unique(e, axis=0))  # sorted, no duplicates
    assert T.is_connected(t.n, e)
    assert np.array_equal(t.degrees, np.bincount(e.ravel(), minlength=t.n))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_every_kind_gives_valid_graph_and_metropolis_w(kind: str, n: int) -> None:
    t = T.build_topology(kind, n, p=0.5, seed=3)
    check_edges(t)
    check_mixing(t)
    assert t.kind == kind and 0.0 < t.spectral_gap <= 1.0
    if n == 1:
        assert t.W.toarray().tolist() == [[1.0]] and t.spectral_gap == 1.0 and len(t.edges) == 0
    expected = {"ring": n if n >= 3 else n - 1, "complete": n * (n - 1) // 2, "star": n - 1}
    if kind in expected:
        assert len(t.edges) == expected[kind]


@pytest.mark.parametrize("kind,n", [("ring", 3), ("ring", 16), ("torus", 9), ("torus", 64),
                                    ("torus", 4), ("complete", 9), ("ring", 2), ("star", 2)])
def test_uniform_weights_on_regular_graphs(kind: str, n: int) -> None:
    t = T.build_topology(kind, n, weights="uniform")
    check_mixing(t)
    assert np.allclose(t.W.diagonal(), 1.0 / (t.degrees[0] + 1))


def test_uniform_weights_rejected_on_irregular_graph() -> None:
    with pytest.raises(ConfigError, match="regular"):
        T.build_topology("star", 5, weights="uniform")


@pytest.mark.parametrize("n,shape,n_edges", [(4, (2, 2), 4), (6, (2, 3), 9), (7, (1, 7), 7),
                                             (9, (3, 3), 18), (12, (3, 4), 24),
                                             (16, (4, 4), 32), (18, (3, 6), 36)])
def test_torus_shape_and_degenerate_sizes(n: int, shape: tuple, n_edges: int) -> None:
    assert T.torus_shape(n) == shape
    assert len(T.torus_edges(n)) == n_edges  # no duplicate edges from a side of 1 or 2
    if min(shape) >= 3:
        assert np.all(T.degrees(n, T.torus_edges(n)) == 4)


def test_torus_shape_is_most_square_and_wraps_when_possible() -> None:
    for n in range(1, 150):
        rows, cols = T.torus_shape(n)
        facts = [(r, n // r) for r in range(1, n + 1) if n % r == 0 and r <= n // r]
        assert rows * cols == n and (rows, cols) == max(facts)
        assert min(rows, cols) >= 3 or not any(r >= 3 for r, _ in facts)


def test_torus_explicit_shape_and_bad_shape() -> None:
    t = T.build_topology("torus", 16, shape=(2, 8))
    assert len(t.edges) == 8 + 16 and t.neighbors(0) == [1, 7, 8]
    with pytest.raises(ConfigError, match=r"topology\.shape = \(3, 5\) gives 15 nodes.*16"):
        T.build_topology("torus", 16, shape=(3, 5))


@pytest.mark.parametrize("n", [3, 4, 5, 9, 16, 64])
def test_ring_spectral_gap_closed_form(n: int) -> None:
    t = T.build_topology("ring", n)
    assert np.allclose(t.W.toarray(), (np.eye(n) + np.roll(np.eye(n), 1, 0) + np.roll(np.eye(n), -1, 0)) / 3)
    lam = (1 + 2 * np.cos(2 * np.pi * np.arange(1, n) / n)) / 3
    assert t.spectral_gap == pytest.approx(1 - np.abs(lam).max(), abs=1e-12)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_complete_graph_is_one_step_averaging(n: int) -> None:
    t = T.build_topology("complete", n)
    assert np.allclose(t.W.toarray(), np.full((n, n), 1.0 / n), atol=1e-15)
    assert t.spectral_gap == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kind,n", [("ring", 16), ("torus", 16), ("star", 9),
                                    ("erdos_renyi", 16), ("complete", 8), ("ring", 64)])
def test_gossip_converges_at_spectral_rate(kind: str, n: int) -> None:
    t = T.build_topology(kind, n, p=0.3, seed=1)
    X = np.random.default_rng(0).normal(size=(n, 5))
    mean = X.mean(axis=0)
    dist0, Y = np.linalg.norm(X - mean), X
    for k in range(1, 61):
        Y = T.mix_reference(t.W, Y)
        assert np.allclose(Y.mean(axis=0), mean, atol=1e-12)  # doubly stochastic keeps the mean
        assert np.linalg.norm(Y - mean) <= (1 - t.spectral_gap) ** k * dist0 * (1 + 1e-9) + 1e-12
    # The slowest eigenvector decays at exactly 1 - gap per step, so the gap is not too small.
    ev, vec = np.linalg.eigh(t.W.toarray())
    v = vec[:, np.argsort(np.abs(ev))[-2]]
    assert np.linalg.norm(t.W @ v) == pytest.approx(1 - t.spectral_gap, abs=1e-10)


def test_erdos_renyi_seeded_and_bounded_tries() -> None:
    a, b = T.build_topology("erdos_renyi", 32, p=0.2, seed=5), T.build_topology(
        "erdos_renyi", 32, p=0.2, seed=5)
    c = T.build_topology("erdos_renyi", 32, p=0.2, seed=6)
    assert np.array_equal(a.edges, b.edges) and not np.array_equal(a.edges, c.edges)
    with pytest.raises(ConfigError, match=r"topology\.p = 0\.01 .*100 seeded tries.*larger"):
        T.build_topology("erdos_renyi", 64, p=0.01)
    calls = []

    class CountingRng:  # proves the loop stops after max_tries draws
        def random(self, size):
            calls.append(size)
            return np.ones(size)

    with pytest.raises(ConfigError, match="3 seeded tries"):
        T.erdos_renyi_edges(10, 0.5, CountingRng(), max_tries=3)
    assert len(calls) == 3
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"topology\.p must be in \(0, 1\]"):
            T.build_topology("erdos_renyi", 8, p=bad)


def test_edge_file_parsing_and_merging(tmp_path) -> None:
    f = tmp_path / "g.txt"
    f.write_text("# a 4-cycle, both directions\n0 1\n1 0  # dup\n\n1 2\n2 3\n3 0\n0 1\n")
    t = T.build_topology("file", 4, file=f)
    assert t.edges.tolist() == [[0, 1], [0, 3], [1, 2], [2, 3]]
    check_mixing(t)


@pytest.mark.parametrize("body,line,what", [
    ("0 1\n# ok\n2 2\n", 3, "self-loop"), ("0 1\n1 7\n", 2, "out of range"),
    ("0 1\n1 2 3\n", 2, "two integers"), ("x y\n", 1, "two integers"), ("0\n", 1, "two integers"),
    ("0 1\n\n1 -1\n", 3, "out of range"), ("0 1.5\n", 1, "two integers")])
def test_edge_file_errors_name_file_and_line(tmp_path, body: str, line: int, what: str) -> None:
    f = tmp_path / "bad_edges.txt"
    f.write_text(body)
    with pytest.raises(ConfigError, match=rf"bad_edges\.txt.* line {line}: .*{what}"):
        T.build_topology("file", 4, file=f)


def test_edge_file_missing_or_disconnected(tmp_path) -> None:
    with pytest.raises(ConfigError, match="nope.txt"):
        T.build_topology("file", 4, file=tmp_path / "nope.txt")
    f = tmp_path / "two.txt"
    f.write_text("0 1\n2 3\n")
    with pytest.raises(ConfigError, match="disconnected"):
        T.build_topology("file", 4, file=f)
    with pytest.raises(ConfigError, match="topology.file is required"):
        T.build_topology("file", 4)


def test_bad_kind_n_and_weights() -> None:
    with pytest.raises(ConfigError, match="topology.kind must be one of ring, torus.*got 'mesh'"):
        T.build_topology("mesh", 4)
    with pytest.raises(ConfigError, match="n >= 1"):
        T.build_topology("ring", 0)
    with pytest.raises(ConfigError, match="topology.weights must be one of"):
        T.build_topology("ring", 4, weights="max-degree")
    assert str(ConfigError("x")).startswith("config error: ")


def test_user_matrix_accepted_and_each_rule_rejected() -> None:
    lazy = 0.5 * np.eye(4) + 0.25 * (np.roll(np.eye(4), 1, 0) + np.roll(np.eye(4), -1, 0))
    t = T.build_topology("ring", 4, weights=lazy)
    assert np.array_equal(t.W.toarray(), lazy) and t.spectral_gap == pytest.approx(0.5)
    e3, e4 = T.complete_edges(3), T.ring_edges(4)
    neg = np.full((3, 3), -0.1) + np.diag([1.3] * 3)
    cases = [(np.eye(3)[:2], e3, "square"), (np.array([[.5, .4, .1], [.5, .5, 0], [0, .1, .9]]), e3,
             "symmetric"), (neg, e3, "non-negative"), (0.9 * np.eye(3), e3, "rows must sum"),
             (np.full((4, 4), 0.25), e4, "zero off the graph edges"),
             (np.array([[0.0, 1.0], [1.0, 0.0]]), T.ring_edges(2), "positive diagonal"),
             (np.full((3, 3), np.nan), e3, "NaN")]
    for W, e, rule in cases:
        with pytest.raises(ConfigError, match=f"topology.weights: mixing matrix.*{rule}"):
            T.validate_mixing(W, len(W[0]) if W.ndim == 2 else 3, e)
    # Rows sum to 1 and |W - W.T| <= d, yet columns are off by 2d: only the column rule fires.
    skew = np.full((3, 3), 1 / 3) + np.array([[0, 1, -1], [0, 1, -1], [0, 0, 0]]) * 0.01
    with pytest.raises(ConfigError, match="columns must sum"):
        T.validate_mixing(skew, 3, e3, tol=0.015)
    # a sparse W breaks the same rule with the same message, down to the entry it names
    for W, e, _ in cases[1:]:
        with pytest.raises(ConfigError) as dense:
            T.validate_mixing(W, W.shape[0], e)
        with pytest.raises(ConfigError) as sparse:
            T.validate_mixing(sp.coo_array(W), W.shape[0], e)
        assert str(sparse.value) == str(dense.value)
    with pytest.raises(ConfigError, match=r"square \(3, 3\), got shape \(2, 3\)"):
        T.validate_mixing(sp.csr_array(np.eye(3)[:2]), 3, e3)
    assert (T.validate_mixing(sp.coo_array(lazy), 4, e4) != sp.csr_array(lazy)).nnz == 0


def test_topology_frozen_readonly_and_neighbors() -> None:
    t = T.build_topology("ring", 8)
    assert t.neighbors(0) == [1, 7] and t.neighbors(3) == [2, 4]
    assert T.build_topology("star", 5).neighbors(0) == [1, 2, 3, 4]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.n = 3
    with pytest.raises(ValueError):
        t.W[0, 0] = 2.0


def test_schedule_static_is_build_topology() -> None:
    s = T.TopologySchedule("erdos_renyi", 12, change_every=0, seed=4, p=0.4)
    ref = T.build_topology("erdos_renyi", 12, p=0.4, seed=4)
    assert all(np.array_equal(s.at(r).edges, ref.edges) for r in (0, 1, 17, 1000))


@pytest.mark.parametrize("kind", ["erdos_renyi", "ring", "torus", "star"])
def test_schedule_deterministic_and_resumable(kind: str) -> None:
    rounds = [0, 1, 2, 3, 5, 8, 9, 14, 30, 31]
    fwd = T.TopologySchedule(kind, 12, change_every=3, seed=11, p=0.4)
    seen = {r: fwd.at(r) for r in rounds}
    back = T.TopologySchedule(kind, 12, change_every=3, seed=11, p=0.4)  # "resumed" run
    for r in reversed(rounds):
        assert np.array_equal(back.at(r).edges, seen[r].edges)
        assert np.array_equal(back.at(r).W.toarray(), seen[r].W.toarray())
        check_edges(seen[r])
        check_mixing(seen[r])
    assert np.array_equal(seen[0].edges, seen[2].edges)  # same period, same graph
    periods = {tuple(map(tuple, seen[r].edges.tolist())) for r in rounds}
    assert len(periods) >= (2 if kind == "star" else 4)  # it changes (a star has n hubs only)
    if kind == "erdos_renyi":  # period k is a pure function of SeedSequence([seed, k])
        ref = T.build_topology(kind, 12, p=0.4, seed=np.random.SeedSequence([11, 3]))
        assert np.array_equal(seen[9].edges, ref.edges)
    else:  # a relabeled copy: same degree multiset and spectrum
        static = T.build_topology(kind, 12)
        assert sorted(seen[14].degrees) == sorted(static.degrees)
        assert np.allclose(np.linalg.eigvalsh(seen[14].W.toarray()), np.linalg.eigvalsh(static.W.toarray()))


def test_schedule_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="change_every"):
        T.TopologySchedule("ring", 4, change_every=-1)
    with pytest.raises(ConfigError, match="fixed matrix"):
        T.TopologySchedule("ring", 2, change_every=2, weights=np.full((2, 2), 0.5))
    with pytest.raises(ValueError):
        T.TopologySchedule("ring", 4).at(-1)


def test_mix_reference() -> None:
    t = T.build_topology("torus", 9)
    X = np.arange(27.0).reshape(9, 3)
    assert np.array_equal(T.mix_reference(t.W, X), t.W @ X)
    with pytest.raises(ValueError, match="9 rows"):
        T.mix_reference(t.W, X[:5])


def test_block_owner() -> None:
    # the engine's dealing (data.base.contiguous_block): rank r owns [r*n//size, (r+1)*n//size)
    assert T.block_owner(10, 3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    from fedmtl_hpc.data.base import contiguous_block
    for n, size in [(300, 8), (7, 7), (10, 4), (65, 8)]:
        assert T.block_owner(n, size).tolist() == [r for r in range(size)
                                                   for _ in contiguous_block(n, size, r)]


@pytest.mark.parametrize("kind,n", [("ring", 16), ("torus", 16), ("erdos_renyi", 17),
                                    ("star", 9), ("complete", 5), ("ring", 1)])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 6])
def test_local_blocks_reproduce_global_mix(kind: str, n: int, size: int) -> None:
    t = T.build_topology(kind, n, p=0.3, seed=2)
    owner = T.block_owner(n, size)
    blocks = T.local_blocks(t.W, owner, size=size)
    X = np.random.default_rng(1).normal(size=(n, 4))
    W_back, Y = np.zeros((n, n)), np.zeros_like(X)
    for b in blocks:
        assert np.array_equal(b.nodes, np.flatnonzero(owner == b.rank))
        received = {}
        for q, ids in b.recv.items():  # the message rank q sends us, from q's own view
            assert np.array_equal(blocks[q].send[b.rank], ids) and np.all(owner[ids] == q)
            assert np.all((b.W_remote[q].toarray() != 0).any(axis=0))  # nothing received goes unused
            received[q] = X[blocks[q].send[b.rank]]
            W_back[np.ix_(b.nodes, ids)] = b.W_remote[q].toarray()
        assert set(b.send) == {q for q in range(size) if b.rank in blocks[q].recv}
        W_back[np.ix_(b.nodes, b.nodes)] = b.W_local.toarray()
        Y[b.nodes] = b.mix(X[b.nodes], received)
    assert np.array_equal(W_back, t.W.toarray())  # blocks hold every non-zero of W exactly once
    dense = T.local_blocks(t.W.toarray(), owner, size=size)  # a dense W gives the same blocks
    assert all((a.W_local != d.W_local).nnz == 0 and a.recv.keys() == d.recv.keys() for a, d in zip(blocks, dense))
    assert np.allclose(Y, t.W @ X, rtol=0, atol=1e-13)


def test_local_blocks_send_only_cross_rank_edges() -> None:
    blocks = T.local_blocks(T.build_topology("ring", 16).W, T.block_owner(16, 4))
    assert {q: v.tolist() for q, v in blocks[1].recv.items()} == {0: [3], 2: [8]}
    assert {q: v.tolist() for q, v in blocks[0].send.items()} == {1: [3], 3: [0]}
    with pytest.raises(ValueError, match="non-decreasing"):
        T.local_blocks(np.eye(3), np.array([0, 1, 0]))


def read_png(data: bytes) -> np.ndarray:
    """Decode a PNG (signature checked) with matplotlib; uint8 RGB ``[h, w, 3]``."""
    import io

    import matplotlib.image as mpimg
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(io.BytesIO(data), format="png")
    return np.round(img[..., :3] * 255).astype(np.uint8)


def test_draw_png_writes_a_matplotlib_picture(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    path = T.draw_png(T.build_topology("ring", 8), tmp_path / "ring.png", size=400)
    img = read_png(path.read_bytes())
    assert img.shape == (400, 400, 3)
    nonwhite = np.any(img != 255, axis=2)
    assert 2000 < nonwhite.sum() < 0.5 * 400 * 400
    assert np.all(img[185:215, 185:215] == 255)  # ring: nothing drawn at the centre
    node0 = img[:200, 150:250].reshape(-1, 3)  # node 0 sits at the top centre, in the first colour
    assert np.any(np.all(node0 == (31, 119, 180), axis=1))
    assert not list(tmp_path.glob(".ring.png.tmp*"))
    # degrees that differ get a colour bar; a big graph still draws
    T.draw_png(T.build_topology("star", 40), tmp_path / "star.png")
    assert read_png((tmp_path / "star.png").read_bytes()).shape == (512, 512, 3)


# -- issue 3 additions: the user edge-list kind at every size, uniform weights at the extremes,
# -- user matrix files (every error names file and line), and the config entry point.

@pytest.mark.parametrize("n", [1, 2, 3, 64])
def test_edge_list_kind_gives_valid_w_at_every_size(tmp_path, n: int) -> None:
    """kind 'edges': a random spanning tree plus chords, written with repeats and both directions."""
    rng = np.random.default_rng(n)
    pairs = [(int(rng.integers(0, i)), i) for i in range(1, n)]
    pairs += [(int(a), int(b)) for a, b in rng.integers(0, n, size=(n, 2)) if a != b]
    lines = [f"{j} {i}  # reversed" if k % 3 == 0 else f"{i} {j}" for k, (i, j) in enumerate(pairs + pairs[:2])]
    f = tmp_path / "g.txt"
    f.write_text("# user graph\n" + "\n".join(lines) + "\n")
    t = T.build_topology("edges", n, file=f)
    check_edges(t)
    check_mixing(t)
    assert t.kind == "edges" and len(t.edges) == len({tuple(sorted(p)) for p in pairs})
    assert (t.spectral_gap > 0) == (n > 1) or n == 1


@pytest.mark.parametrize("kind,n", [("ring", 1), ("ring", 64), ("complete", 1), ("complete", 3),
                                    ("complete", 64), ("torus", 1), ("torus", 2)])
def test_uniform_weights_at_extreme_sizes(kind: str, n: int) -> None:
    t = T.build_topology(kind, n, weights="uniform")
    check_mixing(t)


def _matrix_file(tmp_path, rows: list[str], name: str = "w.txt"):
    f = tmp_path / name
    f.write_text("# a user mixing matrix\n" + "\n".join(rows) + "\n")
    return f


def test_matrix_file_accepted_with_fractions(tmp_path) -> None:
    f = _matrix_file(tmp_path, ["1/2 1/4 0 1/4", "0.25 0.5 0.25 0  # decimals too", "", "0 1/4 1/2 1/4",
                                "1/4 0 1/4 1/2"])
    t = T.build_topology("ring", 4, weights=str(f))
    lazy = 0.5 * np.eye(4) + 0.25 * (np.roll(np.eye(4), 1, 0) + np.roll(np.eye(4), -1, 0))
    assert isinstance(T.read_matrix_file(f, 4), sp.csr_array)
    assert np.array_equal(t.W.toarray(), lazy) and t.spectral_gap == pytest.approx(0.5)


@pytest.mark.parametrize("rows,line,what", [
    (["1/2 1/2 0", "1/2 1/2", "0 0 1"], 3, "expecting 3 numbers"),
    (["1/2 1/2 0", "1/2 x 0", "0 0 1"], 3, "expecting 3 numbers like"),
    (["1.2 -0.2 0", "-0.2 1.2 0", "0 0 1"], 2, "non-negative"),
    (["0.5 0.4 0", "0.4 0.6 0", "0 0 1"], 2, "not doubly stochastic, row 0 sums to 0.9"),
    (["0.5 0.5 0", "0.3 0.4 0.3", "0 0.3 0.7"], 2, "not symmetric, W.0,1. = 0.5"),
    (["0 1 0", "1 0 0", "0 0 1"], 2, "self-weight W.0,0. must be positive"),
    (["0.5 0 0.5", "0 1 0", "0.5 0 0.5"], 2, "not an edge of the graph"),
    (["1 0 0", "0 1 0", "0 0 1", "1 0 0"], 5, "more than n = 3 rows"),
])
def test_matrix_file_errors_name_file_and_line(tmp_path, rows, line: int, what: str) -> None:
    """Path graph 0-1-2 (edges file), so W[0,2] is off the edges; line 1 is the comment."""
    edges = tmp_path / "path.txt"
    edges.write_text("0 1\n1 2\n")
    f = _matrix_file(tmp_path, rows, "bad_w.txt")
    with pytest.raises(ConfigError, match=rf"topology.weights '.*bad_w\.txt' line {line}: .*{what}"):
        T.build_topology("edges", 3, file=edges, weights=str(f))


def test_matrix_file_short_missing_or_disconnecting(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"bad_w\.txt': expecting 3 rows.*got 2"):
        T.build_topology("ring", 3, weights=str(_matrix_file(tmp_path, ["1 0 0", "0 1 0"], "bad_w.txt")))
    with pytest.raises(ConfigError, match="topology.weights must be one of metropolis, uniform or the path"):
        T.build_topology("ring", 3, weights=str(tmp_path / "nope.txt"))
    ident = _matrix_file(tmp_path, ["1 0 0", "0 1 0", "0 0 1"])  # valid rules, but mixes nothing
    with pytest.raises(ConfigError, match="spectral gap 0.*does not connect"):
        T.build_topology("ring", 3, weights=str(ident))


def test_disconnected_edge_file_names_the_file_and_a_lost_node(tmp_path) -> None:
    f = tmp_path / "split.txt"
    f.write_text("0 1\n2 3\n")
    with pytest.raises(ConfigError, match=r"topology.file '.*split\.txt' gives a disconnected graph: .*node 2"):
        T.build_topology("edges", 4, file=f)


def test_schedule_from_config_uses_clients_as_nodes() -> None:
    from fedmtl_hpc.config import parse_config
    cfg = parse_config({"data": {"n_clients": 12}, "algorithm": {"mode": "decentralized"},
                        "topology": {"kind": "erdos_renyi", "p": 0.4, "seed": 3, "change_every": 2}})
    s = T.schedule_from_config(cfg)
    assert s.n == 12 and s.change_every == 2 and s.seed == 3
    ref = T.TopologySchedule("erdos_renyi", 12, change_every=2, seed=3, p=0.4)
    assert np.array_equal(s.at(5).edges, ref.at(5).edges)
    torus = parse_config({"data": {"n_clients": 12}, "topology": {"kind": "torus", "shape": [2, 6]}})
    assert T.schedule_from_config(torus).at(0).neighbors(0) == [1, 5, 6]


# -- issue 12: W is sparse; its parts (what a checkpoint stores) rebuild it exactly

@pytest.mark.parametrize("kind,n", [("ring", 9), ("torus", 12), ("star", 7), ("erdos_renyi", 30), ("complete", 5),
                                    ("ring", 1)])
def test_sparse_parts_round_trip_exactly(kind: str, n: int) -> None:
    t = T.build_topology(kind, n, p=0.3, seed=1)
    ew, sw = T.sparse_parts(t.W, t.edges)
    assert ew.dtype == sw.dtype == np.float64 and ew.shape == (len(t.edges),) and sw.shape == (n,)
    dense = t.W.toarray()
    assert np.array_equal(ew, dense[t.edges[:, 0], t.edges[:, 1]]) and np.array_equal(sw, np.diag(dense))
    back = T.mixing_from_parts(n, t.edges, ew, sw)
    assert isinstance(back, sp.csr_array) and (back != t.W).nnz == 0
    assert np.array_equal(back.indptr, t.W.indptr) and np.array_equal(back.indices, t.W.indices)
    for parts in (T.sparse_parts(dense, t.edges), T.sparse_parts(sp.coo_array(dense), t.edges)):
        assert all(map(np.array_equal, parts, (ew, sw)))  # a dense /topology/W (old files) reads the same
    with pytest.raises(ValueError, match="edge_weight"):
        T.mixing_from_parts(n, t.edges, ew[:-1] if len(ew) else np.ones(1), sw)


def test_a_zero_weight_edge_is_stored_as_zero_and_sends_nothing() -> None:
    """A user W may leave an edge unused: W keeps no entry, its part is 0, no rank reads across it."""
    W = np.array([[0.5, 0.5, 0, 0], [0.5, 0.25, 0.25, 0], [0, 0.25, 0.5, 0.25], [0, 0, 0.25, 0.75]])
    t = T.build_topology("ring", 4, weights=W)  # edge (0, 3) is in the ring but has weight 0
    assert t.W.nnz == 10 and t.edges.tolist() == [[0, 1], [0, 3], [1, 2], [2, 3]]
    ew, sw = T.sparse_parts(t.W, t.edges)
    assert ew.tolist() == [0.5, 0.0, 0.25, 0.25] and sw.tolist() == [0.5, 0.25, 0.5, 0.75]
    assert (T.mixing_from_parts(4, t.edges, ew, sw) != t.W).nnz == 0
    blocks = T.local_blocks(t.W, T.block_owner(4, 2), 2)
    assert {q: v.tolist() for q, v in blocks[0].recv.items()} == {1: [2]}  # not node 3 (zero weight)


def test_closed_form_gaps_equal_the_dense_eigenvalues() -> None:
    """Ring, torus (every shape: sides of 1 and 2 included), complete and star, Metropolis and uniform."""
    for n in range(1, 41):
        shapes = [(r, n // r) for r in range(1, n + 1) if n % r == 0]
        for kind, shape in [("ring", None), ("complete", None), ("star", None)] + [("torus", s) for s in shapes]:
            for weights in ("metropolis", "uniform"):
                if weights == "uniform" and kind == "star" and n > 2:
                    continue  # irregular: rejected
                t = T.build_topology(kind, n, shape=shape, weights=weights)
                want = T.spectral_gap(t.W, "dense")
                got = T.closed_form_gap(kind, n, shape)
                assert got == pytest.approx(want, rel=1e-9, abs=1e-13), (kind, n, shape, weights)
    assert T.closed_form_gap("erdos_renyi", 10) is None and T.closed_form_gap("edges", 10) is None
    with pytest.raises(ValueError, match="method"):
        T.spectral_gap(np.eye(2), "lanczos")


def test_erdos_renyi_large_draw_has_the_right_distribution() -> None:
    """Above DENSE_MAX nodes pairs are drawn by geometric skips: every pair index decodes to i < j,
    and the edge count is Binomial(n(n-1)/2, p)."""
    n, p = T.DENSE_MAX + 500, 0.004
    e = T.erdos_renyi_edges(n, p, np.random.default_rng(3))
    assert e.dtype == np.int64 and np.all(e[:, 0] < e[:, 1]) and e.max() < n and T.is_connected(n, e)
    pairs = n * (n - 1) / 2
    assert abs(len(e) - p * pairs) < 5 * np.sqrt(pairs * p * (1 - p))
    from fedmtl_hpc.comm.topology import _pairs_skipping
    every = _pairs_skipping(30, 1.0, np.random.default_rng(0))  # p = 1: all pairs, in row-major order
    assert every.tolist() == np.stack(np.triu_indices(30, 1), axis=1).tolist()
