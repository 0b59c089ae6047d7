#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs one example end to end on a private dev broker: sluice-kafka-dev,
# the generator, then the job over everything it wrote (a bounded read,
# --exit-at-end), then the evaluator, whose exit code this returns. With
# --kill-after-ms a first job reads while the generator writes, is
# SIGKILLed mid-stream and restarted (bounded) from its checkpoint. With
# --processes N (fraud) the job runs as N processes of one group (group
# mode, docs/scaling.md) sharing one checkpoint store, until every task's
# snapshot holds the whole input; then each is stopped draining (SIGUSR1).
# Every process it starts is stopped on exit, also on failure or Ctrl-C.
set -euo pipefail

usage() {
  cat <<EOF
usage: $0 fraud|botdetect|scoring [--build DIR] [--events N] [--rate R] [--seed S]
          [--parallelism P] [--checkpoint-dir DIR] [--checkpoint-interval-ms MS]
          [--kill-after-ms MS] [--restart-after-end] [--set key=value ...]
          [--save-alerts FILE] [--reference FILE] [--print] [--timeout S]
          [--suppress-ms MS] [--rules FILE] [--incidents MS]
          [--gen ARG ...] [--job ARG ...] [--eval ARG ...] [--processes N]
--processes N (fraud): N processes of one job in group mode
(group.mode=copartitioned over a 12-partition input the generator writes
keyed by account with Kafka's murmur2 partitioner), one shared
checkpoint.dir, each with its own instance.id, state.dir and metrics
port, and a 6 s group session timeout (a dev-broker rebalance waits up
to it for the members); they start before the generator writes, run until every task's
pointer is at the end of its partition, then are stopped draining
(SIGUSR1). Each process reads the whole rules topic itself, as one
process does (a source that only feeds broadcasts is not a group
member). Not with --rules: rule records written while the processes run
meet an idle rules input and act from their arrival, not their time.
--kill-after-ms: SIGKILL the job MS ms after its first complete checkpoint
since its first alert, then restart it with restore.from=latest (the
evaluator dedupes alerts). The generator writes half the events, waits
until the kill, then writes the rest.
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
         rules_args=(--rules-topic fraud.rules) ;;
  botdetect) in_topic=botdetect.requests extra_topics=() rules_args=() ;;
  scoring) in_topic=scoring.events extra_topics=() rules_args=() ;;
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
kill_after="" restart_after_end="" print="" timeout_s=60 processes=1
sets=() eval_args=() gen_args=() job_args=()
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
    --processes) processes=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
if [ "$processes" != 1 ]; then
  [[ $processes =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }
  if [ "$example" != fraud ]; then
    echo "run-example: --processes is for fraud" >&2
    exit 2
  fi
  if [ -n "$kill_after$restart_after_end" ] || [[ " ${gen_args[*]-} " = *" --rules "* ]]; then
    echo "run-example: --processes goes without --kill-after-ms," \
      "--restart-after-end and --rules" >&2
    exit 2
  fi
fi
# Every process reads the rules topic, all of it: in group mode a source
# that only feeds broadcasts is no member of the group.
job_args=(${rules_args[@]+"${rules_args[@]}"} ${job_args[@]+"${job_args[@]}"})
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
    # The last lines that say more than that a checkpoint completed.
    [ -s "$f" ] && {
      echo "--- $f" >&2
      grep -v 'info: checkpoint [0-9]* completed' "$f" | tail -n 20 >&2
    }
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
# Group mode: more partitions than members (processes x parallelism), so
# every member has tasks.
in_parts=4
[ "$processes" = 1 ] || in_parts=12
setsid "$build/tools/sluice-kafka-dev" --bootstrap-file "$work/bootstrap" \
  --topic "$in_topic:$in_parts" --topic "$alerts_topic:4" ${extra_topics[@]+"${extra_topics[@]}"} \
  >"$work/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 100); do [ -s "$work/bootstrap" ] && break; sleep 0.05; done
[ -s "$work/bootstrap" ] || fail "the dev broker did not start"
broker=(--bootstrap-file "$work/bootstrap")

# Partitions the group assigned to one process: the sum over its
# source subtasks of the count each logged after its last rebalance.
assigned() {
  awk '/source input\[[0-9]+\]: group rebalance:.*; reads / {
         s = $0; sub(/.*source input\[/, "", s); sub(/\].*/, "", s)
         n = $0; sub(/.*; reads /, "", n); last[s] = n + 0 }
       END { t = 0; for (k in last) t += last[k]; print t }' "$1"
}

# Offsets of every task pointer in the shared store, added up: each
# task's newest generation, tasks/<task>/<generation>.json.
pointed() {
  local t g
  for t in "$ckpt_dir"/tasks/*/; do
    g=$(ls "$t" 2>/dev/null | grep -E '^[0-9]+\.json$' | sort -n | tail -n 1)
    if [ -n "$g" ]; then cat "$t$g" 2>/dev/null || true; fi
  done | grep -o '"offset":[0-9]*' | awk -F: '{ t += $2 } END { print t + 0 }'
}

if [ "$processes" != 1 ]; then
  # One group: same job and group id, one store; per process its own
  # name, working state directory and metrics port (an ephemeral one).
  group_cmd=("$bin/$example-job" --config "examples/$example/$example.conf"
    "${broker[@]}" --set "parallelism=$parallelism"
    --set group.mode=copartitioned --set "group.partitions=$in_parts"
    --set "checkpoint.dir=$ckpt_dir" --set "checkpoint.interval.ms=$ckpt_ms"
    --set restore.from= --set metrics.listen=127.0.0.1:0
    --set kafka.session.timeout.ms=6000 --set kafka.heartbeat.interval.ms=500
    ${sets[@]+"${sets[@]}"} ${job_args[@]+"${job_args[@]}"})
  members=()
  for ((i = 1; i <= processes; i++)); do
    "${group_cmd[@]}" --set "instance.id=$example-$i" \
      --set "state.dir=$work/state-$i" $print 2>"$work/job$i.log" &
    members+=($!)
    pids+=($!)
  done
  # The group settles before any input arrives: a partition that moved
  # later would start from the minimum watermark at its new owner.
  deadline=$((SECONDS + timeout_s))
  while :; do
    total=0
    for ((i = 1; i <= processes; i++)); do
      kill -0 "${members[i - 1]}" 2>/dev/null || fail "process $i ended"
      total=$((total + $(assigned "$work/job$i.log")))
    done
    [ "$total" = "$in_parts" ] && break
    [ $SECONDS -lt $deadline ] || fail "the group did not settle in ${timeout_s}s"
    sleep 0.1
  done
  echo "run-example: $processes processes of $example-job share $in_parts" \
    "partitions:" "$(for ((i = 1; i <= processes; i++)); do
      printf ' %s-%d:%d' "$example" "$i" "$(assigned "$work/job$i.log")"; done)"
  echo "run-example: writing $events events to $in_topic"
  "$bin/$example-gen" "${broker[@]}" --labels "$work/labels.jsonl" \
    --events "$events" --rate "$rate" --seed "$seed" \
    ${gen_args[@]+"${gen_args[@]}"} >"$work/gen.log" 2>&1 &
  gen=$!
  pids+=($gen)
  wait_for "$gen" generator
  [ "$st" = 0 ] || fail "the generator failed (exit $st)"
  cat "$work/gen.log" >&2
  written=$(sed -n 's/.*: \([0-9]*\) transactions,.*/\1/p' "$work/gen.log")
  [ -n "$written" ] || fail "the generator did not say how much it wrote"
  # Done once the tasks' snapshots hold the whole input: their alerts so
  # far were flushed before those checkpoints completed.
  deadline=$((SECONDS + timeout_s))
  until [ "$(pointed)" = "$written" ]; do
    for ((i = 1; i <= processes; i++)); do
      kill -0 "${members[i - 1]}" 2>/dev/null || fail "process $i ended"
    done
    [ $SECONDS -lt $deadline ] ||
      fail "the tasks' snapshots hold $(pointed) of $written records after ${timeout_s}s"
    sleep 0.1
  done
  # Stopped draining (SIGUSR1: sl_job_stop_drain), so every window and
  # timer fires, as at the end of the one-process run's bounded input.
  for pid in "${members[@]}"; do kill -USR1 "$pid"; done
  for ((i = 1; i <= processes; i++)); do
    wait_for "${members[i - 1]}" "process $i"
    [ "$st" = 0 ] || fail "process $i failed (exit $st)"
    echo "run-example: $example-$i $(grep -h "records, wrote" "$work/job$i.log")"
  done
  st=0
  "$bin/$example-eval" "${broker[@]}" --labels "$work/labels.jsonl" \
    ${eval_args[@]+"${eval_args[@]}"} || st=$?
  exit "$st"
fi

echo "run-example: writing $events events to $in_topic"
# With --kill-after-ms the generator writes half the input, then waits
# until the job has been killed: the kill lands mid-stream however fast
# the job reads.
resume="$work/gen-resume"
pause=""
[ -n "$kill_after" ] && pause="$((events / 2)):$resume"
EX_GEN_PAUSE="$pause" "$bin/$example-gen" "${broker[@]}" \
  --labels "$work/labels.jsonl" \
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
  touch "$resume"
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
