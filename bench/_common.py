"""Helpers shared by the MPI benchmarks: size parsing and the run header."""

from __future__ import annotations

import os
import platform
import socket
import time

__all__ = ["parse_bytes", "header"]

_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}


def parse_bytes(text: str) -> int:
    """'10KB' -> 10000 (decimal units), '123' -> 123."""
    t = text.strip().upper()
    for unit, mult in _UNITS.items():
        if t.endswith(unit):
            return int(float(t[:-len(unit)]) * mult)
    return int(t)


def header(comm, title: str, extra: str = "") -> None:
    """Rank 0 prints what a figure needs to be read: date, host, cores, ranks, load, versions."""
    if comm.Get_rank() != 0:
        return
    import mpi4py
    import numpy as np
    from mpi4py import MPI
    try:
        import torch
        tv = f"torch {torch.__version__} ({torch.get_num_threads()} thread(s)/rank)  "
    except ImportError:
        tv = ""
    lib = " ".join(MPI.Get_library_version().strip().splitlines()[0].split())
    print(f"# {title}\n# date {time.strftime('%Y-%m-%d %H:%M:%S %z')}  host {socket.gethostname()}  "
          f"cores {os.cpu_count()}  ranks {comm.Get_size()}  load avg {os.getloadavg()[0]:.2f}{extra}\n"
          f"# python {platform.python_version()}  numpy {np.__version__}  {tv}mpi4py {mpi4py.__version__}  MPI {lib}",
          flush=True)
