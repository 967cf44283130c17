"""Repeated crashes: SIGKILL a random rank at a random moment, resume, again; the end result must not change.

For each of ``--cycles`` cycles: start the run (``fedmtl-hpc run``, or ``resume`` once a
checkpoint exists) under ``mpiexec -n --ranks``, wait a random moment (seeded RNG: a random
number of rounds after training (re)started, read from the progress lines, plus a random part
of a round; sometimes during start-up instead), then SIGKILL one randomly chosen rank. With probability ``--target-checkpoint`` the kill waits,
after that delay, for the moment rank 0 is writing a checkpoint (its hidden temporary file is
there) and strikes then; otherwise it lands wherever the job is: local work, the exchange,
an evaluation, a checkpoint write, or still in start-up. The tool then waits for the whole job
to end (every rank gone) and checks what is on disk: every visible ``ckpt-*.h5`` verifies.
After the last cycle the run is resumed to its end and its final checkpoint is compared
(SHA-256) with an uninterrupted run of the same config.

Printed: cycles survived, for each cycle the rank killed, the phase hit, the round reached
and the round resumed from (rounds recomputed = rounds completed before the kill that the
next start does again), and the longest time from the kill to the end of the job.

    .venv/bin/python bench/chaos.py --cycles 10 --ranks 2 --seed 1
    .venv/bin/python bench/chaos.py --config my.yaml --cycles 20 --ranks 4 --target-checkpoint 0.5

Importable: ``run_chaos(config, workdir, cycles, ranks, seed, ...)`` returns the figures as a dict
(tests/faults/test_chaos.py calls it on a small config).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from fedmtl_hpc import checkpoint as ck  # noqa: E402
from fedmtl_hpc.errors import CheckpointError  # noqa: E402

__all__ = ["run_chaos", "small_chaos_config", "main"]

_BIN = Path(sys.executable).parent
_ROUND_LINE = re.compile(r"^\s*round\s+(\d+)/", re.M)
_RESUMED = re.compile(r"resumed from \S+ at round (\d+)")


def small_chaos_config(rounds: int = 120) -> dict:
    """The default synthetic config shrunk to fast rounds: 16 clients, a checkpoint and a metrics row every round."""
    import yaml
    cfg = yaml.safe_load((_ROOT / "configs" / "synthetic_fedem.yaml").read_text())
    cfg["data"].update(n_clients=16, unseen_clients=0, test_per_client=50, max_train=200, dim=20)
    cfg["run"].update(rounds=rounds, eval_every=1)
    cfg["train"].update(participation=0.5)
    cfg["checkpoint"].update(every=1, keep=2)
    return cfg


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cmd(ranks: int, args: list[str]) -> list[str]:
    return [str(_BIN / "mpiexec"), "-n", str(ranks), sys.executable, "-m", "fedmtl_hpc.cli", *args]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def rank_pids(marker: str) -> dict[int, int]:
    """{MPI rank: pid} of the fedmtl-hpc processes whose command line contains marker."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
            if not (cmd and b"python" in cmd[0] and b"fedmtl_hpc.cli" in cmd and any(marker.encode() in c for c in cmd)):
                continue
            env = dict(kv.split(b"=", 1) for kv in Path(f"/proc/{d}/environ").read_bytes().split(b"\0") if b"=" in kv)
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError):
            continue
        if state != "Z" and b"PMI_RANK" in env:
            out[int(env[b"PMI_RANK"])] = int(d)
    return out


def _checkpoint_writing(ckdir: Path) -> bool:
    try:
        return any(n.startswith(".ckpt-") and ".tmp" in n for n in os.listdir(ckdir))
    except OSError:
        return False


def _check_disk(ckdir: Path) -> tuple[int | None, int]:
    """(round of the newest checkpoint, number of visible checkpoints that do NOT verify)."""
    bad, newest = 0, None
    for p in ck.list_checkpoints(str(ckdir)):
        try:
            newest = ck.verify(p)["round"]
        except CheckpointError:
            bad += 1
    return newest, bad


class _Watch:
    """Reads a job's stdout and stderr in threads: the newest round printed, and whether training began."""

    def __init__(self, proc):
        import threading
        self.out, self.err, self.round, self.started = [], [], None, False
        self.threads = [threading.Thread(target=self._read, args=(proc.stdout, self.out, True), daemon=True),
                        threading.Thread(target=self._read, args=(proc.stderr, self.err, False), daemon=True)]
        for t in self.threads:
            t.start()

    def _read(self, stream, sink, parse):
        for line in stream:
            sink.append(line)
            if parse:
                if line.startswith(("run directory:", "resumed from")):
                    self.started = True
                m = _ROUND_LINE.match(line)
                if m:
                    self.round = int(m.group(1))

    def join(self) -> tuple[str, str]:
        for t in self.threads:
            t.join(timeout=30)
        return "".join(self.out), "".join(self.err)


def run_chaos(config: str | os.PathLike, workdir: str | os.PathLike, cycles: int = 10, ranks: int = 2,
              seed: int = 0, max_rounds_per_cycle: int = 6, target_checkpoint: float = 0.3,
              startup_kills: float = 0.1, job_timeout: float = 300.0, log=print) -> dict:
    """Run the chaos loop; returns the figures (see the module docstring).

    Each kill lands 0..max_rounds_per_cycle rounds after training (re)started plus a random part
    of a round (or, with probability startup_kills, during start-up; with probability
    target_checkpoint, at the next checkpoint write after that moment)."""
    import yaml
    total_rounds = int(yaml.safe_load(Path(config).read_text())["run"]["rounds"])
    rng = random.Random(seed)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    ref_dir, run_dir = work / "reference", work / "chaos"
    for d in (ref_dir, run_dir):
        if d.exists():
            shutil.rmtree(d)
    ckdir = run_dir / "checkpoints"

    t0 = time.time()
    p = subprocess.run(_cmd(ranks, ["run", str(config), "--run-dir", str(ref_dir)]), capture_output=True,
                       text=True, env=_env(), timeout=job_timeout)
    if p.returncode != 0:
        raise RuntimeError(f"the uninterrupted reference run failed ({p.returncode}):\n{p.stderr}")
    ref_final = ck.list_checkpoints(str(ref_dir / "checkpoints"))[-1]
    s_per_round = (time.time() - t0) / total_rounds  # an upper bound (start-up included)
    log(f"reference: {Path(ref_final).name} in {time.time() - t0:.1f} s, sha256 {_sha(ref_final)[:16]}")

    def cycles_left(c):
        return cycles - c

    records, fresh_starts = [], 0
    for cycle in range(1, cycles + 1):
        newest, bad = _check_disk(ckdir)
        if newest is None and run_dir.exists():  # killed before its first checkpoint: start afresh
            shutil.rmtree(run_dir)
            fresh_starts += 1
        args = (["resume", str(run_dir)] if newest is not None
                else ["run", str(config), "--run-dir", str(run_dir)])
        # the moment: a random number of rounds after training (re)starts, plus a random part of a round
        rounds_left = max(total_rounds - (newest or 0), 1)
        offset = rng.randint(0, max(0, min(max_rounds_per_cycle, rounds_left - cycles_left(cycle) - 1)))
        extra = rng.uniform(0.0, 1.0) * s_per_round
        in_startup = rng.random() < startup_kills
        aim_ckpt = rng.random() < target_checkpoint
        victim = rng.randrange(ranks)
        start = time.time()
        proc = subprocess.Popen(_cmd(ranks, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_env())
        watch = _Watch(proc)
        phase = "random"
        if in_startup:
            phase = "start-up"
            while proc.poll() is None and victim not in rank_pids(str(run_dir)) and time.time() < start + 60:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))
        else:
            first = None
            while proc.poll() is None and time.time() < start + job_timeout:
                if watch.started and first is None:
                    first = watch.round if watch.round is not None else (newest or 0)
                if first is not None and (watch.round or 0) >= first + offset:
                    break
                time.sleep(0.005)
            time.sleep(extra)
            if aim_ckpt and proc.poll() is None:
                deadline = time.time() + 10.0
                while proc.poll() is None and time.time() < deadline and not _checkpoint_writing(ckdir):
                    time.sleep(0.0005)
                phase = "checkpoint write" if _checkpoint_writing(ckdir) else "random (no write seen)"
        delay = time.time() - start
        pids = rank_pids(str(run_dir))
        while proc.poll() is None and victim not in pids and time.time() < start + 60:
            time.sleep(0.01)
            pids = rank_pids(str(run_dir))
        t_kill = None
        if proc.poll() is None and victim in pids:
            try:
                os.kill(pids[victim], signal.SIGKILL)
                t_kill = time.time()
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=job_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError(f"cycle {cycle}: the job did not end within {job_timeout} s after the kill")
        t_end = time.time()
        out, err = watch.join()
        deadline = time.time() + 30
        while rank_pids(str(run_dir)) and time.time() < deadline:
            time.sleep(0.05)
        survivors = sorted(rank_pids(str(run_dir)).values())
        reached = max((int(r) for r in _ROUND_LINE.findall(out)), default=None)
        m = _RESUMED.search(out)
        resumed_from = int(m.group(1)) if m else (newest or 0)  # killed before it said: what it would load
        newest, bad = _check_disk(ckdir)
        rec = {"cycle": cycle, "command": args[0], "rank_killed": victim if t_kill else None,
               "pid": pids.get(victim), "delay_s": round(delay, 3), "phase": phase if t_kill else "job had ended",
               "started_at_round": resumed_from, "round_reached": reached, "exit": proc.returncode,
               "kill_to_end_s": round(t_end - t_kill, 3) if t_kill else None,
               "newest_checkpoint": newest, "invalid_visible_checkpoints": bad, "ranks_left": survivors,
               "stderr_tail": err.strip().splitlines()[-3:]}
        records.append(rec)
        log(f"cycle {cycle:>2}: {args[0]:<6} from round {resumed_from:>3}, killed rank {rec['rank_killed']} "
            f"after {delay:.2f} s ({rec['phase']}) at round {reached}, exit {proc.returncode}, "
            f"job ended {rec['kill_to_end_s']} s after the kill; newest valid checkpoint: round {newest}"
            + (f"; {bad} INVALID visible checkpoint(s)" if bad else "") + (f"; ranks left {survivors}" if survivors else ""))

    # the next start resumes from the newest valid checkpoint: completed rounds beyond it are done again
    for rec in records:
        rec["rounds_recomputed"] = max((rec["round_reached"] or 0) - (rec["newest_checkpoint"] or 0), 0)
    p = subprocess.run(_cmd(ranks, ["resume", str(run_dir)] if _check_disk(ckdir)[0] is not None
                            else ["run", str(config), "--run-dir", str(run_dir)]),
                       capture_output=True, text=True, env=_env(), timeout=job_timeout)
    final = ck.list_checkpoints(str(ckdir))[-1] if ck.list_checkpoints(str(ckdir)) else None
    identical = p.returncode == 0 and final is not None and _sha(final) == _sha(ref_final)
    killed = [r for r in records if r["rank_killed"] is not None]
    result = {
        "cycles": cycles, "ranks": ranks, "seed": seed,
        "cycles_survived": sum(1 for r in killed if not r["ranks_left"] and r["invalid_visible_checkpoints"] == 0),
        "kills": len(killed), "fresh_starts": fresh_starts,
        "kills_during_checkpoint_write": sum(1 for r in killed if r["phase"] == "checkpoint write"),
        "rounds_recomputed": [r["rounds_recomputed"] for r in records],
        "longest_kill_to_end_s": max((r["kill_to_end_s"] for r in killed), default=None),
        "final_exit": p.returncode, "final_identical": identical,
        "temporaries_left": sorted(str(x) for x in run_dir.rglob(".*tmp*")),
        "final_sha256": final and _sha(final), "reference_sha256": _sha(ref_final),
        "records": records, "wall_s": round(time.time() - t0, 1),
        "final_stderr_tail": p.stderr.strip().splitlines()[-3:],
    }
    log(f"cycles survived {result['cycles_survived']}/{cycles} ({len(killed)} kills, "
        f"{result['kills_during_checkpoint_write']} during a checkpoint write, {fresh_starts} fresh starts); "
        f"rounds recomputed per cycle {result['rounds_recomputed']}; longest kill -> end of job "
        f"{result['longest_kill_to_end_s']} s; final checkpoint "
        f"{'IDENTICAL to' if identical else 'DIFFERS from'} the uninterrupted run's "
        f"(sha256 {(result['final_sha256'] or 'none')[:16]}); {result['wall_s']} s in all")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="YAML config (default: a small fast one, see small_chaos_config)")
    ap.add_argument("--rounds", type=int, default=120, help="rounds of the default config")
    ap.add_argument("--workdir", default="runs/chaos")
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-rounds-per-cycle", type=int, default=6,
                    help="a kill lands 0..this many rounds after training (re)starts, plus a part of a round")
    ap.add_argument("--startup-kills", type=float, default=0.1, help="probability that a kill lands in start-up")
    ap.add_argument("--target-checkpoint", type=float, default=0.3,
                    help="probability that a kill waits for a checkpoint write")
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args(argv)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    config = a.config
    if not config:
        import yaml
        config = work / "chaos.yaml"
        config.write_text(yaml.safe_dump(small_chaos_config(a.rounds)))
    print(f"# chaos: {a.cycles} cycles, mpiexec -n {a.ranks}, seed {a.seed}, date {time.strftime('%Y-%m-%d %H:%M:%S %z')}, "
          f"load avg {os.getloadavg()[0]:.2f}", flush=True)
    res = run_chaos(config, work, a.cycles, a.ranks, a.seed, a.max_rounds_per_cycle, a.target_checkpoint,
                    a.startup_kills, log=lambda m: print(m, flush=True))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0 if res["final_identical"] and res["cycles_survived"] == res["kills"] else 1


if __name__ == "__main__":
    sys.exit(main())
