"""Without matplotlib the drawing commands exit 2 with the install hint; everything else works."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO, small_config, write_config

BLOCKER = '''
import sys
class _NoMatplotlib:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoMatplotlib())
'''


def _cli(tmp_path, *args):
    """fedmtl-hpc ARGS in a Python whose sitecustomize hides matplotlib."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fedmtl_hpc.cli", *args], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=300)


HINT = "pip install 'fedmtl_hpc[plot]'"


def test_drawing_commands_exit_2_and_run_still_works(compared, tmp_path):
    spec, out, _ = compared
    probe = _cli(tmp_path, "report", str(out / "runs" / "fedem-seed1"))
    assert probe.returncode == 2, probe.stderr
    assert probe.stderr.count("\n") == 1 and HINT in probe.stderr and "matplotlib is not installed" in probe.stderr
    cfg = write_config(tmp_path / "cfg.yaml", small_config(run={"rounds": 2, "eval_every": 1}))
    for args in (["topology", str(cfg), "--png", "g.png"], ["partition", str(cfg), "--png", "p.png"]):
        p = _cli(tmp_path, *args)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and HINT in p.stderr, (args, p.stderr)
        assert not (tmp_path / args[-1]).exists()
    # everything that does not draw works as before
    assert _cli(tmp_path, "topology", str(cfg)).returncode == 0
    p = _cli(tmp_path, "run", str(cfg), "--run-dir", "r")
    assert p.returncode == 0 and "done: 2 rounds" in p.stdout, p.stderr
    p = _cli(tmp_path, "compare", str(spec), "--collect", "--out", "c", "--runs", str(out / "runs"))
    assert p.returncode == 0 and (tmp_path / "c" / "table.md").is_file(), p.stderr
    check = _cli(tmp_path, "inspect", str(sorted((tmp_path / "r" / "checkpoints").glob("*.h5"))[-1]))
    assert check.returncode == 0 and "round 2/2" in check.stdout


def test_no_module_imports_the_deleted_png_encoder():
    assert not (REPO / "fedmtl_hpc" / "plotpng.py").exists()
    hits = [p for p in list((REPO / "fedmtl_hpc").rglob("*.py")) + list((REPO / "tests").rglob("*.py"))
            if "plotpng" in p.read_text() and p.name != "test_without_matplotlib.py"]
    assert hits == []
