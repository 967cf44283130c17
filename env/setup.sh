#!/usr/bin/env bash
# Local set-up: a virtual environment with torch, numpy, h5py, pyyaml, scipy, pytest, hypothesis,
# mpi4py + the MPICH wheel, matplotlib (the `plot` extra: `report` figures,
# partition/topology --png), debugpy (the `debug` extra: --debug-rank), and
# fedmtl_hpc in editable mode.
# Idempotent: a second run only checks what is there (about a second).
#   bash env/setup.sh            # creates ./.venv
#   FEDMTL_VENV=/path bash env/setup.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${FEDMTL_VENV:-$here/.venv}
py=${PYTHON:-python3}
# torch pinned for reproducibility; on this machine the CPU wheel of this
# version is stored locally, on a GPU cluster the same line brings the CUDA build.
TORCH_SPEC=${FEDMTL_TORCH_SPEC:-torch==2.13.0}
stamp="$venv/.fedmtl-setup"
want="$TORCH_SPEC|$(cat "$here/setup.cfg" | sha256sum | cut -c1-16)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import fedmtl_hpc, mpi4py.MPI, torch, h5py, matplotlib, debugpy, hypothesis' 2>/dev/null; then
  echo "env/setup.sh: $venv is up to date"
  exit 0
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "$TORCH_SPEC" numpy h5py pyyaml scipy pytest hypothesis mpi4py mpich matplotlib debugpy
"${pip[@]}" install --no-deps --no-build-isolation -e "$here" 2>/dev/null \
  || "${pip[@]}" install --no-deps -e "$here"
"$venv/bin/python" - <<'PY'
import mpi4py.MPI as M, torch, h5py, numpy, scipy, matplotlib, hypothesis, fedmtl_hpc
print(f"env/setup.sh: fedmtl_hpc {fedmtl_hpc.__version__}, torch {torch.__version__}, "
      f"numpy {numpy.__version__}, h5py {h5py.__version__}, matplotlib {matplotlib.__version__}, "
      f"{M.Get_library_version().splitlines()[0].strip()}")
PY
echo "$want" > "$stamp"
