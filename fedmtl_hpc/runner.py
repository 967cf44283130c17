"""One rank's job: set up (config, run directory, data, engine), train, report.

Failure rules (README "Failure semantics"):
* config errors are found before any collective, identically on every rank:
  rank 0 prints one line, every rank exits 2;
* set-up errors (run directory, data, checkpoint) are agreed on with one
  all-reduce, so no rank is left waiting in a collective: exit 2;
* any error while training prints ``rank N: <error>`` and aborts the whole job;
* a rank that stops making progress while training is reported and the job aborted by the
  hang watchdog (``watchdog.py``, ``run.watchdog_s``); SIGUSR2 prints every thread's stack.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np
import yaml

from . import __version__, hpc, signals, watchdog
from . import debug as _debug
from . import checkpoint as ckpt
from .callbacks import Checkpoint, Evaluate, Progress, WriteMetrics
from .config import Config, apply_overrides, config_sha256, config_to_yaml, parse_config
from .errors import EXIT_OK, EXIT_PREEMPTED, CheckpointError, ConfigError, FedMTLError, storage_error
from .metrics import write_atomic

__all__ = ["run", "resume", "RESUME_OVERRIDABLE"]

# keys a resume may change: they do not alter the trajectory of earlier rounds
RESUME_OVERRIDABLE = ("run.rounds", "run.stop_after", "run.eval_every", "run.watchdog_s", "checkpoint.every",
                      "checkpoint.keep", "mtl.max_iters", "mtl.tol")


def _comm():
    from .comm.mpi import MPIComm
    return MPIComm()


def _threads(cfg: Config) -> int:
    """torch threads per rank from OMP_NUM_THREADS / SLURM_CPUS_PER_TASK (default 1: srun does not cap it).
    MTL programs are numpy-only: torch is not imported, BLAS follows OMP_NUM_THREADS."""
    if cfg.program != "federated":
        return hpc.threads_per_rank(os.environ)
    import torch
    torch.set_num_threads(hpc.threads_per_rank(os.environ))
    return torch.get_num_threads()


def _check(cfg: Config, world_size: int) -> None:
    """The program's rules that need the number of ranks or input files: no collective, same on every rank."""
    cfg.check_world(world_size)
    if cfg.program == "mtl":
        from .linear_mtl import check
        check(cfg, world_size)
    else:
        from .exchange.gossip import check_config as check_topology
        check_topology(cfg)                             # decentralized: graph and file errors too


class _Log:
    """Rank 0 prints and appends to <run_dir>/run.log; other ranks stay quiet."""

    def __init__(self, rank: int):
        self.rank, self.path = rank, None

    def __call__(self, msg: str) -> None:
        if self.rank != 0:
            return
        print(msg, flush=True)
        if self.path:
            try:
                with open(self.path, "a") as fh:
                    fh.write(msg.lstrip("\r") + "\n")
            except OSError as exc:  # full / read-only / vanished: one line, exit 2 (inside _guarded)
                raise storage_error("log", self.path, exc) from None


def _default_run_dir(cfg: Config) -> str:
    """runs/<name>-<job id> in a batch job (array jobs: <array id>_<task>), else runs/<name>-<time>."""
    env = os.environ
    job = env.get("SLURM_ARRAY_JOB_ID") and f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '0')}"
    job = job or (hpc.scheduler_job_id(env) or "").split(".")[0]
    return os.path.join("runs", f"{cfg.run.name}-{job or time.strftime('%Y%m%d-%H%M%S')}")


def _agree(comm, fn):
    """Run set-up step fn on every rank; if any rank fails, all exit with the lowest failing rank's line.

    Bad input (FedMTLError) exits 2; any other exception (a bug) prints its traceback on the
    failing rank and exits 1 -- on every rank, so no rank is left waiting in a collective.
    """
    err, value = None, None
    try:
        value = fn()
    except FedMTLError as exc:
        err = exc
    except Exception as exc:  # noqa: BLE001 - a set-up bug must not leave the other ranks hanging
        traceback.print_exc(file=sys.stderr)
        err = exc
    flags = np.zeros(comm.size, dtype=np.float64)
    flags[comm.rank] = (1.0 if isinstance(err, FedMTLError) else 2.0) if err else 0.0
    comm.allreduce_(flags)
    failed = np.flatnonzero(flags)
    if failed.size:
        first = failed[0]
        if comm.rank == first:
            msg = str(err) if isinstance(err, FedMTLError) else f"rank {comm.rank}: {type(err).__name__}: {err}"
            print(msg, file=sys.stderr, flush=True)
        code = 2 if flags[first] == 1.0 else 1
        raise SystemExit(getattr(err, "exit_code", code) if comm.rank == first else code)
    return value


def _build(cfg: Config, comm):
    """The Loop of this config's program (catalog ``AlgorithmSpec.program``) for this rank."""
    if cfg.program == "mtl":
        from .linear_mtl import build_solver
        loop = build_solver(cfg, comm)
        loop.local = _local()
        return loop
    return _build_federated(cfg, comm)


def _build_federated(cfg: Config, comm):
    """Dataset, model and engine for this rank."""
    from .data import build_dataset
    from .engine import build_engine
    from .models import build_model
    from .params import FlatModel
    local = _local()  # every rank: the shared-memory fallback is a collective
    device = _device(cfg, local)
    dataset = build_dataset(cfg, comm.rank, comm.size)  # real data: only this rank's clients are materialised
    factory = lambda: build_model(cfg.model.name, dataset.input_shape, dataset.n_classes)  # noqa: E731
    engine = build_engine(cfg, comm, dataset, FlatModel(factory()), factory, device)  # by algorithm.mode
    engine.local = local
    return engine


def _local():
    from .comm.mpi import local_rank_and_size
    return hpc.detect_local_rank(os.environ, fallback=local_rank_and_size)


def _device(cfg: Config, local):
    """train.device: cpu, cuda, or auto = the node-local GPU (local rank mod visible GPUs) when there is one."""
    import torch
    if cfg.train.device == "cpu":
        return torch.device("cpu")
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        return torch.device(hpc.choose_device(cfg.train.device, local.local_rank, local.local_size, n_gpus,
                                              cfg.train.allow_oversubscribe))
    except ConfigError as exc:
        raise ConfigError(str(exc).split(": ", 1)[1].replace("device:", "train.device:", 1)) from None


def _train(engine, cfg: Config, run_dir: str, log: _Log, comm, debug=None) -> int:
    ckdir = os.path.join(run_dir, "checkpoints")
    ck = Checkpoint(ckdir, cfg.checkpoint.every, cfg.checkpoint.keep)
    engine.callbacks = [Evaluate(cfg.run.eval_every), ck]
    if comm.rank == 0:
        engine.callbacks[1:1] = [WriteMetrics(run_dir), Progress(log)]
    signals.install()
    # hang watchdog (collective to start and to close; off in a debug session): docs/debugging.md
    dog = watchdog.start(comm, cfg.run.watchdog_s, debug=debug is not None, log_path=log.path, say=log)
    t0 = time.perf_counter()
    status = engine.run()
    wall = time.perf_counter() - t0
    extra = engine.summary_fields()  # every rank: may be collective (oracle accuracy, exact objective)
    dog.close()
    if comm.rank == 0:
        last = {k: (int(v) if k in ("round", "bytes_exchanged") else v) for k, v in engine.metrics.last().items()}
        summary = {"status": status, "rounds": cfg.run.rounds,
                   "algorithm": cfg.algorithm.name, "world_size": comm.size,
                   **last, "round": engine.round,
                   **extra, "wall_seconds": wall, "run_dir": os.path.abspath(run_dir),
                   "checkpoint": ck.last_path and os.path.abspath(ck.last_path),
                   "config_sha256": config_sha256(config_to_yaml(cfg))}
        def fill(tmp):
            with open(tmp, "w") as fh:
                json.dump(summary, fh, indent=2)
        write_atomic(os.path.join(run_dir, "summary.json"), fill, "summary")
        if status == "stopped":
            log(f"stopped by signal after round {engine.round}; checkpoint {ck.last_path}; "
                f"continue with: fedmtl-hpc resume {run_dir}")
        else:
            log(f"done: {engine.round} rounds in {wall:.1f} s; results in {os.path.abspath(run_dir)} "
                f"(summary.json, metrics.csv, metrics.h5, checkpoints/)")
    return EXIT_PREEMPTED if status == "stopped" else EXIT_OK


def _guarded(comm, fn) -> int:
    """Run the training phase; any exception aborts every rank of the job."""
    try:
        return fn()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure must end the whole job
        if not isinstance(exc, FedMTLError) and isinstance(exc, OSError) and exc.filename:
            exc = storage_error("file", exc.filename, exc)  # a write not mapped where it happened
        msg = str(exc) if isinstance(exc, FedMTLError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, FedMTLError):
            traceback.print_exc(file=sys.stderr)
        print(f"rank {comm.rank}: {msg}", file=sys.stderr, flush=True)
        # MPICH hydra forwards a rank's stderr through its proxy; MPI_Abort can tear the proxy down
        # before it read the line (seen under load: exit 2, empty stderr). Give it a moment.
        time.sleep(0.3)
        comm.abort(getattr(exc, "exit_code", 1))
        raise SystemExit(1)


def _startup(cfg: Config, comm, engine, log: _Log, threads: int) -> None:
    if comm.rank == 0:
        import sys as _sys
        torch = _sys.modules.get("torch")  # MTL programs never import it
        log(hpc.startup_report(world_size=comm.size, nodes=hpc.node_count(os.environ), local=engine.local,
                               n_gpus=torch.cuda.device_count() if torch and torch.cuda.is_available() else 0,
                               device=str(engine.device), mpi_version=getattr(comm, "library", ""),
                               torch_version=torch.__version__ if torch else "not used", threads=threads,
                               job_id=hpc.scheduler_job_id(os.environ)))
    log(f"fedmtl_hpc {__version__}: {comm.size} ranks, {engine.summary_line()}")
    if engine.describe():
        log(engine.describe())


def _debug_session(comm, debug) -> None:
    """--debug-rank: rank R waits for the IDE inside the first set-up agreement (the others wait in it)."""
    if debug is not None:
        _debug.check_rank(debug, comm.size)
        _agree(comm, lambda: _debug.listen(debug, comm.rank))


def run(cfg: Config, run_dir: str | None, debug=None) -> int:
    """``fedmtl-hpc run``: a new run from a validated config (``debug``: a debug.DebugTarget or None)."""
    signals.install()  # from the start: a stop request during set-up must not kill the rank
    signals.install_stack_dump()  # SIGUSR2: Python stacks to stderr, the run goes on
    comm = _comm()
    _check(cfg, comm.size)                              # no collective before this succeeds
    _debug_session(comm, debug)
    threads = _threads(cfg)
    log = _Log(comm.rank)

    def make_dir():
        msg = ""
        if comm.rank == 0:
            d = run_dir or _default_run_dir(cfg)
            if os.path.exists(os.path.join(d, "config.yaml")):
                msg = (f"ERR:run directory {d} already holds a run; continue it with "
                       f"`fedmtl-hpc resume {d}` or pick another --run-dir")
            else:
                try:
                    os.makedirs(os.path.join(d, "checkpoints"), exist_ok=True)
                    with open(os.path.join(d, "config.yaml"), "w") as fh:
                        fh.write(config_to_yaml(cfg))
                    msg = "OK:" + d
                except OSError as exc:
                    msg = f"ERR:cannot create run directory {d}: {exc}"
        msg = comm.bcast_str(msg)
        if msg.startswith("ERR:"):
            raise ConfigError(msg[4:])
        return msg[3:]

    engine = _agree(comm, lambda: _build(cfg, comm))  # data and device first: a failure leaves no directory
    path = _agree(comm, make_dir)
    log.path = os.path.join(path, "run.log")

    def train():  # the start-up lines go to run.log: a storage error there must abort the job too
        _startup(cfg, comm, engine, log, threads)
        log(f"run directory: {os.path.abspath(path)}")
        return _train(engine, cfg, path, log, comm, debug)
    return _guarded(comm, train)


def resume(run_dir: str, overrides: list[str], debug=None) -> int:
    """``fedmtl-hpc resume``: continue from the newest valid checkpoint in run_dir."""
    signals.install()  # from the start: a stop request during set-up must not kill the rank
    signals.install_stack_dump()
    comm = _comm()
    for item in overrides:
        if item.partition("=")[0] not in RESUME_OVERRIDABLE:
            raise ConfigError(f"--set {item.partition('=')[0]} cannot change on resume "
                              f"(allowed: {', '.join(RESUME_OVERRIDABLE)})")
    if not os.path.isfile(os.path.join(run_dir, "config.yaml")):
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    _debug_session(comm, debug)
    log = _Log(comm.rank)

    def pick():
        msg = ""
        if comm.rank == 0:
            path = ckpt.newest_valid(os.path.join(run_dir, "checkpoints"), warn=log)
            msg = f"OK:{path}" if path else f"ERR:no valid checkpoint in {run_dir}/checkpoints"
        msg = comm.bcast_str(msg)
        if msg.startswith("ERR:"):
            raise CheckpointError(msg[4:])
        return msg[3:]

    path = _agree(comm, pick)
    engine_threads = [1]

    def load():
        cfg = parse_config(apply_overrides(yaml.safe_load(ckpt.read_config(path)), overrides))
        _check(cfg, comm.size)
        engine_threads[0] = _threads(cfg)
        engine = _build(cfg, comm)
        snap = ckpt.load(path, rows=engine.checkpoint_rows())
        try:
            engine.check_resume(snap)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        engine.restore(snap)
        engine.metrics.restore(snap.metrics, os.path.join(run_dir, "metrics.csv"))
        return cfg, engine

    cfg, engine = _agree(comm, load)
    threads = engine_threads[0]
    log.path = os.path.join(run_dir, "run.log")

    def train():  # rank 0 writes config.yaml and run.log: a storage error there aborts every rank
        if comm.rank == 0:
            write_atomic(os.path.join(run_dir, "config.yaml"), lambda tmp: _write_text(tmp, config_to_yaml(cfg)),
                         "config")
        _startup(cfg, comm, engine, log, threads)
        log(f"resumed from {path} at round {engine.round}")
        return _train(engine, cfg, run_dir, log, comm, debug)
    return _guarded(comm, train)


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
