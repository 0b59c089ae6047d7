/* SPDX-License-Identifier: Apache-2.0 */
/* Precision and recall of alerts against labels (see eval.h). Sizes are
 * those of an example run (thousands of alerts, hundreds of labels), so
 * matching is a plain scan per alert. */
#include "eval.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct item {
  char *id;   /* alerts only */
  char *text; /* alerts only: the whole alert, as read */
  char *rule;
  char *entity;
  int64_t start, end;
} item;

typedef struct vec {
  item *v;
  size_t n, cap;
} vec;

struct ex_eval {
  vec labels, alerts;
  char **rules;
  size_t n_rules;
  bool sorted;
  size_t dups, conflicts;
};

ex_eval *ex_eval_new(void) {
  return calloc(1, sizeof(ex_eval));
}

static void vec_free(vec *v) {
  for (size_t i = 0; i < v->n; i++) {
    free(v->v[i].id);
    free(v->v[i].text);
    free(v->v[i].rule);
    free(v->v[i].entity);
  }
  free(v->v);
}

void ex_eval_free(ex_eval *ev) {
  if (!ev)
    return;
  vec_free(&ev->labels);
  vec_free(&ev->alerts);
  for (size_t i = 0; i < ev->n_rules; i++)
    free(ev->rules[i]);
  free(ev->rules);
  free(ev);
}

static int note_rule(ex_eval *ev, const char *rule) {
  for (size_t i = 0; i < ev->n_rules; i++)
    if (!strcmp(ev->rules[i], rule))
      return 0;
  char **r = realloc(ev->rules, (ev->n_rules + 1) * sizeof(*r));
  if (!r)
    return -1;
  ev->rules = r;
  if (!(r[ev->n_rules] = strdup(rule)))
    return -1;
  ev->n_rules++;
  return 0;
}

static int add(ex_eval *ev, vec *v, const char *json, size_t len,
               bool want_id) {
  json_t *j = json_loadb(json, len, 0, NULL);
  json_t *id = json_object_get(j, "id");
  json_t *rule = json_object_get(j, "rule");
  json_t *ent = json_object_get(j, "entity");
  json_t *start = json_object_get(j, "start");
  json_t *end = json_object_get(j, "end");
  int rc = -1;
  if (json_is_string(rule) && json_is_string(ent) && json_is_integer(start) &&
      json_is_integer(end) && (!want_id || json_is_string(id))) {
    if (v->n == v->cap) {
      size_t cap = v->cap ? v->cap * 2 : 256;
      item *nv = realloc(v->v, cap * sizeof(*nv));
      if (!nv)
        goto out;
      v->v = nv;
      v->cap = cap;
    }
    /* The text without its line end: a file and a topic compare equal. */
    while (len && (json[len - 1] == '\n' || json[len - 1] == '\r'))
      len--;
    item it = {want_id ? strdup(json_string_value(id)) : NULL,
               want_id ? strndup(json, len) : NULL,
               strdup(json_string_value(rule)),
               strdup(json_string_value(ent)),
               json_integer_value(start),
               json_integer_value(end)};
    if ((want_id && (!it.id || !it.text)) || !it.rule || !it.entity ||
        note_rule(ev, it.rule)) {
      free(it.id);
      free(it.text);
      free(it.rule);
      free(it.entity);
      goto out;
    }
    v->v[v->n++] = it;
    ev->sorted = false;
    rc = 0;
  }
out:
  json_decref(j);
  return rc;
}

int ex_eval_add_label(ex_eval *ev, const char *json, size_t len) {
  return add(ev, &ev->labels, json, len, false);
}

int ex_eval_add_alert(ex_eval *ev, const char *json, size_t len) {
  return add(ev, &ev->alerts, json, len, true);
}

static int by_id(const void *a, const void *b) {
  return strcmp(((const item *)a)->id, ((const item *)b)->id);
}

/* Duplicates come from a restarted job re-emitting what it wrote after its
 * last checkpoint; sorting by id and keeping the first of each run makes
 * every later score count an alert once. */
static void dedupe(ex_eval *ev) {
  if (ev->sorted)
    return;
  vec *a = &ev->alerts;
  qsort(a->v, a->n, sizeof(item), by_id);
  size_t w = 0;
  for (size_t r = 0; r < a->n; r++) {
    if (w && !strcmp(a->v[w - 1].id, a->v[r].id)) {
      /* A repeat must repeat the alert: a replay that computes it
       * differently is not deterministic. */
      if (strcmp(a->v[w - 1].text, a->v[r].text))
        ev->conflicts++;
      free(a->v[r].id);
      free(a->v[r].text);
      free(a->v[r].rule);
      free(a->v[r].entity);
      ev->dups++;
      continue;
    }
    a->v[w++] = a->v[r];
  }
  a->n = w;
  ev->sorted = true;
}

static int by_burst(const void *a, const void *b) {
  const item *x = a, *y = b;
  int c = strcmp(x->rule, y->rule);
  if (!c)
    c = strcmp(x->entity, y->entity);
  if (!c)
    c = x->end < y->end ? -1 : x->end > y->end;
  if (!c)
    c = x->start < y->start ? -1 : x->start > y->start;
  return c ? c : strcmp(x->id, y->id);
}

size_t ex_eval_incidents(ex_eval *ev, int64_t interval_ms) {
  dedupe(ev);
  vec *a = &ev->alerts;
  if (interval_ms <= 0 || !a->n)
    return 0;
  qsort(a->v, a->n, sizeof(item), by_burst);
  /* Decide on the sorted alerts first (each against the one before it,
   * dropped or not), then compact. */
  bool *drop = calloc(a->n, sizeof(bool));
  if (!drop)
    return 0;
  for (size_t r = 1; r < a->n; r++) {
    const item *p = &a->v[r - 1], *c = &a->v[r];
    drop[r] = !strcmp(p->rule, c->rule) && !strcmp(p->entity, c->entity) &&
              c->end - p->end <= interval_ms;
  }
  size_t w = 0;
  for (size_t r = 0; r < a->n; r++) {
    if (drop[r]) {
      free(a->v[r].id);
      free(a->v[r].text);
      free(a->v[r].rule);
      free(a->v[r].entity);
      continue;
    }
    a->v[w++] = a->v[r];
  }
  free(drop);
  size_t dropped = a->n - w;
  a->n = w;
  /* Back in id order, as every other function expects. */
  qsort(a->v, a->n, sizeof(item), by_id);
  return dropped;
}

static bool matches(const item *alert, const item *label) {
  return !strcmp(alert->rule, label->rule) &&
         !strcmp(alert->entity, label->entity) && alert->start <= label->end &&
         label->start <= alert->end;
}

void ex_eval_score(ex_eval *ev, const char *rule, ex_eval_result *out) {
  dedupe(ev);
  memset(out, 0, sizeof(*out));
  out->duplicates = ev->dups;
  out->conflicts = ev->conflicts;
  for (size_t i = 0; i < ev->alerts.n; i++) {
    const item *a = &ev->alerts.v[i];
    if (strcmp(a->rule, rule))
      continue;
    out->alerts++;
    for (size_t k = 0; k < ev->labels.n; k++)
      if (matches(a, &ev->labels.v[k])) {
        out->true_pos++;
        break;
      }
  }
  for (size_t k = 0; k < ev->labels.n; k++) {
    const item *l = &ev->labels.v[k];
    if (strcmp(l->rule, rule))
      continue;
    out->labels++;
    for (size_t i = 0; i < ev->alerts.n; i++)
      if (matches(&ev->alerts.v[i], l)) {
        out->detected++;
        break;
      }
  }
  out->precision =
      out->alerts ? (double)out->true_pos / (double)out->alerts : 1.0;
  out->recall = out->labels ? (double)out->detected / (double)out->labels : 1.0;
}

const char *ex_eval_rule_at(const ex_eval *ev, size_t i) {
  return i < ev->n_rules ? ev->rules[i] : NULL;
}

int ex_eval_write_alerts(ex_eval *ev, FILE *f) {
  dedupe(ev);
  for (size_t i = 0; i < ev->alerts.n; i++)
    if (fprintf(f, "%s\n", ev->alerts.v[i].text) < 0)
      return -1;
  return 0;
}

static void report(FILE *f, size_t *shown, const char *what, const char *id) {
  if (f && (*shown)++ < EX_EVAL_DIFF_SHOWN)
    fprintf(f, "  %s %s\n", what, id);
}

void ex_eval_compare(ex_eval *ev, ex_eval *ref, const char *rule,
                     ex_eval_diff *out, FILE *f) {
  dedupe(ev);
  dedupe(ref);
  memset(out, 0, sizeof(*out));
  size_t shown = 0;
  /* Both sorted by id: one merge pass. */
  const vec *a = &ev->alerts, *b = &ref->alerts;
  size_t i = 0, k = 0;
  while (i < a->n || k < b->n) {
    int c = i == a->n ? 1 : k == b->n ? -1 : strcmp(a->v[i].id, b->v[k].id);
    const item *it = c <= 0 ? &a->v[i] : &b->v[k];
    bool mine = !strcmp(it->rule, rule);
    if (c < 0) {
      if (mine) {
        out->extra++;
        report(f, &shown, "extra", it->id);
      }
      i++;
    } else if (c > 0) {
      if (mine) {
        out->missing++;
        report(f, &shown, "missing", it->id);
      }
      k++;
    } else {
      if (mine) {
        out->same++;
        if (strcmp(a->v[i].text, b->v[k].text)) {
          out->changed++;
          report(f, &shown, "changed", it->id);
        }
      }
      i++;
      k++;
    }
  }
}
