/* SPDX-License-Identifier: Apache-2.0 */
/* Watermark generation (bounded out-of-orderness, monotonous, idleness)
 * and the min-merge of input ports that ignores idle inputs. */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>

#include "time/taskwm.h"
#include "time/watermark.h"

START_TEST(bounded_is_max_minus_bound_minus_one) {
  sl_watermark_spec_t spec = {.kind = SL_WM_BOUNDED, .bound_ms = 100};
  sl__wmgen g;
  sl__wmgen_init(&g, &spec, 0);
  ck_assert_int_eq(sl__wmgen_current(&g), SL_TS_MIN);
  sl__wmgen_on_event(&g, 1000);
  ck_assert_int_eq(sl__wmgen_current(&g), 899);
  sl__wmgen_on_event(&g, 500); /* out of order: no regress */
  ck_assert_int_eq(sl__wmgen_current(&g), 899);
  sl__wmgen_on_event(&g, 2000);
  ck_assert_int_eq(sl__wmgen_current(&g), 1899);
}
END_TEST

START_TEST(monotonous_is_max_minus_one) {
  sl_watermark_spec_t spec = {.kind = SL_WM_MONOTONOUS, .bound_ms = 77};
  sl__wmgen g;
  sl__wmgen_init(&g, &spec, 0);
  sl__wmgen_on_event(&g, 10);
  ck_assert_int_eq(sl__wmgen_current(&g), 9);
}
END_TEST

START_TEST(none_stays_at_min) {
  sl__wmgen g;
  sl__wmgen_init(&g, NULL, 0);
  sl__wmgen_on_event(&g, 10);
  ck_assert_int_eq(sl__wmgen_current(&g), SL_TS_MIN);
}
END_TEST

START_TEST(bounded_near_min_does_not_overflow) {
  sl_watermark_spec_t spec = {.kind = SL_WM_BOUNDED, .bound_ms = 1000};
  sl__wmgen g;
  sl__wmgen_init(&g, &spec, 0);
  sl__wmgen_on_event(&g, SL_TS_MIN + 5);
  ck_assert_int_eq(sl__wmgen_current(&g), SL_TS_MIN);
}
END_TEST

START_TEST(idleness_after_timeout_and_back) {
  sl_watermark_spec_t spec = {.kind = SL_WM_BOUNDED, .idle_timeout_ms = 50};
  sl__wmgen g;
  sl__wmgen_init(&g, &spec, 1000);
  ck_assert(!sl__wmgen_check_idle(&g, 1049));
  ck_assert(sl__wmgen_check_idle(&g, 1050));
  ck_assert(!sl__wmgen_check_idle(&g, 2000)); /* reported once */
  ck_assert(sl__wmgen_on_event(&g, 5));       /* active again */
  sl__wmgen_touch(&g, 2000);
  ck_assert(!sl__wmgen_on_event(&g, 6));
  ck_assert(!sl__wmgen_check_idle(&g, 2049));
  ck_assert(sl__wmgen_check_idle(&g, 2050));
}
END_TEST

START_TEST(no_timeout_never_idle) {
  sl_watermark_spec_t spec = {.kind = SL_WM_BOUNDED};
  sl__wmgen g;
  sl__wmgen_init(&g, &spec, 0);
  ck_assert(!sl__wmgen_check_idle(&g, INT64_MAX / 2));
}
END_TEST

START_TEST(merge_min_ignores_idle) {
  sl__wmport p[3] = {{.wm = 100, .idle = false, .ended = false},
                     {.wm = 50, .idle = true, .ended = false},
                     {.wm = 70, .idle = false, .ended = false}};
  sl__wm_min m = sl__wm_merge(p, 3);
  ck_assert(!m.all_idle);
  ck_assert_int_eq(m.wm, 70);
  p[1].idle = false;
  ck_assert_int_eq(sl__wm_merge(p, 3).wm, 50);
}
END_TEST

START_TEST(merge_all_idle) {
  sl__wmport p[2] = {{.wm = 100, .idle = true, .ended = false},
                     {.wm = 50, .idle = true, .ended = false}};
  ck_assert(sl__wm_merge(p, 2).all_idle);
}
END_TEST

START_TEST(merge_ended_counts_with_last_watermark) {
  sl__wmport p[2] = {{.wm = SL_TS_MAX, .idle = false, .ended = true},
                     {.wm = 40, .idle = false, .ended = false}};
  sl__wm_min m = sl__wm_merge(p, 2);
  ck_assert(!m.all_idle);
  ck_assert_int_eq(m.wm, 40);
  p[0].wm = 30; /* a stopped input keeps holding its watermark */
  ck_assert_int_eq(sl__wm_merge(p, 2).wm, 30);
  p[1].ended = true; /* every input ended: the minimum over them */
  ck_assert_int_eq(sl__wm_merge(p, 2).wm, 30);
}
END_TEST

/* An input that ended does not drive the watermark alone while the others
 * are idle: it would jump to the maximum, and what the idle inputs bring
 * later would all be late. */
START_TEST(merge_ended_and_idle_is_idle) {
  sl__wmport p[3] = {{.wm = SL_TS_MAX, .idle = false, .ended = true},
                     {.wm = 40, .idle = true, .ended = false},
                     {.wm = SL_TS_MAX, .idle = false, .ended = true}};
  sl__wm_min m = sl__wm_merge(p, 3);
  ck_assert(m.all_idle);
  ck_assert_int_eq(m.wm, SL_TS_MIN);
  p[1].idle = false;
  m = sl__wm_merge(p, 3);
  ck_assert(!m.all_idle);
  ck_assert_int_eq(m.wm, 40);
  /* The maximum arrives before the end it announces. */
  p[1].idle = true;
  p[0].ended = false;
  ck_assert(sl__wm_merge(p, 3).all_idle);
}
END_TEST

/* ---- Per-task watermarks (time/taskwm.h) ------------------------------- */

/* A table of one input port whose tasks follow their records. */
static sl__taskwm *records_table(uint32_t n, int64_t bound) {
  sl__taskwm *tw = sl__taskwm_new(n, 1);
  ck_assert_ptr_nonnull(tw);
  ck_assert_int_eq(sl__taskwm_port_set(tw, 0, SL__TASKWM_PORT_RECORDS, bound),
                   SL_OK);
  return tw;
}

/* A task not held follows the operator; a loaded one starts where its
 * snapshot was and, behind the operator, moves with its records
 * (max ts - bound - 1, never back) until it catches up. */
START_TEST(task_behind_moves_with_its_records) {
  sl__taskwm *tw = records_table(4, 10);
  sl__taskwm_advance(tw, 5000, NULL);
  ck_assert_int_eq(sl__taskwm_get(tw, 0), 5000);
  ck_assert(!sl__taskwm_lags(tw, 0));
  sl__taskwm_load(tw, 1, 1500);
  ck_assert(sl__taskwm_lags(tw, 1));
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 1500);
  ck_assert(!sl__taskwm_record(tw, 0, 1, 1200)); /* 1189: below 1500 */
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 1500);
  ck_assert(sl__taskwm_record(tw, 0, 1, 3000));
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 2989);
  ck_assert(!sl__taskwm_record(tw, 0, 1, 2000));
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 2989);
  ck_assert(sl__taskwm_record(tw, 0, 1, 9000)); /* caught up */
  ck_assert(!sl__taskwm_lags(tw, 1));
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 5000);
  ck_assert(!sl__taskwm_record(tw, 0, 1, 9500));
  sl__taskwm_advance(tw, 6000, NULL);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 6000);
  sl__taskwm_free(tw);
}
END_TEST

/* A task loaded and not yet seen is not lifted by the operator (whose
 * watermark may predate the task's arrival), except to the end of
 * input; once a record of it came, it follows every advance. */
START_TEST(fresh_task_is_lifted_only_after_a_record) {
  sl__taskwm *tw = records_table(2, 0);
  sl__taskwm_load(tw, 0, 100);
  sl__taskwm_load(tw, 1, 100);
  sl__taskwm_advance(tw, 1000, NULL);
  ck_assert_int_eq(sl__taskwm_get(tw, 0), 100);
  ck_assert(!sl__taskwm_record(tw, 0, 0, 50)); /* seen: now live */
  ck_assert_int_eq(sl__taskwm_get(tw, 0), 100);
  sl__taskwm_advance(tw, 2000, NULL);
  ck_assert_int_eq(sl__taskwm_get(tw, 0), 2000);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 100);
  sl__taskwm_advance(tw, 1500, NULL); /* watermarks never go back */
  ck_assert_int_eq(sl__taskwm_get(tw, 0), 2000);
  sl__taskwm_advance(tw, SL_TS_MAX, NULL);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), SL_TS_MAX);
  sl__taskwm_drop(tw, 1);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), SL_TS_MAX);
  ck_assert_uint_eq(tw->st[1], SL__TASKWM_NONE);
  sl__taskwm_free(tw);
  sl__taskwm_free(NULL);
}
END_TEST

/* A task loaded and never seen after it, whose partition the source
 * found idle: the release (SL_TS_MAX) lets it follow the port from the
 * port's watermark now, as a record would have; a port that follows
 * records takes nothing else, and nothing for a task already live. */
START_TEST(idle_fresh_task_is_released_by_its_source) {
  sl__taskwm *tw = records_table(3, 0);
  sl__taskwm_load(tw, 0, 100);
  sl__taskwm_load(tw, 1, 100);
  sl__taskwm_load(tw, 2, 100);
  sl__taskwm_advance(tw, 1000, NULL);
  sl__taskwm_set(tw, 0, 0, 700, 1000); /* a value: not for this port */
  ck_assert_int_eq(sl__taskwm_get(tw, 0), 100);
  ck_assert_uint_eq(tw->port[0].st[0], SL__TASKWM_FRESH);
  sl__taskwm_set(tw, 0, 0, SL_TS_MAX, 1000);
  ck_assert_int_eq(sl__taskwm_get(tw, 0), 1000);
  ck_assert(!sl__taskwm_lags(tw, 0));
  sl__taskwm_set(tw, 0, 1, SL_TS_MAX, SL_TS_MIN); /* the port idle */
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 100);
  sl__taskwm_advance(tw, 2000, NULL);
  ck_assert_int_eq(sl__taskwm_get(tw, 0), 2000);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 2000);
  ck_assert_int_eq(sl__taskwm_get(tw, 2), 100); /* not released */
  ck_assert(sl__taskwm_record(tw, 0, 2, 150));  /* live by its record */
  ck_assert_int_eq(sl__taskwm_get(tw, 2), 149);
  sl__taskwm_set(tw, 0, 2, SL_TS_MAX, 5000); /* nothing for a live one */
  ck_assert_int_eq(sl__taskwm_get(tw, 2), 149);
  sl__taskwm_free(tw);
}
END_TEST

/* A loaded task at the minimum, records near the minimum: no overflow. */
START_TEST(task_near_min_does_not_overflow) {
  sl__taskwm *tw = records_table(1, 100);
  sl__taskwm_advance(tw, 0, NULL);
  sl__taskwm_load(tw, 0, SL_TS_MIN);
  ck_assert(!sl__taskwm_record(tw, 0, 0, SL_TS_MIN + 5));
  ck_assert_int_eq(sl__taskwm_get(tw, 0), SL_TS_MIN);
  ck_assert(sl__taskwm_record(tw, 0, 0, SL_TS_MIN + 200));
  ck_assert_int_eq(sl__taskwm_get(tw, 0), SL_TS_MIN + 99);
  sl__taskwm_free(tw);
}
END_TEST

/* Two inputs: a task's watermark is the minimum over its ports; each
 * port that follows records lifts a task seen there to that port's
 * watermark, not the operator's. */
START_TEST(task_of_two_inputs_is_the_minimum) {
  sl__taskwm *tw = sl__taskwm_new(2, 2);
  ck_assert_ptr_nonnull(tw);
  ck_assert_int_eq(sl__taskwm_port_set(tw, 0, SL__TASKWM_PORT_RECORDS, 0),
                   SL_OK);
  ck_assert_int_eq(sl__taskwm_port_set(tw, 1, SL__TASKWM_PORT_RECORDS, 9),
                   SL_OK);
  int64_t pw[2] = {5000, 4000};
  sl__taskwm_advance(tw, 4000, pw);
  sl__taskwm_load(tw, 1, 1000);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 1000);
  ck_assert(!sl__taskwm_record(tw, 0, 1, 3001)); /* port 0 at 3000 */
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 1000);
  ck_assert(sl__taskwm_record(tw, 1, 1, 2010)); /* port 1 at 2000 */
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 2000);
  pw[0] = 6000;
  pw[1] = 4500;
  sl__taskwm_advance(tw, 4500, pw); /* both seen: each to its port's */
  ck_assert_int_eq(tw->port[0].v[1], 6000);
  ck_assert_int_eq(tw->port[1].v[1], 4500);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 4500);
  ck_assert(!sl__taskwm_lags(tw, 1));
  sl__taskwm_free(tw);
}
END_TEST

/* A port fed by a keyed operator upstream takes what that operator
 * sends; downstream is sent a task's watermark when it lags and moved,
 * or starts or stops lagging, and SL_TS_MAX once it follows the
 * operator's again. */
START_TEST(sent_task_watermarks_pass_on) {
  sl__taskwm *tw = sl__taskwm_new(4, 1);
  ck_assert_ptr_nonnull(tw);
  ck_assert_int_eq(sl__taskwm_port_set(tw, 0, SL__TASKWM_PORT_SENT, 0), SL_OK);
  int64_t w = 0;
  sl__taskwm_advance(tw, 5000, NULL);
  sl__taskwm_set(tw, 0, 2, 1000, 0); /* not held here: ignored */
  ck_assert_int_eq(sl__taskwm_get(tw, 2), 5000);
  sl__taskwm_load(tw, 2, 1500); /* waits for what upstream sends */
  ck_assert_int_eq(sl__taskwm_get(tw, 2), 5000);
  ck_assert(!sl__taskwm_due(tw, 2, &w));
  sl__taskwm_set(tw, 0, 2, 1999, 0);
  ck_assert_int_eq(sl__taskwm_get(tw, 2), 1999);
  ck_assert(sl__taskwm_due(tw, 2, &w));
  ck_assert_int_eq(w, 1999);
  ck_assert(!sl__taskwm_due(tw, 2, &w));         /* sent already */
  ck_assert(!sl__taskwm_record(tw, 0, 2, 9000)); /* records move nothing */
  sl__taskwm_set(tw, 0, 2, 2999, 0);
  ck_assert(sl__taskwm_due(tw, 2, &w));
  ck_assert_int_eq(w, 2999);
  sl__taskwm_set(tw, 0, 2, SL_TS_MAX, 0); /* caught up upstream */
  ck_assert_int_eq(sl__taskwm_get(tw, 2), 5000);
  ck_assert(sl__taskwm_due(tw, 2, &w));
  ck_assert_int_eq(w, SL_TS_MAX);
  sl__taskwm_advance(tw, 6000, NULL);
  ck_assert(!sl__taskwm_due(tw, 2, &w));
  sl__taskwm_drop(tw, 2);
  ck_assert(!sl__taskwm_due(tw, 2, &w));
  sl__taskwm_free(tw);
}
END_TEST

/* A port fed by a source with a user generator: a loaded task is held at
 * its snapshot's watermark (the operator's may pass it before the
 * source sends), then follows what the source sends; records move
 * nothing, the operator's advances lift nothing, and at the end of input
 * (SL_TS_MAX) every task follows the operator's. */
START_TEST(source_task_watermarks_hold_from_the_load) {
  sl__taskwm *tw = sl__taskwm_new(4, 1);
  ck_assert_ptr_nonnull(tw);
  ck_assert_int_eq(sl__taskwm_port_set(tw, 0, SL__TASKWM_PORT_SOURCE, 0),
                   SL_OK);
  int64_t w = 0;
  sl__taskwm_advance(tw, 5000, NULL);
  sl__taskwm_load(tw, 1, 1500);
  sl__taskwm_load(tw, 2, SL_TS_MIN);
  ck_assert_int_eq(sl__taskwm_source(tw, 1), 1500);
  ck_assert_int_eq(sl__taskwm_source(tw, 0), SL_TS_MAX); /* not held */
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 1500);
  ck_assert_int_eq(sl__taskwm_get(tw, 2), SL_TS_MIN);
  sl__taskwm_advance(tw, 6000, NULL);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 1500);
  ck_assert(!sl__taskwm_record(tw, 0, 1, 9000));
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 1500);
  ck_assert(sl__taskwm_due(tw, 1, &w)); /* told downstream */
  ck_assert_int_eq(w, 1500);
  sl__taskwm_set(tw, 0, 1, 2999, 6000);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 2999);
  sl__taskwm_set(tw, 0, 2, SL_TS_MAX, 6000); /* not lagging at the source */
  ck_assert_int_eq(sl__taskwm_get(tw, 2), 6000);
  ck_assert(!sl__taskwm_lags(tw, 2));
  sl__taskwm_set(tw, 0, 1, SL_TS_MAX, 6000);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 6000);
  sl__taskwm_load(tw, 3, 100);
  sl__taskwm_advance(tw, SL_TS_MAX, NULL);
  ck_assert_int_eq(sl__taskwm_get(tw, 3), SL_TS_MAX);
  sl__taskwm_drop(tw, 1);
  ck_assert_int_eq(sl__taskwm_source(tw, 1), SL_TS_MAX);
  sl__taskwm_free(tw);
}
END_TEST

/* Two inputs, the first fed by a source with a user generator, idle at
 * the operator while the second took the operator's watermark to 9000
 * (a process that had no partitions yet). A task loaded at 2000 and
 * released by its source follows its port, whose watermark (1500, from
 * before it went idle) is behind the task's, not the operator's 9000:
 * its records between 2000 and 9000 are not late. Once the port moves
 * the operator on, the task follows. */
START_TEST(released_source_task_follows_its_port_not_the_other_input) {
  sl__taskwm *tw = sl__taskwm_new(4, 2);
  ck_assert_ptr_nonnull(tw);
  ck_assert_int_eq(sl__taskwm_port_set(tw, 0, SL__TASKWM_PORT_SOURCE, 0),
                   SL_OK);
  int64_t pw[2] = {1500, 9000};
  sl__taskwm_advance(tw, 9000, pw);
  sl__taskwm_load(tw, 1, 2000);
  sl__taskwm_set(tw, 0, 1, SL_TS_MAX, 1500);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 2000);
  ck_assert(sl__taskwm_lags(tw, 1));
  pw[0] = 9500, pw[1] = 12000;
  sl__taskwm_advance(tw, 9500, pw);
  ck_assert_int_eq(sl__taskwm_get(tw, 1), 9500);
  ck_assert(!sl__taskwm_lags(tw, 1));
  sl__taskwm_free(tw);
}
END_TEST

int main(void) {
  Suite *s = suite_create("watermark");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, bounded_is_max_minus_bound_minus_one);
  tcase_add_test(tc, monotonous_is_max_minus_one);
  tcase_add_test(tc, none_stays_at_min);
  tcase_add_test(tc, bounded_near_min_does_not_overflow);
  tcase_add_test(tc, idleness_after_timeout_and_back);
  tcase_add_test(tc, no_timeout_never_idle);
  tcase_add_test(tc, merge_min_ignores_idle);
  tcase_add_test(tc, merge_all_idle);
  tcase_add_test(tc, merge_ended_counts_with_last_watermark);
  tcase_add_test(tc, merge_ended_and_idle_is_idle);
  tcase_add_test(tc, task_behind_moves_with_its_records);
  tcase_add_test(tc, fresh_task_is_lifted_only_after_a_record);
  tcase_add_test(tc, idle_fresh_task_is_released_by_its_source);
  tcase_add_test(tc, task_near_min_does_not_overflow);
  tcase_add_test(tc, task_of_two_inputs_is_the_minimum);
  tcase_add_test(tc, sent_task_watermarks_pass_on);
  tcase_add_test(tc, source_task_watermarks_hold_from_the_load);
  tcase_add_test(tc, released_source_task_follows_its_port_not_the_other_input);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
