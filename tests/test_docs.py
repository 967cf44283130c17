"""The docs keep step with the code: config keys in the README, HDF5 objects in the format doc."""

import re
from pathlib import Path

import numpy as np
import yaml

from fedmtl_hpc import checkpoint as ck
from fedmtl_hpc.config import parse_config, reference, reference_markdown

REPO = Path(__file__).resolve().parents[1]


def test_readme_documents_every_config_key():
    text = (REPO / "README.md").read_text()
    missing = [k for k, _, _ in reference() if f"`{k}`" not in text]
    assert not missing, f"README config reference lacks {missing}"
    assert reference_markdown() in text, "README's config table differs from config.reference_markdown()"


def test_readme_starts_with_two_commands():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    first = [line for line in blocks[0].splitlines() if line.strip() and not line.startswith("#")]
    assert len(first) == 2 and "mpiexec -n 8" in first[0] and "env/test.sh" in first[1]
    assert "bash .ci/run" not in first[1] and "env/test.sh" in (REPO / ".ci" / "run").read_text()


def test_shipped_default_config_is_the_embedded_default():
    raw = yaml.safe_load((REPO / "configs" / "synthetic_fedem.yaml").read_text())
    assert parse_config(raw) == parse_config({})


def test_format_doc_names_every_object_a_checkpoint_holds(tmp_path):
    snap = ck.Snapshot(round=1, algorithm="fedem", config_text="x", shared=np.zeros((1, 2), np.float32),
                       layout=[], client_ids=np.arange(2), client_weight=np.ones(2),
                       client_state={"pi": np.ones((2, 1), np.float32)}, seed=1,
                       partition={"kind": "k", "seed": 1, "sha256": "s"}, groups={"algorithm": {"attrs": {"name": "fedem"}, "arrays": {}}},
                       metrics={"round": np.ones(1)})
    import h5py
    names = []
    with h5py.File(ck.save(snap, str(tmp_path), keep=1)) as f:
        f.visit(names.append)
        attrs = list(f.attrs)
    doc = (REPO / "docs" / "checkpoint-format.md").read_text()
    for n in names:
        generic = re.sub(r"^(clients/state|metrics)/.*", r"\1/<", n)
        assert f"`/{generic}" in doc, f"/{n} is not documented"
    for a in attrs:
        assert f"`{a}`" in doc, f"root attribute {a} is not documented"
