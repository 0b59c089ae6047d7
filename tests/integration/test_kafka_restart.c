/* SPDX-License-Identifier: Apache-2.0 */
/* Restarts of a whole job with real checkpoints: Kafka -> keyed tumbling
 * count (sl_window) -> Kafka, with checkpoint.dir, restore.from=latest and
 * no final checkpoint (a stop stands for a crash). at_least_once: nothing
 * lost, duplicates only of output after the last checkpoint, also when P
 * changes (1 -> 2). exactly_once on the mock: the transaction of N commits
 * between chk-N/_metadata and chk-N/_COMMITTED, output of every committed
 * epoch appears once, a checkpoint without _COMMITTED is resolved through
 * the injected committed-offsets lookup, and the open transaction is
 * aborted when the job stops. */
#include <check.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kafka/kafka_int.h"
#include "operator.h"
#include "sluice/checkpoint.h"
#include "sluice/metrics.h"
#include "test_kafka_util.h"

#define USERS 6
#define PER_WINDOW 3 /* records per user and window */

typedef struct env {
  tk_cluster c;
  rd_kafka_t *prod;
  char dir[256];
  int64_t end[2]; /* records produced per input partition */
} env;

static void env_start(env *e) {
  memset(e, 0, sizeof(*e));
  tk_start(&e->c, 1);
  tk_topic(&e->c, "in", 2);
  tk_topic(&e->c, "out", 1);
  e->prod = tk_producer(&e->c);
  snprintf(e->dir, sizeof(e->dir), "/tmp/sluice-krestart-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(e->dir));
}

static void env_stop(env *e) {
  rd_kafka_destroy(e->prod);
  tk_stop(&e->c);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* Windows [from, to) of every user; user u is on partition u % 2, so
 * timestamps ascend per partition. flush: one record far ahead on each
 * partition, so every window fires. */
static void produce(env *e, int from, int to, bool flush) {
  char v[128], user[16];
  for (int w = from; w < to; w++)
    for (int i = 0; i < PER_WINDOW; i++)
      for (int u = 0; u < USERS; u++) {
        snprintf(user, sizeof(user), "u%d", u);
        snprintf(v, sizeof(v), "{\"user\":\"%s\",\"ts\":%d}", user,
                 w * 1000 + i * 100 + u);
        tk_send(e->prod, "in", u % 2, user, v, 0, NULL, NULL);
        e->end[u % 2]++;
      }
  for (int p = 0; flush && p < 2; p++) {
    tk_send(e->prod, "in", p, "zz", "{\"user\":\"zz\",\"ts\":1000000}", 0, NULL,
            NULL);
    e->end[p]++;
  }
  tk_flush(e->prod);
}

/* The window's result as JSON {"key","end","count"}. */
static int emit_count(sl_ctx_t *ctx, const sl_window_t *win,
                      sl_window_elems_t *elems, void *opaque) {
  (void)opaque;
  sl_record_t r;
  int64_t n = 0;
  if (sl_window_elems_next(elems, &r) == 1 && r.value_len == sizeof(n))
    memcpy(&n, r.value, sizeof(n));
  const void *key;
  size_t klen;
  sl_ctx_key(ctx, &key, &klen);
  json_t *o = json_pack("{s:s%,s:I,s:I}", "key", (const char *)key, klen, "end",
                        (json_int_t)win->end, "count", (json_int_t)n);
  int rc = o ? sl_json_emit(ctx, key, klen, o, win->end - 1) : SL_ERR_NOMEM;
  json_decref(o);
  return rc;
}

static sl_job_t *build(env *e, int par, const char *guarantee,
                       const char *interval) {
  const char *kv[] = {"sink.delivery.guarantee",
                      guarantee,
                      "checkpoint.dir",
                      e->dir,
                      "checkpoint.interval.ms",
                      interval,
                      "checkpoint.final",
                      "false",
                      "restore.from",
                      "latest",
                      "broker.timeout.ms",
                      "10000",
                      NULL};
  sl_job_t *job = tk_job("restart", tk_conf(&e->c, par, kv));
  sl_kafka_source_opts_t so = {.codec = SL_KAFKA_JSON,
                               .key_pointer = "/user",
                               .ts_pointer = "/ts",
                               .start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
  sl_watermark_spec_t wm = {.kind = SL_WM_MONOTONOUS};
  sl_with_watermarks(src, &wm);
  sl_window_spec_t spec = sl_window_tumbling(1000);
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT, .process = emit_count};
  sl_stream_t *counts =
      sl_window(sl_key_by(src, NULL, NULL), "count", &spec, &fn, NULL);
  ck_assert_int_eq(sl_sink_kafka(counts, "out", "out", NULL), 0);
  return job;
}

/* ---- Reading the output -------------------------------------------------- */

typedef struct outrec {
  int user, window;
  int64_t count, offset;
  long epoch; /* -1: no header */
} outrec;

static outrec parse(const tk_msg *m) {
  outrec o = {-1, -1, 0, m->offset, -1};
  json_t *j = json_loads(m->value, 0, NULL);
  ck_assert_msg(j != NULL, "not JSON: %s", m->value);
  const char *key = json_string_value(json_object_get(j, "key"));
  ck_assert_ptr_nonnull(key);
  o.user = key[0] == 'u' ? atoi(key + 1) : -1;
  o.window = (int)(json_integer_value(json_object_get(j, "end")) / 1000) - 1;
  o.count = json_integer_value(json_object_get(j, "count"));
  json_decref(j);
  char buf[32];
  if (*tk_header(m, "sluice.epoch", buf, sizeof(buf)))
    o.epoch = atol(buf);
  return o;
}

/* Reads until every (user, window) of windows [0, windows) was seen at
 * least once. */
static void read_windows(tk_reader *r, int windows, int timeout_ms) {
  for (int waited = 0; waited < timeout_ms; waited += 100) {
    int seen[USERS][8] = {{0}};
    int distinct = 0;
    for (size_t i = 0; i < r->n; i++) {
      outrec o = parse(&r->m[i]);
      if (o.user >= 0 && o.window >= 0 && o.window < windows &&
          !seen[o.user][o.window]++)
        distinct++;
    }
    if (distinct == USERS * windows)
      return;
    tk_read(r, r->n + 1, 100);
  }
  ck_abort_msg("output of windows [0, %d) incomplete after %d ms (%zu msgs)",
               windows, timeout_ms, r->n);
}

static sl_checkpoint_info_t info(sl_job_t *job) {
  sl_checkpoint_info_t i;
  ck_assert_int_eq(sl_job_checkpoint_info(job, &i), 0);
  return i;
}

/* Waits until checkpoint id >= want is complete. */
static uint64_t wait_checkpoint(sl_job_t *job, uint64_t want) {
  for (int i = 0; i < 400; i++) {
    uint64_t id = info(job).id;
    if (id >= want)
      return id;
    tk_sleep_ms(25);
  }
  ck_abort_msg("checkpoint %" PRIu64 " did not complete (have %" PRIu64 ")",
               want, info(job).id);
  return 0;
}

/* Waits until the source emitted n records (everything produced). */
static void wait_consumed(sl_job_t *job, uint64_t n) {
  sl_op_stats_t st = {0};
  for (int i = 0; i < 400; i++) {
    ck_assert_int_eq(sl_job_op_stats(job, "in", &st), 0);
    if (st.records_out >= n)
      return;
    tk_sleep_ms(25);
  }
  ck_abort_msg("source emitted %" PRIu64 " of %" PRIu64 " records",
               st.records_out, n);
}

/* ---- at_least_once --------------------------------------------------------
 */

/* Run 1 at p1: windows 0 and 1 come out, checkpoint, windows 2 and 3 come
 * out, stop (no final checkpoint). Run 2 at p2 restores the checkpoint
 * and finishes. Output before the checkpoint appears once, output after
 * it twice (replayed), every count is exact (state restored with the
 * positions). */
static void alo_restart(int p1, int p2) {
  env e;
  env_start(&e);
  tk_reader r;
  tk_reader_open(&r, &e.c, "out", 1);

  /* Checkpoints on demand only, so the last one is where the test says. */
  sl_job_t *job = build(&e, p1, "at_least_once", "3600000");
  produce(&e, 0, 3, false);
  tk_run run;
  tk_run_start(&run, job);
  read_windows(&r, 2, 20000);
  size_t before = r.n;
  ck_assert_int_eq(sl_job_checkpoint(job), 0);
  uint64_t last = wait_checkpoint(job, 1);
  produce(&e, 3, 5, false);
  read_windows(&r, 4, 20000);
  ck_assert_int_eq(tk_run_stop(&run), SL_OK);
  ck_assert_uint_eq(info(job).id, last);
  sl_job_destroy(job);
  size_t run1 = r.n;

  job = build(&e, p2, "at_least_once", "100");
  produce(&e, 5, 6, true);
  tk_run_start(&run, job);
  read_windows(&r, 6, 20000);
  tk_read(&r, r.n + 100, 500); /* anything more that would arrive */
  ck_assert_uint_eq(info(job).restored_from, last);
  ck_assert_int_eq(tk_run_stop(&run), SL_OK);
  sl_job_destroy(job);

  int times[USERS][8] = {{0}};
  bool early[USERS][8] = {{false}}; /* out before the checkpoint */
  for (size_t i = 0; i < r.n; i++) {
    outrec o = parse(&r.m[i]);
    if (o.user < 0)
      continue;
    ck_assert_msg(o.count == PER_WINDOW, "u%d window %d: count %" PRId64,
                  o.user, o.window, o.count);
    ck_assert_int_eq(o.epoch, -1);
    times[o.user][o.window]++;
    if (i < before)
      early[o.user][o.window] = true;
  }
  for (int u = 0; u < USERS; u++)
    for (int w = 0; w < 6; w++) {
      /* Windows 2 and 3 fired after the checkpoint in run 1 (its window
       * 2 state and the positions before window 3's input were in it): run
       * 2 fires them again. */
      int want = early[u][w] ? 1 : w == 2 || w == 3 ? 2 : 1;
      ck_assert_msg(times[u][w] == want, "u%d window %d: %d times, expected %d",
                    u, w, times[u][w], want);
    }
  ck_assert_uint_eq(r.n, run1 + (size_t)(USERS * 4));
  tk_reader_close(&r);
  env_stop(&e);
}

START_TEST(alo_restart_p1) {
  alo_restart(1, 1);
}
END_TEST

START_TEST(alo_restart_p1_to_p2) {
  alo_restart(1, 2);
}
END_TEST

/* ---- exactly_once ---------------------------------------------------------
 */

/* A participant registered after the Kafka sink's, so the coordinator
 * calls it right after the Kafka commit of the same checkpoint: it sees
 * what the protocol requires at that moment. Records instead of asserting
 * (it runs on the coordinator's thread). */
typedef struct probe {
  env *e;
  sl_job_t *job;
  int calls, bad;
  char why[256];
} probe;

static int probe_commit(uint64_t id, void *opaque) {
  probe *p = opaque;
  char path[512];
  struct stat st;
  p->calls++;
  snprintf(path, sizeof(path), "%s/chk-%" PRIu64 "/_metadata", p->e->dir, id);
  bool meta = stat(path, &st) == 0;
  snprintf(path, sizeof(path), "%s/chk-%" PRIu64 "/_COMMITTED", p->e->dir, id);
  bool committed = stat(path, &st) == 0;
  sl__ktxn_event ev[1024];
  uint64_t ids[1024];
  size_t n = sl__ktxn_log(sl__kjob_get(p->job)->txn, ev, ids, 1024);
  /* ... COMMIT id, BEGIN: the transaction of id committed just now. */
  bool txn = n >= 2 && ev[n - 2] == SL__KTXN_COMMIT && ids[n - 2] == id &&
             ev[n - 1] == SL__KTXN_BEGIN;
  if ((!meta || committed || !txn) && !p->bad++)
    snprintf(p->why, sizeof(p->why),
             "checkpoint %" PRIu64 ": _metadata %d, _COMMITTED %d, "
             "transaction committed %d",
             id, meta, committed, txn);
  return 0;
}

static sl_job_t *build_eos(env *e, int par, probe *pr) {
  sl_job_t *job = build(e, par, "exactly_once", "100");
  memset(pr, 0, sizeof(*pr));
  pr->e = e;
  pr->job = job;
  sl_ckpt_participant_t part = {.commit = probe_commit, .opaque = pr};
  ck_assert_int_eq(sl_job_add_ckpt_participant(job, &part), 0);
  return job;
}

/* The injected committed-offsets lookup (the mock drops offsets sent with
 * a transaction): answers the end offsets of the input, or, when lie is
 * set, something else. */
typedef struct lookup {
  int64_t off[2]; /* the input's end offsets when the run before stopped */
  bool lie;
  int calls;
} lookup;

static int committed_fn(const char *group, const char *topic, int32_t part,
                        int64_t *offset, char *metadata, size_t metadata_size,
                        void *opaque) {
  lookup *l = opaque;
  (void)group, (void)metadata, (void)metadata_size;
  l->calls++;
  *offset = strcmp(topic, "in") == 0 && part >= 0 && part < 2 && !l->lie
                ? l->off[part]
                : -1;
  return 0;
}

static void unlink_committed(env *e, uint64_t id) {
  char path[512];
  snprintf(path, sizeof(path), "%s/chk-%" PRIu64 "/_COMMITTED", e->dir, id);
  ck_assert_int_eq(unlink(path), 0);
}

/* Starts an exactly-once job at parallelism par on the input of the
 * first three windows; returns once windows 0 and 1 are out and the whole
 * input is consumed. */
static sl_job_t *eos_first_run(env *e, int par, probe *pr, tk_reader *r,
                               tk_run *run) {
  sl_job_t *job = build_eos(e, par, pr);
  produce(e, 0, 3, false);
  tk_run_start(run, job);
  read_windows(r, 2, 20000);
  wait_consumed(job, (uint64_t)(e->end[0] + e->end[1]));
  return job;
}

static void expect_aborted_tail(sl_job_t *job) {
  sl__ktxn_event ev[1024];
  uint64_t ids[1024];
  size_t n = sl__ktxn_log(sl__kjob_get(job)->txn, ev, ids, 1024);
  ck_assert_uint_ge(n, 3);
  ck_assert_int_eq(ev[0], SL__KTXN_INIT);
  ck_assert_int_eq(ev[n - 1], SL__KTXN_ABORT);
}

START_TEST(eos_restart_committed_epochs_once) {
  env e;
  env_start(&e);
  tk_reader r;
  tk_reader_open(&r, &e.c, "out", 1);
  probe pr;

  /* Run 1 (P=2): windows 0 and 1 come out; checkpoints every 100 ms. Once
   * the whole input is consumed, two more checkpoints commit everything. */
  tk_run run;
  sl_job_t *job = eos_first_run(&e, 2, &pr, &r, &run);
  uint64_t c1 = wait_checkpoint(job, info(job).id + 2);
  ck_assert_int_eq(tk_run_stop(&run), SL_OK);
  c1 = info(job).id;
  ck_assert_msg(pr.bad == 0, "%s", pr.why);
  ck_assert_int_ge(pr.calls, 2);
  expect_aborted_tail(job);
  sl_job_destroy(job);
  tk_read(&r, r.n + 100, 300);
  size_t run1 = r.n;

  /* The process "died" between _metadata and _COMMITTED of c1: the
   * lookup says the group's offsets equal c1's positions, so c1 is used. */
  unlink_committed(&e, c1);
  job = build_eos(&e, 2, &pr);
  lookup l = {{e.end[0], e.end[1]}, false, 0};
  ck_assert_int_eq(sl_kafka_set_committed_lookup(job, committed_fn, &l), 0);
  int64_t before = e.end[0] + e.end[1];
  produce(&e, 3, 6, true);
  tk_run_start(&run, job);
  read_windows(&r, 6, 20000);
  wait_consumed(job, (uint64_t)(e.end[0] + e.end[1] - before));
  wait_checkpoint(job, info(job).id + 2);
  ck_assert_uint_eq(info(job).restored_from, c1);
  ck_assert_int_ge(l.calls, 2);
  ck_assert_int_eq(tk_run_stop(&run), SL_OK);
  uint64_t c2 = info(job).id;
  ck_assert_uint_gt(c2, c1);
  ck_assert_msg(pr.bad == 0, "%s", pr.why);
  expect_aborted_tail(job);
  sl_job_destroy(job);
  tk_read(&r, r.n + 100, 300);

  /* What a read_committed consumer sees: in each run, epochs before its
   * last committed checkpoint (epoch e is committed by the first
   * checkpoint after e). Every window of every user exactly once. */
  int times[USERS][8] = {{0}};
  for (size_t i = 0; i < r.n; i++) {
    outrec o = parse(&r.m[i]);
    ck_assert_int_ge(o.epoch, 0);
    uint64_t last = i < run1 ? c1 : c2;
    if ((uint64_t)o.epoch >= last || o.user < 0)
      continue;
    /* Run 2's epochs continue from the restored checkpoint. */
    if (i >= run1)
      ck_assert_int_ge(o.epoch, (long)c1);
    ck_assert_int_eq(o.count, PER_WINDOW);
    times[o.user][o.window]++;
  }
  for (int u = 0; u < USERS; u++)
    for (int w = 0; w < 6; w++)
      ck_assert_msg(times[u][w] == 1, "u%d window %d: %d times committed", u, w,
                    times[u][w]);

  /* The same "crash" after c2, but the group's offsets differ: c2's
   * transaction did not commit, so the previous checkpoint is used. */
  unlink_committed(&e, c2);
  job = build_eos(&e, 1, &pr);
  l.lie = true;
  l.calls = 0;
  ck_assert_int_eq(sl_kafka_set_committed_lookup(job, committed_fn, &l), 0);
  tk_run_start(&run, job);
  for (int i = 0; i < 200 && !info(job).restored_from; i++)
    tk_sleep_ms(25);
  ck_assert_int_eq(tk_run_stop(&run), SL_OK);
  ck_assert_uint_eq(info(job).restored_from, c2 - 1);
  ck_assert_int_ge(l.calls, 1);
  sl_job_destroy(job);
  tk_reader_close(&r);
  env_stop(&e);
}
END_TEST

/* The commit of a checkpoint fails for good (the coordinator refuses to
 * end the transaction): the job fails, the transaction is not committed,
 * that checkpoint keeps _metadata without _COMMITTED, and the restart
 * resolves it as uncommitted and recovers every window exactly once from
 * the checkpoint before. */
START_TEST(eos_commit_failure_aborts_then_recovers) {
  env e;
  env_start(&e);
  tk_reader r;
  tk_reader_open(&r, &e.c, "out", 1);
  probe pr;
  tk_run run;
  sl_job_t *job = eos_first_run(&e, 1, &pr, &r, &run);
  wait_checkpoint(job, info(job).id + 1);
  /* EndTxn (API key 26) is only sent by the job's producer. */
  rd_kafka_mock_push_request_errors(
      e.c.mc, 26, 1, RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
  char why[256];
  for (int i = 0;
       i < 600 && sl_job_health(job, why, sizeof(why)) != SL_HEALTH_UNHEALTHY;
       i++)
    tk_sleep_ms(25);
  ck_assert_int_ne(tk_run_stop(&run), SL_OK);
  uint64_t c1 = info(job).id;
  char path[512];
  struct stat st;
  snprintf(path, sizeof(path), "%s/chk-%" PRIu64 "/_metadata", e.dir, c1 + 1);
  ck_assert_msg(stat(path, &st) == 0, "%s missing", path);
  snprintf(path, sizeof(path), "%s/chk-%" PRIu64 "/_COMMITTED", e.dir, c1 + 1);
  ck_assert_msg(stat(path, &st) != 0, "%s exists", path);
  ck_assert_msg(pr.bad == 0, "%s", pr.why);
  sl__ktxn_event ev[1024];
  uint64_t ids[1024];
  size_t n = sl__ktxn_log(sl__kjob_get(job)->txn, ev, ids, 1024);
  ck_assert_int_eq(ev[n - 1], SL__KTXN_ABORT);
  for (size_t i = 0; i < n; i++)
    if (ev[i] == SL__KTXN_COMMIT)
      ck_assert_uint_le(ids[i], c1); /* nothing committed after c1 */
  sl_job_destroy(job);
  tk_read(&r, r.n + 100, 300);
  size_t run1 = r.n;

  /* c1 + 1 has _metadata but no _COMMITTED: the group's offsets (the
   * lookup) do not match it, so the restart uses c1. */
  job = build_eos(&e, 1, &pr);
  lookup l = {{0, 0}, true, 0};
  ck_assert_int_eq(sl_kafka_set_committed_lookup(job, committed_fn, &l), 0);
  produce(&e, 3, 6, true);
  tk_run_start(&run, job);
  read_windows(&r, 6, 20000);
  wait_checkpoint(job, info(job).id + 2);
  ck_assert_uint_eq(info(job).restored_from, c1);
  ck_assert_int_ge(l.calls, 1);
  ck_assert_int_eq(tk_run_stop(&run), SL_OK);
  uint64_t c2 = info(job).id;
  sl_job_destroy(job);
  tk_read(&r, r.n + 100, 300);
  int times[USERS][8] = {{0}};
  for (size_t i = 0; i < r.n; i++) {
    outrec o = parse(&r.m[i]);
    if ((uint64_t)o.epoch >= (i < run1 ? c1 : c2) || o.user < 0)
      continue;
    ck_assert_int_eq(o.count, PER_WINDOW);
    times[o.user][o.window]++;
  }
  for (int u = 0; u < USERS; u++)
    for (int w = 0; w < 6; w++)
      ck_assert_msg(times[u][w] == 1, "u%d window %d: %d times committed", u, w,
                    times[u][w]);
  tk_reader_close(&r);
  env_stop(&e);
}
END_TEST

static Suite *restart_suite(void) {
  Suite *s = suite_create("kafka_restart");
  TCase *tc = tcase_create("restart");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, alo_restart_p1);
  tcase_add_test(tc, alo_restart_p1_to_p2);
  tcase_add_test(tc, eos_restart_committed_epochs_once);
  tcase_add_test(tc, eos_commit_failure_aborts_then_recovers);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(restart_suite());
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
