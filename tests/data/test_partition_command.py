"""``fedmtl-hpc partition``: per-client counts and label histograms, a PNG, no training."""

import re
import subprocess
import sys

import numpy as np
import yaml

from fedmtl_hpc.cli import main
from tests.comm.test_topology import read_png
from tests.data.fabricate import write_femnist, write_mnist


def _cfg(tmp_path, data, model="linear"):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"run": {"seed": 5}, "data": data, "model": {"name": model}}))
    return str(path)


def test_prints_every_client_and_draws_the_split(tmp_path, capsys):
    write_mnist(tmp_path / "m", 400, 100)
    cfg = _cfg(tmp_path, {"name": "mnist", "root": str(tmp_path / "m"), "n_clients": 10, "unseen_clients": 2,
                          "partition": "pathological", "shards_per_client": 2})
    assert main(["partition", cfg, "--png", str(tmp_path / "split.png"), "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("mnist/pathological  seed 5  sha256 ") and "10 clients + 2 unseen" in out[1]
    rows = [line for line in out if re.match(r"^\s+\d+[ *] ", line)]
    assert len(rows) == 12 and rows[-1].split()[0] == "11*"
    train = np.array([int(r.split()[1]) for r in rows])
    test = np.array([int(r.split()[2]) for r in rows])
    assert train.sum() + test.sum() == 500  # every pooled sample in one client
    # pathological: 2 label-sorted shards each, so at most 2 labels (+1 where a shard straddles a label)
    assert all(len(re.findall(r"\d+:\d+", r)) <= 3 for r in rows)
    img = read_png((tmp_path / "split.png").read_bytes())  # matplotlib: one paper column at 300 dpi
    assert img.shape[1] == round(3.4 * 300) and np.any(img != 255, axis=2).mean() > 0.05


def test_natural_lists_writers_and_needs_no_torch_at_import(tmp_path, capsys):
    write_femnist(tmp_path / "f", {f"w{i}": 10 + i for i in range(6)})
    cfg = _cfg(tmp_path, {"name": "femnist", "root": str(tmp_path / "f"), "n_clients": 5, "unseen_clients": 0},
               model="femnist_cnn")
    assert main(["partition", cfg]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"\[w\d\]", out)) == 5
    probe = "import sys, fedmtl_hpc.commands.partition; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


def test_missing_data_is_one_line_and_exit_2(tmp_path, capsys):
    cfg = _cfg(tmp_path, {"name": "mnist", "root": str(tmp_path / "absent"), "n_clients": 4})
    assert main(["partition", cfg]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "absent" in err[0] and "ossci-datasets" in err[0]
