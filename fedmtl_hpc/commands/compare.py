"""``fedmtl-hpc compare SPEC.yaml [--run | --collect | --cells | --cell I] [--out DIR]``: methods x seeds.

A SPEC names a base config, methods (an ``algorithm.name`` plus its own ``--set``
overrides), seeds, and optionally data-set / partition variants; each combination is
one *cell*, identified by its resolved config hash (``config_sha256`` of
``config_to_yaml``, as in summary.json):

    name: synthetic                       # optional (default: the SPEC file's name)
    base: configs/synthetic_fedem.yaml    # optional (default: the embedded default config)
    out: compare/synthetic                # optional (default: compare/<name>); --out wins
    set: [run.rounds=200]                 # optional: overrides for every cell
    methods:                              # a name, or {name, label, set}
      - fedem
      - {name: fedprox, label: fedprox-mu0.1, set: [algorithm.fedprox.mu=0.1]}
    seeds: [1, 2, 3]                      # run.seed of each cell
    datasets:                             # optional: a data.name, or {label, set}
      - {label: dir0.3, set: [data.partition_alpha=0.3]}

Cell order: data sets, then methods, then seeds; cells are numbered 1..N (the Slurm
array index). ``--run`` runs every cell in turn inside this allocation (every rank
calls the runner for every cell: ``mpiexec -n 4 fedmtl-hpc compare S --run`` runs each
cell on those 4 ranks), skips cells already done, resumes a cell that has a
checkpoint, records a config or set-up error (exit 2) as failed and goes on; a crash
inside a cell aborts the whole MPI job (as ``run`` does), and that cell then shows as
unfinished. ``--cell I`` runs only cell I (one array task of jobs/sweep.slurm);
``--cells`` lists them; ``--collect`` reads the finished run directories under
OUT/runs (and ``--runs DIR``) and writes the tables. Without a mode: ``--collect``.
Writes OUT/table.md, OUT/table.csv, OUT/cells.csv, OUT/compare.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field

import yaml

from ..errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_PREEMPTED, ConfigError, FedMTLError

__all__ = ["HELP", "add_arguments", "main", "Cell", "load_spec", "cells_of", "collect", "write_tables",
           "format_value", "unit_for"]

HELP = "compare methods over seeds (and data sets): run the cells or collect finished runs into tables"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="compare SPEC (YAML: base, methods, seeds, optional datasets)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--run", action="store_true", help="run every cell in turn under this launcher, then collect")
    mode.add_argument("--collect", action="store_true", help="read finished run directories and write the tables")
    mode.add_argument("--cells", action="store_true",
                      help="list the cells (index, data set, method, seed, hash, run dir)")
    mode.add_argument("--cell", type=int, metavar="I", help="run only cell I (1-based; one Slurm array task)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: the SPEC's out, else compare/<name>)")
    p.add_argument("--runs", action="append", default=[], metavar="DIR",
                   help="--collect: also look for run directories under DIR (default: OUT/runs only)")


# -- the SPEC -------------------------------------------------------------------------

@dataclass
class Cell:
    index: int                 # 1-based
    dataset: str               # '' when the SPEC has no datasets
    method: str                # the method's label
    algorithm: str
    seed: int
    overrides: list[str]
    config: object = None      # the validated Config, None when invalid
    error: str = ""            # the config error, when invalid
    sha256: str = ""
    run_dir: str = ""

    @property
    def name(self) -> str:
        return "-".join(x for x in (self.dataset, self.method, f"seed{self.seed}") if x)


@dataclass
class Spec:
    path: str
    name: str
    base: str                  # resolved path, '' for the embedded default
    out: str
    set: list[str]
    methods: list[dict]
    seeds: list[int]
    datasets: list[dict]
    raw: dict = field(default_factory=dict)


def _strings(value, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ConfigError(f"{where} must be a list of 'key.sub=value' strings, got {value!r}")
    return list(value)


def _resolve(path: str, spec_path: str) -> str:
    here = os.path.dirname(os.path.abspath(spec_path))
    for cand in (path, os.path.join(here, path), os.path.join(os.path.dirname(here), path),
                 os.path.join(os.environ.get("FEDMTL_HOME", ""), path)):
        if os.path.isfile(cand):
            return os.path.abspath(cand)
    raise ConfigError(f"{spec_path}: base config {path} not found (relative to the working directory, "
                      f"the SPEC's directory, its parent, or $FEDMTL_HOME)")


def load_spec(path: str, out: str | None = None) -> Spec:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"compare SPEC {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read compare SPEC {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping (base, methods, seeds, ...)")
    known = ("name", "base", "out", "set", "methods", "seeds", "datasets")
    for k in raw:
        if k not in known:
            raise ConfigError(f"{path}: {k} is not a known key (known: {', '.join(known)})")
    name = str(raw.get("name") or os.path.splitext(os.path.basename(path))[0])
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise ConfigError(f"{path}: name must be letters, digits, _ . + -, got {name!r}")
    base = _resolve(str(raw["base"]), path) if raw.get("base") else ""
    methods = []
    for i, m in enumerate(raw.get("methods") or []):
        m = {"name": m} if isinstance(m, str) else m
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise ConfigError(f"{path}: methods[{i}] must be an algorithm name or {{name, label, set}}, got {m!r}")
        bad = set(m) - {"name", "label", "set"}
        if bad:
            raise ConfigError(f"{path}: methods[{i}].{sorted(bad)[0]} is not a known key (known: name, label, set)")
        methods.append({"name": m["name"], "label": str(m.get("label") or m["name"]),
                        "set": _strings(m.get("set"), f"{path}: methods[{i}].set")})
    if not methods:
        raise ConfigError(f"{path}: methods must list at least one method")
    seeds = raw.get("seeds", [1])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           and s >= 0 for s in seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    datasets = []
    for i, d in enumerate(raw.get("datasets") or []):
        if isinstance(d, str):
            d = {"label": d, "set": [f"data.name={d}"]}
        if not isinstance(d, dict) or set(d) - {"label", "set"} or not d.get("label"):
            raise ConfigError(f"{path}: datasets[{i}] must be a data.name or {{label, set}}, got {d!r}")
        datasets.append({"label": str(d["label"]), "set": _strings(d.get("set"), f"{path}: datasets[{i}].set")})
    for what, labels in (("methods", [m["label"] for m in methods]), ("datasets", [d["label"] for d in datasets])):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ConfigError(f"{path}: {what} labels must be unique (give each a label), repeated: {dup[0]}")
        for x in labels:
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", x):
                raise ConfigError(f"{path}: {what} label must be letters, digits, _ . + -, got {x!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: seeds must be distinct, got {seeds}")
    return Spec(path=os.path.abspath(path), name=name, base=base,
                out=out or str(raw.get("out") or os.path.join("compare", name)),
                set=_strings(raw.get("set"), f"{path}: set"), methods=methods, seeds=list(seeds),
                datasets=datasets, raw=raw)


def cells_of(spec: Spec) -> list[Cell]:
    """Every cell: its overrides applied base -> set -> data set -> method -> seed, validated."""
    from ..config import apply_overrides, config_sha256, config_to_yaml, parse_config
    base = {}
    if spec.base:
        with open(spec.base, encoding="utf-8") as fh:
            base = yaml.safe_load(fh) or {}
    out = []
    for d in spec.datasets or [{"label": "", "set": []}]:
        for m in spec.methods:
            for seed in spec.seeds:
                sets = [*spec.set, *d["set"]]
                raw = apply_overrides(base, sets)
                alg = raw.get("algorithm") if isinstance(raw.get("algorithm"), dict) else {}
                # the base's own algorithm section would be refused under another algorithm.name
                raw["algorithm"] = {k: v for k, v in alg.items() if k == "mode" or k == m["name"]}
                over = [*sets, f"algorithm.name={m['name']}", *m["set"], f"run.seed={seed}"]
                raw = apply_overrides(raw, [f"algorithm.name={m['name']}", *m["set"], f"run.seed={seed}"])
                cell = Cell(index=len(out) + 1, dataset=d["label"], method=m["label"], algorithm=m["name"],
                            seed=seed, overrides=over)
                try:
                    cell.config = parse_config(raw)
                    cell.sha256 = config_sha256(config_to_yaml(cell.config))
                except ConfigError as exc:
                    cell.error = str(exc)
                out.append(cell)
    for c in out:
        c.run_dir = os.path.join(spec.out, "runs", c.name)
    return out


# -- collecting -------------------------------------------------------------------------

@dataclass
class Outcome:
    cell: Cell
    status: str                 # done | failed | unfinished | missing
    reason: str = ""
    run: object = None          # results.Run when found
    duplicates: int = 0


def collect(cells: list[Cell], roots: list[str]) -> list[Outcome]:
    """Match each cell to a run directory by config hash (finished ones first, then newest)."""
    from .. import results as R
    by_sha: dict[str, list] = {}
    wanted = {c.sha256 for c in cells if c.sha256}
    for d in R.find_runs(roots):
        try:
            with open(os.path.join(d, "config.yaml"), encoding="utf-8") as fh:
                text = fh.read()
            sha = None
            sp = os.path.join(d, "summary.json")
            if os.path.isfile(sp):
                with open(sp) as fh:
                    sha = json.load(fh).get("config_sha256")
        except (OSError, ValueError):
            continue
        from ..config import config_sha256
        sha = sha or config_sha256(text)
        if sha in wanted:
            by_sha.setdefault(sha, []).append(d)
    out = []
    for c in cells:
        if c.error:
            out.append(Outcome(c, "failed", c.error))
            continue
        dirs = by_sha.get(c.sha256, [])
        if not dirs:
            out.append(Outcome(c, "missing", "no run directory with this config (not run yet, or it failed "
                                             "before writing one: see the compare or job log)"))
            continue
        runs = []
        for d in dirs:
            try:
                runs.append(R.load_run(d))
            except FedMTLError:
                runs.append(None)
        done = [r for r in runs if r is not None and r.finished]
        if done:
            best = max(done, key=lambda r: (os.path.getmtime(os.path.join(r.path, "summary.json")), r.path))
            out.append(Outcome(c, "done", run=best, duplicates=len(dirs) - 1))
            continue
        found = [r for r in runs if r is not None]
        if found:
            r = max(found, key=lambda r: (int(r.metrics["round"][-1]), r.path))
            last = int(r.metrics["round"][-1])
            rounds = (r.config.get("run") or {}).get("rounds", "?")
            why = {"stopped": f"stopped by a signal after round {last} of {rounds}: resume it",
                   "done": f"ended at round {last} of {rounds}"}.get(
                       r.status, f"no summary.json, last evaluation at round {last} of {rounds} "
                                 f"(crashed, killed or still running)")
            out.append(Outcome(c, "unfinished", why, run=r))
        else:
            out.append(Outcome(c, "unfinished", f"{dirs[0]} has no metrics yet (crashed, killed or still running)"))
    return out


# -- the tables -------------------------------------------------------------------------

def unit_for(key: str, means: list[float]) -> tuple[str, float]:
    """(unit text, divisor) for a column, chosen once per column."""
    if key.startswith("test_acc"):
        return "%", 0.01
    if key == "bytes_exchanged":
        top = max((abs(v) for v in means if math.isfinite(v)), default=0.0)
        for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if top >= div:
                return unit, div
        return "B", 1.0
    return ("s" if key == "seconds_per_round" else ""), 1.0


def format_value(key: str, v: float, div: float) -> str:
    """One number as the Markdown table shows it."""
    if v is None or not math.isfinite(v):
        return "–"
    x = v / div
    if key.startswith("test_acc"):
        return f"{x:.2f}"
    if key == "train_loss":
        return f"{x:.4f}"
    return f"{x:.4g}"


def _cell_text(key: str, st: dict, div: float, bold: bool) -> str:
    if not st["n"]:
        return "–"
    mean = format_value(key, st["mean"], div)
    text = f"**{mean}**" if bold else mean
    if st["n"] > 1:
        text += f" ± {format_value(key, st['std'], div)} ({format_value(key, st['min'], div)}–" \
                f"{format_value(key, st['max'], div)})"
    return text


def _rows(outcomes: list[Outcome], spec: Spec) -> list[dict]:
    from .. import results as R
    rows = []
    datasets = [d["label"] for d in spec.datasets] or [""]
    for ds in datasets:
        for m in spec.methods:
            mine = [o for o in outcomes if o.cell.dataset == ds and o.cell.method == m["label"]]
            ok = [o for o in mine if o.status == "done"]
            vals = [R.run_values(o.run) for o in ok]
            row = {"dataset": ds, "method": m["label"], "algorithm": m["name"],
                   "runs_done": len(ok), "runs_total": len(mine),
                   "seeds": " ".join(str(o.cell.seed) for o in ok)}
            for key, *_ in R.VALUES:
                row[key] = R.aggregate([v[key] for v in vals])
            rows.append(row)
    return rows


def write_tables(out_dir: str, spec: Spec, outcomes: list[Outcome]) -> list[dict]:
    """table.md, table.csv and cells.csv from the outcomes; returns the table rows."""
    from .. import results as R
    os.makedirs(out_dir, exist_ok=True)
    rows = _rows(outcomes, spec)
    keys = [k for k, *_ in R.VALUES]
    # CSV: full precision, accuracies as fractions, bytes in bytes, seconds in seconds
    with open(os.path.join(out_dir, ".table.csv.tmp"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "method", "algorithm", "runs_done", "runs_total", "seeds",
                    *[f"{k}_{s}" for k in keys for s in ("mean", "std", "min", "max")]])
        for r in rows:
            w.writerow([r["dataset"], r["method"], r["algorithm"], r["runs_done"], r["runs_total"], r["seeds"],
                        *[repr(r[k][s]) for k in keys for s in ("mean", "std", "min", "max")]])
    os.replace(os.path.join(out_dir, ".table.csv.tmp"), os.path.join(out_dir, "table.csv"))
    with open(os.path.join(out_dir, ".cells.csv.tmp"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["cell", "dataset", "method", "algorithm", "seed", "config_sha256", "status", "run_dir", "reason"])
        for o in outcomes:
            c = o.cell
            w.writerow([c.index, c.dataset, c.method, c.algorithm, c.seed, c.sha256, o.status,
                        o.run.path if o.run is not None else "", o.reason])
    os.replace(os.path.join(out_dir, ".cells.csv.tmp"), os.path.join(out_dir, "cells.csv"))
    lines = [f"# Comparison: {spec.name}", ""]
    base = "the embedded default config"
    if spec.base:
        rel = os.path.relpath(spec.base)
        base = spec.base if rel.startswith("..") else rel
    lines.append(f"Base config {base}; seeds {', '.join(map(str, spec.seeds))}. Each cell: mean over the "
                 f"seeds that finished, ± sample standard deviation, (min–max). Accuracies: test accuracy "
                 f"at the last evaluation: mean over clients, sample-weighted, 10th percentile over clients, "
                 f"mean over clients unseen in training. Bytes: total exchanged over the run (all ranks). "
                 f"time/round: seconds of compute + exchange + evaluation + checkpoint (rank 0) per round. "
                 f"Best mean in each column in bold.")
    for ds in [d["label"] for d in spec.datasets] or [""]:
        mine = [r for r in rows if r["dataset"] == ds]
        units = {k: unit_for(k, [r[k]["mean"] for r in mine]) for k in keys}
        lines.append("")
        if ds:
            lines += [f"## {ds}", ""]
        head = ["method", "runs"] + [f"{h} ({units[k][0]})" if units[k][0] else h for k, h, *_ in R.VALUES]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * 2 + ["---:"] * len(keys)) + "|")
        best = {}
        for k, _, _, better in R.VALUES:
            means = [r[k]["mean"] for r in mine if r[k]["n"]]
            if means:
                # compare what is shown, so equal-looking numbers are bold together
                shown = [(format_value(k, v, units[k][1]), v) for v in means]
                top = (max if better == "max" else min)(v for _, v in shown)
                best[k] = {s for s, v in shown if s == format_value(k, top, units[k][1])}
        for r in mine:
            cells = [r["method"], f"{r['runs_done']}/{r['runs_total']}"]
            for k in keys:
                st = r[k]
                bold = st["n"] and format_value(k, st["mean"], units[k][1]) in best.get(k, set())
                cells.append(_cell_text(k, st, units[k][1], bool(bold)))
            lines.append("| " + " | ".join(cells) + " |")
    bad = [o for o in outcomes if o.status != "done"]
    lines += ["", "## Failed or unfinished runs (not averaged in)" if bad else "All runs finished.", ""]
    for o in bad:
        c = o.cell
        where = f" `{o.run.path}`" if o.run is not None else ""
        what = f"{c.dataset + ' / ' if c.dataset else ''}{c.method}, seed {c.seed} (cell {c.index})"
        lines.append(f"- {what}: **{o.status}**{where}: {o.reason}")
    dup = [o for o in outcomes if o.duplicates]
    for o in dup:
        lines.append(f"- note: cell {o.cell.index} has {o.duplicates + 1} run directories with its config; "
                     f"used the newest finished one, `{o.run.path}`")
    with open(os.path.join(out_dir, ".table.md.tmp"), "w") as fh:
        fh.write("\n".join(lines).rstrip() + "\n")
    os.replace(os.path.join(out_dir, ".table.md.tmp"), os.path.join(out_dir, "table.md"))
    return rows


def _write_meta(out_dir: str, spec: Spec, cells: list[Cell], attempts: dict | None = None) -> None:
    os.makedirs(out_dir, exist_ok=True)
    meta = {"spec_path": spec.path, "spec": spec.raw, "base": spec.base,
            "cells": [{"cell": c.index, "dataset": c.dataset, "method": c.method, "algorithm": c.algorithm,
                       "seed": c.seed, "config_sha256": c.sha256, "run_dir": c.run_dir, "error": c.error,
                       "overrides": c.overrides} for c in cells]}
    path = os.path.join(out_dir, "compare.json")
    if attempts is not None:
        meta["attempts"] = attempts
    elif os.path.isfile(path):
        try:
            with open(path) as fh:
                meta["attempts"] = json.load(fh).get("attempts", {})
        except (OSError, ValueError):
            pass
    with open(path + ".tmp", "w") as fh:
        json.dump(meta, fh, indent=2)
    os.replace(path + ".tmp", path)


# -- running ------------------------------------------------------------------------------

def _run_cell(cell: Cell, comm, runner) -> tuple[int, str]:
    """Run, resume or skip one cell on every rank; (exit code, what happened)."""
    from .. import results as R
    if cell.error:
        return EXIT_BAD_INPUT, cell.error
    decision = ""
    if comm.rank == 0:
        d = cell.run_dir
        if not os.path.isfile(os.path.join(d, "config.yaml")):
            decision = "run"
        else:
            try:
                r = R.load_run(d)
            except FedMTLError:
                r = None
            sha = r.config_sha256 if r is not None else None
            if sha is None:
                from ..config import config_sha256
                with open(os.path.join(d, "config.yaml"), encoding="utf-8") as fh:
                    sha = config_sha256(fh.read())
            if sha != cell.sha256:
                decision = f"fail:{d} holds a run of another config (sha256 {sha[:12]}); move it away"
            elif r is not None and r.finished:
                decision = "skip"
            elif R.newest_checkpoint(d):
                decision = "resume"
            else:
                aside = f"{d}.no-checkpoint-{os.getpid()}"
                os.replace(d, aside)
                decision = "run"
    decision = comm.bcast_str(decision)
    if decision == "skip":
        return EXIT_OK, "already done"
    if decision.startswith("fail:"):
        return EXIT_BAD_INPUT, decision[5:]
    try:
        if decision == "resume":
            rc = runner.resume(cell.run_dir, [])
        else:
            rc = runner.run(cell.config, cell.run_dir)
    except SystemExit as exc:  # set-up failure agreed on by every rank (the message is on stderr)
        code = exc.code if isinstance(exc.code, int) else 1
        return code, f"exit {code} during set-up (data, run directory or checkpoint; the message is above)"
    except FedMTLError as exc:  # raised identically on every rank before any collective
        if comm.rank == 0:
            print(str(exc), file=sys.stderr, flush=True)
        return exc.exit_code, str(exc)
    except Exception as exc:  # noqa: BLE001 - a set-up bug (e.g. an algorithm not implemented yet):
        # the runner's set-up raises it on every rank alike before any collective (training errors
        # abort the job inside the runner), so every rank records it and goes on to the next cell
        if comm.rank == 0:
            import traceback
            traceback.print_exc(file=sys.stderr)
        return 1, f"crashed during set-up: {type(exc).__name__}: {exc}"
    return rc, {EXIT_OK: "done" + (" (resumed)" if decision == "resume" else ""),
                EXIT_PREEMPTED: "stopped by a signal after a checkpoint"}.get(rc, f"exit {rc}")


def _run(spec: Spec, cells: list[Cell], only: int | None) -> int:
    from .. import runner
    from ..comm.mpi import MPIComm
    comm = MPIComm()
    todo = [c for c in cells if only is None or c.index == only]
    attempts = {}
    if comm.rank == 0:
        _write_meta(spec.out, spec, cells)
    for c in todo:
        if comm.rank == 0:
            print(f"compare: cell {c.index}/{len(cells)}: {c.name} -> {c.run_dir}", flush=True)
        rc, what = _run_cell(c, comm, runner)
        attempts[str(c.index)] = {"exit": rc, "what": what}
        if comm.rank == 0:
            print(f"compare: cell {c.index} {c.name}: {what}" + (" (recorded as failed)" if rc not in
                                                                   (EXIT_OK, EXIT_PREEMPTED) else ""), flush=True)
            _write_meta(spec.out, spec, cells, {**_old_attempts(spec.out), **attempts})
        if rc == EXIT_PREEMPTED:
            if comm.rank == 0:
                print(f"compare: stopped in cell {c.index}; run the same command again to continue", flush=True)
            return EXIT_PREEMPTED
    if only is not None:
        return attempts[str(only)]["exit"]
    if comm.rank == 0:
        outcomes = collect(cells, [os.path.join(spec.out, "runs")])
        write_tables(spec.out, spec, outcomes)
        _report(spec, outcomes)
    return EXIT_OK  # every cell was tried; failed ones are listed in table.md and cells.csv


def _old_attempts(out_dir: str) -> dict:
    try:
        with open(os.path.join(out_dir, "compare.json")) as fh:
            return json.load(fh).get("attempts", {}) or {}
    except (OSError, ValueError):
        return {}


def _report(spec: Spec, outcomes: list[Outcome]) -> None:
    done = sum(o.status == "done" for o in outcomes)
    print(f"compare: {done}/{len(outcomes)} cells done; wrote {os.path.join(spec.out, 'table.md')}, "
          f"table.csv, cells.csv")
    for o in outcomes:
        if o.status != "done":
            print(f"  cell {o.cell.index} {o.cell.name}: {o.status}: {o.reason}")


def main(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.out)
    cells = cells_of(spec)
    if args.cells:
        lines = [f"{len(cells)} cells ({len(spec.datasets) or 1} data set(s) x {len(spec.methods)} method(s) x "
                 f"{len(spec.seeds)} seed(s)); one Slurm array task per cell: "
                 f"FEDMTL_COMPARE={args.spec} sbatch --array=1-{len(cells)} jobs/sweep.slurm"]
        for c in cells:
            state = c.error if c.error else c.sha256[:16]
            lines.append(f"{c.index}\t{c.dataset or '-'}\t{c.method}\tseed {c.seed}\t{state}\t"
                         f"{os.path.abspath(c.run_dir)}")
        try:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # `| head -1`
            sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    if args.cell is not None:
        if not 1 <= args.cell <= len(cells):
            raise ConfigError(f"--cell {args.cell}: {spec.path} has cells 1..{len(cells)}")
        if cells[args.cell - 1].error:
            raise ConfigError(f"cell {args.cell} ({cells[args.cell - 1].name}): {cells[args.cell - 1].error}")
        return _run(spec, cells, args.cell)
    if args.run:
        return _run(spec, cells, None)
    roots = [os.path.join(spec.out, "runs"), *args.runs]
    outcomes = collect(cells, roots)
    _write_meta(spec.out, spec, cells)
    write_tables(spec.out, spec, outcomes)
    _report(spec, outcomes)
    return EXIT_OK
