/* SPDX-License-Identifier: Apache-2.0 */
/* The built-in metric families of a job: operators and channels, collected
 * at scrape time from the runtime's own counters (runtime/stats.h) so that
 * the per-record path pays nothing, job gauges read by callback, and the
 * checkpoint and Kafka families whose figures other modules keep
 * (report.c). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/util.h"
#include "metrics/metrics_int.h"
#include "runtime/group.h"
#include "runtime/runtime.h"
#include "runtime/stats.h"
#include "sluice.h"

#define STR2(x) #x
#define STR(x) STR2(x)
#define SL__VERSION                                                            \
  STR(SLUICE_VERSION_MAJOR)                                                    \
  "." STR(SLUICE_VERSION_MINOR) "." STR(SLUICE_VERSION_PATCH)

/* ---- Operator and channel collectors ------------------------------------- */

typedef struct op_walk {
  sl__mcollect *c;
  sl__opf field;
  int64_t now_ms;
} op_walk;

static int op_emit(const sl__op_stat *s, void *opaque) {
  op_walk *ow = opaque;
  char worker[16];
  snprintf(worker, sizeof(worker), "%d", s->worker);
  const char *lv[4] = {s->uid, s->kind, worker, NULL};
  double v = NAN;
  /* No watermark yet (SL_TS_MIN) or input ended (SL_TS_MAX): no value
   * rather than a timestamp 292 million years away. */
  bool wm_ok = s->wm != SL_TS_MIN && s->wm != SL_TS_MAX;
  switch (ow->field) {
  case SL__OPF_IN:
    v = (double)s->in;
    break;
  case SL__OPF_OUT:
    v = (double)s->out;
    break;
  case SL__OPF_ERRORS:
    v = (double)s->errors;
    break;
  case SL__OPF_LATE:
    v = (double)s->late;
    break;
  case SL__OPF_WM:
    v = wm_ok ? (double)s->wm / 1000.0 : NAN;
    break;
  case SL__OPF_LAG:
    v = wm_ok ? (double)(ow->now_ms - s->wm) / 1000.0 : NAN;
    break;
  case SL__OPF_ENTRIES:
    v = s->keyed ? (double)s->state_entries : NAN;
    break;
  case SL__OPF_BYTES:
    v = s->keyed ? (double)s->state_bytes : NAN;
    break;
  case SL__OPF_TIMERS:
    if (s->keyed) {
      lv[3] = "event_time";
      sl__mcollect_value(ow->c, lv, (double)s->timers_event);
      lv[3] = "processing_time";
      sl__mcollect_value(ow->c, lv, (double)s->timers_proc);
    }
    return 0;
  default:
    break;
  }
  sl__mcollect_value(ow->c, lv, v);
  return 0;
}

static int chan_emit(const sl__chan_stat *s, void *opaque) {
  op_walk *ow = opaque;
  char from[16], to[16];
  snprintf(from, sizeof(from), "%d", s->from);
  snprintf(to, sizeof(to), "%d", s->to);
  const char *lv[4] = {s->from_op, s->to_op, from, to};
  double v = ow->field == SL__OPF_CH_QUEUED ? (double)s->queued
             : ow->field == SL__OPF_CH_CAP  ? (double)s->capacity
                                            : (double)s->full_ns / 1e9;
  sl__mcollect_value(ow->c, lv, v);
  return 0;
}

static void collect_ops(sl__mcollect *c, void *opaque) {
  sl__opf_arg *a = opaque;
  sl_job_t *job = a->jm->job;
  op_walk ow = {c, a->field, sl_clock_now(job->clock)};
  if (a->field >= SL__OPF_CH_QUEUED)
    sl__stats_channels(job, chan_emit, &ow);
  else
    sl__stats_ops(job, op_emit, &ow);
}

#define OP_LABELS "operator,kind,worker"
#define CH_LABELS "from_operator,to_operator,from_worker,to_worker"

static const struct builtin {
  sl__opf field;
  sl_metric_type type;
  const char *name, *labels, *help;
} builtins[] = {
    {SL__OPF_IN, SL_METRIC_COUNTER, "sluice_operator_records_in_total",
     OP_LABELS, "Records an operator instance received."},
    {SL__OPF_OUT, SL_METRIC_COUNTER, "sluice_operator_records_out_total",
     OP_LABELS, "Records an operator instance emitted (all outputs)."},
    {SL__OPF_ERRORS, SL_METRIC_COUNTER, "sluice_operator_errors_total",
     OP_LABELS,
     "Records skipped after a user-function error or malformed input "
     "(error.policy=skip)."},
    {SL__OPF_LATE, SL_METRIC_COUNTER,
     "sluice_operator_late_records_dropped_total", OP_LABELS,
     "Records dropped because they arrived behind the watermark."},
    {SL__OPF_WM, SL_METRIC_GAUGE, "sluice_operator_watermark_timestamp_seconds",
     OP_LABELS,
     "Current event-time watermark of the operator's input (sources: the "
     "last emitted), as a Unix time."},
    {SL__OPF_LAG, SL_METRIC_GAUGE, "sluice_operator_event_time_lag_seconds",
     OP_LABELS,
     "Processing time minus the operator's current watermark: how far event "
     "time trails the clock."},
    {SL__OPF_ENTRIES, SL_METRIC_GAUGE, "sluice_operator_state_entries",
     OP_LABELS,
     "Keyed state entries (values, lists, map entries) of a keyed operator "
     "instance; published about once a second."},
    {SL__OPF_BYTES, SL_METRIC_GAUGE, "sluice_operator_state_bytes", OP_LABELS,
     "Bytes of keys, namespaces and values in a keyed operator instance's "
     "state; published about once a second."},
    {SL__OPF_TIMERS, SL_METRIC_GAUGE, "sluice_operator_timers_pending",
     OP_LABELS ",domain",
     "Timers registered and not yet fired, per time domain; published about "
     "once a second."},
    {SL__OPF_CH_QUEUED, SL_METRIC_GAUGE, "sluice_channel_queued_batches",
     CH_LABELS,
     "Record batches waiting in a key_by channel between two workers; a "
     "channel near its capacity backpressures its producer."},
    {SL__OPF_CH_CAP, SL_METRIC_GAUGE, "sluice_channel_capacity_batches",
     CH_LABELS,
     "Capacity of a key_by channel in batches (channel.capacity rounded up "
     "to a power of two)."},
    {SL__OPF_CH_FULL, SL_METRIC_COUNTER,
     "sluice_channel_backpressure_seconds_total", CH_LABELS,
     "Seconds the producing worker waited for room in a full key_by "
     "channel; its rate is the share of time the producer was "
     "backpressured."},
};

/* ---- Job gauges read at scrape time -------------------------------------- */

static double uptime_fn(void *opaque) {
  sl__jmetrics *jm = opaque;
  if (!atomic_load(&jm->started))
    return NAN;
  int64_t end = atomic_load(&jm->end_mono_ms);
  return (double)((end ? end : sl__mono_ms()) -
                  atomic_load(&jm->start_mono_ms)) /
         1000.0;
}

static double start_time_fn(void *opaque) {
  sl__jmetrics *jm = opaque;
  if (!atomic_load(&jm->started))
    return NAN;
  return (double)atomic_load(&jm->start_unix_ms) / 1000.0;
}

static double ready_fn(void *opaque) {
  sl__jmetrics *jm = opaque;
  return sl__jm_health(jm->job, NULL, 0) == SL_HEALTH_READY ? 1 : 0;
}

static double queries_fn(void *opaque) {
  sl__jmetrics *jm = opaque;
  uint64_t served, timeouts;
  sl__query_counts(jm->job, &served, &timeouts);
  return (double)served;
}

static double query_timeouts_fn(void *opaque) {
  sl__jmetrics *jm = opaque;
  uint64_t served, timeouts;
  sl__query_counts(jm->job, &served, &timeouts);
  return (double)timeouts;
}

static double failed_fn(void *opaque) {
  sl__jmetrics *jm = opaque;
  return sl__job_failing(jm->job) ? 1 : 0;
}

static const double ckpt_bounds[] = {0.05, 0.1, 0.25, 0.5, 1,   2.5, 5,
                                     10,   30,  60,   120, 300, 600};

/* Must equal the Kafka layer's SL__KCOMMIT_BOUNDS (a histogram reported
 * with other bounds is left out). */
static const double commit_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                       0.5,   1,    2.5,   5,    10,  30};

#define PART_LABELS "source,topic,partition"
#define SINK_LABELS "sink,worker"

/* A family reported at scrape time by a collector. */
struct cfam {
  sl_metric_type type;
  const char *name, *labels, *help;
};

static const struct cfam kafka[] = {
    {SL_METRIC_GAUGE, "sluice_kafka_partition_offset", PART_LABELS,
     "Next offset the source will read from the partition (its position)."},
    {SL_METRIC_GAUGE, "sluice_kafka_partition_high_watermark", PART_LABELS,
     "The partition's high watermark (log end offset) as last reported by "
     "the broker."},
    {SL_METRIC_GAUGE, "sluice_kafka_consumer_lag", PART_LABELS,
     "Records between the source's position and the partition's high "
     "watermark."},
    {SL_METRIC_COUNTER, "sluice_dead_letter_records_total", "operator,reason",
     "Records sent to the dead-letter topic, by operator and reason (decode, "
     "user)."},
    {SL_METRIC_COUNTER, "sluice_kafka_sink_records_delivered_total",
     SINK_LABELS, "Records of a Kafka sink instance the broker acknowledged."},
    {SL_METRIC_COUNTER, "sluice_kafka_sink_records_failed_total", SINK_LABELS,
     "Records of a Kafka sink instance whose delivery failed after the "
     "producer's retries (the job fails)."},
    {SL_METRIC_GAUGE, "sluice_kafka_sink_held_bytes", SINK_LABELS,
     "exactly_once: key and value bytes a sink instance holds between a "
     "barrier and its transaction's commit."},
    {SL_METRIC_COUNTER, "sluice_kafka_sink_backpressure_seconds_total",
     SINK_LABELS,
     "exactly_once: seconds a sink instance waited for a commit because it "
     "held sink.held.max.bytes."},
    {SL_METRIC_GAUGE, "sluice_kafka_producer_queue_messages", "producer",
     "Messages in a producer's queue, not yet acknowledged (producer: plain "
     "or transactional)."},
    {SL_METRIC_COUNTER, "sluice_kafka_producer_request_retries_total",
     "producer",
     "Requests the producer retried, from librdkafka's statistics "
     "(kafka.statistics.interval.ms)."},
    {SL_METRIC_GAUGE, "sluice_kafka_broker_rtt_seconds", "producer,broker",
     "Average round trip of the producer's requests to a broker over the "
     "last statistics window."},
    {SL_METRIC_GAUGE, "sluice_kafka_broker_throttle_seconds", "producer,broker",
     "Average time a broker throttled the producer over the last statistics "
     "window."},
    {SL_METRIC_HISTOGRAM, "sluice_kafka_transaction_commit_seconds", NULL,
     "exactly_once: time to commit a checkpoint's transaction (sending the "
     "source offsets and committing)."},
};

/* ---- Group mode: tasks and rebalances (runtime/group.h) ------------------ */

static const double pause_bounds[] = SL__GROUP_PAUSE_BOUNDS;

static const struct cfam group[] = {
    {SL_METRIC_GAUGE, "sluice_group_tasks", NULL,
     "Tasks (input partitions of the keyed stages) this process owns."},
    {SL_METRIC_GAUGE, "sluice_group_rebalancing", NULL,
     "Consumer-group members of this process in a rebalance: joined, or "
     "partitions revoked, and not assigned since (0: settled)."},
    {SL_METRIC_COUNTER, "sluice_group_rebalances_total", "event",
     "Rebalance events of this process's group members: partitions "
     "assigned (also none, when a rebalance leaves a member as it was) or "
     "revoked."},
    {SL_METRIC_COUNTER, "sluice_group_tasks_moved_total", "direction",
     "Tasks (partitions) assigned to or revoked from this process's "
     "members."},
    {SL_METRIC_COUNTER, "sluice_group_revivals_total", NULL,
     "Times this process was fenced and revived its tasks: it dropped "
     "them, rejoined the group as a new member and restored what it was "
     "assigned (group.revive.max)."},
    {SL_METRIC_HISTOGRAM, "sluice_group_rebalance_pause_seconds", NULL,
     "Per member and rebalance: from its join or the revocation of its "
     "partitions to its next assignment, while its tasks were not "
     "processed here."},
};

static void collect_group(sl__mcollect *c, void *opaque) {
  sl__jmetrics *jm = opaque;
  sl__group_stat g;
  sl__group_stats(jm->job, &g);
  const char *f = sl__mcollect_family(c);
  if (strcmp(f, "sluice_group_tasks") == 0) {
    sl__mcollect_value(c, NULL, g.tasks);
  } else if (strcmp(f, "sluice_group_rebalancing") == 0) {
    sl__mcollect_value(c, NULL, g.rebalancing);
  } else if (strcmp(f, "sluice_group_rebalances_total") == 0) {
    const char *a[] = {"assigned"}, *r[] = {"revoked"};
    sl__mcollect_value(c, a, (double)g.assigned);
    sl__mcollect_value(c, r, (double)g.revoked);
  } else if (strcmp(f, "sluice_group_tasks_moved_total") == 0) {
    const char *a[] = {"assigned"}, *r[] = {"revoked"};
    sl__mcollect_value(c, a, (double)g.tasks_assigned);
    sl__mcollect_value(c, r, (double)g.tasks_revoked);
  } else if (strcmp(f, "sluice_group_revivals_total") == 0) {
    sl__mcollect_value(c, NULL, (double)g.revivals);
  } else {
    sl__mcollect_histogram(c, NULL, pause_bounds, SL__GROUP_PAUSE_N,
                           g.pause_buckets, g.pause_sum);
  }
}

/* Registers the families fams[0..n), collected by fn; a histogram's
 * bounds are bounds[0..nb). */
static int add_collected(sl__jmetrics *jm, const struct cfam *fams, size_t n,
                         const double *bounds, size_t nb, sl__mcollect_fn fn,
                         char *err, size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    bool h = fams[i].type == SL_METRIC_HISTOGRAM;
    sl__mfamily *f = sl__metrics_family(
        jm->reg, fams[i].type, fams[i].name, fams[i].help, fams[i].labels,
        h ? bounds : NULL, h ? nb : 0, err, errlen);
    if (!f || sl__mfamily_set_collector(f, fn, jm))
      return SL_ERR_NOMEM;
  }
  return SL_OK;
}

/* Registers every built-in family; series that exist from the start are
 * created here. */
int sl__jm_register_builtins(sl__jmetrics *jm, char *err, size_t errlen) {
  sl__metrics *m = jm->reg;
  sl__mfamily *f;
  /* Job. */
  const char *info_lv[] = {jm->job->name, SL__VERSION};
  if (!(f = sl__metrics_family(m, SL_METRIC_GAUGE, "sluice_job_info",
                               "The job's name and the sluice version; always "
                               "1.",
                               "job_name,version", NULL, 0, err, errlen)))
    return SL_ERR_NOMEM;
  sl__mseries_set(sl__mfamily_series(f, info_lv), 1);
  if (!(f = sl__metrics_family(m, SL_METRIC_GAUGE, "sluice_job_parallelism",
                               "Worker threads of the job.", NULL, NULL, 0, err,
                               errlen)))
    return SL_ERR_NOMEM;
  sl__mseries_set(sl__mfamily_series(f, NULL), jm->job->par);
  static const struct {
    const char *name, *help;
    double (*fn)(void *);
  } gauges[] = {
      {"sluice_job_start_time_seconds",
       "Unix time at which sl_job_run() started the job.", start_time_fn},
      {"sluice_job_uptime_seconds", "Seconds the job has been running.",
       uptime_fn},
      {"sluice_job_ready",
       "1 when /healthz reports ready: every worker runs its operators and "
       "sources and the job is healthy.",
       ready_fn},
      {"sluice_job_failed", "1 once a task of the job failed.", failed_fn},
  };
  for (size_t i = 0; i < SL__ARRAY_LEN(gauges); i++) {
    if (!(f = sl__metrics_family(m, SL_METRIC_GAUGE, gauges[i].name,
                                 gauges[i].help, NULL, NULL, 0, err, errlen)))
      return SL_ERR_NOMEM;
    sl__mseries_set_fn(sl__mfamily_series(f, NULL), gauges[i].fn, jm);
  }
  if (!(f = sl__metrics_family(
            m, SL_METRIC_COUNTER, "sluice_job_restarts_total",
            "Times the job was restarted from a checkpoint, over its life.",
            NULL, NULL, 0, err, errlen)) ||
      !(jm->restarts = sl__mfamily_series(f, NULL)))
    return SL_ERR_NOMEM;
  /* State queries (sl_job_query, GET /state/...). */
  const char *answered[] = {"answered"}, *timed_out[] = {"timed_out"};
  if (!(f = sl__metrics_family(
            m, SL_METRIC_COUNTER, "sluice_state_queries_total",
            "State queries: answered by the worker owning the key (found, "
            "absent or refused), or timed out waiting for it.",
            "outcome", NULL, 0, err, errlen)))
    return SL_ERR_NOMEM;
  sl__mseries_set_fn(sl__mfamily_series(f, answered), queries_fn, jm);
  sl__mseries_set_fn(sl__mfamily_series(f, timed_out), query_timeouts_fn, jm);
  /* Operators and channels. */
  for (size_t i = 0; i < SL__ARRAY_LEN(builtins); i++) {
    const struct builtin *b = &builtins[i];
    jm->args[b->field] = (sl__opf_arg){jm, b->field};
    if (!(f = sl__metrics_family(m, b->type, b->name, b->help, b->labels, NULL,
                                 0, err, errlen)) ||
        sl__mfamily_set_collector(f, collect_ops, &jm->args[b->field]))
      return SL_ERR_NOMEM;
  }
  /* Checkpoints: families now, series once the coordinator enables them. */
  static const struct {
    sl_metric_type type;
    const char *name, *help;
  } ck[7] = {
      {SL_METRIC_COUNTER, "sluice_checkpoint_completed_total",
       "Checkpoints completed."},
      {SL_METRIC_COUNTER, "sluice_checkpoint_failures_total",
       "Checkpoints that failed or expired."},
      {SL_METRIC_GAUGE, "sluice_checkpoint_last_duration_seconds",
       "Duration of the last completed checkpoint, trigger to metadata."},
      {SL_METRIC_GAUGE, "sluice_checkpoint_last_size_bytes",
       "State bytes written by the last completed checkpoint."},
      {SL_METRIC_GAUGE, "sluice_checkpoint_last_completed_timestamp_seconds",
       "Unix time (job clock) at which the last checkpoint completed."},
      {SL_METRIC_GAUGE, "sluice_checkpoint_last_completed_age_seconds",
       "Seconds since the last checkpoint completed (since the job started "
       "when none has)."},
      {SL_METRIC_GAUGE, "sluice_checkpoint_last_completed_id",
       "Id of the last completed checkpoint."},
  };
  for (size_t i = 0; i < 7; i++)
    if (!(jm->f_ck[i] =
              sl__metrics_family(m, ck[i].type, ck[i].name, ck[i].help, NULL,
                                 NULL, 0, err, errlen)))
      return SL_ERR_NOMEM;
  if (!(jm->f_ck_hist = sl__metrics_family(
            m, SL_METRIC_HISTOGRAM, "sluice_checkpoint_duration_seconds",
            "Durations of completed checkpoints.", NULL, ckpt_bounds,
            SL__ARRAY_LEN(ckpt_bounds), err, errlen)))
    return SL_ERR_NOMEM;
  /* Kafka: what the Kafka source, sink and dead-letter queue keep,
   * collected at scrape time through the runtime's reporters. */
  int rc = add_collected(jm, kafka, SL__ARRAY_LEN(kafka), commit_bounds,
                         SL__ARRAY_LEN(commit_bounds), sl__jm_collect_reported,
                         err, errlen);
  /* Group mode only: a job of one process has no tasks to move. */
  if (!rc && jm->job->kg_murmur2)
    rc = add_collected(jm, group, SL__ARRAY_LEN(group), pause_bounds,
                       SL__GROUP_PAUSE_N, collect_group, err, errlen);
  return rc;
}
