#!/usr/bin/env bash
# Times the DCGAN training step in gantrain (CPU) and in PyTorch with the same threads; prints a table and writes bench/results/cpu_vs_torch_<date>_<host>.json.
#
# Usage: bench/cpu_vs_torch/run.sh [--threads N[,N...]] [--batch N] [--steps N] [--warmup N] [--build-dir DIR]
#   --threads    CPU threads for both (OMP_NUM_THREADS / torch.set_num_threads), or a comma-separated
#                list to sweep (one table row each); default: all cores
#   --build-dir  where bench_cpu_step is built (configured and built here when missing); default: build-bench
# Environment: PYTHON (default /usr/bin/python3, which must have torch), JOBS (build parallelism, default 2).
# The config is the demo's: resolution 32, channels 1, nz 64, g_width = d_width = 32, batch 128.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
threads=$(nproc)
batch=128
steps=10
warmup=3
build_dir="$repo/build-bench"
python=${PYTHON:-/usr/bin/python3}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ $threads =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]]; then
  echo "run.sh: --threads must be a positive integer or a comma-separated list of them, got '$threads'" >&2
  exit 2
fi

# Build (cmake does nothing when bench_cpu_step is up to date).
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S "$repo" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build_dir" --target bench_cpu_step -j "${JOBS:-2}" >/dev/null
bench_bin="$build_dir/bench/bench_cpu_step"

model=(--resolution 32 --channels 1 --nz 64 --g-width 32 --d-width 32)
common=("${model[@]}" --batch "$batch" --steps "$steps" --warmup "$warmup")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

results=()  # gantrain and torch JSON per thread count, in pairs
for n in ${threads//,/ }; do
  OMP_NUM_THREADS=$n OPENBLAS_NUM_THREADS=1 "$bench_bin" "${common[@]}" --threads "$n" \
    --json "$tmp/gantrain_$n.json"
  echo
  # Debian's torch links the pthread OpenBLAS next to its own OpenMP pool: letting OpenBLAS start its
  # own threads too oversubscribes the cores (torch measured ~2x slower at n = 2 on a 2-core machine),
  # so torch gets its n threads and OpenBLAS one. That is what gantrain does itself: single-threaded OpenBLAS calls on blocks split
  # over its own OpenMP threads (src/nn/cpu/gemm.cpp).
  OMP_NUM_THREADS=$n OPENBLAS_NUM_THREADS=1 "$python" "$repo/bench/cpu_vs_torch/torch_step.py" "${common[@]}" \
    --threads "$n" --json "$tmp/torch_$n.json"
  echo
  results+=("$tmp/gantrain_$n.json" "$tmp/torch_$n.json")
done

date_utc=$(date -u +%Y-%m-%d)
host=$(hostname -s 2>/dev/null || hostname)
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
commit=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
mkdir -p "$repo/bench/results"
out="$repo/bench/results/cpu_vs_torch_${date_utc}_${host}.json"

"$python" - "$out" "$cpu_model" "$commit" "$host" "${results[@]}" <<'PY'
import datetime, json, os, sys

out_path, cpu_model, commit, host, *paths = sys.argv[1:]
rows = []
print(f"{'config':<34} {'threads':>8} {'gantrain ms/step':>17} {'torch ms/step':>14} {'speed ratio':>12}")
for ours_path, torch_path in zip(paths[0::2], paths[1::2]):
    ours, ref = json.load(open(ours_path)), json.load(open(torch_path))
    ours_ms, torch_ms = ours["ms_per_step"]["median"], ref["ms_per_step"]["median"]
    ratio = torch_ms / ours_ms  # gantrain speed / torch speed
    print(f"{ours['config']['label']:<34} {ours['threads']:>8} {ours_ms:17.2f} {torch_ms:14.2f} {ratio:12.3f}")
    rows.append({
        "threads": ours["threads"],
        "gantrain": {"ms_per_step": ours["ms_per_step"], "images_per_second": ours["images_per_second"]},
        "torch": {"ms_per_step": ref["ms_per_step"], "images_per_second": ref["images_per_second"],
                  "env": ref["env"]},
        "speed_ratio_gantrain_over_torch": ratio,
    })
print("(ms/step: median of the timed steps; speed ratio = gantrain images/s / torch images/s, "
      "above 1 means gantrain is faster)")
result = {
    "benchmark": "cpu_vs_torch dcgan_train_step",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "host": host, "cpu_model": cpu_model, "cpu_count": os.cpu_count(),
    "load_average_1m_at_end": os.getloadavg()[0],
    "commit": commit, "gantrain_version": ours["version"], "torch_version": ref["torch_version"],
    "config": ours["config"], "warmup_steps": ours["warmup_steps"], "timed_steps": ours["timed_steps"],
    "runs": rows,
}
with open(out_path, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print(f"wrote {out_path}")
PY
