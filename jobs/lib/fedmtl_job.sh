# shellcheck shell=bash
# The part every fedmtl_hpc batch job shares: jobs/*.slurm, jobs/*.pbs and the
# scripts `fedmtl-hpc render-job` writes. It is SOURCED by them (never run), after
# they set their defaults and loaded modules; they then call
#
#     fedmtl_job [--set KEY=VALUE | KEY=VALUE]...
#
# In order, fedmtl_job:
#  1. finds the scheduler (PBS_JOBID, else SLURM_JOB_ID, else none) and changes to
#     the submit directory (PBS_O_WORKDIR, else SLURM_SUBMIT_DIR, else $PWD);
#  2. puts fedmtl-hpc on PATH (module, else $FEDMTL_VENV/bin, else $FEDMTL_HOME/.venv/bin),
#     sets OMP_NUM_THREADS from the allocation (SLURM_CPUS_PER_TASK; PBS ompthreads);
#  3. validates the config with the overrides in the batch shell (bad input: exit 2
#     before any rank starts) and picks the run directory,
#     <submit dir>/runs/<run.name>-<job key>; the job key is the job id
#     (<array id>_<task> for arrays), which Slurm keeps across a requeue;
#  4. if that directory holds a run with a checkpoint: `fedmtl-hpc resume` it,
#     else `fedmtl-hpc run` (a directory with config.yaml but no checkpoint is moved aside);
#  5. starts the launcher (srun | mpiexec | mpirun) in the background and traps
#     USR1, TERM and INT: each is forwarded to the launcher as SIGUSR1 (srun turns
#     a SIGTERM into SIGKILL for its tasks; srun, MPICH hydra and Open MPI mpirun
#     all pass SIGUSR1 on), the ranks agree at the next round boundary, checkpoint
#     and exit 3;
#  6. on exit 3 after a warning (SIGUSR1) or the time limit's SIGTERM, requeues the
#     job: `scontrol requeue` (Slurm keeps the job id, so the next start finds the
#     same run directory and resumes), or for PBS a resubmission with qsub (default:
#     qrerun needs operator rights) or qrerun. After any other SIGTERM (scancel, qdel,
#     a preemption that cancels) it checkpoints but does not requeue.
#
# Variables (all optional; set them in the template, or export them before
# sbatch/qsub: sbatch passes the environment, qsub needs -v or -V):
#   FEDMTL_CONFIG         config file; relative paths: the submit dir, else $FEDMTL_HOME
#   FEDMTL_SET            extra overrides for a NEW run, "key=value key=value"
#                         (a resume keeps the run's own config)
#   FEDMTL_RUN_DIR        run directory (default above)
#   FEDMTL_LAUNCHER       srun | mpiexec | mpirun (templates: srun for Slurm, mpiexec for PBS)
#   FEDMTL_LAUNCHER_ARGS  extra launcher arguments, e.g. "--mpi=pmix" or "--bind-to none"
#   FEDMTL_NP             ranks for mpiexec/mpirun (default: the allocation's task count)
#   FEDMTL_THREADS        threads per rank (default: from the allocation, else 1)
#   FEDMTL_SWEEP_TABLE    TSV table: header = config keys, row k = array task k
#   FEDMTL_COMPARE        a compare SPEC (fedmtl-hpc compare): array task k runs cell k with
#                         `fedmtl-hpc compare SPEC --cell k` (into <out>/runs/<cell>/; a requeued
#                         task resumes it); wins over FEDMTL_SWEEP_TABLE. Then collect the
#                         tables with `fedmtl-hpc compare SPEC --collect`
#   FEDMTL_COMPARE_OUT    the compare output directory (default: the SPEC's out, else compare/<name>)
#   FEDMTL_REQUEUE        1 (default): requeue after a stop; 0: exit 3 and leave it
#   FEDMTL_REQUEUE_ON_TERM 1: requeue after any SIGTERM too (sites whose preemption cancels)
#   FEDMTL_MAX_REQUEUES   requeue at most this many times (default 20)
#   FEDMTL_PBS_REQUEUE    qsub (default) | qrerun | none
#   FEDMTL_JOB_SCRIPT     the script qsub resubmits (PBS gives no path to its own script)
#   FEDMTL_SELF_WARN      1: arm our own warning signal FEDMTL_WARN_SECONDS (default 300)
#                         before the time limit; default 1 under PBS (no --signal there)
#   FEDMTL_WALLTIME       HH:MM:SS limit for that timer when the scheduler cannot say

_fj_log() { echo "fedmtl-job: $*"; }
_fj_die() { echo "fedmtl-job: error: $1" >&2; exit "${2:-2}"; }

# _fj_seconds [D-]HH:MM:SS | MM:SS | SS -> seconds
_fj_seconds() {
  local t=$1 d=0 h=0 m=0 s=0
  case $t in *-*) d=${t%%-*}; t=${t#*-} ;; esac
  IFS=: read -r -a p <<<"$t"
  case ${#p[@]} in
    3) h=${p[0]} m=${p[1]} s=${p[2]} ;;
    2) m=${p[0]} s=${p[1]} ;;
    1) s=${p[0]} ;;
    *) return 1 ;;
  esac
  [[ "$d$h$m$s" =~ ^[0-9]+$ ]] || return 1
  echo $(( ((10#$d * 24 + 10#$h) * 60 + 10#$m) * 60 + 10#$s ))
}

_fj_scheduler() {
  if [ -n "${PBS_JOBID:-}" ]; then echo pbs
  elif [ -n "${SLURM_JOB_ID:-}" ]; then echo slurm
  else echo none; fi
}

# the run directory key: the job id, arrays as <array id>_<index>; PBS "123[4].srv" -> 123_4
_fj_job_key() {
  case $_fj_sched in
    slurm)
      if [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-0}"
      else echo "$SLURM_JOB_ID"; fi ;;
    pbs)
      local id=${PBS_JOBID%%.*}
      if [[ $id =~ ^([0-9]+)\[([0-9]+)\]$ ]]; then echo "${BASH_REMATCH[1]}_${BASH_REMATCH[2]}"
      else echo "${id//[^A-Za-z0-9_-]/_}"; fi ;;
    *) date +%Y%m%d-%H%M%S ;;
  esac
}

_fj_ntasks() {
  if [ -n "${FEDMTL_NP:-}" ]; then echo "$FEDMTL_NP"
  elif [ "$_fj_sched" = pbs ] && [ -r "${PBS_NODEFILE:-}" ]; then wc -l <"$PBS_NODEFILE" | tr -d ' '
  elif [ -n "${SLURM_NTASKS:-}" ]; then echo "$SLURM_NTASKS"
  else echo 1; fi
}

_fj_threads() {
  if [ -n "${FEDMTL_THREADS:-}" ]; then echo "$FEDMTL_THREADS"
  elif [ "$_fj_sched" = slurm ]; then echo "${SLURM_CPUS_PER_TASK:-1}"  # the allocation, not the login shell
  else echo "${OMP_NUM_THREADS:-1}"; fi  # PBS Pro sets it from ompthreads
}

_fj_find_cli() {
  command -v fedmtl-hpc >/dev/null 2>&1 && return 0
  local d
  for d in "${FEDMTL_VENV:-}" "${FEDMTL_HOME:+$FEDMTL_HOME/.venv}"; do
    if [ -n "$d" ] && [ -x "$d/bin/fedmtl-hpc" ]; then PATH="$d/bin:$PATH"; export PATH; return 0; fi
  done
  _fj_die "fedmtl-hpc not found: load the module (module load fedmtl_hpc), or set FEDMTL_VENV"
}

# _fj_resolve PATH -> an existing file: as given (relative to the submit dir), else under $FEDMTL_HOME
_fj_resolve() {
  local p=$1
  if [ -f "$p" ]; then (cd "$(dirname "$p")" && echo "$PWD/$(basename "$p")")
  elif [ "${p#/}" = "$p" ] && [ -f "${FEDMTL_HOME:-}/$p" ]; then echo "$FEDMTL_HOME/$p"
  else return 1; fi
}

# _fj_sweep_row TABLE INDEX -> "key=value" lines of data row INDEX (1-based; blank and
# # lines skipped; the first other line is the header), or one line "ERROR: ..." and status 1
_fj_sweep_row() {
  awk -F'\t' -v want="$2" '
    /^[[:space:]]*(#|$)/ { next }
    !header { n = NF; for (i = 1; i <= NF; i++) key[i] = $i; header = 1; next }
    { row++ }
    row == want {
      if (NF != n) { printf "ERROR: row %d has %d columns, the header %d\n", row, NF, n; bad = 1; exit 1 }
      for (i = 1; i <= n; i++) print key[i] "=" $i
      found = 1; exit
    }
    END {
      if (bad) exit 1
      if (!header) { print "ERROR: no header row"; exit 1 }
      if (!found) { printf "ERROR: %d rows, no row %d\n", row, want; exit 1 }
    }' "$1"
}

# _fj_run_name CONFIG OVERRIDES... -> run.name, after validating config + overrides (exit 2 if bad)
_fj_run_name() {
  "$_fj_python" - "$@" <<'PY'
import sys
from fedmtl_hpc.config import load_config
from fedmtl_hpc.errors import FedMTLError
try:
    print(load_config(sys.argv[1], sys.argv[2:]).run.name)
except FedMTLError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
PY
}

# Self-armed warning: where the scheduler sends none ahead of the limit (PBS).
_fj_arm_timer() {
  local warn=${FEDMTL_WARN_SECONDS:-300} left="" wall
  case $_fj_sched in
    slurm) left=$(squeue -h -j "$SLURM_JOB_ID" -o %L 2>/dev/null | head -n1) ;;
    pbs) wall=$(qstat -f "$PBS_JOBID" 2>/dev/null | sed -n 's/^ *Resource_List.walltime = //p' | head -n1)
         [ -n "$wall" ] && left=$wall ;;  # read at the start of the job: elapsed is ~0
  esac
  [ -n "$left" ] || left=${FEDMTL_WALLTIME:-}
  local s
  if ! s=$(_fj_seconds "$left" 2>/dev/null); then
    _fj_log "no time limit known (set FEDMTL_WALLTIME=HH:MM:SS): no warning signal armed"
    return
  fi
  local delay=$(( s - warn ))
  [ $delay -gt 0 ] || delay=0
  _fj_log "warning signal armed: SIGUSR1 in ${delay}s (${warn}s before the ${s}s limit)"
  # the subshell takes its sleep down with it when we cancel the timer
  (trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep "$delay" & sp=$!; wait $sp && kill -USR1 $$) &
  _fj_timer=$!
}

_fj_on_signal() {
  _fj_stop=$1 _fj_pending=1 _fj_signals="$_fj_signals $1"
  if [ -n "${_fj_pid:-}" ]; then
    _fj_log "got SIG$1 at $(date +%s.%N): forwarding SIGUSR1 to the launcher (pid $_fj_pid);" \
            "the ranks checkpoint at the next round boundary and exit 3"
    kill -USR1 "$_fj_pid" 2>/dev/null || true
  else
    _fj_log "got SIG$1 before the launch: nothing to checkpoint, requeueing"
  fi
}

# Requeue after a warning (SIGUSR1 to the batch shell, or to the ranks directly: no signal
# here), or a SIGTERM at the time limit. Not after another SIGTERM: scancel/qdel mean
# "stop", and Slurm shows a cancelled job as COMPLETING, which scontrol would requeue.
_fj_should_requeue() {
  case " $_fj_signals " in *" USR1 "*) return 0 ;; esac
  [ -z "${_fj_signals// /}" ] && return 0
  [ "${FEDMTL_REQUEUE_ON_TERM:-0}" = 1 ] && return 0
  [ "$_fj_sched" = slurm ] && scontrol show job "$SLURM_JOB_ID" 2>/dev/null | grep -q "Reason=TimeLimit"
}

_fj_requeue() {
  local script
  if [ "${FEDMTL_REQUEUE:-1}" = 0 ]; then
    _fj_log "stopped; FEDMTL_REQUEUE=0, not requeued. Continue with: fedmtl-hpc resume $_fj_run_dir"
    return
  fi
  if ! _fj_should_requeue; then
    _fj_log "stopped by SIG${_fj_stop} (scancel/qdel or a preemption that cancels): not requeued." \
            "Continue with: FEDMTL_RUN_DIR=$_fj_run_dir sbatch|qsub <this script>" \
            "(FEDMTL_REQUEUE_ON_TERM=1 requeues after SIGTERM too)"
    return
  fi
  case $_fj_sched in
    slurm)
      local n=${SLURM_RESTART_COUNT:-0}
      if [ "$n" -ge "${FEDMTL_MAX_REQUEUES:-20}" ]; then
        _fj_log "stopped after $n requeues (FEDMTL_MAX_REQUEUES); not requeued. Continue with:" \
                "FEDMTL_RUN_DIR=$_fj_run_dir sbatch <this script>"
        return
      fi
      _fj_log "requeueing job $SLURM_JOB_ID (restart $((n + 1))); the next start resumes $_fj_run_dir"
      if ! scontrol requeue "$SLURM_JOB_ID"; then
        _fj_log "scontrol requeue refused (a cancelled job, or --no-requeue). Continue with:" \
                "FEDMTL_RUN_DIR=$_fj_run_dir sbatch <this script>"
      fi ;;
    pbs)
      local n=${FEDMTL_REQUEUE_COUNT:-0}
      if [ "$n" -ge "${FEDMTL_MAX_REQUEUES:-20}" ]; then
        _fj_log "stopped after $n resubmissions (FEDMTL_MAX_REQUEUES); continue with:" \
                "qsub -v FEDMTL_RUN_DIR=$_fj_run_dir <this script>"
        return
      fi
      case ${FEDMTL_PBS_REQUEUE:-qsub} in
        qrerun)
          _fj_log "qrerun $PBS_JOBID (needs operator rights on most sites)"
          qrerun "$PBS_JOBID" || _fj_log "qrerun failed; continue with: qsub -v FEDMTL_RUN_DIR=$_fj_run_dir <this script>" ;;
        qsub)
          if ! script=$(_fj_resolve "${FEDMTL_JOB_SCRIPT:-}"); then
            _fj_log "cannot resubmit: set FEDMTL_JOB_SCRIPT to this script's path. Continue with:" \
                    "qsub -v FEDMTL_RUN_DIR=$_fj_run_dir <this script>"
            return
          fi
          # the FEDMTL_* settings travel with -v (a value must not contain a comma)
          local vars="FEDMTL_RUN_DIR=$_fj_run_dir,FEDMTL_REQUEUE_COUNT=$((n + 1))" v
          for v in FEDMTL_CONFIG FEDMTL_COMPARE FEDMTL_COMPARE_OUT FEDMTL_HOME FEDMTL_VENV FEDMTL_MODULES FEDMTL_LAUNCHER FEDMTL_LAUNCHER_ARGS \
                   FEDMTL_NP FEDMTL_THREADS FEDMTL_JOB_SCRIPT FEDMTL_PBS_REQUEUE FEDMTL_MAX_REQUEUES \
                   FEDMTL_WARN_SECONDS FEDMTL_SELF_WARN FEDMTL_WALLTIME; do
            [ -n "${!v:-}" ] && vars="$vars,$v=${!v}"
          done
          _fj_log "resubmitting: qsub -W depend=afterany:$PBS_JOBID -v ... $script"
          qsub -W "depend=afterany:$PBS_JOBID" -v "$vars" "$script" \
            || _fj_log "qsub failed; continue with: qsub -v FEDMTL_RUN_DIR=$_fj_run_dir $script" ;;
        *) _fj_log "FEDMTL_PBS_REQUEUE=${FEDMTL_PBS_REQUEUE}: not requeued; continue with:" \
                   "qsub -v FEDMTL_RUN_DIR=$_fj_run_dir <this script>" ;;
      esac ;;
    *) _fj_log "stopped; continue with: fedmtl-hpc resume $_fj_run_dir" ;;
  esac
}

fedmtl_job() {
  local sets=() a row rc=0
  _fj_sched=$(_fj_scheduler)
  _fj_pid="" _fj_stop="" _fj_pending="" _fj_timer="" _fj_signals=""
  trap '_fj_on_signal USR1' USR1
  trap '_fj_on_signal TERM' TERM
  trap '_fj_on_signal INT' INT

  cd "${PBS_O_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}" || _fj_die "cannot enter the submit directory"
  _fj_find_cli
  _fj_python=$(dirname "$(command -v fedmtl-hpc)")/python
  [ -x "$_fj_python" ] || _fj_python=python3

  # overrides: FEDMTL_SET, then the script's arguments, then the sweep row (later wins)
  read -r -a sets <<<"${FEDMTL_SET:-}"  # split on blanks, no globbing
  while [ $# -gt 0 ]; do
    case $1 in
      --set) [ $# -ge 2 ] || _fj_die "--set needs KEY=VALUE"; sets+=("$2"); shift 2 ;;
      --set=*) sets+=("${1#--set=}"); shift ;;
      *=*) sets+=("$1"); shift ;;
      *) _fj_die "unexpected argument '$1' (expecting --set KEY=VALUE or KEY=VALUE)" ;;
    esac
  done
  local spec="" cell=""
  if [ -n "${FEDMTL_COMPARE:-}" ]; then
    spec=$(_fj_resolve "$FEDMTL_COMPARE") || _fj_die "compare SPEC $FEDMTL_COMPARE not found"
    cell=${SLURM_ARRAY_TASK_ID:-${PBS_ARRAY_INDEX:-${FEDMTL_SWEEP_ROW:-}}}
    [[ $cell =~ ^[1-9][0-9]*$ ]] || _fj_die "compare: array task id '${cell}' is not a cell number (1, 2, ...)"
    [ ${#sets[@]} -eq 0 ] || _fj_die "compare: put overrides into the SPEC (set: [...]), not FEDMTL_SET or arguments"
  elif [ -n "${FEDMTL_SWEEP_TABLE:-}" ]; then
    local table idx=${SLURM_ARRAY_TASK_ID:-${PBS_ARRAY_INDEX:-${FEDMTL_SWEEP_ROW:-}}}
    table=$(_fj_resolve "$FEDMTL_SWEEP_TABLE") || _fj_die "sweep table $FEDMTL_SWEEP_TABLE not found"
    [[ $idx =~ ^[1-9][0-9]*$ ]] || _fj_die "sweep: array task id '${idx}' is not a row number (1, 2, ...)"
    local rows
    rows=$(_fj_sweep_row "$table" "$idx") || _fj_die "sweep table $table (array task $idx): ${rows#ERROR: }"
    while IFS= read -r row; do sets+=("$row"); done <<<"$rows"
    _fj_log "sweep row $idx of $table: ${rows//$'\n'/ }"
  fi

  local config name key listing line
  key=$(_fj_job_key)
  if [ -n "$spec" ]; then
    # the cell's run directory and config come from the SPEC: validate it here, before any rank starts
    listing=$(fedmtl-hpc compare "$spec" --cells ${FEDMTL_COMPARE_OUT:+--out "$FEDMTL_COMPARE_OUT"}) || exit 2
    line=$(awk -F'\t' -v i="$cell" 'NR > 1 && $1 == i' <<<"$listing")
    [ -n "$line" ] || _fj_die "compare SPEC $spec: no cell $cell (${listing%%;*})"
    case $(cut -f5 <<<"$line") in "config error"*) _fj_die "compare SPEC $spec, cell $cell: $(cut -f5 <<<"$line")" ;; esac
    _fj_run_dir=$(cut -f6 <<<"$line")
    _fj_log "compare cell $cell of $spec: $(cut -f2-4 <<<"$line" | tr '\t' ' ')"
  else
    config=$(_fj_resolve "${FEDMTL_CONFIG:-}") \
      || _fj_die "config '${FEDMTL_CONFIG:-}' not found (in $PWD or ${FEDMTL_HOME:-\$FEDMTL_HOME})"
    name=$(_fj_run_name "$config" "${sets[@]}") || exit 2
    _fj_run_dir=${FEDMTL_RUN_DIR:-$PWD/runs/$name-$key}
  fi

  local threads np
  threads=$(_fj_threads); np=$(_fj_ntasks)
  export OMP_NUM_THREADS=$threads
  [ -n "${SLURM_CPUS_PER_TASK:-}" ] && export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK  # srun >= 22.05 needs it

  local cli action
  cli=$(command -v fedmtl-hpc)
  local -a cmd
  if [ -n "$spec" ]; then
    action=compare  # runs, resumes or skips the cell itself
    cmd=("$cli" compare "$spec" --cell "$cell")
    [ -n "${FEDMTL_COMPARE_OUT:-}" ] && cmd+=(--out "$FEDMTL_COMPARE_OUT")
  elif [ -f "$_fj_run_dir/config.yaml" ] && compgen -G "$_fj_run_dir/checkpoints/ckpt-*.h5" >/dev/null; then
    action=resume
    cmd=("$cli" resume "$_fj_run_dir")
  else
    if [ -f "$_fj_run_dir/config.yaml" ]; then
      local aside="$_fj_run_dir.no-checkpoint-$(date +%Y%m%d-%H%M%S)"
      mv "$_fj_run_dir" "$aside" && _fj_log "$_fj_run_dir had no checkpoint: moved to $aside, starting afresh"
    fi
    action=run
    cmd=("$cli" run "$config" --run-dir "$_fj_run_dir")
    for a in "${sets[@]}"; do cmd+=(--set "$a"); done
  fi

  local launcher=${FEDMTL_LAUNCHER:-$([ "$_fj_sched" = slurm ] && echo srun || echo mpiexec)}
  local -a launch extra
  read -r -a extra <<<"${FEDMTL_LAUNCHER_ARGS:-}"
  case $launcher in
    srun) launch=(srun "${extra[@]}") ;;
    mpiexec|mpirun) launch=("$launcher" -n "$np" "${extra[@]}") ;;
    *) _fj_die "FEDMTL_LAUNCHER=$launcher: expecting srun, mpiexec or mpirun" ;;
  esac
  command -v "${launch[0]}" >/dev/null 2>&1 || _fj_die "launcher ${launch[0]} not found on PATH"

  _fj_log "scheduler $_fj_sched, job ${SLURM_JOB_ID:-${PBS_JOBID:-none}} (key $key," \
          "restart ${SLURM_RESTART_COUNT:-${FEDMTL_REQUEUE_COUNT:-0}}), $np ranks x $threads threads via $launcher"
  _fj_log "$action: ${cmd[*]}"
  if [ "${FEDMTL_SELF_WARN:-$([ "$_fj_sched" = pbs ] && echo 1 || echo 0)}" = 1 ]; then _fj_arm_timer; fi

  if [ -z "$_fj_stop" ]; then
    "${launch[@]}" "${cmd[@]}" &
    _fj_pid=$!
    _fj_pending=""
    wait "$_fj_pid"; rc=$?
    # a trapped signal interrupts wait (status > 128): wait again for the launcher's own status
    while [ $rc -gt 128 ] && [ -n "$_fj_pending" ]; do
      _fj_pending=""
      wait "$_fj_pid"; a=$?
      [ $a = 127 ] && break  # already collected
      rc=$a
    done
  else
    rc=3
  fi
  [ -n "$_fj_timer" ] && kill "$_fj_timer" 2>/dev/null
  trap - USR1 TERM INT
  _fj_log "launcher exited with $rc at $(date +%s.%N)"
  if [ $rc = 3 ]; then
    _fj_requeue
  fi
  return $rc
}
