"""Every kind of bad input exits 2 with one line, and an existing run is left as it was."""

import hashlib
import shutil
from pathlib import Path

import h5py
import pytest

from fedmtl_hpc import checkpoint as ck
from tests.conftest import fedmtl, small_config, write_config

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    cfg = write_config(root / "cfg.yaml", small_config(run={"rounds": 2}))
    fedmtl(["run", str(cfg), "--run-dir", str(root / "run")], n=2, check=True)
    return root


def tree(d: Path) -> dict:
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file()}


def corrupt_all(run: Path) -> None:
    for p in ck.list_checkpoints(str(run / "checkpoints")):
        raw = Path(p).read_bytes()
        Path(p).write_bytes(raw[:len(raw) // 2])  # a copy cut short


def change_partition(run: Path) -> None:
    for p in ck.list_checkpoints(str(run / "checkpoints")):
        with h5py.File(p, "a") as f:
            f["partition"].attrs["sha256"] = "0" * 64
            # a file that was WRITTEN by a run on other data, not a damaged one: re-seal its digest
            f.attrs["content_sha256"] = ck._content_digest(f)[0]


CASES = {
    # name: (ranks, args builder, expected text in the line)
    "negative lr": (2, lambda r: ["run", r["cfg"], "--set", "train.lr=-1"], "train.lr must be > 0, got -1"),
    "unknown key": (None, lambda r: ["run", r["cfg"], "--set", "train.lrx=1"], "train.lrx is not a known key"),
    "wrong type": (None, lambda r: ["run", r["cfg"], "--set", "run.rounds=abc"], "run.rounds must be an integer"),
    "out of range": (None, lambda r: ["run", r["cfg"], "--set", "train.participation=1.5"], "participation must be in (0, 1]"),
    "unknown algorithm": (None, lambda r: ["run", r["cfg"], "--set", "algorithm.name=fedsgd"], "algorithm.name must be one of"),
    "missing file": (None, lambda r: ["run", r["root"] + "/nope.yaml"], "does not exist"),
    "invalid yaml": (None, lambda r: ["run", r["broken"]], "is not valid YAML"),
    "not a mapping": (None, lambda r: ["run", r["listy"]], "must hold a mapping"),
    "bad --set": (None, lambda r: ["run", r["cfg"], "--set", "novalue"], "--set expects key.sub=value"),
    "more ranks than clients": (2, lambda r: ["run", r["cfg"], "--set", "data.n_clients=1"],
                                "data.n_clients must be >= the number of MPI ranks (2)"),
    "existing run dir": (2, lambda r: ["run", r["cfg"], "--run-dir", r["run"]], "already holds a run"),
    "resume a non-run": (None, lambda r: ["resume", r["root"]], "is not a run directory"),
    "resume changes data": (None, lambda r: ["resume", r["run"], "--set", "data.n_clients=5"], "cannot change on resume"),
    "resume corrupted": (2, lambda r: ["resume", r["corrupt"]], "no valid checkpoint"),
    "resume changed partition": (2, lambda r: ["resume", r["moved"]], "data partition changed"),
    "inspect non-hdf5": (None, lambda r: ["inspect", r["cfg"]], "not a readable fedmtl_hpc checkpoint"),
    "missing argument": (None, lambda r: ["resume"], "the following arguments are required"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(name, existing_run, tmp_path):
    root = existing_run
    (tmp_path / "broken.yaml").write_text("run: {rounds: 3\n  - ]\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    for tag, fn in (("corrupt", corrupt_all), ("moved", change_partition)):
        shutil.copytree(root / "run", tmp_path / tag)
        fn(tmp_path / tag)
    r = {"cfg": str(root / "cfg.yaml"), "root": str(tmp_path), "run": str(root / "run"),
         "broken": str(tmp_path / "broken.yaml"), "listy": str(tmp_path / "list.yaml"),
         "corrupt": str(tmp_path / "corrupt"), "moved": str(tmp_path / "moved")}
    before = tree(root / "run")
    n, build, text = CASES[name]
    p = fedmtl(build(r), n=n, timeout=120)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert tree(root / "run") == before, "the existing run was modified"
