/* SPDX-License-Identifier: Apache-2.0 */
/* What the metrics layer reads from a running job, from any thread: the
 * per-instance counters and watermarks, state and timer sizes that each
 * worker publishes about once a second, exchange channel fill, and the
 * job's phase. Nothing here runs on the per-record path. */
#ifndef SL_RUNTIME_STATS_H
#define SL_RUNTIME_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/job.h"

struct sl__worker;

/* One operator instance (one node on one worker). */
typedef struct sl__op_stat {
  const char *uid;
  const char *kind; /* "source", "map", "process", "sink", ... */
  int worker;
  uint64_t in, out, errors, late;
  int64_t wm; /* combined input watermark; sources: last emitted */
  /* Keyed operators (state and timers below are set), as last published
   * by the worker. */
  bool keyed;
  uint64_t state_entries, state_bytes;
  uint64_t timers_event, timers_proc;
} sl__op_stat;

/* One key_by channel from worker `from` to worker `to`. */
typedef struct sl__chan_stat {
  const char *from_op; /* uid of the operator feeding the key_by */
  const char *to_op;   /* uid of the first operator reading it */
  int from, to;
  uint32_t queued, capacity; /* batches */
  uint64_t full_ns;          /* the producer waited for room (backpressure) */
} sl__chan_stat;

/* Calls fn for every operator instance (nodes with a uid; key_by halves
 * are reported as channels), in node then worker order; nothing before the
 * plan exists. Stops at fn's first non-zero return and returns it. */
int sl__stats_ops(sl_job_t *job, int (*fn)(const sl__op_stat *, void *),
                  void *opaque);
int sl__stats_channels(sl_job_t *job, int (*fn)(const sl__chan_stat *, void *),
                       void *opaque);

typedef struct sl__job_stat {
  const char *name;
  int parallelism;
  bool planned; /* sl_job_run() built the plan */
  int opened;   /* workers that opened their operators and run */
  bool running; /* sl_job_run() has not returned */
  bool failed;
  int64_t now_ms; /* the job clock (processing time) */
} sl__job_stat;

/* The job's phase. errmsg (may be NULL) receives sl_job_errmsg(). */
void sl__stats_job(sl_job_t *job, sl__job_stat *out, char *errmsg,
                   size_t errlen);

/* sl_job_run(): the plan is built, readers may walk it. */
void sl__stats_planned(sl_job_t *job);
/* Whether sl__stats_planned() was called (acquire): only then may another
 * thread read job->workers and their instances. */
bool sl__stats_is_planned(sl_job_t *job);

/* ---- Worker side ---------------------------------------------------------
 * Called by the worker thread only. */

/* The worker opened every instance and enters its loop: counts it as
 * ready and publishes a first set of sizes. */
void sl__stats_worker_opened(struct sl__worker *w);
/* Publishes the state and timer sizes of every keyed instance of w. */
void sl__stats_publish(struct sl__worker *w);
/* Once per loop round: publishes when a second has passed since the last
 * time (checked every 64 rounds, so a round costs an increment). */
void sl__stats_tick_slow(struct sl__worker *w);
#define SL__STATS_TICK(w)                                                      \
  do {                                                                         \
    if (SL__UNLIKELY((++(w)->pub_rounds & 63) == 0))                           \
      sl__stats_tick_slow(w);                                                  \
  } while (0)

/* ---- Figures of modules beside metrics ------------------------------------
 * A module of the metrics layer's own level (the Kafka source, sink and
 * dead-letter queue) keeps its figures itself and registers a reporter;
 * the metrics layer calls every reporter at scrape time, asking for one
 * family at a time. Neither module calls the other. */
typedef struct sl__stat_out sl__stat_out;
struct sl__stat_out {
  const char *family; /* the family asked for: report only its series */
  /* One counter or gauge series (label values in the family's order). */
  void (*value)(sl__stat_out *o, const char *const *label_values, double v);
  /* One histogram series: buckets[0..n_bounds] are per-bucket (not
   * cumulative) counts, the last one above every bound. */
  void (*histogram)(sl__stat_out *o, const char *const *label_values,
                    const double *bounds, size_t n_bounds,
                    const uint64_t *buckets, double sum);
  void *opaque;
};
/* fn runs on the scraping thread under the job's stat_lock (it must not
 * add reporters or user metrics) and takes its own locks as it needs. */
typedef void (*sl__stat_reporter)(sl__stat_out *o, void *opaque);
/* Registers a reporter for the life of the job (graph-build time).
 * SL_OK or SL_ERR_NOMEM. */
int sl__stats_add_reporter(sl_job_t *job, sl__stat_reporter fn, void *opaque);
/* Asks every reporter for o->family. */
void sl__stats_report(sl_job_t *job, sl__stat_out *o);

/* ---- User metrics (umetrics.c) --------------------------------------------
 * Registered by operators in open (sl_ctx_counter and the like): one
 * family per name, one series per operator instance. */
typedef struct sl__ufamily {
  const char *name, *help;
  int type; /* sl_metric_type */
  const double *bounds;
  size_t n_bounds;
} sl__ufamily;
/* Calls fn for every user family registered so far, in registration
 * order. */
void sl__stats_user_families(sl_job_t *job,
                             void (*fn)(const sl__ufamily *f, void *opaque),
                             void *opaque);
/* Calls value (counters, gauges) or histogram for every instance's series
 * of family `name`, labelled operator and worker. */
void sl__stats_user_series(sl_job_t *job, const char *name, sl__stat_out *o);
/* Frees the job's user metrics (sl_job_destroy). */
void sl__umetrics_free(sl_job_t *job);

#endif
