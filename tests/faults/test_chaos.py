"""Repeated crashes (bench/chaos.py): SIGKILL a random rank at random moments, resume, again.

Ten kill/resume cycles on a small fast config (16 clients, a checkpoint and a metrics row
every round) under ``mpiexec -n 2``: every kill ends the whole job within seconds, no rank
survives, every visible checkpoint verifies after every kill (kills during checkpoint writes
included), no temporary file is left at the end, and the final checkpoint is byte-identical
(SHA-256) to an uninterrupted run's.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.mpi


def _chaos():
    spec = importlib.util.spec_from_file_location("bench_chaos", REPO / "bench" / "chaos.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_chaos"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_ten_kill_and_resume_cycles_end_byte_identical(tmp_path):
    chaos = _chaos()
    cfg = tmp_path / "chaos.yaml"
    cfg.write_text(yaml.safe_dump(chaos.small_chaos_config(rounds=40)))
    lines = []
    res = chaos.run_chaos(cfg, tmp_path / "work", cycles=10, ranks=2, seed=11, max_rounds_per_cycle=2,
                          target_checkpoint=0.3, startup_kills=0.1, job_timeout=240, log=lines.append)
    report = "\n".join(lines)
    print(report)
    assert res["kills"] == 10, report
    assert res["cycles_survived"] == 10, report
    for r in res["records"]:
        assert r["exit"] != 0 and not r["ranks_left"] and r["invalid_visible_checkpoints"] == 0, (r, report)
        assert r["kill_to_end_s"] < 30, (r, report)
    assert res["kills_during_checkpoint_write"] >= 1, report
    assert res["final_exit"] == 0, (res["final_stderr_tail"], report)
    assert res["temporaries_left"] == [], report
    assert res["final_identical"], report
