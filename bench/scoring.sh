#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The scoring example's throughput per core: one generated input on a dev
# broker, read whole (--exit-at-end) at parallelism 1 by scoring-job with
# the logistic model, with the tree ensemble, and with --no-score (the
# same reading, parsing, keying and writing without features or model:
# the baseline), each run's CPU time (user + system) measured. Prints one
# line; fails unless every run read and wrote every event. (100000 events
# by default: the dev broker keeps a bounded log per partition.)
set -euo pipefail
build=${1:-build}
events=${EVENTS:-100000}
cd "$(dirname "$0")/.."
[[ $build = /* ]] || build=$PWD/$build
bin=$build/examples/scoring
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-scoring.XXXXXX")
broker=""
cleanup() {
  [ -z "$broker" ] || { kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
"$build/tools/sluice-kafka-dev" --bootstrap-file "$work/bootstrap" \
  --topic scoring.events:4 --topic scoring.scores:4 \
  --topic scoring.models:1 >"$work/broker.log" 2>&1 &
broker=$!
for _ in $(seq 100); do [ -s "$work/bootstrap" ] && break; sleep 0.05; done
"$bin/scoring-gen" --bootstrap-file "$work/bootstrap" --events "$events" \
  --labels "$work/labels.jsonl" 2>"$work/gen.log"
n=$(sed -n "s/^scoring-gen: \([0-9]*\) events.*/\1/p" "$work/gen.log")
[ -n "$n" ] || { cat "$work/gen.log" >&2; exit 1; }

# Runs the job once; prints events per CPU second.
run() {
  local name=$1
  shift
  /usr/bin/time -f "%U %S" -o "$work/$name.time" \
    "$bin/scoring-job" --bootstrap-file "$work/bootstrap" --exit-at-end \
    --config examples/scoring/scoring.conf --set parallelism=1 \
    --set checkpoint.dir="$work/ck-$name" --set restore.from= \
    --set log.level=warn --alerts-topic "scoring.$name" "$@" \
    2>"$work/$name.log"
  grep -q "read $n records, wrote $n alerts, 0 bad" "$work/$name.log" || {
    echo "bench=scoring FAILED: $name did not score every event" >&2
    cat "$work/$name.log" >&2
    exit 1
  }
  awk -v n="$n" '{ printf "%.0f", n / ($1 + $2) }' "$work/$name.time"
}
base=$(run base --no-score)
lr=$(run lr --model examples/scoring/models/lr.json)
gbt=$(run gbt --model examples/scoring/models/gbt.json)
awk -v n="$n" -v b="$base" -v l="$lr" -v g="$gbt" 'BEGIN {
  printf "bench=scoring events=%d parallelism=1 lr_events_per_cpu_s=%d " \
         "gbt_events_per_cpu_s=%d no_score_events_per_cpu_s=%d " \
         "lr_ratio=%.2f gbt_ratio=%.2f\n", n, l, g, b, l / b, g / b }'
