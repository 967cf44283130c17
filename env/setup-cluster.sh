#!/usr/bin/env bash
# Cluster set-up: load the site's modules, build a virtual environment on a shared file
# system, mpi4py against the site's MPI (or the mpi4py + MPICH wheels when no MPI module
# is named), torch for the site's CUDA, fedmtl_hpc (editable), then check the result.
#
#   bash env/setup-cluster.sh generic-slurm          # the profile env/sites/generic-slurm.sh
#   bash env/setup-cluster.sh ~/my-site.sh           # a profile of your own
#   FEDMTL_VENV=/scratch/me/venv FEDMTL_MODULES="python/3.11 openmpi" bash env/setup-cluster.sh generic-slurm
#
# A site profile is a small bash file of NAME="value" lines (env/sites/*.sh documents
# each): MODULES, VENV, TORCH_SPEC, TORCH_INDEX, MPI (auto|source|wheel), PIP_ARGS,
# REQUIRE_GPU, DATA, optionally PYTHON and MODULE_INIT. Any of them can be overridden
# for one call as FEDMTL_<NAME> (an empty value counts: FEDMTL_MODULES= loads none).
#
# Run it on a login node (pip needs the network, or PIP_ARGS pointing at a wheel
# directory); run it again on a GPU node with REQUIRE_GPU=1 to check the CUDA side.
# It is idempotent: a second run with the same profile only re-checks (a few seconds).
# Exit status: 0 built and checked, 2 bad profile or arguments, 1 a step failed.
# The local set-up for a workstation or CI is env/setup.sh; this script leaves it alone.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "setup-cluster: $*"; }
die() { echo "setup-cluster: error: $1" >&2; exit "${2:-1}"; }

[ $# = 1 ] || die "usage: bash env/setup-cluster.sh SITE  (a name in env/sites/ or a profile path)" 2
profile=$1
[ -f "$profile" ] || profile=$here/env/sites/${1%.sh}.sh
[ -f "$profile" ] || die "no site profile '$1' (have: $(cd "$here/env/sites" && ls ./*.sh | sed 's|^\./||; s|\.sh$||' | tr '\n' ' '))" 2

MODULES="" VENV="" TORCH_SPEC="torch==2.13.0" TORCH_INDEX="" MPI=auto PIP_ARGS="" REQUIRE_GPU=0 DATA=""
PYTHON=python3 MODULE_INIT=""
FEDMTL_HOME=$here
# shellcheck disable=SC1090
. "$profile"
for name in MODULES VENV TORCH_SPEC TORCH_INDEX MPI PIP_ARGS REQUIRE_GPU DATA PYTHON MODULE_INIT; do
  over=FEDMTL_$name
  if [ -n "${!over+set}" ]; then printf -v "$name" '%s' "${!over}"; fi
done
[ -n "$VENV" ] || die "the profile sets no VENV" 2
case $MPI in auto|source|wheel) ;; *) die "MPI=$MPI: expecting auto, source or wheel" 2 ;; esac
say "profile $profile: MODULES='$MODULES' VENV=$VENV MPI=$MPI TORCH_SPEC=$TORCH_SPEC TORCH_INDEX='${TORCH_INDEX}'"

# 1. modules, by the names the site uses
if [ -n "$MODULES" ]; then
  if ! type module >/dev/null 2>&1; then
    for f in $MODULE_INIT /usr/share/lmod/lmod/init/bash /usr/share/modules/init/bash /etc/profile.d/modules.sh; do
      if [ -r "$f" ]; then . "$f"; break; fi
    done
  fi
  type module >/dev/null 2>&1 || die "MODULES='$MODULES' but no module command (set MODULE_INIT to the init file)" 2
  for m in $MODULES; do
    module load "$m" || die "module load $m failed (module avail lists the names)"
  done
  say "loaded modules: $MODULES"
fi

# 2. which MPI: an mpicc from the modules (not the venv's own, from the MPICH wheel)
mpicc=$(command -v mpicc || true)
case $mpicc in "$VENV"/*) mpicc="" ;; esac
case $MPI in
  auto) if [ -n "$mpicc" ] && [ -n "$MODULES" ]; then MPI=source; else MPI=wheel; fi ;;
  source) [ -n "$mpicc" ] || die "MPI=source but no mpicc on PATH (load the site's MPI module)" 2 ;;
esac
if [ $MPI = source ]; then
  say "MPI: building mpi4py against $mpicc ($("$mpicc" -show 2>/dev/null | head -c 120 || "$mpicc" --showme 2>/dev/null | head -c 120))"
else
  say "MPI: the mpi4py + mpich wheels (no site MPI named)"
fi

# 3. the virtual environment
command -v "$PYTHON" >/dev/null || die "no $PYTHON on PATH (load the site's python module)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PYTHON is older than 3.10"
stamp=$VENV/.fedmtl-cluster-setup
want="$MPI|$mpicc|$TORCH_SPEC|$TORCH_INDEX|$(cat "$here/setup.cfg" | sha256sum | cut -c1-16)"
py=$VENV/bin/python
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c 'import fedmtl_hpc, mpi4py.MPI, torch, h5py' 2>/dev/null; then
  say "$VENV is up to date; checking it"
else
  [ -x "$py" ] || "$PYTHON" -m venv "$VENV" || die "cannot create $VENV"
  read -r -a pip_args <<<"$PIP_ARGS"
  pip=("$py" -m pip --disable-pip-version-check -q)
  "${pip[@]}" install "${pip_args[@]}" numpy h5py pyyaml scipy matplotlib
  torch_args=()
  [ -n "$TORCH_INDEX" ] && torch_args=(--index-url "$TORCH_INDEX")
  say "installing $TORCH_SPEC${TORCH_INDEX:+ from $TORCH_INDEX}"
  "${pip[@]}" install "${pip_args[@]}" "${torch_args[@]}" "$TORCH_SPEC"
  if [ $MPI = source ]; then
    # no wheel cache: a cached mpi4py wheel may have been built against another MPI
    "${pip[@]}" uninstall -y mpich mpi4py >/dev/null 2>&1 || true
    say "building mpi4py from source (several minutes on a small node)"
    MPICC=$mpicc "${pip[@]}" install "${pip_args[@]}" --no-binary=mpi4py --no-cache-dir mpi4py
  else
    "${pip[@]}" install "${pip_args[@]}" mpi4py mpich
  fi
  "${pip[@]}" install "${pip_args[@]}" --no-deps --no-build-isolation -e "$here" 2>/dev/null \
    || "${pip[@]}" install "${pip_args[@]}" --no-deps -e "$here"
fi

# 4. check what was built
FJ_MPI=$MPI FJ_VENV=$VENV FJ_REQUIRE_GPU=$REQUIRE_GPU FJ_TORCH_INDEX=$TORCH_INDEX "$py" - <<'PY' || die "check failed"
import os, sys, tempfile

import h5py, numpy, torch
import mpi4py
from mpi4py import MPI

import fedmtl_hpc

bad = []
mode, venv = os.environ["FJ_MPI"], os.path.realpath(os.environ["FJ_VENV"])
libs = sorted({line.split()[-1] for line in open("/proc/self/maps")
               if "libmpi" in line.split()[-1] or "libmpich" in line.split()[-1]})
lib = libs[0] if libs else "?"
vendor = MPI.get_vendor()
print(f"setup-cluster: mpi4py {mpi4py.__version__}: {vendor[0]} {'.'.join(map(str, vendor[1]))}, "
      f"{MPI.Get_library_version().splitlines()[0].strip()}; library {lib}")
in_venv = lib != "?" and os.path.realpath(lib).startswith(venv + os.sep)
if mode == "source" and in_venv:
    bad.append(f"mpi4py should use the site MPI but loads {lib} from the venv")
if mode == "wheel" and not in_venv and lib != "?":
    bad.append(f"mpi4py should use the MPICH wheel but loads {lib}")
cuda = torch.cuda.is_available()
print(f"setup-cluster: torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}), "
      f"torch.cuda.is_available() = {cuda}, {torch.cuda.device_count() if cuda else 0} GPU(s) visible")
index = os.environ.get("FJ_TORCH_INDEX", "")
if "/cu" in index and not torch.version.cuda:
    bad.append(f"TORCH_INDEX {index} but torch {torch.__version__} is a CPU build")
if os.environ["FJ_REQUIRE_GPU"] == "1" and not cuda:
    bad.append("REQUIRE_GPU=1 but torch sees no GPU (run this on a GPU node)")
with tempfile.TemporaryDirectory() as d:
    with h5py.File(os.path.join(d, "t.h5"), "w") as f:
        f["x"] = numpy.arange(4)
    with h5py.File(os.path.join(d, "t.h5")) as f:
        ok = f["x"][()].tolist() == [0, 1, 2, 3]
print(f"setup-cluster: h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}, parallel "
      f"{h5py.get_config().mpi}), write/read {'ok' if ok else 'FAILED'}; numpy {numpy.__version__}; "
      f"fedmtl_hpc {fedmtl_hpc.__version__}")
if not ok:
    bad.append("h5py could not read back a file it wrote")
for b in bad:
    print(f"setup-cluster: error: {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
"$VENV/bin/fedmtl-hpc" --version >/dev/null || die "$VENV/bin/fedmtl-hpc --version failed"
echo "$want" >"$stamp"

say "ready. In your shell and your job scripts:"
[ -n "$MODULES" ] && say "  module load $MODULES"
say "  module use $here/modulefiles; FEDMTL_VENV=$VENV${DATA:+ FEDMTL_SITE_DATA=$DATA} module load fedmtl_hpc"
say "  (jobs: export FEDMTL_MODULES=\"${MODULES:+$MODULES }fedmtl_hpc\" FEDMTL_VENV=$VENV${DATA:+ FEDMTL_SITE_DATA=$DATA})"
