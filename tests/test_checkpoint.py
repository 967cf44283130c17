"""Checkpoint files: atomic, pruned, verified, byte-deterministic, readable with h5ls."""

import hashlib
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc.errors import CheckpointError


def snap(round_=4, scale=1.0):
    return ck.Snapshot(
        round=round_, algorithm="fedem", config_text="run: {seed: 1}\n",
        shared=np.arange(12, dtype=np.float32).reshape(3, 4) * scale,
        layout=[{"name": "w", "shape": [4], "offset": 0}],
        client_ids=np.arange(5), client_weight=np.arange(5) + 10.0,
        client_state={"pi": np.full((5, 3), 1 / 3, dtype=np.float32)}, seed=1,
        partition={"kind": "synthetic-mixture", "seed": 1, "sha256": "ab" * 32},
        groups={"algorithm": {"attrs": {"name": "fedem", "lr": 0.1}, "arrays": {"x": np.arange(3)}}}, metrics={"round": np.array([2.0, 4.0])})


def sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def test_roundtrip_and_row_selection(tmp_path):
    p = ck.save(snap(), str(tmp_path), keep=2)
    s = ck.load(p, rows=range(1, 3))
    assert s.round == 4 and s.client_ids.tolist() == [1, 2] and s.client_weight.tolist() == [11.0, 12.0]
    assert np.array_equal(s.shared, snap().shared) and s.client_state["pi"].shape == (2, 3)
    assert ck.read_config(p) == snap().config_text
    info = ck.verify(p)
    assert info["algorithm"] == "fedem" and info["datasets"]["global/params"] == [3, 4]


def test_byte_identical_and_keep_last_k(tmp_path):
    a = ck.save(snap(), str(tmp_path / "a"), keep=2)
    b = ck.save(snap(), str(tmp_path / "b"), keep=2)
    assert sha(a) == sha(b)
    for r in (6, 8, 10):
        ck.save(snap(r), str(tmp_path / "a"), keep=2)
    names = [p.rsplit("/", 1)[1] for p in ck.list_checkpoints(str(tmp_path / "a"))]
    assert names == ["ckpt-000008.h5", "ckpt-000010.h5"]
    assert not list((tmp_path / "a").glob(".*tmp*")), "no temporary file is left behind"


def test_corruption_is_detected_and_skipped(tmp_path):
    d = str(tmp_path)
    good = ck.save(snap(2), d, keep=5)
    bad = ck.save(snap(4), d, keep=5)
    raw = bytearray(open(bad, "rb").read())
    i = raw.find(np.arange(12, dtype=np.float32).reshape(3, 4)[1:].tobytes())  # inside the params data
    assert i > 0
    raw[i + 5] ^= 0xFF
    open(bad, "wb").write(raw)
    with pytest.raises(CheckpointError):
        ck.verify(bad)
    msgs = []
    assert ck.newest_valid(d, warn=msgs.append) == good and "skipping" in msgs[0]


def test_incomplete_and_foreign_files_are_refused(tmp_path):
    p = ck.save(snap(), str(tmp_path), keep=1)
    with h5py.File(p, "a") as f:
        del f.attrs["complete"]
    with pytest.raises(CheckpointError, match="not marked complete"):
        ck.verify(p)
    junk = tmp_path / "ckpt-000009.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        ck.verify(str(junk))


@pytest.mark.skipif(shutil.which("h5ls") is None, reason="h5ls (hdf5-tools) not installed")
def test_h5ls_alone_shows_the_layout(tmp_path):
    p = ck.save(snap(), str(tmp_path), keep=1)
    out = subprocess.run(["h5ls", "-r", p], capture_output=True, text=True, check=True).stdout
    for name in ("/global/params", "/clients/state/pi", "/clients/weight", "/config", "/rng", "/partition"):
        assert name in out
    attrs = subprocess.run(["h5dump", "-A", "-g", "/rng", p], capture_output=True, text=True, check=True).stdout
    assert "scheme" in attrs and "next_round" in attrs
