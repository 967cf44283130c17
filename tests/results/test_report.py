"""``fedmtl-hpc report``: every figure is a real image of the expected size; results.load_run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, fedmtl

mpimg = pytest.importorskip("matplotlib.image")

WIDTH = round(3.4 * 300)  # one paper column at 300 dpi


def _check_png(path) -> None:
    img = mpimg.imread(str(path))
    h, w = img.shape[:2]
    assert w == WIDTH and 0.3 * WIDTH <= h <= 1.2 * WIDTH, (path.name, img.shape)
    rgb = img[..., :3]
    ink = np.any(rgb < 0.9, axis=2).mean()
    assert 0.01 < ink < 0.9, (path.name, ink)  # something drawn, not a filled rectangle
    assert rgb.std() > 0.05, path.name


def test_report_one_run_and_three(compared, tmp_path):
    _, out, _ = compared
    one = out / "runs" / "fedem-seed1"
    p = fedmtl(["report", str(one), "--out", str(tmp_path / "one")])
    assert p.returncode == 0, p.stderr
    names = sorted(f.name for f in (tmp_path / "one").iterdir())
    assert names == ["accuracy.png", "client_accuracy.png", "mixture_weights.png", "time_per_round.png",
                     "train_loss.png"]
    for f in (tmp_path / "one").iterdir():
        _check_png(f)
    three = [out / "runs" / f"{m}-seed1" for m in ("fedem", "fedavg", "local")]
    p = fedmtl(["report", *map(str, three), "--out", str(tmp_path / "three")])
    assert p.returncode == 0, p.stderr
    names = sorted(f.name for f in (tmp_path / "three").iterdir())
    assert names == ["accuracy.png", "client_accuracy.png", "mixture_weights-fedem-seed1.png",
                     "time_per_round.png", "train_loss.png"]
    for f in (tmp_path / "three").iterdir():
        _check_png(f)
    p = fedmtl(["report", *map(str, three), "--out", str(tmp_path / "pdf"), "--format", "pdf"])
    assert p.returncode == 0, p.stderr
    pdfs = list((tmp_path / "pdf").iterdir())
    assert len(pdfs) == 5 and all(f.suffix == ".pdf" and f.read_bytes()[:4] == b"%PDF" for f in pdfs)


def test_not_a_run_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    p = fedmtl(["report", str(tmp_path / "empty")])
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert "is not a run directory (no config.yaml)" in p.stderr


def test_decentralized_and_mtl_figures_when_present(compared, tmp_path):
    """consensus_distance and objective columns, /mtl/W in the checkpoint: drawn when there."""
    import shutil

    import h5py
    _, out, _ = compared
    run = tmp_path / "run"
    shutil.copytree(out / "runs" / "fedavg-seed1", run)
    with h5py.File(run / "metrics.h5", "a") as f:
        r = f["round"].shape[0]
        f.create_dataset("consensus_distance", data=np.geomspace(1.0, 1e-3, r))
        f.create_dataset("objective", data=1.0 + np.geomspace(1.0, 1e-4, r))
    ck = sorted((run / "checkpoints").glob("ckpt-*.h5"))[-1]
    with h5py.File(ck, "a") as f:
        f.create_dataset("mtl/W", data=np.random.default_rng(0).normal(size=(20, 6)))
    p = fedmtl(["report", str(run), "--out", str(tmp_path / "f")])
    assert p.returncode == 0, p.stderr
    names = {f.name for f in (tmp_path / "f").iterdir()}
    assert {"consensus_distance.png", "objective_gap.png", "W.png"} <= names
    for n in ("consensus_distance.png", "objective_gap.png", "W.png"):
        _check_png(tmp_path / "f" / n)


def test_load_run_load_compare_and_the_commands_import_nothing_heavy(compared):
    _, out, _ = compared
    code = ("import sys\n"
            "from fedmtl_hpc.results import load_run, load_compare\n"
            f"r = load_run({str(out / 'runs' / 'fedem-seed2')!r})\n"
            "assert r.summary['status'] == 'done' and r.metrics['round'].tolist() == [2.0, 4.0]\n"
            "assert r.client_acc.shape == (2, 12) and r.unseen_acc.shape == (2, 3)\n"
            "assert abs(r.client_acc[-1].mean() - r.summary['test_acc_mean']) < 1e-12\n"
            f"c = load_compare({str(out)!r})\n"
            "assert [row['method'] for row in c['table']][:3] == ['fedem', 'fedavg', 'local']\n"
            "assert len(c['cells']) == 8\n"
            "import fedmtl_hpc.cli\n"
            "fedmtl_hpc.cli._parser()  # registers compare and report\n"
            "heavy = [m for m in ('torch', 'mpi4py', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    assert p.returncode == 0, p.stderr
