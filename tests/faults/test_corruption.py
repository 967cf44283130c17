"""Corrupted checkpoints: random flipped or truncated bytes are either caught or provably harmless.

Property (hypothesis, in process, many examples): after flipping or truncating random bytes
of a real checkpoint, ``checkpoint.verify`` either raises ``CheckpointError`` or everything in
the file -- every dataset's dtype, shape and bytes, every attribute of every object -- reads
back equal to the original's. A few examples go through the CLI (``fedmtl-hpc inspect``:
exit 2 and one line, or exit 0 and unchanged content), and ``resume`` with the newest of
two checkpoints corrupted falls back to the older one with one warning line.

The run has two ranks, so a checkpoint is a set: the master file and one shard per rank
(``ckpt-<round>.shards-2/``). Each example mutates one file of the set (the master or a
shard) and places it beside untouched copies of the others.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc.errors import CheckpointError
from tests.conftest import fedmtl, small_config, write_config
from tests.faults import profiles  # noqa: F401  (registers and loads the ci / long profiles)

pytestmark = pytest.mark.mpi


def content(path) -> dict:
    """Every object of an HDF5 file: attributes (sorted) and, for datasets, dtype, shape and bytes."""
    out = {}

    def attrs(obj):
        return {k: _canon(v) for k, v in sorted(obj.attrs.items())}

    with h5py.File(path, "r") as f:
        out["/"] = attrs(f)

        def visit(name, obj):
            entry = {"attrs": attrs(obj), "kind": type(obj).__name__}
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                entry.update(dtype=str(obj.dtype), shape=obj.shape, data=_canon(data))
            out[name] = entry
        f.visititems(visit)
    return out


def _canon(v):
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "O":
            return ("O", v.shape, tuple(_canon(x) for x in v.ravel()))
        return (v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, np.generic):
        return (v.dtype.str, v.tobytes())
    return (type(v).__name__, v)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real 2-rank FedEM run with checkpoints at rounds 2 and 4 (the newest two kept)."""
    d = tmp_path_factory.mktemp("corrupt")
    cfg = write_config(d / "cfg.yaml", small_config(run={"rounds": 4}, checkpoint={"every": 2, "keep": 3}))
    fedmtl(["run", str(cfg), "--run-dir", str(d / "run")], n=2, check=True, timeout=300)
    return d / "run"


class _Original(tuple):
    def __repr__(self):  # hypothesis prints the arguments of a failing example: keep it short
        return f"<checkpoint {self[0]}>"


@pytest.fixture(scope="module")
def original(run_dir):
    """(master path, {relative name: bytes} of every file of the set, content of the master)."""
    path = Path(ck.list_checkpoints(str(run_dir / "checkpoints"))[-1])
    files = {path.name: path.read_bytes()}
    for sh in ck.verify(str(path))["shards"]:
        files[sh["file"]] = (path.parent / sh["file"]).read_bytes()
    assert len(files) == 3, files.keys()   # the master and two shards
    return _Original((str(path), files, content(path)))


def place(d: Path, files: dict, target: str, data: bytes) -> Path:
    """Write the checkpoint set into d with ``target`` replaced by ``data``; return the master path."""
    for name, b in files.items():
        os.makedirs((d / name).parent, exist_ok=True)
        (d / name).write_bytes(data if name == target else b)
    return d / next(iter(files))


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, mask in flips:
        b[pos % len(b)] ^= mask
    if cut is not None:
        b = b[:cut % len(b)]
    return bytes(b)


def check_caught_or_unchanged(path, reference: dict) -> str:
    """'invalid' or 'unchanged'; fails on a corrupted file that verifies with different content."""
    try:
        ck.verify(str(path))
    except CheckpointError as exc:
        assert "\n" not in str(exc), repr(str(exc))  # one line
        return "invalid"
    assert content(path) == reference, "verify passed but the content differs from the original"
    return "unchanged"


flips = st.lists(st.tuples(st.integers(min_value=0, max_value=2**31), st.integers(min_value=1, max_value=255)),
                 min_size=1, max_size=8)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(min_value=0, max_value=2), flips=flips,
       cut=st.none() | st.integers(min_value=0, max_value=2**31))
@example(which=0, flips=[(0, 1)], cut=None)          # the HDF5 signature
@example(which=1, flips=[(0, 1)], cut=None)
@example(which=0, flips=[(7, 0x80)], cut=None)
@example(which=2, flips=[(0, 0)], cut=100)          # truncated inside the metadata
def test_flipped_or_truncated_bytes_are_caught_or_harmless(original, tmp_path_factory, which, flips, cut):
    """which: 0 the master, 1 and 2 the shards."""
    path, files, reference = original
    target = list(files)[which]
    d = tmp_path_factory.mktemp("mut", numbered=True)
    bad = place(d, files, target, mutate(files[target], flips, cut))
    try:
        check_caught_or_unchanged(bad, reference)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("what", ["attribute", "config text", "dataset bytes", "truncated",
                                  "shard bytes", "shard attribute", "shard missing", "other shard"])
def test_targeted_corruptions_are_caught(original, tmp_path, what):
    """Bytes that carry meaning: an attribute value, the stored config text, array data, the tail;
    a shard's client rows or its row range; a missing shard; a valid shard of another checkpoint."""
    path, files, reference = original
    master, shard = list(files)[0], list(files)[1]
    target, b = master, bytearray(files[master])
    if what == "attribute":
        i = b.index(b"fedem")  # the /algorithm attribute's value (and the config text's)
        b[i] ^= 0x01
    elif what == "config text":
        i = b.index(b"n_clients: 24")
        b[i + len("n_clients: ")] = ord("5")   # 24 -> 54 in the stored YAML
    elif what == "dataset bytes":
        with h5py.File(path, "r") as f:
            off = f["global/params"].id.get_chunk_info(0).byte_offset
        b[off + 3] ^= 0x10
    elif what == "truncated":
        b = b[: len(b) * 2 // 3]
    elif what == "shard bytes":
        target, b = shard, bytearray(files[shard])
        with h5py.File(Path(path).parent / shard, "r") as f:
            off = f["clients/state/pi"].id.get_chunk_info(0).byte_offset
        b[off] ^= 0x04
    elif what == "shard attribute":   # row_start 0 -> 1: the shard no longer matches the master's record
        target = shard
        tmp = tmp_path / "edit.h5"
        tmp.write_bytes(files[shard])
        with h5py.File(tmp, "r+") as f:  # a consistent, re-sealed shard with other rows
            f.attrs["row_start"] = 1
            f.attrs["content_sha256"] = ck._content_digest(f)[0]
        b = bytearray(tmp.read_bytes())
    bad = place(tmp_path / "set", files, target, bytes(b))
    if what == "shard missing":
        os.remove(tmp_path / "set" / shard)
    elif what == "other shard":   # the older checkpoint's shard 0 under this one's name
        older = ck.list_checkpoints(str(Path(path).parent))[-2]
        (tmp_path / "set" / shard).write_bytes(
            (Path(older).parent / ck.verify(older)["shards"][0]["file"]).read_bytes())
    assert check_caught_or_unchanged(bad, reference) == "invalid"
    with pytest.raises(CheckpointError, match="shard" if what.startswith(("shard", "other")) else "."):
        ck.verify(str(bad))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_inspect_cli_reports_corruption_in_one_line_exit_2(original, tmp_path, seed):
    path, files, reference = original
    rng = np.random.default_rng(seed)
    target = list(files)[seed % 3]
    data = files[target]
    flips = [(int(rng.integers(len(data))), int(rng.integers(1, 256))) for _ in range(4)]
    bad = place(tmp_path, files, target, mutate(data, flips, None))
    p = fedmtl(["inspect", str(bad)], timeout=120)
    if p.returncode == 0:  # the flips landed where nothing is read: the content must be the same
        assert content(bad) == reference
    else:
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("checkpoint error: ") and str(bad) in lines[0], p.stderr
        assert "Traceback" not in p.stderr


def test_inspect_cli_on_a_truncated_checkpoint(original, tmp_path):
    path, files, reference = original
    master = list(files)[0]
    bad = place(tmp_path, files, master, files[master][: len(files[master]) // 2])
    p = fedmtl(["inspect", str(bad)], timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith(f"checkpoint error: {bad}"), p.stderr


@pytest.mark.parametrize("fault", ["corrupt shard", "missing shard"])
def test_resume_skips_a_corrupted_newest_checkpoint_with_a_warning(run_dir, tmp_path, fault):
    """Two checkpoints, a shard of the newest corrupted or missing: resume warns in one line
    naming the master and the shard, and continues from the older one."""
    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    files = ck.list_checkpoints(str(d / "checkpoints"))
    assert [Path(f).name for f in files] == ["ckpt-000002.h5", "ckpt-000004.h5"]
    newest = Path(files[-1])
    shard = newest.parent / ck.verify(str(newest))["shards"][1]["file"]
    if fault == "missing shard":
        shard.unlink()
    else:
        b = bytearray(shard.read_bytes())
        with h5py.File(shard, "r") as f:
            off = f["clients/state/pi"].id.get_chunk_info(0).byte_offset
        b[off] ^= 0xFF
        shard.write_bytes(bytes(b))
    p = fedmtl(["resume", str(d), "--set", "run.rounds=6"], n=2, timeout=300)
    assert p.returncode == 0, p.stderr
    warn = [ln for ln in p.stdout.splitlines() if "skipping" in ln]
    assert len(warn) == 1 and warn[0].startswith("warning: skipping ") and str(newest) in warn[0], p.stdout
    assert "shard-00001.h5" in warn[0] and ("missing" if fault == "missing shard" else "damaged") in warn[0], warn
    assert f"resumed from {d}/checkpoints/ckpt-000002.h5 at round 2" in p.stdout, p.stdout
    assert ck.verify(ck.list_checkpoints(str(d / "checkpoints"))[-1])["round"] == 6
