/* SPDX-License-Identifier: Apache-2.0 */
/* User metrics (sluice/metrics.h): counters, gauges and histograms an
 * operator registers through its context. Each series belongs to one
 * operator instance and is written by that instance's worker thread only,
 * with relaxed loads and stores (no read-modify-write, so no lock prefix
 * and no cache line shared between workers); the metrics layer reads them
 * at scrape time (sl__stats_user_series). Registration takes the job's
 * stat_lock; it happens in open, never on the per-record path. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"
#include "runtime/stats.h"
#include "sluice/metrics.h"

#define MAX_BOUNDS 64

/* One family: what every instance registering the name shares. */
typedef struct ufam {
  struct ufam *next;
  sl__ufamily f;
  char *name, *help;
  double *bounds;
} ufam;

/* One series: a metric of one instance. */
struct sl_metric {
  struct sl_metric *next_in_job;
  ufam *fam;
  const sl_ctx_t *op;
  /* Counter: the count. Gauge: the bits of a double. */
  _Atomic uint64_t v;
  /* Histograms: per-bucket counts (the last above every bound), and the
   * bits of the sum. */
  _Atomic uint64_t *buckets;
  _Atomic uint64_t sum;
};

/* The job's families and series, in registration order. */
struct sl__umetric {
  ufam *fams, **fams_tail;
  sl_metric_t *series, **series_tail;
};

static struct sl__umetric *um_of(sl_job_t *job) {
  if (!job->umetrics) {
    struct sl__umetric *u = calloc(1, sizeof(*u));
    if (!u)
      return NULL;
    u->fams_tail = &u->fams;
    u->series_tail = &u->series;
    job->umetrics = u;
  }
  return job->umetrics;
}

static uint64_t dbits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof(u));
  return u;
}
static double bitsd(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof(d));
  return d;
}

static bool valid_name(const char *s) {
  if (!s || !*s)
    return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 c == ':';
    if (!alpha && (p == s || c < '0' || c > '9'))
      return false;
  }
  return true;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

static const char *type_name(int type) {
  return type == SL_METRIC_COUNTER ? "counter"
         : type == SL_METRIC_GAUGE ? "gauge"
                                   : "histogram";
}

/* Why (name, type, bounds) cannot be registered, or NULL. */
static const char *check(const char *name, int type, const double *bounds,
                         size_t n_bounds) {
  if (!valid_name(name))
    return "not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)";
  if (strncmp(name, "sluice_", 7) == 0)
    return "the prefix sluice_ is reserved for the library's metrics";
  if (type == SL_METRIC_COUNTER && !ends_with(name, "_total"))
    return "a counter's name ends in _total";
  if (type != SL_METRIC_COUNTER && ends_with(name, "_total"))
    return "only a counter's name ends in _total";
  if (type == SL_METRIC_HISTOGRAM) {
    if (n_bounds > MAX_BOUNDS || (n_bounds && !bounds))
      return "a histogram has at most 64 bucket bounds";
    for (size_t i = 0; i < n_bounds; i++)
      if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1]))
        return "bucket bounds must be finite and strictly increasing";
  }
  return NULL;
}

static ufam *fam_find(struct sl__umetric *u, const char *name) {
  for (ufam *f = u->fams; f; f = f->next)
    if (strcmp(f->name, name) == 0)
      return f;
  return NULL;
}

static ufam *fam_new(struct sl__umetric *u, const char *name, const char *help,
                     int type, const double *bounds, size_t n_bounds) {
  ufam *f = calloc(1, sizeof(*f));
  if (!f || !(f->name = strdup(name)) ||
      !(f->help = strdup(help ? help : "")) ||
      (n_bounds && !(f->bounds = malloc(n_bounds * sizeof(double))))) {
    if (f) {
      free(f->name);
      free(f->help);
    }
    free(f);
    return NULL;
  }
  if (n_bounds)
    memcpy(f->bounds, bounds, n_bounds * sizeof(double));
  f->f = (sl__ufamily){f->name, f->help, type, f->bounds,
                       type == SL_METRIC_HISTOGRAM ? n_bounds : 0};
  *u->fams_tail = f;
  u->fams_tail = &f->next;
  return f;
}

static bool same_layout(const ufam *f, int type, const double *bounds,
                        size_t n_bounds) {
  if (f->f.type != type)
    return false;
  if (type != SL_METRIC_HISTOGRAM)
    return true;
  return f->f.n_bounds == n_bounds &&
         (n_bounds == 0 ||
          memcmp(f->f.bounds, bounds, n_bounds * sizeof(double)) == 0);
}

static sl_metric_t *reg(sl_ctx_t *op, const char *name, const char *help,
                        int type, const double *bounds, size_t n_bounds) {
  if (!op)
    return NULL;
  const char *why = check(name, type, bounds, n_bounds);
  if (why) {
    sl_op_fail(op, SL_ERR_INVAL, "metric \"%s\": %s", name ? name : "", why);
    return NULL;
  }
  sl_job_t *job = op->w->job;
  sl_metric_t *m = NULL;
  char msg[160] = "";
  int err = SL_ERR_NOMEM;
  pthread_mutex_lock(&job->stat_lock);
  struct sl__umetric *u = um_of(job);
  ufam *f = u ? fam_find(u, name) : NULL;
  if (f && !same_layout(f, type, bounds, n_bounds)) {
    err = SL_ERR_INVAL;
    snprintf(msg, sizeof(msg),
             "registered before as a %s%s: one name has one type and one "
             "bucket layout",
             type_name(f->f.type),
             f->f.type == type ? " with other buckets" : "");
    goto out;
  }
  if (u && !f)
    f = fam_new(u, name, help, type, bounds, n_bounds);
  if (!f)
    goto out;
  for (sl_metric_t *s = u->series; s; s = s->next_in_job)
    if (s->fam == f && s->op == op) {
      m = s;
      goto out;
    }
  if (!(m = calloc(1, sizeof(*m))) ||
      (type == SL_METRIC_HISTOGRAM &&
       !(m->buckets = calloc(n_bounds + 1, sizeof(*m->buckets))))) {
    free(m);
    m = NULL;
    goto out;
  }
  m->fam = f;
  m->op = op;
  if (type == SL_METRIC_GAUGE)
    atomic_init(&m->v, dbits(0.0));
  *u->series_tail = m;
  u->series_tail = &m->next_in_job;
out:
  pthread_mutex_unlock(&job->stat_lock);
  if (!m)
    sl_op_fail(op, err, "metric \"%s\": %s", name,
               *msg ? msg : "out of memory");
  return m;
}

sl_metric_t *sl_ctx_counter(sl_ctx_t *ctx, const char *name, const char *help) {
  return reg(ctx, name, help, SL_METRIC_COUNTER, NULL, 0);
}

sl_metric_t *sl_ctx_gauge(sl_ctx_t *ctx, const char *name, const char *help) {
  return reg(ctx, name, help, SL_METRIC_GAUGE, NULL, 0);
}

sl_metric_t *sl_ctx_histogram(sl_ctx_t *ctx, const char *name, const char *help,
                              const double *bounds, size_t n_bounds) {
  return reg(ctx, name, help, SL_METRIC_HISTOGRAM, bounds, n_bounds);
}

/* Single writer: a relaxed load and store, not an atomic add. */
static inline void bump(_Atomic uint64_t *a, uint64_t n) {
  atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

void sl_metric_inc(sl_metric_t *m, uint64_t n) {
  if (m && m->fam->f.type == SL_METRIC_COUNTER)
    bump(&m->v, n);
}

void sl_metric_set(sl_metric_t *m, double v) {
  if (m && m->fam->f.type == SL_METRIC_GAUGE)
    atomic_store_explicit(&m->v, dbits(v), memory_order_relaxed);
}

void sl_metric_add(sl_metric_t *m, double delta) {
  if (m && m->fam->f.type == SL_METRIC_GAUGE)
    sl_metric_set(m, bitsd(atomic_load_explicit(&m->v, memory_order_relaxed)) +
                         delta);
}

void sl_metric_observe(sl_metric_t *m, double v) {
  if (!m || m->fam->f.type != SL_METRIC_HISTOGRAM)
    return;
  const double *b = m->fam->f.bounds;
  size_t n = m->fam->f.n_bounds, i = 0;
  while (i < n && v > b[i])
    i++;
  bump(&m->buckets[i], 1);
  atomic_store_explicit(
      &m->sum,
      dbits(bitsd(atomic_load_explicit(&m->sum, memory_order_relaxed)) + v),
      memory_order_relaxed);
}

/* ---- Readers ------------------------------------------------------------- */

void sl__stats_user_families(sl_job_t *job,
                             void (*fn)(const sl__ufamily *f, void *opaque),
                             void *opaque) {
  pthread_mutex_lock(&job->stat_lock);
  for (ufam *f = job->umetrics ? job->umetrics->fams : NULL; f; f = f->next)
    fn(&f->f, opaque);
  pthread_mutex_unlock(&job->stat_lock);
}

void sl__stats_user_series(sl_job_t *job, const char *name, sl__stat_out *o) {
  pthread_mutex_lock(&job->stat_lock);
  for (sl_metric_t *m = job->umetrics ? job->umetrics->series : NULL; m;
       m = m->next_in_job) {
    const sl__ufamily *f = &m->fam->f;
    if (strcmp(f->name, name) != 0)
      continue;
    char worker[16];
    snprintf(worker, sizeof(worker), "%d", m->op->w->index);
    const char *lv[2] = {sl_op_uid(m->op), worker};
    if (f->type == SL_METRIC_HISTOGRAM) {
      uint64_t b[MAX_BOUNDS + 1];
      for (size_t i = 0; i <= f->n_bounds; i++)
        b[i] = atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
      o->histogram(o, lv, f->bounds, f->n_bounds, b,
                   bitsd(atomic_load_explicit(&m->sum, memory_order_relaxed)));
    } else {
      uint64_t v = atomic_load_explicit(&m->v, memory_order_relaxed);
      o->value(o, lv, f->type == SL_METRIC_COUNTER ? (double)v : bitsd(v));
    }
  }
  pthread_mutex_unlock(&job->stat_lock);
}

void sl__umetrics_free(sl_job_t *job) {
  struct sl__umetric *u = job->umetrics;
  if (!u)
    return;
  for (sl_metric_t *m = u->series, *n; m; m = n) {
    n = m->next_in_job;
    free(m->buckets);
    free(m);
  }
  for (ufam *f = u->fams, *n; f; f = n) {
    n = f->next;
    free(f->name);
    free(f->help);
    free(f->bounds);
    free(f);
  }
  free(u);
  job->umetrics = NULL;
}
