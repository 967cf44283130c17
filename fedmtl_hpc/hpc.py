"""Scheduler and launcher environment: node-local rank, device, threads, job id.

Pure functions over an environment mapping (pass ``os.environ`` in production,
a dict in tests). This module never imports mpi4py: where the environment says
nothing, the MPI layer supplies ``(local_rank, local_size)`` through a callable
(``comm.Split_type(MPI.COMM_TYPE_SHARED)``).

Node-local rank precedence, first complete source wins (``RankEnv.launcher``):

1. ``openmpi``  OMPI_COMM_WORLD_LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_SIZE
2. ``mpich``    MPI_LOCALRANKID, MPI_LOCALNRANKS (MPICH/Intel MPI hydra)
3. ``mvapich``  MV2_COMM_WORLD_LOCAL_RANK, MV2_COMM_WORLD_LOCAL_SIZE (MVAPICH2 mpirun_rsh)
4. ``pmi``      PMI_LOCAL_RANK, PMI_LOCAL_SIZE (Cray PALS, some PMI-2 launchers)
5. ``slurm``    SLURM_LOCALID and the step's tasks on SLURM_NODEID, only inside
                an srun step (SLURM_STEP_ID set)
6. ``mpi-shm``  the MPI layer's shared-memory split (the ``fallback`` callable)
7. ``pbs``      PBS_NODEFILE lines for this host, the local rank from PMI_RANK
                assuming the nodefile order is the rank order
8. ``single``   (0, 1): not launched by anything we know

The launcher's own variables come before Slurm's because they are inherited
wrongly: ``mpiexec`` inside a Slurm allocation starts its proxy with one srun
task, so every rank sees SLURM_LOCALID=0 (measured with the MPICH wheel). The
exact MPI split comes before PBS, whose answer rests on an assumed placement.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedmtl_hpc.errors import ConfigError

__all__ = ["RankEnv", "detect_local_rank", "parse_tasks_per_node", "pbs_node_counts",
           "node_count", "choose_device", "threads_per_rank", "scheduler_job_id",
           "startup_report", "cuda_aware_mpi", "memory_kib", "reset_peak_memory"]

Env = Mapping[str, str]
LocalFallback = Callable[[], tuple[int, int]]


@dataclass(frozen=True)
class RankEnv:
    """Where this process sits on its node, and who said so."""

    local_rank: int
    local_size: int
    launcher: str


def _int(env: Env, name: str) -> int | None:
    """Return the integer in ``env[name]``; None when unset or empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def _pair(env: Env, rank_var: str, size_var: str, launcher: str) -> RankEnv | None:
    rank, size = _int(env, rank_var), _int(env, size_var)
    if rank is None or size is None:
        return None
    return _checked(rank, size, launcher, f"{rank_var}/{size_var}")


def _checked(rank: int, size: int, launcher: str, source: str) -> RankEnv:
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"{source}: local rank {rank} is not in [0, {size})")
    return RankEnv(rank, size, launcher)


def parse_tasks_per_node(value: str) -> list[int]:
    """Expand Slurm's compressed tasks-per-node list: ``'4(x2),3'`` -> ``[4, 4, 3]``."""
    out: list[int] = []
    for part in value.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise ConfigError(f"Slurm tasks-per-node {value!r}: cannot parse {part!r}")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


def _slurm(env: Env) -> RankEnv | None:
    # Outside a step (the batch script itself) SLURM_LOCALID=0 and the job's
    # task count describe the allocation, not this process.
    if not (env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID")):
        return None
    rank = _int(env, "SLURM_LOCALID")
    if rank is None:
        return None
    node = _int(env, "SLURM_NODEID") or 0
    for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if env.get(name):
            counts = parse_tasks_per_node(env[name])
            if node >= len(counts):
                raise ConfigError(f"SLURM_NODEID={node} but {name}={env[name]!r} has {len(counts)} nodes")
            return _checked(rank, counts[node], "slurm", f"SLURM_LOCALID/{name}")
    size = _int(env, "SLURM_NTASKS_PER_NODE")
    return None if size is None else _checked(rank, size, "slurm", "SLURM_LOCALID/SLURM_NTASKS_PER_NODE")


def pbs_node_counts(nodefile_text: str) -> dict[str, int]:
    """Lines per host in a PBS nodefile (one line per MPI process slot), in file order."""
    counts: dict[str, int] = {}
    for line in nodefile_text.split():
        counts[line] = counts.get(line, 0) + 1
    return counts


def _short(host: str) -> str:
    return host.split(".", 1)[0]


def _pbs(env: Env, hostname: str) -> RankEnv | None:
    path, grank = env.get("PBS_NODEFILE"), _int(env, "PMI_RANK")
    if not path or grank is None:
        return None
    try:
        hosts = Path(path).read_text().split()
    except OSError as exc:
        raise ConfigError(f"PBS_NODEFILE={path}: {exc.strerror}") from None
    if grank >= len(hosts):
        raise ConfigError(f"PMI_RANK={grank} but PBS_NODEFILE {path} has {len(hosts)} lines")
    if _short(hosts[grank]) != _short(hostname):
        return None  # placement is not nodefile order: no trustworthy answer
    mine = [i for i, h in enumerate(hosts) if _short(h) == _short(hostname)]
    return _checked(mine.index(grank), len(mine), "pbs", "PBS_NODEFILE/PMI_RANK")


def detect_local_rank(env: Env, fallback: LocalFallback | None = None,
                      hostname: str | None = None) -> RankEnv:
    """Node-local rank and size by the precedence in the module docstring.

    ``fallback`` returns ``(local_rank, local_size)`` from MPI (shared-memory
    split); ``hostname`` defaults to this machine's, used only for PBS.
    """
    for found in (_pair(env, "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "openmpi"),
                  _pair(env, "MPI_LOCALRANKID", "MPI_LOCALNRANKS", "mpich"),
                  _pair(env, "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE", "mvapich"),
                  _pair(env, "PMI_LOCAL_RANK", "PMI_LOCAL_SIZE", "pmi"),
                  _slurm(env)):
        if found is not None:
            return found
    if fallback is not None:
        rank, size = fallback()
        return _checked(rank, size, "mpi-shm", "MPI shared-memory split")
    found = _pbs(env, hostname or socket.gethostname())
    return found if found is not None else RankEnv(0, 1, "single")


def node_count(env: Env) -> int | None:
    """Nodes in the allocation (Slurm, or distinct hosts of the PBS nodefile); None if unknown."""
    for name in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES"):
        n = _int(env, name)
        if n is not None:
            return n
    path = env.get("PBS_NODEFILE")
    if path:
        try:
            return len({_short(h) for h in pbs_node_counts(Path(path).read_text())})
        except OSError:
            return None
    return None


def choose_device(requested: str, local_rank: int, local_size: int, n_gpus: int,
                  allow_oversubscribe: bool = False, *, isolated: bool = False) -> str:
    """``'cpu'`` or ``'cuda:K'`` with K = local_rank % n_gpus.

    ``n_gpus`` is the number of GPUs this rank can see. More local ranks than
    GPUs is an error unless ``allow_oversubscribe``; ``isolated`` says each rank
    sees only its own GPUs (e.g. Slurm ``--gpus-per-task=1`` with binding),
    where one visible GPU per rank is not oversubscription.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device: expecting 'auto', 'cpu' or 'cuda', got {requested!r}")
    if not 0 <= local_rank < local_size:
        raise ConfigError(f"device: local rank {local_rank} is not in [0, {local_size})")
    if requested == "cpu" or (requested == "auto" and n_gpus == 0):
        return "cpu"
    if n_gpus < 1:
        raise ConfigError("device: 'cuda' requested but no GPU is visible "
                          "(check CUDA_VISIBLE_DEVICES, the job's GPU request and the torch build)")
    if local_size > n_gpus and not (allow_oversubscribe or isolated):
        raise ConfigError(f"device: {local_size} ranks on this node share {n_gpus} GPU(s); "
                          "set allow_oversubscribe, or start at most one rank per GPU")
    return f"cuda:{local_rank % n_gpus}"


def threads_per_rank(env: Env) -> int:
    """Threads per rank: OMP_NUM_THREADS, else SLURM_CPUS_PER_TASK, else 1.

    Under srun torch does not drop to one thread by itself (8 ranks x 2 threads
    on 2 cores ran 6x slower), so the default is 1, not the core count.
    """
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        raw = env.get(name, "").strip()
        if not raw:
            continue
        first = raw.split(",", 1)[0]  # OpenMP allows a nested list: "4,2"
        try:
            n = int(first)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r} is not a positive integer") from None
        if n < 1:
            raise ConfigError(f"environment variable {name}={raw!r} is not a positive integer")
        return n
    return 1


def scheduler_job_id(env: Env) -> str | None:
    """Return the batch job's id (SLURM_JOB_ID, else PBS_JOBID), or None outside a job."""
    for name in ("SLURM_JOB_ID", "PBS_JOBID"):
        if env.get(name, "").strip():
            return env[name].strip()
    return None


def startup_report(*, world_size: int, nodes: int | None, local: RankEnv, n_gpus: int,
                   device: str, mpi_version: str, torch_version: str, threads: int,
                   job_id: str | None = None) -> str:
    """One line for rank 0's log: ranks, nodes, GPUs, MPI library, torch, threads."""
    # Get_library_version() is multi-line with padded columns: keep line 1, squeezed
    mpi = " ".join(mpi_version.strip().splitlines()[0].split()) if mpi_version.strip() else "unknown"
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    where = n(nodes, "node") if nodes else "? nodes"
    job = f"job {job_id}" if job_id else "no batch job"
    return (f"fedmtl_hpc: {n(world_size, 'rank')} on {where} ({local.local_size} on this node, "
            f"launcher {local.launcher}), {job}, device {device} ({n(n_gpus, 'GPU')} visible), "
            f"{n(threads, 'thread')}/rank, torch {torch_version}, MPI {mpi}")


def cuda_aware_mpi(env: Env, library: str, query: Callable[[], int] | None = None,
                   ompi_info: Callable[[], str] | None = None) -> tuple[bool | None, str]:
    """Can the MPI library take CUDA device buffers? ``(True | False | None for unknown, how it was told)``.

    ``library``: ``MPI_Get_library_version``; ``query``: the library's ``MPIX_Query_cuda_support``
    (a run-time answer, MPICH >= 4 and Open MPI; None where it has none); ``ompi_info``: returns
    ``ompi_info --parsable --all`` (Open MPI's build answer; slow, asked only when ``query`` is None).
    MPICH turns its GPU support off at run time with ``MPIR_CVAR_ENABLE_GPU=0``.
    """
    mpich = "MPICH" in library.upper() and "OPEN MPI" not in library.upper()
    gpu_var = env.get("MPIR_CVAR_ENABLE_GPU", "").strip()
    if mpich and gpu_var == "0":
        return False, "MPIR_CVAR_ENABLE_GPU=0"
    if query is not None:
        return bool(query()), "MPIX_Query_cuda_support"
    if "OPEN MPI" in library.upper() and ompi_info is not None:
        m = re.search(r"mpi_built_with_cuda_support:value:(\w+)", ompi_info())
        if m:
            return m.group(1).lower() == "true", "ompi_info mpi_built_with_cuda_support"
    return None, "the library does not say"


def memory_kib(field: str = "VmRSS") -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in KiB, from /proc/self/status (Linux).

    Unlike ru_maxrss, VmHWM starts afresh at exec (a worker does not inherit its parent's peak)
    and can be reset (:func:`reset_peak_memory`)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def reset_peak_memory() -> int:
    """Reset VmHWM to the current RSS (``/proc/self/clear_refs``, Linux >= 4.0); returns that RSS in KiB."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return memory_kib("VmRSS")
