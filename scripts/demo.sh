#!/usr/bin/env bash
# Installs dependencies, builds, and trains the demo DCGAN on Fashion-MNIST (CPU, about 5 minutes), then plots its metrics and prints where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh >/dev/null
if [ ! -f data/fashion-mnist-32.h5 ]; then
  echo "[demo] ingesting Fashion-MNIST from the Debian package into data/fashion-mnist-32.h5"
  mkdir -p data
  ./build/gantrain ingest --from fashion-mnist --out data/fashion-mnist-32.h5 --size 32
fi
# Data parallel on 2 ranks (docs/distributed.md): each trains on half of every batch of 128, batch norm
# and gradients summed over both, the model the same as one process would train. Ranks are not bound
# to cores, so with run.threads: 0 each uses half of this machine's cores (2 ranks x threads <= cores).
RANKS=${GANTRAIN_DEMO_RANKS:-2}
# -q: no Open MPI banner when the ranks exit 3 at the time limit (the demo says what happened itself).
MPIRUN=(mpirun -q -np "$RANKS" --bind-to none)
if [ "$(nproc)" -lt "$RANKS" ]; then MPIRUN+=(--oversubscribe); fi
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi  # containers
echo "[demo] training config/demo.yaml (Fashion-MNIST 32x32, CPU) on $RANKS ranks; progress below"
# The demo stops at its time limit (train.max_minutes) with a checkpoint and exit code 3; running this
# script again continues the same run from there (checkpoint.resume: auto), until its 3 epochs are done.
rc=0
"${MPIRUN[@]}" ./build/gantrain train --config config/demo.yaml "$@" || rc=$?
if [ "$rc" = 3 ]; then
  echo "[demo] stopped at the demo's time limit with a checkpoint; run scripts/demo.sh again to continue training"
  rc=0
fi
# The run's metrics as one PNG (tools/plot_metrics.py); the run folder is config/demo.yaml's runs/demo unless
# run.out_dir= or run.name= was given. A plot that fails is reported but does not change the exit code.
if [ "$rc" = 0 ]; then
  out_dir=runs name=demo
  for arg in "$@"; do
    case "$arg" in run.out_dir=*) out_dir=${arg#run.out_dir=} ;; run.name=*) name=${arg#run.name=} ;; esac
  done
  if /usr/bin/python3 tools/plot_metrics.py "$out_dir/$name" --out "$out_dir/$name/plots.png" >/dev/null; then
    echo "plots:      $out_dir/$name/plots.png (losses, D outputs, gradient norms, images/s, SWD over steps)"
  else
    echo "[demo] warning: could not plot $out_dir/$name/metrics.jsonl (tools/plot_metrics.py)"
  fi
fi
exit "$rc"
