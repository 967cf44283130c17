"""The hang watchdog and SIGUSR2 stacks under real mpiexec and real signals (docs/debugging.md).

A SIGSTOPped rank and a rank spinning forever in Python must end the job by themselves
within the watchdog limit (+ 15 s), naming the rank; SIGUSR2 prints stacks and the run goes
on; a normal run never prints a watchdog line. Plus the report logic without MPI.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc import watchdog as wd
from fedmtl_hpc.comm.base import SelfWatchChannel
from tests.conftest import MPIEXEC, fedmtl, rank_pids

LIMIT = 8  # run.watchdog_s in the hang tests: short, yet far above a round (~0.05 s) on a loaded machine


def launch(cfg: Path, run_dir: Path, n: int, *extra: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "fedmtl_hpc.cli", "run", str(cfg), "--run-dir", str(run_dir),
           *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not ck.list_checkpoints(str(run_dir / "checkpoints")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.1)


def rank_of(pid: int) -> int:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(e for e in env if e.startswith(b"PMI_RANK=")).split(b"=", 1)[1])


def cleanup(run_dir: Path, proc: subprocess.Popen) -> None:
    """Nothing left running: wake and kill any rank of this run, then mpiexec."""
    for pid in rank_pids(str(run_dir)):
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    if proc.poll() is None:
        proc.kill()
    proc.communicate()
    deadline = time.time() + 10   # a SIGKILLed rank needs a moment to leave the process table under load
    while rank_pids(str(run_dir)) and time.time() < deadline:
        time.sleep(0.1)


def report_table(err: str) -> dict[int, str]:
    """rank -> its line in the watchdog's table (``watchdog:   ranks 0-1,3: round 5, exchange, ...``)."""
    out = {}
    for m in re.finditer(r"^watchdog:   ranks? ([\d,-]+): (.*)$", err, re.M):
        for part in m.group(1).split(","):
            lo, _, hi = part.partition("-")
            for r in range(int(lo), int(hi or lo) + 1):
                out[r] = m.group(2)
    return out


def assert_checkpoint_verifies(run_dir: Path) -> None:
    newest = ck.newest_valid(str(run_dir / "checkpoints"))
    assert newest is not None
    p = fedmtl(["inspect", newest])
    assert p.returncode == 0, p.stderr


@pytest.mark.mpi
def test_sigstopped_rank_is_named_and_the_job_ends_within_the_limit(tmp_path, cfg_file):
    cfg = cfg_file(run={"rounds": 100000, "eval_every": 50, "watchdog_s": LIMIT}, checkpoint={"every": 2, "keep": 2})
    run_dir = tmp_path / "stopped"
    proc = launch(cfg, run_dir, 4)
    try:
        wait_for_checkpoint(run_dir, proc)
        pids = {rank_of(p): p for p in rank_pids(str(run_dir))}
        assert sorted(pids) == [0, 1, 2, 3], pids
        time.sleep(1.5)  # mid-run, after a few heartbeats
        os.kill(pids[2], signal.SIGSTOP)
        t0 = time.time()
        out, err = proc.communicate(timeout=LIMIT + 15)
        elapsed = time.time() - t0
    finally:
        cleanup(run_dir, proc)
    print(f"job ended {elapsed:.1f} s after SIGSTOP (limit {LIMIT} s)")
    assert proc.returncode not in (0, 3), (out, err)
    assert elapsed < LIMIT + 15, elapsed
    assert "watchdog: rank 2 sent no heartbeat" in err, err
    table = report_table(err)  # every rank's round and phase (the others may wait in different collectives:
    for r in (0, 1, 3):        # rank 0 in a checkpoint's gather, the rest already in the next round's allreduce)
        assert re.match(r"round \d+, [a-z -]+, inside \w+", table[r]), (r, err)
    assert re.match(r"silent for [\d.]+ s; its last heartbeat said: round \d+|never reported", table[2]), err
    assert "did not reach it" in err or "wait in collective" in err, err
    for r in (0, 1, 3):  # every rank that can still print has its main thread's stack in the output
        assert re.search(rf"^\[rank {r}\]   File .*fedmtl_hpc/", err, re.M), (r, err)
    assert "[rank 2]" not in err
    assert "watchdog:" in (run_dir / "run.log").read_text()  # the reporter (rank 0) logs the report too
    assert_checkpoint_verifies(run_dir)
    assert not rank_pids(str(run_dir)), "no rank survives"


SPIN = '''
import os
_spec = os.environ.get("FEDMTL_TEST_SPIN")  # RANK:ROUND -- test-only, loaded via PYTHONPATH
if _spec and os.environ.get("PMI_RANK") == _spec.split(":")[0]:
    import fedmtl_hpc.loop as _loop
    _run, _at = _loop.Loop.run, int(_spec.split(":")[1])

    def _spin_forever_in_user_code():
        x = 0
        while True:
            x += 1

    def run(self):
        step = self.step

        def hanging_step():
            if self.round + 1 == _at:
                _spin_forever_in_user_code()
            return step()
        self.step = hanging_step
        return _run(self)
    _loop.Loop.run = run
'''


@pytest.mark.mpi
def test_rank_spinning_in_python_is_named_with_its_stack(tmp_path, cfg_file):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(SPIN))
    cfg = cfg_file(run={"rounds": 100000, "eval_every": 50, "watchdog_s": LIMIT}, checkpoint={"every": 2, "keep": 2})
    run_dir = tmp_path / "spin"
    proc = launch(cfg, run_dir, 4, env={"PYTHONPATH": str(site), "FEDMTL_TEST_SPIN": "1:5"})
    try:
        t0 = time.time()
        out, err = proc.communicate(timeout=120)
        elapsed = time.time() - t0
    finally:
        cleanup(run_dir, proc)
    assert proc.returncode not in (0, 3), (out, err)
    assert "watchdog: rank 1 is not inside any collective" in err, err
    assert re.search(r"ranks 0,2-3 wait in collective #\d+ \(allreduce, round 5, exchange\); rank 1 did not reach it",
                     err), err
    assert re.search(r"watchdog: +rank 1: round 5, local work, working", err), err
    assert re.search(r"^\[rank 1\]   File .*sitecustomize.py.* in _spin_forever_in_user_code", err, re.M), err
    assert elapsed < 90, elapsed
    assert not rank_pids(str(run_dir))


@pytest.mark.mpi
def test_sigusr2_prints_stacks_and_the_run_finishes_without_a_watchdog_line(tmp_path, cfg_file):
    """Default watchdog settings (auto limit): a normal run never triggers it."""
    cfg = cfg_file(run={"rounds": 200, "eval_every": 100}, checkpoint={"every": 10, "keep": 1})
    run_dir = tmp_path / "usr2"
    proc = launch(cfg, run_dir, 2)
    try:
        wait_for_checkpoint(run_dir, proc)
        pids = {rank_of(p): p for p in rank_pids(str(run_dir))}
        os.kill(pids[1], signal.SIGUSR2)
        out, err = proc.communicate(timeout=180)
    finally:
        cleanup(run_dir, proc)
    assert proc.returncode == 0, (out, err)
    assert "most recent call first" in err and "fedmtl_hpc/" in err, err
    assert "done: 200 rounds" in out
    assert "watchdog:" not in out + err  # (the SIGUSR2 stack shows the watchdog thread itself: watchdog.py)
    assert "watchdog" not in (run_dir / "run.log").read_text()


# -- the report without MPI: records as the observers would hold them ----------------------------

def _rec(rnd, phase, seq, inside, op=wd.ALLREDUCE, stall=9.0, limit=8.0):
    return np.array([rnd, phase, seq, inside, op, stall, 1, limit], dtype=np.float64)


def test_report_names_silent_busy_and_missing_ranks():
    dog = wd.Watchdog(SelfWatchChannel(), 0, 5, 8, abort=lambda code: None)
    now = 100.0
    dog._seen = {0: (_rec(7, wd.EXCHANGE, 20, 1), now), 1: (_rec(7, wd.EXCHANGE, 20, 1), now - 0.5),
                 2: (_rec(6, wd.LOCAL, 18, 0), now - 9.0),            # silent: SIGSTOPped
                 3: (_rec(7, wd.LOCAL, 19, 0), now - 0.4)}             # alive, spinning in local work
    text = dog.report(now)                                             # rank 4 never reported
    assert "ranks 2,4 sent no heartbeat" in text
    assert "rank 3 is not inside any collective" in text
    assert "ranks 0-1 wait in collective #20 (allreduce, round 7, exchange); ranks 2-4 did not reach it" in text
    assert "rank 2: silent for 9.0 s; its last heartbeat said: round 6, local work, working (last collective #18)" \
        in text
    assert "rank 4: never reported" in text


def test_auto_limit_scales_with_the_slowest_round_and_marks_are_cheap():
    assert wd.auto_limit(0.5) == 120.0 and wd.auto_limit(30.0) == 600.0
    t0 = time.perf_counter()
    for i in range(10000):
        wd.phase(wd.LOCAL, i)
        wd.enter(wd.ALLREDUCE)
        wd.leave()
    assert (time.perf_counter() - t0) / 10000 < 50e-6  # a round's marks: microseconds, not milliseconds


def test_fired_watchdog_prints_the_stack_and_aborts(capfd):
    """One rank (no MPI): the main thread stops marking; the thread reports, dumps stacks, aborts."""
    codes = []
    dog = wd.Watchdog(SelfWatchChannel(), 0, 1, 1, period=0.05, grace=0.0, abort=codes.append)
    dog.start()
    wd.phase(wd.EVALUATION, 3)
    deadline = time.time() + 10
    while not codes and time.time() < deadline:
        time.sleep(0.05)  # "stuck": no marks
    dog._stop.set()
    assert codes == [1]
    err = capfd.readouterr().err
    assert "[rank 0] watchdog: no progress for" in err and "round 3, evaluation" in err
    assert "test_fired_watchdog_prints_the_stack_and_aborts" in err  # the main thread's stack
    assert "in _fire" not in err                                       # not the watchdog thread's own
