#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every fuzz target of BUILD (configured with -Dfuzz=true by clang,
# see `make fuzz`) for SECONDS each, starting from the seed corpus under
# tests/fuzz/corpus/<target>/ (copied: what a run adds stays in
# BUILD/fuzz-corpus, the tree keeps only seeds and regressions). Prints
# one line per target with its executions; exits non-zero on any crash,
# leak or sanitizer report, leaving the input in BUILD/fuzz-findings.
# Targets that read files write them to a private directory under
# FUZZ_TMP (default /dev/shm when it is writable, else BUILD): on a disk
# file system rewriting a file on every execution costs more than the
# reading under test.
# Usage: tests/fuzz/run.sh BUILD SECONDS [TARGET...]
# FUZZ_RUNS=N stops each target after N executions instead (SECONDS is
# then the limit on time).
set -uo pipefail
build=${1:?usage: run.sh BUILD SECONDS [TARGET...]}
secs=${2:?usage: run.sh BUILD SECONDS [TARGET...]}
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] ||
  targets=(json_scan snapshot metadata conf kafka_pos ckpt_tool)
if [ -z "${FUZZ_TMP:-}" ]; then
  FUZZ_TMP=$build
  [ -d /dev/shm ] && [ -w /dev/shm ] && FUZZ_TMP=/dev/shm
fi
runs=()
[ -n "${FUZZ_RUNS:-}" ] && runs=(-runs="$FUZZ_RUNS")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
failed=0
for t in "${targets[@]}"; do
  exe=$build/tests/fuzz/fuzz_$t
  work=$build/fuzz-corpus/$t
  found=$build/fuzz-findings/$t
  tmp=$(mktemp -d "$FUZZ_TMP/sluice-fuzz-$t-XXXXXX") || exit 2
  mkdir -p "$work" "$found"
  cp -n "$root"/tests/fuzz/corpus/"$t"/* "$work"/ 2>/dev/null
  log=$build/fuzz-$t.log
  start=$(date +%s)
  TMPDIR=$tmp "$exe" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 ${runs[@]+"${runs[@]}"} \
    -print_final_stats=1 -artifact_prefix="$found/" "$work" >"$log" 2>&1
  rc=$?
  rm -rf "$tmp"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "fuzz=$t seconds=$(($(date +%s) - start)) execs=${execs:-0} rc=$rc"
  if [ $rc -ne 0 ]; then
    failed=1
    echo "fuzz: $t found a problem (input in $found, log $log):"
    grep -E "ERROR|SUMMARY|fuzz: " "$log" | head -5
  fi
done
exit $failed
