/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/metrics.h — reading a job's metrics in-process (the same samples
 * the Prometheus endpoint at metrics.listen serves), its health (what
 * /healthz answers), and where the periodic JSON metrics line goes. The
 * metric names are listed in docs/monitoring/README.md. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/common.h"
#include "sluice/job.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sl_metric_type {
  SL_METRIC_COUNTER = 0, /* only goes up; name ends in _total */
  SL_METRIC_GAUGE,
  SL_METRIC_HISTOGRAM,
} sl_metric_type;

/* One series of a metric as it is at the moment of reading. All pointers
 * are valid during the callback only. */
typedef struct sl_metric_sample {
  const char *name; /* family name: "sluice_operator_records_in_total" */
  const char *help;
  sl_metric_type type;
  size_t n_labels;
  const char *const *label_names;
  const char *const *label_values;
  double value; /* counter or gauge; histogram: sum of the observations */
  /* Histograms only: the number of observations (the +Inf bucket), the
   * finite bucket upper bounds and the cumulative count of each. */
  uint64_t count;
  size_t n_buckets;
  const double *bucket_le;
  const uint64_t *bucket_counts;
} sl_metric_sample_t;

/* Return non-zero to stop the iteration (that value is returned). */
typedef int (*sl_metric_fn)(const sl_metric_sample_t *s, void *opaque);

/* Calls fn once per series of the job's metrics: families in a fixed
 * order, then their series. Values are read at the time of the call (the
 * runtime's counters lag by at most a few records; state sizes and timer
 * counts are published by each worker about once a second and when it
 * ends). Callable from any thread, before, during and after sl_job_run();
 * calls are serialized with the HTTP endpoint's. fn must not call back into
 * the job's metrics functions. Returns SL_OK, fn's non-zero value, or
 * SL_ERR_INVAL for a NULL job or fn. */
SL_API int sl_job_metrics_foreach(sl_job_t *job, sl_metric_fn fn, void *opaque);

/* Reads one metric: the sum over the series of `name` whose labels include
 * every "label=value" pair of the comma-separated `labels` (NULL or ""
 * matches every series), e.g.
 *   sl_job_metric_value(job, "sluice_operator_records_in_total",
 *                       "operator=count", &v)
 * sums the operator's workers. To read one gauge series, name all its
 * labels. For a histogram, *value is the observation count. Any thread.
 * Returns SL_OK, SL_ERR_NOTFOUND when no series matches, SL_ERR_INVAL for
 * NULL arguments or a malformed labels string. */
SL_API int sl_job_metric_value(sl_job_t *job, const char *name,
                               const char *labels, double *value);

typedef enum sl_metrics_format {
  SL_METRICS_PROMETHEUS = 0, /* text exposition format 0.0.4 (/metrics) */
  SL_METRICS_JSON,           /* the JSON log line: see docs/monitoring */
} sl_metrics_format;

/* Renders every metric into a new NUL-terminated buffer *out (free() it)
 * of *len bytes (len may be NULL). Any thread. Returns SL_OK, SL_ERR_INVAL
 * or SL_ERR_NOMEM. */
SL_API int sl_job_metrics_format(sl_job_t *job, sl_metrics_format fmt,
                                 char **out, size_t *len);

/* The TCP port the metrics endpoint listens on (useful with
 * metrics.listen = 127.0.0.1:0, which picks a free port), or SL_ERR_STATE
 * when it is not listening (metrics.listen = off, or before sl_job_run()
 * started it). Any thread. */
SL_API int sl_job_metrics_port(const sl_job_t *job);

/* What /healthz reports. */
typedef enum sl_health {
  SL_HEALTH_STARTING = 0, /* not running yet, or operators still opening
                             (restoring state): not ready */
  SL_HEALTH_READY,        /* every worker runs its operators and sources */
  SL_HEALTH_UNHEALTHY,    /* a task failed, or the last completed
                             checkpoint is older than
                             health.checkpoint.max.age.ms */
  SL_HEALTH_FINISHED,     /* sl_job_run() returned without an error */
  SL_HEALTH_REBALANCING,  /* group mode: a member of this process's
                             consumer group joins or lost partitions and
                             waits for its assignment (tasks move) */
} sl_health;

/* The job's health now, with a one-line human reason in reason (may be
 * NULL). Any thread. A NULL job is SL_HEALTH_STARTING. */
SL_API sl_health sl_job_health(sl_job_t *job, char *reason, size_t reasonlen);

/* Name of a health value: "starting", "ready", "unhealthy", "finished". */
SL_API const char *sl_health_name(sl_health h);

/* Receives each periodic JSON metrics line (metrics.log.interval.ms), as a
 * NUL-terminated line without the newline. Called on the job's metrics log
 * thread. */
typedef void (*sl_metrics_log_fn)(const char *line, void *opaque);

/* Sends the JSON lines to fn instead of stderr (the default). fn NULL
 * restores stderr. Only before sl_job_run(): SL_ERR_STATE after. */
SL_API int sl_job_set_metrics_log(sl_job_t *job, sl_metrics_log_fn fn,
                                  void *opaque);

/* ---- User metrics ----------------------------------------------------------
 * An operator registers its own metrics through its context, usually in
 * open (a process function's, a window function's, a source's through
 * sl_source_op()): counters, gauges and histograms, exported like the
 * built-in ones on /metrics, in the JSON line, by sl_job_metrics_foreach()
 * and sl_job_metric_value(), each series labelled operator (the uid) and
 * worker. Updating one costs a few plain stores on the operator's own
 * thread, no lock and no shared atomic: call the update functions only
 * from the callbacks of the instance that registered the metric. The
 * metrics layer reads the values when it is scraped.
 *
 * Names follow Prometheus ([a-zA-Z_:][a-zA-Z0-9_:]*); counters end in
 * "_total"; the prefix "sluice_" is the library's own. Every instance of
 * an operator registers the same names; one name has one type, help and
 * bucket layout across the job. Registering a name again on the same
 * instance returns the same metric. On a bad name or a clash the call
 * returns NULL and fails the job with a message (sl_job_errmsg()); the
 * update functions accept NULL and do nothing. */
typedef struct sl_metric sl_metric_t;

SL_API sl_metric_t *sl_ctx_counter(sl_ctx_t *ctx, const char *name,
                                   const char *help);
SL_API sl_metric_t *sl_ctx_gauge(sl_ctx_t *ctx, const char *name,
                                 const char *help);
/* bounds[0..n_bounds): the finite bucket upper bounds, strictly
 * increasing, at most 64 (+Inf is implied). */
SL_API sl_metric_t *sl_ctx_histogram(sl_ctx_t *ctx, const char *name,
                                     const char *help, const double *bounds,
                                     size_t n_bounds);

/* Counters: adds n. */
SL_API void sl_metric_inc(sl_metric_t *m, uint64_t n);
/* Gauges: sets the value, or adds delta to it. */
SL_API void sl_metric_set(sl_metric_t *m, double v);
SL_API void sl_metric_add(sl_metric_t *m, double delta);
/* Histograms: counts one observation of v. */
SL_API void sl_metric_observe(sl_metric_t *m, double v);

#ifdef __cplusplus
}
#endif
#endif
