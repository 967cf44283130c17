"""Decentralized mode end to end under real ``mpiexec``: accuracy against client-server,
rank-count agreement, exact resume (static and time-varying graphs), a stop signal on one
rank, and bad topology input."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from fedmtl_hpc import checkpoint as ck
from tests.conftest import REPO, fedmtl, running_job, small_config, write_config
from tests.mpi.test_runs import DETERMINISTIC, final_ckpt, metrics, sha

pytestmark = pytest.mark.mpi
DEC = {"algorithm": {"mode": "decentralized"}}


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_dfedem_and_dsgd_match_client_server_on_a_ring_of_8_ranks(tmp_path):
    """Issue test 4. "A ring of 8 ranks" read literally: 8 clients, one per rank, so the graph is
    a ring over the 8 ranks and every edge is an MPI message. A ring over many clients per rank
    would test the graph, not the method: on the default 300 clients a ring has spectral gap
    1.5e-4 and D-FedEM stays at 69% against FedEM's 84% after 100 rounds (configs/ notes this).
    Clients get 400+ train samples so FedEM is near its plateau (82% vs oracle 86%) in 150 rounds.
    Same total local updates: full participation, same rounds, epochs, batch size and per-client
    RNG streams in both modes, so every client takes the same SGD steps; only the exchange
    differs. Client-server baselines run on 2 ranks (their result does not depend on the
    rank count, tests/mpi/test_runs.py). Measured: FedEM 82.1 / D-FedEM 80.2, FedAvg 68.8 / D-SGD 67.3
    (oracle 85.8); seeds 1 and 2 gave gaps of -0.2 and 1.6 points for FedEM.
    """
    base = yaml.safe_load((REPO / "configs" / "synthetic_fedem.yaml").read_text())
    base["data"].update(n_clients=8, unseen_clients=0, min_train=400)
    base["run"].update(rounds=150, eval_every=150)
    base["checkpoint"].update(every=0)
    cfg = write_config(tmp_path / "cfg.yaml", base)
    acc = {}
    for algo in ("fedem", "fedavg"):
        for mode, ranks in (("client-server", 2), ("decentralized", 8)):
            d = tmp_path / f"{algo}-{mode}"
            p = fedmtl(["run", str(cfg), "--run-dir", str(d), "--set", f"algorithm.name={algo}",
                        "--set", f"algorithm.mode={mode}"], n=ranks, check=True)
            s = summary(d)
            assert s["world_size"] == ranks and s["round"] == 150
            if mode == "decentralized":
                assert "decentralized: ring over 8 clients" in p.stdout
                assert s["consensus_distance"] >= 0.0
            acc[algo, mode] = s["test_acc_mean"]
    assert acc["fedem", "decentralized"] >= acc["fedem", "client-server"] - 0.03, acc
    assert acc["fedavg", "decentralized"] >= acc["fedavg", "client-server"] - 0.03, acc
    # the multi-task gain survives decentralization (so "within 3 points" is not trivial)
    assert acc["fedem", "decentralized"] >= acc["fedavg", "decentralized"] + 0.05, acc


def test_one_and_four_ranks_agree(tmp_path, cfg_file):
    """The same graph over clients, dealt to 1 or 4 ranks: the same run up to float32 rounding
    (the GEMM's summation order depends on which rows are local)."""
    cfg = cfg_file(**DEC, train={"participation": 0.5}, topology={"kind": "torus"})
    runs = {}
    for n in (1, 4):
        fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / f"n{n}")], n=n, check=True)
        runs[n] = metrics(tmp_path / f"n{n}")
        with h5py.File(final_ckpt(tmp_path / f"n{n}")) as f:
            runs[n]["components"] = f["clients/state/components"][()]
            runs[n]["edges"] = f["topology/edges"][()]
    for k in (*DETERMINISTIC, "consensus_distance", "components", "edges"):
        np.testing.assert_allclose(runs[4][k], runs[1][k], rtol=0, atol=1e-4, err_msg=k)


@pytest.mark.parametrize("ranks,topology", [
    (4, {"kind": "ring"}),
    (3, {"kind": "erdos_renyi", "p": 0.3, "change_every": 2}),  # the stop (round 3) falls mid-period
], ids=["ring-static", "erdos-renyi-time-varying"])
def test_stop_and_resume_equals_uninterrupted_run(tmp_path, cfg_file, ranks, topology):
    """Issue test 5: exit 3 after round 3, resume, and the final checkpoint is the same file."""
    cfg = cfg_file(**DEC, topology=topology, train={"participation": 0.5, "momentum": 0.5})
    fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "full")], n=ranks, check=True)
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "cut"), "--set", "run.stop_after=3"], n=ranks)
    assert p.returncode == 3, p.stderr
    assert Path(final_ckpt(tmp_path / "cut")).name == "ckpt-000003.h5"
    fedmtl(["resume", str(tmp_path / "cut"), "--set", "run.stop_after=0"], n=ranks, check=True)
    assert sha(final_ckpt(tmp_path / "full")) == sha(final_ckpt(tmp_path / "cut"))
    ma, mb = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    for k in (*DETERMINISTIC, "consensus_distance", "bytes_exchanged"):
        assert np.array_equal(ma[k], mb[k]), k
    with h5py.File(final_ckpt(tmp_path / "full")) as f:
        t = f["topology"].attrs
        assert t["next_round"] == 6 and t["graph_round"] == 5 and "stateless" in t["schedule"]
        assert f.attrs["mode"] == "decentralized" and "W" not in f["topology"]  # sparse: edges + weights
        edges = f["topology/edges"][()]
        assert f["topology/edge_weight"].shape == (len(edges),) and f["topology/self_weight"].shape == (24,)
        assert t["change_every"] == topology.get("change_every", 0)


def test_a_signal_to_one_rank_stops_every_rank_in_the_same_round(tmp_path, cfg_file):
    """SIGUSR1 to one rank only: the request rides the neighbour exchange (no global collective),
    all ranks stop after the same round, checkpoint it, exit 3; resume then finishes."""
    cfg = cfg_file(**DEC, run={"rounds": 100000, "eval_every": 100000}, checkpoint={"every": 5, "keep": 2})
    run_dir = tmp_path / "sig"
    with running_job(cfg, run_dir, 4) as (proc, pids):
        os.kill(pids[2], signal.SIGUSR1)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (out, err)
    stopped = int(out.split("stopped by signal after round ")[1].split(";")[0])
    newest = ck.newest_valid(str(run_dir / "checkpoints"))
    assert Path(newest).name == f"ckpt-{stopped:06d}.h5" and ck.verify(newest)["round"] == stopped
    p = fedmtl(["resume", str(run_dir), "--set", f"run.rounds={stopped + 2}"], n=4, check=True)
    assert f"resumed from {newest} at round {stopped}" in p.stdout and summary(run_dir)["round"] == stopped + 2


def _edges(tmp_path, body: str) -> str:
    f = tmp_path / "graph.txt"
    f.write_text(body)
    return str(f)


def _ring_matrix_off_by(tmp_path, n: int, eps: float) -> str:
    W = (np.eye(n) + np.roll(np.eye(n), 1, 0) + np.roll(np.eye(n), -1, 0)) / 3
    W[5, 5] += eps  # row 5 no longer sums to 1
    f = tmp_path / "mixing.txt"
    f.write_text("# ring of 24, Metropolis weights by hand\n" + "\n".join(" ".join(f"{v:.17g}" for v in r) for r in W))
    return str(f)


BAD = {
    # name: (topology settings, file name, line or None, text)
    "disconnected": (lambda t: {"kind": "edges", "file": _edges(t, "".join(f"{i} {i + 1}\n" for i in range(22)))},
                     "graph.txt", None, "disconnected graph: no path joins node 23"),
    "self-loop": (lambda t: {"kind": "edges", "file": _edges(t, "0 1\n# c\n4 4\n")}, "graph.txt", 3, "self-loop"),
    "out of range": (lambda t: {"kind": "edges", "file": _edges(t, "0 1\n1 24\n")}, "graph.txt", 2, "out of range"),
    "malformed line": (lambda t: {"kind": "edges", "file": _edges(t, "0 1\n1 2\n2 three\n")}, "graph.txt", 3,
                       "expecting two integers"),
    "not doubly stochastic": (lambda t: {"weights": _ring_matrix_off_by(t, 24, 0.01)}, "mixing.txt", 7,
                              "not doubly stochastic, row 5 sums to"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_topology_input_exits_2_with_one_line(tmp_path, name):
    settings, fname, line, text = BAD[name]
    cfg = write_config(tmp_path / "cfg.yaml", small_config(**DEC, topology=settings(tmp_path)))
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "run")], n=2, timeout=120)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: topology."), p.stderr
    assert fname in lines[0] and text in lines[0], lines[0]
    if line is not None:
        assert f" line {line}:" in lines[0], lines[0]
    assert not (tmp_path / "run").exists(), "a config error must leave no run directory"
