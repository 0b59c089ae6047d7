/* SPDX-License-Identifier: Apache-2.0 */
/* Watermark strategies of a source: a user generator (SL_WM_CUSTOM) that
 * emits periodically (watermark.interval.ms on a manual clock) or
 * punctuated (from on_event, right after its record), its idleness under
 * the idle timeout and its own idle mark, and its watermark across a
 * checkpoint and restore; and stopping a job with and without drain.
 * Every run's records and watermarks are compared exactly with what the
 * rules give. */
#include <check.h>
#include <inttypes.h>
#include <unistd.h>

#include "check_main.h"
#include "sluice/checkpoint.h"
#include "sluice/window.h"
#include "testutil.h"

/* The log as one line: "R<ts>" per record, "W<wm>" per watermark (MAX for
 * the maximum), "E" at the end. Caller frees. */
static char *log_str(const tu_log *l) {
  size_t cap = 32 * l->n + 1, len = 0;
  char *s = calloc(1, cap);
  for (size_t i = 0; i < l->n; i++) {
    const tu_event *e = &l->ev[i];
    if (e->kind == TU_END)
      len += (size_t)snprintf(s + len, cap - len, "%sE", len ? " " : "");
    else if (e->kind == TU_WM && e->ts == SL_WATERMARK_MAX)
      len += (size_t)snprintf(s + len, cap - len, "%sWMAX", len ? " " : "");
    else
      len += (size_t)snprintf(s + len, cap - len, "%s%c%" PRId64,
                              len ? " " : "", e->kind, e->ts);
  }
  return s;
}

/* ---- A user generator -----------------------------------------------------
 */

/* Periodic: on_periodic emits the highest timestamp seen - 1 (Flink's
 * BoundedOutOfOrdernessWatermarks with bound 0). Punctuated: on_event
 * emits a record's timestamp when its value is "p". Idle: on_periodic
 * marks the input idle when no record came since the last call. Counts
 * instances, to check that each is destroyed. */
typedef struct ugen {
  int64_t max_ts;
  bool seen; /* a record since the last on_periodic */
} ugen;

static _Atomic int live_gens;

static int ugen_create(void **state, void *opaque) {
  (void)opaque;
  ugen *g = calloc(1, sizeof(*g));
  if (!g)
    return SL_ERR_NOMEM;
  g->max_ts = SL_TS_MIN;
  *state = g;
  live_gens++;
  return 0;
}

static void ugen_destroy(void *state, void *opaque) {
  (void)opaque;
  free(state);
  live_gens--;
}

static void ugen_event(sl_wm_output_t *out, const sl_record_t *rec, void *state,
                       void *opaque) {
  ugen *g = state;
  bool punctuated = opaque != NULL;
  if (rec->ts > g->max_ts)
    g->max_ts = rec->ts;
  g->seen = true;
  if (punctuated && rec->value_len == 1 && *(const char *)rec->value == 'p')
    sl_wm_emit(out, rec->ts);
}

static void ugen_periodic(sl_wm_output_t *out, void *state, void *opaque) {
  (void)opaque;
  ugen *g = state;
  if (g->max_ts != SL_TS_MIN)
    sl_wm_emit(out, g->max_ts - 1);
}

static void ugen_periodic_idle(sl_wm_output_t *out, void *state, void *opaque) {
  ugen *g = state;
  ugen_periodic(out, state, opaque);
  if (!g->seen)
    sl_wm_mark_idle(out);
  g->seen = false;
}

static const sl_watermark_gen_t periodic_gen = {.create = ugen_create,
                                                .destroy = ugen_destroy,
                                                .on_event = ugen_event,
                                                .on_periodic = ugen_periodic};
static const sl_watermark_gen_t punctuated_gen = {
    .create = ugen_create, .destroy = ugen_destroy, .on_event = ugen_event};
static const sl_watermark_gen_t idle_mark_gen = {.create = ugen_create,
                                                 .destroy = ugen_destroy,
                                                 .on_event = ugen_event,
                                                 .on_periodic =
                                                     ugen_periodic_idle};

/* ---- A scripted source on a manual clock -----------------------------------
 */

/* Each poll takes the next step: emit records (ts, value) or nothing,
 * then move the clock by adv ms; past the last step the input ends. */
typedef struct step {
  int n;
  int64_t ts[4];
  const char *v[4];
  int64_t adv;
} step;

typedef struct script {
  const step *steps;
  int n_steps, next;
  sl_clock_t *clock;
} script;

static int script_poll(sl_source_ctx_t *ctx, void *opaque) {
  script *sc = opaque;
  if (sc->next == sc->n_steps)
    return SL_POLL_END;
  const step *st = &sc->steps[sc->next++];
  for (int i = 0; i < st->n; i++) {
    const char *v = st->v[i] ? st->v[i] : "x";
    sl_record_t r = {NULL, 0, v, strlen(v), st->ts[i]};
    int rc = sl_source_emit(ctx, &r);
    if (rc)
      return rc;
  }
  sl_clock_advance(sc->clock, st->adv);
  return st->n ? SL_POLL_MORE : SL_POLL_EMPTY;
}

/* Runs one source with spec into a log (P = 1, watermark.interval.ms =
 * 250) and returns the log's line. */
static char *run_script(const step *steps, int n, sl_watermark_spec_t spec) {
  const char *kv[] = {"watermark.interval.ms", "250", NULL};
  sl_job_t *job = tu_job_kv(1, kv);
  script sc = {steps, n, 0, sl_clock_new_manual(0)};
  sl_job_set_clock(job, sc.clock);
  sl_source_ops_t ops = {.poll = script_poll};
  tu_log log;
  tu_log_init(&log);
  sl_stream_t *s = sl_with_watermarks(sl_source(job, "s", &ops, &sc), &spec);
  ck_assert_int_eq(sl_sink(tu_log_op(s, "log", &log), "sink", tu_discard, NULL),
                   0);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_job_destroy(job);
  sl_clock_destroy(sc.clock);
  char *got = log_str(&log);
  tu_log_free(&log);
  ck_assert_int_eq(live_gens, 0);
  return got;
}

START_TEST(custom_periodic_watermarks) {
  /* One record per poll, 100 ms apart: on_periodic runs at the polls that
   * end at 0 ms (the first), 250 ms or later (300), 550 or later (600)
   * and 850 or later (900); each emits the highest timestamp so far - 1
   * after that poll's record. A lower or equal watermark is not emitted
   * again; the end of input brings the maximum. */
  static const step st[] = {
      {1, {100}, {0}, 0},   {1, {90}, {0}, 100},  {1, {150}, {0}, 100},
      {1, {120}, {0}, 100}, {1, {300}, {0}, 100}, {1, {250}, {0}, 100},
      {1, {260}, {0}, 100}, {1, {400}, {0}, 100}, {1, {399}, {0}, 100},
      {1, {380}, {0}, 100}, {0, {0}, {0}, 0},
  };
  sl_watermark_spec_t spec = {.kind = SL_WM_CUSTOM, .gen = &periodic_gen};
  char *got = run_script(st, 11, spec);
  const char *want = "R100 W99 R90 R150 R120 W149 R300 R250 R260 W299 R400 "
                     "R399 R380 W399 WMAX E";
  ck_assert_msg(strcmp(got, want) == 0, "got  %s\nwant %s", got, want);
  free(got);
}
END_TEST

START_TEST(custom_punctuated_watermarks) {
  /* All records in few polls: a punctuation's watermark follows its own
   * record at once, before the next record of the same poll; a lower
   * punctuation emits nothing. No on_periodic: nothing else. */
  static const step st[] = {
      {4, {100, 150, 120, 300}, {"a", "p", "a", "a"}, 100},
      {3, {310, 200, 305}, {"p", "a", "p"}, 100},
      {1, {400}, {"a"}, 100},
  };
  sl_watermark_spec_t spec = {
      .kind = SL_WM_CUSTOM, .gen = &punctuated_gen, .gen_opaque = (void *)1};
  char *got = run_script(st, 3, spec);
  const char *want = "R100 R150 W150 R120 R300 R310 W310 R200 R305 R400 WMAX E";
  ck_assert_msg(strcmp(got, want) == 0, "got  %s\nwant %s", got, want);
  free(got);
}
END_TEST

/* Idleness: source "a" (the user generator) and source "b" (monotonous,
 * one record per poll) meet in a union. The union's watermark is the
 * minimum, so a holds it back until a goes idle; then it follows b. */
static char *run_idle_union(const sl_watermark_gen_t *gen, int64_t idle_ms,
                            const step *a_steps, int n_a) {
  const char *kv[] = {"watermark.interval.ms", "250", NULL};
  sl_job_t *job = tu_job_kv(1, kv);
  sl_clock_t *clock = sl_clock_new_manual(0);
  sl_job_set_clock(job, clock);
  static const step b_steps[] = {
      {1, {1000}, {0}, 0}, {1, {1010}, {0}, 0}, {1, {1020}, {0}, 0},
      {1, {1030}, {0}, 0}, {1, {1040}, {0}, 0}, {1, {1050}, {0}, 0},
      {1, {1060}, {0}, 0}, {1, {1070}, {0}, 0},
  };
  script a = {a_steps, n_a, 0, clock}, b = {b_steps, 8, 0, clock};
  sl_source_ops_t ops = {.poll = script_poll};
  sl_watermark_spec_t sa = {
      .kind = SL_WM_CUSTOM, .gen = gen, .idle_timeout_ms = idle_ms};
  sl_watermark_spec_t sb = {.kind = SL_WM_MONOTONOUS};
  sl_stream_t *in[2] = {sl_with_watermarks(sl_source(job, "a", &ops, &a), &sa),
                        sl_with_watermarks(sl_source(job, "b", &ops, &b), &sb)};
  tu_log log;
  tu_log_init(&log);
  ck_assert_int_eq(sl_sink(tu_log_op(sl_union(in, 2, "union"), "log", &log),
                           "sink", tu_discard, NULL),
                   0);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_job_destroy(job);
  sl_clock_destroy(clock);
  char *got = log_str(&log);
  tu_log_free(&log);
  ck_assert_int_eq(live_gens, 0);
  return got;
}

START_TEST(custom_generator_idle_timeout) {
  /* a: a record at 10 in its first poll, then empty polls 100 ms apart.
   * Its periodic watermark is 9 (at 0 ms, again at 300 ms without
   * change). Each worker round polls a, then b. a's last record was at
   * 0 ms: at 300 ms (its fourth poll, b has read 1000..1020) the idle
   * timeout of 300 ms has passed and the union follows b's watermark
   * (1019 at once) until both end. */
  static const step a_steps[] = {
      {1, {10}, {0}, 0},  {0, {0}, {0}, 100}, {0, {0}, {0}, 100},
      {0, {0}, {0}, 100}, {0, {0}, {0}, 100}, {0, {0}, {0}, 100},
      {0, {0}, {0}, 100}, {0, {0}, {0}, 100}, {0, {0}, {0}, 100},
  };
  char *got = run_idle_union(&periodic_gen, 300, a_steps, 9);
  const char *want = "R10 R1000 W9 R1010 R1020 W1019 R1030 W1029 R1040 W1039 "
                     "R1050 W1049 R1060 W1059 R1070 W1069 WMAX E";
  ck_assert_msg(strcmp(got, want) == 0, "got  %s\nwant %s", got, want);
  free(got);
}
END_TEST

START_TEST(custom_generator_marks_idle_and_record_reactivates) {
  /* No idle timeout: the generator itself marks a idle at an on_periodic
   * that saw no record since the previous one (at 300 ms: the call at
   * 0 ms saw the record at 10). A record of a at ts 20 (at 600 ms) makes
   * it active again: the union's watermark stays where b took it (1049:
   * it never goes back), and a's periodic 19 holds it there until a
   * ends (its last poll after b's 1070), when it follows b again. */
  static const step a_steps[] = {
      {1, {10}, {0}, 0},   {0, {0}, {0}, 100}, {0, {0}, {0}, 100},
      {0, {0}, {0}, 100},  {0, {0}, {0}, 100}, {0, {0}, {0}, 100},
      {1, {20}, {0}, 100}, {0, {0}, {0}, 100},
  };
  char *got = run_idle_union(&idle_mark_gen, 0, a_steps, 8);
  const char *want = "R10 R1000 W9 R1010 R1020 W1019 R1030 W1029 R1040 W1039 "
                     "R1050 W1049 R20 R1060 R1070 W1069 WMAX E";
  ck_assert_msg(strcmp(got, want) == 0, "got  %s\nwant %s", got, want);
  free(got);
}
END_TEST

START_TEST(custom_generator_refused_without_gen) {
  sl_job_t *job = tu_job_kv(1, NULL);
  sl_source_ops_t ops = {.poll = script_poll};
  sl_watermark_spec_t spec = {.kind = SL_WM_CUSTOM};
  ck_assert_ptr_null(
      sl_with_watermarks(sl_source(job, "s", &ops, NULL), &spec));
  ck_assert_int_eq(sl_job_run(job), SL_ERR_INVAL);
  ck_assert(strstr(sl_job_errmsg(job), "needs a generator") != NULL);
  sl_job_destroy(job);
}
END_TEST

/* ---- Restore
 * ----------------------------------------------------------------- */

/* A generator is created anew at a restore and re-derives its watermark
 * from the records it sees, starting from the watermark it had emitted
 * (forwarded before any record): a restored job judges lateness as the
 * run that did not stop. */
typedef struct stop_script {
  script sc;
  sl_job_t *job; /* stop (not end) after the last step */
} stop_script;

static int stop_script_poll(sl_source_ctx_t *ctx, void *opaque) {
  stop_script *ss = opaque;
  if (ss->job && ss->sc.next == ss->sc.n_steps) {
    sl_job_stop(ss->job);
    return SL_POLL_EMPTY;
  }
  return script_poll(ctx, &ss->sc);
}

/* The source keeps no position of its own: each run is given its steps. */
static int no_snapshot(sl_source_ctx_t *ctx, uint64_t id, sl_buf_t *out,
                       void *opaque) {
  (void)ctx, (void)id, (void)out, (void)opaque;
  return 0;
}
static int no_restore(sl_source_ctx_t *ctx, const sl_blob_t *b, size_t n,
                      void *opaque) {
  (void)ctx, (void)b, (void)n, (void)opaque;
  return 0;
}

static char *run_ckpt(const char *dir, const step *steps, int n, bool stop,
                      const char *from) {
  const char *kv[] = {"checkpoint.dir", dir, "restore.from", from, NULL};
  sl_job_t *job = tu_job_kv(1, kv);
  stop_script ss = {{steps, n, 0, sl_clock_new_manual(0)}, stop ? job : NULL};
  sl_job_set_clock(job, ss.sc.clock);
  sl_source_ops_t ops = {
      .poll = stop_script_poll, .snapshot = no_snapshot, .restore = no_restore};
  sl_watermark_spec_t spec = {
      .kind = SL_WM_CUSTOM, .gen = &punctuated_gen, .gen_opaque = (void *)1};
  tu_log log;
  tu_log_init(&log);
  sl_stream_t *s = sl_with_watermarks(sl_source(job, "s", &ops, &ss), &spec);
  ck_assert_int_eq(sl_sink(tu_log_op(s, "log", &log), "sink", tu_discard, NULL),
                   0);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_job_destroy(job);
  sl_clock_destroy(ss.sc.clock);
  char *got = log_str(&log);
  tu_log_free(&log);
  ck_assert_int_eq(live_gens, 0);
  return got;
}

START_TEST(custom_generator_restores_its_watermark) {
  char dir[] = "/tmp/sluice-wms-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  /* Run 1 emits 150 (punctuated) and stops: its final checkpoint has it. */
  static const step run1[] = {
      {4, {100, 150, 120, 300}, {"a", "p", "a", "a"}, 100}};
  char *got = run_ckpt(dir, run1, 1, true, "");
  ck_assert_str_eq(got, "R100 R150 W150 R120 R300 E");
  free(got);
  /* Run 2 starts at 150 before any record; a lower punctuation (140)
   * emits nothing, a higher one does. */
  static const step run2[] = {{3, {200, 140, 320}, {"a", "p", "p"}, 100}};
  got = run_ckpt(dir, run2, 1, false, "latest");
  ck_assert_str_eq(got, "W150 R200 R140 R320 W320 WMAX E");
  free(got);
  char cmd[64];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---- Stop with and without drain -------------------------------------------
 */

/* Emits keys a/b at 100, 1500, 2200, 3900 (one per poll), then asks for
 * the stop (with drain or not) and waits for it with empty polls. */
typedef struct stopper {
  sl_job_t *job;
  bool drain;
  int next;
} stopper;

static const int64_t stop_ts[] = {100, 1500, 2200, 3900, 3950};

static int stopper_poll(sl_source_ctx_t *ctx, void *opaque) {
  stopper *s = opaque;
  if (s->next == 5) {
    s->next++;
    if (s->drain)
      sl_job_stop_drain(s->job);
    else
      sl_job_stop(s->job);
  }
  if (s->next > 5)
    return SL_POLL_EMPTY;
  const char *key = s->next % 2 ? "b" : "a";
  sl_record_t r = {key, 1, "x", 1, stop_ts[s->next++]};
  return sl_source_emit(ctx, &r);
}

static int window_line(sl_ctx_t *ctx, const sl_record_t *r, void *opaque) {
  (void)ctx;
  int64_t n = 0;
  memcpy(&n, r->value, sizeof(n) < r->value_len ? sizeof(n) : r->value_len);
  char line[64];
  snprintf(line, sizeof(line), "%.*s@%" PRId64 "=%" PRId64, (int)r->key_len,
           (const char *)r->key, r->ts, n);
  sl_record_t o = {NULL, 0, line, strlen(line), r->ts};
  return tu_sink_fn(ctx, &o, opaque);
}

static int cmp_rec(const void *a, const void *b) {
  return strcmp(((const tu_rec *)a)->value, ((const tu_rec *)b)->value);
}

/* Window counts per key (1 s tumbling) of a run stopped with or without
 * drain, sorted, at parallelism par. */
static char *run_stop(bool drain, int par) {
  const char *kv[] = {"source.batch.size", "1", NULL};
  sl_job_t *job = tu_job_kv(par, kv);
  stopper st = {job, drain, 0};
  sl_source_ops_t ops = {.poll = stopper_poll};
  sl_watermark_spec_t wm = {.kind = SL_WM_MONOTONOUS};
  sl_stream_t *s = sl_with_watermarks(sl_source(job, "s", &ops, &st), &wm);
  sl_window_spec_t spec = sl_window_tumbling(1000);
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT};
  tu_sink out;
  tu_sink_init(&out);
  sl_stream_t *w =
      sl_window(sl_key_by(s, NULL, NULL), "count", &spec, &fn, NULL);
  ck_assert_int_eq(sl_sink(w, "out", window_line, &out), 0);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_job_destroy(job);
  qsort(out.recs, out.n, sizeof(tu_rec), cmp_rec);
  char *all = calloc(1, out.n * 80 + 1);
  for (size_t i = 0; i < out.n; i++)
    strcat(strcat(all, out.recs[i].value), " ");
  tu_sink_free(&out);
  return all;
}

START_TEST(stop_without_drain_fires_only_passed_windows) {
  /* The watermark reached 3949: windows up to 2999 fired, [3 s, 4 s) not. */
  for (int par = 1; par <= 2; par++) {
    char *got = run_stop(false, par);
    ck_assert_str_eq(got, "a@2999=1 a@999=1 b@1999=1 ");
    free(got);
  }
}
END_TEST

START_TEST(stop_with_drain_fires_every_window) {
  for (int par = 1; par <= 2; par++) {
    char *got = run_stop(true, par);
    ck_assert_str_eq(got, "a@2999=1 a@3999=1 a@999=1 b@1999=1 b@3999=1 ");
    free(got);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("wm_strategies");
  TCase *tc = tcase_create("wm_strategies");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, custom_periodic_watermarks);
  tcase_add_test(tc, custom_punctuated_watermarks);
  tcase_add_test(tc, custom_generator_idle_timeout);
  tcase_add_test(tc, custom_generator_marks_idle_and_record_reactivates);
  tcase_add_test(tc, custom_generator_refused_without_gen);
  tcase_add_test(tc, custom_generator_restores_its_watermark);
  tcase_add_test(tc, stop_without_drain_fires_only_passed_windows);
  tcase_add_test(tc, stop_with_drain_fires_every_window);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
