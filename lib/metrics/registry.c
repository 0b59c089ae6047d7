/* SPDX-License-Identifier: Apache-2.0 */
/* The metrics registry: families with label names, their series (lock-free
 * atomic values), collector families whose series are produced at scrape
 * time, and the visit that turns all of it into samples. One mutex guards
 * the structure; values are updated without it. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "metrics/metrics.h"

#define MAX_LABELS 8

struct sl__mseries {
  sl__mseries *next;
  sl__mfamily *fam;
  char **values;
  /* Counter: the count. Gauge: the bits of a double. Histogram: unused. */
  _Atomic uint64_t v;
  double (*fn)(void *opaque); /* callback-driven gauge */
  void *fn_opaque;
  /* Histograms: per-bucket (not cumulative) counts, then +Inf. */
  _Atomic uint64_t *buckets;
  _Atomic uint64_t count;
  _Atomic uint64_t sum; /* bits of a double */
};

struct sl__mfamily {
  sl__mfamily *next;
  sl__metrics *m;
  char *name, *help;
  sl_metric_type type;
  size_t n_labels;
  char *labels[MAX_LABELS];
  double *bounds;
  size_t n_bounds;
  sl__mseries *series, **tail;
  sl__mcollect_fn collect;
  void *collect_opaque;
};

struct sl__metrics {
  pthread_mutex_t lock;
  sl__mfamily *fams, **tail;
  /* A label every sample carries first (sl__metrics_const_label). */
  char *cl_name, *cl_value;
};

struct sl__mcollect {
  sl__mfamily *fam;
  sl_metric_fn fn;
  void *opaque;
  int rc;
};

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

sl__metrics *sl__metrics_new(void) {
  sl__metrics *m = calloc(1, sizeof(*m));
  if (!m)
    return NULL;
  pthread_mutex_init(&m->lock, NULL);
  m->tail = &m->fams;
  return m;
}

static void series_free(sl__mseries *s) {
  if (!s)
    return;
  for (size_t i = 0; s->values && i < s->fam->n_labels; i++)
    free(s->values[i]);
  free(s->values);
  free(s->buckets);
  free(s);
}

static void family_free(sl__mfamily *f) {
  sl__mseries *s = f->series;
  while (s) {
    sl__mseries *n = s->next;
    series_free(s);
    s = n;
  }
  for (size_t i = 0; i < f->n_labels; i++)
    free(f->labels[i]);
  free(f->bounds);
  free(f->name);
  free(f->help);
  free(f);
}

void sl__metrics_free(sl__metrics *m) {
  if (!m)
    return;
  sl__mfamily *f = m->fams;
  while (f) {
    sl__mfamily *n = f->next;
    family_free(f);
    f = n;
  }
  free(m->cl_name);
  free(m->cl_value);
  pthread_mutex_destroy(&m->lock);
  free(m);
}

static bool valid_name(const char *s, bool label) {
  if (!s || !*s)
    return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    bool digit = c >= '0' && c <= '9';
    if (!(alpha || (p > s && digit) || (!label && c == ':')))
      return false;
  }
  return !(label && s[0] == '_' && s[1] == '_');
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Splits "a,b" into f->labels; returns false on a bad list. */
static bool parse_labels(sl__mfamily *f, const char *labels, char *err,
                         size_t errlen) {
  const char *p = labels ? labels : "";
  while (*p) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (f->n_labels == MAX_LABELS) {
      sl__errf(err, errlen, "metric %s: more than %d labels", f->name,
               MAX_LABELS);
      return false;
    }
    char *l = malloc(len + 1);
    if (!l) {
      sl__errf(err, errlen, "out of memory");
      return false;
    }
    memcpy(l, p, len);
    l[len] = '\0';
    f->labels[f->n_labels++] = l;
    if (!valid_name(l, true) ||
        (strcmp(l, "le") == 0 && f->type == SL_METRIC_HISTOGRAM)) {
      sl__errf(err, errlen, "metric %s: invalid label name \"%s\"", f->name, l);
      return false;
    }
    for (size_t i = 0; i + 1 < f->n_labels; i++) {
      if (strcmp(f->labels[i], l) == 0) {
        sl__errf(err, errlen, "metric %s: label \"%s\" given twice", f->name,
                 l);
        return false;
      }
    }
    p += len + (comma ? 1 : 0);
  }
  return true;
}

static bool same_shape(const sl__mfamily *a, const sl__mfamily *b) {
  if (a->type != b->type || a->n_labels != b->n_labels ||
      a->n_bounds != b->n_bounds)
    return false;
  for (size_t i = 0; i < a->n_labels; i++)
    if (strcmp(a->labels[i], b->labels[i]) != 0)
      return false;
  for (size_t i = 0; i < a->n_bounds; i++)
    if (a->bounds[i] != b->bounds[i])
      return false;
  return true;
}

/* The names a family's samples are exposed under. */
static bool names_clash(const sl__mfamily *f, const char *name) {
  if (strcmp(f->name, name) == 0)
    return true;
  if (f->type != SL_METRIC_HISTOGRAM)
    return false;
  static const char *const sfx[] = {"_bucket", "_sum", "_count"};
  size_t n = strlen(f->name);
  for (size_t i = 0; i < SL__ARRAY_LEN(sfx); i++)
    if (strncmp(name, f->name, n) == 0 && strcmp(name + n, sfx[i]) == 0)
      return true;
  return false;
}

sl__mfamily *sl__metrics_family(sl__metrics *m, sl_metric_type type,
                                const char *name, const char *help,
                                const char *labels, const double *bounds,
                                size_t n_bounds, char *err, size_t errlen) {
  if (!m || !valid_name(name, false)) {
    sl__errf(err, errlen, "invalid metric name \"%s\"", name ? name : "");
    return NULL;
  }
  if ((type == SL_METRIC_COUNTER) != ends_with(name, "_total")) {
    sl__errf(err, errlen,
             "metric %s: counter names, and only they, end in \"_total\"",
             name);
    return NULL;
  }
  sl__mfamily *f = calloc(1, sizeof(*f));
  if (!f || !(f->name = sl__strdup(name)) ||
      !(f->help = sl__strdup(help ? help : ""))) {
    if (f)
      family_free(f);
    sl__errf(err, errlen, "out of memory");
    return NULL;
  }
  f->m = m;
  f->type = type;
  f->tail = &f->series;
  if (!parse_labels(f, labels, err, errlen)) {
    family_free(f);
    return NULL;
  }
  if (type == SL_METRIC_HISTOGRAM && n_bounds) {
    if (!(f->bounds = malloc(n_bounds * sizeof(double)))) {
      family_free(f);
      sl__errf(err, errlen, "out of memory");
      return NULL;
    }
    for (size_t i = 0; i < n_bounds; i++) {
      if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1])) {
        family_free(f);
        sl__errf(err, errlen,
                 "metric %s: bucket bounds must be finite and increasing",
                 name);
        return NULL;
      }
      f->bounds[i] = bounds[i];
    }
    f->n_bounds = n_bounds;
  }
  pthread_mutex_lock(&m->lock);
  for (sl__mfamily *o = m->fams; o; o = o->next) {
    if (!names_clash(o, name) && !names_clash(f, o->name))
      continue;
    bool same = strcmp(o->name, name) == 0 && same_shape(o, f);
    pthread_mutex_unlock(&m->lock);
    family_free(f);
    if (same)
      return o;
    sl__errf(err, errlen,
             "metric %s is already registered with another type or labels",
             name);
    return NULL;
  }
  *m->tail = f;
  m->tail = &f->next;
  pthread_mutex_unlock(&m->lock);
  return f;
}

static bool values_equal(const sl__mseries *s,
                         const char *const *label_values) {
  for (size_t i = 0; i < s->fam->n_labels; i++)
    if (strcmp(s->values[i], label_values[i] ? label_values[i] : "") != 0)
      return false;
  return true;
}

sl__mseries *sl__mfamily_series(sl__mfamily *f,
                                const char *const *label_values) {
  if (!f)
    return NULL;
  sl__metrics *m = f->m;
  pthread_mutex_lock(&m->lock);
  sl__mseries *s = NULL;
  if (f->collect)
    goto out;
  for (s = f->series; s; s = s->next)
    if (values_equal(s, label_values))
      goto out;
  s = calloc(1, sizeof(*s));
  if (!s)
    goto out;
  s->fam = f;
  if (f->n_labels && !(s->values = calloc(f->n_labels, sizeof(char *))))
    goto fail;
  for (size_t i = 0; i < f->n_labels; i++)
    if (!(s->values[i] = sl__strdup(label_values[i] ? label_values[i] : "")))
      goto fail;
  if (f->type == SL_METRIC_HISTOGRAM) {
    if (!(s->buckets = calloc(f->n_bounds + 1, sizeof(*s->buckets))))
      goto fail;
  }
  atomic_init(&s->v, f->type == SL_METRIC_GAUGE ? dbits(0.0) : 0);
  atomic_init(&s->sum, dbits(0.0));
  *f->tail = s;
  f->tail = &s->next;
  goto out;
fail:
  series_free(s);
  s = NULL;
out:
  pthread_mutex_unlock(&m->lock);
  return s;
}

void sl__mseries_remove(sl__mseries *s) {
  if (!s)
    return;
  sl__mfamily *f = s->fam;
  pthread_mutex_lock(&f->m->lock);
  sl__mseries **pp = &f->series;
  while (*pp && *pp != s)
    pp = &(*pp)->next;
  if (*pp) {
    *pp = s->next;
    if (f->tail == &s->next)
      f->tail = pp;
  }
  pthread_mutex_unlock(&f->m->lock);
  series_free(s);
}

void sl__mseries_inc(sl__mseries *s, uint64_t n) {
  if (s)
    atomic_fetch_add_explicit(&s->v, n, memory_order_relaxed);
}

void sl__mseries_set(sl__mseries *s, double v) {
  if (s)
    atomic_store_explicit(&s->v, dbits(v), memory_order_relaxed);
}

static void add_double(_Atomic uint64_t *a, double delta) {
  uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(
      a, &old, dbits(bitsd(old) + delta), memory_order_relaxed,
      memory_order_relaxed)) {
  }
}

void sl__mseries_add(sl__mseries *s, double delta) {
  if (s)
    add_double(&s->v, delta);
}

void sl__mseries_set_fn(sl__mseries *s, double (*fn)(void *opaque),
                        void *opaque) {
  if (!s)
    return;
  pthread_mutex_lock(&s->fam->m->lock);
  s->fn = fn;
  s->fn_opaque = opaque;
  pthread_mutex_unlock(&s->fam->m->lock);
}

void sl__mseries_observe(sl__mseries *s, double v) {
  if (!s || !s->buckets || isnan(v))
    return;
  const sl__mfamily *f = s->fam;
  size_t b = 0;
  while (b < f->n_bounds && v > f->bounds[b])
    b++;
  atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
  add_double(&s->sum, v);
}

double sl__mseries_value(const sl__mseries *s) {
  if (!s)
    return NAN;
  sl__mseries *w = (sl__mseries *)s;
  switch (s->fam->type) {
  case SL_METRIC_COUNTER:
    return (double)atomic_load_explicit(&w->v, memory_order_relaxed);
  case SL_METRIC_GAUGE:
    return bitsd(atomic_load_explicit(&w->v, memory_order_relaxed));
  case SL_METRIC_HISTOGRAM:
    return bitsd(atomic_load_explicit(&w->sum, memory_order_relaxed));
  }
  return NAN;
}

int sl__mfamily_set_collector(sl__mfamily *f, sl__mcollect_fn collect,
                              void *opaque) {
  if (!f || !collect)
    return SL_ERR_INVAL;
  pthread_mutex_lock(&f->m->lock);
  int rc = SL_ERR_INVAL;
  if (!f->series && !f->collect) {
    f->collect = collect;
    f->collect_opaque = opaque;
    rc = SL_OK;
  }
  pthread_mutex_unlock(&f->m->lock);
  return rc;
}

static void sample_init(sl_metric_sample_t *smp, const sl__mfamily *f) {
  memset(smp, 0, sizeof(*smp));
  smp->name = f->name;
  smp->help = f->help;
  smp->type = f->type;
  smp->n_labels = f->n_labels;
  smp->label_names = (const char *const *)f->labels;
}

const char *sl__mcollect_family(const sl__mcollect *c) {
  return c->fam->name;
}

void sl__mcollect_value(sl__mcollect *c, const char *const *label_values,
                        double v) {
  if (c->rc || isnan(v))
    return;
  sl_metric_sample_t smp;
  sample_init(&smp, c->fam);
  static const char *const none[1] = {""};
  smp.label_values = label_values ? label_values : none;
  smp.value = v;
  c->rc = c->fn(&smp, c->opaque);
}

/* Reports a histogram series from per-bucket counts (n_bounds + 1 of
 * them, the family's). */
static int visit_histogram(const sl__mfamily *f, const char *const *lv,
                           const uint64_t *buckets, double sum, sl_metric_fn fn,
                           void *opaque) {
  sl_metric_sample_t smp;
  sample_init(&smp, f);
  static const char *const none[1] = {""};
  smp.label_values = lv ? lv : none;
  uint64_t cum[64], *c = cum;
  if (f->n_bounds > SL__ARRAY_LEN(cum) &&
      !(c = malloc(f->n_bounds * sizeof(uint64_t))))
    return SL_ERR_NOMEM;
  uint64_t total = 0;
  for (size_t b = 0; b <= f->n_bounds; b++) {
    total += buckets[b];
    if (b < f->n_bounds)
      c[b] = total;
  }
  smp.count = total;
  smp.value = sum;
  smp.n_buckets = f->n_bounds;
  smp.bucket_le = f->bounds;
  smp.bucket_counts = c;
  int rc = fn(&smp, opaque);
  if (c != cum)
    free(c);
  return rc;
}

void sl__mcollect_histogram(sl__mcollect *c, const char *const *label_values,
                            const double *bounds, size_t n_bounds,
                            const uint64_t *buckets, double sum) {
  const sl__mfamily *f = c->fam;
  if (c->rc || f->type != SL_METRIC_HISTOGRAM || n_bounds != f->n_bounds ||
      (n_bounds && memcmp(bounds, f->bounds, n_bounds * sizeof(double))))
    return;
  c->rc = visit_histogram(f, label_values, buckets, sum, c->fn, c->opaque);
}

/* Visits one owned series. Histogram buckets are read bucket by bucket
 * while observations may land, so the cumulative counts are computed from
 * one read of each and the total is their sum: always consistent. */
static int visit_series(const sl__mfamily *f, sl__mseries *s, sl_metric_fn fn,
                        void *opaque) {
  sl_metric_sample_t smp;
  sample_init(&smp, f);
  smp.label_values = (const char *const *)s->values;
  static const char *const none[1] = {""};
  if (!smp.label_values)
    smp.label_values = none;
  if (f->type == SL_METRIC_HISTOGRAM) {
    uint64_t b[65], *per = b;
    if (f->n_bounds >= SL__ARRAY_LEN(b) &&
        !(per = malloc((f->n_bounds + 1) * sizeof(uint64_t))))
      return SL_ERR_NOMEM;
    for (size_t i = 0; i <= f->n_bounds; i++)
      per[i] = atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    int rc = visit_histogram(
        f, smp.label_values, per,
        bitsd(atomic_load_explicit(&s->sum, memory_order_relaxed)), fn, opaque);
    if (per != b)
      free(per);
    return rc;
  }
  if (s->fn)
    smp.value = s->fn(s->fn_opaque);
  else
    smp.value = sl__mseries_value(s);
  if (isnan(smp.value))
    return 0;
  return fn(&smp, opaque);
}

int sl__metrics_const_label(sl__metrics *m, const char *name,
                            const char *value) {
  char *n = sl__strdup(name), *v = sl__strdup(value);
  if (!n || !v) {
    free(n);
    free(v);
    return SL_ERR_NOMEM;
  }
  pthread_mutex_lock(&m->lock);
  free(m->cl_name);
  free(m->cl_value);
  m->cl_name = n;
  m->cl_value = v;
  pthread_mutex_unlock(&m->lock);
  return SL_OK;
}

typedef struct const_ctx {
  const sl__metrics *m;
  sl_metric_fn fn;
  void *opaque;
} const_ctx;

/* Hands fn the sample with the constant label in front of its own. */
static int with_const_label(const sl_metric_sample_t *s, void *opaque) {
  const const_ctx *c = opaque;
  const char *names[MAX_LABELS + 1], *values[MAX_LABELS + 1];
  names[0] = c->m->cl_name;
  values[0] = c->m->cl_value;
  for (size_t i = 0; i < s->n_labels; i++) {
    names[i + 1] = s->label_names[i];
    values[i + 1] = s->label_values[i];
  }
  sl_metric_sample_t t = *s;
  t.n_labels = s->n_labels + 1;
  t.label_names = names;
  t.label_values = values;
  return c->fn(&t, c->opaque);
}

int sl__metrics_visit(sl__metrics *m, sl_metric_fn fn, void *opaque) {
  if (!m || !fn)
    return SL_ERR_INVAL;
  const_ctx cc = {m, fn, opaque};
  if (m->cl_name) {
    fn = with_const_label;
    opaque = &cc;
  }
  int rc = 0;
  pthread_mutex_lock(&m->lock);
  for (sl__mfamily *f = m->fams; f && !rc; f = f->next) {
    if (f->collect) {
      sl__mcollect c = {f, fn, opaque, 0};
      f->collect(&c, f->collect_opaque);
      rc = c.rc;
      continue;
    }
    for (sl__mseries *s = f->series; s && !rc; s = s->next)
      rc = visit_series(f, s, fn, opaque);
  }
  pthread_mutex_unlock(&m->lock);
  return rc;
}

int sl__metrics_families(sl__metrics *m,
                         int (*fn)(const char *name, sl_metric_type type,
                                   void *opaque),
                         void *opaque) {
  if (!m || !fn)
    return SL_ERR_INVAL;
  int rc = 0;
  pthread_mutex_lock(&m->lock);
  for (sl__mfamily *f = m->fams; f && !rc; f = f->next)
    rc = fn(f->name, f->type, opaque);
  pthread_mutex_unlock(&m->lock);
  return rc;
}
