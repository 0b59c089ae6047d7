#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs one example end to end on a private dev broker: sluice-kafka-dev,
# the generator, then the job over everything it wrote (a bounded read,
# --exit-at-end), then the evaluator, whose exit code this returns. With
# --kill-after-ms a first job reads while the generator writes, is
# SIGKILLed mid-stream and restarted (bounded) from its checkpoint.
# Every process it starts is stopped on exit, also on failure or Ctrl-C.
set -euo pipefail

usage() {
  cat <<EOF
usage: $0 fraud|botdetect|scoring [--build DIR] [--events N] [--rate R] [--seed S]
          [--parallelism P] [--checkpoint-dir DIR] [--checkpoint-interval-ms MS]
          [--kill-after-ms MS] [--restart-after-end] [--set key=value ...]
          [--save-alerts FILE] [--reference FILE] [--print] [--timeout S]
          [--suppress-ms MS] [--rules FILE] [--incidents MS]
          [--gen ARG ...] [--job ARG ...] [--eval ARG ...]
--kill-after-ms: SIGKILL the job MS ms after its first complete checkpoint,
then restart it with restore.from=latest (the evaluator dedupes alerts).
--restart-after-end: once the job has ended at the end of its input, run
it again with restore.from=latest: with every partition finished in its
last checkpoint it must read nothing and end.
The bounded job starts once the generator has written everything (--rate
paces the generator) and reads what the input topic holds then; the job
that is killed runs unbounded beside the generator.
--set: a job configuration override (e.g. state.backend=hashmap).
--save-alerts: keep the distinct alerts; --reference: require exactly the
alerts of such a file (the evaluator's options).
--suppress-ms (fraud): the job's suppression interval (0: every alert);
--rules FILE (fraud): rule records the generator writes to fraud.rules
first; --incidents MS: the evaluator groups the alerts into incidents.
--gen / --job / --eval: one more argument for the generator / the job /
the evaluator.
--print: show alerts as the job writes them. Exit code: the evaluator's
(0 = every rule on target; scoring: AUC >= 0.9), or 3 when a process
failed.
EOF
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
example=$1
shift
case $example in
  fraud) in_topic=fraud.txns extra_topics=(--topic fraud.rules:1)
         job_args=(--rules-topic fraud.rules) ;;
  botdetect) in_topic=botdetect.requests extra_topics=() job_args=() ;;
  scoring) in_topic=scoring.events extra_topics=() job_args=() ;;
  -h|--help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac
alerts_topic=$example.alerts
if [ "$example" = scoring ]; then
  # Scores instead of alerts; model versions on a one-partition topic.
  alerts_topic=scoring.scores
  extra_topics=(--topic scoring.models:1)
fi
build=build events=40000 rate=0 seed=1 parallelism=2 ckpt_dir="" ckpt_ms=500
kill_after="" restart_after_end="" print="" timeout_s=60
sets=() eval_args=() gen_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift ;;
    --events) events=$2; shift ;;
    --rate) rate=$2; shift ;;
    --seed) seed=$2; shift ;;
    --parallelism) parallelism=$2; shift ;;
    --checkpoint-dir) ckpt_dir=$2; shift ;;
    --checkpoint-interval-ms) ckpt_ms=$2; shift ;;
    --kill-after-ms) kill_after=$2; shift ;;
    --restart-after-end) restart_after_end=1 ;;
    --set) sets+=(--set "$2"); shift ;;
    --save-alerts) eval_args+=(--save-alerts "$(realpath -m "$2")"); shift ;;
    --reference) eval_args+=(--reference "$(realpath -m "$2")"); shift ;;
    --print) print=--print ;;
    --suppress-ms) job_args+=(--suppress-ms "$2"); shift ;;
    --rules) gen_args+=(--rules "$(realpath -m "$2")"); shift ;;
    --incidents) eval_args+=(--incidents "$2"); shift ;;
    --gen) gen_args+=("$2"); shift ;;
    --job) job_args+=("$2"); shift ;;
    --eval) eval_args+=("$2"); shift ;;
    --timeout) timeout_s=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
[[ $build = /* ]] || build=$PWD/$build
bin=$build/examples/$example
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-$example.XXXXXX")
if [ -z "$ckpt_dir" ]; then
  ckpt_dir=$work/checkpoints
elif [ -n "$(ls -A "$ckpt_dir" 2>/dev/null)" ]; then
  # restore.from=latest would resume an earlier run against a new broker.
  echo "run-example: $ckpt_dir is not empty; give an empty or new directory" >&2
  rm -rf "$work"
  exit 2
fi
pids=()   # generator and jobs: stopped first
broker_pid=""

# Stops pid with SIGTERM (a job stops cleanly, with a final checkpoint),
# then SIGKILL if it is still there after `grace` seconds.
stop() {
  local pid=$1 grace=$2 i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  # The broker goes last: a job stopping needs it for its final flush.
  for pid in "${pids[@]}"; do stop "$pid" 10; done
  [ -z "$broker_pid" ] || stop "$broker_pid" 5
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "run-example: $*" >&2
  for f in "$work"/*.log; do
    [ -s "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
  done
  exit 3
}

# Waits for pid to exit within timeout_s; its exit status ends up in $st.
wait_for() {
  local pid=$1 what=$2 deadline=$((SECONDS + timeout_s))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "$what still running after ${timeout_s}s"
    sleep 0.1
  done
  st=0
  wait "$pid" || st=$?
}

# Its own session: Ctrl-C in the terminal must not take the broker away
# while the job is still stopping (cleanup stops it last).
setsid "$build/tools/sluice-kafka-dev" --bootstrap-file "$work/bootstrap" \
  --topic "$in_topic:4" --topic "$alerts_topic:4" ${extra_topics[@]+"${extra_topics[@]}"} \
  >"$work/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 100); do [ -s "$work/bootstrap" ] && break; sleep 0.05; done
[ -s "$work/bootstrap" ] || fail "the dev broker did not start"
broker=(--bootstrap-file "$work/bootstrap")

echo "run-example: writing $events events to $in_topic"
"$bin/$example-gen" "${broker[@]}" --labels "$work/labels.jsonl" \
  --events "$events" --rate "$rate" --seed "$seed" \
  ${gen_args[@]+"${gen_args[@]}"} >"$work/gen.log" 2>&1 &
gen=$!
pids+=($gen)

job_cmd=("$bin/$example-job" --config "examples/$example/$example.conf"
  "${broker[@]}" --set "parallelism=$parallelism"
  --set "checkpoint.dir=$ckpt_dir" --set "checkpoint.interval.ms=$ckpt_ms"
  --set "state.dir=$work/state"
  --set restore.from=latest ${sets[@]+"${sets[@]}"}
  ${job_args[@]+"${job_args[@]}"})

# Waits for the generator: a bounded job reads what the topic holds when
# it starts.
wait_generator() {
  wait_for "$gen" generator
  [ "$st" = 0 ] || fail "the generator failed (exit $st)"
  cat "$work/gen.log" >&2
}

if [ -n "$kill_after" ]; then
  # The first job reads while the generator writes, never ends by itself
  # (no --exit-at-end), and its alerts go to a file: they show when it is
  # mid-stream.
  "${job_cmd[@]}" --print >"$work/alerts-before-kill.jsonl" 2>"$work/job.log" &
else
  wait_generator
  "${job_cmd[@]}" --exit-at-end $print 2>"$work/job.log" &
fi
job=$!
pids+=($job)

newest_checkpoint() {
  # A checkpoint is complete once its _metadata exists (written last).
  local n=0 m
  for m in "$ckpt_dir"/chk-*/_metadata; do
    [ -e "$m" ] || continue
    m=${m%/_metadata}
    m=${m##*/chk-}
    [ "$m" -gt "$n" ] && n=$m
  done
  echo "$n"
}

if [ -n "$kill_after" ]; then
  # Kill mid-stream: once alerts flow, after a checkpoint taken since then
  # (so there is state and a position to restore), plus kill_after ms.
  deadline=$((SECONDS + timeout_s))
  until [ -s "$work/alerts-before-kill.jsonl" ]; do
    kill -0 "$job" 2>/dev/null || fail "the job ended before writing an alert"
    [ $SECONDS -lt $deadline ] || fail "no alert after ${timeout_s}s"
    sleep 0.02
  done
  seen=$(newest_checkpoint)
  while [ "$(newest_checkpoint)" -le "$seen" ]; do
    kill -0 "$job" 2>/dev/null || fail "the job ended before a checkpoint"
    [ $SECONDS -lt $deadline ] || fail "no checkpoint after ${timeout_s}s"
    sleep 0.02
  done
  sleep "$(awk "BEGIN { print $kill_after / 1000 }")"
  kill -0 "$job" 2>/dev/null || fail "the job ended before it could be killed"
  kill -KILL "$job"
  wait "$job" 2>/dev/null || true
  echo "run-example: killed the job with SIGKILL after it wrote" \
    "$(wc -l <"$work/alerts-before-kill.jsonl") alerts; newest checkpoint:" \
    "chk-$(newest_checkpoint); restarting it with restore.from=latest" \
    "once the generator is done"
  wait_generator
  "${job_cmd[@]}" --exit-at-end $print 2>"$work/job2.log" &
  job=$!
  pids+=($job)
fi

wait_for "$job" job
[ "$st" = 0 ] || fail "the job failed (exit $st)"
if [ -n "$restart_after_end" ]; then
  echo "run-example: the job ended; restarting it with restore.from=latest"
  "${job_cmd[@]}" --exit-at-end $print 2>"$work/job2.log" &
  job=$!
  pids+=($job)
  wait_for "$job" "the restarted job"
  [ "$st" = 0 ] || fail "the restarted job failed (exit $st)"
fi
cat "$work"/job*.log >&2
if [ -n "$kill_after$restart_after_end" ]; then
  echo "run-example: restarted $(grep -h "records, wrote" "$work/job2.log")"
fi

st=0
"$bin/$example-eval" "${broker[@]}" --labels "$work/labels.jsonl" \
  ${eval_args[@]+"${eval_args[@]}"} || st=$?
exit "$st"
