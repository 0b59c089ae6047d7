/* SPDX-License-Identifier: Apache-2.0 */
/* Event-time session windows across their state formats: snapshots of the
 * earlier layout (two value states per key, fixtures/session_format1)
 * restore on either backend and go on exactly as an uninterrupted run
 * does, each key converted at its first element or timer; snapshots of
 * the current layout do too, and under another gap (larger, smaller, to
 * and from a gap_fn) they go on exactly as the earlier layout does. */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "session_scenario.h"
#include "sluice.h"

static const char *const backends[] = {"hashmap", "rocksdb"};
static const char *const variants[] = {"count", "full"};
static char state_dir[64];

/* Everything the harness emitted, one line per record, main output then
 * late side output. */
static char *outputs(sl_harness_t *h) {
  size_t cap = 4096, len = 0;
  char *s = calloc(1, cap);
  ck_assert_ptr_nonnull(s);
  const char *tags[] = {NULL, "late"};
  for (int t = 0; t < 2; t++) {
    for (size_t i = 0; i < sl_harness_count(h, tags[t]); i++) {
      const sl_record_t *r = sl_harness_get(h, tags[t], i);
      char v[128];
      if (r->value_len == 8 && tags[t] == NULL && r->key_len) {
        int64_t c;
        memcpy(&c, r->value, 8);
        snprintf(v, sizeof(v), "%" PRId64, c);
      } else {
        snprintf(v, sizeof(v), "%.*s", (int)r->value_len,
                 (const char *)r->value);
      }
      len += (size_t)snprintf(s + len, cap - len, "%s key=%.*s v=%s ts=%lld\n",
                              tags[t] ? tags[t] : "out", (int)r->key_len,
                              (const char *)r->key, v, (long long)r->ts);
      ck_assert_uint_lt(len, cap);
    }
  }
  return s;
}

static sl_harness_t *harness(const char *backend, int *variant,
                             const void *snap, size_t snap_len, char *err,
                             size_t errlen) {
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(c, "state.backend", backend, err, errlen),
                   SL_OK);
  const char *tags[] = {"late", NULL};
  char name[64];
  static int seq;
  snprintf(name, sizeof(name), "sf%d", seq++);
  sl_harness_opts_t o = {.n_inputs = 1,
                         .keyed = true,
                         .build = ss_build,
                         .opaque = variant,
                         .side_tags = tags,
                         .job_name = name,
                         .state_dir = state_dir,
                         .snapshot = snap,
                         .snapshot_len = snap_len};
  sl_harness_t *h = sl_harness_new_opts(c, &o, err, errlen);
  if (!h)
    sl_conf_destroy(c);
  return h;
}

/* Phase 2's outputs in an uninterrupted run of today's code. */
static char *reference(const char *backend, int variant) {
  char err[256];
  sl_harness_t *h = harness(backend, &variant, NULL, 0, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  ck_assert_int_eq(ss_phase1(h), SL_OK);
  sl_harness_clear(h);
  ck_assert_int_eq(ss_phase2(h), SL_OK);
  char *s = outputs(h);
  sl_harness_destroy(h);
  return s;
}

static void *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  ck_assert_int_gt(n, 0);
  rewind(f);
  void *p = malloc((size_t)n);
  ck_assert_ptr_nonnull(p);
  ck_assert_uint_eq(fread(p, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return p;
}

static void restored_run(const char *backend, int variant, const void *snap,
                         size_t len) {
  char *want = reference(backend, variant);
  char err[256];
  sl_harness_t *h = harness(backend, &variant, snap, len, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  ck_assert_msg(ss_phase2(h) == SL_OK, "%s", sl_harness_errmsg(h));
  char *got = outputs(h);
  ck_assert_msg(strcmp(got, want) == 0, "restored:\n%s\nuninterrupted:\n%s",
                got, want);
  ck_assert_ptr_nonnull(strstr(want, "late key=f"));
  free(got);
  free(want);
  sl_harness_destroy(h);
}

/* _i: backend * 2 + variant. */
START_TEST(format1_snapshot_restores) {
  const char *backend = backends[_i / 2];
  int variant = _i % 2;
  char path[1024];
  snprintf(path, sizeof(path),
           "%s/tests/integration/fixtures/session_format1/%s.snap",
           SLUICE_SOURCE_ROOT, variants[variant]);
  size_t len;
  void *snap = read_file(path, &len);
  restored_run(backend, variant, snap, len);
  free(snap);
}
END_TEST

START_TEST(current_snapshot_restores) {
  const char *backend = backends[_i / 2];
  int variant = _i % 2;
  char err[256];
  sl_harness_t *h = harness(backend, &variant, NULL, 0, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  ck_assert_int_eq(ss_phase1(h), SL_OK);
  void *snap;
  size_t len;
  ck_assert_int_eq(sl_harness_snapshot(h, &snap, &len), SL_OK);
  sl_harness_destroy(h);
  restored_run(backend, variant, snap, len);
  free(snap);
}
END_TEST

/* Gaps across a restore: the gap ss_build's operator had when phase 1
 * ran (fixed 10, or a gap_fn giving 10) and the one it restores under. */
enum { GAP_10, GAP_FN_10, GAP_20, GAP_5, GAP_FN };
static const struct {
  int before, after;
  const char *name;
} gap_cases[] = {{GAP_10, GAP_20, "10 to 20"},
                 {GAP_10, GAP_5, "10 to 5"},
                 {GAP_10, GAP_FN, "10 to gap_fn"},
                 {GAP_FN_10, GAP_20, "gap_fn to 20"}};

typedef struct gap_arg {
  int variant, gap;
} gap_arg;

static int64_t gap_fn10(const sl_record_t *rec, void *opaque) {
  (void)rec, (void)opaque;
  return 10;
}

/* 5, 13 or 21 ms by timestamp: shorter and longer than before. */
static int64_t gap_fn_mixed(const sl_record_t *rec, void *opaque) {
  (void)opaque;
  return 5 + (rec->ts % 3) * 8;
}

static sl_stream_t *build_gap(sl_stream_t *const *in, size_t n, void *opaque) {
  (void)n;
  const gap_arg *g = opaque;
  static const int64_t fixed[] = {10, 0, 20, 5, 0};
  sl_window_spec_t s = sl_window_session(fixed[g->gap] ? fixed[g->gap] : 10);
  if (g->gap == GAP_FN_10)
    s.gap_fn = gap_fn10;
  else if (g->gap == GAP_FN)
    s.gap_fn = gap_fn_mixed;
  s.allowed_lateness = 5;
  s.late_tag = "late";
  sl_window_fn_t f = {0};
  if (g->variant == 0)
    f.builtin = SL_AGG_COUNT;
  else
    f.process = ss_full;
  return sl_window(in[0], "win", &s, &f, NULL);
}

/* The earlier layout recorded no gap, so its sessions restore under a
 * larger one: d's [200, 210) is then shorter than the gap, and an
 * element at 195 (whose window [195, 215) covers the session's end)
 * moves its start, which the one-read path could not see. */
START_TEST(format1_restores_under_larger_gap) {
  const char *backend = backends[_i];
  gap_arg g = {.variant = 1, .gap = GAP_20};
  char path[1024];
  snprintf(path, sizeof(path),
           "%s/tests/integration/fixtures/session_format1/full.snap",
           SLUICE_SOURCE_ROOT);
  size_t len;
  void *snap = read_file(path, &len);
  char err[256];
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(c, "state.backend", backend, err, sizeof(err)),
                   SL_OK);
  const char *tags[] = {"late", NULL};
  sl_harness_opts_t o = {.n_inputs = 1,
                         .keyed = true,
                         .build = build_gap,
                         .opaque = &g,
                         .side_tags = tags,
                         .job_name = "sf-larger",
                         .state_dir = state_dir,
                         .snapshot = snap,
                         .snapshot_len = len};
  sl_harness_t *h = sl_harness_new_opts(c, &o, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  ck_assert_int_eq(sl_harness_watermark(h, 0, 61), SL_OK);
  /* Converts d, adding [100, 120) before [200, 210). */
  ck_assert_int_eq(ss_push(h, "d", 100), SL_OK);
  ck_assert_int_eq(ss_push(h, "d", 195), SL_OK);
  ck_assert_int_eq(sl_harness_watermark(h, 0, 300), SL_OK);
  char *got = outputs(h);
  ck_assert_msg(strstr(got, "v=[100,120) n=1 sum=100 ts=119\n") != NULL &&
                    strstr(got, "v=[195,215) n=2 sum=395 ts=214\n") != NULL,
                "%s", got);
  free(got);
  sl_harness_destroy(h);
  free(snap);
}
END_TEST

static sl_harness_t *gap_harness(const char *backend, gap_arg *g,
                                 const void *snap, size_t len) {
  char err[512];
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(c, "state.backend", backend, err, sizeof(err)),
                   SL_OK);
  const char *tags[] = {"late", NULL};
  static int seq;
  char name[64];
  snprintf(name, sizeof(name), "sf-gap%d", seq++);
  sl_harness_opts_t o = {.n_inputs = 1,
                         .keyed = true,
                         .build = build_gap,
                         .opaque = g,
                         .side_tags = tags,
                         .job_name = name,
                         .state_dir = state_dir,
                         .snapshot = snap,
                         .snapshot_len = len};
  sl_harness_t *h = sl_harness_new_opts(c, &o, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  return h;
}

/* Phase 2 after elements whose windows, under a gap of 20, reach back
 * before the start of a last session shorter than that (a's [70, 85) by
 * 68, d's [200, 210) by 195), and then elements that merge with the
 * session only from its moved start (49, 176), which shows in a count
 * too. */
static char *gap_phase2(sl_harness_t *h) {
  static const struct {
    const char *k;
    int64_t ts;
  } in[] = {{"a", 68}, {"a", 49}, {"d", 195}, {"d", 176}};
  int rc = sl_harness_watermark(h, 0, 61);
  for (size_t i = 0; i < sizeof(in) / sizeof(in[0]) && !rc; i++)
    rc = ss_push(h, in[i].k, in[i].ts);
  if (!rc)
    rc = ss_phase2(h);
  ck_assert_msg(rc == SL_OK, "%s", sl_harness_errmsg(h));
  return outputs(h);
}

/* A snapshot of the current layout restores under another gap exactly
 * as the earlier layout's does (the code before the current layout,
 * whose fixture holds the same phase 1, and whose sessions carry no
 * assumption about the gap). _i: (backend * 2 + variant) * 4 + case. */
START_TEST(gap_change_restores) {
  const char *backend = backends[_i / 8];
  int variant = _i / 4 % 2;
  int cs = _i % 4;
  char path[1024];
  snprintf(path, sizeof(path),
           "%s/tests/integration/fixtures/session_format1/%s.snap",
           SLUICE_SOURCE_ROOT, variants[variant]);
  size_t flen;
  void *fixture = read_file(path, &flen);
  gap_arg after = {variant, gap_cases[cs].after};
  sl_harness_t *h = gap_harness(backend, &after, fixture, flen);
  char *want = gap_phase2(h);
  sl_harness_destroy(h);
  free(fixture);

  gap_arg before = {variant, gap_cases[cs].before};
  h = gap_harness(backend, &before, NULL, 0);
  ck_assert_int_eq(ss_phase1(h), SL_OK);
  void *snap;
  size_t len;
  ck_assert_int_eq(sl_harness_snapshot(h, &snap, &len), SL_OK);
  sl_harness_destroy(h);
  h = gap_harness(backend, &after, snap, len);
  char *got = gap_phase2(h);
  ck_assert_msg(strcmp(got, want) == 0,
                "gap %s on %s: restored:\n%s\nearlier layout restored:\n%s",
                gap_cases[cs].name, backend, got, want);
  free(got);
  free(want);
  sl_harness_destroy(h);
  free(snap);
}
END_TEST

/* The gap is left out of the comparison, nothing else: a restore that
 * also changes the window function still fails, naming the function and
 * not the gap. */
START_TEST(gap_and_function_change_fails) {
  const char *backend = backends[_i];
  gap_arg before = {0, GAP_10}, after = {1, GAP_20};
  sl_harness_t *h = gap_harness(backend, &before, NULL, 0);
  ck_assert_int_eq(ss_phase1(h), SL_OK);
  void *snap;
  size_t len;
  ck_assert_int_eq(sl_harness_snapshot(h, &snap, &len), SL_OK);
  sl_harness_destroy(h);
  char err[1024] = "";
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(c, "state.backend", backend, err, sizeof(err)),
                   SL_OK);
  const char *tags[] = {"late", NULL};
  sl_harness_opts_t o = {.n_inputs = 1,
                         .keyed = true,
                         .build = build_gap,
                         .opaque = &after,
                         .side_tags = tags,
                         .job_name = "sf-gapfn",
                         .state_dir = state_dir,
                         .snapshot = snap,
                         .snapshot_len = len};
  h = sl_harness_new_opts(c, &o, err, sizeof(err));
  if (h) { /* the restore may fail at the first call instead */
    ck_assert_int_ne(ss_push(h, "a", 1000), SL_OK);
    snprintf(err, sizeof(err), "%s", sl_harness_errmsg(h));
    sl_harness_destroy(h);
  } else {
    sl_conf_destroy(c);
  }
  ck_assert_msg(strstr(err, "fn changed from aggregate to") != NULL &&
                    strstr(err, "gap") == NULL,
                "%s", err);
  free(snap);
}
END_TEST

int main(void) {
  snprintf(state_dir, sizeof(state_dir), "/tmp/sluice-sfmt-XXXXXX");
  if (!mkdtemp(state_dir)) {
    perror("mkdtemp");
    return EXIT_FAILURE;
  }
  Suite *s = suite_create("session_format");
  TCase *tc = tcase_create("restore");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, format1_snapshot_restores, 0, 4);
  tcase_add_loop_test(tc, current_snapshot_restores, 0, 4);
  tcase_add_loop_test(tc, gap_change_restores, 0, 16);
  tcase_add_loop_test(tc, gap_and_function_change_fails, 0, 2);
  tcase_add_loop_test(tc, format1_restores_under_larger_gap, 0, 2);
  suite_add_tcase(s, tc);
  int rc = tu_run(s);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", state_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", state_dir);
  return rc;
}
