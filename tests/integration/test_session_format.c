/* SPDX-License-Identifier: Apache-2.0 */
/* Event-time session windows across their state formats: snapshots of the
 * earlier layout (two value states per key, fixtures/session_format1)
 * restore on either backend and go on exactly as an uninterrupted run
 * does, each key converted at its first element or timer; snapshots of
 * the current layout do too; and a restore that changes the gap under
 * stored sessions fails with the change named. */
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

/* ss_build's operator with a gap of 20 ms instead of 10. */
static sl_stream_t *build_gap20(sl_stream_t *const *in, size_t n,
                                void *opaque) {
  (void)n;
  int variant = opaque ? *(const int *)opaque : 0;
  sl_window_spec_t s = sl_window_session(20);
  s.allowed_lateness = 5;
  s.late_tag = "late";
  sl_window_fn_t f = {0};
  if (variant == 0)
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
  int variant = 1;
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
                         .build = build_gap20,
                         .opaque = &variant,
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

START_TEST(gap_change_fails) {
  const char *backend = backends[_i];
  int variant = 0;
  char err[512];
  sl_harness_t *h = harness(backend, &variant, NULL, 0, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  ck_assert_int_eq(ss_phase1(h), SL_OK);
  void *snap;
  size_t len;
  ck_assert_int_eq(sl_harness_snapshot(h, &snap, &len), SL_OK);
  sl_harness_destroy(h);
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(c, "state.backend", backend, err, sizeof(err)),
                   SL_OK);
  const char *tags[] = {"late", NULL};
  sl_harness_opts_t o = {.n_inputs = 1,
                         .keyed = true,
                         .build = build_gap20,
                         .side_tags = tags,
                         .job_name = "sf-gap",
                         .state_dir = state_dir,
                         .snapshot = snap,
                         .snapshot_len = len};
  err[0] = 0;
  h = sl_harness_new_opts(c, &o, err, sizeof(err));
  if (h) { /* the restore may fail at the first call instead */
    ck_assert_int_ne(ss_push(h, "a", 1000), SL_OK);
    snprintf(err, sizeof(err), "%s", sl_harness_errmsg(h));
    sl_harness_destroy(h);
  } else {
    sl_conf_destroy(c);
  }
  ck_assert_msg(strstr(err, "gap changed from 10 to 20") != NULL, "%s", err);
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
  tcase_add_loop_test(tc, gap_change_fails, 0, 2);
  tcase_add_loop_test(tc, format1_restores_under_larger_gap, 0, 2);
  suite_add_tcase(s, tc);
  int rc = tu_run(s);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", state_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", state_dir);
  return rc;
}
