/* SPDX-License-Identifier: Apache-2.0 */
/* Model JSON to a flat evaluation form (model.h): trees become arrays of
 * nodes with child indexes checked at load, so scoring never follows a
 * bad pointer and never loops. */
#include "model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct node {
  int feature; /* -1: leaf */
  double threshold, leaf;
  int left, right; /* x < threshold: left */
} node;

typedef struct tree {
  node *nodes;
  size_t n;
} tree;

struct sc_model {
  char name[64];
  int gbt;
  double bias; /* logistic: bias; gbt: base score */
  double weights[SC_N_FEATURES];
  tree *trees;
  size_t n_trees;
};

void sc_model_free(sc_model *m) {
  if (!m)
    return;
  for (size_t i = 0; i < m->n_trees; i++)
    free(m->trees[i].nodes);
  free(m->trees);
  free(m);
}

const char *sc_model_name(const sc_model *m) {
  return m->name;
}

static int feature_of(json_t *v, char *err, size_t errlen) {
  const char *s = json_string_value(v);
  int f = s ? sc_feature_index(s) : -1;
  if (f < 0)
    snprintf(err, errlen, "unknown feature \"%s\"", s ? s : "(not a string)");
  return f;
}

static int parse_tree(json_t *jt, tree *t, char *err, size_t errlen) {
  size_t n = json_array_size(jt);
  if (!n) {
    snprintf(err, errlen, "a tree must be a non-empty array of nodes");
    return -1;
  }
  if (!(t->nodes = calloc(n, sizeof(node))))
    return -1;
  t->n = n;
  for (size_t i = 0; i < n; i++) {
    json_t *jn = json_array_get(jt, i);
    node *nd = &t->nodes[i];
    json_t *leaf = json_object_get(jn, "leaf");
    if (json_is_number(leaf)) {
      nd->feature = -1;
      nd->leaf = json_number_value(leaf);
      continue;
    }
    json_t *th = json_object_get(jn, "threshold");
    json_t *l = json_object_get(jn, "left"), *r = json_object_get(jn, "right");
    if ((nd->feature =
             feature_of(json_object_get(jn, "feature"), err, errlen)) < 0)
      return -1;
    /* Children after their parent: every path ends, in at most n steps. */
    if (!json_is_number(th) || !json_is_integer(l) || !json_is_integer(r) ||
        json_integer_value(l) <= (json_int_t)i ||
        json_integer_value(r) <= (json_int_t)i ||
        json_integer_value(l) >= (json_int_t)n ||
        json_integer_value(r) >= (json_int_t)n) {
      snprintf(err, errlen,
               "node %zu: needs \"leaf\", or \"feature\", \"threshold\" and "
               "\"left\"/\"right\" indexes of later nodes",
               i);
      return -1;
    }
    nd->threshold = json_number_value(th);
    nd->left = (int)json_integer_value(l);
    nd->right = (int)json_integer_value(r);
  }
  return 0;
}

static int parse_model(json_t *j, sc_model *m, char *err, size_t errlen) {
  const char *type = json_string_value(json_object_get(j, "type"));
  const char *name = json_string_value(json_object_get(j, "name"));
  snprintf(m->name, sizeof(m->name), "%s", name ? name : "");
  if (type && !strcmp(type, "logistic")) {
    json_t *b = json_object_get(j, "bias"), *w = json_object_get(j, "weights");
    if (!json_is_number(b) || !json_is_object(w)) {
      snprintf(err, errlen, "logistic: needs \"bias\" and \"weights\"");
      return -1;
    }
    m->bias = json_number_value(b);
    const char *k;
    json_t *v;
    json_object_foreach(w, k, v) {
      int f = sc_feature_index(k);
      if (f < 0 || !json_is_number(v)) {
        snprintf(err, errlen, "logistic: bad weight \"%s\"", k);
        return -1;
      }
      m->weights[f] = json_number_value(v);
    }
    return 0;
  }
  if (type && !strcmp(type, "gbt")) {
    json_t *b = json_object_get(j, "base"), *ts = json_object_get(j, "trees");
    if (!json_is_number(b) || !json_array_size(ts)) {
      snprintf(err, errlen, "gbt: needs \"base\" and non-empty \"trees\"");
      return -1;
    }
    m->gbt = 1;
    m->bias = json_number_value(b);
    size_t n = json_array_size(ts);
    if (!(m->trees = calloc(n, sizeof(tree))))
      return -1;
    m->n_trees = n;
    for (size_t i = 0; i < n; i++)
      if (parse_tree(json_array_get(ts, i), &m->trees[i], err, errlen))
        return -1;
    return 0;
  }
  snprintf(err, errlen, "\"type\" must be \"logistic\" or \"gbt\"");
  return -1;
}

sc_model *sc_model_parse(const char *json, size_t len, char *err,
                         size_t errlen) {
  json_error_t je;
  json_t *j = json_loadb(json, len, 0, &je);
  if (!j) {
    snprintf(err, errlen, "model: %s (line %d)", je.text, je.line);
    return NULL;
  }
  sc_model *m = calloc(1, sizeof(*m));
  snprintf(err, errlen, "out of memory");
  if (!m || parse_model(j, m, err, errlen)) {
    sc_model_free(m);
    m = NULL;
  }
  json_decref(j);
  return m;
}

sc_model *sc_model_load(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open", path);
    return NULL;
  }
  char *buf = NULL;
  size_t len = 0, cap = 0, n;
  char chunk[4096];
  while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    if (len + n > cap) {
      char *nb = realloc(buf, cap = 2 * (len + n));
      if (!nb)
        break;
      buf = nb;
    }
    memcpy(buf + len, chunk, n);
    len += n;
  }
  fclose(f);
  sc_model *m = sc_model_parse(buf ? buf : "", len, err, errlen);
  free(buf);
  return m;
}

double sc_model_score(const sc_model *m, const double *f) {
  double z = m->bias;
  if (!m->gbt) {
    for (int i = 0; i < SC_N_FEATURES; i++)
      z += m->weights[i] * f[i];
  } else {
    for (size_t t = 0; t < m->n_trees; t++) {
      const node *nd = m->trees[t].nodes;
      int i = 0;
      while (nd[i].feature >= 0)
        i = f[nd[i].feature] < nd[i].threshold ? nd[i].left : nd[i].right;
      z += nd[i].leaf;
    }
  }
  return 1.0 / (1.0 + exp(-z));
}
