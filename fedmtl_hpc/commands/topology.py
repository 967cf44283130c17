"""``fedmtl-hpc topology CONFIG.yaml [--png FILE] [--set k=v]``: the graph a decentralized run uses.

Prints, for the config's ``topology`` section over its ``data.n_clients`` clients: node
and edge counts, degrees (min/mean/max, and per node when n <= 64), the weights rule,
the spectral gap (1 - second largest |eigenvalue| of W) and the gossip steps it implies
to shrink disagreement 1000-fold; ``--ranks N`` adds what each of N ranks sends per
exchange; ``--png`` draws the graph (matplotlib, the ``plot`` extra). No torch, no MPI:
it runs on a login node.
Bad graphs, edge files and matrices exit 2 with the same one-line errors as ``run``.
"""

from __future__ import annotations

import argparse
import math


from ..comm import topology as T
from ..config import apply_overrides, load_config, parse_config

__all__ = ["HELP", "add_arguments", "main"]

HELP = "show a config's decentralized graph: degrees, spectral gap; --png draws it"
_PER_NODE_MAX = 64


def _count(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (omitted: the embedded default)")
    p.add_argument("--png", metavar="FILE", help="write a picture of the graph (nodes on a circle)")
    p.add_argument("--round", type=_count, default=0, metavar="R",
                   help="show the graph of round R (0-based; matters when topology.change_every > 0)")
    p.add_argument("--ranks", type=_count, default=0, metavar="N",
                   help="also show the exchange plan when the clients are dealt to N ranks")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")


def _steps(gap: float) -> str:
    """Gossip steps for ||X - mean|| to shrink 1000-fold at rate (1 - gap) per step."""
    if gap >= 1.0:
        return "1"
    return f"{math.ceil(math.log(1e-3) / math.log(1.0 - gap))}" if gap > 0 else "never"


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set) if args.config else parse_config(apply_overrides({}, args.set))
    if args.png:
        from ..plotting import pyplot
        pyplot()  # missing matplotlib: exit 2 with the install hint before any output
    sched = T.schedule_from_config(cfg)
    topo = sched.at(args.round)
    n, d, t = topo.n, topo.degrees, cfg.topology
    what = f"kind {topo.kind}" + (f", p {t.p}, seed {t.seed}" if topo.kind == "erdos_renyi" else "")
    if t.change_every:
        what += f"; a new graph every {t.change_every} rounds (this is round {args.round}, period {sched.period(args.round)})"
    print(f"topology: {what}")
    if cfg.algorithm.mode != "decentralized":
        print("  note: algorithm.mode is client-server; this graph is used only with algorithm.mode=decentralized")
    print(f"  nodes {n} (clients), edges {len(topo.edges)}, weights {t.weights}")
    print(f"  degree min {d.min()}, mean {d.mean():.3f}, max {d.max()}" if n else "  no nodes")
    if n <= _PER_NODE_MAX:
        print("  degree per node: " + " ".join(f"{i}:{int(k)}" for i, k in enumerate(d)))
    print(f"  spectral gap {topo.spectral_gap:.6g} (1 - |lambda_2| of W); "
          f"~{_steps(topo.spectral_gap)} gossip steps shrink disagreement 1000x")
    if args.ranks:
        _plan(topo, args.ranks)
    if args.png:
        print(f"  wrote {T.draw_png(topo, args.png)}")
    return 0


def _plan(topo: T.Topology, size: int) -> None:
    """Per rank: its clients, neighbour ranks, and rows (client models) sent per exchange."""
    if size > topo.n:
        print(f"  ranks: {size} ranks > {topo.n} clients; a run needs data.n_clients >= ranks")
        return
    owner = T.block_owner(topo.n, size)
    blocks = T.local_blocks(topo.W, owner, size)
    rows = [sum(len(v) for v in b.send.values()) for b in blocks]
    print(f"  on {size} ranks: {sum(rows)} client rows cross ranks per exchange "
          f"(max {max(rows)} from one rank)")
    if size <= _PER_NODE_MAX:
        for b, k in zip(blocks, rows):
            lo, hi = int(b.nodes[0]), int(b.nodes[-1])
            print(f"    rank {b.rank}: clients {lo}..{hi}, neighbour ranks {sorted(b.send) or '-'}, "
                  f"sends {k} rows, receives {sum(len(v) for v in b.recv.values())}")
