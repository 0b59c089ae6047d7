/* SPDX-License-Identifier: Apache-2.0 */
/* scoring-eval: reads the scores the job wrote (one per event id; repeats
 * after a restart are dropped) and reports the AUC against the users'
 * labels and the latency from an event's arrival at the job to its score,
 * p50 and p99. With --check it also recomputes every score from the input
 * topic, the --model file and the models topic, with the job's own feature
 * and model code, and requires the job's scores to be those, digit for
 * digit. */
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/exutil.h"
#include "userfeatures.h"
#include "model.h"

#define PROG "scoring-eval"

/* ---- Scores, by event id ------------------------------------------------ */

typedef struct scored {
  char id[24], user[16], model[64], score[32];
  int64_t ts, latency_ms;
  double p;
} scored;

typedef struct vec {
  void *v;
  size_t n, cap, size;
} vec;

static void *vec_push(vec *a) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? 2 * a->cap : 1024;
    void *nv = realloc(a->v, cap * a->size);
    if (!nv)
      return NULL;
    a->v = nv;
    a->cap = cap;
  }
  return (char *)a->v + a->size * a->n++;
}

static int by_id(const void *a, const void *b) {
  return strcmp(((const scored *)a)->id, ((const scored *)b)->id);
}

/* The score text as the job prints it, so the comparison is exact. */
static void score_text(double p, char *out, size_t cap) {
  snprintf(out, cap, "%.17g", p);
}

static int add_score(const char *v, size_t len, int64_t ts, void *opaque) {
  (void)ts;
  vec *a = opaque;
  json_t *j = json_loadb(v, len, 0, NULL);
  const char *id = json_string_value(json_object_get(j, "id"));
  const char *user = json_string_value(json_object_get(j, "user"));
  const char *model = json_string_value(json_object_get(j, "model"));
  json_t *score = json_object_get(j, "score");
  scored *s = id && user && model && json_is_number(score) &&
                      strlen(id) < sizeof(s->id) &&
                      strlen(user) < sizeof(s->user) &&
                      strlen(model) < sizeof(s->model)
                  ? vec_push(a)
                  : NULL;
  if (s) {
    strcpy(s->id, id);
    strcpy(s->user, user);
    strcpy(s->model, model);
    s->p = json_number_value(score);
    /* The job's text, not a reparse: %.17g round-trips a double. */
    score_text(s->p, s->score, sizeof(s->score));
    s->ts = json_integer_value(json_object_get(j, "ts"));
    s->latency_ms = json_integer_value(json_object_get(j, "out_ms")) -
                    json_integer_value(json_object_get(j, "in_ms"));
  }
  json_decref(j);
  return s ? 0 : -1;
}

/* Sorted by id, one per id: a job restarted from a checkpoint scores
 * again what it scored after it (the same score). */
static size_t dedupe(vec *a) {
  qsort(a->v, a->n, sizeof(scored), by_id);
  scored *s = a->v;
  size_t n = 0;
  for (size_t i = 0; i < a->n; i++)
    if (!n || strcmp(s[n - 1].id, s[i].id))
      s[n++] = s[i];
  size_t dup = a->n - n;
  a->n = n;
  return dup;
}

/* ---- Labels and AUC ----------------------------------------------------- */

typedef struct label {
  char user[16];
  int bot;
} label;

static int by_user(const void *a, const void *b) {
  return strcmp(((const label *)a)->user, ((const label *)b)->user);
}

static int read_labels(const char *path, vec *out) {
  FILE *f = fopen(path, "r");
  if (!f) {
    perror(path);
    return -1;
  }
  char line[256];
  while (fgets(line, sizeof(line), f)) {
    json_t *j = json_loads(line, 0, NULL);
    const char *u = json_string_value(json_object_get(j, "user"));
    label *l = u && strlen(u) < sizeof(l->user) ? vec_push(out) : NULL;
    if (l) {
      strcpy(l->user, u);
      l->bot = (int)json_integer_value(json_object_get(j, "bot"));
    }
    json_decref(j);
  }
  fclose(f);
  qsort(out->v, out->n, sizeof(label), by_user);
  return 0;
}

typedef struct pt {
  double p;
  int y;
} pt;

static int by_p(const void *a, const void *b) {
  double x = ((const pt *)a)->p, y = ((const pt *)b)->p;
  return x < y ? -1 : x > y;
}

/* Mann-Whitney: the chance a random positive outscores a random negative,
 * ties counting half. */
static double auc(pt *v, size_t n) {
  qsort(v, n, sizeof(pt), by_p);
  double pos = 0, neg = 0, rank_sum = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && v[j].p == v[i].p)
      j++;
    double rank = (double)(i + j + 1) / 2.0; /* average of ranks i+1..j */
    for (size_t k = i; k < j; k++)
      if (v[k].y) {
        rank_sum += rank;
        pos++;
      } else
        neg++;
    i = j;
  }
  return pos && neg ? (rank_sum - pos * (pos + 1) / 2) / (pos * neg) : 0;
}

static int by_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* ---- The reference: the job's computation, replayed --------------------- */

typedef struct version {
  int64_t from;
  sc_model *model;
} version;

typedef struct ref {
  vec events;   /* sc_event */
  vec versions; /* version, in arrival order */
  int bad;
} ref;

static int add_event(const char *v, size_t len, int64_t ts, void *opaque) {
  (void)ts;
  ref *r = opaque;
  sc_event *e = vec_push(&r->events);
  if (!e || !sc_event_parse(v, len, e)) {
    if (e)
      r->events.n--;
    return -1;
  }
  return 0;
}

static int add_version(const char *v, size_t len, int64_t ts, void *opaque) {
  (void)ts;
  ref *r = opaque;
  json_t *j = json_loadb(v, len, 0, NULL);
  char *text = j ? json_dumps(json_object_get(j, "model"), JSON_COMPACT) : NULL;
  char err[256];
  sc_model *m =
      text ? sc_model_parse(text, strlen(text), err, sizeof(err)) : NULL;
  version *ver = m ? vec_push(&r->versions) : NULL;
  if (ver)
    *ver = (version){json_integer_value(json_object_get(j, "ts")), m};
  else {
    sc_model_free(m);
    r->bad++;
  }
  free(text);
  json_decref(j);
  return 0;
}

static int by_user_ts_id(const void *a, const void *b) {
  const sc_event *x = a, *y = b;
  int c = strcmp(x->user, y->user);
  if (c)
    return c;
  if (x->ts != y->ts)
    return x->ts < y->ts ? -1 : 1;
  return strcmp(x->id, y->id);
}

static int by_from(const void *a, const void *b) {
  const version *x = a, *y = b;
  return x->from < y->from ? -1 : x->from > y->from;
}

/* Same versions as the job's broadcast state: one per effective time, the
 * last to arrive winning. */
static void index_versions(vec *vs) {
  version *v = vs->v;
  /* Stable: keep arrival order among equal times, then keep the last. */
  for (size_t i = 1; i < vs->n; i++)
    for (size_t j = i; j > 0 && by_from(&v[j - 1], &v[j]) > 0; j--) {
      version t = v[j];
      v[j] = v[j - 1];
      v[j - 1] = t;
    }
  size_t n = 0;
  for (size_t i = 0; i < vs->n; i++) {
    if (n && v[n - 1].from == v[i].from) {
      sc_model_free(v[n - 1].model);
      n--;
    }
    v[n++] = v[i];
  }
  vs->n = n;
}

/* Recomputes every event's score and compares. Returns the number of
 * events whose score (or model) differs, or that the job did not score or
 * scored but the input does not hold. */
static long check(ref *r, const sc_model *file_model, vec *scores) {
  qsort(r->events.v, r->events.n, sizeof(sc_event), by_user_ts_id);
  index_versions(&r->versions);
  const version *vs = r->versions.v;
  sc_event *ev = r->events.v;
  vec mine = {.size = sizeof(scored)};
  sc_user u;
  for (size_t i = 0; i < r->events.n; i++) {
    if (!i || strcmp(ev[i].user, ev[i - 1].user))
      sc_user_init(&u);
    double f[SC_N_FEATURES];
    sc_user_add(&u, &ev[i], f);
    const sc_model *m = file_model;
    for (size_t k = 0; k < r->versions.n && vs[k].from <= ev[i].ts; k++)
      m = vs[k].model;
    scored *s = vec_push(&mine);
    if (!s)
      return -1;
    memset(s, 0, sizeof(*s));
    strcpy(s->id, ev[i].id);
    snprintf(s->model, sizeof(s->model), "%s", sc_model_name(m));
    score_text(sc_model_score(m, f), s->score, sizeof(s->score));
  }
  qsort(mine.v, mine.n, sizeof(scored), by_id);
  scored *a = mine.v, *b = scores->v;
  size_t i = 0, j = 0;
  long same = 0, missing = 0, extra = 0, changed = 0;
  while (i < mine.n || j < scores->n) {
    int c = i == mine.n ? 1 : j == scores->n ? -1 : strcmp(a[i].id, b[j].id);
    if (c < 0)
      missing++, i++;
    else if (c > 0)
      extra++, j++;
    else {
      if (strcmp(a[i].score, b[j].score) || strcmp(a[i].model, b[j].model)) {
        if (changed < 5)
          fprintf(stderr, PROG ": %s: job %s %s, reference %s %s\n", a[i].id,
                  b[j].model, b[j].score, a[i].model, a[i].score);
        changed++;
      } else
        same++;
      i++, j++;
    }
  }
  printf("check: same %ld missing %ld extra %ld changed %ld versions %zu "
         "(rejected %d)\n",
         same, missing, extra, changed, r->versions.n, r->bad);
  free(mine.v);
  return missing + extra + changed;
}

static void usage(FILE *f) {
  fprintf(f, "usage: " PROG " [--brokers host:port | --bootstrap-file F] "
             "[--labels FILE] [--topic T]\n"
             "       [--min-auc A] [--check] [--model FILE] [--in-topic T] "
             "[--models-topic T]\n"
             "Reports the AUC of the scores in T (scoring.scores) against the "
             "labels and the\n"
             "arrival-to-score latency; exit 0 when the AUC is at least A "
             "(0.9). --check: also\n"
             "require every score to equal the one recomputed from the input, "
             "the --model file\n"
             "(examples/scoring/models/lr.json) and the models topic.\n");
}

int main(int argc, char **argv) {
  const char *brokers = NULL, *bootstrap = NULL, *topic = "scoring.scores";
  const char *labels_path = "scoring-labels.jsonl",
             *in_topic = "scoring.events";
  const char *models_topic = "scoring.models";
  const char *model_path = "examples/scoring/models/lr.json";
  double min_auc = 0.9;
  int do_check = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--check")) {
      do_check = 1;
      continue;
    }
    if (!v) {
      usage(stderr);
      return 2;
    }
    i++;
    if (!strcmp(a, "--brokers"))
      brokers = v;
    else if (!strcmp(a, "--bootstrap-file"))
      bootstrap = v;
    else if (!strcmp(a, "--topic"))
      topic = v;
    else if (!strcmp(a, "--labels"))
      labels_path = v;
    else if (!strcmp(a, "--min-auc"))
      min_auc = ex_arg_double(PROG, a, v);
    else if (!strcmp(a, "--model"))
      model_path = v;
    else if (!strcmp(a, "--in-topic"))
      in_topic = v;
    else if (!strcmp(a, "--models-topic"))
      models_topic = v;
    else {
      usage(stderr);
      return 2;
    }
  }
  char addr[512];
  if (ex_resolve_brokers(brokers, bootstrap, 10000, addr, sizeof(addr)))
    return 1;
  vec scores = {.size = sizeof(scored)}, labels = {.size = sizeof(label)};
  if (read_labels(labels_path, &labels) ||
      ex_read_topic(PROG, addr, topic, true, "a score", add_score, &scores,
                    NULL))
    return 1;
  size_t dups = dedupe(&scores);
  pt *pts = calloc(scores.n + 1, sizeof(pt));
  int64_t *lat = calloc(scores.n + 1, sizeof(int64_t));
  if (!pts || !lat)
    return 1;
  size_t n = 0, unlabelled = 0;
  scored *s = scores.v;
  for (size_t i = 0; i < scores.n; i++) {
    label key, *l;
    snprintf(key.user, sizeof(key.user), "%s", s[i].user);
    l = bsearch(&key, labels.v, labels.n, sizeof(label), by_user);
    lat[i] = s[i].latency_ms;
    if (!l) {
      unlabelled++;
      continue;
    }
    pts[n++] = (pt){s[i].p, l->bot};
  }
  qsort(lat, scores.n, sizeof(int64_t), by_i64);
  double a = auc(pts, n);
  int64_t p50 = scores.n ? lat[scores.n / 2] : 0;
  int64_t p99 = scores.n ? lat[(scores.n * 99) / 100 - (scores.n >= 100)] : 0;
  printf("scores %zu (repeats %zu, unlabelled %zu) auc %.4f latency_ms p50 "
         "%" PRId64 " p99 %" PRId64 "\n",
         scores.n, dups, unlabelled, a, p50, p99);
  /* Events per model, in order of first use by id. */
  for (size_t i = 0; i < scores.n; i++) {
    size_t k = 0, c = 0;
    while (k < i && strcmp(s[k].model, s[i].model))
      k++;
    if (k < i)
      continue;
    for (size_t m = i; m < scores.n; m++)
      c += !strcmp(s[m].model, s[i].model);
    printf("model %s scored %zu\n", s[i].model, c);
  }
  int rc = a >= min_auc ? 0 : 1;
  if (do_check) {
    char err[256];
    sc_model *fm = sc_model_load(model_path, err, sizeof(err));
    ref r = {.events = {.size = sizeof(sc_event)},
             .versions = {.size = sizeof(version)}};
    if (!fm) {
      fprintf(stderr, PROG ": %s\n", err);
      return 1;
    }
    if (ex_read_topic(PROG, addr, in_topic, true, "an event", add_event, &r,
                      NULL))
      return 1;
    /* No models topic: no published version. */
    ex_read_topic(PROG, addr, models_topic, true, "a model version",
                  add_version, &r, NULL);
    if (check(&r, fm, &scores))
      rc = 1;
    version *v = r.versions.v;
    for (size_t i = 0; i < r.versions.n; i++)
      sc_model_free(v[i].model);
    free(r.versions.v);
    free(r.events.v);
    sc_model_free(fm);
  }
  free(pts);
  free(lat);
  free(scores.v);
  free(labels.v);
  return rc;
}
