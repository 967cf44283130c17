"""``fedmtl-hpc``: run | resume | inspect, plus the commands in ``commands/``.

Launched under ``mpiexec``/``srun`` (each process is one rank) or alone as
one rank. Exit codes: 0 done, 2 bad input (config, data, checkpoint,
arguments), 3 stopped by a signal after a checkpoint (requeue), 1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from . import __version__
from .commands import COMMANDS
from .config import apply_overrides, load_config, parse_config
from .errors import EXIT_BAD_INPUT, FedMTLError

# launchers' rank variables: only rank 0 prints an error every rank found identically
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID", "PALS_RANKID")

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's own would print the usage too)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _debug_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug-rank", metavar="R[:PORT]|R:HOST:PORT",
                   help="start debugpy on rank R (127.0.0.1:5678 unless given; needs the debug extra), print "
                        "host:port and wait for the IDE before training; the watchdog is off (docs/debugging.md)")


def _debug_target(args):
    """--debug-rank parsed and debugpy found, before MPI starts (else exit 2 with the install hint)."""
    if not getattr(args, "debug_rank", None):
        return None
    from . import debug
    target = debug.parse(args.debug_rank)
    debug.require_debugpy()
    return target


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fedmtl-hpc", description="Federated multi-task learning as an MPI job.")
    p.add_argument("--version", action="version", version=f"fedmtl_hpc {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="start a new run from a YAML config (none: the embedded default)")
    r.add_argument("config", nargs="?", help="YAML config; omitted: the embedded default "
                   "(FedEM on the synthetic mixture, 300 clients, 200 rounds)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    r.add_argument("--run-dir", help="run directory (default runs/<name>-<job id or time>)")
    _debug_flag(r)
    s = sub.add_parser("resume", help="continue a run from its newest valid checkpoint")
    s.add_argument("run_dir")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change run.rounds, run.stop_after, run.eval_every or checkpoint.*")
    _debug_flag(s)
    i = sub.add_parser("inspect", help="show what a checkpoint holds")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue  # not built yet
        c = sub.add_parser(name, help=mod.HELP)
        mod.add_arguments(c)
        c.set_defaults(module=mod)
    return p


def _inspect(path: str, as_json: bool) -> int:
    from .checkpoint import verify
    info = verify(path)
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{path}: fedmtl_hpc checkpoint format {info['format_version']} ({info['producer']}), verified")
    if "mtl" in info:  # linear multi-task solvers: W in /mtl, no shared stack
        m = info["mtl"]
        print(f"  iteration {info['round']}/{info.get('rounds_total', '?')}, solver {info['algorithm']}, "
              f"{m.get('n_tasks')} tasks x d = {m.get('d')}, loss {m.get('loss')}, lam {m.get('lam')}, "
              f"lam2 {m.get('lam2')}, objective {m.get('objective')}, converged: {m.get('converged') or 'no'}")
    else:
        print(f"  round {info['round']}/{info.get('rounds_total', '?')}, algorithm {info['algorithm']}, "
              f"{info['n_clients']} clients, {info['n_shared']} shared component(s) x {info['n_params']} params")
    print(f"  config sha256 {info['config_sha256']}, partition {info['partition']}")
    for sh in info["shards"]:   # written by more than one rank: the master's rows live in these files
        print(f"  shard {sh['file']}  rows {sh['rows'][0]}..{sh['rows'][1] - 1}, verified")
    for name, shape in sorted(info["datasets"].items()):
        print(f"  /{name:<28} {shape}")
    return 0


def _bad(msg: str, rank0: bool) -> int:
    if rank0:
        print(msg, file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rank0 = all(os.environ.get(v, "0") == "0" for v in _RANK_VARS)
    try:
        if args.cmd == "inspect":
            return _inspect(args.file, args.json)
        if getattr(args, "module", None) is not None:
            return args.module.main(args)
        if args.cmd == "run":
            # before MPI and torch: fast, no collective
            cfg = load_config(args.config, args.set) if args.config else parse_config(apply_overrides({}, args.set))
            target = _debug_target(args)
            from . import runner  # imports torch and mpi4py: only for the commands that train
            return runner.run(cfg, args.run_dir, debug=target)
        target = _debug_target(args)
        from . import runner
        return runner.resume(args.run_dir, args.set, debug=target)
    except FedMTLError as exc:  # raised identically on every rank before any collective
        if exc.exit_code == EXIT_BAD_INPUT:
            return _bad(str(exc), rank0)
        print(str(exc), file=sys.stderr, flush=True)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
