"""Real-data runs under ``mpiexec -n 2``: bad files end the run with one line (exit 2) before
training, and the partition digest in the checkpoint refuses a resume on changed data."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc.config import parse_config
from fedmtl_hpc.data import build_dataset
from tests.conftest import fedmtl, write_config
from tests.data.fabricate import idx_bytes, write_cifar10, write_femnist, write_idx, write_mnist

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("released")
    write_mnist(base / "mnist", 240, 60)
    write_cifar10(base / "cifar10", per_batch=12, n_test=12)
    write_femnist(base / "femnist", {f"w{i:02d}": 8 + i for i in range(8)}, per_file=4)
    return base


def _config(tmp_path: Path, name: str, root: Path, **data) -> Path:
    model = {"mnist": "linear", "cifar10": "cifar_cnn", "femnist": "linear"}[name]
    raw = {"run": {"name": name, "rounds": 4, "eval_every": 2},
           "data": {"name": name, "root": str(root), "n_clients": 4, "unseen_clients": 0, **data},
           "model": {"name": model}, "algorithm": {"name": "fedavg"},
           "train": {"lr": 0.05, "batch_size": 16}, "checkpoint": {"every": 2}}
    return write_config(tmp_path / "cfg.yaml", raw)


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])


def _bad_magic(path: Path) -> None:
    raw = idx_bytes(np.zeros(240, np.uint8))
    path.write_bytes(gzip.compress(b"\x01" + raw[1:]))


# name: (dataset, change to the copied files, extra data keys, text the one line must hold)
CASES = {
    "missing root": ("mnist", lambda d: shutil.rmtree(d), {},
                     "does not exist; put the four *-ubyte.gz files of https://ossci-datasets"),
    "missing file": ("mnist", lambda d: (d / "t10k-labels-idx1-ubyte.gz").unlink(), {},
                     "t10k-labels-idx1-ubyte.gz: file not found"),
    "truncated file": ("mnist", lambda d: _truncate(d / "train-images-idx3-ubyte.gz"), {},
                       "train-images-idx3-ubyte.gz: truncated: expected 188160 data bytes"),
    "wrong header": ("mnist", lambda d: _bad_magic(d / "train-labels-idx1-ubyte.gz"), {},
                     "train-labels-idx1-ubyte.gz: expected IDX magic 0x00 0x00, got 0x01 0x00"),
    "label out of range": ("mnist", lambda d: write_idx(d / "t10k-labels-idx1-ubyte.gz", np.full(60, 12, "u1")), {},
                           "t10k-labels-idx1-ubyte.gz: expected labels in [0, 10), got 12 at position 0"),
    "corrupted pickle": ("cifar10", lambda d: (d / "cifar-10-batches-py" / "data_batch_3").write_bytes(
        b"\x80\x02}q\x00(U\x04data" + b"\x00" * 50), {}, "data_batch_3: not a readable CIFAR pickle"),
    "md5 mismatch": ("cifar10", lambda d: None, {"verify": True},
                     "data_batch_1: MD5 "),
    "broken LEAF file": ("femnist", lambda d: _truncate(sorted((d / "train").glob("*.json"))[1]), {},
                         "_train_9.json: not valid JSON"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_exits_2_with_one_line_before_training(case, released, tmp_path):
    name, change, extra, text = CASES[case]
    root = tmp_path / name
    shutil.copytree(released / name, root)
    change(root)
    cfg = _config(tmp_path, name, root, **extra)
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "run")], n=2, timeout=120)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("data error: ") and text in lines[0], p.stderr
    assert "Traceback" not in p.stdout + p.stderr and "round" not in p.stdout
    assert not (tmp_path / "run").exists(), "a data error leaves no run directory"


def test_checkpoint_stores_the_digest_and_resume_refuses_changed_data(released, tmp_path):
    root = tmp_path / "mnist"
    shutil.copytree(released / "mnist", root)
    cfg = _config(tmp_path, "mnist", root, partition="dirichlet", partition_alpha=0.5)
    run = tmp_path / "run"
    p = fedmtl(["run", str(cfg), "--run-dir", str(run), "--set", "run.stop_after=2"], n=2, timeout=120)
    assert p.returncode == 3, p.stderr
    info = build_dataset(parse_config(yaml.safe_load(cfg.read_text()))).partition_info()
    with h5py.File(ck.list_checkpoints(str(run / "checkpoints"))[-1]) as f:
        stored = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f["partition"].attrs.items()}
    assert stored["sha256"] == info["sha256"] and stored["kind"] == "mnist/dirichlet" and stored["seed"] == 1234
    write_mnist(root, 240, 60, seed=9)  # the same files, other contents
    p = fedmtl(["resume", str(run)], n=2, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "data partition changed" in lines[0], p.stderr
