"""Distributed multi-task learning with linear models (numpy float64; no torch).

Five solvers run as real MPI programs by the same runner as the federated engine (``Loop`` protocol):
``prox_sync``, ``prox_async``, ``mtrl_surrogate``, ``dsml``, ``clustered_mtl`` (catalog program "mtl").
``check`` runs before any collective; ``build_solver`` builds this rank's Loop.
"""

from __future__ import annotations

from ..algorithms.catalog import SPECS
from ..errors import ConfigError

__all__ = ["check", "build_solver"]


def check(cfg, world_size: int):
    """Rules that need the rank count or the task file's names and shapes (no collective; exit 2)."""
    from .data import task_meta
    meta = task_meta(cfg)
    name, T = cfg.algorithm.name, meta.T
    where = f"data.path {cfg.data.path} holds" if cfg.data.name == "mtl_h5" else "data.n_tasks is"
    if name == "prox_async":
        if world_size < 2:
            raise ConfigError("algorithm.name prox_async needs at least 2 MPI ranks (a server and task ranks), got 1")
        if world_size - 1 > T:
            raise ConfigError(f"{where} {T} tasks, fewer than the {world_size - 1} task ranks of prox_async "
                              f"(every task rank needs a task); use at most {T + 1} ranks")
        bad = [r for r in cfg.algorithm.params.delay_ranks if r >= world_size]
        if bad:
            raise ConfigError(f"algorithm.prox_async.delay_ranks names rank {bad[0]}, the job has {world_size} ranks")
    elif world_size > T:
        raise ConfigError(f"{where} {T} tasks, fewer than the {world_size} MPI ranks (every rank needs a task)")
    if name == "clustered_mtl" and cfg.algorithm.params.k > T:
        raise ConfigError(f"algorithm.clustered_mtl.k must be <= the number of tasks ({T}), got {cfg.algorithm.params.k}")
    return meta


def build_solver(cfg, comm):
    """This rank's Loop for cfg.algorithm.name (loads only this rank's tasks)."""
    from .data import task_meta
    return SPECS[cfg.algorithm.name].load()(cfg, comm, task_meta(cfg))
