/* SPDX-License-Identifier: Apache-2.0 */
/* Turning samples into text: the Prometheus text exposition format 0.0.4
 * (served at /metrics) and the JSON object of the periodic log line, plus
 * the label matching behind sl_job_metric_value(). */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "metrics/metrics.h"
#include "sluice/json.h"

typedef struct buf {
  char *p;
  size_t n, cap;
  bool oom;
} buf;

static void buf_reserve(buf *b, size_t more) {
  if (b->oom || b->n + more + 1 <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->n + more + 1)
    cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    b->oom = true;
    return;
  }
  b->p = p;
  b->cap = cap;
}

static void buf_put(buf *b, const char *s, size_t len) {
  buf_reserve(b, len);
  if (b->oom)
    return;
  memcpy(b->p + b->n, s, len);
  b->n += len;
  b->p[b->n] = '\0';
}

static void buf_str(buf *b, const char *s) {
  buf_put(b, s, strlen(s));
}

/* Shortest of %.15g / %.17g that reads back as the same double, so
 * counters print as integers and 0.1 as 0.1. */
static void fmt_double(char *out, size_t len, double v) {
  if (isnan(v)) {
    snprintf(out, len, "NaN");
    return;
  }
  if (isinf(v)) {
    snprintf(out, len, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  snprintf(out, len, "%.15g", v);
  if (strtod(out, NULL) != v)
    snprintf(out, len, "%.17g", v);
}

/* Escapes per the exposition format: backslash and newline everywhere,
 * double quotes in label values. */
static void buf_escaped(buf *b, const char *s, bool quote) {
  const char *run = s; /* copied in spans, not byte by byte */
  for (; *s; s++) {
    const char *rep = *s == '\\'           ? "\\\\"
                      : *s == '\n'         ? "\\n"
                      : quote && *s == '"' ? "\\\""
                                           : NULL;
    if (!rep)
      continue;
    buf_put(b, run, (size_t)(s - run));
    buf_str(b, rep);
    run = s + 1;
  }
  buf_put(b, run, (size_t)(s - run));
}

static void put_labels(buf *b, const sl_metric_sample_t *s, const char *le) {
  if (!s->n_labels && !le)
    return;
  buf_str(b, "{");
  for (size_t i = 0; i < s->n_labels; i++) {
    if (i)
      buf_str(b, ",");
    buf_str(b, s->label_names[i]);
    buf_str(b, "=\"");
    buf_escaped(b, s->label_values[i], true);
    buf_str(b, "\"");
  }
  if (le) {
    buf_str(b, s->n_labels ? ",le=\"" : "le=\"");
    buf_str(b, le);
    buf_str(b, "\"");
  }
  buf_str(b, "}");
}

static void put_sample(buf *b, const sl_metric_sample_t *s, const char *suffix,
                       const char *le, double v) {
  char num[40];
  buf_str(b, s->name);
  buf_str(b, suffix);
  put_labels(b, s, le);
  fmt_double(num, sizeof(num), v);
  buf_str(b, " ");
  buf_str(b, num);
  buf_str(b, "\n");
}

typedef struct text_ctx {
  buf b;
  const char *last; /* family whose HELP/TYPE was written last */
} text_ctx;

static const char *const type_names[] = {"counter", "gauge", "histogram"};

static int text_sample(const sl_metric_sample_t *s, void *opaque) {
  text_ctx *t = opaque;
  buf *b = &t->b;
  if (!t->last || strcmp(t->last, s->name) != 0) {
    t->last = s->name;
    buf_str(b, "# HELP ");
    buf_str(b, s->name);
    buf_str(b, " ");
    buf_escaped(b, s->help, false);
    buf_str(b, "\n# TYPE ");
    buf_str(b, s->name);
    buf_str(b, " ");
    buf_str(b, type_names[s->type]);
    buf_str(b, "\n");
  }
  if (s->type != SL_METRIC_HISTOGRAM) {
    put_sample(b, s, "", NULL, s->value);
  } else {
    char le[40];
    for (size_t i = 0; i < s->n_buckets; i++) {
      fmt_double(le, sizeof(le), s->bucket_le[i]);
      put_sample(b, s, "_bucket", le, (double)s->bucket_counts[i]);
    }
    put_sample(b, s, "_bucket", "+Inf", (double)s->count);
    put_sample(b, s, "_sum", NULL, s->value);
    put_sample(b, s, "_count", NULL, (double)s->count);
  }
  return b->oom ? SL_ERR_NOMEM : 0;
}

static json_t *json_num(double v) {
  if (!isfinite(v))
    return json_null();
  if (v == floor(v) && fabs(v) < 9007199254740992.0)
    return json_integer((json_int_t)v);
  return json_real(v);
}

static int json_sample(const sl_metric_sample_t *s, void *opaque) {
  json_t *metrics = opaque;
  json_t *arr = json_object_get(metrics, s->name);
  if (!arr) {
    arr = json_array();
    if (!arr || json_object_set_new(metrics, s->name, arr))
      return SL_ERR_NOMEM;
  }
  json_t *o = json_object(), *labels = json_object();
  if (!o || !labels || json_object_set_new(o, "labels", labels)) {
    json_decref(o);
    return SL_ERR_NOMEM;
  }
  int bad = 0;
  for (size_t i = 0; i < s->n_labels; i++)
    bad |= json_object_set_new(labels, s->label_names[i],
                               json_string(s->label_values[i]));
  if (s->type != SL_METRIC_HISTOGRAM) {
    bad |= json_object_set_new(o, "value", json_num(s->value));
  } else {
    json_t *bk = json_object();
    char le[40];
    for (size_t i = 0; bk && i < s->n_buckets; i++) {
      fmt_double(le, sizeof(le), s->bucket_le[i]);
      bad |= json_object_set_new(bk, le,
                                 json_integer((json_int_t)s->bucket_counts[i]));
    }
    if (bk)
      bad |=
          json_object_set_new(bk, "+Inf", json_integer((json_int_t)s->count));
    bad |= json_object_set_new(o, "count", json_integer((json_int_t)s->count));
    bad |= json_object_set_new(o, "sum", json_num(s->value));
    bad |= !bk || json_object_set_new(o, "buckets", bk);
  }
  if (bad || json_array_append_new(arr, o))
    return SL_ERR_NOMEM;
  return 0;
}

int sl__metrics_render(sl__metrics *m, sl_metrics_format fmt,
                       const char *job_name, int64_t now_ms, char **out,
                       size_t *len) {
  if (!m || !out)
    return SL_ERR_INVAL;
  *out = NULL;
  if (fmt == SL_METRICS_PROMETHEUS) {
    text_ctx t = {{0}, NULL};
    buf_reserve(&t.b, 0);
    int rc = sl__metrics_visit(m, text_sample, &t);
    if (!rc && t.b.oom)
      rc = SL_ERR_NOMEM;
    if (rc) {
      free(t.b.p);
      return rc;
    }
    *out = t.b.p;
    if (len)
      *len = t.b.n;
    return SL_OK;
  }
  if (fmt != SL_METRICS_JSON)
    return SL_ERR_INVAL;
  json_t *root = json_object(), *metrics = json_object();
  if (!root || !metrics || json_object_set_new(root, "metrics", metrics)) {
    json_decref(root);
    return SL_ERR_NOMEM;
  }
  int rc = json_object_set_new(root, "ts_ms", json_integer(now_ms)) ||
                   json_object_set_new(root, "job",
                                       json_string(job_name ? job_name : ""))
               ? SL_ERR_NOMEM
               : 0;
  if (!rc)
    rc = sl__metrics_visit(m, json_sample, metrics);
  /* Insertion order keeps families in registration order. */
  char *s = rc ? NULL : sl_json_dumps(root, NULL);
  json_decref(root);
  if (!s)
    return rc ? rc : SL_ERR_NOMEM;
  *out = s;
  if (len)
    *len = strlen(s);
  return SL_OK;
}

/* ---- sl_job_metric_value() ----------------------------------------------- */

typedef struct match_ctx {
  const char *name;
  char pairs[16][2][128];
  size_t n_pairs;
  double sum;
  bool found;
} match_ctx;

static int match_sample(const sl_metric_sample_t *s, void *opaque) {
  match_ctx *mc = opaque;
  if (strcmp(s->name, mc->name) != 0)
    return 0;
  for (size_t p = 0; p < mc->n_pairs; p++) {
    bool ok = false;
    for (size_t i = 0; i < s->n_labels && !ok; i++)
      ok = strcmp(s->label_names[i], mc->pairs[p][0]) == 0 &&
           strcmp(s->label_values[i], mc->pairs[p][1]) == 0;
    if (!ok)
      return 0;
  }
  mc->found = true;
  mc->sum += s->type == SL_METRIC_HISTOGRAM ? (double)s->count : s->value;
  return 0;
}

/* Parses "a=x,b=y" into pairs; false when malformed. */
static bool parse_pairs(match_ctx *mc, const char *labels) {
  const char *p = labels ? labels : "";
  while (*p) {
    const char *comma = strchr(p, ','), *eq = strchr(p, '=');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (!eq || eq >= p + len || eq == p || mc->n_pairs == 16)
      return false;
    size_t kl = (size_t)(eq - p), vl = len - kl - 1;
    if (kl >= 128 || vl >= 128)
      return false;
    memcpy(mc->pairs[mc->n_pairs][0], p, kl);
    mc->pairs[mc->n_pairs][0][kl] = '\0';
    memcpy(mc->pairs[mc->n_pairs][1], eq + 1, vl);
    mc->pairs[mc->n_pairs][1][vl] = '\0';
    mc->n_pairs++;
    p += len + (comma ? 1 : 0);
  }
  return true;
}

int sl__metrics_value(sl__metrics *m, const char *name, const char *labels,
                      double *value) {
  if (!m || !name || !value)
    return SL_ERR_INVAL;
  match_ctx *mc = calloc(1, sizeof(*mc));
  if (!mc)
    return SL_ERR_NOMEM;
  mc->name = name;
  int rc = SL_ERR_INVAL;
  if (parse_pairs(mc, labels)) {
    rc = sl__metrics_visit(m, match_sample, mc);
    if (!rc && !mc->found)
      rc = SL_ERR_NOTFOUND;
    if (!rc)
      *value = mc->sum;
  }
  free(mc);
  return rc;
}
