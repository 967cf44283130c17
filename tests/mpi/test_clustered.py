"""Clustered FL under real ``mpiexec``: planted groups, rank-count invariance, resume across a split.

The planted-group runs need a dataset no config describes (two client groups whose labels are
flipped relative to each other), so this module is also a script: under ``mpiexec`` it builds
engines in-process over ``MPIComm`` and prints one JSON line per run from rank 0::

    mpiexec -n 2 python -m tests.mpi.test_clustered '[{"algorithm": "clustered", ...}]'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import MPIEXEC, REPO

pytestmark = pytest.mark.mpi
N_CLIENTS = 16


# -- the script ---------------------------------------------------------------------------
def flipped(base):
    """``base`` (a one-component synthetic mixture) with y -> 1 - y for the second half of the
    training clients (and for every other unseen client): two tasks, one true model up to a flip."""
    from fedmtl_hpc.data.base import ClientData

    class Flipped:
        n_clients, n_unseen = base.n_clients, base.n_unseen
        input_shape, n_classes = base.input_shape, base.n_classes

        @staticmethod
        def group(cid):
            n = base.n_clients
            return int(cid >= n // 2) if cid < n else (cid - n) % 2

        def client(self, cid):
            d = base.client(cid)
            if self.group(cid):
                d = ClientData(cid, d.x_train, 1 - d.y_train, d.x_test, 1 - d.y_test)
            return d

        def partition_info(self):
            return {**base.partition_info(), "kind": "synthetic-flipped"}

    return Flipped()


def planted_run(comm, algorithm: str, rounds: int = 20, participation: float = 1.0, **params) -> dict:
    import torch
    from fedmtl_hpc.config import parse_config
    from fedmtl_hpc.data.synthetic import SyntheticMixture
    from fedmtl_hpc.engine import build_engine
    from fedmtl_hpc.models import build_model
    from fedmtl_hpc.params import FlatModel
    section = {algorithm: params} if params else {}
    cfg = parse_config({
        "run": {"seed": 7, "rounds": rounds, "eval_every": rounds},
        "data": {"n_clients": N_CLIENTS, "unseen_clients": 4, "dim": 10, "n_components": 1,
                 "min_train": 40, "max_train": 150, "test_per_client": 100},
        "model": {"name": "linear"},
        "algorithm": {"name": algorithm, **section},
        "train": {"lr": 3.0, "batch_size": 32, "local_epochs": 1, "participation": participation},
        "checkpoint": {"every": 0}})
    ds = flipped(SyntheticMixture(cfg.data, cfg.run.seed))
    fac = lambda: build_model("linear", ds.input_shape, 2)  # noqa: E731
    engine = build_engine(cfg, comm, ds, FlatModel(fac()), fac, torch.device("cpu"))
    engine.before_training()
    losses, clusters = [], []
    for _ in range(rounds):
        stats = engine.step()
        losses.append(stats.train_loss)
        clusters.append(stats.extra.get("n_clusters", 1.0))
    ev = {k: v for k, v in engine.evaluate().items() if not k.startswith("_")}
    algo = engine.algo
    return {"algorithm": algorithm, **ev, "train_loss": losses, "n_clusters": clusters,
            "cluster_of": getattr(algo, "cluster_of", np.zeros(N_CLIENTS, np.int64)).tolist(),
            "shared": engine.shared.double().numpy().tolist(), "bytes": stats.bytes_exchanged}


def main(runs: list[dict]) -> None:
    from fedmtl_hpc.comm.mpi import MPIComm
    comm = MPIComm()
    for spec in runs:
        out = planted_run(comm, **spec)
        if comm.rank == 0:
            print(json.dumps({**out, "size": comm.size}), flush=True)
    comm.barrier()


# -- the tests ------------------------------------------------------------------------------
PLANTED = [{"algorithm": "clustered", "split_from": 3},
           {"algorithm": "clustered", "split_from": 3, "participation": 0.75, "sketch_dim": 16},
           {"algorithm": "clustered", "split_from": 3, "participation": 0.75},
           {"algorithm": "fedavg"}]
GROUPS = [0] * (N_CLIENTS // 2) + [1] * (N_CLIENTS // 2)


def launch(n: int, runs: list[dict]) -> list[dict]:
    import os
    import subprocess
    cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "tests.mpi.test_clustered", json.dumps(runs)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, f"{cmd}\n{p.stdout}\n{p.stderr}"
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def planted():
    return {n: launch(n, PLANTED) for n in (1, 2, 4)}


def test_planted_groups_are_found_and_clustered_beats_fedavg(planted):
    exact, sketched, partial, fedavg = planted[2]
    # every client ends in its group's cluster: one split at split_from (round index 3), no further one
    assert exact["cluster_of"] == GROUPS, exact["cluster_of"]
    assert exact["n_clusters"] == [1.0] * 3 + [2.0] * 17
    # 3/4 participation: a cluster may split again inside a group (noisier updates), never across groups;
    # sketched cosines (16 numbers per client instead of 22) take the same decisions as exact ones here
    assert sketched["cluster_of"] == partial["cluster_of"] and sketched["n_clusters"] == partial["n_clusters"]
    ids = np.array(sketched["cluster_of"])
    assert len(set(ids[:N_CLIENTS // 2]) & set(ids[N_CLIENTS // 2:])) == 0 and sketched["n_clusters"][-1] >= 2
    # labels flipped between the groups: no single model fits both, a model per group does
    assert fedavg["test_acc_mean"] < 0.6
    for run in (exact, sketched):
        assert run["test_acc_mean"] >= fedavg["test_acc_mean"] + 0.10, (run["test_acc_mean"], fedavg)
        assert run["test_acc_mean"] > 0.9 and run["test_acc_unseen"] > 0.85
    # bytes per round: (C P + C + N D + N [+ N] + 3) * 8 * ranks, P = 10 * 2 + 2
    p, n, c = 22, N_CLIENTS, int(sketched["n_clusters"][-1])
    assert exact["bytes"] == (2 * p + 2 + n * p + n + 3) * 8 * 2
    assert sketched["bytes"] == (c * p + c + n * 16 + 2 * n + 3) * 8 * 2


@pytest.mark.parametrize("i", range(len(PLANTED)), ids=[f"{r['algorithm']}{i}" for i, r in enumerate(PLANTED)])
def test_one_two_four_ranks_agree(planted, i):
    ref = planted[1][i]
    for n in (2, 4):
        got = planted[n][i]
        assert got["size"] == n and got["cluster_of"] == ref["cluster_of"]
        assert got["n_clusters"] == ref["n_clusters"]
        for k in ("test_acc_mean", "test_acc_weighted", "test_acc_p10", "test_acc_unseen", "train_loss", "shared"):
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-5, err_msg=f"{k} at {n} ranks")


def test_stop_and_resume_across_a_split_equals_uninterrupted_run(tmp_path, cfg_file):
    import h5py

    from fedmtl_hpc import checkpoint as ck
    from tests.conftest import fedmtl
    from tests.mpi.test_runs import DETERMINISTIC, final_ckpt, metrics, sha
    cfg = cfg_file(train={"participation": 0.5, "momentum": 0.5})
    raw = __import__("yaml").safe_load(cfg.read_text())
    # eps that force a split in every eligible cluster from round index 2 on, up to 4 clusters
    raw["algorithm"] = {"name": "clustered", "clustered": {"split_from": 2, "eps1": 1e9, "eps2": 0.0,
                                                           "max_clusters": 4}}
    cfg.write_text(__import__("yaml").safe_dump(raw))
    fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "full")], n=2, check=True)
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "cut"), "--set", "run.stop_after=3"], n=2)
    assert p.returncode == 3, p.stderr
    cut = final_ckpt(tmp_path / "cut")
    assert Path(cut).name == "ckpt-000003.h5"
    with h5py.File(cut) as f:
        c_cut = f["global/params"].shape[0]
        assert f["algorithm"].attrs["n_clusters"] == c_cut and f["algorithm/cluster_id"].shape == (24,)
    fedmtl(["resume", str(tmp_path / "cut"), "--set", "run.stop_after=0"], n=2, check=True)
    with h5py.File(final_ckpt(tmp_path / "full")) as f:
        c_full = f["global/params"].shape[0]
        ids = f["algorithm/cluster_id"][()]
    assert 2 <= c_cut < c_full == 4 and sorted(set(ids.tolist())) == [0, 1, 2, 3]  # splits before and after
    assert sha(final_ckpt(tmp_path / "full")) == sha(final_ckpt(tmp_path / "cut"))
    assert ck.verify(final_ckpt(tmp_path / "cut"))["n_shared"] == 4
    ma, mb = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    for k in (*DETERMINISTIC, "n_clusters"):
        assert np.array_equal(ma[k], mb[k]), k
    assert ma["n_clusters"].tolist() == [1.0, 3.0, 4.0]   # eval_every 2: after rounds 2, 4, 6


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
