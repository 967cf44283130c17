"""Static checker for ``#PBS`` and ``#SBATCH`` directives in job scripts.

Catches template errors before a job waits in a queue to fail: directives
after the first command (PBS and Slurm ignore them for their own prefix, but
Slurm's sbatch still obeys a late ``#PBS`` line: measured with Slurm 22.05),
unknown PBS options, malformed ``-l select=``, ``walltime=``, ``mem=``,
``--time``, ``--ntasks``, ``--signal``, ``--gpus-per-node``, ``--array``, ``--open-mode``.

Some checks exist because sbatch reads ``#PBS`` lines differently from PBS
(measured): a bare ``walltime=3600`` is seconds to PBS but minutes to sbatch,
``mem=`` without a unit is bytes to PBS but megabytes to sbatch, and
``-l select=...,walltime=...`` on one line makes sbatch fail.

    python -m fedmtl_hpc.jobcheck jobs/*.slurm jobs/*.pbs   # exit 1 on errors
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Problem", "check_text", "check_file", "main"]


@dataclass(frozen=True)
class Problem:
    """One finding: 1-based line number, message, ``'error'`` or ``'warning'``."""

    line: int
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"line {self.line}: {self.severity}: {self.message}"


_WALLTIME = re.compile(r"\d+:[0-5]\d:[0-5]\d")
_MEM = re.compile(r"\d+(?:[kmgtp]?b|[kmgt]?w)", re.IGNORECASE)
_INT_KEYS = ("ncpus", "mpiprocs", "ompthreads", "ngpus")
# Slurm --time: min, min:sec, h:min:sec, d-h, d-h:min, d-h:min:sec
_SLURM_TIME = re.compile(r"(\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}|UNLIMITED|INFINITE)", re.IGNORECASE)
_ARRAY = re.compile(r"\d+(-\d+(:\d+)?)?(,\d+(-\d+(:\d+)?)?)*(%\d+)?")
_SIGNAL = re.compile(r"(?:[RB]{1,2}:)?(?:SIG)?(?:[A-Z]+[0-9]*|\d+)(?:@\d+)?", re.IGNORECASE)
_PBS_ARG = {"-N", "-l", "-j", "-o", "-e", "-q", "-A", "-m", "-M", "-W", "-r", "-J"}
_PBS_FLAG = {"-V"}


def _pbs_resource(item: str, add: Callable[[str, str], None]) -> None:
    """Check one ``key=value`` of ``-l``."""
    key, sep, value = item.partition("=")
    if not sep or not key or not value:
        add(f"-l {item!r}: expecting key=value", "error")
    elif key == "walltime":
        if re.fullmatch(r"\d+", value):
            add(f"walltime={value}: PBS reads seconds, sbatch reads minutes; write HH:MM:SS", "error")
        elif not _WALLTIME.fullmatch(value):
            add(f"walltime={value!r}: expecting HH:MM:SS", "error")
    elif key in ("mem", "vmem", "pmem"):
        if not _MEM.fullmatch(value):
            add(f"{key}={value!r}: expecting a size with a unit (b, kb, mb, gb, tb), e.g. 16gb", "error")
    elif key == "select":
        for chunk in value.split("+"):
            _pbs_select_chunk(chunk, add)


def _pbs_select_chunk(chunk: str, add: Callable[[str, str], None]) -> None:
    """``[N:]res=val[:res=val...]`` with integer counts and sized memory."""
    parts = chunk.split(":")
    if parts and re.fullmatch(r"\d+", parts[0]):
        if int(parts[0]) < 1:
            add(f"select={chunk!r}: chunk count must be >= 1", "error")
        parts = parts[1:]
    elif parts and "=" not in parts[0]:
        add(f"select={chunk!r}: {parts[0]!r} is neither a chunk count nor res=value", "error")
        parts = parts[1:]
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key or not value:
            add(f"select={chunk!r}: {part!r} is not res=value", "error")
        elif key in _INT_KEYS and not (value.isdigit() and int(value) >= (0 if key == "ngpus" else 1)):
            add(f"select: {key}={value!r} is not a positive integer", "error")
        elif key == "mem" and not _MEM.fullmatch(value):
            add(f"select: mem={value!r}: expecting a size with a unit, e.g. 16gb", "error")
        elif key == "ngpus" and value != "0":
            add("select: ngpus is not honoured when Slurm's sbatch runs this script; "
                "GPUs must then be requested another way", "warning")


def _check_pbs(tokens: list[str], add: Callable[[str, str], None]) -> None:
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        opt, value = (tok[:2], tok[2:]) if tok.startswith("-") and len(tok) > 2 else (tok, None)
        if opt in _PBS_FLAG and value is None:
            i += 1
            continue
        if not tok.startswith("-"):
            add(f"#PBS: unexpected argument {tok!r} (a value with a space must be quoted)", "error")
            i += 1
            continue
        if opt not in _PBS_ARG:
            add(f"unknown #PBS option {tok!r} (known: {' '.join(sorted(_PBS_ARG | _PBS_FLAG))})", "error")
            i += 1
            continue
        if value is None:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("-"):
                add(f"#PBS {opt} needs a value", "error")
                i += 1
                continue
            value, i = tokens[i + 1], i + 2
        else:
            i += 1
        _check_pbs_value(opt, value, add)


def _check_pbs_value(opt: str, value: str, add: Callable[[str, str], None]) -> None:
    if opt == "-l":
        items = value.split(",")
        if len(items) > 1:
            add(f"-l {value!r}: one resource per -l line; sbatch fails on a comma list", "error")
        for item in items:
            _pbs_resource(item, add)
    elif opt == "-j" and value not in ("oe", "eo", "n"):
        add(f"-j {value!r}: expecting oe, eo or n", "error")
    elif opt == "-m" and not re.fullmatch(r"[abej]+|n", value):
        add(f"-m {value!r}: expecting letters from a, b, e, j, or n", "error")
    elif opt == "-r" and value not in ("y", "n"):
        add(f"-r {value!r}: expecting y or n", "error")
    elif opt == "-r" and value == "n":
        add("-r n: Slurm's sbatch ignores it (the job stays requeueable there)", "warning")
    elif opt == "-J" and not re.fullmatch(r"\d+-\d+(:\d+)?(%\d+)?", value):
        add(f"-J {value!r}: expecting an array range X-Y[:Z][%N]", "error")
    elif opt == "-W" and "=" not in value:
        add(f"-W {value!r}: expecting attribute=value (e.g. depend=afterok:JOBID)", "error")
    elif opt == "-N" and (not value or len(value) > 236 or not value[0].isalpha()):
        add(f"-N {value!r}: a job name starts with a letter and has at most 236 characters", "error")


def _sbatch_options(tokens: list[str]) -> list[tuple[str, str | None]]:
    """``(option, value)`` pairs from one #SBATCH line (``--a=b``, ``--a b``, ``-n8``, ``-n 8``)."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--") and "=" in tok:
            out.append(tuple(tok.split("=", 1)))  # type: ignore[arg-type]
        elif tok.startswith("-") and not tok.startswith("--") and len(tok) > 2:
            out.append((tok[:2], tok[2:]))
        elif tok.startswith("-") and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            out.append((tok, tokens[i + 1]))
            i += 1
        else:
            out.append((tok, None))
        i += 1
    return out


def _check_sbatch(tokens: list[str], add: Callable[[str, str], None]) -> None:
    for opt, value in _sbatch_options(tokens):
        if opt in ("-t", "--time", "--time-min"):
            if value is None or not _SLURM_TIME.fullmatch(value):
                add(f"{opt} {value!r}: expecting [D-]HH:MM:SS, MM:SS or minutes", "error")
        elif opt in ("-n", "--ntasks", "-c", "--cpus-per-task", "--ntasks-per-node"):
            if value is None or not (value.isdigit() and int(value) >= 1):
                add(f"{opt} {value!r}: expecting a positive integer", "error")
        elif opt in ("-N", "--nodes"):
            if value is None or not re.fullmatch(r"[1-9]\d*(-[1-9]\d*)?", value):
                add(f"{opt} {value!r}: expecting N or MIN-MAX", "error")
        elif opt in ("--gpus-per-node", "--gpus-per-task", "-G", "--gpus"):
            if value is None or not re.fullmatch(r"(\w+:)?\d+", value):
                add(f"{opt} {value!r}: expecting an integer count, optionally type:count", "error")
        elif opt == "--signal":
            if value is None or not _SIGNAL.fullmatch(value):
                add(f"--signal {value!r}: expecting [B:]SIG[@seconds], e.g. B:USR1@300", "error")
        elif opt in ("-a", "--array"):
            if value is None or not _ARRAY.fullmatch(value):
                add(f"{opt} {value!r}: expecting indexes like 1-6, 1,3,5, 0-15:4, optionally %N", "error")
        elif opt == "--open-mode" and value not in ("append", "truncate"):
            add(f"--open-mode {value!r}: expecting append or truncate", "error")


def check_text(text: str) -> list[Problem]:
    """Problems in a job script's text, in line order."""
    problems: list[Problem] = []
    first_command: int | None = None
    kinds: dict[str, int] = {}
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or (line.startswith("#") and not re.match(r"#(PBS|SBATCH)\b", line)):
            continue
        m = re.match(r"#(PBS|SBATCH)\b(.*)", line)
        if not m:
            first_command = first_command or no
            continue
        kind, rest = m.group(1), m.group(2)
        kinds.setdefault(kind, no)

        def add(message: str, severity: str, _no: int = no) -> None:
            problems.append(Problem(_no, message, severity))

        if first_command is not None:
            effect = ("PBS ignores it but Slurm's sbatch still applies it" if kind == "PBS"
                      else "sbatch ignores it")
            add(f"#{kind} after the first command (line {first_command}): {effect}", "error")
        try:
            tokens = shlex.split(rest)
        except ValueError as exc:
            add(f"#{kind}: cannot split {rest.strip()!r}: {exc}", "error")
            continue
        if not tokens:
            add(f"#{kind} with no option", "error")
        (_check_pbs if kind == "PBS" else _check_sbatch)(tokens, add)
    if len(kinds) == 2:
        problems.append(Problem(max(kinds.values()), "both #PBS and #SBATCH directives: sbatch "
                                "merges them (a #PBS walltime beats #SBATCH -t whatever the order)",
                                "warning"))
    return sorted(problems, key=lambda p: p.line)


def check_file(path: str | Path) -> list[Problem]:
    """Problems in the job script at ``path``."""
    return check_text(Path(path).read_text())


def main(argv: Sequence[str] | None = None) -> int:
    """Check each file; print ``path:line: severity: message``; 1 if any error, else 0."""
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m fedmtl_hpc.jobcheck JOB_SCRIPT...", file=sys.stderr)
        return 2
    errors = 0
    for path in paths:
        for p in check_file(path):
            print(f"{path}:{p.line}: {p.severity}: {p.message}")
            errors += p.severity == "error"
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
