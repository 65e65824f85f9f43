#!/usr/bin/env bash
# The one-command GPU check: on a GPU machine with only the CUDA toolkit, CMake, ninja and python3 (CUDA PyTorch), unpacks the bundle from prepare_bundle.sh, builds gantrain, runs the GPU tests and benchmarks, and writes the results.
#
# Usage, from the repository root (device tool: carry ["build-bundle"], timeout 600):
#   bench/gpu/gpu_check.sh [--bundle DIR] [--build DIR] [--results DIR] [--arch LIST] [--jobs N] [--mpi]
#                          [--configure-only] [--build-only] [--suite] [--skip-torch] [--quick] [--perf]
#   --bundle DIR      the bundle folder (default build-bundle: bench/gpu/prepare_bundle.sh makes it)
#   --build DIR       build folder (default build-gpu)
#   --results DIR     where results go (default $OUT when set, else bench/results/gpu_check_<date>)
#   --arch LIST       CUDA architectures (default 90: the H100/H200; CI builds 80;90)
#   --mpi             build with the bundled Open MPI (default GANTRAIN_MPI=OFF: one process, one GPU)
#   --configure-only, --build-only   stop after that step
#   --suite           also run the rest of the test suite (ctest -LE gpu; minutes: a call of its own)
#   --skip-torch      skip PyTorch's side of the benchmark
#   --quick           build, the GPU tests (parity table, whole training steps, one-rank NCCL) and the kernel
#                     benchmark only (about 5 minutes)
#   --perf            build, then the performance steps only (no tests, no kernel benchmark): bench_throughput,
#                     torch_side_by_side.py, and an nsys profile when nsys exists (planned for about 9 minutes)
# The default (build, parity, kernel benchmark, bench_throughput, PyTorch side by side) may not end inside
# the device tool's 10 minutes on a fresh machine: run --quick first, then --perf on the still-warm machine
# (a second call reuses build-gpu). torch.compile runs at batch 1024 only: each batch compiles anew, minutes.
# Results (at most 8 files, as the device tool returns): summary.txt (also printed last), check.log
# (environment, configure, build, test and benchmark output), parity.log and parity.xml (every row's
# error), training.log (whole steps vs the CPU engine), ctest.log (with --suite), bench_gpu_kernels.json, bench_throughput.json (gantrain's engine:
# every precision at batch 128..1024), torch_side_by_side_<date>_<gpu>_<commit>.json (the same step in
# PyTorch's modes and gantrain's, one table), nsys_top_kernels.txt (--perf, with nsys). Exit status: 0 when
# the build and the GPU tests passed, 1 otherwise; the benchmarks never change it, each records its own failure.
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
    --quick) quick=1; skip_torch=1; shift ;;
    --perf) perf=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
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
failed=0

say() { echo "[gpu_check] $*" | tee -a "$log"; }
note() { echo "$*" >> "$summary"; say "$*"; }
# Runs a command with its output appended to the log; returns its status.
logged() { "$@" >> "$log" 2>&1; }

# ---- environment -------------------------------------------------------------------------------
say "repository $repo ($(git -C "$repo" describe --always --dirty 2>/dev/null || echo 'no git'))"
{
  echo "== uname"; uname -a
  echo "== nvidia-smi"; nvidia-smi 2>&1 || echo "nvidia-smi failed"
  echo "== compilers"; g++ --version 2>&1 | head -1; cmake --version 2>&1 | head -1
  echo "== python3"; command -v python3; python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
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
say "bundle: $(wc -l < "$bundle/MANIFEST") packages unpacked in $root"

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
if ! logged "$cmake_bin" "${cmake_args[@]}"; then
  note "FAIL: configure (see check.log)"
  tail -40 "$log"
  exit 1
fi
note "configure: ok (CUDA architectures $arch, MPI $mpi)"
[[ $stop_after == configure ]] && exit 0

# ---- build -------------------------------------------------------------------------------------
start=$(date +%s)
if ! logged "$cmake_bin" --build "$build" -j "$jobs"; then
  note "FAIL: build (see check.log)"
  grep -E "error|Error|FAILED" "$log" | head -30
  exit 1
fi
note "build: ok in $(( $(date +%s) - start )) s"
# Where each library of the parity test comes from (bundle, wheels or system); any "not found" fails later.
{ echo "== ldd test_gpu_parity"; ldd "$build/tests/gpu/test_gpu_parity"; } >> "$log" 2>&1
if ldd "$build/tests/gpu/test_gpu_parity" | grep -q "not found"; then
  note "FAIL: libraries not found: $(ldd "$build/tests/gpu/test_gpu_parity" | grep 'not found' | tr -s ' \t' ' ')"
  failed=1
fi
[[ $stop_after == build ]] && exit $failed

# ---- GPU tests (not with --perf) ---------------------------------------------------------------
if [[ $perf == 0 ]]; then
for t in tests/test_cuda_device tests/gpu/test_gpu_memory; do
  if timeout 120 "$build/$t" >> "$log" 2>&1; then note "$(basename "$t"): passed"; else note "FAIL: $(basename "$t") (see check.log)"; failed=1; fi
done
grep -m1 "no usable CUDA device" "$log" | sed 's/^/  /' | tee -a "$summary"
start=$(date +%s)
timeout 300 "$build/tests/gpu/test_gpu_parity" --gtest_output="xml:$results/parity.xml" > "$results/parity.log" 2>&1
parity_rc=$?
# gtest names a failed or skipped test twice (as it runs, and in the closing list): count names once.
rows() { grep "^\[  $1 *\] Table" "$results/parity.log" | grep -o 'Table/[A-Za-z0-9_./]*' | sort -u; }
passed=$(grep -c '^\[       OK \] Table' "$results/parity.log")
failed_rows=$(rows FAILED | grep -c . || true)
skipped=$(rows SKIPPED | grep -c . || true)
note "parity: $passed passed, $failed_rows failed, $skipped skipped (exit $parity_rc, $(( $(date +%s) - start )) s)"
rows FAILED | sed 's/^/  failed: /' | tee -a "$summary"
[[ $parity_rc == 0 && $skipped == 0 ]] || failed=1

# Whole DCGAN steps, CUDA engine vs CPU engine, per precision and layout; graph replay vs eager.
start=$(date +%s)
timeout 300 "$build/tests/gpu/test_gpu_training" > "$results/training.log" 2>&1
training_rc=$?
t_skipped=$(grep -c '^\[  SKIPPED \] Engines\|^\[  SKIPPED \] GpuTraining' "$results/training.log" || true)
note "training steps (test_gpu_training): exit $training_rc, $(grep -c '^\[       OK \]' "$results/training.log") passed, $t_skipped skipped ($(( $(date +%s) - start )) s)"
grep '^\[  FAILED  \]' "$results/training.log" | sort -u | sed 's/^/  /' | tee -a "$summary"
[[ $training_rc == 0 && $t_skipped == 0 ]] || failed=1
# One-rank NCCL and host-staged communicators on device buffers (built when NCCL was found).
if [[ -x "$build/tests/gpu/test_nccl_communicator" ]]; then
  if timeout 120 "$build/tests/gpu/test_nccl_communicator" >> "$log" 2>&1; then
    note "test_nccl_communicator: passed"
  else
    note "FAIL: test_nccl_communicator (see check.log)"; failed=1
  fi
fi

# ---- the rest of the suite (CPU tests; informational) ----------------------------------------------
if [[ $suite == 1 ]]; then
  (cd "$build" && timeout 300 ctest -LE gpu -j "$jobs" --output-on-failure) > "$results/ctest.log" 2>&1
  note "suite (ctest -LE gpu): $(grep -E 'tests passed|tests failed' "$results/ctest.log" | tail -1)"
fi

# ---- benchmarks ---------------------------------------------------------------------------------
if timeout 150 "$build/bench/bench_gpu_kernels" --batch 256 --json "$results/bench_gpu_kernels.json" >> "$log" 2>&1; then
  note "bench_gpu_kernels: ok"
  sed -n '/^kernel /,$p' "$log" | grep -v '^wrote' >> "$summary"
else
  note "bench_gpu_kernels: failed (see check.log)"
fi
fi  # perf == 0

# ---- training-step throughput: gantrain's engine, then PyTorch's modes beside it ---------------------
commit=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
reference=(--config "$repo/config/dcgan_celeba64.yaml")  # nz 100, widths 128, 64x64x3; the side-by-side's defaults
throughput_json="$results/bench_throughput.json"
if [[ $quick == 0 ]]; then
  start=$(date +%s)
  timeout 180 "$build/bench/bench_throughput" --device cuda "${reference[@]}" --precision fp32,tf32,bf16 \
    --batch 128,256,512,1024 --warmup 5 --steps 20 --commit "$commit" --json "$throughput_json" \
    > "$results/throughput.tmp" 2>&1
  rc=$?
  # Rows that failed (a precision not implemented, out of memory) are in the table; exit 1 says some did.
  if [[ $rc == 0 ]]; then note "bench_throughput: ok in $(( $(date +%s) - start )) s"
  else note "bench_throughput: exit $rc$([[ $rc == 124 ]] && echo ' (timed out)') in $(( $(date +%s) - start )) s (see check.log)"; fi
  sed -n '/^prec /,/^wrote/p' "$results/throughput.tmp" | grep -v '^wrote' >> "$summary"
  cat "$results/throughput.tmp" >> "$log"
  rm -f "$results/throughput.tmp"
fi
if [[ $skip_torch == 0 ]]; then
  # One bench_throughput run serves both tables: the side by side reads its JSON when there is one.
  gantrain_side=(--bench "$build/bench/bench_throughput")
  [[ -s $throughput_json ]] && gantrain_side=(--gantrain-json "$throughput_json")
  start=$(date +%s)
  PYTHONUNBUFFERED=1 timeout 240 python3 "$repo/bench/torch_side_by_side/torch_side_by_side.py" "${gantrain_side[@]}" \
    --batches 128,256,512,1024 --compile-batches 1024 --commit "$commit" --results-dir "$results" \
    > "$results/torch.tmp" 2>&1
  rc=$?
  detail=$(grep -o 'wrote .*' "$results/torch.tmp" | sed "s|$results/||")
  [[ -n $detail ]] || detail=$(tail -1 "$results/torch.tmp")  # e.g. "torch sees no CUDA device"
  if [[ $rc == 0 ]]; then note "torch_side_by_side: ok in $(( $(date +%s) - start )) s ($detail)"
  else note "torch_side_by_side: exit $rc$([[ $rc == 124 ]] && echo ' (timed out)') (see check.log)"; fi
  sed -n '/^ batch mode/,/^wrote/p' "$results/torch.tmp" | grep -v '^wrote' >> "$summary"
  cat "$results/torch.tmp" >> "$log"
  rm -f "$results/torch.tmp"
fi

# ---- profile (--perf): where the bf16 step's time goes, by kernel -----------------------------------
if [[ $perf == 1 ]]; then
  nsys_bin=$(command -v nsys 2>/dev/null || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
  if [[ -n $nsys_bin ]]; then
    report="$build/nsys_throughput_bf16_b1024"
    timeout 120 "$nsys_bin" profile --stats=true --force-overwrite=true --trace=cuda,nvtx --cuda-graph-trace=node \
      -o "$report" "$build/bench/bench_throughput" --device cuda "${reference[@]}" --precision bf16 --batch 1024 \
      --warmup 5 --steps 20 --commit "$commit" >> "$log" 2>&1
    rc=$?
    # The kernel summary (time share, calls, average) of the whole run; the report's name changed in nsys 2023.
    { "$nsys_bin" stats --report cuda_gpu_kern_sum "$report.nsys-rep" 2>/dev/null ||
        "$nsys_bin" stats --report gpukernsum "$report.nsys-rep"; } 2>&1 | head -60 > "$results/nsys_top_kernels.txt"
    note "nsys: profile exit $rc; top kernels in nsys_top_kernels.txt"
    sed -n '1,25p' "$results/nsys_top_kernels.txt" >> "$summary"
  else
    note "nsys: absent (not on PATH, /usr/local/cuda/bin or /opt/nvidia/nsight-systems): no profile"
  fi
fi

echo
cat "$summary"
exit $failed
