#!/usr/bin/env bash
# Runs every benchmark once and prints their one-line results.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
for b in "$build"/bench/bench_*; do
  [ -f "$b" ] && [ -x "$b" ] && "$b"
done
