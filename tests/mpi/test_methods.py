"""The personalized baselines (and Clustered FL, when present) under real ``mpiexec``.

Per method, one small workload (8 clients, 2 unseen, participation 0.5, 6 rounds):
  (a) 1, 2 and 4 ranks agree to 1e-5 in every deterministic metric column and in the
      final checkpoint's global model and per-client state;
  (b) stop after round 3 + resume gives a final checkpoint byte-identical to the
      uninterrupted 1-rank run of (a), and the same metrics;
  (c) a NaN stops the job with a message naming the client and the round: a NaN planted
      in ONE client's personal model (APFL, Ditto: the stopped run of (b), edited, then
      resumed on 2 ranks), else a diverging 2-rank run, where each rank names its first
      sampled client.
"""

import csv
import hashlib
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc.engine import sample_clients
from fedmtl_hpc.metrics import TIMING
from tests.conftest import REPO, fedmtl, small_config, write_config

pytestmark = pytest.mark.mpi

CLUSTERED = REPO / "fedmtl_hpc" / "algorithms" / "clustered.py"
PARAMS = {"fedprox": {"mu": 0.1}, "fedavg_plus": {}, "apfl": {}, "ditto": {},
          # lr 3.0 (the synthetic workload's) needs lr * lam < 1 for the outer pFedMe step
          "pfedme": {"lam": 0.3, "personal_lr": 1.0}, "clustered": {}}
METHODS = ["fedprox", "fedavg_plus", "apfl", "ditto", "pfedme",
           pytest.param("clustered", marks=pytest.mark.skipif(not CLUSTERED.exists(),
                                                               reason="fedmtl_hpc/algorithms/clustered.py not there yet"))]
PERSONAL = {"apfl": "v", "ditto": "v"}   # private state that feeds the next local update
SEED, N, ROUNDS, STOP = 1234, 8, 6, 3


def config(tmp_path: Path, method: str, **train) -> Path:
    cfg = small_config()
    cfg["algorithm"] = {"name": method, **({method: PARAMS[method]} if PARAMS[method] else {})}
    cfg["data"].update(n_clients=N, unseen_clients=2, test_per_client=20, max_train=60)
    cfg["run"].update(name=f"synthetic-{method}", seed=SEED, rounds=ROUNDS, eval_every=2)
    cfg["train"].update({"participation": 0.5, "batch_size": 32, **train})
    cfg["checkpoint"].update(every=2, keep=3)
    return write_config(tmp_path / f"{method}.yaml", cfg)


def metrics(run_dir) -> dict[str, np.ndarray]:
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def final_ckpt(run_dir) -> str:
    return ck.list_checkpoints(str(Path(run_dir) / "checkpoints"))[-1]


def arrays(path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        out = {"global/params": f["global/params"][()]}
        out.update({f"clients/state/{k}": v[()] for k, v in f["clients/state"].items()})
    return out


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("method", METHODS)
def test_ranks_agree_resume_is_exact_and_nan_names_client_and_round(tmp_path, method):
    cfg = config(tmp_path, method)
    run = {n: tmp_path / f"n{n}" for n in (1, 2, 4)}
    for n, d in run.items():  # 1 rank: a plain process
        fedmtl(["run", str(cfg), "--run-dir", str(d)], n=None if n == 1 else n, check=True)

    # (a) every deterministic column and the final state agree across rank counts
    m = {n: metrics(d) for n, d in run.items()}
    cols = [c for c in m[1] if c not in TIMING and c != "bytes_exchanged"]
    assert {"round", "train_loss", "test_acc_mean", "test_acc_unseen"} <= set(cols)
    assert m[1]["round"].tolist() == [2.0, 4.0, 6.0]
    state = {n: arrays(final_ckpt(d)) for n, d in run.items()}
    for n in (2, 4):
        assert list(m[n]) == list(m[1]) and state[n].keys() == state[1].keys()
        for c in cols:
            np.testing.assert_allclose(m[n][c], m[1][c], rtol=0, atol=1e-5, err_msg=f"{c} at {n} ranks")
        for k in state[1]:
            np.testing.assert_allclose(state[n][k], state[1][k], rtol=0, atol=1e-5, err_msg=f"{k} at {n} ranks")

    # (b) stop after round 3, resume: the same final file, byte for byte, as the uninterrupted run
    # (one plain process, to keep the file fast; tests/mpi/test_runs.py resumes on 2 ranks)
    cut = tmp_path / "cut"
    p = fedmtl(["run", str(cfg), "--run-dir", str(cut), "--set", f"run.stop_after={STOP}"])
    assert p.returncode == 3, p.stderr
    assert Path(final_ckpt(cut)).name == f"ckpt-{STOP:06d}.h5"
    poisoned = tmp_path / "poisoned"
    shutil.copytree(cut, poisoned)
    fedmtl(["resume", str(cut), "--set", "run.stop_after=0"], check=True)
    assert sha(final_ckpt(cut)) == sha(final_ckpt(run[1]))
    mc = metrics(cut)
    for c in [c for c in m[1] if c not in TIMING]:
        assert np.array_equal(mc[c], m[1][c]), c

    # (c) a NaN is reported naming client and round
    if method in PERSONAL:  # plant it in the personal model of one client sampled in round STOP + 1
        victim = int(np.flatnonzero(sample_clients(SEED, STOP, N, 0.5))[-1])
        with h5py.File(final_ckpt(poisoned), "r+") as f:
            f[f"clients/state/{PERSONAL[method]}"][victim, 0, 5] = np.nan
            f.attrs["content_sha256"] = ck._content_digest(f)[0]  # a written state, not a damaged file: re-seal
        p = fedmtl(["resume", str(poisoned), "--set", "run.stop_after=0"], n=2, timeout=120)
        assert p.returncode not in (0, 2, 3), p.stderr
        # (mpiexec merges the ranks' stderr: one rank's line may run on into the next's, so no ^ or $)
        assert re.search(rf"rank \d: numerical error: [^\n]*?personal model holds NaN or Inf on client {victim} "
                         rf"in round {STOP + 1}(?!\d)", p.stderr), p.stderr
        return
    # lr * weight_decay = 3e5: every step multiplies the parameters by ~ -3e5, so 13+ steps of
    # batch 4 overflow in round 1; each rank stops at its first sampled client
    p = fedmtl(["run", str(config(tmp_path, method, weight_decay=1e5, batch_size=4)),
                "--run-dir", str(tmp_path / "nan")], n=2, timeout=120)
    assert p.returncode not in (0, 2, 3), p.stderr
    mask = sample_clients(SEED, 0, N, 0.5)
    # the engine's dealing: contiguous blocks balanced by training samples (engine.deal)
    from fedmtl_hpc.config import load_config
    from fedmtl_hpc.data.synthetic import SyntheticMixture
    from fedmtl_hpc.engine import deal
    cfg = load_config(str(config(tmp_path, method)))
    bounds = deal(SyntheticMixture(cfg.data, SEED).train_sizes(), N, 2, 2)[0]
    blocks = {r: range(int(bounds[r]), int(bounds[r + 1])) for r in range(2)}
    first = {r: min(c for c in blocks[r] if mask[c]) for r in range(2) if mask[list(blocks[r])].any()}
    found = re.findall(r"rank (\d): numerical error: [^\n]*? on client (\d+) in round (\d+)", p.stderr)
    assert found, p.stderr
    for r, c, rnd in found:
        assert (int(c), int(rnd)) == (first[int(r)], 1), (found, first)
