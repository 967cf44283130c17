"""100,000 clients, 1% participation, eval sampling, on 2 ranks: a few rounds in bounded memory."""

import json
import os
import subprocess
import sys
import time


from tests.conftest import MPIEXEC, small_config, write_config

_WRAP = ("import atexit, sys\n"
         "def _hwm():\n"
         "    for line in open('/proc/self/status'):\n"
         "        if line.startswith('VmHWM'):\n"
         "            sys.stderr.write('VMHWM_KB ' + line.split()[1] + '\\n')\n"
         "atexit.register(_hwm)\n"
         "from fedmtl_hpc.cli import main\n"
         "sys.exit(main(sys.argv[1:]))\n")


def test_hundred_thousand_clients_on_two_ranks_in_bounded_memory(tmp_path):
    cfg = small_config(data={"n_clients": 100_000, "unseen_clients": 20, "max_train": 200, "test_per_client": 50},
                       train={"participation": 0.01}, run={"rounds": 3, "eval_every": 3, "eval_clients": 300},
                       checkpoint={"every": 3, "keep": 1})
    path = write_config(tmp_path / "big.yaml", cfg)
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-c", _WRAP, "run", str(path), "--run-dir", str(tmp_path / "r")]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.time() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    hwm = [int(line.split()[1]) for line in p.stderr.splitlines() if line.startswith("VMHWM_KB")]
    assert len(hwm) == 2, p.stderr
    assert max(hwm) < 1_200_000, f"peak RSS per rank {hwm} kB"      # eager: ~3 GB of samples per rank
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["round"] == 3 and 0.4 < summary["test_acc_mean"] <= 1.0, summary
    import csv
    rows = list(csv.DictReader(open(tmp_path / "r" / "metrics.csv")))
    assert float(rows[-1]["eval_clients"]) == 300
    print(f"100k clients, 2 ranks: {wall:.1f} s wall, VmHWM {hwm} kB")
