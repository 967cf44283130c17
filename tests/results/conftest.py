"""A small compare (3 methods x 2 seeds + one broken method) run once for the results tests."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import fedmtl, small_config, write_config

METHODS = ("fedem", "fedavg", "local")
SEEDS = (1, 2)


@pytest.fixture(scope="session")
def compared(tmp_path_factory):
    """``mpiexec -n 2 fedmtl-hpc compare SPEC --run``: returns (spec path, out dir, process)."""
    root = tmp_path_factory.mktemp("compare")
    base = small_config(run={"rounds": 4, "eval_every": 2}, checkpoint={"every": 2, "keep": 2})
    base["data"].update(n_clients=12, unseen_clients=3, test_per_client=50, max_train=120)
    write_config(root / "base.yaml", base)
    spec = {"name": "tiny", "base": "base.yaml", "seeds": list(SEEDS),
            "methods": [*METHODS, {"name": "fedavg", "label": "fedavg-broken", "set": ["train.lr=-1"]}]}
    (root / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = root / "out"
    p = fedmtl(["compare", str(root / "spec.yaml"), "--run", "--out", str(out)], n=2, cwd=str(root), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return root / "spec.yaml", out, p
