/* SPDX-License-Identifier: Apache-2.0 */
/* Shared by the window suites: the list of state backends every window
 * suite runs on, a harness around sl_window / the joins, and readers of
 * the built-in aggregates' binary results. */
#ifndef SL_WINDOW_UTIL_H
#define SL_WINDOW_UTIL_H

#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>
#include <math.h>

#include "testutil.h"

/* Every state backend that exists: each window test runs once per entry
 * (tcase_add_loop_test over wu_backends). */
static const char *const wu_backends[] = {"hashmap", "rocksdb"};
#define WU_N_BACKENDS ((int)(sizeof(wu_backends) / sizeof(wu_backends[0])))

/* state.dir for the RocksDB runs: one directory per suite process
 * (made in main before the forked tests run, removed by wu_run), so
 * suites running side by side never share and lock a job directory. */
static char wu_dir[64];
static inline const char *wu_state_dir(void) {
  if (!wu_dir[0]) {
    snprintf(wu_dir, sizeof(wu_dir), "/tmp/sluice-wtest-XXXXXX");
    if (!mkdtemp(wu_dir)) /* then RocksDB reports the missing directory */
      snprintf(wu_dir, sizeof(wu_dir), "/nonexistent/sluice-wtest");
  }
  return wu_dir;
}

static inline int wu_run(Suite *s) {
  wu_state_dir();
  int rc = tu_run(s);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", wu_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", wu_dir);
  return rc;
}

/* Numeric extractor: the record value as a decimal integer. */
static inline int wu_num(const sl_record_t *rec, double *out, void *opaque) {
  (void)opaque;
  if (!rec->value_len || rec->value_len > 30)
    return -1;
  *out = (double)tu_num(rec->value, rec->value_len);
  return 0;
}

/* The user's add of a sum (a double accumulator) over wu_num: what a
 * built-in SL_AGG_SUM does, written as a user function. */
static inline int wu_add_sum(void *acc, const sl_record_t *rec, void *opaque) {
  double v;
  if (wu_num(rec, &v, opaque))
    return -1;
  *(double *)acc += v;
  return 0;
}

/* A join function emitting "<left value>|<right value>" under the left
 * key (its timestamp the join's). */
static inline int wu_join_fmt(sl_ctx_t *ctx, const sl_record_t *l,
                              const sl_record_t *r, void *opaque) {
  (void)opaque;
  char *b = sl_ctx_alloc(ctx, 64);
  if (!b)
    return SL_ERR_NOMEM;
  int n =
      snprintf(b, 64, "%.*s|%.*s", (int)l->value_len, (const char *)l->value,
               (int)r->value_len, (const char *)r->value);
  sl_record_t o = {l->key, l->key_len, b, (size_t)n, 0};
  return sl_emit(ctx, &o);
}

typedef struct wu_build {
  int kind; /* 0 window, 1 window join, 2 interval join */
  sl_window_spec_t spec;
  sl_window_fn_t fn;
  sl_join_fn join;
  sl_interval_join_spec_t ij;
  void *opaque;
} wu_build;

static inline sl_stream_t *wu_build_fn(sl_stream_t *const *in, size_t n,
                                       void *opaque) {
  wu_build *b = opaque;
  if (b->kind == 0)
    return sl_window(in[0], "win", &b->spec, &b->fn, b->opaque);
  if (b->kind == 1)
    return sl_window_join(in[0], in[n - 1], "join", &b->spec, b->join,
                          b->opaque);
  return sl_interval_join(in[0], in[n - 1], "join", &b->ij, b->join, b->opaque);
}

/* A harness on backend with error.policy (NULL: the default, fail). */
static inline sl_harness_t *wu_harness_p(const char *backend, wu_build *b,
                                         const char *const *tags,
                                         const char *policy) {
  char err[256];
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(c, "state.backend", backend, err, sizeof(err)),
                   SL_OK);
  ck_assert_int_eq(
      sl_conf_set(c, "state.dir", wu_state_dir(), err, sizeof(err)), SL_OK);
  if (policy)
    ck_assert_int_eq(sl_conf_set(c, "error.policy", policy, err, sizeof(err)),
                     SL_OK);
  sl_harness_t *h = sl_harness_new(c, b->kind == 0 ? 1 : 2, true, wu_build_fn,
                                   b, tags, err, sizeof(err));
  ck_assert_msg(h != NULL, "harness: %s", err);
  return h;
}

static inline sl_harness_t *wu_harness(const char *backend, wu_build *b,
                                       const char *const *tags) {
  return wu_harness_p(backend, b, tags, NULL);
}

/* A built-in result as text: COUNT's int64 or the others' double. */
static inline void wu_fmt(const sl_record_t *r, bool count, char *out,
                          size_t n) {
  ck_assert_uint_eq(r->value_len, 8);
  if (count) {
    int64_t c;
    memcpy(&c, r->value, 8);
    snprintf(out, n, "(%s,%" PRId64 ")@%" PRId64, (const char *)r->key, c,
             r->ts);
  } else {
    double d;
    memcpy(&d, r->value, 8);
    snprintf(out, n, "(%s,%g)@%" PRId64, (const char *)r->key, d, r->ts);
  }
}

static inline int wu_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Asserts that two collections of output lines are the same multiset
 * (sorting both), naming the first difference. */
static inline void wu_same_lines(char **got, size_t n_got, char **want,
                                 size_t n_want, const char *what) {
  if (n_got) /* an empty collection may have no array */
    qsort(got, n_got, sizeof(char *), wu_cmp);
  if (n_want)
    qsort(want, n_want, sizeof(char *), wu_cmp);
  size_t i = 0;
  while (i < n_got && i < n_want && strcmp(got[i], want[i]) == 0)
    i++;
  ck_assert_msg(i == n_got && i == n_want,
                "%s: %zu outputs, expected %zu; first difference at %zu: "
                "got \"%s\", expected \"%s\"",
                what, n_got, n_want, i, i < n_got ? got[i] : "(end)",
                i < n_want ? want[i] : "(end)");
}

/* Asserts that the main output since the last clear is exactly the
 * expected records in any order ("(key,value)@ts" with built-in results),
 * then clears it. */
static inline void wu_expect(sl_harness_t *h, bool count,
                             const char *const *want, size_t n_want) {
  size_t n = sl_harness_count(h, NULL);
  char got[64][96];
  char *gp[64], *wp[64];
  ck_assert_msg(n <= 64, "too many outputs: %zu", n);
  for (size_t i = 0; i < n; i++) {
    wu_fmt(sl_harness_get(h, NULL, i), count, got[i], sizeof(got[i]));
    gp[i] = got[i];
  }
  for (size_t i = 0; i < n_want; i++)
    wp[i] = (char *)want[i];
  qsort(gp, n, sizeof(char *), wu_cmp);
  qsort(wp, n_want, sizeof(char *), wu_cmp);
  char gs[2048] = "", ws[2048] = "";
  for (size_t i = 0; i < n; i++)
    strncat(strcat(gs, " "), gp[i], sizeof(gs) - strlen(gs) - 2);
  for (size_t i = 0; i < n_want; i++)
    strncat(strcat(ws, " "), wp[i], sizeof(ws) - strlen(ws) - 2);
  ck_assert_msg(strcmp(gs, ws) == 0, "got [%s ] want [%s ]", gs, ws);
  sl_harness_clear(h);
}
#define WU_EXPECT(h, count, ...)                                               \
  do {                                                                         \
    const char *w_[] = {__VA_ARGS__};                                          \
    wu_expect(h, count, w_, sizeof(w_) / sizeof(w_[0]));                       \
  } while (0)
#define WU_EXPECT_NONE(h) wu_expect(h, false, NULL, 0)

#endif
