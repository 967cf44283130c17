#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: bash env/test.sh [pytest args]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
bash env/system-packages.sh
bash env/setup.sh
export OMP_NUM_THREADS=1
exec "${FEDMTL_VENV:-$here/.venv}/bin/python" -m pytest -q "$@"
