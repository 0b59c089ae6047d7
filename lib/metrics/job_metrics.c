/* SPDX-License-Identifier: Apache-2.0 */
/* A job's metrics: the built-in families (operators, channels, job,
 * checkpoints, Kafka), collected at scrape time from the runtime's own
 * counters so the per-record path pays nothing; /healthz; the periodic JSON
 * log line; and the functions through which the checkpoint coordinator and
 * the Kafka source report their numbers. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/conf.h"
#include "core/util.h"
#include "sluice.h"
#include "metrics/http.h"
#include "metrics/metrics.h"
#include "runtime/runtime.h"
#include "runtime/stats.h"

#define STR2(x) #x
#define STR(x) STR2(x)
#define SL__VERSION                                                            \
  STR(SLUICE_VERSION_MAJOR)                                                    \
  "." STR(SLUICE_VERSION_MINOR) "." STR(SLUICE_VERSION_PATCH)

struct sl__kafka_pmetrics {
  sl__mseries *offset, *hw, *lag;
  _Atomic int64_t off_v, hw_v;
};

/* Which field an operator or channel family reports. */
typedef enum opf {
  OPF_IN,
  OPF_OUT,
  OPF_ERRORS,
  OPF_LATE,
  OPF_WM,
  OPF_LAG,
  OPF_ENTRIES,
  OPF_BYTES,
  OPF_TIMERS,
  OPF_CH_QUEUED,
  OPF_CH_CAP,
  OPF_COUNT
} opf;

typedef struct sl__jmetrics sl__jmetrics;
typedef struct opf_arg {
  sl__jmetrics *jm;
  opf field;
} opf_arg;

struct sl__jmetrics {
  sl_job_t *job;
  sl__metrics *reg;
  opf_arg args[OPF_COUNT];
  /* Settings. */
  sl__listen_addr addr;
  bool listen;
  int64_t log_interval_ms;
  int64_t ckpt_max_age_ms;
  /* Endpoint. */
  sl__http *http;
  _Atomic int port; /* 0 = not listening */
  /* Log line. */
  sl_metrics_log_fn log_fn;
  void *log_opaque;
  pthread_t log_thread;
  bool log_running, log_stop;
  pthread_mutex_t log_lock;
  pthread_cond_t log_cond;
  /* Run. */
  _Atomic int started, ended;
  _Atomic int64_t start_unix_ms, start_mono_ms, start_job_ms, end_mono_ms;
  /* Checkpoints. */
  _Atomic int ckpt_enabled;
  _Atomic int64_t ckpt_done_ms; /* job clock; INT64_MIN = none yet */
  sl__mfamily *f_ck[7], *f_ck_hist;
  sl__mseries *ck_done, *ck_failed, *ck_dur, *ck_size, *ck_ts, *ck_age, *ck_id,
      *ck_hist;
  sl__mseries *restarts;
  /* Kafka. */
  sl__mfamily *f_offset, *f_hw, *f_lag, *f_dlq;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

sl__metrics *sl__metrics_of(sl_job_t *job) {
  return job && job->metrics ? job->metrics->reg : NULL;
}

/* ---- Operator and channel collectors --------------------------------------
 */

typedef struct op_walk {
  sl__mcollect *c;
  opf field;
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
  case OPF_IN:
    v = (double)s->in;
    break;
  case OPF_OUT:
    v = (double)s->out;
    break;
  case OPF_ERRORS:
    v = (double)s->errors;
    break;
  case OPF_LATE:
    v = (double)s->late;
    break;
  case OPF_WM:
    v = wm_ok ? (double)s->wm / 1000.0 : NAN;
    break;
  case OPF_LAG:
    v = wm_ok ? (double)(ow->now_ms - s->wm) / 1000.0 : NAN;
    break;
  case OPF_ENTRIES:
    v = s->keyed ? (double)s->state_entries : NAN;
    break;
  case OPF_BYTES:
    v = s->keyed ? (double)s->state_bytes : NAN;
    break;
  case OPF_TIMERS:
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
  sl__mcollect_value(ow->c, lv,
                     ow->field == OPF_CH_QUEUED ? (double)s->queued
                                                : (double)s->capacity);
  return 0;
}

static void collect_ops(sl__mcollect *c, void *opaque) {
  opf_arg *a = opaque;
  sl_job_t *job = a->jm->job;
  op_walk ow = {c, a->field, sl_clock_now(job->clock)};
  if (a->field == OPF_CH_QUEUED || a->field == OPF_CH_CAP)
    sl__stats_channels(job, chan_emit, &ow);
  else
    sl__stats_ops(job, op_emit, &ow);
}

#define OP_LABELS "operator,kind,worker"
#define CH_LABELS "from_operator,to_operator,from_worker,to_worker"

static const struct builtin {
  opf field;
  sl_metric_type type;
  const char *name, *labels, *help;
} builtins[] = {
    {OPF_IN, SL_METRIC_COUNTER, "sluice_operator_records_in_total", OP_LABELS,
     "Records an operator instance received."},
    {OPF_OUT, SL_METRIC_COUNTER, "sluice_operator_records_out_total", OP_LABELS,
     "Records an operator instance emitted (all outputs)."},
    {OPF_ERRORS, SL_METRIC_COUNTER, "sluice_operator_errors_total", OP_LABELS,
     "Records skipped after a user-function error or malformed input "
     "(error.policy=skip)."},
    {OPF_LATE, SL_METRIC_COUNTER, "sluice_operator_late_records_dropped_total",
     OP_LABELS, "Records dropped because they arrived behind the watermark."},
    {OPF_WM, SL_METRIC_GAUGE, "sluice_operator_watermark_timestamp_seconds",
     OP_LABELS,
     "Current event-time watermark of the operator's input (sources: the "
     "last emitted), as a Unix time."},
    {OPF_LAG, SL_METRIC_GAUGE, "sluice_operator_event_time_lag_seconds",
     OP_LABELS,
     "Processing time minus the operator's current watermark: how far event "
     "time trails the clock."},
    {OPF_ENTRIES, SL_METRIC_GAUGE, "sluice_operator_state_entries", OP_LABELS,
     "Keyed state entries (values, lists, map entries) of a keyed operator "
     "instance; published about once a second."},
    {OPF_BYTES, SL_METRIC_GAUGE, "sluice_operator_state_bytes", OP_LABELS,
     "Bytes of keys, namespaces and values in a keyed operator instance's "
     "state; published about once a second."},
    {OPF_TIMERS, SL_METRIC_GAUGE, "sluice_operator_timers_pending",
     OP_LABELS ",domain",
     "Timers registered and not yet fired, per time domain; published about "
     "once a second."},
    {OPF_CH_QUEUED, SL_METRIC_GAUGE, "sluice_channel_queued_batches", CH_LABELS,
     "Record batches waiting in a key_by channel between two workers; a "
     "channel near its capacity backpressures its producer."},
    {OPF_CH_CAP, SL_METRIC_GAUGE, "sluice_channel_capacity_batches", CH_LABELS,
     "Capacity of a key_by channel in batches (channel.capacity rounded up "
     "to a power of two)."},
};

/* ---- Job gauges read at scrape time ------------------------------------- */

static double uptime_fn(void *opaque) {
  sl__jmetrics *jm = opaque;
  if (!atomic_load(&jm->started))
    return NAN;
  int64_t end = atomic_load(&jm->end_mono_ms);
  return (double)((end ? end : mono_ms()) - atomic_load(&jm->start_mono_ms)) /
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
  return sl_job_health(jm->job, NULL, 0) == SL_HEALTH_READY ? 1 : 0;
}

static double failed_fn(void *opaque) {
  sl__jmetrics *jm = opaque;
  return sl__job_failing(jm->job) ? 1 : 0;
}

/* Without a completed checkpoint, the age counts from the job's start, so
 * a job that never completes one looks stale too. */
static double ckpt_age_fn(void *opaque) {
  sl__jmetrics *jm = opaque;
  int64_t ref = atomic_load(&jm->ckpt_done_ms);
  if (ref == INT64_MIN) {
    if (!atomic_load(&jm->started))
      return NAN;
    ref = atomic_load(&jm->start_job_ms);
  }
  return (double)(sl_clock_now(jm->job->clock) - ref) / 1000.0;
}

static const double ckpt_bounds[] = {0.05, 0.1, 0.25, 0.5, 1,   2.5, 5,
                                     10,   30,  60,   120, 300, 600};

/* Registers every built-in family; series that exist from the start are
 * created here. */
static int register_builtins(sl__jmetrics *jm, char *err, size_t errlen) {
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
  /* Operators and channels. */
  for (size_t i = 0; i < SL__ARRAY_LEN(builtins); i++) {
    const struct builtin *b = &builtins[i];
    jm->args[b->field] = (opf_arg){jm, b->field};
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
  /* Kafka. */
  if (!(jm->f_offset = sl__metrics_family(
            m, SL_METRIC_GAUGE, "sluice_kafka_partition_offset",
            "Next offset the source will read from the partition (its "
            "position).",
            "source,topic,partition", NULL, 0, err, errlen)) ||
      !(jm->f_hw = sl__metrics_family(
            m, SL_METRIC_GAUGE, "sluice_kafka_partition_high_watermark",
            "The partition's high watermark (log end offset) as last reported "
            "by the broker.",
            "source,topic,partition", NULL, 0, err, errlen)) ||
      !(jm->f_lag = sl__metrics_family(
            m, SL_METRIC_GAUGE, "sluice_kafka_consumer_lag",
            "Records between the source's position and the partition's high "
            "watermark.",
            "source,topic,partition", NULL, 0, err, errlen)) ||
      !(jm->f_dlq = sl__metrics_family(
            m, SL_METRIC_COUNTER, "sluice_dead_letter_records_total",
            "Records sent to the dead-letter topic, by operator and reason "
            "(decode, user).",
            "operator,reason", NULL, 0, err, errlen)))
    return SL_ERR_NOMEM;
  return SL_OK;
}

/* ---- Lifecycle ------------------------------------------------------------
 */

static void jm_free(sl__jmetrics *jm) {
  if (!jm)
    return;
  sl__metrics_free(jm->reg);
  pthread_mutex_destroy(&jm->log_lock);
  pthread_cond_destroy(&jm->log_cond);
  free(jm);
}

int sl__metrics_job_new(sl_job_t *job, char *err, size_t errlen) {
  sl__jmetrics *jm = calloc(1, sizeof(*jm));
  if (!jm) {
    sl__errf(err, errlen, "out of memory");
    return SL_ERR_NOMEM;
  }
  jm->job = job;
  pthread_mutex_init(&jm->log_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&jm->log_cond, &ca);
  pthread_condattr_destroy(&ca);
  atomic_init(&jm->ckpt_done_ms, INT64_MIN);
  int rc = sl__http_parse_listen(
      sl__conf_str(job->conf, "metrics.listen"),
      sl__conf_bool(job->conf, "metrics.listen.allow.remote"), &jm->addr, err,
      errlen);
  if (rc < 0) {
    jm_free(jm);
    return rc;
  }
  jm->listen = rc == 1;
  jm->log_interval_ms = sl__conf_int(job->conf, "metrics.log.interval.ms");
  jm->ckpt_max_age_ms = sl__conf_int(job->conf, "health.checkpoint.max.age.ms");
  if (!(jm->reg = sl__metrics_new()) ||
      (rc = register_builtins(jm, err, errlen))) {
    jm_free(jm);
    sl__errf(err, errlen, "out of memory");
    return SL_ERR_NOMEM;
  }
  job->metrics = jm;
  return SL_OK;
}

static void emit_log_line(sl__jmetrics *jm) {
  char *line = NULL;
  if (sl__metrics_render(jm->reg, SL_METRICS_JSON, jm->job->name,
                         sl_clock_now(jm->job->clock), &line, NULL))
    return;
  if (jm->log_fn)
    jm->log_fn(line, jm->log_opaque);
  else
    fprintf(stderr, "%s\n", line);
  free(line);
}

static void *log_main(void *arg) {
  sl__jmetrics *jm = arg;
  pthread_mutex_lock(&jm->log_lock);
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  while (!jm->log_stop) {
    int64_t ns = next.tv_nsec + (jm->log_interval_ms % 1000) * 1000000;
    next.tv_sec += jm->log_interval_ms / 1000 + ns / 1000000000;
    next.tv_nsec = ns % 1000000000;
    while (!jm->log_stop &&
           pthread_cond_timedwait(&jm->log_cond, &jm->log_lock, &next) == 0) {
    }
    /* Render without the lock, so stopping never waits for a slow sink. */
    pthread_mutex_unlock(&jm->log_lock);
    emit_log_line(jm);
    pthread_mutex_lock(&jm->log_lock);
  }
  pthread_mutex_unlock(&jm->log_lock);
  return NULL;
}

static void http_handler(const char *path, sl__http_reply *r, void *opaque);

int sl__metrics_job_start(sl_job_t *job) {
  sl__jmetrics *jm = job->metrics;
  sl__stats_planned(job);
  atomic_store(&jm->start_unix_ms, unix_ms());
  atomic_store(&jm->start_mono_ms, mono_ms());
  atomic_store(&jm->start_job_ms, sl_clock_now(job->clock));
  atomic_store(&jm->started, 1);
  if (jm->listen) {
    char err[512];
    int rc = sl__http_start(&jm->addr, http_handler, jm, &jm->http, err,
                            sizeof(err));
    if (rc)
      return sl__job_fail(job, rc, "job \"%s\": %s", job->name, err);
    atomic_store(&jm->port, sl__http_port(jm->http));
  }
  if (jm->log_interval_ms > 0) {
    if (pthread_create(&jm->log_thread, NULL, log_main, jm))
      return sl__job_fail(job, SL_ERR_NOMEM,
                          "job \"%s\": cannot start the metrics log thread",
                          job->name);
    jm->log_running = true;
  }
  return SL_OK;
}

void sl__metrics_job_end(sl_job_t *job) {
  sl__jmetrics *jm = job->metrics;
  if (!atomic_load(&jm->started))
    return;
  atomic_store(&jm->end_mono_ms, mono_ms());
  atomic_store(&jm->ended, 1);
  if (jm->log_running) {
    pthread_mutex_lock(&jm->log_lock);
    jm->log_stop = true;
    pthread_cond_signal(&jm->log_cond);
    pthread_mutex_unlock(&jm->log_lock);
    pthread_join(jm->log_thread, NULL);
    jm->log_running = false;
  }
}

void sl__metrics_job_destroy(sl_job_t *job) {
  sl__jmetrics *jm = job->metrics;
  if (!jm)
    return;
  sl__metrics_job_end(job);
  atomic_store(&jm->port, 0);
  sl__http_stop(jm->http);
  jm->http = NULL;
  job->metrics = NULL;
  jm_free(jm);
}

/* ---- Health ---------------------------------------------------------------
 */

const char *sl_health_name(sl_health h) {
  switch (h) {
  case SL_HEALTH_STARTING:
    return "starting";
  case SL_HEALTH_READY:
    return "ready";
  case SL_HEALTH_UNHEALTHY:
    return "unhealthy";
  case SL_HEALTH_FINISHED:
    return "finished";
  }
  return "unknown";
}

sl_health sl_job_health(sl_job_t *job, char *reason, size_t len) {
  char dummy[1];
  if (!reason || !len) {
    reason = dummy;
    len = sizeof(dummy);
  }
  sl__jmetrics *jm = job ? job->metrics : NULL;
  if (!jm || !atomic_load(&jm->started)) {
    snprintf(reason, len, "not started: sl_job_run() has not been called");
    return SL_HEALTH_STARTING;
  }
  char msg[1024];
  sl__job_stat st;
  sl__stats_job(job, &st, msg, sizeof(msg));
  if (st.failed) {
    snprintf(reason, len, "failed: %s", msg);
    return SL_HEALTH_UNHEALTHY;
  }
  if (atomic_load(&jm->ended)) {
    snprintf(reason, len, "finished: sl_job_run() returned");
    return SL_HEALTH_FINISHED;
  }
  if (st.opened < st.parallelism) {
    snprintf(reason, len,
             "starting: %d of %d workers have opened their operators "
             "(restored state) and run",
             st.opened, st.parallelism);
    return SL_HEALTH_STARTING;
  }
  if (jm->ckpt_max_age_ms > 0) {
    int64_t done = atomic_load(&jm->ckpt_done_ms);
    int64_t ref = done == INT64_MIN ? atomic_load(&jm->start_job_ms) : done;
    int64_t age = st.now_ms - ref;
    if (age > jm->ckpt_max_age_ms) {
      if (done == INT64_MIN)
        snprintf(reason, len,
                 "no checkpoint completed in the %" PRId64
                 " ms since the job started (health.checkpoint.max.age.ms = "
                 "%" PRId64 ")",
                 age, jm->ckpt_max_age_ms);
      else
        snprintf(reason, len,
                 "the last completed checkpoint is %" PRId64
                 " ms old (health.checkpoint.max.age.ms = %" PRId64 ")",
                 age, jm->ckpt_max_age_ms);
      return SL_HEALTH_UNHEALTHY;
    }
  }
  snprintf(reason, len, "running on %d workers", st.parallelism);
  return SL_HEALTH_READY;
}

/* ---- HTTP -----------------------------------------------------------------
 */

static char *health_json(sl__jmetrics *jm, sl_health *h) {
  char reason[1200];
  *h = sl_job_health(jm->job, reason, sizeof(reason));
  json_t *o =
      json_pack("{s:s,s:s}", "status", sl_health_name(*h), "reason", reason);
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(o);
  if (!s)
    return NULL;
  size_t n = strlen(s);
  char *nl = realloc(s, n + 2);
  if (!nl)
    return s;
  nl[n] = '\n';
  nl[n + 1] = '\0';
  return nl;
}

static void http_handler(const char *path, sl__http_reply *r, void *opaque) {
  sl__jmetrics *jm = opaque;
  if (strcmp(path, "/metrics") == 0) {
    if (sl__metrics_render(jm->reg, SL_METRICS_PROMETHEUS, jm->job->name, 0,
                           &r->body, &r->len)) {
      r->status = 500;
      r->body = sl__strdup("cannot render metrics: out of memory\n");
      r->len = 0;
      return;
    }
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    return;
  }
  if (strcmp(path, "/healthz") == 0) {
    sl_health h;
    r->body = health_json(jm, &h);
    r->status = h == SL_HEALTH_READY ? 200 : 503;
    r->content_type = "application/json";
    return;
  }
  if (strcmp(path, "/") == 0) {
    r->body =
        sl__strdup("sluice job metrics: /metrics (Prometheus), /healthz\n");
    return;
  }
  r->status = 404;
  r->body = sl__strdup("not found: try /metrics or /healthz\n");
}

/* ---- Public reading API -----------------------------------------------------
 */

int sl_job_metrics_foreach(sl_job_t *job, sl_metric_fn fn, void *opaque) {
  if (!job || !fn || !job->metrics)
    return SL_ERR_INVAL;
  return sl__metrics_visit(job->metrics->reg, fn, opaque);
}

int sl_job_metric_value(sl_job_t *job, const char *name, const char *labels,
                        double *value) {
  if (!job || !job->metrics)
    return SL_ERR_INVAL;
  return sl__metrics_value(job->metrics->reg, name, labels, value);
}

int sl_job_metrics_format(sl_job_t *job, sl_metrics_format fmt, char **out,
                          size_t *len) {
  if (!job || !job->metrics || !out)
    return SL_ERR_INVAL;
  return sl__metrics_render(job->metrics->reg, fmt, job->name,
                            sl_clock_now(job->clock), out, len);
}

int sl_job_metrics_port(const sl_job_t *job) {
  if (!job || !job->metrics)
    return SL_ERR_STATE;
  int port = atomic_load(&job->metrics->port);
  return port ? port : SL_ERR_STATE;
}

int sl_job_set_metrics_log(sl_job_t *job, sl_metrics_log_fn fn, void *opaque) {
  if (!job || !job->metrics)
    return SL_ERR_INVAL;
  if (atomic_load(&job->phase) != SL__JOB_NEW)
    return SL_ERR_STATE;
  job->metrics->log_fn = fn;
  job->metrics->log_opaque = opaque;
  return SL_OK;
}

/* ---- Checkpoint coordinator --------------------------------------------- */

void sl__metrics_checkpoint_enable(sl_job_t *job) {
  sl__jmetrics *jm = job ? job->metrics : NULL;
  if (!jm || atomic_exchange(&jm->ckpt_enabled, 1))
    return;
  sl__mseries **s[7] = {&jm->ck_done, &jm->ck_failed, &jm->ck_dur, &jm->ck_size,
                        &jm->ck_ts,   &jm->ck_age,    &jm->ck_id};
  for (int i = 0; i < 7; i++)
    *s[i] = sl__mfamily_series(jm->f_ck[i], NULL);
  jm->ck_hist = sl__mfamily_series(jm->f_ck_hist, NULL);
  sl__mseries_set_fn(jm->ck_age, ckpt_age_fn, jm);
  /* Before the first completion, "last" has no value yet. */
  sl__mseries_set(jm->ck_dur, NAN);
  sl__mseries_set(jm->ck_size, NAN);
  sl__mseries_set(jm->ck_ts, NAN);
  sl__mseries_set(jm->ck_id, NAN);
}

void sl__metrics_checkpoint_done(sl_job_t *job, int64_t id, int64_t duration_ms,
                                 uint64_t bytes) {
  sl__jmetrics *jm = job ? job->metrics : NULL;
  if (!jm)
    return;
  sl__metrics_checkpoint_enable(job);
  int64_t now = sl_clock_now(job->clock);
  sl__mseries_inc(jm->ck_done, 1);
  sl__mseries_set(jm->ck_dur, (double)duration_ms / 1000.0);
  sl__mseries_observe(jm->ck_hist, (double)duration_ms / 1000.0);
  sl__mseries_set(jm->ck_size, (double)bytes);
  sl__mseries_set(jm->ck_ts, (double)now / 1000.0);
  sl__mseries_set(jm->ck_id, (double)id);
  atomic_store(&jm->ckpt_done_ms, now);
}

void sl__metrics_checkpoint_failed(sl_job_t *job) {
  sl__jmetrics *jm = job ? job->metrics : NULL;
  if (!jm)
    return;
  sl__metrics_checkpoint_enable(job);
  sl__mseries_inc(jm->ck_failed, 1);
}

void sl__metrics_job_restarts(sl_job_t *job, uint64_t restarts) {
  sl__jmetrics *jm = job ? job->metrics : NULL;
  if (!jm)
    return;
  uint64_t cur = (uint64_t)sl__mseries_value(jm->restarts);
  if (restarts > cur)
    sl__mseries_inc(jm->restarts, restarts - cur);
}

/* ---- Kafka ------------------------------------------------------------------
 */

sl__kafka_pmetrics *sl__metrics_kafka_partition(sl_job_t *job,
                                                const char *source_uid,
                                                const char *topic,
                                                int32_t partition) {
  sl__jmetrics *jm = job ? job->metrics : NULL;
  if (!jm)
    return NULL;
  char part[16];
  snprintf(part, sizeof(part), "%" PRId32, partition);
  const char *lv[3] = {source_uid, topic, part};
  sl__kafka_pmetrics *p = calloc(1, sizeof(*p));
  if (!p)
    return NULL;
  atomic_init(&p->off_v, -1);
  atomic_init(&p->hw_v, -1);
  p->offset = sl__mfamily_series(jm->f_offset, lv);
  p->hw = sl__mfamily_series(jm->f_hw, lv);
  p->lag = sl__mfamily_series(jm->f_lag, lv);
  if (!p->offset || !p->hw || !p->lag) {
    sl__metrics_kafka_partition_remove(p);
    return NULL;
  }
  /* Unknown until the first update. */
  sl__mseries_set(p->offset, NAN);
  sl__mseries_set(p->hw, NAN);
  sl__mseries_set(p->lag, NAN);
  return p;
}

void sl__metrics_kafka_partition_update(sl__kafka_pmetrics *p, int64_t offset,
                                        int64_t high_watermark) {
  if (!p)
    return;
  if (offset >= 0) {
    atomic_store(&p->off_v, offset);
    sl__mseries_set(p->offset, (double)offset);
  }
  if (high_watermark >= 0) {
    atomic_store(&p->hw_v, high_watermark);
    sl__mseries_set(p->hw, (double)high_watermark);
  }
  int64_t o = atomic_load(&p->off_v), h = atomic_load(&p->hw_v);
  if (o >= 0 && h >= 0)
    sl__mseries_set(p->lag, h > o ? (double)(h - o) : 0.0);
}

void sl__metrics_kafka_partition_remove(sl__kafka_pmetrics *p) {
  if (!p)
    return;
  sl__mseries_remove(p->offset);
  sl__mseries_remove(p->hw);
  sl__mseries_remove(p->lag);
  free(p);
}

sl__mseries *sl__metrics_dead_letter_series(sl_job_t *job, const char *uid,
                                            const char *reason) {
  sl__jmetrics *jm = job ? job->metrics : NULL;
  if (!jm)
    return NULL;
  const char *lv[2] = {uid, reason};
  return sl__mfamily_series(jm->f_dlq, lv);
}

void sl__metrics_dead_letter(sl_job_t *job, const char *uid, const char *reason,
                             uint64_t n) {
  sl__mseries_inc(sl__metrics_dead_letter_series(job, uid, reason), n);
}
