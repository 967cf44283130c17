"""``fedmtl-hpc compare``: --run writes tables whose every number comes from the runs' own files;
--collect gives the same tables and picks out exactly the SPEC's runs; failures are listed."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from fedmtl_hpc.commands.compare import format_value, unit_for
from tests.conftest import fedmtl
from tests.results.conftest import METHODS, SEEDS

KEYS = ("test_acc_mean", "test_acc_weighted", "test_acc_p10", "test_acc_unseen", "train_loss",
        "bytes_exchanged", "seconds_per_round")


def _own_numbers(run_dir) -> dict:
    """The table's numbers for one run, from summary.json and metrics.csv only (no fedmtl_hpc code)."""
    s = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    col = lambda c: np.array([float(r[c]) for r in rows])  # noqa: E731
    t = sum(float(np.sum(col(c))) for c in ("t_compute", "t_exchange", "t_eval", "t_checkpoint"))
    assert s["status"] == "done" and s["round"] == int(float(rows[-1]["round"]))
    return {**{k: float(s[k]) for k in KEYS[:5]}, "bytes_exchanged": float(np.sum(col("bytes_exchanged"))),
            "seconds_per_round": t / s["round"]}


def _stats(values) -> dict:
    v = np.array(values)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)), "min": float(v.min()), "max": float(v.max())}


def _table(out) -> dict:
    with open(out / "table.csv", newline="") as fh:
        return {r["method"]: r for r in csv.DictReader(fh)}


def test_run_writes_tables_from_the_runs_own_files(compared):
    spec, out, proc = compared
    table = _table(out)
    assert list(table) == [*METHODS, "fedavg-broken"]
    md = (out / "table.md").read_text()
    lines = {ln.split(" | ")[0].lstrip("| "): ln for ln in md.splitlines() if ln.startswith("| ")}
    expected = {}
    for m in METHODS:
        runs = [out / "runs" / f"{m}-seed{s}" for s in SEEDS]
        own = [_own_numbers(r) for r in runs]
        expected[m] = {k: _stats([o[k] for o in own]) for k in KEYS}
        row = table[m]
        assert (row["runs_done"], row["runs_total"], row["seeds"]) == ("2", "2", "1 2")
        for k in KEYS:
            for s in ("mean", "std", "min", "max"):
                assert float(row[f"{k}_{s}"]) == expected[m][k][s], (m, k, s)
    for k in KEYS:  # the Markdown shows the same numbers, in one unit per column, best mean in bold
        unit, div = unit_for(k, [expected[m][k]["mean"] for m in METHODS])
        col = 2 + KEYS.index(k)
        better = max if k.startswith("test_acc") else min
        best = format_value(k, better(expected[m][k]["mean"] for m in METHODS), div)
        for m in METHODS:
            e = expected[m][k]
            mean = format_value(k, e["mean"], div)
            text = f"{'**' + mean + '**' if mean == best else mean} ± {format_value(k, e['std'], div)} " \
                   f"({format_value(k, e['min'], div)}–{format_value(k, e['max'], div)})"
            assert lines[m].strip("| \n").split(" | ")[col] == text, (m, k)
        assert f"({unit})" in lines["method"] or not unit
    # the broken method: listed as failed, never averaged in
    assert table["fedavg-broken"]["runs_done"] == "0" and table["fedavg-broken"]["test_acc_mean_mean"] == "nan"
    failed = md.split("## Failed or unfinished runs")[1]
    assert failed.count("**failed**") == 2 and "train.lr must be > 0" in failed
    assert "cell 7" in failed and "cell 8" in failed
    with open(out / "cells.csv", newline="") as fh:
        cells = list(csv.DictReader(fh))
    assert [c["status"] for c in cells] == ["done"] * 6 + ["failed"] * 2
    for c in cells[:6]:  # cells are identified by the resolved config hash, as in summary.json
        s = json.loads((out / "runs" / f"{c['method']}-seed{c['seed']}" / "summary.json").read_text())
        assert s["config_sha256"] == c["config_sha256"]
    assert "cell 7 fedavg-broken-seed1: config error: train.lr must be > 0" in proc.stdout


def test_collect_gives_identical_tables_and_only_the_specs_runs(compared, tmp_path):
    spec, out, _ = compared
    again = tmp_path / "again"
    p = fedmtl(["compare", str(spec), "--collect", "--out", str(again), "--runs", str(out / "runs")],
               cwd=str(spec.parent))
    assert p.returncode == 0, p.stderr
    for name in ("table.md", "table.csv", "cells.csv"):
        assert (again / name).read_text() == (out / name).read_text(), name
    # mix in runs of other configs, a duplicate that never finished, and a copy with another seed
    mixed = tmp_path / "mixed"
    shutil.copytree(out / "runs", mixed / "runs")
    other = mixed / "runs" / "other-config"
    shutil.copytree(out / "runs" / "fedem-seed1", other)
    (other / "config.yaml").write_text((other / "config.yaml").read_text().replace("rounds: 4", "rounds: 40"))
    s = json.loads((other / "summary.json").read_text())
    s.update(config_sha256="0" * 64, test_acc_mean=0.0)
    (other / "summary.json").write_text(json.dumps(s))
    half = mixed / "runs" / "zz-unfinished-copy"
    shutil.copytree(out / "runs" / "fedavg-seed2", half)
    (half / "summary.json").unlink()
    p = fedmtl(["compare", str(spec), "--collect", "--out", str(mixed)], cwd=str(spec.parent))
    assert p.returncode == 0, p.stderr
    assert (mixed / "table.csv").read_text() == (out / "table.csv").read_text()
    assert "other-config" not in (mixed / "cells.csv").read_text()
    assert "zz-unfinished-copy" not in (mixed / "cells.csv").read_text()
    # a cell whose only run did not finish: listed as unfinished, not averaged in
    shutil.rmtree(mixed / "runs" / "fedavg-seed2")
    p = fedmtl(["compare", str(spec), "--collect", "--out", str(mixed)], cwd=str(spec.parent))
    assert p.returncode == 0, p.stderr
    row = _table(mixed)["fedavg"]
    assert (row["runs_done"], row["runs_total"], row["seeds"]) == ("1", "2", "1")
    own = _own_numbers(out / "runs" / "fedavg-seed1")
    assert float(row["test_acc_mean_mean"]) == own["test_acc_mean"] and row["test_acc_mean_std"] == "nan"
    md = (mixed / "table.md").read_text()
    assert "fedavg, seed 2 (cell 4): **unfinished**" in md and "zz-unfinished-copy" in md


def test_cells_lists_and_bad_specs_exit_2(compared, tmp_path):
    spec, out, _ = compared
    p = fedmtl(["compare", str(spec), "--cells", "--out", str(out)], cwd=str(spec.parent))
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and lines[0].startswith("8 cells (1 data set(s) x 4 method(s) x 2 seed(s))")
    assert lines[3].split("\t")[:4] == ["3", "-", "fedavg", "seed 1"]
    assert lines[3].split("\t")[5] == str(out / "runs" / "fedavg-seed1")
    # --cell of a finished cell: nothing to do (a requeued array task)
    p = fedmtl(["compare", str(spec), "--cell", "3", "--out", str(out)], cwd=str(spec.parent))
    assert p.returncode == 0 and "already done" in p.stdout, p.stderr
    p = fedmtl(["compare", str(spec), "--cell", "9", "--out", str(out)], cwd=str(spec.parent))
    assert p.returncode == 2 and p.stderr.strip() == f"config error: --cell 9: {spec} has cells 1..8"
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [fedem]\nseeds: [1, 1]\n")
    p = fedmtl(["compare", str(bad), "--cells"])
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "seeds must be distinct" in p.stderr


@pytest.mark.parametrize("bad, rule", [("methods: []\n", "at least one method"),
                                       ("methods: [{name: fedem, mu: 1}]\n", "methods[0].mu is not a known key"),
                                       ("base: nowhere.yaml\nmethods: [fedem]\n",
                                        "base config nowhere.yaml not found")])
def test_spec_errors_name_the_key(tmp_path, bad, rule):
    from fedmtl_hpc.commands.compare import load_spec
    from fedmtl_hpc.errors import ConfigError
    (tmp_path / "s.yaml").write_text(bad)
    with pytest.raises(ConfigError, match=rule.replace("[", r"\[").replace("]", r"\]")):
        load_spec(str(tmp_path / "s.yaml"))


def test_sweep_job_runs_one_cell_per_array_task(compared, tmp_path):
    """jobs/lib (as jobs/sweep.slurm calls it) with FEDMTL_COMPARE: array task k = cell k, no scheduler."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO
    spec, out, _ = compared
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDMTL_", "SLURM_", "PBS_"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", FEDMTL_HOME=str(REPO),
               FEDMTL_COMPARE=str(spec), FEDMTL_COMPARE_OUT=str(tmp_path / "sweep"), FEDMTL_LAUNCHER="mpiexec",
               FEDMTL_NP="2", OMP_NUM_THREADS="1")
    job = f". {REPO}/jobs/lib/fedmtl_job.sh; fedmtl_job"
    p = subprocess.run(["bash", "-c", job], env={**env, "FEDMTL_SWEEP_ROW": "3"}, cwd=str(spec.parent),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "compare cell 3 of" in p.stdout and "fedavg seed 1" in p.stdout
    run = tmp_path / "sweep" / "runs" / "fedavg-seed1"
    assert json.loads((run / "summary.json").read_text())["config_sha256"] == \
        json.loads((out / "runs" / "fedavg-seed1" / "summary.json").read_text())["config_sha256"]
    for row, why in (("7", "cell 7: config error: train.lr must be > 0"), ("9", "no cell 9 (8 cells")):
        p = subprocess.run(["bash", "-c", job], env={**env, "FEDMTL_SWEEP_ROW": row}, cwd=str(spec.parent),
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and why in p.stderr and p.stderr.count("\n") == 1, p.stderr
