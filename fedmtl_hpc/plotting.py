"""Every picture the project draws: matplotlib, headless (Agg), sized for one paper column.

matplotlib is an optional extra (``pip install 'fedmtl_hpc[plot]'``; env/setup.sh installs
it): :func:`pyplot` raises :class:`PlotUnavailable` (exit 2, one line with the install
hint) when it is missing, so only the commands that draw need it. Importing this module
imports neither matplotlib, torch nor mpi4py.

Figures are ``COLUMN_WIDTH`` (3.4 in, one column of a two-column paper) wide, fonts 7-8
pt, PNGs at ``DPI`` (300), a fixed size (constrained layout, no tight bounding box), so a
figure's pixel size is ``round(width * dpi) x round(height * dpi)``. Heat maps use
viridis / cividis (readable in greyscale); lines differ by colour *and* marker.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .errors import EXIT_BAD_INPUT, FedMTLError

__all__ = ["PlotUnavailable", "HINT", "pyplot", "COLUMN_WIDTH", "DPI", "save", "partition_figure",
           "topology_figure", "accuracy_figure", "loss_figure", "client_accuracy_figure", "time_figure",
           "consensus_figure", "objective_figure", "mixture_figure", "w_figure", "scaling_figure", "FORMATS"]

HINT = "matplotlib is not installed; install it with: pip install 'fedmtl_hpc[plot]' (or: pip install matplotlib)"
COLUMN_WIDTH = 3.4
DPI = 300
FORMATS = ("png", "pdf", "svg")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_STYLE = {
    "font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 3.5,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "axes.spines.top": False,
    "axes.spines.right": False, "axes.linewidth": 0.6, "legend.frameon": False, "legend.handlelength": 2.2,
    "savefig.dpi": DPI, "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
    "image.cmap": "viridis", "figure.constrained_layout.use": True,
    "svg.hashsalt": "fedmtl_hpc", "path.simplify": True,
}


class PlotUnavailable(FedMTLError):
    exit_code = EXIT_BAD_INPUT
    prefix = "error"


def pyplot():
    """matplotlib.pyplot on the Agg backend with the project's style; PlotUnavailable if missing."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(HINT) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    plt.rcParams.update(_STYLE)
    return plt


def save(fig, path, dpi: int = DPI) -> Path:
    """Write atomically (temporary name, rename); the format follows the file's extension."""
    plt = pyplot()
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    meta = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
            "svg": {"Date": None}}.get(fmt)
    try:
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def _colors(n: int) -> list:
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


# -- partition and topology ------------------------------------------------------------------

def partition_figure(train: np.ndarray, path, n_unseen: int = 0, title: str = "") -> Path:
    """One stacked bar per client: training samples by label (label 0 at the bottom)."""
    plt = pyplot()
    n, c = train.shape
    width = COLUMN_WIDTH if n <= 60 else min(7.0, COLUMN_WIDTH + (n - 60) * 0.03)
    fig, ax = plt.subplots(figsize=(width, 2.3))
    if c <= 10:
        colors = [plt.get_cmap("tab10")(i) for i in range(c)]
    elif c <= 20:
        colors = [plt.get_cmap("tab20")(i) for i in range(c)]
    else:
        colors = [plt.get_cmap("viridis")(i / max(c - 1, 1)) for i in range(c)]
    x = np.arange(n)
    bottom = np.zeros(n)
    for label in range(c):
        h = train[:, label].astype(np.float64)
        if h.any():
            ax.bar(x, h, bottom=bottom, width=0.85 if n <= 200 else 1.0, color=colors[label], linewidth=0,
                   label=str(label))
        bottom += h
    top = float(bottom.max()) if n else 1.0
    if n_unseen:
        ax.set_ylim(0, 1.13 * max(top, 1.0))  # headroom for the note, inside the axes
        ax.axvline(n - n_unseen - 0.5, color="0.2", linewidth=0.8, linestyle="--")
        ax.text(n - n_unseen - 0.5 - 0.3, 1.065 * max(top, 1.0), "unseen clients \u2192", ha="right",
                va="center", fontsize=6.5)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("client")
    ax.set_ylabel("training samples")
    ax.grid(axis="x", visible=False)
    ax.xaxis.set_major_locator(plt.MaxNLocator(nbins=8, integer=True))
    if title:
        ax.set_title(title)
    if c <= 20:
        fig.legend(title="label", loc="outside right upper", ncol=1 if c <= 10 else 2, fontsize=6,
                   title_fontsize=7, handlelength=1.0, borderaxespad=0.2)
    else:
        sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, c - 1))
        fig.colorbar(sm, ax=ax, label="label", fraction=0.05, pad=0.02)
    return save(fig, path)


def topology_figure(n: int, edges: np.ndarray, degrees: np.ndarray, path, size: int = 512,
                    title: str = "") -> Path:
    """The graph with nodes on a circle (node 0 at the top, clockwise), coloured by degree."""
    plt = pyplot()
    dpi = 150
    fig, ax = plt.subplots(figsize=(size / dpi, size / dpi))
    ang = np.pi / 2.0 - 2.0 * np.pi * np.arange(n) / max(n, 1)
    xs, ys = (np.cos(ang), np.sin(ang)) if n > 1 else (np.zeros(1), np.zeros(1))
    from matplotlib.collections import LineCollection
    if len(edges):
        segs = np.stack([np.stack([xs[edges[:, 0]], ys[edges[:, 0]]], 1),
                         np.stack([xs[edges[:, 1]], ys[edges[:, 1]]], 1)], 1)
        ax.add_collection(LineCollection(segs, colors="0.55", linewidths=0.6 if len(edges) < 2000 else 0.2,
                                         alpha=0.9 if len(edges) < 2000 else 0.3, zorder=1))
    s = float(np.clip(2400.0 / max(n, 1), 4.0, 60.0))
    varies = degrees.size and degrees.min() != degrees.max()
    colour = {"c": degrees, "cmap": "viridis"} if varies else {"color": "tab:blue"}
    sc = ax.scatter(xs, ys, s=s, edgecolors="k", linewidths=0.4, zorder=2, **colour)
    if n <= 32:
        for i in range(n):
            ax.annotate(str(i), (xs[i] * 1.13, ys[i] * 1.13), ha="center", va="center", fontsize=6)
    if varies:
        fig.colorbar(sc, ax=ax, label="degree", fraction=0.046, pad=0.02, shrink=0.8)
    ax.set_aspect("equal")
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    ax.axis("off")
    ax.set_title(title, fontsize=7)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color="0.55", linewidth=0.8),
               Line2D([], [], linestyle="none", marker="o", markersize=5, markeredgecolor="k",
                      markeredgewidth=0.4, markerfacecolor="0.6" if varies else "tab:blue")]
    ax.legend(handles, [r"edge ($W_{ij} > 0$)", "client (node)" + (", colour = degree" if varies else "")],
              loc="lower center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=6)
    return save(fig, path, dpi=dpi)


# -- run figures (report) ------------------------------------------------------------------------

def _legend_below(fig, handles, labels, ncol: int | None = None) -> None:
    if not handles:
        return
    ncol = ncol or min(len(labels), 2 if max(len(x) for x in labels) > 14 else 3)
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, handlelength=2.4, columnspacing=1.2)


def _height(n_entries: int, base: float = 2.2, per_row: float = 0.16, ncol: int = 2) -> float:
    return base + per_row * math.ceil(n_entries / ncol)


def _mark(n_points: int) -> int:
    return max(1, n_points // 8)


def accuracy_figure(series: list[dict], path) -> Path:
    """series: {label, round, mean, p10}: mean solid, 10th percentile dashed, accuracy in %."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, _height(len(series) + 2)))
    handles, labels = [], []
    for i, (s, col) in enumerate(zip(series, _colors(len(series)))):
        mk = _MARKERS[i % len(_MARKERS)]
        ax.plot(s["round"], 100 * s["mean"], color=col, marker=mk, markevery=_mark(len(s["round"])))
        ax.plot(s["round"], 100 * s["p10"], color=col, linestyle="--", marker=mk, markerfacecolor="white",
                markevery=_mark(len(s["round"])), linewidth=1.0)
        handles.append(Line2D([], [], color=col, marker=mk))
        labels.append(s["label"])
    handles += [Line2D([], [], color="0.2"), Line2D([], [], color="0.2", linestyle="--")]
    labels += ["mean over clients", "10th percentile"]
    ax.set_xlabel("communication round")
    ax.set_ylabel("test accuracy (%)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(nbins=6, integer=True))
    _legend_below(fig, handles, labels)
    return save(fig, path)


def loss_figure(series: list[dict], path) -> Path:
    """series: {label, round, loss}: train loss vs round (log scale when it spans a decade)."""
    return _lines(series, "loss", path, "train loss (objective, nats)", log="auto")


def client_accuracy_figure(series: list[dict], path) -> Path:
    """series: {label, acc (training clients), unseen (or None), round}: empirical CDFs of final
    per-client test accuracy; unseen clients dotted."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    any_unseen = any(s.get("unseen") is not None and len(s["unseen"]) for s in series)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, _height(len(series) + (2 if any_unseen else 0))))
    handles, labels = [], []
    for i, (s, col) in enumerate(zip(series, _colors(len(series)))):
        mk = _MARKERS[i % len(_MARKERS)]
        a = np.sort(100 * np.asarray(s["acc"], float))
        y = np.arange(1, a.size + 1) / a.size
        ax.step(a, y, where="post", color=col)
        ax.plot([np.percentile(a, 10)], [0.1], marker=mk, color=col, linestyle="none")
        if s.get("unseen") is not None and len(s["unseen"]):
            u = np.sort(100 * np.asarray(s["unseen"], float))
            ax.step(u, np.arange(1, u.size + 1) / u.size, where="post", color=col, linestyle=":", linewidth=1.0)
        handles.append(Line2D([], [], color=col, marker=mk))
        labels.append(s["label"])
    if any_unseen:
        handles += [Line2D([], [], color="0.2"), Line2D([], [], color="0.2", linestyle=":")]
        labels += ["training clients", "unseen clients"]
    rounds = sorted({int(s["round"]) for s in series})
    at = f" at round {rounds[0]}" if len(rounds) == 1 else " at the last evaluation"
    ax.set_xlabel(f"client test accuracy{at} (%)")
    ax.set_ylabel("fraction of clients")
    ax.set_ylim(0, 1.02)
    ax.axhline(0.1, color="0.6", linewidth=0.5, linestyle="-", zorder=0)
    _legend_below(fig, handles, labels)
    return save(fig, path)


_TIME_PARTS = (("t_compute", "compute", None), ("t_exchange", "exchange", "////"),
               ("t_eval", "evaluation", "...."), ("t_checkpoint", "checkpoint", "xxxx"))


def time_figure(series: list[dict], path) -> Path:
    """series: {label, round, t_compute, t_exchange, t_eval, t_checkpoint} (metrics rows).

    One run: a stacked bar per evaluation interval (seconds per round in it); several runs:
    one stacked bar per run (seconds per round over the run)."""
    plt = pyplot()
    colors = [plt.get_cmap("cividis")(x) for x in (0.15, 0.45, 0.7, 0.95)]
    if len(series) == 1:
        s = series[0]
        r = np.asarray(s["round"], float)
        span = np.diff(np.concatenate([[0.0], r]))
        span[span <= 0] = 1.0
        x, xl = r, "communication round (end of the interval)"
        parts = {k: np.asarray(s[k], float) / span for k, *_ in _TIME_PARTS}
        width = 0.8 * (np.min(span) if span.size else 1.0)
        ticks = None
    else:
        x = np.arange(len(series))
        xl = ""
        parts = {k: np.array([np.sum(s[k]) / max(float(s["round"][-1]), 1.0) for s in series])
                 for k, *_ in _TIME_PARTS}
        width, ticks = 0.7, [s["label"] for s in series]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6 if ticks is None else 2.4 + 0.12 * max(
        len(t) for t in ticks) / 3))
    bottom = np.zeros(len(x))
    for (k, name, hatch), col in zip(_TIME_PARTS, colors):
        ax.bar(x, parts[k], width, bottom=bottom, color=col, hatch=hatch, edgecolor="white", linewidth=0.3,
               label=name)
        bottom += parts[k]
    if ticks is not None:
        ax.set_xticks(x)
        ax.set_xticklabels(ticks, rotation=30, ha="right")
    else:
        ax.xaxis.set_major_locator(plt.MaxNLocator(nbins=6, integer=True))
    ax.set_xlabel(xl)
    ax.set_ylabel("wall time per round (s)")
    ax.grid(axis="x", visible=False)
    fig.legend(loc="outside upper center", ncol=4, handlelength=1.2, columnspacing=1.0)
    return save(fig, path)


def _lines(series, key, path, ylabel, log=True) -> Path:
    """One line per run of ``s[key]`` vs round; log: True (non-positive values dropped), False, or
    "auto" (log scale when the finite values are positive and span more than a decade)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, _height(len(series))))
    if log == "auto":
        allv = np.concatenate([np.asarray(s[key], float) for s in series]) if series else np.zeros(0)
        allv = allv[np.isfinite(allv)]
        log = bool(allv.size and allv.min() > 0 and allv.max() / allv.min() > 10)
        keep_all = True
    else:
        keep_all = False
    handles, labels = [], []
    for i, (s, col) in enumerate(zip(series, _colors(len(series)))):
        y = np.asarray(s[key], float)
        keep = np.ones(y.shape, bool) if keep_all else np.isfinite(y) & ((y > 0) if log else True)
        h, = ax.plot(np.asarray(s["round"])[keep], y[keep], color=col, marker=_MARKERS[i % len(_MARKERS)],
                     markevery=_mark(int(keep.sum())))
        handles.append(h)
        labels.append(s["label"])
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("communication round")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(plt.MaxNLocator(nbins=6, integer=True))
    _legend_below(fig, handles, labels)
    return save(fig, path)


def consensus_figure(series: list[dict], path) -> Path:
    """series: {label, round, consensus_distance}: decentralized runs, log scale."""
    label = r"consensus distance $\frac{1}{N}\sum_t\|\theta_t-\bar\theta\|^2$"
    return _lines(series, "consensus_distance", path, label)


def objective_figure(series: list[dict], path, best_known: bool = True) -> Path:
    """series: {label, round, gap}: objective minus the optimum (or the best value reached), log scale."""
    label = r"objective gap $f(W_r) - f^\star$" if best_known else r"$f(W_r) - \min_r f(W_r)$"
    return _lines(series, "gap", path, label)


def _heat(matrix: np.ndarray, path, xlabel: str, ylabel: str, cbar: str, title: str, cmap: str,
          vmin=None, vmax=None) -> Path:
    plt = pyplot()
    rows, cols = matrix.shape
    h = float(np.clip(0.9 + 0.12 * rows, 1.6, 3.4))
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, h))
    im = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax,
                   extent=(-0.5, cols - 0.5, rows - 0.5, -0.5))
    ax.grid(False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(plt.MaxNLocator(nbins=8, integer=True))
    ax.yaxis.set_major_locator(plt.MaxNLocator(nbins=min(rows, 6), integer=True))
    for sp in ax.spines.values():
        sp.set_visible(True)
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, label=cbar, fraction=0.05, pad=0.02)
    return save(fig, path)


def mixture_figure(pi: np.ndarray, path, title: str = "") -> Path:
    """FedEM's mixture weights pi [clients, components] as a components x clients heat map."""
    return _heat(np.asarray(pi, float).T, path, "client", "component m", r"mixture weight $\pi_{tm}$", title,
                 "viridis", 0.0, 1.0)


def w_figure(w: np.ndarray, path, title: str = "") -> Path:
    """The learned W [d, T] of a distributed MTL solver: tasks x features heat map."""
    w = np.asarray(w, float)
    lim = float(np.max(np.abs(w))) if w.size else 1.0
    return _heat(w.T, path, "feature j", "task t", r"$W_{jt}$", title, "cividis", -lim, lim)


def scaling_figure(rows: list[dict], path) -> Path:
    """bench/scale.py's JSON rows ({clients, ranks, path, trained, s_round}): strong scaling (left:
    s/round vs ranks, one line per client count and path) and weak scaling (right: clients trained
    per second vs clients, one line per rank count and path); log axes, loop dashed."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    fig, (strong, weak) = plt.subplots(1, 2, figsize=(COLUMN_WIDTH, 2.4))
    sizes = sorted({r["clients"] for r in rows})
    ranks = sorted({r["ranks"] for r in rows})
    style = {"loop": "--", "batched": "-"}
    cols = _colors(max(len(sizes), len(ranks)))

    def line(ax, xs, ys, col, mk, ls):
        if xs:
            ax.plot(xs, ys, color=col, marker=mk, linestyle=ls)
    for i, n in enumerate(sizes):
        for path_name, ls in style.items():
            pts = sorted((r["ranks"], r["s_round"]) for r in rows if r["clients"] == n and r["path"] == path_name)
            line(strong, [p[0] for p in pts], [p[1] for p in pts], cols[i], _MARKERS[i % len(_MARKERS)], ls)
    for i, k in enumerate(ranks):
        for path_name, ls in style.items():
            pts = sorted((r["clients"], r["trained"] / r["s_round"]) for r in rows
                         if r["ranks"] == k and r["path"] == path_name)
            line(weak, [p[0] for p in pts], [p[1] for p in pts], cols[i], _MARKERS[i % len(_MARKERS)], ls)
    strong.set_xlabel("ranks")
    strong.set_ylabel("s / round")
    strong.set_xticks(ranks)
    weak.set_xlabel("clients")
    weak.set_ylabel("clients trained / s")
    for ax in (strong, weak):
        ax.set_yscale("log")
    weak.set_xscale("log")
    handles = [Line2D([], [], color=cols[i], marker=_MARKERS[i % len(_MARKERS)]) for i in range(len(sizes))]
    labels = [f"{n:,} clients (left)" for n in sizes]
    handles += [Line2D([], [], color=cols[i], marker=_MARKERS[i % len(_MARKERS)]) for i in range(len(ranks))]
    labels += [f"{k} rank{'s' * (k > 1)} (right)" for k in ranks]
    handles += [Line2D([], [], color="0.2", linestyle=ls) for ls in style.values()]
    labels += ["per-client loop", "batched"]
    fig.set_size_inches(COLUMN_WIDTH, _height(len(labels), base=2.4))
    _legend_below(fig, handles, labels)
    return save(fig, path)
