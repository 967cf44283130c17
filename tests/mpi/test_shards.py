"""Sharded checkpoints under real mpiexec: each rank writes its rows, the master ties them together.

A checkpoint written by 4 ranks resumes on 2 and on 1 and ends byte-identical, dataset by
dataset, to an uninterrupted run; h5ls/h5dump/h5py see one logical file from any directory;
rank 0's memory during a checkpoint does not grow with the number of clients; files of
format 3 (one file, dense /topology/W) still resume.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from fedmtl_hpc import checkpoint as ck
from tests.conftest import MPIEXEC, REPO, fedmtl, small_config, write_config

pytestmark = pytest.mark.mpi
FIXTURES = REPO / "tests" / "fixtures" / "format3"
# the per-client loop: bitwise independent of the rank count (the batched path agrees to 1e-5)
LOOP = {"train": {"participation": 0.5, "batched": "off"}}


def final_ckpt(run_dir) -> str:
    return ck.list_checkpoints(str(Path(run_dir) / "checkpoints"))[-1]


def datasets(path) -> dict[str, np.ndarray]:
    """Every dataset of a checkpoint (virtual ones read through their shards)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_datasets(a, b, skip=()) -> None:
    da, db = datasets(a), datasets(b)
    assert sorted(da) == sorted(db)
    for name in da:
        if name in skip:
            continue
        x, y = np.asarray(da[name]), np.asarray(db[name])
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name


def test_four_ranks_write_two_and_one_resume_byte_identical(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", small_config(**LOOP))
    fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "full")], n=4, check=True)
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "cut"), "--set", "run.stop_after=2"], n=4)
    assert p.returncode == 3, p.stderr
    cut = final_ckpt(tmp_path / "cut")
    info = ck.verify(cut)
    assert info["format_version"] == 4 and info["n_shards"] == 4 and info["round"] == 2
    bounds = [s["rows"] for s in info["shards"]]   # contiguous blocks (balanced by samples) covering 0..23
    assert bounds[0][0] == 0 and bounds[-1][1] == 24 and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    for n in (2, 1):
        shutil.copytree(tmp_path / "cut", tmp_path / f"on{n}")
        p = fedmtl(["resume", str(tmp_path / f"on{n}"), "--set", "run.stop_after=0"], n=n, check=True)
        assert f"resumed from {tmp_path}/on{n}/checkpoints/ckpt-000002.h5 at round 2" in p.stdout, p.stdout
        end = final_ckpt(tmp_path / f"on{n}")
        assert len(ck.verify(end)["shards"]) == (n if n > 1 else 0)   # one rank: one self-contained file
        # every dataset, bit for bit; bytes_exchanged counts this run's wire bytes, which depend on the ranks
        assert_same_datasets(end, final_ckpt(tmp_path / "full"), skip=("metrics/bytes_exchanged",))


def test_h5ls_h5dump_and_h5py_see_one_logical_file_from_any_directory(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", small_config(run={"rounds": 2}))
    fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "run")], n=2, check=True)
    master = final_ckpt(tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ls = subprocess.run(["h5ls", "-r", master], capture_output=True, text=True, cwd=elsewhere, check=True).stdout
    for line in ("/clients/ids             Dataset {24}", "/clients/state/pi        Dataset {24, 3}",
                 "/clients/weight          Dataset {24}", "/global/params           Dataset {3, 302}"):
        assert line in ls, ls
    dump = subprocess.run(["h5dump", "-d", "/clients/ids", master], capture_output=True, text=True,
                          cwd=elsewhere, check=True).stdout
    data = dump.split("DATA {", 1)[1]
    assert "(0): 0, 1, 2, 3" in data and ", 23" in data and "-1" not in data, dump   # -1: a missing shard
    shards = ck.verify(master)["shards"]
    rows = np.concatenate([h5py.File(Path(master).parent / s["file"])["clients/state/pi"][()] for s in shards])
    code = f"import h5py; print(h5py.File({master!r})['clients/state/pi'][()].tobytes().hex())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=elsewhere, check=True)
    assert bytes.fromhex(out.stdout.strip()) == rows.tobytes()
    assert not np.isnan(rows).any()


def test_rank_zero_memory_during_a_checkpoint_does_not_grow_with_the_clients(tmp_path):
    """4 ranks, clients of 4 MB each (a Local-style params row): 16 then 64 clients.

    Gathering to rank 0 would add the whole state (62 then 244 MB) to its peak; with shards rank 0
    adds a constant (HDF5's buffers), the same for 64 clients as for 16.
    """
    script = Path(__file__).with_name("shard_memory.py")
    got = {}
    for rows in (4, 16):
        d = tmp_path / f"r{rows}"
        p = subprocess.run([MPIEXEC, "-n", "4", sys.executable, str(script), str(d), str(rows), "1000000"],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if "clear_refs" in p.stderr:
            pytest.skip("this kernel cannot reset the peak RSS (/proc/self/clear_refs)")
        assert p.returncode == 0, p.stderr
        got[rows] = json.loads(p.stdout.strip().splitlines()[-1])
        assert got[rows]["shards"] == 4
    small, big = got[4], got[16]
    assert big["total_kib"] == 4 * small["total_kib"]
    assert big["extra_kib"] < big["total_kib"] / 4, got                # far below a gather of all rows
    assert big["extra_kib"] - small["extra_kib"] < 8 * 1024, got         # flat in the number of clients


@pytest.mark.parametrize("kind", ["fed", "dec"])
def test_format_3_checkpoints_still_resume(tmp_path, kind):
    """Run directories written by the previous format (one file; decentralized: a dense
    /topology/W) resume and end where a run of this version ends, dataset by dataset."""
    run = tmp_path / "old"
    shutil.copytree(FIXTURES / kind, run)
    assert ck.verify(final_ckpt(run))["format_version"] == 3
    fedmtl(["resume", str(run), "--set", "run.stop_after=0"], n=2, check=True)   # it was stopped at round 2
    fedmtl(["run", str(run / "config.yaml"), "--run-dir", str(tmp_path / "new"), "--set", "run.stop_after=0"],
           n=2, check=True)
    end = final_ckpt(run)
    assert ck.verify(end)["format_version"] == ck.FORMAT_VERSION
    assert_same_datasets(end, final_ckpt(tmp_path / "new"))
