"""``fedmtl-hpc report RUN_DIR [RUN_DIR ...] [--out DIR] [--format png|pdf|svg]``: a run's figures.

One run or many on shared axes, each run named by method and seed in the legend:

* ``accuracy``: test accuracy vs round (mean over clients solid, 10th percentile dashed);
* ``train_loss``: train loss vs round;
* ``client_accuracy``: distribution (empirical CDF) of per-client test accuracy at the last
  evaluation (metrics.h5 ``client_test_acc``; unseen clients dotted);
* ``time_per_round``: compute / exchange / evaluation / checkpoint seconds per round, stacked;
* ``consensus_distance`` (decentralized runs), ``objective_gap`` (runs with an ``objective``
  column: distributed MTL solvers), when present;
* ``mixture_weights[-RUN]`` (FedEM: pi of the newest checkpoint, clients x components) and
  ``W[-RUN]`` (checkpoint ``/mtl/W``), one per run that has them.

Writes DIR/<figure>.<format> (default DIR: RUN_DIR/figures for one run, ./figures for
several). Needs matplotlib (``pip install 'fedmtl_hpc[plot]'``); without it: exit 2 and
one line saying so. A directory that is not a run: one line, exit 2.
"""

from __future__ import annotations

import argparse
import os
import re

import numpy as np

__all__ = ["HELP", "add_arguments", "main", "figures"]

HELP = "draw a run's figures (accuracy, loss, per-client accuracy, time split, pi, ...) with matplotlib"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (several: shared axes)")
    p.add_argument("--out", metavar="DIR", help="where the figures go (default RUN_DIR/figures, or ./figures)")
    p.add_argument("--format", choices=("png", "pdf", "svg"), default="png", help="file format (default png)")


def _labels(runs) -> list[str]:
    labels = [r.label() for r in runs]
    for i, lab in enumerate(labels):
        if labels.count(lab) > 1:  # same method and seed: tell them apart by directory
            labels[i] = f"{lab} ({os.path.basename(os.path.normpath(runs[i].path))})"
    return labels


def _tag(run, several: bool) -> str:
    return "-" + re.sub(r"[^A-Za-z0-9_.+-]", "_", os.path.basename(os.path.normpath(run.path))) if several else ""


def figures(runs, out: str, fmt: str = "png") -> list[str]:
    """Draw every figure the runs have data for; returns the paths written."""
    from .. import plotting as P
    from ..results import read_checkpoint_array
    labels = _labels(runs)
    several = len(runs) > 1
    path = lambda name: os.path.join(out, f"{name}.{fmt}")  # noqa: E731
    written = []
    m = [r.metrics for r in runs]
    has = lambda x, c: c in x and bool(np.isfinite(x[c]).any())  # noqa: E731 - MTL runs: NaN accuracy
    acc = [{"label": lab, "round": x["round"], "mean": x["test_acc_mean"], "p10": x["test_acc_p10"]}
           for lab, x in zip(labels, m) if has(x, "test_acc_mean") and has(x, "test_acc_p10")]
    if acc:
        written.append(P.accuracy_figure(acc, path("accuracy")))
    loss = [{"label": lab, "round": x["round"], "loss": x["train_loss"]}
            for lab, x in zip(labels, m) if has(x, "train_loss")]
    if loss:
        written.append(P.loss_figure(loss, path("train_loss")))
    per_client = [{"label": lab, "acc": r.client_acc[-1], "round": r.metrics["round"][-1],
                   "unseen": None if r.unseen_acc is None else r.unseen_acc[-1]}
                  for lab, r in zip(labels, runs) if r.client_acc is not None and len(r.client_acc)]
    if per_client:
        written.append(P.client_accuracy_figure(per_client, path("client_accuracy")))
    timing = [{"label": lab, "round": x["round"], **{k: x.get(k, np.zeros_like(x["round"]))
                                                     for k in ("t_compute", "t_exchange", "t_eval", "t_checkpoint")}}
              for lab, x in zip(labels, m)]
    if any(has(x, k) for x in m for k in ("t_compute", "t_exchange", "t_eval", "t_checkpoint")):
        written.append(P.time_figure(timing, path("time_per_round")))
    cons = [{"label": lab, "round": x["round"], "consensus_distance": x["consensus_distance"]}
            for lab, x in zip(labels, m) if "consensus_distance" in x]
    if cons:
        written.append(P.consensus_figure(cons, path("consensus_distance")))
    obj = [(lab, r) for lab, r in zip(labels, runs) if "objective" in r.metrics]
    if obj:
        series, known = [], True
        for lab, r in obj:
            f = np.asarray(r.metrics["objective"], float)
            if "objective_gap" in r.metrics:
                gap = np.asarray(r.metrics["objective_gap"], float)
            else:
                star = (r.summary or {}).get("objective_star", r.metrics.get("objective_star", [np.nan])[-1])
                if star is None or not np.isfinite(star):
                    # no known optimum: the best value any of these runs reached (that point, gap 0,
                    # is left out of the log-scale plot)
                    star = min(float(np.nanmin(x.metrics["objective"])) for _, x in obj)
                    known = False
                gap = f - float(star)
            series.append({"label": lab, "round": r.metrics["round"], "gap": gap})
        written.append(P.objective_figure(series, path("objective_gap"), best_known=known))
    for lab, r in zip(labels, runs):
        pi = read_checkpoint_array(r.path, "clients/state/pi")
        if pi is not None and pi.ndim == 2 and pi.size:
            written.append(P.mixture_figure(pi, path("mixture_weights" + _tag(r, several)),
                                            title=lab if several else ""))
        w = read_checkpoint_array(r.path, "mtl/W")
        if w is not None and w.ndim == 2 and w.size:
            written.append(P.w_figure(w, path("W" + _tag(r, several)), title=lab if several else ""))
    return [str(p) for p in written]


def main(args: argparse.Namespace) -> int:
    from .. import plotting
    from ..results import load_run
    plotting.pyplot()  # exit 2 with the install hint before reading anything
    runs = [load_run(d) for d in args.run_dirs]
    out = args.out or (os.path.join(args.run_dirs[0], "figures") if len(runs) == 1 else "figures")
    os.makedirs(out, exist_ok=True)
    for p in figures(runs, out, args.format):
        print(f"wrote {p}")
    return 0
