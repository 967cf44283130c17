"""Per-client test accuracies: one row per evaluation in metrics.h5 and in checkpoints, complete after a resume."""

from __future__ import annotations

import h5py
import numpy as np

from fedmtl_hpc.results import load_run
from tests.conftest import fedmtl


def test_client_accuracies_survive_stop_and_resume(tmp_path, cfg_file):
    cfg = cfg_file(run={"rounds": 6, "eval_every": 2}, checkpoint={"every": 1, "keep": 1})
    fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "full")], n=2, check=True)
    p = fedmtl(["run", str(cfg), "--run-dir", str(tmp_path / "cut"), "--set", "run.stop_after=3"], n=2)
    assert p.returncode == 3, p.stderr
    fedmtl(["resume", str(tmp_path / "cut"), "--set", "run.stop_after=0"], n=2, check=True)
    full, cut = load_run(tmp_path / "full"), load_run(tmp_path / "cut")
    assert full.client_acc.shape == (3, 24) and full.unseen_acc.shape == (3, 4)
    assert np.array_equal(full.client_acc, cut.client_acc) and np.array_equal(full.unseen_acc, cut.unseen_acc)
    # each row agrees with the scalar columns computed from the same counts
    assert np.allclose(full.client_acc.mean(axis=1), full.metrics["test_acc_mean"], rtol=0, atol=1e-12)
    assert np.allclose(np.percentile(full.client_acc, 10, axis=1), full.metrics["test_acc_p10"], rtol=0, atol=1e-12)
    assert np.allclose(full.unseen_acc.mean(axis=1), full.metrics["test_acc_unseen"], rtol=0, atol=1e-12)
    ck = sorted((tmp_path / "cut" / "checkpoints").glob("ckpt-*.h5"))[-1]
    with h5py.File(ck) as f:
        assert np.array_equal(f["metrics/client_test_acc"][()], full.client_acc)
