/* SPDX-License-Identifier: Apache-2.0 */
/* The session-window scenario of test_session_format.c, in two phases
 * around a snapshot: phase 1 wrote the fixtures of
 * fixtures/session_format1 (with the state layout of that time), phase 2
 * runs on a restored operator. Shared with the program that wrote them
 * (fixtures/session_format1/README.md). */
#ifndef SL_SESSION_SCENARIO_H
#define SL_SESSION_SCENARIO_H

#include <stdio.h>
#include <string.h>

#include "sluice.h"

/* A full-window function: the element count and the sum of timestamps. */
static inline int ss_full(sl_ctx_t *ctx, const sl_window_t *win,
                          sl_window_elems_t *elems, void *opaque) {
  (void)opaque;
  sl_record_t r;
  long long n = 0, sum = 0;
  while (sl_window_elems_next(elems, &r) == 1) {
    n++;
    sum += r.ts;
  }
  char buf[64];
  int len = snprintf(buf, sizeof(buf), "[%lld,%lld) n=%lld sum=%lld",
                     (long long)win->start, (long long)win->end, n, sum);
  sl_record_t o = {NULL, 0, buf, (size_t)len, win->end - 1};
  return sl_emit(ctx, &o);
}

/* Variant 0: a count aggregate; 1: the full-window function. Gap 10 ms,
 * allowed lateness 5 ms, late elements to "late". */
static inline sl_stream_t *ss_build(sl_stream_t *const *in, size_t n,
                                    void *opaque) {
  (void)n;
  int variant = *(const int *)opaque;
  sl_window_spec_t s = sl_window_session(10);
  s.allowed_lateness = 5;
  s.late_tag = "late";
  sl_window_fn_t f = {0};
  if (variant == 0)
    f.builtin = SL_AGG_COUNT;
  else
    f.process = ss_full;
  return sl_window(in[0], "win", &s, &f, NULL);
}

static inline int ss_push(sl_harness_t *h, const char *key, int64_t ts) {
  return sl_harness_push_kv(h, 0, key, "x", ts);
}

/* Sessions of every kind at the snapshot: one per key (a, d), two (b),
 * fired and waiting for their cleanup (c), and cleaned (e). */
static inline int ss_phase1(sl_harness_t *h) {
  static const struct {
    const char *k;
    int64_t ts;
  } in[] = {{"a", 70}, {"a", 75},  {"b", 100}, {"b", 130},
            {"c", 50}, {"d", 200}, {"e", 40},  {"e", 44}};
  for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
    int rc = ss_push(h, in[i].k, in[i].ts);
    if (rc)
      return rc;
  }
  return sl_harness_watermark(h, 0, 61);
}

/* Late re-firing (c), a bridge merging two sessions (b), an extension
 * (a), a late element (f), a session only its timers reach (d), and a
 * new key (g) that merges later. A restored operator's watermark starts
 * from the minimum (as in Flink), so phase 2 first gives it phase 1's. */
static inline int ss_phase2(sl_harness_t *h) {
  int rc = sl_harness_watermark(h, 0, 61);
  static const struct {
    const char *k;
    int64_t ts;
  } in[] = {{"c", 57}, {"b", 110}, {"b", 120}, {"a", 84},
            {"f", 30}, {"g", 90},  {"g", 95}};
  for (size_t i = 0; i < sizeof(in) / sizeof(in[0]) && !rc; i++)
    rc = ss_push(h, in[i].k, in[i].ts);
  if (!rc)
    rc = sl_harness_watermark(h, 0, 70);
  if (!rc)
    rc = ss_push(h, "c", 62); /* late for [50,67) only after its cleanup */
  if (!rc)
    rc = sl_harness_watermark(h, 0, 300);
  return rc;
}

#endif
