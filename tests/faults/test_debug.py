"""``--debug-rank``: parsing, the install hint without debugpy, and a real listening rank under mpiexec."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from fedmtl_hpc import debug
from fedmtl_hpc.errors import ConfigError
from tests.conftest import MPIEXEC, fedmtl, rank_pids


def test_parse_rank_port_and_host():
    assert debug.parse("0") == debug.DebugTarget(0, "127.0.0.1", 5678)
    assert debug.parse("3:6000") == debug.DebugTarget(3, "127.0.0.1", 6000)
    assert debug.parse("1:0.0.0.0:5679") == debug.DebugTarget(1, "0.0.0.0", 5679)
    assert debug.parse("1:[::1]:5679") == debug.DebugTarget(1, "::1", 5679)
    for bad in ("", "x", "-1", "0:port", "0:host:", "0::5678", "0:99999"):
        with pytest.raises(ConfigError):
            debug.parse(bad)
    with pytest.raises(ConfigError, match="ranks 0..1"):
        debug.check_rank(debug.parse("2"), 2)


BLOCK = '''
import sys
class _NoDebugpy:  # test-only: behave as if debugpy were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "debugpy" or name.startswith("debugpy."):
            raise ImportError("debugpy blocked for the test")
        return None
sys.meta_path.insert(0, _NoDebugpy())
'''


@pytest.mark.mpi
def test_without_debugpy_exit_2_with_the_install_hint(tmp_path, cfg_file):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK)
    run_dir = tmp_path / "r"
    p = fedmtl(["run", str(cfg_file()), "--run-dir", str(run_dir), "--debug-rank", "1"], n=2,
               env={"PYTHONPATH": str(site)}, timeout=120)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert lines == ["debug error: --debug-rank needs debugpy, which is not installed: "
                     "pip install 'fedmtl_hpc[debug]' (or: pip install debugpy) in this environment"], p.stderr
    assert not run_dir.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.mpi
def test_debug_rank_listens_and_the_job_waits_for_the_ide(tmp_path, cfg_file):
    pytest.importorskip("debugpy")
    port = _free_port()
    run_dir = tmp_path / "dbg"
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "fedmtl_hpc.cli", "run", str(cfg_file()), "--run-dir",
           str(run_dir), "--debug-rank", f"1:127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        deadline, seen = time.time() + 90, ""
        while f"rank 1: debugpy listening on 127.0.0.1:{port}" not in seen:
            assert time.time() < deadline and proc.poll() is None, (seen, proc.poll())
            try:
                seen += lines.get(timeout=1)
            except queue.Empty:
                pass
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # the IDE's side: the port takes connections, on the loopback address
        time.sleep(2)
        assert proc.poll() is None, "the job waits for the debugger"
        assert not (run_dir / "metrics.csv").exists() and not (run_dir / "checkpoints").exists()
        assert len(rank_pids(str(run_dir))) == 2
    finally:
        for pid in rank_pids(str(run_dir)):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    deadline = time.time() + 15  # debugpy's adapter process goes with its rank
    while time.time() < deadline and _adapters(port):
        time.sleep(0.5)
    assert not _adapters(port)


def _adapters(port: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if any(b"debugpy" in c for c in cmd) and str(port).encode() in cmd:
                out.append(int(d))
    return out
