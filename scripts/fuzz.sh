#!/usr/bin/env bash
# Builds the fuzz targets with clang, libFuzzer, ASan and UBSan into ./build-fuzz and runs each for a while (docs/fuzzing.md).
# Usage: scripts/fuzz.sh [seconds-per-target (default 120)] [target ...]   (targets: config image dataset checkpoint idx)
# New inputs and crash files go to fuzz-work/<target>/{corpus,crashes} (FUZZ_WORK_DIR), never into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-120}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then TARGETS=(config image dataset checkpoint idx); fi
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
WORK=${FUZZ_WORK_DIR:-fuzz-work}
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGANTRAIN_FUZZ=ON \
  -DGANTRAIN_CUDA=OFF -DGANTRAIN_MPI=OFF -DGANTRAIN_TESTS=OFF >/dev/null
cmake --build "$BUILD_DIR" --target fuzzers -j "$(nproc)"
mkdir -p "$WORK"
failed=()
for t in "${TARGETS[@]}"; do
  echo "[fuzz] $t: ${SECONDS_PER_TARGET} s from tests/fuzz/corpus/$t, work folder $WORK/$t"
  bash tests/fuzz/run_fuzzer.sh "$BUILD_DIR/tests/fuzz/fuzz_$t" "tests/fuzz/corpus/$t" "$SECONDS_PER_TARGET" "$WORK/$t" \
    >"$WORK/$t.log" 2>&1 || failed+=("$t")
  grep -E "stat::(number_of_executed_units|new_units_added)" "$WORK/$t.log" | sed "s/^/[fuzz] $t /" || true
done
if [ ${#failed[@]} -eq 0 ]; then
  echo "[fuzz] no findings in ${TARGETS[*]}"
  exit 0
fi
echo "[fuzz] findings in: ${failed[*]} (logs: $WORK/<target>.log; inputs: $WORK/<target>/crashes/)"
echo "[fuzz] reproduce one with $BUILD_DIR/tests/fuzz/fuzz_<target> FILE; once fixed, copy the file to"
echo "[fuzz] tests/fuzz/corpus/<target>/found_<what_it_found>.<ext> so every ctest run replays it"
exit 1
