/* SPDX-License-Identifier: Apache-2.0 */
/* Runs one Nexmark query as a job: the generator as a parallel source
 * (worker w makes events w, w+P, ...), bounded out-of-orderness
 * watermarks, the query, and the caller's sink. Shared by the benchmark
 * driver and the correctness tests. */
#include <pthread.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_driver.h"
#include "nx_kafka.h"

void nx_run_opts_default(nx_run_opts *o) {
  memset(o, 0, sizeof(*o));
  nx_config_default(&o->gen);
  nx_query_conf_default(&o->qc);
  o->events = 10000000;
  o->parallelism = 1;
  o->backend = "hashmap";
  o->watermark_bound_ms = 4000;
}

typedef struct nx_src {
  const nx_run_opts *o;
  sl_job_t *job;
  uint64_t next[256];
} nx_src;

static int src_open(sl_source_ctx_t *ctx, void *opaque) {
  nx_src *s = opaque;
  int sub = sl_source_ctx_subtask(ctx);
  if (sub >= 256)
    return sl_source_fail(ctx, SL_ERR_INVAL, "at most 256 source subtasks");
  s->next[sub] = (uint64_t)sub;
  return 0;
}

static int src_poll(sl_source_ctx_t *ctx, void *opaque) {
  nx_src *s = opaque;
  const nx_run_opts *o = s->o;
  int sub = sl_source_ctx_subtask(ctx);
  uint64_t *next = &s->next[sub];
  uint64_t step = (uint64_t)sl_source_ctx_subtasks(ctx);
  size_t budget = sl_source_ctx_budget(ctx);
  nx_event e;
  for (size_t k = 0; k < budget && *next < o->events; k++, *next += step) {
    if (o->hold && o->hold(s->job, sub, *next, o->hold_opaque))
      return SL_POLL_EMPTY;
    nx_generate(&o->gen, *next, &e);
    sl_record_t r = {NULL, 0, &e, nx_event_size(&e), e.u.bid.date_time};
    if (e.type == NX_PERSON)
      r.ts = e.u.person.date_time;
    else if (e.type == NX_AUCTION)
      r.ts = e.u.auction.date_time;
    int rc = sl_source_emit(ctx, &r);
    if (rc)
      return rc;
  }
  if (*next < o->events)
    return SL_POLL_MORE;
  /* The end: the hook may hold the source open (q12's test waits for
   * processing-time windows to fire). */
  if (o->hold && o->hold(s->job, sub, o->events, o->hold_opaque))
    return SL_POLL_EMPTY;
  return SL_POLL_END;
}

sl_stream_t *nx_events_source(sl_job_t *job, const nx_run_opts *o,
                              void **state) {
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED,
                            .bound_ms = o->watermark_bound_ms};
  if (o->kafka_bootstrap) {
    *state = NULL;
    /* Bounded: what the topic holds when the run starts. */
    sl_kafka_source_opts_t ko = {.start = SL_KAFKA_START_EARLIEST,
                                 .stop = SL_KAFKA_STOP_LATEST,
                                 .decode = nx_kafka_decode};
    return sl_with_watermarks(
        sl_source_kafka(job, "nexmark.events", o->kafka_topic, &ko), &wm);
  }
  nx_src *s = calloc(1, sizeof(*s));
  *state = s;
  if (!s)
    return NULL;
  s->o = o;
  s->job = job;
  sl_source_ops_t ops = {.open = src_open, .poll = src_poll, .parallel = true};
  return sl_with_watermarks(sl_source(job, "nexmark.events", &ops, s), &wm);
}

sl_job_t *nx_job_new(const nx_run_opts *o, char *err, size_t errlen) {
  char p[16];
  sl_conf_t *c = sl_conf_new();
  snprintf(p, sizeof(p), "%d", o->parallelism);
  if (!c || sl_conf_set(c, "parallelism", p, err, errlen) ||
      sl_conf_set(c, "state.backend", o->backend, err, errlen) ||
      (o->state_dir &&
       sl_conf_set(c, "state.dir", o->state_dir, err, errlen)) ||
      (o->kafka_bootstrap &&
       (sl_conf_set(c, "kafka.bootstrap.servers", o->kafka_bootstrap, err,
                    errlen) ||
        sl_conf_set(c, "kafka.log_level", "2", err, errlen)))) {
    sl_conf_destroy(c);
    return NULL;
  }
  char name[64];
  snprintf(name, sizeof(name), "nexmark-%s", o->query->name);
  sl_job_t *job = sl_job_new(name, c, err, errlen);
  if (!job)
    sl_conf_destroy(c);
  else if (o->clock)
    sl_job_set_clock(job, o->clock);
  return job;
}

/* The bounded Kafka source ends by itself once every partition is read
 * up to where it ended when the run started; the maximum watermark then
 * fires every event-time window and timer, as at the end of an
 * in-process input. A watchdog stops a run that takes longer than
 * kafka_timeout_s (which then fails). */
typedef struct watchdog {
  sl_job_t *job;
  int timeout_s;
  atomic_bool done;
  bool fired;
} watchdog;

static void *watch(void *arg) {
  watchdog *w = arg;
  struct timespec t0, now, tick = {0, 2 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (!atomic_load(&w->done)) {
    nanosleep(&tick, NULL);
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec > w->timeout_s) {
      w->fired = true;
      sl_job_stop(w->job);
      break;
    }
  }
  return NULL;
}

/* Runs the job; from Kafka, to the end and with every event read. */
static int run_job(sl_job_t *job, const nx_run_opts *o, char *err,
                   size_t errlen) {
  if (!o->kafka_bootstrap)
    return sl_job_run(job);
  watchdog w = {.job = job,
                .timeout_s = o->kafka_timeout_s ? o->kafka_timeout_s : 600};
  pthread_t t;
  if (pthread_create(&t, NULL, watch, &w))
    return SL_ERR_NOMEM;
  int rc = sl_job_run(job);
  atomic_store(&w.done, true);
  pthread_join(t, NULL);
  if (rc)
    return rc;
  sl_op_stats_t st = {0};
  sl_job_op_stats(job, "nexmark.events", &st);
  if (w.fired || st.records_out != o->events) {
    snprintf(err, errlen, "read %" PRIu64 " of %" PRIu64 " events from %s%s",
             st.records_out, o->events, o->kafka_topic,
             w.fired ? ", and the end was not reached in time" : "");
    return SL_ERR_KAFKA;
  }
  return SL_OK;
}

int nx_run(const nx_run_opts *o, char *err, size_t errlen) {
  err[0] = '\0';
  sl_job_t *job = nx_job_new(o, err, errlen);
  if (!job)
    return SL_ERR_CONF;
  void *st = NULL;
  sl_stream_t *ev = nx_events_source(job, o, &st);
  sl_stream_t *out = ev ? o->query->build(ev, &o->qc) : NULL;
  /* A graph error (out == NULL) is recorded in the job; run reports it. */
  int rc = out ? sl_sink(out, "nexmark.sink", o->sink, o->sink_opaque) : 0;
  if (!rc)
    rc = run_job(job, o, err, errlen);
  if (rc && !err[0])
    snprintf(err, errlen, "%s: %s", sl_strerror(rc), sl_job_errmsg(job));
  sl_job_destroy(job);
  free(st);
  return rc;
}
