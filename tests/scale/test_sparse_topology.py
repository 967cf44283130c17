"""Decentralized mode at 10^4-10^5 clients (issue 12): W is a sparse csr_array built in O(E), the
spectral gap needs no dense eigendecomposition, and nothing on the path allocates n x n."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from fedmtl_hpc.comm import topology as T
from tests.conftest import MPIEXEC, REPO, fedmtl, small_config, write_config

BIG = 100_000
ER_P = 16 / BIG  # mean degree 16: connected w.h.p. (ln n = 11.5; at degree 8 about 34 nodes are isolated)
DENSE_BYTES = BIG * BIG * 8  # what one dense W would take: 80 GB


_BUILT: dict[str, T.Topology] = {}  # each 10^5-node graph built once per session


def big(kind: str) -> T.Topology:
    if kind not in _BUILT:
        _BUILT[kind] = T.build_topology(kind, BIG, p=ER_P)
    return _BUILT[kind]


def check_sparse_mixing(t: T.Topology) -> None:
    """Every rule of a mixing matrix, checked on the sparse W (O(E)): symmetric, doubly stochastic,
    positive on exactly the edges and the diagonal, and rebuilt exactly from its stored parts."""
    W, n, e = t.W, t.n, t.edges
    assert isinstance(W, sp.csr_array) and W.shape == (n, n) and W.dtype == np.float64 and W.has_canonical_format
    assert (W != W.T).nnz == 0
    tol = 1e-12 + 1e-16 * t.degrees.max()  # scipy's sum is a running sum: the star's hub adds 10^5 terms
    assert np.abs(W.sum(axis=0) - 1).max() <= tol and np.abs(W.sum(axis=1) - 1).max() <= tol
    ew, sw = T.sparse_parts(W, e)
    assert ew.min(initial=1) > 0 and sw.min() > 0 and W.data.min() > 0
    assert W.nnz == 2 * len(e) + n  # so the support is exactly edges + diagonal
    assert (T.mixing_from_parts(n, e, ew, sw) != W).nnz == 0
    assert np.array_equal(t.degrees, np.bincount(e.ravel(), minlength=n))
    assert 0.0 < t.spectral_gap <= 1.0


@pytest.mark.parametrize("kind", ["ring", "erdos_renyi"])
def test_100k_node_graph_builds_in_seconds_without_a_dense_array(kind):
    tracemalloc.start()
    t0 = time.perf_counter()
    t = T.build_topology(kind, BIG, p=ER_P)  # graph, connectivity, sparse W, spectral gap
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    _BUILT.setdefault(kind, t)
    print(f"{kind} {BIG}: {len(t.edges)} edges, gap {t.spectral_gap:.4g}, {seconds:.2f} s, "
          f"peak {peak / 2**20:.0f} MiB traced")
    assert peak < DENSE_BYTES / 200  # 400 MB; measured 17 MiB (ring), 102 MiB (erdos_renyi)
    assert seconds < 30  # measured 0.04 s and 1.4 s on 2 loaded cores
    check_sparse_mixing(t)


@pytest.mark.parametrize("kind,n,weights", [
    ("ring", 300, "metropolis"), ("torus", 300, "uniform"), ("complete", 40, "metropolis"), ("star", 300, "metropolis"),
    ("erdos_renyi", 300, "metropolis"),
    ("ring", BIG, "metropolis"), ("torus", BIG, "metropolis"), ("star", BIG, "metropolis"),
    ("erdos_renyi", BIG, "metropolis"), ("ring", BIG, "uniform"), ("torus", BIG, "uniform"),
    ("complete", T.DENSE_MAX + 1, "metropolis"),
])
def test_every_kind_is_doubly_stochastic_and_symmetric_at_small_and_large_n(kind, n, weights):
    t = big(kind) if n == BIG and weights == "metropolis" else T.build_topology(kind, n, p=ER_P if n == BIG else 0.05,
                                                                               weights=weights)
    check_sparse_mixing(t)
    if kind in ("ring", "torus", "complete", "star"):  # the gap in use: dense, or the closed form above DENSE_MAX
        shape = T.torus_shape(n) if kind == "torus" else None
        assert t.spectral_gap == pytest.approx(T.closed_form_gap(kind, n, shape), rel=1e-9)


def test_time_varying_relabeling_at_100k_stays_sparse():
    s = T.TopologySchedule("torus", BIG, change_every=1, seed=3)
    a, b = s.at(0), s.at(1)
    check_sparse_mixing(b)
    assert not np.array_equal(a.edges, b.edges) and b.spectral_gap == a.spectral_gap
    assert sorted(b.W.data.tolist()) == sorted(a.W.data.tolist())


def _user_lazy_ring(n: int, eps: float) -> sp.csr_array:
    """W_ii = eps, W_i,i+1 = (1 - eps) / 2: for tiny eps on an even ring |lambda_min| = 1 - 2 eps is
    the second largest |eigenvalue|, at the clustered bottom end of the spectrum."""
    return T.mixing_from_parts(n, T.ring_edges(n), np.full(n, (1 - eps) / 2), np.full(n, eps))


MODERATE = {
    "ring": lambda: T.metropolis_weights(1000, T.ring_edges(1000)),
    "torus": lambda: T.metropolis_weights(1200, T.torus_edges(1200)),
    "path": lambda: T.metropolis_weights(700, np.stack([np.arange(699), np.arange(1, 700)], axis=1)),
    "star": lambda: T.metropolis_weights(600, T.star_edges(600)),
    "erdos_renyi": lambda: T.metropolis_weights(800, T.erdos_renyi_edges(800, 0.02, np.random.default_rng(1))),
    "lazy ring, bottom end": lambda: _user_lazy_ring(1000, 1e-7),
}


@pytest.mark.parametrize("name", list(MODERATE))
def test_sparse_gap_equals_the_dense_eigenvalues(name):
    """ARPACK (expanders) and shift-invert (rings, paths, grids; both ends) against eigvalsh."""
    W = MODERATE[name]()
    dense = T.spectral_gap(W, "dense")
    assert T.spectral_gap(W, "sparse") == pytest.approx(dense, rel=1e-6), name


@pytest.mark.parametrize("kind", ["ring", "torus"])
def test_sparse_gap_equals_the_closed_form_at_100k(kind):
    t0 = time.perf_counter()
    got = T.spectral_gap(big(kind).W, "sparse")  # the numeric path the closed forms spare these kinds
    seconds = time.perf_counter() - t0
    assert got == pytest.approx(big(kind).spectral_gap, rel=1e-6)
    assert seconds < 60, f"{kind}: {seconds:.1f} s"  # measured 1.3 s (ring), 2.7 s (torus) on 2 loaded cores
    print(f"{kind} {BIG}: numeric gap {got:.6g} in {seconds:.2f} s (closed form {big(kind).spectral_gap:.6g})")


def test_topology_command_at_100k_nodes(tmp_path):
    p = fedmtl(["topology", str(REPO / "configs" / "synthetic_dfedem.yaml"), "--set", f"data.n_clients={BIG}",
                "--set", "topology.kind=erdos_renyi", "--set", f"topology.p={ER_P}", "--ranks", "4",
                "--json", str(tmp_path / "g.json"), "--png", str(tmp_path / "g.png")], check=True, timeout=300)
    t = big("erdos_renyi")  # topology.seed 7, as the config
    assert f"nodes {BIG} (clients), edges {len(t.edges)}" in p.stdout
    assert f"spectral gap {t.spectral_gap:.6g}" in p.stdout and "degree per node" not in p.stdout
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["nodes"] == BIG and doc["edges"] == len(t.edges) and doc["w_nonzeros"] == 2 * len(t.edges) + BIG
    assert doc["spectral_gap"] == t.spectral_gap and doc["build_seconds"] < 60 and len(doc["ranks"]) == 4
    owner = T.block_owner(BIG, 4)
    cross = int(np.sum(owner[t.edges[:, 0]] != owner[t.edges[:, 1]]))
    assert sum(r["sends_rows"] for r in doc["ranks"]) <= 2 * cross and doc["ranks"][3]["clients"] == [75000, 99999]
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"topology command, {BIG} nodes: built in {doc['build_seconds']:.2f} s")


_VMHWM = ("import atexit, sys\n"
          "atexit.register(lambda: sys.stderr.write('VMHWM_KB ' + [x.split()[1] for x in open('/proc/self/status')"
          " if x.startswith('VmHWM')][0] + '\\n'))\n"
          "from fedmtl_hpc.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


@pytest.mark.mpi
def test_decentralized_run_of_50k_clients_on_two_ranks_stores_the_graph_sparsely(tmp_path):
    """50,000 tiny synthetic clients on an Erdos-Renyi graph (mean degree 16), one round, 2 ranks:
    the sparse halo product, the ARPACK gap, and a checkpoint with /topology as edges + weights."""
    n = 50_000
    cfg = small_config(algorithm={"mode": "decentralized"},
                       data={"n_clients": n, "unseen_clients": 0, "dim": 4, "min_train": 4, "max_train": 8,
                             "test_per_client": 4},
                       run={"rounds": 1, "eval_every": 1, "eval_clients": 500}, train={"participation": 0.02},
                       checkpoint={"every": 1, "keep": 1}, topology={"kind": "erdos_renyi", "p": 16 / n})
    path = write_config(tmp_path / "big.yaml", cfg)
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-c", _VMHWM, "run", str(path), "--run-dir", str(tmp_path / "r")]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(REPO),
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.time() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    hwm = [int(line.split()[1]) for line in p.stderr.splitlines() if line.startswith("VMHWM_KB")]
    assert len(hwm) == 2 and max(hwm) < 1_500_000, hwm  # measured ~440 MB per rank; a dense W: 20 GB
    assert f"decentralized: erdos_renyi over {n} clients" in p.stdout
    ckpt = sorted((tmp_path / "r" / "checkpoints").glob("ckpt-*.h5"))[-1]
    with h5py.File(ckpt) as f:
        t = f["topology"]
        assert "W" not in t and t.attrs["n_nodes"] == n
        edges, ew, sw = t["edges"][()], t["edge_weight"][()], t["self_weight"][()]
        gap = float(t.attrs["spectral_gap"])
    ref = T.build_topology("erdos_renyi", n, p=16 / n, seed=7)
    assert np.array_equal(edges, ref.edges) and gap == pytest.approx(ref.spectral_gap, rel=1e-9)
    assert all(map(np.array_equal, T.sparse_parts(ref.W, ref.edges), (ew, sw)))
    print(f"decentralized {n} clients, 2 ranks: {wall:.1f} s wall, VmHWM {hwm} kB, {len(edges)} edges")
