#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite with ctest; then, for a run without
# arguments, the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer (scripts/test_sanitized.sh;
# GANTRAIN_SANITIZED_SUITE=0 leaves it out) and the fuzz targets built with clang, run for seconds each
# (./build-fuzz, ctest -L '^fuzz$', docs/fuzzing.md; GANTRAIN_FUZZ_TESTS=0 leaves them out). Extra args go
# to ctest (e.g. scripts/test.sh -L oracle) and run the normal suite only. Long tests carry the label "long"
# and are excluded unless GANTRAIN_LONG_TESTS=1. The exit status is non-zero when any part fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
# .venv-tb: TensorBoard's own reader for e2e.tensorboard.* (pip, from PyPI). Without PyPI the rest of the suite
# still runs, and those tests fail, naming what is missing.
bash scripts/tensorboard_venv.sh || echo "scripts/tensorboard_venv.sh failed: e2e.tensorboard.* will fail" >&2
bash scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Every test dependency was installed above: a test that finds one missing fails instead of skipping.
export GANTRAIN_TEST_REQUIRE_ALL=1
EXCLUDE=(-LE long)
if [ "${GANTRAIN_LONG_TESTS:-0}" = "1" ]; then EXCLUDE=(); fi
normal=0
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure --timeout 1200 "${EXCLUDE[@]}" "$@") || normal=$?
sanitized=0
if [ $# -eq 0 ] && [ "${GANTRAIN_SANITIZED_SUITE:-1}" != "0" ]; then
  echo "== the suite again under AddressSanitizer + UndefinedBehaviorSanitizer (scripts/test_sanitized.sh)"
  BUILD_DIR=build-asan bash scripts/test_sanitized.sh || sanitized=$?
fi
# libFuzzer, ASan and UBSan over every file reader (docs/fuzzing.md): about 4 minutes on 2 cores, most of it the build.
fuzzed=0
if [ $# -eq 0 ] && [ "${GANTRAIN_FUZZ_TESTS:-1}" = "1" ]; then
  echo "== the fuzz targets, built with clang, for seconds each (docs/fuzzing.md)"
  FUZZ_BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
  CC=clang CXX=clang++ cmake -S . -B "$FUZZ_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGANTRAIN_FUZZ=ON \
    -DGANTRAIN_CUDA=OFF -DGANTRAIN_MPI=OFF -DGANTRAIN_TESTS=OFF >/dev/null
  cmake --build "$FUZZ_BUILD_DIR" --target fuzzers -j "$(nproc)" || fuzzed=$?
  if [ "$fuzzed" = 0 ]; then (cd "$FUZZ_BUILD_DIR" && ctest --output-on-failure -L '^fuzz$') || fuzzed=$?; fi
fi
if [ "$normal" != 0 ] || [ "$sanitized" != 0 ] || [ "$fuzzed" != 0 ]; then
  echo "scripts/test.sh: normal suite exit $normal, sanitized suite exit $sanitized, fuzz targets exit $fuzzed" >&2
  exit 1
fi
