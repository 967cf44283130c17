"""``fedmtl-hpc render-job``: a Slurm or PBS job script for your site, from the shipped templates.

The output is a shipped template (``jobs/run_cifar.*`` when GPUs are asked for,
else ``jobs/run_synthetic.*``) with two parts rewritten: the directive block
(the ``#SBATCH`` / ``#PBS`` lines right after the shebang) and the defaults in the
settings block (``: "${FEDMTL_CONFIG:=...}"`` lines). The bootstrap and
``jobs/lib/fedmtl_job.sh`` it sources are left as they are, so a rendered script
runs, resumes and requeues exactly like the shipped ones; there is no second copy
of their logic here.

    fedmtl-hpc render-job --scheduler slurm --nodes 2 --gpus-per-node 4 --partition gpu \\
        --walltime 12:00:00 --config configs/cifar10_fedem.yaml --output cifar.slurm
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from .. import __version__
from ..jobcheck import check_text

__all__ = ["HELP", "add_arguments", "main", "render"]

HELP = "write a Slurm or PBS job script for your site (from the shipped templates)"

_PROG = "fedmtl-hpc render-job"
_WALLTIME = re.compile(r"(\d+):([0-5]\d):([0-5]\d)")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_SAFE = re.compile(r"[A-Za-z0-9_./:+@%,= -]*")  # fits inside : "${VAR:=...}" without quoting
_SETTING = re.compile(r'^: "\$\{(FEDMTL_[A-Z_]+):=.*\}"')


class _Bad(ValueError):
    """A bad argument: one line, exit 2."""


def add_arguments(parser) -> None:
    """Register render-job's options on its subparser."""
    a = parser.add_argument
    a("--scheduler", required=True, choices=("slurm", "pbs"), help="slurm (#SBATCH) or pbs (PBS Pro #PBS)")
    a("--nodes", required=True, type=int, help="nodes (PBS: select chunks)")
    a("--gpus-per-node", type=int, default=0, help="GPUs per node (default 0: a CPU job)")
    a("--ranks-per-node", type=int, help="MPI ranks per node (default: one per GPU, or 8 without GPUs)")
    a("--cpus-per-rank", type=int, help="CPU cores (threads) per rank (default 8 with GPUs, else 1)")
    a("--partition", help="Slurm partition / PBS queue (default: the site's default)")
    a("--account", help="account / project to charge")
    a("--walltime", required=True, help="time limit HH:MM:SS")
    a("--config", required=True, help="the run's YAML config (relative: to the submit dir, else the checkout)")
    a("--job-name", help="job name (default fedmtl-<config name>)")
    a("--warn-seconds", type=int, help="stop signal this long before the walltime (default 300, 600 with GPUs)")
    a("--launcher", choices=("srun", "mpiexec", "mpirun"),
      help="rank launcher (default: srun for Slurm, mpiexec for PBS)")
    a("--modules", help='modules the job loads, in order (default "fedmtl_hpc"), e.g. "python cuda openmpi fedmtl_hpc"')
    a("--output", "-o", help="write here instead of stdout")


def _checkout() -> Path:
    """The checkout holding jobs/ (this file's, else $FEDMTL_HOME)."""
    for root in (Path(__file__).resolve().parents[2], Path(os.environ.get("FEDMTL_HOME", "/nonexistent"))):
        if (root / "jobs" / "lib" / "fedmtl_job.sh").is_file():
            return root
    raise _Bad("cannot find the job templates (jobs/lib/fedmtl_job.sh): set FEDMTL_HOME to the fedmtl_hpc checkout")


def _seconds(walltime: str) -> int:
    m = _WALLTIME.fullmatch(walltime)
    if not m:
        raise _Bad(f"--walltime {walltime!r}: expecting HH:MM:SS, e.g. 12:00:00")
    h, mi, s = map(int, m.groups())
    total = h * 3600 + mi * 60 + s
    if total == 0:
        raise _Bad("--walltime 00:00:00: the job needs some time")
    return total


def _safe(option: str, value: str) -> str:
    if not _SAFE.fullmatch(value):
        raise _Bad(f"{option} {value!r}: only letters, digits, spaces and _ . / : + @ % , = - are allowed")
    return value


def _checked(args, root: Path) -> dict:
    """Validated, defaulted values; raises _Bad with one line."""
    gpus = args.gpus_per_node
    v = {"nodes": args.nodes, "gpus": gpus}
    if args.nodes < 1:
        raise _Bad(f"--nodes {args.nodes}: expecting an integer >= 1")
    if gpus < 0:
        raise _Bad(f"--gpus-per-node {gpus}: expecting an integer >= 0")
    v["ranks"] = args.ranks_per_node if args.ranks_per_node is not None else (gpus or 8)
    v["cpus"] = args.cpus_per_rank if args.cpus_per_rank is not None else (8 if gpus else 1)
    for opt, key in (("--ranks-per-node", "ranks"), ("--cpus-per-rank", "cpus")):
        if v[key] < 1:
            raise _Bad(f"{opt} {v[key]}: expecting an integer >= 1")
    v["walltime"], wall = args.walltime, _seconds(args.walltime)
    v["warn"] = args.warn_seconds if args.warn_seconds is not None else (600 if gpus else 300)
    if v["warn"] < 0 or v["warn"] >= wall:
        raise _Bad(f"--warn-seconds {v['warn']}: expecting 0 <= seconds < the walltime ({wall} s)")
    config = _safe("--config", args.config)
    if not config.endswith((".yaml", ".yml")):
        raise _Bad(f"--config {config!r}: expecting a .yaml file")
    # relative and in the checkout: keep it relative (the job resolves it against $FEDMTL_HOME);
    # found only from here: make it absolute
    in_checkout = not Path(config).is_absolute() and (root / config).is_file()
    v["config"] = str(Path(config).resolve()) if Path(config).is_file() and not in_checkout else config
    name = args.job_name or "fedmtl-" + re.sub(r"[^A-Za-z0-9_.-]", "-", Path(config).stem)
    if not _NAME.fullmatch(name):
        raise _Bad(f"--job-name {name!r}: a letter, then up to 63 letters, digits, _ . -")
    v["name"] = name
    for opt, key in (("--partition", "partition"), ("--account", "account")):
        value = getattr(args, key)
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.@-]+", value):
            raise _Bad(f"{opt} {value!r}: expecting a name (letters, digits, _ . @ -)")
        v[key] = value
    v["launcher"] = args.launcher
    v["modules"] = _safe("--modules", args.modules) if args.modules is not None else None
    v["output"] = args.output
    return v


def _directives(scheduler: str, v: dict) -> list[str]:
    if scheduler == "slurm":
        d = [f"--job-name={v['name']}"]
        d += [f"--partition={v['partition']}"] if v["partition"] else []
        d += [f"--account={v['account']}"] if v["account"] else []
        d += [f"--nodes={v['nodes']}", f"--ntasks-per-node={v['ranks']}"]
        d += [f"--gpus-per-node={v['gpus']}"] if v["gpus"] else []
        d += [f"--cpus-per-task={v['cpus']}", f"--time={v['walltime']}", "--output=%x-%j.out",
              "--open-mode=append", f"--signal=B:USR1@{v['warn']}", "--requeue"]
        return [f"#SBATCH {x}" for x in d]
    select = f"select={v['nodes']}:ncpus={v['ranks'] * v['cpus']}:mpiprocs={v['ranks']}:ompthreads={v['cpus']}"
    select += f":ngpus={v['gpus']}" if v["gpus"] else ""
    d = [f"-N {v['name']}"]
    d += [f"-q {v['partition']}"] if v["partition"] else []
    d += [f"-A {v['account']}"] if v["account"] else []
    d += [f"-l {select}", f"-l walltime={v['walltime']}", "-j oe", "-r y"]
    return [f"#PBS {x}" for x in d]


def _set_defaults(lines: list[str], settings: dict[str, str]) -> list[str]:
    """Rewrite ``: "${NAME:=old}"`` lines; add missing ones before the settings' export line."""
    out, done = [], set()
    for line in lines:
        m = _SETTING.match(line)
        if m and m.group(1) in settings:
            name = m.group(1)
            out.append(f': "${{{name}:={settings[name]}}}"')
            done.add(name)
        elif line.startswith("export FEDMTL_") and set(settings) - done:
            missing = [n for n in settings if n not in done]
            out += [f': "${{{n}:={settings[n]}}}"' for n in missing]
            out.append(line + "".join(f" {n}" for n in missing))
            done.update(missing)
        else:
            out.append(line)
    if set(settings) - done:
        raise _Bad("the template has no settings block to fill in (jobs/ changed?)")
    return out


def render(scheduler: str, v: dict, root: Path) -> tuple[str, str]:
    """The script text and the template it came from (relative to the checkout)."""
    kind = "run_cifar" if v["gpus"] else "run_synthetic"
    rel = f"jobs/{kind}.{'slurm' if scheduler == 'slurm' else 'pbs'}"
    lines = (root / rel).read_text().splitlines()
    prefix = "#SBATCH" if scheduler == "slurm" else "#PBS"
    end = 1
    while end < len(lines) and lines[end].startswith(prefix):
        end += 1
    gpus = f", {v['gpus']} GPU(s)/node" if v["gpus"] else ""
    note = [f"# Rendered by fedmtl-hpc render-job {__version__} from {rel}: {v['nodes']} node(s) x "
            f"{v['ranks']} rank(s) x {v['cpus']} thread(s){gpus}, walltime {v['walltime']}, "
            f"stop signal {v['warn']} s ahead.",
            "# The template's comments below describe its own defaults."]
    settings = {"FEDMTL_CONFIG": v["config"], "FEDMTL_HOME": str(root)}
    if v["launcher"]:
        settings["FEDMTL_LAUNCHER"] = v["launcher"]
    if v["modules"] is not None:
        settings["FEDMTL_MODULES"] = v["modules"]
    if scheduler == "pbs":
        settings["FEDMTL_WARN_SECONDS"] = str(v["warn"])
        if v["output"]:
            settings["FEDMTL_JOB_SCRIPT"] = str(Path(v["output"]).resolve())
    body = _set_defaults(lines[end:], settings)
    return "\n".join([lines[0], *_directives(scheduler, v), *note, *body]) + "\n", rel


def main(args) -> int:
    """Write the script; 2 with one line on a bad argument."""
    try:
        root = _checkout()
        v = _checked(args, root)
        text, rel = render(args.scheduler, v, root)
    except _Bad as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    errors = [p for p in check_text(text) if p.severity == "error"]
    if errors:  # the values passed the checks above, so this is a template problem
        print(f"{_PROG}: error: the rendered script fails its directive check: {errors[0]}", file=sys.stderr)
        return 1
    if not (Path(v["config"]).is_file() or (root / v["config"]).is_file()):
        print(f"{_PROG}: note: {v['config']} is not here; it must exist where the job runs", file=sys.stderr)
    if v["output"]:
        out = Path(v["output"])
        try:
            out.write_text(text)
            out.chmod(0o755)
        except OSError as exc:
            print(f"{_PROG}: error: cannot write {out}: {exc.strerror}", file=sys.stderr)
            return 2
        print(f"{_PROG}: wrote {out} (from {rel})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
