"""Storage faults: a full, read-only or vanished run directory, and a file system that fails mid-write.

The job stops with one line naming the path and the error (exit 2 for what the user must fix:
no space, read-only, permission, a vanished directory; exit 1 otherwise), the newest checkpoint
written before the fault still verifies, no temporary file is left, and ``resume`` continues.
Full and read-only file systems are real: a tiny tmpfs (root only; skipped otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc.errors import StorageError
from fedmtl_hpc.metrics import MetricsTable, write_atomic
from tests.conftest import fedmtl, rank_pids, running_job, small_config, write_config

pytestmark = pytest.mark.mpi


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def set_bytes(master) -> int:
    """Bytes of a checkpoint set on disk: the master and its shards."""
    shards = [Path(master).parent / sh["file"] for sh in ck.verify(str(master))["shards"]]
    return sum(os.path.getsize(p) for p in [master, *shards])


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files a failed write could have left (hidden ``.<name>.tmp*``)."""
    return sorted(str(p) for p in run_dir.rglob(".*tmp*"))


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A real tmpfs of ``size`` at where (root only); unmounted on exit."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield where
    finally:
        for _ in range(20):  # a dying rank may still hold a file open for a moment
            if subprocess.run(["umount", str(where)], capture_output=True).returncode == 0:
                break
            time.sleep(0.25)
        else:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def no_rank_left(run_dir: Path, timeout: float = 15.0) -> bool:
    """No rank of the job in run_dir is alive (after MPI_Abort the launcher may return first)."""
    deadline = time.time() + timeout
    while rank_pids(str(run_dir)) and time.time() < deadline:
        time.sleep(0.1)
    return not rank_pids(str(run_dir))


def fill(mnt: Path, leave: int) -> Path:
    """Allocate a filler file so that only ``leave`` bytes stay free on mnt."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.posix_fallocate(fd, 0, max(free - leave, 1))
    finally:
        os.close(fd)
    return filler


@pytest.fixture(scope="module")
def storage_cfg(tmp_path_factory):
    """One small config (6 rounds, an evaluation and a checkpoint every 2) and its uninterrupted run."""
    d = tmp_path_factory.mktemp("storage")
    cfg = write_config(d / "cfg.yaml", small_config(checkpoint={"every": 2, "keep": 2}))
    fedmtl(["run", str(cfg), "--run-dir", str(d / "ref")], n=2, check=True, timeout=300)
    return cfg, ck.list_checkpoints(str(d / "ref" / "checkpoints"))[-1]


def test_full_file_system_stops_with_one_line_exit_2_and_resume_finishes_identically(tmp_path, storage_cfg):
    cfg, reference = storage_cfg
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        # room for the small files (~56 KB) and ONE checkpoint set (the master and two shards):
        # the set of round 4 cannot be written, whichever of its files meets the full disk first
        filler = fill(mnt, 56 * 1024 + 3 * set_bytes(reference) // 2)
        run_dir = mnt / "run"
        p = fedmtl(["run", str(cfg), "--run-dir", str(run_dir)], n=2, timeout=300)
        assert p.returncode == 2, (p.returncode, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr
        ours = [ln for ln in p.stderr.splitlines() if ln.startswith("rank ")]
        assert len(ours) == 1 and re.fullmatch(   # one line of ours (MPICH adds its own "Abort(2)" line)
            rf"rank \d: storage error: cannot write checkpoint (shard )?{re.escape(str(run_dir))}/checkpoints/"
            r"ckpt-000004\S*: No space left on device \(errno 28\)", ours[0]), p.stderr
        assert no_rank_left(run_dir)
        # what was there before the fault is intact and is what resume picks; no temporary file left
        files = ck.list_checkpoints(str(run_dir / "checkpoints"))
        assert [Path(f).name for f in files] == ["ckpt-000002.h5"]
        assert ck.verify(files[0])["round"] == 2
        assert leftovers(run_dir) == []
        assert (run_dir / "metrics.csv").read_text().splitlines()[-1].startswith("4,")  # whole rows only
        # the user frees space; resume ends where an uninterrupted run ends, byte for byte
        filler.unlink()
        p = fedmtl(["resume", str(run_dir)], n=2, timeout=300)
        assert p.returncode == 0, p.stderr
        assert "resumed from" in p.stdout and "ckpt-000002.h5 at round 2" in p.stdout, p.stdout
        assert sha(ck.list_checkpoints(str(run_dir / "checkpoints"))[-1]) == sha(reference)
        assert leftovers(run_dir) == []


def test_read_only_file_system_stops_with_exit_2_and_resume_continues_after_remount(tmp_path, storage_cfg):
    cfg, reference = storage_cfg
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        run_dir = mnt / "run"
        p = fedmtl(["run", str(cfg), "--run-dir", str(run_dir), "--set", "run.stop_after=2"], n=2, timeout=300)
        assert p.returncode == 3, p.stderr
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        p = fedmtl(["resume", str(run_dir)], n=2, timeout=300)
        assert p.returncode == 2, (p.returncode, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr
        ours = [ln for ln in p.stderr.splitlines() if ln.startswith("rank ")]
        assert len(ours) == 1 and re.fullmatch(
            rf"rank 0: storage error: cannot write \w+ {re.escape(str(run_dir))}/\S+: "
            r"Read-only file system \(errno 30\)", ours[0]), p.stderr
        assert [Path(f).name for f in ck.list_checkpoints(str(run_dir / "checkpoints"))] == ["ckpt-000002.h5"]
        assert ck.verify(str(run_dir / "checkpoints" / "ckpt-000002.h5"))["round"] == 2
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        assert leftovers(run_dir) == []
        p = fedmtl(["resume", str(run_dir), "--set", "run.stop_after=0"], n=2, timeout=300)
        assert p.returncode == 0, p.stderr
        assert sha(ck.list_checkpoints(str(run_dir / "checkpoints"))[-1]) == sha(reference)


def test_read_only_remount_while_training_stops_the_job_with_exit_2(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", small_config(run={"rounds": 100000, "eval_every": 50},
                                                            checkpoint={"every": 2, "keep": 2}))
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        run_dir = mnt / "run"
        with running_job(cfg, run_dir, 2, min_checkpoints=1) as (proc, pids):
            # a remount fails (EBUSY) while a file is open for writing: try until it lands between writes
            for _ in range(400):
                if subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("could not remount the tmpfs read-only while the job ran")
            t0 = time.time()
            _, err = proc.communicate(timeout=60)
            elapsed = time.time() - t0
        assert proc.returncode == 2 and elapsed < 30, (proc.returncode, err)
        ours = [ln for ln in err.splitlines() if ln.startswith("rank ")]
        # the remount lands between any two writes: a shard, the master, or the removal of an old set
        assert len(ours) == 1 and re.match(r"rank 0: storage error: cannot (write|remove|sync) ", ours[0]) \
            and ours[0].endswith("Read-only file system (errno 30)"), err
        assert "Traceback" not in err
        newest = ck.newest_valid(str(run_dir / "checkpoints"))
        assert newest is not None and ck.verify(newest)["round"] >= 2
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        assert leftovers(run_dir) == []
        k = ck.verify(newest)["round"]
        p = fedmtl(["resume", str(run_dir), "--set", f"run.rounds={k + 2}", "--set", "run.eval_every=2"],
                   n=2, timeout=300)
        assert p.returncode == 0, p.stderr
        assert ck.verify(ck.list_checkpoints(str(run_dir / "checkpoints"))[-1])["round"] == k + 2


def test_vanished_run_directory_stops_the_job_with_exit_2_and_is_not_recreated(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", small_config(run={"rounds": 100000, "eval_every": 2},
                                                            checkpoint={"every": 2, "keep": 2}))
    run_dir = tmp_path / "run"
    with running_job(cfg, run_dir, 2, min_checkpoints=1) as (proc, pids):
        os.rename(run_dir, tmp_path / "gone")  # the path vanishes at once (rmtree races the writer)
        shutil.rmtree(tmp_path / "gone", ignore_errors=True)
        t0 = time.time()
        _, err = proc.communicate(timeout=60)
        elapsed = time.time() - t0
    assert proc.returncode == 2 and elapsed < 30, (proc.returncode, err)
    ours = [ln for ln in err.splitlines() if ln.startswith("rank ")]
    assert len(ours) == 1 and re.fullmatch(
        # any rank may meet the vanished directory first (each writes its own shard); the lowest one reports
        rf"rank \d: storage error: cannot write [\w ]+ {re.escape(str(run_dir))}/\S+: No such file or directory "
        r"\(errno 2\)", ours[0]), err
    assert "Traceback" not in err
    assert not run_dir.exists(), "a vanished run directory is not silently made anew"


# -- in process: a file system that fails mid-write (EIO from fsync, as write-back errors surface) --------

def _snap(rnd: int) -> ck.Snapshot:
    return ck.Snapshot(round=rnd, algorithm="fedem", config_text="run: {}\n",
                       shared=np.arange(12, dtype=np.float32).reshape(2, 6) + rnd, layout=[],
                       client_ids=np.arange(3, dtype=np.int64), client_weight=np.ones(3),
                       client_state={"pi": np.full((3, 2), 0.5, dtype=np.float32)}, seed=1,
                       partition={"kind": "synthetic", "seed": 1, "sha256": "x"})


def test_io_error_mid_write_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    d = str(tmp_path / "checkpoints")
    good = ck.save(_snap(2), d, keep=3)
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(ck.os, "fsync", failing_fsync)
    with pytest.raises(StorageError) as info:
        ck.save(_snap(4), d, keep=3)
    monkeypatch.setattr(ck.os, "fsync", real_fsync)
    assert str(info.value) == (f"storage error: cannot write checkpoint {d}/ckpt-000004.h5: "
                               f"Input/output error (errno 5)")
    assert info.value.exit_code == 1  # not the user's to fix: exit 1
    assert ck.list_checkpoints(d) == [good] and os.listdir(d) == ["ckpt-000002.h5"]
    assert ck.newest_valid(d) == good and ck.verify(good)["round"] == 2


def test_hdf5_failure_inside_the_file_is_mapped_and_cleaned(tmp_path, monkeypatch):
    """h5py reports write failures as OSError/RuntimeError with 'errno = N' in the text."""
    d = str(tmp_path / "checkpoints")
    good = ck.save(_snap(2), d, keep=3)
    real = ck._ds
    calls = []

    def failing_ds(group, name, data, **attrs):
        calls.append(name)
        if len(calls) == 3:  # in the middle of the file
            raise OSError("Can't write data (file write failed: time = x, filename = 'f', file descriptor = 5, "
                          "errno = 28, error message = 'No space left on device', buf = 0x0, total write size = 8)")
        return real(group, name, data, **attrs)
    monkeypatch.setattr(ck, "_ds", failing_ds)
    with pytest.raises(StorageError) as info:
        ck.save(_snap(4), d, keep=3)
    assert info.value.exit_code == 2 and str(info.value).endswith("No space left on device (errno 28)")
    assert os.listdir(d) == ["ckpt-000002.h5"] and ck.newest_valid(d) == good


def test_metrics_files_are_replaced_atomically_and_failures_clean_up(tmp_path, monkeypatch):
    t = MetricsTable()
    t.append({"round": 2, "train_loss": 0.5, "bytes_exchanged": 10})
    t.write(str(tmp_path))
    before = {n: (tmp_path / n).read_bytes() for n in ("metrics.csv", "metrics.h5")}
    t.append({"round": 4, "train_loss": 0.4, "bytes_exchanged": 10})

    def failing_fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError) as info:
        t.write(str(tmp_path))
    assert info.value.exit_code == 2
    assert str(info.value) == (f"storage error: cannot write metrics {tmp_path}/metrics.csv: "
                               f"No space left on device (errno 28)")
    # the complete previous files stay; nothing half-written, no temporary file
    assert {n: (tmp_path / n).read_bytes() for n in ("metrics.csv", "metrics.h5")} == before
    assert sorted(os.listdir(tmp_path)) == ["metrics.csv", "metrics.h5"]
    monkeypatch.undo()
    with pytest.raises(ZeroDivisionError):  # a bug in the writer is not a storage error, still cleaned
        write_atomic(str(tmp_path / "summary.json"), lambda tmp: (Path(tmp).write_text("{"), 1 / 0), "summary")
    assert sorted(os.listdir(tmp_path)) == ["metrics.csv", "metrics.h5"]
