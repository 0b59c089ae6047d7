/* SPDX-License-Identifier: Apache-2.0 */
/* Internal metrics API: a registry of metric families (counters, gauges,
 * histograms, with labels) and the job metrics service of a job. Every
 * figure is pulled: the runtime's counters, the coordinator's checkpoint
 * figures, what the Kafka source and sink report through the runtime's
 * reporters (runtime/stats.h) and the user metrics of operators. See
 * docs/monitoring/README.md ("Adding metrics to a module"). */
#ifndef SL_METRICS_METRICS_H
#define SL_METRICS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/job.h"
#include "sluice/metrics.h"

#include "core/service.h"

typedef struct sl__metrics sl__metrics;
typedef struct sl__mfamily sl__mfamily;
typedef struct sl__mseries sl__mseries;
typedef struct sl__mcollect sl__mcollect;

/* ---- Registry ------------------------------------------------------------
 * Registration and scraping take the registry's lock; updating a series
 * (inc, set, observe) is lock-free (relaxed atomics) and may be done from
 * any thread. A series pointer stays valid until sl__mseries_remove() or
 * sl__metrics_free(). */

/* A registry with no families; NULL when out of memory. */
sl__metrics *sl__metrics_new(void);
/* Frees every family and series. NULL is a no-op. */
void sl__metrics_free(sl__metrics *m);

/* Registers the family `name` (or returns the one already registered with
 * the same type and label names). labels is a comma-separated list of label
 * names ("operator,worker"), or NULL/"" for none. Names follow Prometheus:
 * [a-zA-Z_:][a-zA-Z0-9_:]*, counters end in "_total", label names do not
 * start with "__" and "le" is reserved for histograms. For histograms,
 * bounds[0..n_bounds) are the finite bucket upper bounds, strictly
 * increasing (+Inf is implied). Returns NULL with a message in err on a bad
 * name, a clash with an existing family, or out of memory. */
sl__mfamily *sl__metrics_family(sl__metrics *m, sl_metric_type type,
                                const char *name, const char *help,
                                const char *labels, const double *bounds,
                                size_t n_bounds, char *err, size_t errlen);

/* The series of fam with these label values (one per label name, in the
 * family's order; NULL for a family without labels), created at zero on
 * first use. NULL when out of memory or when fam has a collector. */
sl__mseries *sl__mfamily_series(sl__mfamily *fam,
                                const char *const *label_values);
/* Unregisters a series (e.g. a Kafka partition that was revoked). The
 * caller must not use s afterwards. NULL is a no-op. */
void sl__mseries_remove(sl__mseries *s);

/* Counters: adds n (any thread). For a per-record count on one thread,
 * keep an sl__counter in your own structure and report it with a collector
 * instead: that costs nothing per record. */
void sl__mseries_inc(sl__mseries *s, uint64_t n);
/* Gauges: sets / adds to the value (any thread). */
void sl__mseries_set(sl__mseries *s, double v);
void sl__mseries_add(sl__mseries *s, double delta);
/* Gauges: reads the value from fn(opaque) at scrape time instead (a
 * callback-driven gauge). fn runs on the scraping thread with the registry
 * locked: it must be thread-safe and must not touch the registry. */
void sl__mseries_set_fn(sl__mseries *s, double (*fn)(void *opaque),
                        void *opaque);
/* Histograms: counts one observation. */
void sl__mseries_observe(sl__mseries *s, double v);
/* Current value (counter, gauge) or sum (histogram): for tests. */
double sl__mseries_value(const sl__mseries *s);

/* A collector produces the whole series set of a family at scrape time,
 * from numbers the module keeps itself (the runtime's per-operator
 * counters are reported this way). collect runs on the scraping thread
 * with the registry locked; it calls sl__mcollect_value() once per series
 * (sl__mcollect_histogram() for a histogram family)
 * and must not touch the registry. A family has either a collector or
 * series of its own. Returns SL_OK, or SL_ERR_INVAL when fam already has
 * series or a collector. */
typedef void (*sl__mcollect_fn)(sl__mcollect *c, void *opaque);
int sl__mfamily_set_collector(sl__mfamily *fam, sl__mcollect_fn collect,
                              void *opaque);
/* The name of the family being collected. */
const char *sl__mcollect_family(const sl__mcollect *c);
/* Reports one counter or gauge series (label values in the family's
 * order). NaN values are skipped. */
void sl__mcollect_value(sl__mcollect *c, const char *const *label_values,
                        double v);
/* Reports one histogram series: buckets[0..n_bounds] per-bucket counts.
 * Skipped unless bounds are the family's. */
void sl__mcollect_histogram(sl__mcollect *c, const char *const *label_values,
                            const double *bounds, size_t n_bounds,
                            const uint64_t *buckets, double sum);

/* A label every sample carries, before its own (the process's
 * instance): name must not be a label of any family. SL_OK or
 * SL_ERR_NOMEM. */
int sl__metrics_const_label(sl__metrics *m, const char *name,
                            const char *value);

/* Calls fn once per sample, families in registration order and the series
 * of a family in creation (or collection) order. Stops at fn's first
 * non-zero return and returns it. */
int sl__metrics_visit(sl__metrics *m, sl_metric_fn fn, void *opaque);

/* Calls fn(name, type, opaque) for every registered family, series or
 * not: the names the registry can produce (histograms also produce
 * name_bucket, name_sum and name_count). */
int sl__metrics_families(sl__metrics *m,
                         int (*fn)(const char *name, sl_metric_type type,
                                   void *opaque),
                         void *opaque);

/* Renders every sample as the Prometheus text exposition format 0.0.4 or
 * as one JSON object (see sl_job_metrics_format()) into a malloc'ed,
 * NUL-terminated buffer. job_name and now_ms are used by JSON only. */
int sl__metrics_render(sl__metrics *m, sl_metrics_format fmt,
                       const char *job_name, int64_t now_ms, char **out,
                       size_t *len);

/* Sum over the series of name whose labels include every "k=v" pair of
 * labels (see sl_job_metric_value()). */
int sl__metrics_value(sl__metrics *m, const char *name, const char *labels,
                      double *value);

/* ---- The job's metrics (sl_job_new's assembly) --------------------------- */

/* sl_job_new: reads the metrics.* and health.* settings (a malformed
 * metrics.listen fails here, with a message in err) and registers the
 * built-in families. Returns SL_OK or SL_ERR_CONF / SL_ERR_NOMEM. */
int sl__metrics_job_new(sl_job_t *job, char *err, size_t errlen);
/* The metrics of a job as a service of its runtime (core/service.h;
 * svc = job->metrics): start opens the HTTP endpoint when configured,
 * tick writes the JSON log line when due and pulls the coordinator's
 * checkpoint figures, stop writes a last line (the endpoint keeps serving
 * until the job is destroyed), destroy stops it and frees the registry. */
extern const sl__service_ops sl__metrics_service;
/* The job's registry, for modules that register their own metrics. */
sl__metrics *sl__metrics_of(sl_job_t *job);

#endif
