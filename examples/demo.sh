#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `make demo`: the fraud example on a local dev broker: the generator
# writes the transactions, the job reads them all (a bounded read) and
# prints alerts as it writes them, then precision and recall per rule and
# where the job's checkpoints are. Stops everything it started.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
[[ $build = /* ]] || build=$PWD/$build
demo_dir=${TMPDIR:-/tmp}/sluice-demo
ckpt=$demo_dir/checkpoints
# Checkpoints of an earlier demo belong to its broker, which is gone.
rm -rf "$ckpt"
mkdir -p "$demo_dir"

cat <<INTRO
== sluice demo: card fraud detection ==
A local Kafka (sluice-kafka-dev) receives 45000 card transactions from
fraud-gen, which labels the frauds it injects. fraud-job then reads what the
topic holds (a bounded Kafka read: it ends by itself, every window fired)
with event time from each record, keeps its state in RocksDB, checkpoints
every 2 s to $ckpt,
judges each payment by the rule thresholds in force at its event time
(defaults, or versions from the topic fraud.rules in broadcast state), and
writes one alert per incident (an account's burst of alerts of one rule,
30 min suppression) with its rule and evidence to the topic fraud.alerts:
  small_then_large   under 1.00, then over 500.00 within a minute (process
                     function, TTL state, event-time timers)
  velocity           over 10 payments or 3000 in 10 minutes (sliding window)
  impossible_travel  two payments in countries too far apart for the time
Alerts as they come:
INTRO

st=0
./examples/run-example.sh fraud --build "$build" --events 45000 \
  --checkpoint-dir "$ckpt" --checkpoint-interval-ms 2000 --timeout 120 \
  --print || st=$?

echo
newest=$(ls -d "$ckpt"/chk-* 2>/dev/null | sort -t- -k2 -n | tail -n 1 || true)
if [ -n "$newest" ]; then
  echo "Checkpoints are in $ckpt (the newest was taken as the job stopped)."
  echo "Look inside one with:"
  echo "  $build/tools/sluice-ckpt inspect $newest"
fi
if [ "$st" = 0 ]; then
  echo "Every rule met its target (precision and recall >= 0.95)."
fi
exit "$st"
