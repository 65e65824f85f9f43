#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite with ctest. Extra args go to ctest
# (e.g. scripts/test.sh -L oracle). Long tests carry the label "long" and are excluded unless GANTRAIN_LONG_TESTS=1.
# A run without arguments then builds the fuzz targets with clang (./build-fuzz) and runs ctest -L '^fuzz$' there (docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Every test dependency was installed above: a test that finds one missing fails instead of skipping.
export GANTRAIN_TEST_REQUIRE_ALL=1
EXCLUDE=(-LE long)
if [ "${GANTRAIN_LONG_TESTS:-0}" = "1" ]; then EXCLUDE=(); fi
status=0
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure --timeout 1200 "${EXCLUDE[@]}" "$@") || status=$?
# libFuzzer, ASan and UBSan over every file reader (docs/fuzzing.md): about 4 minutes on 2 cores, most of it the build.
if [ $# -eq 0 ] && [ "${GANTRAIN_FUZZ_TESTS:-1}" = "1" ]; then
  FUZZ_BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
  CC=clang CXX=clang++ cmake -S . -B "$FUZZ_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGANTRAIN_FUZZ=ON \
    -DGANTRAIN_CUDA=OFF -DGANTRAIN_MPI=OFF -DGANTRAIN_TESTS=OFF >/dev/null
  cmake --build "$FUZZ_BUILD_DIR" --target fuzzers -j "$(nproc)"
  (cd "$FUZZ_BUILD_DIR" && ctest --output-on-failure -L '^fuzz$') || status=$?
fi
exit $status
