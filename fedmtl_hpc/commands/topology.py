"""``fedmtl-hpc topology CONFIG.yaml [--png FILE] [--set k=v]``: the graph a decentralized run uses.

Prints, for the config's ``topology`` section over its ``data.n_clients`` clients: node
and edge counts, degrees (min/mean/max, and per node when n <= 64), the weights rule,
the spectral gap (1 - second largest |eigenvalue| of W) and the gossip steps it implies
to shrink disagreement 1000-fold, and the seconds the graph took to build; ``--ranks N``
adds what each of N ranks sends per exchange; ``--png`` draws the graph (matplotlib, the
``plot`` extra); ``--json`` writes the same figures as one JSON object. No torch, no MPI,
no n x n array (W is sparse): it runs on a login node, for 10^5 clients in seconds.
Bad graphs, edge files and matrices exit 2 with the same one-line errors as ``run``.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from ..atomic import write_atomic
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
    p.add_argument("--json", metavar="FILE", help="write the printed figures as one JSON object")
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
    t0 = time.perf_counter()
    sched = T.schedule_from_config(cfg)
    topo = sched.at(args.round)
    seconds = time.perf_counter() - t0
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
    steps = _steps(topo.spectral_gap)
    print(f"  spectral gap {topo.spectral_gap:.6g} (1 - |lambda_2| of W); "
          f"~{steps} gossip steps shrink disagreement 1000x")
    print(f"  built in {seconds:.2f} s (graph, sparse W, spectral gap)")
    plan = _plan(topo, args.ranks) if args.ranks else None
    if args.png:
        print(f"  wrote {T.draw_png(topo, args.png)}")
    if args.json:
        doc = {"kind": topo.kind, "round": args.round, "period": sched.period(args.round),
               "change_every": t.change_every, "weights": t.weights, "seed": t.seed, "p": t.p,
               "nodes": n, "edges": len(topo.edges), "w_nonzeros": int(topo.W.nnz),
               "degree": {"min": int(d.min()), "mean": float(d.mean()), "max": int(d.max())},
               "spectral_gap": topo.spectral_gap, "gossip_steps_1000x": steps, "build_seconds": seconds,
               "ranks": plan}

        def fill(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=1)
                fh.write("\n")
        write_atomic(args.json, fill, "topology json")
        print(f"  wrote {args.json}")
    return 0


def _plan(topo: T.Topology, size: int) -> list[dict] | None:
    """Per rank: its clients, neighbour ranks, and rows (client models) sent per exchange."""
    if size > topo.n:
        print(f"  ranks: {size} ranks > {topo.n} clients; a run needs data.n_clients >= ranks")
        return None
    owner = T.block_owner(topo.n, size)
    blocks = T.local_blocks(topo.W, owner, size)
    rows = [sum(len(v) for v in b.send.values()) for b in blocks]
    print(f"  on {size} ranks: {sum(rows)} client rows cross ranks per exchange "
          f"(max {max(rows)} from one rank)")
    plan = []
    for b, k in zip(blocks, rows):
        lo, hi = int(b.nodes[0]), int(b.nodes[-1])
        recv = sum(len(v) for v in b.recv.values())
        plan.append({"rank": b.rank, "clients": [lo, hi], "neighbour_ranks": sorted(b.send),
                     "sends_rows": k, "receives_rows": recv})
        if size <= _PER_NODE_MAX:
            print(f"    rank {b.rank}: clients {lo}..{hi}, neighbour ranks {sorted(b.send) or '-'}, "
                  f"sends {k} rows, receives {recv}")
    return plan
