# Sourced by the slurm/*.sbatch scripts: the run's names and paths, and run_training, which starts the
# training step, forwards the stop signal to it, and requeues the job when gantrain stopped early (exit 3).
#
# The stop signal, and why it goes through this shell: the scripts ask for `--signal=B:USR1@120`, so
# Slurm sends USR1 120 s before the time limit to the batch shell only; the trap below forwards it once
# to the launcher (srun or mpirun), and each launcher forwards USR1 to every rank. Without `B:` Slurm
# would signal the srun steps directly, but not an mpirun started by this shell (it lives in the batch
# step), and a user's `scancel --signal=USR1 --full` would reach the ranks twice, which gantrain reads
# as "stop now, without a checkpoint". One path, one delivery, whatever the launcher: the shell.
# On USR1 every rank stops after the same step, rank 0 writes a checkpoint, all exit 3; this shell then
# runs `scontrol requeue`, and the requeued job runs the same command, which resumes from the newest
# checkpoint of runs/NAME (checkpoint.resume: auto). docs/cluster.md has the whole flow.

GANTRAIN_ROOT=${GANTRAIN_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
GANTRAIN=${GANTRAIN:-$GANTRAIN_ROOT/build/gantrain}
GANTRAIN_NAME=${GANTRAIN_NAME:-${SLURM_JOB_NAME:-gantrain}}
GANTRAIN_OUT_DIR=${GANTRAIN_OUT_DIR:-$GANTRAIN_ROOT/runs}
if [ ! -x "$GANTRAIN" ]; then
  echo "gantrain job: no gantrain binary at $GANTRAIN: build it, submit from the checkout or set GANTRAIN_ROOT or GANTRAIN" >&2
  exit 2
fi
# The training command every script runs; the script's own settings and then the job's arguments go after it.
GANTRAIN_ARGS=(train --config "$GANTRAIN_CONFIG" "run.out_dir=$GANTRAIN_OUT_DIR" "run.name=$GANTRAIN_NAME")
# Open MPI refuses root unless told; in containers the batch user is often root.
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

# mpirun copies the environment to the ranks of its own node only: -x for the variables the ranks need.
mpirun_exports() {
  local v
  for v in $(compgen -e | grep -E '^(NCCL_|UCX_|OMP_|OPENBLAS_|HDF5_|GANTRAIN_)'); do printf -- '-x\n%s\n' "$v"; done
}

launcher_pid=""
stop_forwarded=0
forward_stop() {
  echo "gantrain job: USR1 received at $(date +%T): the ranks stop after the current step and write a checkpoint"
  if [ -z "$launcher_pid" ]; then return; fi
  if [ "$stop_forwarded" = 1 ]; then
    echo "gantrain job: already stopping (a second signal would stop the ranks without a checkpoint; scancel $SLURM_JOB_ID does that)"
    return
  fi
  stop_forwarded=1
  kill -USR1 "$launcher_pid" 2>/dev/null
}

# run_training LAUNCHER ARGS...: runs the step to its end and exits this script: 0 when training finished,
# after a requeue when it stopped early with a checkpoint (3), else with the launcher's code.
run_training() {
  echo "gantrain job $SLURM_JOB_ID, restart ${SLURM_RESTART_COUNT:-0}, on ${SLURM_JOB_NODELIST:-$(hostname -s)}:" \
       "$SLURM_NTASKS tasks, run $GANTRAIN_OUT_DIR/$GANTRAIN_NAME"
  echo "gantrain job: $*"
  trap forward_stop USR1
  "$@" &
  launcher_pid=$!
  # A trapped signal ends `wait` at once (status 128+n) while the launcher runs on: wait again until it
  # has really ended. bash keeps a child's status until waited for, so the last `wait` below returns it
  # even when the signal came just as the launcher ended.
  local rc
  while wait "$launcher_pid"; rc=$?; kill -0 "$launcher_pid" 2>/dev/null; do :; done
  if [ "$rc" -gt 128 ]; then wait "$launcher_pid" 2>/dev/null; local again=$?; [ "$again" = 127 ] || rc=$again; fi
  # srun 22.05 exits 0 when its tasks failed to launch (e.g. a PMIx set-up error): a run directory must exist.
  local a out=$GANTRAIN_OUT_DIR name=$GANTRAIN_NAME
  for a in "$@"; do case "$a" in run.out_dir=*) out=${a#*=} ;; run.name=*) name=${a#*=} ;; esac; done
  if [ "$rc" = 0 ] && [ ! -d "$out/$name" ]; then
    echo "gantrain job: $1 exited 0 but there is no run directory $out/$name: the ranks did not start" >&2
    rc=1
  fi
  case "$rc" in
    0) echo "gantrain job: training finished (exit code 0)"; exit 0 ;;
    3) echo "gantrain job: stopped early with a checkpoint (exit code 3): requeueing job $SLURM_JOB_ID to resume"
       if scontrol requeue "$SLURM_JOB_ID"; then exit 0; fi
       echo "gantrain job: scontrol requeue failed (requeue disabled for this job or cluster?): submit the same" \
            "command again to resume from the checkpoint" >&2
       exit 3 ;;
    *) echo "gantrain job: training failed (exit code $rc)" >&2; exit "$rc" ;;
  esac
}
