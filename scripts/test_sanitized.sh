#!/usr/bin/env bash
# Builds gantrain with AddressSanitizer + UndefinedBehaviorSanitizer into ./build-asan (CPU only, -O1 -g)
# and runs the ctest suite under them; extra args go to ctest. scripts/test.sh runs it after the normal suite.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-asan}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Debug -DGANTRAIN_CUDA=OFF -DGANTRAIN_SANITIZE=address,undefined >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export GANTRAIN_TEST_REQUIRE_ALL=1
# The sanitizers' options and leak suppressions are compiled into every executable
# (tests/sanitize/sanitizer_defaults.cpp). GANTRAIN_SANITIZED=1 tells the Python tests to adapt the
# figures a sanitizer distorts (the C++ tests know from the compile definition of the same name).
export GANTRAIN_SANITIZED=1
EXCLUDE=(-LE long)
if [ "${GANTRAIN_LONG_TESTS:-0}" = "1" ]; then EXCLUDE=(); fi
cd "$BUILD_DIR"
# Two tests at a time (tests that need both cores say so with PROCESSORS 2): ASan makes the suite slower.
ctest --output-on-failure --timeout 1800 -j "$(nproc)" "${EXCLUDE[@]}" "$@"
