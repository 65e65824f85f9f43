#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite with ctest, then the same suite built with
# AddressSanitizer + UndefinedBehaviorSanitizer (scripts/test_sanitized.sh; GANTRAIN_SANITIZED_SUITE=0 leaves it out).
# Extra args go to both ctest runs (e.g. scripts/test.sh -L oracle). Long tests carry the label "long" and
# are excluded unless GANTRAIN_LONG_TESTS=1. The exit status is non-zero when either suite fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Every test dependency was installed above: a test that finds one missing fails instead of skipping.
export GANTRAIN_TEST_REQUIRE_ALL=1
EXCLUDE=(-LE long)
if [ "${GANTRAIN_LONG_TESTS:-0}" = "1" ]; then EXCLUDE=(); fi
normal=0
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure --timeout 1200 "${EXCLUDE[@]}" "$@") || normal=$?
sanitized=0
if [ "${GANTRAIN_SANITIZED_SUITE:-1}" != "0" ]; then
  echo "== the suite again under AddressSanitizer + UndefinedBehaviorSanitizer (scripts/test_sanitized.sh)"
  BUILD_DIR=build-asan bash scripts/test_sanitized.sh "$@" || sanitized=$?
fi
if [ "$normal" != 0 ] || [ "$sanitized" != 0 ]; then
  echo "scripts/test.sh: normal suite exit $normal, sanitized suite exit $sanitized" >&2
  exit 1
fi
