/* SPDX-License-Identifier: Apache-2.0 */
/* Window operators against Flink's semantics, through the test harness
 * (the production operator, state backend and timers): Flink's own
 * tumbling and sliding test sequences, negative timestamps and offsets,
 * session merging, allowed lateness with re-firing and the late side
 * output, count, continuous and processing-time triggers, full-window and
 * combined functions, the built-in aggregates, and both joins. Every test
 * runs on each state backend of wu_backends. */
#include <errno.h>

#include "check_main.h"
#include "window_util.h"

#define BE wu_backends[_i]

static void push(sl_harness_t *h, const char *k, const char *v, int64_t ts) {
  ck_assert_int_eq(sl_harness_push_kv(h, 0, k, v, ts), SL_OK);
}
static void wm(sl_harness_t *h, int64_t w) {
  ck_assert_int_eq(sl_harness_watermark(h, 0, w), SL_OK);
}

static wu_build sum_of(sl_window_spec_t spec) {
  wu_build b = {.spec = spec};
  b.fn.builtin = SL_AGG_SUM;
  b.fn.num = wu_num;
  return b;
}

/* Flink's WindowOperatorTest input (tuples (key, 1)). */
static void flink_input(sl_harness_t *h) {
  push(h, "k2", "1", 3999);
  push(h, "k2", "1", 3000);
  push(h, "k1", "1", 20);
  push(h, "k1", "1", 0);
  push(h, "k1", "1", 999);
  push(h, "k2", "1", 1998);
  push(h, "k2", "1", 1999);
  push(h, "k2", "1", 1000);
}

START_TEST(tumbling_flink_sequence) {
  wu_build b = sum_of(sl_window_tumbling(3000));
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  flink_input(h);
  wm(h, 999);
  WU_EXPECT_NONE(h);
  wm(h, 1999);
  WU_EXPECT_NONE(h);
  wm(h, 2999);
  WU_EXPECT(h, false, "(k1,3)@2999", "(k2,3)@2999");
  wm(h, 3999);
  WU_EXPECT_NONE(h);
  wm(h, 4999);
  WU_EXPECT_NONE(h);
  wm(h, 5999);
  WU_EXPECT(h, false, "(k2,2)@5999");
  ck_assert_int_eq(sl_harness_output_watermark(h), 5999);
  sl_harness_destroy(h);
}
END_TEST

/* Window state and pending firings survive a snapshot and restore: the
 * restored operator emits what the original would have. */
static sl_harness_t *snap_restore(const char *backend, wu_build *b) {
  sl_harness_t *h = wu_harness(backend, b, NULL);
  flink_input(h);
  void *snap;
  size_t len;
  ck_assert_int_eq(sl_harness_snapshot(h, &snap, &len), SL_OK);
  sl_harness_destroy(h);
  char err[256];
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(c, "state.backend", backend, err, sizeof(err)),
                   SL_OK);
  h = sl_harness_new_restored(c, 1, true, wu_build_fn, b, NULL, snap, len, err,
                              sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  free(snap);
  return h;
}

START_TEST(tumbling_state_survives_snapshot) {
  wu_build b = sum_of(sl_window_tumbling(3000));
  sl_harness_t *h = snap_restore(BE, &b);
  wm(h, 2999);
  WU_EXPECT(h, false, "(k1,3)@2999", "(k2,3)@2999");
  wm(h, 5999);
  WU_EXPECT(h, false, "(k2,2)@5999");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(session_state_survives_snapshot) {
  wu_build b = sum_of(sl_window_session(1000));
  sl_harness_t *h = snap_restore(BE, &b);
  wm(h, 2999);
  WU_EXPECT(h, false, "(k1,3)@1998", "(k2,3)@2998");
  wm(h, 5999);
  WU_EXPECT(h, false, "(k2,2)@4998");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(sliding_state_survives_snapshot) {
  wu_build b = sum_of(sl_window_sliding(3000, 1000));
  sl_harness_t *h = snap_restore(BE, &b);
  wm(h, 999);
  WU_EXPECT(h, false, "(k1,3)@999");
  wm(h, 3999);
  WU_EXPECT(h, false, "(k1,3)@1999", "(k2,3)@1999", "(k1,3)@2999",
            "(k2,3)@2999", "(k2,5)@3999");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(sliding_flink_sequence) {
  wu_build b = sum_of(sl_window_sliding(3000, 1000));
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  flink_input(h);
  wm(h, 999);
  WU_EXPECT(h, false, "(k1,3)@999");
  wm(h, 1999);
  WU_EXPECT(h, false, "(k1,3)@1999", "(k2,3)@1999");
  wm(h, 2999);
  WU_EXPECT(h, false, "(k1,3)@2999", "(k2,3)@2999");
  wm(h, 3999);
  WU_EXPECT(h, false, "(k2,5)@3999");
  wm(h, 4999);
  WU_EXPECT(h, false, "(k2,2)@4999");
  wm(h, 5999);
  WU_EXPECT(h, false, "(k2,2)@5999");
  wm(h, 6999);
  WU_EXPECT_NONE(h);
  sl_harness_destroy(h);
}
END_TEST

/* The same sliding windows without a merge function take the per-window
 * path: the results must be the same. */
START_TEST(sliding_per_window_path_matches) {
  wu_build b = {.spec = sl_window_sliding(3000, 1000)};
  b.fn.add = wu_add_sum;
  b.fn.acc_size = sizeof(double);
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  flink_input(h);
  wm(h, 999);
  WU_EXPECT(h, false, "(k1,3)@999");
  wm(h, 3999);
  WU_EXPECT(h, false, "(k1,3)@1999", "(k2,3)@1999", "(k1,3)@2999",
            "(k2,3)@2999", "(k2,5)@3999");
  sl_harness_end(h);
  WU_EXPECT(h, false, "(k2,2)@4999", "(k2,2)@5999");
  sl_harness_destroy(h);
}
END_TEST

/* Slide larger than size: elements between windows belong to none. */
START_TEST(sliding_with_gaps_between_windows) {
  for (int sliced = 0; sliced < 2; sliced++) {
    wu_build b = {.spec = sl_window_sliding(1000, 3000)};
    if (sliced) {
      b.fn.builtin = SL_AGG_COUNT;
    } else {
      b.fn.add = wu_add_sum; /* no merge: per-window path */
      b.fn.acc_size = sizeof(double);
    }
    sl_harness_t *h = wu_harness(BE, &b, NULL);
    push(h, "a", "1", 1500); /* in no window */
    push(h, "a", "1", 500);
    push(h, "a", "1", -2500);
    sl_harness_end(h);
    ck_assert_uint_eq(sl_harness_count(h, NULL), 2);
    ck_assert_int_eq(sl_harness_get(h, NULL, 0)->ts, -2001);
    ck_assert_int_eq(sl_harness_get(h, NULL, 1)->ts, 999);
    sl_harness_destroy(h);
  }
}
END_TEST

START_TEST(negative_timestamps_and_offset) {
  wu_build b = {.spec = sl_window_tumbling(1000)};
  b.fn.builtin = SL_AGG_COUNT;
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  /* -1 is in [-1000, 0), -1000 too, -1001 in [-2000, -1000). */
  push(h, "a", "x", -1);
  push(h, "a", "x", -1000);
  push(h, "a", "x", -1001);
  push(h, "a", "x", 0);
  wm(h, -1);
  WU_EXPECT(h, true, "(a,1)@-1001", "(a,2)@-1");
  sl_harness_end(h);
  WU_EXPECT(h, true, "(a,1)@999");
  sl_harness_destroy(h);

  /* Offset 300 (and a negative offset meaning the same): windows
   * [-700, 300), [300, 1300). */
  for (int neg = 0; neg < 2; neg++) {
    b.spec.offset = neg ? -700 : 300;
    h = wu_harness(BE, &b, NULL);
    push(h, "a", "x", -700);
    push(h, "a", "x", 299);
    push(h, "a", "x", 300);
    sl_harness_end(h);
    WU_EXPECT(h, true, "(a,2)@299", "(a,1)@1299");
    sl_harness_destroy(h);
  }
}
END_TEST

START_TEST(sessions_merge_when_they_touch) {
  wu_build b = sum_of(sl_window_session(3000));
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  push(h, "a", "1", 0);     /* [0, 3000) */
  push(h, "a", "2", 3000);  /* [3000, 6000) touches: [0, 6000) */
  push(h, "a", "4", 10000); /* its own session */
  push(h, "b", "8", 1000);
  push(h, "b", "16", 7000); /* b: two sessions, gap too large */
  wm(h, 5998);
  WU_EXPECT(h, false, "(b,8)@3999");
  wm(h, 5999);
  WU_EXPECT(h, false, "(a,3)@5999");
  /* An element between two sessions bridges them. */
  push(h, "c", "1", 10000);
  push(h, "c", "2", 15000);
  push(h, "c", "4", 12500); /* [12500, 15500) overlaps both */
  sl_harness_end(h);
  WU_EXPECT(h, false, "(a,4)@12999", "(b,16)@9999", "(c,7)@17999");
  sl_harness_destroy(h);
}
END_TEST

static int64_t gap_from_value(const sl_record_t *rec, void *opaque) {
  (void)opaque;
  return tu_num(rec->value, rec->value_len);
}

START_TEST(session_dynamic_gap) {
  wu_build b = {.spec = sl_window_session(0)};
  b.spec.gap_fn = gap_from_value;
  b.fn.builtin = SL_AGG_COUNT;
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  push(h, "a", "100", 0);   /* [0, 100) */
  push(h, "a", "500", 100); /* [100, 600): touches, [0, 600) */
  push(h, "a", "10", 700);  /* [700, 710) */
  sl_harness_end(h);
  WU_EXPECT(h, true, "(a,2)@599", "(a,1)@709");
  sl_harness_destroy(h);
  /* A gap <= 0 is a user error: the job fails (error.policy=fail). */
  h = wu_harness(BE, &b, NULL);
  ck_assert_int_ne(sl_harness_push_kv(h, 0, "a", "0", 5), SL_OK);
  ck_assert_ptr_nonnull(strstr(sl_harness_errmsg(h), "win"));
  sl_harness_destroy(h);
}
END_TEST

START_TEST(lateness_refires_and_side_output) {
  wu_build b = sum_of(sl_window_tumbling(1000));
  b.spec.allowed_lateness = 500;
  b.spec.late_tag = "late";
  const char *tags[] = {"late", NULL};
  sl_harness_t *h = wu_harness(BE, &b, tags);
  push(h, "a", "1", 100);
  wm(h, 999);
  WU_EXPECT(h, false, "(a,1)@999");
  /* Allowed-late: re-fires the window with everything so far. */
  push(h, "a", "2", 200);
  WU_EXPECT(h, false, "(a,3)@999");
  push(h, "a", "4", 999);
  WU_EXPECT(h, false, "(a,7)@999");
  ck_assert_uint_eq(sl_harness_count(h, "late"), 0);
  /* At max_ts + lateness the state is gone and elements are late. */
  wm(h, 1499);
  push(h, "a", "8", 300);
  ck_assert_uint_eq(sl_harness_count(h, "late"), 1);
  const sl_record_t *r = sl_harness_get(h, "late", 0);
  ck_assert_str_eq(r->value, "8");
  ck_assert_int_eq(r->ts, 300);
  WU_EXPECT_NONE(h);
  /* A window of the same key that is not late still works. */
  push(h, "a", "16", 1500);
  wm(h, 1999);
  WU_EXPECT(h, false, "(a,16)@1999");
  sl_harness_destroy(h);

  /* Without a tag late elements are counted and dropped. */
  b.spec.late_tag = NULL;
  b.spec.allowed_lateness = 0;
  h = wu_harness(BE, &b, NULL);
  wm(h, 2000);
  push(h, "a", "1", 1999);
  push(h, "a", "1", 2000);
  sl_op_stats_t st;
  ck_assert_int_eq(sl_job_op_stats(sl_harness_job(h), "win", &st), SL_OK);
  ck_assert_uint_eq(st.late_dropped, 1);
  sl_harness_end(h);
  WU_EXPECT(h, false, "(a,1)@2999");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(sliding_lateness_refires_only_live_windows) {
  wu_build b = sum_of(sl_window_sliding(2000, 1000));
  b.spec.allowed_lateness = 1000;
  b.spec.late_tag = "late";
  const char *tags[] = {"late", NULL};
  sl_harness_t *h = wu_harness(BE, &b, tags);
  push(h, "a", "1", 1500); /* windows [0,2000) and [1000,3000) */
  wm(h, 2999);
  WU_EXPECT(h, false, "(a,1)@1999", "(a,1)@2999");
  /* ts 1600: [0,2000) is past 1999 + 1000 = 2999 (late), [1000,3000)
   * still live: re-fires alone. */
  push(h, "a", "2", 1600);
  WU_EXPECT(h, false, "(a,3)@2999");
  /* ts 900: its windows [-1000,1000) and [0,2000) are both late. */
  push(h, "a", "4", 900);
  ck_assert_uint_eq(sl_harness_count(h, "late"), 1);
  WU_EXPECT_NONE(h);
  sl_harness_destroy(h);
}
END_TEST

START_TEST(session_lateness_merges_into_fired_session) {
  wu_build b = sum_of(sl_window_session(1000));
  b.spec.allowed_lateness = 5000;
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  push(h, "a", "1", 0); /* [0, 1000) */
  wm(h, 999);
  WU_EXPECT(h, false, "(a,1)@999");
  /* Late but allowed, touching: merges into [0, 1500) and fires at once
   * (its max_ts 1499 is above the watermark: fires when it passes). */
  push(h, "a", "2", 500);
  WU_EXPECT_NONE(h);
  wm(h, 1499);
  WU_EXPECT(h, false, "(a,3)@1499");
  /* Allowed-late into the fired merged session: re-fires at once. */
  push(h, "a", "4", 100);
  WU_EXPECT(h, false, "(a,7)@1499");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(count_window_fires_and_purges) {
  wu_build b = sum_of(sl_window_count(3));
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  for (int i = 1; i <= 7; i++)
    push(h, "a", i == 7 ? "100" : "1", i);
  push(h, "b", "5", 1);
  /* Global windows carry max_ts = SL_TS_MAX. */
  WU_EXPECT(h, false, "(a,3)@9223372036854775807", "(a,3)@9223372036854775807");
  sl_harness_end(h); /* a global window never fires on the watermark */
  WU_EXPECT_NONE(h);
  sl_harness_destroy(h);

  /* Without purge a count trigger fires with everything so far. */
  b.spec.purge = false;
  h = wu_harness(BE, &b, NULL);
  for (int i = 1; i <= 6; i++)
    push(h, "a", "1", i);
  WU_EXPECT(h, false, "(a,3)@9223372036854775807", "(a,6)@9223372036854775807");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(count_trigger_on_tumbling_windows) {
  wu_build b = sum_of(sl_window_tumbling(1000));
  b.spec.trigger = SL_TRIGGER_COUNT;
  b.spec.count = 2;
  b.spec.purge = true;
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  push(h, "a", "1", 1);
  push(h, "a", "2", 2);
  push(h, "a", "4", 3);
  WU_EXPECT(h, false, "(a,3)@999");
  /* The event-time end does not fire a count-triggered window; the
   * leftover element is dropped with the window at cleanup. */
  wm(h, 5000);
  WU_EXPECT_NONE(h);
  push(h, "a", "8", 5001);
  push(h, "a", "8", 5002);
  WU_EXPECT(h, false, "(a,16)@5999");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(continuous_event_time_trigger) {
  wu_build b = sum_of(sl_window_tumbling(10000));
  b.spec.trigger = SL_TRIGGER_CONTINUOUS_EVENT_TIME;
  b.spec.interval = 1000;
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  push(h, "a", "1", 100);
  push(h, "a", "2", 1500);
  wm(h, 999);
  WU_EXPECT_NONE(h);
  wm(h, 1000); /* first early firing at 1000, aligned to the interval */
  WU_EXPECT(h, false, "(a,3)@9999");
  wm(h, 2000);
  WU_EXPECT(h, false, "(a,3)@9999");
  push(h, "a", "4", 2500);
  wm(h, 3500); /* 3000 */
  WU_EXPECT(h, false, "(a,7)@9999");
  wm(h, 9999); /* 4000..9000 and the end at 9999 */
  ck_assert_uint_eq(sl_harness_count(h, NULL), 7);
  sl_harness_destroy(h);
}
END_TEST

START_TEST(continuous_trigger_on_merging_sessions) {
  wu_build b = sum_of(sl_window_session(1000));
  b.spec.trigger = SL_TRIGGER_CONTINUOUS_EVENT_TIME;
  b.spec.interval = 500;
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  push(h, "a", "1", 0);   /* [0, 1000), early firing at 500 */
  push(h, "a", "2", 900); /* merges: [0, 1900), keeps the firing at 500 */
  wm(h, 499);
  WU_EXPECT_NONE(h);
  wm(h, 500);
  WU_EXPECT(h, false, "(a,3)@1899");
  wm(h, 999); /* no firing at the old window's end */
  WU_EXPECT_NONE(h);
  wm(h, 1000);
  WU_EXPECT(h, false, "(a,3)@1899");
  wm(h, 1899); /* 1500, then the end */
  WU_EXPECT(h, false, "(a,3)@1899", "(a,3)@1899");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(processing_time_windows) {
  wu_build b = {.spec = sl_window_tumbling(1000)};
  b.spec.time = SL_PROC_TIME;
  b.fn.builtin = SL_AGG_COUNT;
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  ck_assert_int_eq(sl_harness_set_time(h, 500), SL_OK);
  push(h, "a", "x", -123456); /* the record's timestamp plays no part */
  push(h, "a", "x", 99999999);
  /* Watermarks do not fire processing-time windows. */
  wm(h, 100000000);
  WU_EXPECT_NONE(h);
  ck_assert_int_eq(sl_harness_set_time(h, 998), SL_OK);
  WU_EXPECT_NONE(h);
  ck_assert_int_eq(sl_harness_set_time(h, 1200), SL_OK);
  WU_EXPECT(h, true, "(a,2)@999");
  push(h, "a", "x", 0);
  ck_assert_int_eq(sl_harness_set_time(h, 1999), SL_OK);
  WU_EXPECT(h, true, "(a,1)@1999");
  sl_harness_destroy(h);

  /* Processing-time sessions. */
  b.spec = sl_window_session(100);
  b.spec.time = SL_PROC_TIME;
  h = wu_harness(BE, &b, NULL);
  push(h, "a", "x", 0);
  sl_harness_set_time(h, 50);
  push(h, "a", "x", 0);
  sl_harness_set_time(h, 148);
  WU_EXPECT_NONE(h);
  sl_harness_set_time(h, 149);
  WU_EXPECT(h, true, "(a,2)@149");
  sl_harness_destroy(h);
}
END_TEST

/* Full-window function: "<start>..<end>:<n>:<values joined by +>". */
static int full_fn(sl_ctx_t *ctx, const sl_window_t *w, sl_window_elems_t *e,
                   void *opaque) {
  (void)opaque;
  char *b = sl_ctx_alloc(ctx, 256);
  char vals[128] = "";
  int n = 0;
  sl_record_t r;
  const void *key = NULL;
  size_t kl = 0;
  while (sl_window_elems_next(e, &r)) {
    ck_assert_int_ge(r.ts, w->start);
    ck_assert_int_lt(r.ts, w->end);
    snprintf(vals + strlen(vals), sizeof(vals) - strlen(vals), "%s%.*s",
             n ? "+" : "", (int)r.value_len, (const char *)r.value);
    n++;
    key = r.key;
    kl = r.key_len;
  }
  int len = snprintf(b, 256, "%" PRId64 "..%" PRId64 ":%d:%s", w->start, w->end,
                     n, vals);
  sl_record_t o = {key, kl, b, (size_t)len, 0};
  return sl_emit(ctx, &o);
}

START_TEST(full_window_function_sees_elements_and_bounds) {
  wu_build b = {.spec = sl_window_sliding(2000, 1000)};
  b.fn.process = full_fn;
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  push(h, "a", "x", 1500);
  push(h, "a", "y", 500);
  push(h, "a", "z", 2500);
  wm(h, 1999);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 2);
  ck_assert_str_eq(sl_harness_get(h, NULL, 0)->value, "-1000..1000:1:y");
  ck_assert_str_eq(sl_harness_get(h, NULL, 1)->value, "0..2000:2:x+y");
  /* The output carries max_ts whatever the function set. */
  ck_assert_int_eq(sl_harness_get(h, NULL, 1)->ts, 1999);
  sl_harness_clear(h);
  sl_harness_end(h);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 2);
  ck_assert_str_eq(sl_harness_get(h, NULL, 0)->value, "1000..3000:2:x+z");
  ck_assert_str_eq(sl_harness_get(h, NULL, 1)->value, "2000..4000:1:z");
  sl_harness_destroy(h);

  /* Session windows merge their element lists. */
  b.spec = sl_window_session(1000);
  h = wu_harness(BE, &b, NULL);
  push(h, "a", "p", 0);
  push(h, "a", "q", 2000);
  push(h, "a", "r", 1000); /* bridges */
  sl_harness_end(h);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 1);
  ck_assert_str_eq(sl_harness_get(h, NULL, 0)->value, "0..3000:3:p+q+r");
  sl_harness_destroy(h);
}
END_TEST

/* Combined: a count aggregate, then a window function that formats it. */
static int combined_fn(sl_ctx_t *ctx, const sl_window_t *w,
                       sl_window_elems_t *e, void *opaque) {
  (void)opaque;
  sl_record_t r;
  int n = 0;
  int64_t c = 0;
  while (sl_window_elems_next(e, &r)) {
    ck_assert_uint_eq(r.value_len, 8);
    memcpy(&c, r.value, 8);
    ck_assert_int_eq(r.ts, w->end - 1);
    n++;
  }
  ck_assert_int_eq(n, 1);
  char *b = sl_ctx_alloc(ctx, 64);
  int len =
      snprintf(b, 64, "%" PRId64 "/%" PRId64 "=%" PRId64, w->start, w->end, c);
  sl_record_t o = {r.key, r.key_len, b, (size_t)len, 0};
  return sl_emit(ctx, &o);
}

START_TEST(combined_aggregate_and_window_function) {
  wu_build b = {.spec = sl_window_sliding(10000, 5000)};
  b.fn.builtin = SL_AGG_COUNT;
  b.fn.process = combined_fn;
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  for (int i = 0; i < 5; i++)
    push(h, "a", "x", 4000 + i * 1000); /* 4000..8000 */
  sl_harness_end(h);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 3);
  ck_assert_str_eq(sl_harness_get(h, NULL, 0)->value, "-5000/5000=1");
  ck_assert_str_eq(sl_harness_get(h, NULL, 1)->value, "0/10000=5");
  ck_assert_str_eq(sl_harness_get(h, NULL, 2)->value, "5000/15000=4");
  ck_assert_int_eq(sl_harness_get(h, NULL, 1)->ts, 9999);
  sl_harness_destroy(h);
}
END_TEST

/* Combined count + function that fails for windows of exactly 2. */
static int fail_on_two(sl_ctx_t *ctx, const sl_window_t *w,
                       sl_window_elems_t *e, void *opaque) {
  (void)w;
  (void)opaque;
  sl_record_t r;
  int64_t c = 0;
  if (sl_window_elems_next(e, &r))
    memcpy(&c, r.value, 8);
  if (c == 2)
    return -1;
  return sl_emit(ctx, &r);
}

START_TEST(failing_window_function_is_skipped_by_policy) {
  sl_window_spec_t specs[] = {sl_window_tumbling(1000),
                              sl_window_sliding(2000, 1000),
                              sl_window_session(500)};
  static const char *want[][2] = {
      {"(a,1)@1999", NULL}, {"(a,3)@1999", "(a,1)@2999"}, {"(a,1)@1999", NULL}};
  for (int i = 0; i < 3; i++) {
    wu_build b = {.spec = specs[i]};
    b.fn.builtin = SL_AGG_COUNT;
    b.fn.process = fail_on_two;
    sl_harness_t *h = wu_harness_p(BE, &b, NULL, "skip");
    push(h, "a", "x", 100);
    push(h, "a", "x", 200);
    push(h, "a", "x", 1500);
    wm(h, 999);
    WU_EXPECT_NONE(h); /* the window of 2 failed: skipped, counted */
    sl_op_stats_t st;
    ck_assert_int_eq(sl_job_op_stats(sl_harness_job(h), "win", &st), SL_OK);
    ck_assert_uint_eq(st.errors, 1);
    /* Later windows of the key still fire. */
    ck_assert_int_eq(sl_harness_end(h), SL_OK);
    wu_expect(h, true, want[i], want[i][1] ? 2 : 1);
    sl_harness_destroy(h);
  }
}
END_TEST

START_TEST(builtin_aggregates) {
  static const sl_window_agg aggs[] = {SL_AGG_COUNT, SL_AGG_SUM, SL_AGG_MIN,
                                       SL_AGG_MAX, SL_AGG_AVG};
  static const char *want[] = {"(a,4)@999", "(a,10)@999", "(a,-3)@999",
                               "(a,8)@999", "(a,2.5)@999"};
  for (int s = 0; s < 2; s++) { /* tumbling, then sessions (merge) */
    for (size_t i = 0; i < 5; i++) {
      wu_build b = {.spec = sl_window_tumbling(1000)};
      if (s) {
        b.spec = sl_window_session(300);
      }
      b.fn.builtin = aggs[i];
      b.fn.num = wu_num;
      sl_harness_t *h = wu_harness(BE, &b, NULL);
      push(h, "a", "1", s ? 0 : 100);
      push(h, "a", "8", s ? 899 : 200);
      push(h, "a", "-3", 300);          /* sessions: 0, 899, 300, 600 */
      push(h, "a", "4", s ? 600 : 400); /* merge into [0, 1199) */
      sl_harness_end(h);
      char w[32];
      snprintf(w, sizeof(w), "%s", want[i]);
      if (s) /* the session ends at 899 + 300 */
        memcpy(strchr(w, '@'), "@1198", 6);
      const char *ws[] = {w};
      wu_expect(h, aggs[i] == SL_AGG_COUNT, ws, 1);
      sl_harness_destroy(h);
    }
  }
}
END_TEST

/* An element whose number cannot be read, added to a window that holds
 * its key's accumulator already (the per-record path that finds it
 * before the key is made current): under error.policy=skip it is
 * skipped and counted, and the window's other elements still sum; under
 * fail the job fails. Tumbling windows, then sessions; 8-byte keys,
 * which that path is for. */
START_TEST(malformed_element_of_an_open_window) {
  static const char *want[] = {"(aaaaaaaa,6)@999", "(aaaaaaaa,6)@799"};
  for (int s = 0; s < 2; s++) {
    for (int fail = 0; fail < 2; fail++) {
      wu_build b = {.spec =
                        s ? sl_window_session(500) : sl_window_tumbling(1000)};
      b.fn.builtin = SL_AGG_SUM;
      b.fn.num = wu_num;
      sl_harness_t *h = wu_harness_p(BE, &b, NULL, fail ? "fail" : "skip");
      push(h, "aaaaaaaa", "1", 100);
      push(h, "bbbbbbbb", "7", 150);
      int rc = sl_harness_push_kv(h, 0, "aaaaaaaa", "", 200);
      if (fail) {
        ck_assert_int_ne(rc, SL_OK);
        sl_harness_destroy(h);
        continue;
      }
      ck_assert_int_eq(rc, SL_OK);
      push(h, "aaaaaaaa", "5", 300);
      ck_assert_int_eq(sl_harness_end(h), SL_OK);
      sl_op_stats_t st;
      ck_assert_int_eq(sl_job_op_stats(sl_harness_job(h), "win", &st), SL_OK);
      ck_assert_uint_eq(st.errors, 1);
      const char *ws[] = {want[s], s ? "(bbbbbbbb,7)@649" : "(bbbbbbbb,7)@999"};
      wu_expect(h, false, ws, 2);
      sl_harness_destroy(h);
    }
  }
}
END_TEST

/* Integer extractor: the record value as a decimal int64, all of it. */
static int num_int(const sl_record_t *rec, int64_t *out, void *opaque) {
  (void)opaque;
  char b[32], *end;
  if (!rec->value_len || rec->value_len >= sizeof(b))
    return -1;
  memcpy(b, rec->value, rec->value_len);
  b[rec->value_len] = '\0';
  errno = 0;
  long long v = strtoll(b, &end, 10);
  if (*end || errno)
    return -1;
  *out = v;
  return 0;
}

/* SUM_INT, MIN_INT and MAX_INT are exact beyond 2^53 (where a double
 * would round: 2^53 + 1 twice sums to 2^54 + 2, not 2^54), and SUM_INT
 * wraps around like Java's long. Tumbling windows (one accumulator),
 * sessions (merged accumulators) and sliding windows (per-slice
 * accumulators merged at firing) give the same results. */
START_TEST(builtin_int_aggregates) {
  static const sl_window_agg aggs[] = {SL_AGG_SUM_INT, SL_AGG_MIN_INT,
                                       SL_AGG_MAX_INT};
  static const char *vals[3][3] = {
      {"9007199254740993", "9007199254740993", "-1"},
      {"9223372036854775807", "9223372036854775806", "1"},
      {"-9223372036854775808", "-9223372036854775807", "0"}};
  static const char *want[3][3] = {
      {"(a,18014398509481985)", "(b,-2)", "(c,1)"},
      {"(a,-1)", "(b,1)", "(c,-9223372036854775808)"},
      {"(a,9007199254740993)", "(b,9223372036854775807)", "(c,0)"}};
  static const char *keys[] = {"a", "b", "c"};
  for (int s = 0; s < 3; s++) { /* tumbling, sessions, sliding */
    for (size_t i = 0; i < 3; i++) {
      wu_build b = {.spec = s == 0   ? sl_window_tumbling(1000)
                            : s == 1 ? sl_window_session(300)
                                     : sl_window_sliding(1000, 500)};
      b.fn.builtin = aggs[i];
      b.fn.num_int = num_int;
      sl_harness_t *h = wu_harness(BE, &b, NULL);
      for (int k = 0; k < 3; k++) /* at 600, 700, 800: one window each */
        for (int e = 0; e < 3; e++)
          push(h, keys[k], vals[k][e], 600 + 100 * e);
      ck_assert_int_eq(sl_harness_end(h), SL_OK);
      /* Results carry max_ts: 999; the session [600, 1100); sliding
       * windows [500, 1500) and [0, 1000) hold all three. */
      size_t nw = s == 2 ? 6 : 3;
      char lines[6][64];
      const char *ws[6];
      for (size_t j = 0; j < nw; j++) {
        snprintf(lines[j], sizeof(lines[j]), "%s@%s", want[i][j % 3],
                 s == 0   ? "999"
                 : s == 1 ? "1099"
                 : j < 3  ? "999"
                          : "1499");
        ws[j] = lines[j];
      }
      wu_expect(h, true, ws, nw);
      sl_harness_destroy(h);
    }
  }
}
END_TEST

static int gen_one(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  *out = (sl_record_t){"k", 1, "1", 1, (int64_t)i};
  return 0;
}

/* A user aggregate: mean of the values, with merge and result. */
typedef struct mean_acc {
  double sum;
  int64_t n;
} mean_acc;
static void mean_init(void *acc, void *opaque) {
  (void)opaque;
  ((mean_acc *)acc)->sum = 0;
  ((mean_acc *)acc)->n = 0;
}
static int mean_add(void *acc, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  double v;
  if (wu_num(rec, &v, NULL))
    return -1;
  ((mean_acc *)acc)->sum += v;
  ((mean_acc *)acc)->n++;
  return 0;
}
static void mean_merge(void *acc, const void *o, void *opaque) {
  (void)opaque;
  ((mean_acc *)acc)->sum += ((const mean_acc *)o)->sum;
  ((mean_acc *)acc)->n += ((const mean_acc *)o)->n;
}
static void mean_result(const void *acc, void *out, void *opaque) {
  (void)opaque;
  const mean_acc *a = acc;
  double r = a->sum / (double)a->n;
  memcpy(out, &r, sizeof(r));
}

START_TEST(user_aggregate_with_merge_and_result) {
  wu_build b = {.spec = sl_window_sliding(2000, 1000)};
  b.fn = (sl_window_fn_t){.acc_size = sizeof(mean_acc),
                          .init = mean_init,
                          .add = mean_add,
                          .merge = mean_merge,
                          .result_size = sizeof(double),
                          .result = mean_result};
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  push(h, "a", "1", 500);
  push(h, "a", "2", 1500);
  push(h, "a", "6", 1700);
  sl_harness_end(h);
  WU_EXPECT(h, false, "(a,1)@999", "(a,3)@1999", "(a,4)@2999");
  sl_harness_destroy(h);
  /* Sessions merge accumulators with merge. */
  b.spec = sl_window_session(600);
  h = wu_harness(BE, &b, NULL);
  push(h, "a", "1", 0);
  push(h, "a", "2", 1000);
  push(h, "a", "6", 500); /* bridges [0, 600) and [1000, 1600) */
  sl_harness_end(h);
  WU_EXPECT(h, false, "(a,3)@1599");
  sl_harness_destroy(h);
}
END_TEST

START_TEST(bad_specs_are_refused) {
  sl_job_t *job = tu_job(1, NULL);
  sl_generator_opts_t go = {.count = 1, .gen = gen_one};
  sl_stream_t *k = sl_key_by(sl_source_generator(job, "g", &go), NULL, NULL);
  sl_window_fn_t cnt = {.builtin = SL_AGG_COUNT};
  sl_window_spec_t bad[] = {sl_window_tumbling(0), sl_window_sliding(10, 0),
                            sl_window_session(0), sl_window_count(0)};
  for (size_t i = 0; i < 4; i++)
    ck_assert_ptr_null(sl_window(k, "w", &bad[i], &cnt, NULL));
  sl_window_spec_t ok = sl_window_tumbling(10);
  sl_window_fn_t none = {0}, sum_no_num = {.builtin = SL_AGG_SUM};
  ck_assert_ptr_null(sl_window(k, "w", &ok, &none, NULL));
  ck_assert_ptr_null(sl_window(k, "w", &ok, &sum_no_num, NULL));

  sl_window_spec_t ses = sl_window_session(5);
  sl_window_fn_t no_merge = {.add = wu_add_sum, .acc_size = 8};
  ck_assert_ptr_null(sl_window(k, "w", &ses, &no_merge, NULL));
  ck_assert_int_eq(sl_job_run(job), SL_ERR_INVAL);
  ck_assert_ptr_nonnull(strstr(sl_job_errmsg(job), "size must be > 0"));
  sl_job_destroy(job);
  /* An integer aggregate needs the integer extractor, not num. */
  sl_window_fn_t int_with_num = {.builtin = SL_AGG_MAX_INT, .num = wu_num};
  sl_window_fn_t unknown = {.builtin = (sl_window_agg)(SL_AGG_MAX_INT + 1),
                            .num = wu_num};
  const sl_window_fn_t *fns[] = {&int_with_num, &unknown};
  const char *msgs[] = {"window \"w\": the built-in integer aggregate needs "
                        "an integer extractor (num_int)",
                        "window \"w\": unknown built-in aggregate"};
  for (int i = 0; i < 2; i++) {
    job = tu_job(1, NULL);
    k = sl_key_by(sl_source_generator(job, "g", &go), NULL, NULL);
    ck_assert_ptr_null(sl_window(k, "w", &ok, fns[i], NULL));
    ck_assert_str_eq(sl_job_errmsg(job), msgs[i]);
    sl_job_destroy(job);
  }
}
END_TEST

/* Processing-time windows of every assigner against a small reference
 * model, with a manual clock moved at random between random elements. */
typedef struct pt_win {
  int key;
  int64_t start, end;
  double sum;
} pt_win;

static int pt_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(random_processing_time_windows) {
  for (int kind = 0; kind < 3; kind++) {
    wu_build b = {.spec = kind == 0   ? sl_window_tumbling(50)
                          : kind == 1 ? sl_window_sliding(60, 20)
                                      : sl_window_session(15)};
    b.spec.time = SL_PROC_TIME;
    b.spec.offset = kind == 0 ? 7 : 0;
    b.fn.builtin = SL_AGG_SUM;
    b.fn.num = wu_num;
    sl_harness_t *h = wu_harness(BE, &b, NULL);
    pt_win *open = calloc(4096, sizeof(*open));
    size_t n_open = 0, n_want = 0;
    char **want = calloc(20000, sizeof(char *));
    uint64_t x = 99 + (uint64_t)kind;
    int64_t now = 0;
    for (int op = 0; op < 3000; op++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      bool last = op == 2999;
      if (!last && x % 10 < 7) {
        int key = (int)(x / 10 % 5), v = 1 + (int)(x / 50 % 9);
        char k[4], vs[4];
        snprintf(k, sizeof(k), "k%d", key);
        snprintf(vs, sizeof(vs), "%d", v);
        push(h, k, vs, -123); /* the record's own timestamp plays no part */
        if (kind == 2) {      /* sessions merge when they touch */
          pt_win nw = {key, now, now + 15, v};
          for (size_t i = 0; i < n_open;) {
            pt_win *o = &open[i];
            if (o->key == key && o->start <= nw.end && o->end >= nw.start) {
              nw.start = o->start < nw.start ? o->start : nw.start;
              nw.end = o->end > nw.end ? o->end : nw.end;
              nw.sum += o->sum;
              *o = open[--n_open];
            } else {
              i++;
            }
          }
          open[n_open++] = nw;
        } else {
          int64_t size = kind == 0 ? 50 : 60, slide = kind == 0 ? 50 : 20;
          int64_t off = kind == 0 ? 7 : 0;
          int64_t r = (now - off) % slide;
          for (int64_t st = now - (r < 0 ? r + slide : r); st > now - size;
               st -= slide) {
            size_t i = 0;
            while (i < n_open && (open[i].key != key || open[i].start != st))
              i++;
            if (i == n_open)
              open[n_open++] = (pt_win){key, st, st + size, 0};
            open[i].sum += v;
          }
        }
        continue;
      }
      now += last ? 1000000 : (int64_t)(x / 10 % 26);
      ck_assert_int_eq(sl_harness_set_time(h, now), SL_OK);
      for (size_t i = 0; i < n_open;) {
        if (open[i].end - 1 <= now) {
          char *w = malloc(64);
          snprintf(w, 64, "(k%d,%g)@%" PRId64, open[i].key, open[i].sum,
                   open[i].end - 1);
          want[n_want++] = w;
          open[i] = open[--n_open];
        } else {
          i++;
        }
      }
    }
    size_t n = sl_harness_count(h, NULL);
    char **got = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
      got[i] = malloc(96);
      wu_fmt(sl_harness_get(h, NULL, i), false, got[i], 96);
    }
    qsort(got, n, sizeof(char *), pt_cmp);
    qsort(want, n_want, sizeof(char *), pt_cmp);
    ck_assert_msg(n_want > 100, "too few windows: %zu", n_want);
    ck_assert_msg(n == n_want, "kind %d: %zu results, expected %zu", kind, n,
                  n_want);
    for (size_t i = 0; i < n; i++)
      ck_assert_str_eq(got[i], want[i]);
    for (size_t i = 0; i < n; i++)
      free(got[i]);
    for (size_t i = 0; i < n_want; i++)
      free(want[i]);
    free(got);
    free(want);
    free(open);
    sl_harness_destroy(h);
  }
}
END_TEST

/* ---- Joins ----------------------------------------------------------------*/

static const char *out(sl_harness_t *h, size_t i, int64_t *ts) {
  const sl_record_t *r = sl_harness_get(h, NULL, i);
  ck_assert_ptr_nonnull(r);
  if (ts)
    *ts = r->ts;
  return r->value;
}

START_TEST(window_join_pairs_per_window) {
  wu_build b = {
      .kind = 1, .spec = sl_window_tumbling(1000), .join = wu_join_fmt};
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "a", "x1", 100), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 1, "a", "y1", 200), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "a", "x2", 900), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 1, "a", "y2", 1500), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 1, "b", "y3", 300), SL_OK);
  sl_harness_watermark(h, 0, 999);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0); /* both inputs needed */
  sl_harness_watermark(h, 1, 999);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 2);
  int64_t ts;
  ck_assert_str_eq(out(h, 0, &ts), "x1|y1");
  ck_assert_int_eq(ts, 999);
  ck_assert_str_eq(out(h, 1, &ts), "x2|y1");
  sl_harness_end(h); /* [1000, 2000) has no left element: nothing */
  ck_assert_uint_eq(sl_harness_count(h, NULL), 2);
  sl_harness_destroy(h);
}
END_TEST

START_TEST(interval_join_flink_semantics) {
  wu_build b = {.kind = 2, .join = wu_join_fmt};
  b.ij.lower = -2;
  b.ij.upper = 1;
  b.ij.late_left_tag = "late-l";
  const char *tags[] = {"late-l", NULL};
  sl_harness_t *h = wu_harness(BE, &b, tags);
  ck_assert_int_eq(sl_harness_push_kv(h, 1, "a", "r0", 0), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 1, "a", "r3", 3), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "a", "l2", 2), SL_OK);
  /* l2 joins r in [0, 3]: r0 and r3, at max(l.ts, r.ts). */
  ck_assert_uint_eq(sl_harness_count(h, NULL), 2);
  int64_t ts0, ts1;
  const char *a0 = out(h, 0, &ts0), *a1 = out(h, 1, &ts1);
  if (strcmp(a0, "l2|r0") != 0) {
    const char *t = a0;
    int64_t tt = ts0;
    a0 = a1, ts0 = ts1, a1 = t, ts1 = tt;
  }
  ck_assert_str_eq(a0, "l2|r0");
  ck_assert_int_eq(ts0, 2);
  ck_assert_str_eq(a1, "l2|r3");
  ck_assert_int_eq(ts1, 3);
  sl_harness_clear(h);
  /* A right element joins buffered lefts in [r.ts - 1, r.ts + 2]. */
  ck_assert_int_eq(sl_harness_push_kv(h, 1, "a", "r4", 4), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  ck_assert_int_eq(sl_harness_push_kv(h, 1, "a", "r1", 1), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 1);
  ck_assert_str_eq(out(h, 0, NULL), "l2|r1");
  sl_harness_clear(h);
  /* Other keys never join. */
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "b", "l9", 4), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  ck_assert_int_eq(sl_harness_push_kv(h, 1, "a", "r9", 9), SL_OK);
  /* Late: ts below the watermark. */
  sl_harness_watermark(h, 0, 10);
  sl_harness_watermark(h, 1, 10);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "a", "l5", 5), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  ck_assert_uint_eq(sl_harness_count(h, "late-l"), 1);
  ck_assert_int_eq(sl_harness_push_kv(h, 1, "a", "r6", 6), SL_OK);
  sl_op_stats_t st;
  sl_job_op_stats(sl_harness_job(h), "join", &st);
  ck_assert_uint_eq(st.late_dropped, 1);
  /* r9 stays buffered until the watermark reaches 9 + 2 (the latest
   * left it can join is at 11)... */
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "a", "l10", 10), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 1);
  ck_assert_str_eq(out(h, 0, &ts0), "l10|r9");
  ck_assert_int_eq(ts0, 10);
  sl_harness_clear(h);
  /* ...and then its timer removes it, as in Flink: a left at 11, not
   * late, no longer finds it. */
  sl_harness_watermark(h, 0, 11);
  sl_harness_watermark(h, 1, 11);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "a", "l11", 11), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  sl_harness_destroy(h);

  /* Exclusive bounds. */
  b.ij = (sl_interval_join_spec_t){
      .lower = 0, .upper = 2, .lower_exclusive = true, .upper_exclusive = true};
  h = wu_harness(BE, &b, NULL);
  sl_harness_push_kv(h, 0, "a", "l", 10);
  sl_harness_push_kv(h, 1, "a", "r10", 10);
  sl_harness_push_kv(h, 1, "a", "r11", 11);
  sl_harness_push_kv(h, 1, "a", "r12", 12);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 1);
  ck_assert_str_eq(out(h, 0, NULL), "l|r11");
  sl_harness_destroy(h);
}
END_TEST

int main(void) {
  Suite *s = suite_create("window");
  TCase *tc = tcase_create("window");
  tcase_set_timeout(tc, 120);
  int n = WU_N_BACKENDS;
  tcase_add_loop_test(tc, tumbling_flink_sequence, 0, n);
  tcase_add_loop_test(tc, tumbling_state_survives_snapshot, 0, n);
  tcase_add_loop_test(tc, session_state_survives_snapshot, 0, n);
  tcase_add_loop_test(tc, sliding_state_survives_snapshot, 0, n);
  tcase_add_loop_test(tc, sliding_flink_sequence, 0, n);
  tcase_add_loop_test(tc, sliding_per_window_path_matches, 0, n);
  tcase_add_loop_test(tc, negative_timestamps_and_offset, 0, n);
  tcase_add_loop_test(tc, sliding_with_gaps_between_windows, 0, n);
  tcase_add_loop_test(tc, sessions_merge_when_they_touch, 0, n);
  tcase_add_loop_test(tc, session_dynamic_gap, 0, n);
  tcase_add_loop_test(tc, lateness_refires_and_side_output, 0, n);
  tcase_add_loop_test(tc, sliding_lateness_refires_only_live_windows, 0, n);
  tcase_add_loop_test(tc, session_lateness_merges_into_fired_session, 0, n);
  tcase_add_loop_test(tc, count_window_fires_and_purges, 0, n);
  tcase_add_loop_test(tc, count_trigger_on_tumbling_windows, 0, n);
  tcase_add_loop_test(tc, continuous_event_time_trigger, 0, n);
  tcase_add_loop_test(tc, continuous_trigger_on_merging_sessions, 0, n);
  tcase_add_loop_test(tc, processing_time_windows, 0, n);
  tcase_add_loop_test(tc, random_processing_time_windows, 0, n);
  tcase_add_loop_test(tc, full_window_function_sees_elements_and_bounds, 0, n);
  tcase_add_loop_test(tc, combined_aggregate_and_window_function, 0, n);
  tcase_add_loop_test(tc, builtin_aggregates, 0, n);
  tcase_add_loop_test(tc, builtin_int_aggregates, 0, n);
  tcase_add_loop_test(tc, failing_window_function_is_skipped_by_policy, 0, n);
  tcase_add_loop_test(tc, malformed_element_of_an_open_window, 0, n);
  tcase_add_loop_test(tc, user_aggregate_with_merge_and_result, 0, n);
  tcase_add_test(tc, bad_specs_are_refused);
  tcase_add_loop_test(tc, window_join_pairs_per_window, 0, n);
  tcase_add_loop_test(tc, interval_join_flink_semantics, 0, n);
  suite_add_tcase(s, tc);
  return wu_run(s);
}
