"""The MPI neighbour exchange (comm/gossip.py over comm/mpi.py) under real ``mpiexec -n 1/2/4/8``.

tests/comm/gossip_mpi.py runs every case once per rank count (no torch: a launch takes
under two seconds) and prints one JSON line per case; these tests assert on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MPIEXEC

pytestmark = pytest.mark.mpi
SCRIPT = Path(__file__).with_name("gossip_mpi.py")
RANKS = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def results() -> dict[int, list[dict]]:
    out = {}
    for n in RANKS:
        p = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(SCRIPT)], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           cwd=str(SCRIPT.parents[2]))
        assert p.returncode == 0, f"{n} ranks: {p.stdout}\n{p.stderr}"
        out[n] = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return out


@pytest.mark.parametrize("size", RANKS)
def test_neighbor_exchange_equals_w_times_x(results, size: int) -> None:
    """Issue test 3: three MPI gossip steps == W^3 X in one process, within 1e-12 (float64)."""
    cases = [c for c in results[size] if c["case"] == "exact"]
    assert {c["kind"] for c in cases} >= {"ring", "erdos_renyi", "torus"}
    per_rank = {c["n"] // size for c in cases}
    assert min(per_rank) == 1 and max(per_rank) >= 5  # one and several clients per rank
    for c in cases:
        assert c["err"] <= 1e-12, c
        assert (c["bytes"] > 0) == (size > 1), c  # only cross-rank edges travel
    if size >= 4:
        assert any(c["packed"] for c in cases), "the pack path (non-contiguous sends) was not exercised"


@pytest.mark.parametrize("size", RANKS)
def test_time_varying_graph_rebuilds_and_stays_exact(results, size: int) -> None:
    cases = [c for c in results[size] if c["case"] == "time_varying"]
    assert len(cases) == 2 and all(c["err"] <= 1e-12 for c in cases), cases
    assert all(c["live_plans"] == 1 for c in cases), cases  # replaced plans were released


@pytest.mark.parametrize("size", RANKS)
def test_repeated_mixing_reaches_the_exact_average_at_the_spectral_rate(results, size: int) -> None:
    """Issue test 2: no learning, only mixing over MPI: every row -> the initial mean, and
    ||X_k - mean|| <= (1 - gap)^k ||X_0 - mean|| at every step k."""
    cases = [c for c in results[size] if c["case"] == "converge"]
    assert len(cases) == 2
    for c in cases:
        assert c["final"] < 1e-12 and c["steps"] < 5000, c
        assert c["mean_drift"] <= 1e-13, c       # doubly stochastic: the average never moves
        assert c["worst_rate"] <= 1 + 1e-9, c    # never slower than the spectral gap predicts


@pytest.mark.parametrize("size", RANKS)
def test_control_value_reaches_every_rank_within_the_rank_diameter(results, size: int) -> None:
    """What the stop agreement relies on: a value stamped by one rank reaches every rank
    in exactly 'rank-graph distance' exchanges, so within rank_hops of them."""
    (c,) = [c for c in results[size] if c["case"] == "control"]
    assert len(c["first"]) == size and min(c["first"]) >= 1
    assert max(c["first"]) == max(c["hops"], 1), c
