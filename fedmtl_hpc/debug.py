"""``--debug-rank R[:PORT]`` / ``R:HOST:PORT``: a debugpy server on one rank of an MPI job.

Rank R listens (127.0.0.1 unless a host is named; port 5678 by default, 0 = any free
port), prints ``rank R: debugpy listening on HOST:PORT ...`` and waits for an IDE to attach
before set-up and training; the other ranks wait in the first set-up collective as usual,
and the hang watchdog is off for the session. debugpy is the optional ``debug`` extra
(``pip install 'fedmtl_hpc[debug]'``); without it the command exits 2 with that hint,
before MPI starts. See docs/debugging.md (VS Code attach, ssh tunnel to a compute node).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from .errors import ConfigError as _ConfigError

__all__ = ["DebugError", "DebugTarget", "parse", "require_debugpy", "check_rank", "listen", "DEFAULT_HOST",
           "DEFAULT_PORT", "INSTALL_HINT"]

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5678


class DebugError(_ConfigError):
    """Bad --debug-rank input or no debugpy: one line, exit 2 (a ConfigError, so the CLI and set-up agree)."""

    prefix = "debug error"


INSTALL_HINT = ("--debug-rank needs debugpy, which is not installed: pip install 'fedmtl_hpc[debug]' "
                "(or: pip install debugpy) in this environment")


@dataclass(frozen=True)
class DebugTarget:
    rank: int
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        return f"{self.rank}:{self.host}:{self.port}"


def parse(spec: str) -> DebugTarget:
    """'R', 'R:PORT' or 'R:HOST:PORT' (HOST may be [v6]) -> DebugTarget; ConfigError otherwise."""
    bad = DebugError(f"--debug-rank must be RANK, RANK:PORT or RANK:HOST:PORT (e.g. 0, 1:5678, "
                      f"0:0.0.0.0:5678), got {spec!r}")
    rank_s, _, rest = spec.partition(":")
    host, port_s = DEFAULT_HOST, str(DEFAULT_PORT)
    if rest:
        host_s, sep, port_s = rest.rpartition(":")
        if sep:
            host = host_s.strip("[]")
            if not host:
                raise bad
    if not (rank_s.isdigit() and port_s.isdigit()):
        raise bad
    port = int(port_s)
    if port > 65535:
        raise DebugError(f"--debug-rank port must be 0..65535, got {port}")
    return DebugTarget(int(rank_s), host, port)


def require_debugpy() -> None:
    """ConfigError with the install hint when debugpy cannot be imported (checked before MPI starts)."""
    try:
        found = importlib.util.find_spec("debugpy") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise DebugError(INSTALL_HINT)


def check_rank(target: DebugTarget, world_size: int) -> None:
    if target.rank >= world_size:
        raise DebugError(f"--debug-rank {target.rank}: the job has ranks 0..{world_size - 1}")


def listen(target: DebugTarget, rank: int) -> None:
    """On rank ``target.rank``: start debugpy, say where, wait for the IDE. Other ranks: nothing."""
    if rank != target.rank:
        return
    # debugpy's note about frozen stdlib modules is noise here (breakpoints in your code work)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    try:
        import debugpy
    except ImportError:
        raise DebugError(INSTALL_HINT) from None
    try:
        host, port = debugpy.listen((target.host, target.port))
    except Exception as exc:  # noqa: BLE001 - port in use, bad address: bad input, exit 2 everywhere
        raise DebugError(f"--debug-rank {target}: debugpy cannot listen on {target.host}:{target.port}: {exc}") \
            from None
    print(f"rank {rank}: debugpy listening on {host}:{port}; attach a debugger (VS Code: Remote Attach to "
          f"{host}:{port}, docs/debugging.md); the job waits until one attaches", flush=True)
    debugpy.wait_for_client()
    print(f"rank {rank}: debugger attached", flush=True)
