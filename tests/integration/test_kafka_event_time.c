/* SPDX-License-Identifier: Apache-2.0 */
/* Event time of Kafka jobs across parallelism and restores: a job with
 * more source subtasks than partitions fires every window (with and
 * without an idle timeout) exactly as at P=1; a job restored from a
 * checkpoint taken after it consumed everything reaches the watermark of
 * the run that did not fail and ends with the same output; and a restore
 * never changes which records are late. Jobs "end" as the examples'
 * --exit-at-end did before sources knew their end: once the output's
 * watermark has passed the input's end marker. Bounded jobs (is_end:
 * the end marker finishes its partition) end by themselves, also when
 * restored after every partition finished, at any parallelism. */
#include <check.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/checkpoint.h"
#include "sluice/window.h"
#include "test_kafka_util.h"
#include "test_outs.h"

#define END_TS 100000 /* event time of the end marker on every partition */
#define WAIT_MS 20000 /* real-time cutoff for what must happen */

/* Output collected in memory: test_outs.h. */

/* ---- The job ------------------------------------------------------------- */

/* What was produced, in order: the expected output of a bounded job. */
typedef struct sent {
  int part;
  char key[16];
  int64_t ts;
} sent;

typedef struct env {
  tk_cluster c;
  rd_kafka_t *prod;
  char dir[256];
  int parts;
  uint64_t produced;
  uint64_t markers; /* end markers among produced */
  sent sent[512];
} env;

static void env_start(env *e, int parts) {
  memset(e, 0, sizeof(*e));
  tk_start(&e->c, 1);
  tk_topic(&e->c, "in", parts);
  e->parts = parts;
  e->prod = tk_producer(&e->c);
  snprintf(e->dir, sizeof(e->dir), "/tmp/sluice-ket-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(e->dir));
  outs_reset();
}

static void env_stop(env *e) {
  rd_kafka_destroy(e->prod);
  tk_stop(&e->c);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
  ck_assert_int_eq(system(cmd), 0);
  outs_reset();
}

static void send_ts(env *e, int part, const char *key, int64_t ts) {
  tk_send(e->prod, "in", part, key, "x", ts, NULL, NULL);
  ck_assert_uint_lt(e->produced, sizeof(e->sent) / sizeof(e->sent[0]));
  sent *x = &e->sent[e->produced++];
  x->part = part;
  snprintf(x->key, sizeof(x->key), "%s", key);
  x->ts = ts;
}

static void send_end(env *e, int part) {
  send_ts(e, part, "end", END_TS);
  e->markers++;
}

/* The end-of-partition predicate of bounded jobs: the marker's key. */
static bool is_end(const sl_kafka_msg_t *m, const sl_record_t *r, void *o) {
  (void)m, (void)o;
  return r->key_len == 3 && memcmp(r->key, "end", 3) == 0;
}

/* Kafka (message timestamps, watermark = max - 1 per partition) -> key_by
 * -> tumbling 1 s count with allowed lateness 0 and a late side output ->
 * in-memory sinks. idle_ms: the watermark's idle timeout (0: none). from:
 * restore.from, or NULL. bounded: the end marker ends its partition
 * (is_end), and a job that ends takes a final checkpoint. */
static sl_job_t *build_job(env *e, int par, int64_t idle_ms, const char *from,
                           bool bounded) {
  const char *kv[] = {"checkpoint.dir",
                      e->dir,
                      "checkpoint.interval.ms",
                      "3600000",
                      "checkpoint.final",
                      bounded ? "true" : "false",
                      "broker.timeout.ms",
                      "10000",
                      "log.level",
                      "error",
                      from ? "restore.from" : NULL,
                      from,
                      NULL};
  sl_job_t *job = tk_job("event-time", tk_conf(&e->c, par, kv));
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST,
                               .is_end = bounded ? is_end : NULL};
  sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
  sl_watermark_spec_t wm = {
      .kind = SL_WM_BOUNDED, .bound_ms = 0, .idle_timeout_ms = idle_ms};
  sl_with_watermarks(src, &wm);
  sl_window_spec_t spec = sl_window_tumbling(1000);
  spec.late_tag = "late";
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT};
  sl_stream_t *w =
      sl_window(sl_key_by(src, NULL, NULL), "count", &spec, &fn, NULL);
  ck_assert_int_eq(sl_sink(w, "out", count_sink, NULL), 0);
  ck_assert_int_eq(
      sl_sink(sl_side_output(w, "late"), "lateout", late_sink, NULL), 0);
  return job;
}

static sl_job_t *build(env *e, int par, int64_t idle_ms, const char *from) {
  return build_job(e, par, idle_ms, from, false);
}

static void wait_op(sl_job_t *job, const char *uid, uint64_t records_in,
                    int64_t wm) {
  sl_op_stats_t st = {0};
  for (int i = 0; i < WAIT_MS / 25; i++) {
    ck_assert_int_eq(sl_job_op_stats(job, uid, &st), 0);
    if (st.records_in >= records_in && st.watermark >= wm)
      return;
    tk_sleep_ms(25);
  }
  ck_abort_msg("%s: %" PRIu64 " of %" PRIu64 " records in, watermark %" PRId64
               " never reached %" PRId64,
               uid, st.records_in, records_in, st.watermark, wm);
}

/* Waits until the windows saw n records and the output's watermark passed
 * the end marker, then stops the job (the examples' --exit-at-end). */
static void run_to_end(sl_job_t *job, uint64_t n) {
  tk_run r;
  tk_run_start(&r, job);
  wait_op(job, "count", n, INT64_MIN);
  wait_op(job, "out", 0, END_TS - 1);
  ck_assert_int_eq(tk_run_stop(&r), 0);
  sl_job_destroy(job);
}

static void wait_checkpoint(sl_job_t *job, uint64_t want) {
  sl_checkpoint_info_t i = {0};
  for (int k = 0; k < WAIT_MS / 25; k++) {
    ck_assert_int_eq(sl_job_checkpoint_info(job, &i), 0);
    if (i.id >= want)
      return;
    tk_sleep_ms(25);
  }
  ck_abort_msg("checkpoint %" PRIu64 " did not complete (have %" PRIu64 ")",
               want, i.id);
}

/* ---- More subtasks than partitions --------------------------------------- */

/* Windows on both partitions, keys spread over every worker, then the end
 * marker on each partition. */
static void produce_two_partitions(env *e) {
  char key[16];
  for (int i = 0; i < 60; i++) {
    snprintf(key, sizeof(key), "k%d", i % 7);
    send_ts(e, i % 2, key, 100 + i * 97);
  }
  send_end(e, 0);
  send_end(e, 1);
  tk_flush(e->prod);
}

static void more_subtasks_than_partitions(int64_t idle_ms) {
  env e;
  env_start(&e, 2);
  produce_two_partitions(&e);
  run_to_end(build(&e, 1, idle_ms, NULL), e.produced);
  char *ref = outs_take();
  ck_assert(strstr(ref, "window key=k6") != NULL);
  for (int par = 3; par <= 5; par += 2) {
    outs_reset();
    run_to_end(build(&e, par, idle_ms, NULL), e.produced);
    char *got = outs_take();
    ck_assert_msg(strcmp(got, ref) == 0, "P=%d:\n%s\nP=1:\n%s", par, got, ref);
    free(got);
  }
  free(ref);
  env_stop(&e);
}

START_TEST(more_subtasks_than_partitions_no_idle_timeout) {
  more_subtasks_than_partitions(0);
}
END_TEST

START_TEST(more_subtasks_than_partitions_idle_timeout) {
  /* Longer than the test: only the subtasks without partitions are idle. */
  more_subtasks_than_partitions(3600000);
}
END_TEST

/* ---- Restores ------------------------------------------------------------ */

/* Run 1 reads what produce_a wrote, checkpoints once the windows saw it
 * all (with the watermark that came with it), and stops without a final
 * checkpoint (a crash). produce_b then writes the rest, and run 2 (at
 * par2) restores the checkpoint and runs to the end. The output of both
 * runs must be exactly the output of one run over all of it, fed in the
 * same two steps (the reference). */
typedef void (*produce_fn)(env *e);

static char *reference(int parts, produce_fn produce_a, int64_t wm_a,
                       produce_fn produce_b) {
  env e;
  env_start(&e, parts);
  produce_a(&e);
  sl_job_t *job = build(&e, 1, 0, NULL);
  tk_run r;
  tk_run_start(&r, job);
  wait_op(job, "count", e.produced, wm_a);
  produce_b(&e);
  wait_op(job, "count", e.produced, INT64_MIN);
  wait_op(job, "out", 0, END_TS - 1);
  ck_assert_int_eq(tk_run_stop(&r), 0);
  sl_job_destroy(job);
  char *ref = outs_take();
  env_stop(&e);
  return ref;
}

static void restored(int parts, int par2, produce_fn produce_a, int64_t wm_a,
                     produce_fn produce_b) {
  char *ref = reference(parts, produce_a, wm_a, produce_b);
  env e;
  env_start(&e, parts);
  produce_a(&e);
  sl_job_t *job = build(&e, 1, 0, NULL);
  tk_run r;
  tk_run_start(&r, job);
  wait_op(job, "count", e.produced, wm_a);
  ck_assert_int_eq(sl_job_checkpoint(job), 0);
  wait_checkpoint(job, 1);
  ck_assert_int_eq(tk_run_stop(&r), 0);
  sl_job_destroy(job);
  uint64_t before = e.produced;
  produce_b(&e);
  run_to_end(build(&e, par2, 0, "latest"), e.produced - before);
  char *got = outs_take();
  ck_assert_msg(strcmp(got, ref) == 0, "restored at P=%d:\n%s\nreference:\n%s",
                par2, got, ref);
  free(got);
  free(ref);
  env_stop(&e);
}

/* Everything, end markers included, is read before the checkpoint. */
static void all_with_ends(env *e) {
  produce_two_partitions(e);
}
static void nothing(env *e) {
  (void)e;
}

START_TEST(restore_after_everything_was_read_ends) {
  /* The restart reads nothing; it must still reach the end. */
  restored(2, 1, all_with_ends, END_TS - 1, nothing);
}
END_TEST

/* Partition 0 is complete (up to its end marker) before the checkpoint;
 * partition 1 stops at 2.5 s, so windows of partition 0's keys after that
 * are pending in the checkpoint. After the restore only partition 1 has
 * records: partition 0 must not hold the watermark back at the minimum. */
static void p0_done_p1_half(env *e) {
  for (int i = 0; i < 20; i++)
    send_ts(e, 0, "a", 100 + i * 400);
  send_end(e, 0);
  for (int i = 0; i < 5; i++)
    send_ts(e, 1, "b", 100 + i * 500);
  tk_flush(e->prod);
}
static void p1_rest(env *e) {
  for (int i = 5; i < 20; i++)
    send_ts(e, 1, "b", 100 + i * 500);
  send_end(e, 1);
  tk_flush(e->prod);
}

START_TEST(restore_fires_pending_windows) {
  restored(2, 1, p0_done_p1_half, 2100 - 1, p1_rest);
}
END_TEST

START_TEST(restore_at_other_parallelism_fires_pending_windows) {
  /* P=1 -> 3: the partitions' event time moves with them. */
  restored(2, 3, p0_done_p1_half, 2100 - 1, p1_rest);
}
END_TEST

/* One partition: windows up to 5.2 s, then (after the watermark 5199 has
 * passed) a record of window [1 s, 2 s), late, and one of [5 s, 6 s), not
 * late, then the end. */
static void up_to_5200(env *e) {
  send_ts(e, 0, "a", 100);
  send_ts(e, 0, "a", 1500);
  send_ts(e, 0, "a", 5200);
  tk_flush(e->prod);
}
static void late_and_not_late(env *e) {
  send_ts(e, 0, "a", 1200);
  send_ts(e, 0, "a", 5150);
  send_end(e, 0);
  tk_flush(e->prod);
}

START_TEST(restore_keeps_lateness) {
  char *ref = reference(1, up_to_5200, 5199, late_and_not_late);
  /* What the reference says, so the comparison below is meaningful. */
  ck_assert_msg(strstr(ref, "late key=a ts=1200 ") != NULL, "%s", ref);
  ck_assert_msg(strstr(ref, "window key=a ts=5999 v=2\n") != NULL, "%s", ref);
  ck_assert_msg(strstr(ref, "window key=a ts=1999 v=1\n") != NULL, "%s", ref);
  free(ref);
  restored(1, 1, up_to_5200, 5199, late_and_not_late);
}
END_TEST

/* ---- Bounded input: the end marker finishes its partition -------------- */

/* What a bounded job must write for everything produced so far: per key
 * and 1 s window the count of records before their partition's first end
 * marker (none is late: each partition is in order and the watermark is
 * the minimum over partitions). Sorted like outs_take(); caller frees. */
static char *expected(const env *e) {
  char *line[512];
  int64_t count[512];
  size_t n = 0;
  bool ended[16] = {false};
  for (uint64_t i = 0; i < e->produced; i++) {
    const sent *x = &e->sent[i];
    if (ended[x->part])
      continue;
    if (!strcmp(x->key, "end")) {
      ended[x->part] = true;
      continue;
    }
    char buf[128];
    int64_t end = x->ts - x->ts % 1000 + 1000;
    snprintf(buf, sizeof(buf), "window key=%s ts=%" PRId64 " v=", x->key,
             end - 1);
    size_t j = 0;
    while (j < n && strcmp(line[j], buf))
      j++;
    if (j == n) {
      line[n] = strdup(buf);
      count[n++] = 0;
    }
    count[j]++;
  }
  for (size_t j = 0; j < n; j++) {
    char buf[160];
    snprintf(buf, sizeof(buf), "%s%" PRId64, line[j], count[j]);
    free(line[j]);
    line[j] = strdup(buf);
  }
  qsort(line, n, sizeof(char *), cmp_line);
  size_t len = 1;
  for (size_t j = 0; j < n; j++)
    len += strlen(line[j]) + 1;
  char *s = calloc(1, len);
  for (size_t j = 0; j < n; j++) {
    strcat(strcat(s, line[j]), "\n");
    free(line[j]);
  }
  return s;
}

typedef struct alone {
  sl_job_t *job;
  int rc;
  atomic_bool done;
} alone;

static void *alone_main(void *arg) {
  alone *a = arg;
  a->rc = sl_job_run(a->job);
  atomic_store(&a->done, true);
  return NULL;
}

/* Runs a bounded job, which must end by itself within WAIT_MS (else it is
 * stopped and the test fails), and destroys it. Returns how many records
 * its source emitted. */
static uint64_t run_alone(sl_job_t *job) {
  alone a = {job, -999, false};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, alone_main, &a), 0);
  for (int i = 0; i < WAIT_MS / 25 && !atomic_load(&a.done); i++)
    tk_sleep_ms(25);
  bool ended = atomic_load(&a.done);
  if (!ended)
    sl_job_stop(job);
  pthread_join(t, NULL);
  sl_op_stats_t st = {0};
  ck_assert_int_eq(sl_job_op_stats(job, "in", &st), 0);
  if (a.rc)
    fprintf(stderr, "job failed: %s: %s\n", sl_strerror(a.rc),
            sl_job_errmsg(job));
  sl_job_destroy(job);
  ck_assert_msg(ended,
                "the job did not end by itself within %d ms "
                "(its source emitted %" PRIu64 " records)",
                WAIT_MS, st.records_out);
  ck_assert_int_eq(a.rc, 0);
  return st.records_out;
}

/* Records after a partition's end marker: never read by a bounded job. */
static void after_the_ends(env *e) {
  for (int p = 0; p < e->parts; p++)
    send_ts(e, p, "after", END_TS + 5000);
  tk_flush(e->prod);
}

START_TEST(bounded_job_ends_by_itself) {
  env e;
  env_start(&e, 2);
  produce_two_partitions(&e);
  after_the_ends(&e);
  char *want = expected(&e);
  ck_assert(strstr(want, "window key=k6") != NULL);
  /* P=3: the subtask without partitions ends at once. */
  for (int par = 1; par <= 3; par += 2) {
    outs_reset();
    ck_assert_uint_eq(run_alone(build_job(&e, par, 0, NULL, true)),
                      e.produced - e.markers - 2);
    char *got = outs_take();
    ck_assert_msg(strcmp(got, want) == 0, "P=%d:\n%s\nexpected:\n%s", par, got,
                  want);
    free(got);
  }
  free(want);
  env_stop(&e);
}
END_TEST

/* The job ran to its end (its final checkpoint has every partition
 * finished, positions after the markers); restored, at P=1 and then P=2,
 * it reads nothing (not even what was written after the markers since),
 * ends by itself and writes nothing more. */
START_TEST(bounded_restore_after_the_end_reads_nothing) {
  env e;
  env_start(&e, 2);
  produce_two_partitions(&e);
  char *want = expected(&e);
  run_alone(build_job(&e, 1, 0, NULL, true));
  char *got = outs_take();
  ck_assert_msg(strcmp(got, want) == 0, "%s\nexpected:\n%s", got, want);
  free(got);
  after_the_ends(&e);
  for (int par = 1; par <= 2; par++) {
    outs_reset();
    ck_assert_uint_eq(run_alone(build_job(&e, par, 0, "latest", true)), 0);
    got = outs_take();
    ck_assert_msg(strcmp(got, "") == 0, "restored at P=%d wrote:\n%s", par,
                  got);
    free(got);
  }
  free(want);
  env_stop(&e);
}
END_TEST

/* A crash after partition 0 finished (the checkpoint records it) while
 * partition 1 is half read; the rest of partition 1 and records after
 * partition 0's marker are written, and the job restored at par2 runs to
 * its end by itself. Both runs' output must be exactly the output of one
 * bounded run over it all. */
static void bounded_restored(int par2) {
  env e;
  env_start(&e, 2);
  p0_done_p1_half(&e);
  sl_job_t *job = build_job(&e, 1, 0, NULL, true);
  tk_run r;
  tk_run_start(&r, job);
  wait_op(job, "count", e.produced - e.markers, 2100 - 1);
  ck_assert_int_eq(sl_job_checkpoint(job), 0);
  wait_checkpoint(job, 1);
  /* A stop, not an end: no maximum watermark. Its final checkpoint is
   * the same as the one above (nothing was read since). */
  ck_assert_int_eq(tk_run_stop(&r), 0);
  sl_job_destroy(job);
  p1_rest(&e);
  after_the_ends(&e);
  run_alone(build_job(&e, par2, 0, "latest", true));
  char *got = outs_take();
  char *want = expected(&e);
  ck_assert_msg(strcmp(got, want) == 0, "restored at P=%d:\n%s\nexpected:\n%s",
                par2, got, want);
  free(got);
  free(want);
  env_stop(&e);
}

START_TEST(bounded_restore_mid_way_ends) {
  bounded_restored(1);
}
END_TEST

START_TEST(bounded_restore_mid_way_at_other_parallelism_ends) {
  /* P=1 -> 2: subtask 0 owns only the finished partition 0 and ends at
   * once; subtask 1 reads the rest of partition 1. */
  bounded_restored(2);
}
END_TEST

int main(void) {
  Suite *s = suite_create("kafka_event_time");
  TCase *tc = tcase_create("event_time");
  tcase_set_timeout(tc, 240);
  tcase_add_test(tc, more_subtasks_than_partitions_no_idle_timeout);
  tcase_add_test(tc, more_subtasks_than_partitions_idle_timeout);
  tcase_add_test(tc, restore_after_everything_was_read_ends);
  tcase_add_test(tc, restore_fires_pending_windows);
  tcase_add_test(tc, restore_at_other_parallelism_fires_pending_windows);
  tcase_add_test(tc, restore_keeps_lateness);
  tcase_add_test(tc, bounded_job_ends_by_itself);
  tcase_add_test(tc, bounded_restore_after_the_end_reads_nothing);
  tcase_add_test(tc, bounded_restore_mid_way_ends);
  tcase_add_test(tc, bounded_restore_mid_way_at_other_parallelism_ends);
  suite_add_tcase(s, tc);
  /* The mock cluster's control API hangs in a forked child. */
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
