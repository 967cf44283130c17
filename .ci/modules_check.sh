#!/usr/bin/env bash
# Check that modulefiles/fedmtl_hpc/0.1.0 loads under BOTH module systems.
#
#   bash .ci/modules_check.sh                       # checks: fedmtl-hpc --version
#   bash .ci/modules_check.sh 'python -c "import fedmtl_hpc; print(fedmtl_hpc.__version__)"'
#
# Sequence: install environment-modules, load + check, purge; install lmod,
# load + check, purge. The two Debian packages conflict (installing one removes
# the other), hence one after the other. Each round purges exactly the
# packages its install added (lmod pulls in lua5.3 and lua-* libraries) and
# any leftover /etc/profile.d file, also on failure, so the machine ends with
# neither installed. Do not run it on a machine whose own module system you
# want to keep: it removes it. Needs root and apt.
#
# In each round, a login shell sources the tool's init file, runs
# `module use <repo>/modulefiles; module load fedmtl_hpc`, asserts
# FEDMTL_HOME=<repo> and `python` = <venv>/bin/python, then runs the check
# command (from the repository root) and requires exit status 0.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHECK=${1:-fedmtl-hpc --version}
VENV=${FEDMTL_VENV:-$ROOT/.venv}
export DEBIAN_FRONTEND=noninteractive

say() { echo "modules_check: $*"; }
die() { echo "modules_check: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (apt-get)"
[ -f "$ROOT/modulefiles/fedmtl_hpc/0.1.0" ] || die "no modulefile at $ROOT/modulefiles/fedmtl_hpc/0.1.0"

installed() { dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '$1 ~ /^.i/ {print $2}' | sort; }

ADDED=()   # packages the current round installed; purged by cleanup
cleanup() {
  if [ ${#ADDED[@]} -gt 0 ]; then
    apt-get purge -y -qq "${ADDED[@]}" >/dev/null 2>&1 || say "warning: could not purge ${ADDED[*]}"
    ADDED=()
  fi
  # leftovers seen after purges; remove only when no package owns them
  local f
  for f in /etc/profile.d/modules.sh /etc/profile.d/lmod.sh; do
    if [ -e "$f" ] && ! dpkg -S "$f" >/dev/null 2>&1; then rm -f "$f"; fi
  done
}
trap cleanup EXIT

# round PACKAGE INIT_FILE
round() {
  local pkg=$1 init=$2 before out rc=0
  before=$(installed)
  if ! apt-get install -y -qq "$pkg" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq "$pkg" >/dev/null || die "apt-get install $pkg failed"
  fi
  mapfile -t ADDED < <(comm -13 <(echo "$before") <(installed))
  [ -r "$init" ] || die "$pkg installed but $init is missing"
  local version
  version=$(dpkg-query -W -f='${Version}' "$pkg")
  say "$pkg $version installed (${#ADDED[@]} packages added)"

  # The checks run in a fresh login shell, as a batch job would (#!/bin/bash -l).
  out=$(cd "$ROOT" && MC_INIT="$init" MC_ROOT="$ROOT" MC_VENV="$VENV" MC_CHECK="$CHECK" bash -lc '
    set -u
    source "$MC_INIT"
    module use "$MC_ROOT/modulefiles"
    module load fedmtl_hpc || { echo "module load fedmtl_hpc failed"; exit 1; }
    [ "${FEDMTL_HOME:-}" = "$MC_ROOT" ] || { echo "FEDMTL_HOME=${FEDMTL_HOME:-unset}, expected $MC_ROOT"; exit 1; }
    py=$(command -v python || true)
    [ "$py" = "$MC_VENV/bin/python" ] || { echo "python is ${py:-missing}, expected $MC_VENV/bin/python"; exit 1; }
    echo "FEDMTL_HOME=$FEDMTL_HOME python=$py"
    eval "$MC_CHECK" || { echo "check command failed (exit $?): $MC_CHECK"; exit 1; }
    module unload fedmtl_hpc
    [ -z "${FEDMTL_HOME:-}" ] || { echo "FEDMTL_HOME still set after unload"; exit 1; }
  ' 2>&1) || rc=$?
  printf '%s\n' "$out" | sed "s/^/  [$pkg] /"
  [ $rc = 0 ] || die "$pkg: check failed"
  say "$pkg: ok"
  cleanup
  say "$pkg purged"
}

round environment-modules /usr/share/modules/init/bash
round lmod /usr/share/lmod/lmod/init/bash
say "both module systems load fedmtl_hpc; neither is left installed"
