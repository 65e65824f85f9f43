#!/usr/bin/env bash
# Times the DCGAN training step in gantrain (CPU) and in PyTorch with the same threads; prints a table and writes bench/results/cpu_vs_torch_<date>_<host>.json.
#
# Usage: bench/cpu_vs_torch/run.sh [--threads N] [--batch N] [--steps N] [--warmup N] [--build-dir DIR]
#   --threads    CPU threads for both (OMP_NUM_THREADS / torch.set_num_threads); default: all cores
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
if ! [[ $threads =~ ^[1-9][0-9]*$ ]]; then
  echo "run.sh: --threads must be a positive integer, got '$threads'" >&2
  exit 2
fi

# Build (cmake does nothing when bench_cpu_step is up to date).
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S "$repo" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build_dir" --target bench_cpu_step -j "${JOBS:-2}" >/dev/null
bench_bin="$build_dir/bench/bench_cpu_step"

model=(--resolution 32 --channels 1 --nz 64 --g-width 32 --d-width 32)
common=("${model[@]}" --batch "$batch" --steps "$steps" --warmup "$warmup" --threads "$threads")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
"$bench_bin" "${common[@]}" --json "$tmp/gantrain.json"
echo
"$python" "$repo/bench/cpu_vs_torch/torch_step.py" "${common[@]}" --json "$tmp/torch.json"
echo

date_utc=$(date -u +%Y-%m-%d)
host=$(hostname -s 2>/dev/null || hostname)
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
commit=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
mkdir -p "$repo/bench/results"
out="$repo/bench/results/cpu_vs_torch_${date_utc}_${host}.json"

"$python" - "$tmp/gantrain.json" "$tmp/torch.json" "$out" "$cpu_model" "$commit" "$host" <<'EOF'
import datetime, json, os, sys
ours_path, torch_path, out_path, cpu_model, commit, host = sys.argv[1:]
ours, ref = json.load(open(ours_path)), json.load(open(torch_path))
ours_ms, torch_ms = ours["ms_per_step"]["median"], ref["ms_per_step"]["median"]
ratio = torch_ms / ours_ms  # gantrain speed / torch speed
label, threads = ours["config"]["label"], ours["threads"]
print(f"{'config':<34} {'threads':>8} {'gantrain ms/step':>17} {'torch ms/step':>14} {'speed ratio':>12}")
print(f"{label:<34} {threads:>8} {ours_ms:17.2f} {torch_ms:14.2f} {ratio:12.3f}")
print("(speed ratio = gantrain images/s / torch images/s; above 1 means gantrain is faster)")
result = {
    "benchmark": "cpu_vs_torch dcgan_train_step",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "host": host, "cpu_model": cpu_model, "cpu_count": os.cpu_count(), "threads": threads,
    "load_average_1m_at_end": os.getloadavg()[0],
    "commit": commit, "config": ours["config"],
    "gantrain": {"ms_per_step": ours["ms_per_step"], "images_per_second": ours["images_per_second"],
                 "version": ours["version"]},
    "torch": {"ms_per_step": ref["ms_per_step"], "images_per_second": ref["images_per_second"],
              "version": ref["torch_version"]},
    "speed_ratio_gantrain_over_torch": ratio,
}
with open(out_path, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print(f"wrote {out_path}")
EOF
