#!/usr/bin/env bash
# System packages the test suite uses, installed from Debian when we are root
# with apt (CI, a fresh VM). Elsewhere it only reports what is missing: the
# tests that need a package skip with a reason.
#   hdf5-tools             h5ls / h5dump: checkpoints readable without Python
#   dataset-fashion-mnist  the real Fashion-MNIST (IDX gzip) for end-to-end learning checks
#   slurm + munge          a real single-node Slurm for the job templates (.ci/slurm.sh)
set -euo pipefail
pkgs=(hdf5-tools dataset-fashion-mnist slurmctld slurmd slurm-client munge)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "env/system-packages.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
else
  echo "env/system-packages.sh: not root or no apt; tests needing ${missing[*]} will skip"
fi
