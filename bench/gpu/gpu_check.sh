#!/usr/bin/env bash
# The one-command GPU check: on a GPU machine with only the CUDA toolkit, CMake, ninja and python3 (CUDA PyTorch), unpacks the bundle from prepare_bundle.sh, builds what the check runs, runs the GPU tests or the benchmarks inside a time budget, and writes the results.
#
# Usage, from the repository root (device tool calls, exactly: docs/gpu.md, "The one-command GPU check"):
#   run(command="bench/gpu/gpu_check.sh --quick --commit REV", carry=["build-bundle"], timeout_s=540)
#   run(command="bench/gpu/gpu_check.sh --perf --commit REV", carry=["build-bundle"], timeout_s=240)
#
#   bench/gpu/gpu_check.sh [--quick | --perf] [--budget S] [--commit REV] [--bundle DIR] [--build DIR]
#                          [--results DIR] [--arch LIST] [--jobs N] [--mpi] [--configure-only] [--build-only]
#                          [--suite] [--skip-torch] [--compile-need S] [--batches LIST] [--precisions LIST]
#   --quick           the GPU tests: builds test_cuda_device, test_gpu_memory, test_gpu_parity, test_gpu_training,
#                     test_nccl_communicator, bench_gpu_kernels and gantrain, then runs the device query, the memory
#                     tests, the parity table, whole training steps vs the CPU, one-rank NCCL, and the kernel
#                     benchmark if time is left (budget 510 s: a fresh machine, configure and build included)
#   --perf            the performance call: builds bench_throughput only; gantrain's engine in tf32 and bf16 at
#                     batch 1024, PyTorch's eager fp32 and AMP bf16 channels_last rows on the same model, one table
#                     and one JSON; torch.compile and an nsys profile only when the time left says they fit
#                     (budget 225 s)
#   (neither)         both, in one budget of 570 s (does not fit a fresh machine: later steps report "not run")
#   --budget S        seconds the whole script may take from its start (default above); each step gets
#                     min(its cap, the time left), and a step that cannot start is "not run: out of time"
#   --commit REV      the revision to record (the device machine's copy has no git; default: git describe,
#                     else the bundle's SOURCE_COMMIT, which prepare_bundle.sh wrote)
#   --bundle DIR      the bundle folder (default build-bundle: bench/gpu/prepare_bundle.sh makes it)
#   --build DIR       build folder (default build-gpu)
#   --results DIR     where results go (default $OUT when set, else bench/results/gpu_check_<date>)
#   --arch LIST       CUDA architectures (default 90: the H100/H200)
#   --jobs N          build jobs (default: every core)
#   --mpi             build with the bundled Open MPI (default GANTRAIN_MPI=OFF: one process, one GPU)
#   --configure-only, --build-only   stop after that step
#   --suite           build everything and also run the CPU suite (ctest -LE gpu; minutes: a call of its own)
#   --skip-torch      no PyTorch side in the performance steps
#   --compile-need S  seconds torch.compile's row needs to be started (default 150)
#   --batches LIST, --precisions LIST   the performance rows (default 1024 and tf32,bf16; the full sweep,
#                     128,256,512,1024 and fp32,tf32,bf16, needs a call of its own: --budget 570, timeout 600)
# Results (the device tool returns at most 8 files; this writes at most 6 with --quick, 5 with --perf, 8 with
# neither, flat, with plain names):
#   summary.txt   written as each step ends: what passed, failed or was not run, and why (read it first)
#   check.log     environment, configure, build, the small tests' output, benchmark output
#   parity.log, training.log   the parity table and the whole-step tests (--quick)
#   cudnn_api.log cuDNN's API log (CUDNN_LOGLEVEL_DBG=3) of a rerun of the failed tests, only when a failure
#                 came from cuDNN (--quick)
#   bench_gpu_kernels.json     (--quick, when time was left)
#   torch_side_by_side_<date>_<gpu>_<commit>.json   (--perf: gantrain's and PyTorch's rows, one table; a
#                 second one for the WGAN-GP step, --gp 10 at batch 256, when time was left)
#   nsys_top_kernels.txt       (--perf, when nsys exists and time was left)
# Exit status: 0 when the build and every GPU test passed (a skipped test is no pass: GANTRAIN_EXPECT_GPU=1 makes a
# missing GPU a failure), 1 otherwise; benchmarks never change it, each records its own failure.
#
# cuDNN, cuBLAS and NCCL are taken from python3's nvidia-* wheels (site-packages/nvidia/*/{include,lib})
# when present, else from the toolkit; their folders go on LD_LIBRARY_PATH. The bundle's libraries are
# reached through an RPATH (not LD_LIBRARY_PATH), so python3 and PyTorch never load them.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bundle="$repo/build-bundle"
build="$repo/build-gpu"
results=""
arch="90"
jobs=$(nproc 2>/dev/null || echo 8)
mpi=OFF
stop_after=""
suite=0
skip_torch=0
quick=0
perf=0
budget=""
commit=""
compile_need=150
perf_batches=1024
perf_precisions=tf32,bf16
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bundle) bundle=$(cd "$2" && pwd); shift 2 ;;
    --build) build=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --mpi) mpi=ON; shift ;;
    --configure-only) stop_after=configure; shift ;;
    --build-only) stop_after=build; shift ;;
    --suite) suite=1; shift ;;
    --skip-torch) skip_torch=1; shift ;;
    --quick) quick=1; shift ;;
    --perf) perf=1; shift ;;
    --budget) budget=$2; shift 2 ;;
    --commit) commit=$2; shift 2 ;;
    --compile-need) compile_need=$2; shift 2 ;;
    --batches) perf_batches=$2; shift 2 ;;
    --precisions) perf_precisions=$2; shift 2 ;;
    -h|--help) sed -n '2,51p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ $quick == 1 && $perf == 1 ]]; then
  echo "gpu_check.sh: --quick and --perf are two calls; give one (neither runs both, which a fresh machine cannot fit)" >&2
  exit 2
fi
run_tests=$((1 - perf))   # the GPU tests: --quick and the default
run_perf=$((1 - quick))   # the throughput benchmarks: --perf and the default
mode=full
[[ $quick == 1 ]] && mode=quick
[[ $perf == 1 ]] && mode=perf
if [[ -z $budget ]]; then
  case $mode in quick) budget=510 ;; perf) budget=225 ;; *) budget=570 ;; esac
fi
[[ $budget =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: --budget '$budget' is not a number of seconds" >&2; exit 2; }
SECONDS=0  # the budget counts from here

if [[ -z $results ]]; then
  if [[ -n ${OUT:-} ]]; then results=$OUT; else results="$repo/bench/results/gpu_check_$(date -u +%Y-%m-%d_%H%M%S)"; fi
fi
mkdir -p "$results" "$build"
results=$(cd "$results" && pwd)
build=$(cd "$build" && pwd)
log="$results/check.log"
summary="$results/summary.txt"
: > "$log"
: > "$summary"
# A reused results folder (not $OUT, which starts empty) must not pass off an earlier call's files as this one's.
rm -f "$results"/{parity.log,training.log,cudnn_api.log,bench_gpu_kernels.json,bench_throughput.json,nsys_top_kernels.txt}
failed=0

say() { echo "[gpu_check] $*" | tee -a "$log"; }
# A line of the summary: written at once, so a call cut short still says what passed.
note() { echo "$*" >> "$summary"; say "$*"; }
left() { echo $((budget - SECONDS)); }
# step_time CAP: the seconds a step may take, min(CAP, time left - 5); fails when under 5 s would be left.
step_time() {
  local t=$(( $(left) - 5 ))
  (( t > $1 )) && t=$1
  (( t >= 5 )) || return 1
  echo "$t"
}
out_of_time() { note "$1: not run: out of time ($(left) s of the $budget s budget left)"; }
timed_out() { [[ $1 == 124 || $1 == 137 ]] && echo " (timed out after $2 s)"; }
# test_names KIND FILE: the tests GoogleTest reported as KIND (OK, FAILED, SKIPPED), each once.
test_names() {
  awk -v k="$1" '$1 == "[" && $2 == k && $3 == "]" { n = $4; sub(/,$/, "", n); if (n ~ /\./) print n }' "$2" | sort -u
}

# ---- environment -------------------------------------------------------------------------------
export NCCL_DEBUG=WARN          # NCCL's warnings and errors, not its INFO chatter
export GANTRAIN_EXPECT_GPU=1    # a GPU test that finds no usable GPU fails with the CUDA error (never skips)
if [[ -z $commit ]]; then
  commit=$(git -C "$repo" describe --always --dirty 2>/dev/null) ||
    commit=$(cat "$bundle/SOURCE_COMMIT" 2>/dev/null) || commit=unknown
  [[ -n $commit ]] || commit=unknown
fi
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
note "gpu_check --$mode: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit, GPU: ${gpu:-none found by nvidia-smi}," \
     "$(nproc) cores, budget $budget s"
{
  echo "== uname"; uname -a
  echo "== nvidia-smi"; nvidia-smi 2>&1 || echo "nvidia-smi failed"
  echo "== compilers"; g++ --version 2>&1 | head -1; cmake --version 2>&1 | head -1
  echo "== python3"; command -v python3; python3 --version 2>&1
} >> "$log" 2>&1

find_tool() {  # find_tool NAME PYTHON_MODULE_EXPR: PATH first, then the pip package's bin folder
  local name=$1 expr=$2 dir
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  dir=$(python3 -c "$expr" 2>/dev/null) && [[ -x "$dir/$name" ]] && { echo "$dir/$name"; return 0; }
  return 1
}
cmake_bin=$(find_tool cmake 'import cmake; print(cmake.CMAKE_BIN_DIR)') || { note "FAIL: no cmake"; exit 1; }
ninja_bin=$(find_tool ninja 'import ninja, os; print(ninja.BIN_DIR)') || ninja_bin=""
generator=(-G Ninja)
if [[ -z $ninja_bin ]]; then generator=(); say "no ninja: using make"; else generator+=(-DCMAKE_MAKE_PROGRAM="$ninja_bin"); fi

# nvcc: PATH, the usual toolkit folder, then the pip wheels.
nvcc=""
for cand in "$(command -v nvcc 2>/dev/null)" /usr/local/cuda/bin/nvcc; do
  [[ -n $cand && -x $cand ]] && { nvcc=$cand; break; }
done
# The nvidia-* wheels: every site-packages/nvidia/<name> folder is a prefix with include/ and lib/.
nvidia_roots=$(python3 - <<'PY' 2>/dev/null
import os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
for base in list(nvidia.__path__):
    for name in sorted(os.listdir(base)):
        d = os.path.join(base, name)
        if os.path.isdir(os.path.join(d, "lib")) or os.path.isdir(os.path.join(d, "include")):
            print(d)
PY
)
if [[ -z $nvcc ]]; then
  for r in $nvidia_roots; do [[ -x $r/bin/nvcc ]] && { nvcc=$r/bin/nvcc; break; }; done
fi
[[ -n $nvcc ]] || { note "FAIL: no nvcc (PATH, /usr/local/cuda/bin, python3's nvidia wheels)"; exit 1; }
say "nvcc $nvcc: $("$nvcc" --version | tail -1)"
roots_list=""
ld_dirs=""
for r in $nvidia_roots; do
  roots_list+="${roots_list:+;}$r"
  [[ -d $r/lib ]] && ld_dirs+="${ld_dirs:+:}$r/lib"
done
say "nvidia wheel prefixes: ${nvidia_roots:-none (libraries from the toolkit)}"
export LD_LIBRARY_PATH="${ld_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- unpack the bundle -------------------------------------------------------------------------
root="$build/bundle-root"
[[ -f $bundle/MANIFEST ]] || { note "FAIL: no bundle at $bundle (run bench/gpu/prepare_bundle.sh where apt works)"; exit 1; }
start=$SECONDS
if ! cmp -s "$bundle/MANIFEST" "$root/.manifest" 2>/dev/null; then
  rm -rf "$root"
  mkdir -p "$root"
  for deb in "$bundle"/debs/*.deb; do
    if command -v dpkg-deb >/dev/null 2>&1; then
      dpkg-deb -x "$deb" "$root" || { note "FAIL: cannot unpack $deb"; exit 1; }
    else  # no dpkg: a .deb is an ar archive holding data.tar.*
      (cd "$root" && ar p "$deb" "$(ar t "$deb" | grep '^data.tar')" | tar -x --auto-compress -f - 2>/dev/null ||
        ar p "$deb" "$(ar t "$deb" | grep '^data.tar')" | tar -xJ) || { note "FAIL: cannot unpack $deb"; exit 1; }
    fi
  done
  # Absolute symlinks (libz.so -> /lib/...) would leave the bundle: point them at its own copies.
  while IFS= read -r link; do
    target=$(readlink "$link")
    [[ $target == /* && -e "$root$target" ]] && ln -sfn "$root$target" "$link"
  done < <(find "$root" -type l)
  cp "$bundle/MANIFEST" "$root/.manifest"
fi
say "bundle: $(wc -l < "$bundle/MANIFEST") packages unpacked in $root ($((SECONDS - start)) s)"

# ---- configure ---------------------------------------------------------------------------------
arch_dir=$(ls -d "$root"/usr/lib/*-linux-gnu 2>/dev/null | head -1)
triplet=$(basename "$arch_dir")
lib_dirs=("$arch_dir" "$arch_dir/openblas-pthread" "$arch_dir/hdf5/serial" "$root/lib/$triplet" "$arch_dir/openmpi/lib")
rpath=""
for d in "${lib_dirs[@]}"; do [[ -d $d ]] && rpath+="${rpath:+:}$d"; done
for r in $nvidia_roots; do [[ -d $r/lib ]] && rpath+=":$r/lib"; done
export PKG_CONFIG_LIBDIR="$arch_dir/pkgconfig:$arch_dir/openblas-pthread/pkgconfig:$root/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$root"
pkgconf_bin="$root/usr/bin/pkgconf"
[[ -x $pkgconf_bin ]] || pkgconf_bin=$(command -v pkg-config || true)
cmake_args=(
  -S "$repo" -B "$build" "${generator[@]}"
  -DCMAKE_BUILD_TYPE=Release
  -DGANTRAIN_CUDA=ON -DGANTRAIN_MPI="$mpi" -DGANTRAIN_CUDA_ARCHITECTURES="$arch"
  -DCMAKE_CUDA_COMPILER="$nvcc"
  -DGANTRAIN_CUDA_LIBRARY_ROOTS="$roots_list"
  -DCMAKE_PREFIX_PATH="$root/usr"
  -DPKG_CONFIG_EXECUTABLE="$pkgconf_bin"
  -DHDF5_C_COMPILER_EXECUTABLE=/nonexistent/h5cc  # the bundle has no h5cc; never ask a system one
  -DHDF5_ROOT="$arch_dir/hdf5/serial"  # Debian's prefix-shaped view: lib -> ., include -> /usr/include/hdf5/serial
  # Debian's multiarch header folder (jconfig.h, ...), which the system compiler searches only under /usr.
  -DCMAKE_C_FLAGS="-isystem $root/usr/include/$triplet"
  -DCMAKE_CXX_FLAGS="-isystem $root/usr/include/$triplet"
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,--disable-new-dtags -Wl,-rpath,$rpath -Wl,-rpath-link,$rpath"
  -DCMAKE_SHARED_LINKER_FLAGS="-Wl,-rpath-link,$rpath"
  -DGT_ORACLE_PYTHON="$(command -v python3)"
)
if [[ $mpi == ON ]]; then
  # Open MPI relocated: its wrapper and run time find their files under OPAL_PREFIX.
  export OPAL_PREFIX="$root/usr"
  cmake_args+=(-DMPI_CXX_COMPILER="$root/usr/bin/mpicxx.openmpi" -DMPIEXEC_EXECUTABLE="$root/usr/bin/mpirun.openmpi")
fi
rm -f "$build/CMakeCache.txt"  # a fresh configure: nothing cached from another machine or bundle
say "configure: cmake ${cmake_args[*]}"
start=$SECONDS
t=$(step_time 150) || { out_of_time configure; exit 1; }
timeout -k 5 "$t" "$cmake_bin" "${cmake_args[@]}" >> "$log" 2>&1
rc=$?
if [[ $rc != 0 ]]; then
  note "FAIL: configure: exit $rc$(timed_out "$rc" "$t") (see check.log)"
  tail -40 "$log"
  exit 1
fi
note "configure: ok in $((SECONDS - start)) s (CUDA architectures $arch, MPI $mpi)"
[[ $stop_after == configure ]] && exit 0

# ---- build: only what this call runs ---------------------------------------------------------------
targets=()
(( run_tests )) && targets+=(test_cuda_device test_gpu_memory test_gpu_parity test_gpu_training test_gpu_progan_net test_gpu_progan_training test_nccl_communicator
                             bench_gpu_kernels gantrain)
(( run_perf )) && targets+=(bench_throughput)
[[ $mpi == ON ]] && targets+=(test_mpi_gpu gantrain)
target_args=(--target "${targets[@]}")
[[ $suite == 1 ]] && target_args=()  # the CPU suite needs every test binary
start=$SECONDS
t=$(step_time 400) || { out_of_time build; exit 1; }
timeout -k 5 "$t" "$cmake_bin" --build "$build" -j "$jobs" "${target_args[@]}" >> "$log" 2>&1
rc=$?
if [[ $rc != 0 ]]; then
  note "FAIL: build: exit $rc$(timed_out "$rc" "$t") in $((SECONDS - start)) s (see check.log)"
  grep -E "error|Error|FAILED" "$log" | head -15 | tee -a "$summary"
  exit 1
fi
note "build: ok in $((SECONDS - start)) s (${target_args[*]:-every target}, $jobs jobs)"
# Where each library comes from (bundle, wheels or system); a "not found" fails here, not in every test.
probe_bin="$build/tests/gpu/test_gpu_parity"
(( run_tests )) || probe_bin="$build/bench/bench_throughput"
{ echo "== ldd $probe_bin"; ldd "$probe_bin"; } >> "$log" 2>&1
if ldd "$probe_bin" | grep -q "not found"; then
  note "FAIL: libraries not found: $(ldd "$probe_bin" | grep 'not found' | tr -s ' \t' ' ')"
  failed=1
fi
[[ $stop_after == build ]] && exit $failed

# gtest_step NAME CAP OUTFILE BINARY [ARGS...]: a GoogleTest binary under min(CAP, time left). It passes only when
# it exits 0, ran a test, and skipped none: a skip (a build without NCCL, say) is no pass.
gtest_step() {
  local name=$1 cap=$2 out=$3 t start rc ok failed_n skipped
  shift 3
  t=$(step_time "$cap") || { out_of_time "$name"; failed=1; return 1; }
  start=$SECONDS
  timeout -k 5 "$t" "$@" > "$out" 2>&1
  rc=$?
  ok=$(test_names OK "$out" | grep -c .)
  failed_n=$(test_names FAILED "$out" | grep -c .)
  skipped=$(test_names SKIPPED "$out" | grep -c .)
  if [[ $rc == 0 && $ok -gt 0 && $skipped == 0 ]]; then
    note "$name: passed ($ok tests, $((SECONDS - start)) s)"
    return 0
  fi
  note "FAIL: $name: exit $rc$(timed_out "$rc" "$t"), $ok passed, $failed_n failed, $skipped skipped ($((SECONDS - start)) s)"
  # The missing device's CUDA error, then which tests.
  grep -m1 -h "GANTRAIN_EXPECT_GPU is set" "$out" | sed 's/^/  /' | tee -a "$summary"
  test_names FAILED "$out" | head -25 | sed 's/^/  failed: /' | tee -a "$summary"
  test_names SKIPPED "$out" | head -10 | sed 's/^/  skipped: /' | tee -a "$summary"
  failed=1
  return 1
}

# cudnn_log NAME OUTFILE BINARY: when the step's failures came from cuDNN, rerun only the failed tests with cuDNN's
# API log (every call's arguments and the error's traceback) into cudnn_api.log, the last 7 MB of each rerun.
cudnn_log() {
  local name=$1 out=$2 bin=$3 filter t raw
  grep -qE "cuDNN error|CUDNN_STATUS_|cuDNN has no usable" "$out" || return 0
  filter=$(test_names FAILED "$out" | paste -sd: -)
  [[ -n $filter ]] || return 0
  t=$(step_time 45) || { out_of_time "cuDNN API log of $name's failed tests"; return 0; }
  raw="$build/cudnn_api_$name.log"
  rm -f "$raw"
  CUDNN_LOGLEVEL_DBG=3 CUDNN_LOGDEST_DBG="$raw" timeout -k 5 "$t" "$bin" --gtest_filter="$filter" >> "$log" 2>&1
  { echo "== $name: cuDNN API log (CUDNN_LOGLEVEL_DBG=3) of a rerun of $filter"; tail -c 7000000 "$raw" 2>/dev/null; } \
    >> "$results/cudnn_api.log"
  note "  cuDNN API log of $name's failed tests: cudnn_api.log ($(wc -c < "$raw" 2>/dev/null || echo 0) bytes logged)"
}

# ---- GPU tests (--quick): the device, memory, the parity table, whole steps, one-rank NCCL -----------------------
if (( run_tests )); then
  tmp="$build/step.log"
  gtest_step test_cuda_device 20 "$tmp" "$build/tests/test_cuda_device"
  cat "$tmp" >> "$log"
  gtest_step test_gpu_memory 30 "$tmp" "$build/tests/gpu/test_gpu_memory"
  cat "$tmp" >> "$log"
  # Each row prints its error against its tolerance: parity.log says how close every kernel is.
  gtest_step "parity table (test_gpu_parity)" 90 "$results/parity.log" "$build/tests/gpu/test_gpu_parity"
  # Whole DCGAN steps, CUDA engine vs CPU engine, per precision and layout; graph replay vs eager.
  gtest_step "training steps (test_gpu_training)" 120 "$results/training.log" "$build/tests/gpu/test_gpu_training"
  # The Progressive GAN layers inside GpuNet against the CPU Sequential (forward, backward, double backward).
  gtest_step "progan networks (test_gpu_progan_net)" 45 "$results/progan_net.log" "$build/tests/gpu/test_gpu_progan_net"
  gtest_step "progan steps (test_gpu_progan_training)" 45 "$results/progan_training.log" "$build/tests/gpu/test_gpu_progan_training"
  # One-rank NCCL and host-staged communicators on device buffers.
  gtest_step test_nccl_communicator 45 "$tmp" "$build/tests/gpu/test_nccl_communicator"
  cat "$tmp" >> "$log"
  cudnn_log parity "$results/parity.log" "$build/tests/gpu/test_gpu_parity"
  cudnn_log training "$results/training.log" "$build/tests/gpu/test_gpu_training"

  if [[ $suite == 1 ]]; then  # the CPU suite, informational (into check.log)
    if t=$(step_time 300); then
      (cd "$build" && timeout -k 5 "$t" ctest -LE gpu -j "$jobs" --output-on-failure) > "$tmp" 2>&1
      note "suite (ctest -LE gpu): $(grep -E 'tests passed|tests failed' "$tmp" | tail -1)"
      cat "$tmp" >> "$log"
    else
      out_of_time "suite (ctest -LE gpu)"
    fi
  fi

  # The kernel benchmark: ceilings measured on the spot, each kernel's median time and fraction of its ceiling.
  if t=$(step_time 60); then
    timeout -k 5 "$t" "$build/bench/bench_gpu_kernels" --batch 256 --json "$results/bench_gpu_kernels.json" > "$tmp" 2>&1
    rc=$?
    cat "$tmp" >> "$log"
    if grep -q "no usable CUDA device" "$tmp"; then
      note "bench_gpu_kernels: nothing timed: $(grep -m1 -o 'no usable CUDA device.*' "$tmp")"
    elif [[ $rc == 0 ]]; then
      note "bench_gpu_kernels: ok"
      sed -n '/^kernel /,$p' "$tmp" | grep -v '^wrote' >> "$summary"
    else
      note "bench_gpu_kernels: exit $rc$(timed_out "$rc" "$t") (see check.log)"
    fi
  else
    out_of_time bench_gpu_kernels
  fi
fi

# ---- performance (--perf): gantrain's engine, then PyTorch's modes beside it, one table ------------------------
if (( run_perf )); then
  tmp="$build/step.log"
  reference=(--config "$repo/config/dcgan_celeba64.yaml")  # nz 100, widths 128, 64x64x3; the side-by-side's defaults
  throughput_json="$build/bench_throughput.json"  # read by the side by side; returned only if that fails
  rm -f "$throughput_json"
  # Each (precision, batch) row searches cuDNN's algorithms anew: the cap grows with the rows.
  rows=$(( $(tr ',' '\n' <<< "$perf_batches" | grep -c .) * $(tr ',' '\n' <<< "$perf_precisions" | grep -c .) ))
  if t=$(step_time $((15 + 30 * rows))); then
    start=$SECONDS
    timeout -k 5 "$t" "$build/bench/bench_throughput" --device cuda "${reference[@]}" --precision "$perf_precisions" \
      --batch "$perf_batches" --warmup 3 --steps 10 --commit "$commit" --json "$throughput_json" > "$tmp" 2>&1
    rc=$?
    # Rows that failed (a precision not implemented, out of memory) are in the table; exit 1 says some did.
    note "bench_throughput ($perf_precisions at batch $perf_batches): exit $rc$(timed_out "$rc" "$t") in $((SECONDS - start)) s"
    sed -n '/^prec /,/^wrote/p' "$tmp" | grep -v '^wrote' >> "$summary"
    grep -E 'failed:' "$tmp" | head -4 | sed 's/^/  /' >> "$summary"
    [[ -s $throughput_json ]] || tail -2 "$tmp" | sed 's/^/  /' >> "$summary"  # why there are no rows
    cat "$tmp" >> "$log"
  else
    out_of_time bench_throughput
  fi
  side_json=""
  if [[ $skip_torch == 1 ]]; then
    note "torch_side_by_side: skipped (--skip-torch)"
  elif [[ ! -s $throughput_json ]]; then
    note "torch_side_by_side: not run: bench_throughput wrote no JSON"
  elif t=$(step_time 400); then
    start=$SECONDS
    touch "$build/torch.start"  # the JSON it writes is the one newer than this
    # Eager fp32 and AMP bf16 channels_last always; torch.compile only when the time left is over its need.
    PYTHONUNBUFFERED=1 timeout -k 5 "$t" python3 "$repo/bench/torch_side_by_side/torch_side_by_side.py" \
      --gantrain-json "$throughput_json" --batches "$perf_batches" --modes eager_fp32,amp_bf16_cl,compile_bf16_cl \
      --compile-mode default --warmup 3 --steps 10 --commit "$commit" --results-dir "$results" \
      --deadline-s $((t - 10)) --compile-need-s "$compile_need" > "$tmp" 2>&1
    rc=$?
    rm -f "$results"/*.tmp  # a JSON being rewritten when the time ran out
    side_json=$(find "$results" -maxdepth 1 -name 'torch_side_by_side_*.json' -newer "$build/torch.start" | head -1)
    detail=${side_json:+$(basename "$side_json")}
    [[ -n $detail ]] || detail=$(tail -1 "$tmp")  # e.g. "torch sees no CUDA device"
    note "torch_side_by_side: exit $rc$(timed_out "$rc" "$t") in $((SECONDS - start)) s ($detail)"
    sed -n '/^ batch mode/,/^wrote/p' "$tmp" | grep -v '^wrote' >> "$summary"
    cat "$tmp" >> "$log"
  else
    out_of_time torch_side_by_side
  fi
  # gantrain's rows come back on their own when there is no side-by-side JSON to hold them.
  if [[ -z $side_json && -s $throughput_json ]]; then
    cp "$throughput_json" "$results/bench_throughput.json"
    note "  gantrain's rows alone: bench_throughput.json"
  fi

  # The WGAN-GP step (issue 15: the gradient penalty's double backward against PyTorch's create_graph=True),
  # at batch 256 in tf32 and bf16 against eager fp32 and AMP bf16: when 70 s are left, before the profile.
  # (--perf only: the default mode's 8 result files are the device tool's limit.)
  if [[ $skip_torch == 1 || $mode != perf ]]; then
    note "torch_side_by_side --gp: skipped ($([[ $skip_torch == 1 ]] && echo --skip-torch || echo 'a --perf call runs it'))"
  elif (( $(left) < 70 )); then
    out_of_time "torch_side_by_side --gp"
  else
    t=$(step_time 90)
    start=$SECONDS
    touch "$build/torch_gp.start"
    PYTHONUNBUFFERED=1 timeout -k 5 "$t" python3 "$repo/bench/torch_side_by_side/torch_side_by_side.py" \
      --bench "$build/bench/bench_throughput" --gp 10 --batches 256 --precisions tf32,bf16 \
      --modes eager_fp32,amp_bf16_cl --warmup 3 --steps 10 --commit "$commit" --results-dir "$results" \
      --bench-timeout $((t / 2)) --deadline-s $((t - 10)) > "$tmp" 2>&1
    rc=$?
    rm -f "$results"/*.tmp
    gp_json=$(find "$results" -maxdepth 1 -name 'torch_side_by_side_*.json' -newer "$build/torch_gp.start" | head -1)
    note "torch_side_by_side --gp 10 (WGAN-GP): exit $rc$(timed_out "$rc" "$t") in $((SECONDS - start)) s (${gp_json:+$(basename "$gp_json")})"
    sed -n '/^ batch mode/,/^wrote/p' "$tmp" | grep -v '^wrote' >> "$summary"
    cat "$tmp" >> "$log"
  fi

  # Where the bf16 step's time goes, by kernel: only when a minute is left.
  nsys_bin=$(command -v nsys 2>/dev/null || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
  if [[ -z $nsys_bin ]]; then
    note "nsys: absent (not on PATH, /usr/local/cuda/bin or /opt/nvidia/nsight-systems): no profile"
  elif (( $(left) < 65 )); then
    out_of_time "nsys profile"
  else
    t=$(step_time 60)
    report="$build/nsys_throughput_bf16_b1024"
    timeout -k 5 "$t" "$nsys_bin" profile --stats=false --force-overwrite=true --trace=cuda,nvtx --cuda-graph-trace=node \
      -o "$report" "$build/bench/bench_throughput" --device cuda "${reference[@]}" --precision bf16 --batch 1024 \
      --warmup 3 --steps 5 --commit "$commit" >> "$log" 2>&1
    rc=$?
    # The kernel summary (time share, calls, average); the report's name changed in nsys 2023.
    { "$nsys_bin" stats --report cuda_gpu_kern_sum "$report.nsys-rep" 2>/dev/null ||
        "$nsys_bin" stats --report gpukernsum "$report.nsys-rep"; } 2>&1 | head -60 > "$results/nsys_top_kernels.txt"
    note "nsys: profile exit $rc$(timed_out "$rc" "$t"); top kernels in nsys_top_kernels.txt"
    sed -n '1,25p' "$results/nsys_top_kernels.txt" >> "$summary"
  fi
fi

# ---- what comes back ----------------------------------------------------------------------------------
# The device tool returns at most 8 files of at most 16 MiB: keep each log's tail under 15 MiB.
for f in "$results"/*; do
  [[ -f $f ]] || continue
  if (( $(stat -c %s "$f") > 15728640 )); then
    tail -c 15000000 "$f" > "$f.cut" && mv "$f.cut" "$f"
    note "  $(basename "$f") was over 15 MiB: its last 15 MB kept"
  fi
done
count=$(find "$results" -maxdepth 1 -type f | wc -l)
(( count > 8 )) && note "WARNING: $count files in $results; the device tool returns only 8"
if [[ $failed == 0 ]]; then
  note "result: PASS in $SECONDS s (the build$( (( run_tests )) && echo ' and every GPU test') passed$( (( run_perf )) &&
    echo '; benchmarks report their own failures above'))"
else
  note "result: FAIL in $SECONDS s (see the lines above and check.log)"
fi
echo
cat "$summary"
exit $failed
