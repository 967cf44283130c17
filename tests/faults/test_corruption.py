"""Corrupted checkpoints: random flipped or truncated bytes are either caught or provably harmless.

Property (hypothesis, in process, many examples): after flipping or truncating random bytes
of a real checkpoint, ``checkpoint.verify`` either raises ``CheckpointError`` or everything in
the file -- every dataset's dtype, shape and bytes, every attribute of every object -- reads
back equal to the original's. A few examples go through the CLI (``fedmtl-hpc inspect``:
exit 2 and one line, or exit 0 and unchanged content), and ``resume`` with the newest of
two checkpoints corrupted falls back to the older one with one warning line.
"""

from __future__ import annotations

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
    path = ck.list_checkpoints(str(run_dir / "checkpoints"))[-1]
    return _Original((path, Path(path).read_bytes(), content(path)))


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
@given(flips=flips, cut=st.none() | st.integers(min_value=0, max_value=2**31))
@example(flips=[(0, 1)], cut=None)          # the HDF5 signature
@example(flips=[(7, 0x80)], cut=None)
@example(flips=[(0, 0)], cut=100)          # truncated inside the metadata
def test_flipped_or_truncated_bytes_are_caught_or_harmless(original, tmp_path_factory, flips, cut):
    path, data, reference = original
    d = tmp_path_factory.mktemp("mut", numbered=True)
    bad = d / "ckpt-000004.h5"
    bad.write_bytes(mutate(data, flips, cut))
    try:
        check_caught_or_unchanged(bad, reference)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("what", ["attribute", "config text", "dataset bytes", "truncated"])
def test_targeted_corruptions_are_caught(original, tmp_path, what):
    """Bytes that carry meaning: an attribute value, the stored config text, array data, the tail."""
    path, data, reference = original
    b = bytearray(data)
    if what == "attribute":
        i = data.index(b"fedem")  # the /algorithm attribute's value (and the config text's)
        b[i] ^= 0x01
    elif what == "config text":
        i = data.index(b"n_clients: 24")
        b[i + len("n_clients: ")] = ord("5")   # 24 -> 54 in the stored YAML
    elif what == "dataset bytes":
        with h5py.File(path, "r") as f:
            off = f["global/params"].id.get_chunk_info(0).byte_offset
        b[off + 3] ^= 0x10
    else:
        b = b[: len(b) * 2 // 3]
    bad = tmp_path / "ckpt-000004.h5"
    bad.write_bytes(bytes(b))
    assert check_caught_or_unchanged(bad, reference) == "invalid"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_inspect_cli_reports_corruption_in_one_line_exit_2(original, tmp_path, seed):
    path, data, reference = original
    rng = np.random.default_rng(seed)
    flips = [(int(rng.integers(len(data))), int(rng.integers(1, 256))) for _ in range(4)]
    bad = tmp_path / "ckpt-000004.h5"
    bad.write_bytes(mutate(data, flips, None))
    p = fedmtl(["inspect", str(bad)], timeout=120)
    if p.returncode == 0:  # the flips landed where nothing is read: the content must be the same
        assert content(bad) == reference
    else:
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("checkpoint error: ") and str(bad) in lines[0], p.stderr
        assert "Traceback" not in p.stderr


def test_inspect_cli_on_a_truncated_checkpoint(original, tmp_path):
    path, data, reference = original
    bad = tmp_path / "ckpt-000004.h5"
    bad.write_bytes(data[: len(data) // 2])
    p = fedmtl(["inspect", str(bad)], timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith(f"checkpoint error: {bad}"), p.stderr


def test_resume_skips_a_corrupted_newest_checkpoint_with_a_warning(run_dir, tmp_path):
    """Two checkpoints, the newest corrupted: resume warns in one line and continues from the older."""
    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    files = ck.list_checkpoints(str(d / "checkpoints"))
    assert [Path(f).name for f in files] == ["ckpt-000002.h5", "ckpt-000004.h5"]
    newest = Path(files[-1])
    b = bytearray(newest.read_bytes())
    with h5py.File(newest, "r") as f:
        off = f["clients/state/pi"].id.get_chunk_info(0).byte_offset
    b[off] ^= 0xFF
    newest.write_bytes(bytes(b))
    p = fedmtl(["resume", str(d), "--set", "run.rounds=6"], n=2, timeout=300)
    assert p.returncode == 0, p.stderr
    warn = [ln for ln in p.stdout.splitlines() if "skipping" in ln]
    assert len(warn) == 1 and warn[0].startswith("warning: skipping ") and str(newest) in warn[0], p.stdout
    assert f"resumed from {d}/checkpoints/ckpt-000002.h5 at round 2" in p.stdout, p.stdout
    assert ck.verify(ck.list_checkpoints(str(d / "checkpoints"))[-1])["round"] == 6
