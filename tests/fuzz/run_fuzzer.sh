#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time from its seed corpus; new inputs and crash files go to a work
# folder (a temporary one, removed afterwards, unless given), never into the repository.
# Usage: run_fuzzer.sh FUZZER SEED_DIR SECONDS [WORK_DIR]
set -euo pipefail
fuzzer=$1 seeds=$2 seconds=$3 work=${4:-}
if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/gantrain-fuzz.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/corpus" "$work/crashes"
# The first folder receives what libFuzzer finds; the seeds are only read. Sanitizer reports and
# escaping exceptions abort; -rss_limit_mb and -timeout turn memory blow-ups and hangs into findings too.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(dirname "$0")/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$work/crashes/" "$work/corpus" "$seeds" || status=$?
if [ "$status" -ne 0 ]; then
  echo "run_fuzzer: $(basename "$fuzzer") found a problem (exit $status); the input that shows it:" >&2
  ls -l "$work/crashes" >&2
  for f in "$work"/crashes/*; do
    [ -f "$f" ] && echo "run_fuzzer: base64 of $(basename "$f"): $(head -c 4096 "$f" | base64 -w0)" >&2
  done
  echo "run_fuzzer: to keep it, copy it into tests/fuzz/corpus/<target>/ named after what it found (docs/fuzzing.md)" >&2
fi
exit "$status"
