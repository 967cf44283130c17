"""``fedmtl-hpc topology``: what it prints, the PNG, errors, and that it never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from fedmtl_hpc.comm import topology as T
from tests.comm.test_topology import read_png
from tests.conftest import REPO, fedmtl

DFEDEM = str(REPO / "configs" / "synthetic_dfedem.yaml")


def test_prints_nodes_degrees_gap_and_plan(tmp_path):
    png = tmp_path / "g.png"
    p = fedmtl(["topology", DFEDEM, "--set", "data.n_clients=12", "--set", "topology.kind=torus",
                "--ranks", "3", "--png", str(png), "--json", str(tmp_path / "g.json")], check=True)
    gap = T.build_topology("torus", 12).spectral_gap
    out = p.stdout
    assert "nodes 12 (clients), edges 24, weights metropolis" in out
    assert "degree min 4, mean 4.000, max 4" in out and "degree per node: 0:4 1:4" in out
    assert f"spectral gap {gap:.6g}" in out
    assert "rank 1: clients 4..7, neighbour ranks [0, 2]" in out
    assert read_png(png.read_bytes()).shape == (512, 512, 3)
    doc = json.loads((tmp_path / "g.json").read_text())
    assert (doc["nodes"], doc["edges"], doc["w_nonzeros"], doc["spectral_gap"]) == (12, 24, 60, gap)
    assert doc["degree"] == {"min": 4, "mean": 4.0, "max": 4} and doc["kind"] == "torus"
    b = T.local_blocks(T.build_topology("torus", 12).W, T.block_owner(12, 3))[1]
    sends, receives = sum(map(len, b.send.values())), sum(map(len, b.recv.values()))
    assert doc["ranks"][1] == {"rank": 1, "clients": [4, 7], "neighbour_ranks": [0, 2],
                               "sends_rows": sends, "receives_rows": receives}
    assert f"sends {sends} rows, receives {receives}" in out


def test_large_graphs_skip_per_node_lines_and_show_the_round(tmp_path):
    p = fedmtl(["topology", DFEDEM, "--set", "topology.kind=erdos_renyi", "--set", "topology.p=0.05",
                "--set", "topology.change_every=5", "--round", "12"], check=True)
    ref = T.TopologySchedule("erdos_renyi", 300, change_every=5, seed=7, p=0.05).at(12)
    assert "period 2" in p.stdout and f"edges {len(ref.edges)}," in p.stdout
    assert "degree per node" not in p.stdout and f"max {ref.degrees.max()}" in p.stdout


def test_bad_edge_file_exits_2_with_one_line(tmp_path):
    f = tmp_path / "e.txt"
    f.write_text("0 1\n1 x\n")
    p = fedmtl(["topology", DFEDEM, "--set", "topology.kind=edges", "--set", f"topology.file={f}"])
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert "e.txt' line 2: expecting two integers" in p.stderr


def test_never_imports_torch_or_mpi():
    code = ("import sys, argparse\n"
            "from fedmtl_hpc.commands import topology as t\n"
            f"t.main(argparse.Namespace(config={DFEDEM!r}, set=[], png=None, json=None, round=0, ranks=4))\n"
            "assert 'torch' not in sys.modules and 'mpi4py' not in sys.modules, 'heavy import'\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    assert p.returncode == 0, p.stderr
    assert np.isclose(float(p.stdout.split("spectral gap ")[1].split()[0]),
                      T.build_topology("ring", 300).spectral_gap, rtol=1e-5)
