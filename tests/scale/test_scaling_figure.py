"""bench/scale.py's JSON -> the weak- and strong-scaling figure (plotting.scaling_figure)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("matplotlib")


def test_scaling_figure_renders_from_a_small_json(tmp_path):
    rows = [{"clients": n, "ranks": r, "path": p, "participation": 1.0, "trained": n,
             "setup_s": 0.5, "s_round": n / 1e4 / r * (4 if p == "loop" else 1), "hwm_mb": [300.0] * r}
            for n in (300, 10000) for r in (1, 2) for p in ("loop", "batched")]
    src = tmp_path / "scale.json"
    src.write_text(json.dumps({"date": "2026-12-01", "rows": rows}))
    png = tmp_path / "scale.png"
    p = subprocess.run([sys.executable, str(REPO / "bench" / "scale.py"), "--from-json", str(src), "--png", str(png)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    from PIL import Image
    with Image.open(png) as im:
        assert im.size[0] == round(3.4 * 300) and im.size[1] > 600
