/* SPDX-License-Identifier: Apache-2.0 */
/* Per-task watermarks of group mode's keyed stage (docs/scaling.md),
 * through the test harness (the production window and process operators,
 * state backends and timers; event time pushed by hand): a task loaded
 * behind the operator's watermark judges its records and fires its timers
 * by its own watermark until it catches up, and a task loaded without a
 * record since is not lifted by the operator's watermark. The harness
 * has no group, so the tasks are loaded here as the runtime loads them
 * (runtime/tasks.c), on the operator's table. */
#include "check_main.h"
#include "runtime/runtime.h"
#include "state/keyed.h"
#include "time/taskwm.h"
#include "window_util.h"

#define BE wu_backends[_i]

static void push(sl_harness_t *h, const char *k, int64_t ts) {
  ck_assert_int_eq(sl_harness_push_kv(h, 0, k, "1", ts), SL_OK);
}
static void wm(sl_harness_t *h, int64_t w) {
  ck_assert_int_eq(sl_harness_watermark(h, 0, w), SL_OK);
}

/* The instance of operator uid. */
static sl_ctx_t *inst_of(sl_harness_t *h, const char *uid) {
  sl_job_t *job = sl_harness_job(h);
  for (int i = 0; i < job->g.n_nodes; i++)
    if (job->g.nodes[i]->uid && !strcmp(job->g.nodes[i]->uid, uid))
      return job->workers[0].inst[job->g.nodes[i]->id];
  ck_abort_msg("no operator %s", uid);
  return NULL;
}

/* Gives the operator uid per-task watermarks (bound 0) on its n_ports
 * inputs, as group mode does for its keyed stage, each following records,
 * and returns the table. */
static sl__taskwm *with_task_ports(sl_harness_t *h, const char *uid,
                                   int n_ports) {
  sl_ctx_t *c = inst_of(h, uid);
  sl__keyed *k = sl_op_keyed(c);
  ck_assert_ptr_nonnull(k);
  ck_assert_ptr_null(k->tw);
  c->tw = k->tw = sl__taskwm_new(sl_harness_job(h)->max_par, n_ports);
  ck_assert_ptr_nonnull(k->tw);
  for (int i = 0; i < n_ports; i++)
    ck_assert_int_eq(sl__taskwm_port_set(k->tw, i, SL__TASKWM_PORT_RECORDS, 0),
                     SL_OK);
  return k->tw;
}

/* Gives the operator uid per-task watermarks (bound 0), as group mode
 * does for its keyed stage, of the given kind (SL__TASKWM_PORT_*), and
 * returns the table. */
static sl__taskwm *with_tasks_of(sl_harness_t *h, const char *uid, int kind) {
  sl_job_t *job = sl_harness_job(h);
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl__node *n = job->g.nodes[i];
    if (!n->uid || strcmp(n->uid, uid))
      continue;
    sl_ctx_t *c = job->workers[0].inst[n->id];
    sl__keyed *k = sl_op_keyed(c);
    ck_assert_ptr_nonnull(k);
    ck_assert_ptr_null(k->tw);
    c->tw = k->tw = sl__taskwm_new(job->max_par, 1);
    ck_assert_ptr_nonnull(k->tw);
    ck_assert_int_eq(sl__taskwm_port_set(k->tw, 0, kind, 0), SL_OK);
    return k->tw;
  }
  ck_abort_msg("no operator %s", uid);
  return NULL;
}

static sl__taskwm *with_tasks(sl_harness_t *h, const char *uid) {
  return with_tasks_of(h, uid, SL__TASKWM_PORT_RECORDS);
}

static uint32_t kg_of(sl_harness_t *h, const char *key) {
  return sl__key_group(sl__hash64(key, strlen(key)),
                       sl_harness_job(h)->max_par);
}

/* Task b arrives at its snapshot's watermark 1500 while the operator's
 * is at 4500: b's records of windows 1 and 2 are not late, its windows
 * fire as its own watermark passes them, a record older than that is
 * late; once b caught up, the operator's watermark is b's again. */
START_TEST(lagging_task_windows) {
  wu_build b = {.spec = sl_window_tumbling(1000)};
  b.fn.builtin = SL_AGG_COUNT;
  b.spec.late_tag = "late";
  const char *tags[] = {"late", NULL};
  sl_harness_t *h = wu_harness(BE, &b, tags);
  sl__taskwm *tw = with_tasks(h, "win");
  ck_assert_uint_ne(kg_of(h, "a"), kg_of(h, "b"));
  sl__taskwm_load(tw, kg_of(h, "a"), SL_TS_MIN);
  push(h, "a", 100);
  push(h, "a", 4200);
  wm(h, 4500);
  WU_EXPECT(h, true, "(a,1)@999");
  sl__taskwm_load(tw, kg_of(h, "b"), 1500);
  push(h, "b", 1600);
  push(h, "b", 1700);
  WU_EXPECT_NONE(h);
  push(h, "b", 900); /* window 0 ended before b's watermark 1699 */
  ck_assert_uint_eq(sl_harness_count(h, "late"), 1);
  ck_assert_int_eq(sl_harness_get(h, "late", 0)->ts, 900);
  sl_harness_clear(h);
  push(h, "b", 2500); /* b's watermark 2499 passes window 1 */
  WU_EXPECT(h, true, "(b,2)@1999");
  push(h, "b", 2600);
  push(h, "b", 5200); /* b at 5199, held to the operator's 4500 */
  WU_EXPECT(h, true, "(b,2)@2999");
  push(h, "b", 4400); /* judged by the operator's watermark again */
  push(h, "a", 4300);
  ck_assert_uint_eq(sl_harness_count(h, "late"), 0);
  WU_EXPECT_NONE(h);
  wm(h, 6000);
  WU_EXPECT(h, true, "(a,2)@4999", "(b,1)@4999", "(b,1)@5999");
  sl_harness_destroy(h);
}
END_TEST

/* A window further down the stage (a keyed operator before it): task b's
 * watermark is what that operator sends, in order with b's records. b's
 * records behind the operator's 4500 are judged by it, its windows fire
 * as it moves, and once the sender says b caught up (SL_TS_MAX) b
 * follows the operator's watermark again. */
START_TEST(sent_task_watermark_judges_downstream) {
  wu_build b = {.spec = sl_window_tumbling(1000)};
  b.fn.builtin = SL_AGG_COUNT;
  b.spec.late_tag = "late";
  const char *tags[] = {"late", NULL};
  sl_harness_t *h = wu_harness(BE, &b, tags);
  sl__taskwm *tw = with_tasks_of(h, "win", SL__TASKWM_PORT_SENT);
  sl_job_t *job = sl_harness_job(h);
  sl_ctx_t *win = NULL;
  for (int i = 0; i < job->g.n_nodes; i++)
    if (job->g.nodes[i]->uid && !strcmp(job->g.nodes[i]->uid, "win"))
      win = job->workers[0].inst[i];
  ck_assert_ptr_nonnull(win);
  uint32_t kb = kg_of(h, "b");
  sl__taskwm_load(tw, kg_of(h, "a"), SL_TS_MIN);
  sl__taskwm_load(tw, kb, SL_TS_MIN);
  push(h, "a", 100);
  wm(h, 4500);
  WU_EXPECT(h, true, "(a,1)@999");
  ck_assert_int_eq(sl__port_task_wm(win, 0, kb, 1500), SL_OK);
  push(h, "b", 1600);
  push(h, "b", 2100);
  push(h, "b", 900); /* window 0 ended before b's 1500 */
  ck_assert_uint_eq(sl_harness_count(h, "late"), 1);
  sl_harness_clear(h);
  WU_EXPECT_NONE(h);
  ck_assert_int_eq(sl__port_task_wm(win, 0, kb, 2000), SL_OK);
  WU_EXPECT(h, true, "(b,1)@1999");
  push(h, "b", 2900);
  ck_assert_int_eq(sl__port_task_wm(win, 0, kb, SL_TS_MAX), SL_OK);
  WU_EXPECT(h, true, "(b,2)@2999");
  push(h, "b", 3900); /* judged by the operator's 4500 again */
  ck_assert_uint_eq(sl_harness_count(h, "late"), 1);
  sl_harness_destroy(h);
}
END_TEST

/* A window whose tasks' watermarks come from their source (a user
 * watermark generator, which the source runs per partition): task b is
 * loaded at its snapshot's 1500 and held there, so the operator's
 * watermark passing it before the source sends fires none of b's
 * windows; what the source sends moves b (its windows fire as it does),
 * and SL_TS_MAX lets b follow the operator's watermark again. */
START_TEST(source_task_watermark_holds_a_loaded_task) {
  wu_build b = {.spec = sl_window_tumbling(1000)};
  b.fn.builtin = SL_AGG_COUNT;
  b.spec.late_tag = "late";
  const char *tags[] = {"late", NULL};
  sl_harness_t *h = wu_harness(BE, &b, tags);
  sl__taskwm *tw = with_tasks_of(h, "win", SL__TASKWM_PORT_SOURCE);
  sl_ctx_t *win = inst_of(h, "win");
  uint32_t kb = kg_of(h, "b");
  sl__taskwm_load(tw, kg_of(h, "a"), SL_TS_MIN);
  ck_assert_int_eq(sl__port_task_wm(win, 0, kg_of(h, "a"), SL_TS_MAX), SL_OK);
  push(h, "a", 100);
  wm(h, 1000);
  WU_EXPECT(h, true, "(a,1)@999");
  sl__taskwm_load(tw, kb, 1500);
  push(h, "b", 1600);
  wm(h, 4500); /* before the source sent b's: b stays at 1500 */
  WU_EXPECT_NONE(h);
  push(h, "b", 1700);
  ck_assert_uint_eq(sl_harness_count(h, "late"), 0);
  ck_assert_int_eq(sl__port_task_wm(win, 0, kb, 1500), SL_OK);
  WU_EXPECT_NONE(h);
  push(h, "b", 2100);
  ck_assert_int_eq(sl__port_task_wm(win, 0, kb, 2099), SL_OK);
  WU_EXPECT(h, true, "(b,2)@1999");
  push(h, "b", 1800); /* window 1 ended at b's 2099 */
  ck_assert_uint_eq(sl_harness_count(h, "late"), 1);
  sl_harness_clear(h);
  ck_assert_int_eq(sl__port_task_wm(win, 0, kb, SL_TS_MAX), SL_OK);
  WU_EXPECT(h, true, "(b,1)@2999");
  push(h, "b", 3900); /* judged by the operator's 4500 again */
  ck_assert_uint_eq(sl_harness_count(h, "late"), 1);
  sl_harness_destroy(h);
}
END_TEST

/* The same sequence without per-task watermarks: b's records of windows
 * 1 to 3 are late at the operator's 4500 (what a moved task's records
 * met before tasks kept their own). */
START_TEST(without_task_watermarks_they_are_late) {
  wu_build b = {.spec = sl_window_tumbling(1000)};
  b.fn.builtin = SL_AGG_COUNT;
  b.spec.late_tag = "late";
  const char *tags[] = {"late", NULL};
  sl_harness_t *h = wu_harness(BE, &b, tags);
  push(h, "a", 100);
  wm(h, 4500);
  WU_EXPECT(h, true, "(a,1)@999");
  push(h, "b", 1600);
  push(h, "b", 2500);
  push(h, "b", 3600);
  ck_assert_uint_eq(sl_harness_count(h, "late"), 3);
  sl_harness_destroy(h);
}
END_TEST

/* ---- A process function: a timer 1000 after each record, whose firing
 * emits "<key>@<ts> wm=<watermark it sees>". */
static int pf_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  return sl_timer_set(ctx, SL_EVENT_TIME, rec->ts + 1000);
}

static int pf_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *op) {
  (void)d, (void)op;
  const void *key;
  size_t kl;
  char v[96];
  ck_assert_int_eq(sl_ctx_key(ctx, &key, &kl), SL_OK);
  snprintf(v, sizeof(v), "%.*s@%" PRId64 " wm=%" PRId64, (int)kl,
           (const char *)key, ts, sl_ctx_watermark(ctx));
  sl_record_t r = {key, kl, v, strlen(v), ts};
  return sl_emit(ctx, &r);
}

static void expect_fired(sl_harness_t *h, const char *const *want, size_t n) {
  ck_assert_uint_eq(sl_harness_count(h, NULL), n);
  for (size_t i = 0; i < n; i++)
    ck_assert_str_eq(sl_harness_get(h, NULL, i)->value, want[i]);
  sl_harness_clear(h);
}
#define FIRED(h, ...)                                                          \
  do {                                                                         \
    const char *w_[] = {__VA_ARGS__};                                          \
    expect_fired(h, w_, sizeof(w_) / sizeof(w_[0]));                           \
  } while (0)

/* b is loaded again (as after a move) at 800 with its timer at 1500
 * pending: the operator's watermark 3000 fires a's timer but not b's,
 * which waits for b's own watermark, seen by on_timer; so does the timer
 * b's next record sets below the operator's watermark. */
START_TEST(fresh_task_timers_wait) {
  char err[256];
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(c, "state.backend", BE, err, sizeof(err)), 0);
  ck_assert_int_eq(
      sl_conf_set(c, "state.dir", wu_state_dir(), err, sizeof(err)), 0);
  sl_process_ops_t ops = {.on_element = pf_element, .on_timer = pf_timer};
  sl_harness_t *h =
      sl_harness_new_process(c, &ops, NULL, NULL, err, sizeof(err));
  ck_assert_msg(h != NULL, "%s", err);
  sl__taskwm *tw = with_tasks(h, "process");
  uint32_t ka = kg_of(h, "a"), kb = kg_of(h, "b");
  ck_assert_uint_ne(ka, kb);
  sl__taskwm_load(tw, ka, SL_TS_MIN);
  sl__taskwm_load(tw, kb, SL_TS_MIN);
  push(h, "a", 0);
  push(h, "b", 500);
  wm(h, 800);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  sl__taskwm_load(tw, kb, 800);
  wm(h, 3000);
  FIRED(h, "a@1000 wm=3000");
  push(h, "b", 2000); /* b at 1999: its 1500 fires; 3000 waits */
  FIRED(h, "b@1500 wm=1999");
  push(h, "b", 3500); /* b caught up: its 3000 fires at the operator's */
  FIRED(h, "b@3000 wm=3000");
  ck_assert_int_eq(sl_harness_end(h), SL_OK);
  FIRED(h, "b@4500 wm="
           "9223372036854775807");
  sl_harness_destroy(h);
}
END_TEST

/* A window join whose second input goes idle: the operator's watermark
 * follows the first input alone, as in one process, and so does every
 * task's watermark, its windows firing with it (an idle input holds no
 * task back). */
START_TEST(idle_input_holds_no_task_back) {
  wu_build b = {
      .kind = 1, .spec = sl_window_tumbling(1000), .join = wu_join_fmt};
  sl_harness_t *h = wu_harness(BE, &b, NULL);
  sl__taskwm *tw = with_task_ports(h, "join", 2);
  sl__taskwm_load(tw, kg_of(h, "a"), SL_TS_MIN);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "a", "x1", 100), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 1, "a", "y1", 200), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 0, "a", "x2", 1200), SL_OK);
  ck_assert_int_eq(sl_harness_push_kv(h, 1, "a", "y2", 1300), SL_OK);
  ck_assert_int_eq(sl_harness_watermark(h, 0, 500), SL_OK);
  ck_assert_int_eq(sl_harness_watermark(h, 1, 500), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 0);
  ck_assert_int_eq(sl__port_idle(inst_of(h, "join"), 1, true), SL_OK);
  ck_assert_int_eq(sl_harness_watermark(h, 0, 2500), SL_OK);
  ck_assert_uint_eq(sl_harness_count(h, NULL), 2);
  ck_assert_str_eq(sl_harness_get(h, NULL, 0)->value, "x1|y1");
  ck_assert_str_eq(sl_harness_get(h, NULL, 1)->value, "x2|y2");
  sl_harness_destroy(h);
}
END_TEST

int main(void) {
  Suite *s = suite_create("task_watermark");
  TCase *tc = tcase_create("core");
  tcase_add_loop_test(tc, lagging_task_windows, 0, WU_N_BACKENDS);
  tcase_add_loop_test(tc, sent_task_watermark_judges_downstream, 0,
                      WU_N_BACKENDS);
  tcase_add_loop_test(tc, without_task_watermarks_they_are_late, 0,
                      WU_N_BACKENDS);
  tcase_add_loop_test(tc, fresh_task_timers_wait, 0, WU_N_BACKENDS);
  tcase_add_loop_test(tc, source_task_watermark_holds_a_loaded_task, 0,
                      WU_N_BACKENDS);
  tcase_add_loop_test(tc, idle_input_holds_no_task_back, 0, WU_N_BACKENDS);
  suite_add_tcase(s, tc);
  return wu_run(s);
}
