/* SPDX-License-Identifier: Apache-2.0 */
/* Bounded Kafka reads (sl_kafka_source_opts_t.stop) on the mock cluster:
 * a job that stops at the offsets that were latest when it started, at
 * given offsets or at a timestamp ends by itself with every window fired
 * and exactly the records before the stop read, also across a checkpoint
 * and restore (the stop offsets are the first run's); and watermark
 * alignment pauses a partition ahead of the slowest one until that one
 * catches up or goes idle (manual clock). */
#include <check.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/checkpoint.h"
#include "sluice/window.h"
#include "test_kafka_util.h"
#include "test_outs.h"

#define WAIT_MS 20000 /* real-time cutoff for what must happen */

/* Output collected in memory: test_outs.h. */

/* ---- The data ------------------------------------------------------------ */

typedef struct sent {
  int part;
  int64_t offset;
  char key[16];
  int64_t ts;
} sent;

typedef struct env {
  tk_cluster c;
  rd_kafka_t *prod;
  char dir[256];
  int parts;
  int64_t next_off[8];
  size_t n;
  sent sent[1024];
} env;

static void env_start(env *e, int parts) {
  memset(e, 0, sizeof(*e));
  tk_start(&e->c, 1);
  tk_topic(&e->c, "in", parts);
  e->parts = parts;
  e->prod = tk_producer(&e->c);
  snprintf(e->dir, sizeof(e->dir), "/tmp/sluice-kb-XXXXXX");
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
  ck_assert_uint_lt(e->n, sizeof(e->sent) / sizeof(e->sent[0]));
  sent *x = &e->sent[e->n++];
  x->part = part;
  x->offset = e->next_off[part]++;
  snprintf(x->key, sizeof(x->key), "%s", key);
  x->ts = ts;
}

/* Per partition, in event-time order: keys k0..k6, 97 ms apart. */
static void produce(env *e, int per_part, int64_t from_ts) {
  char key[16];
  for (int i = 0; i < per_part; i++)
    for (int p = 0; p < e->parts; p++) {
      snprintf(key, sizeof(key), "k%d", (i + p) % 7);
      send_ts(e, p, key, from_ts + i * 97);
    }
  tk_flush(e->prod);
}

/* The window counts (1 s tumbling per key) of the records sent before
 * stop[partition] (an offset; -1: all). None is late: each partition is
 * in order and the watermark is the minimum over partitions. */
static char *expected(const env *e, const int64_t *stop, uint64_t *n_read) {
  char *line[1024];
  int64_t count[1024];
  size_t n = 0;
  *n_read = 0;
  for (size_t i = 0; i < e->n; i++) {
    const sent *x = &e->sent[i];
    if (stop[x->part] >= 0 && x->offset >= stop[x->part])
      continue;
    (*n_read)++;
    char buf[128];
    snprintf(buf, sizeof(buf), "window key=%s ts=%" PRId64 " v=", x->key,
             x->ts - x->ts % 1000 + 999);
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
  char *s = join(line, n);
  for (size_t j = 0; j < n; j++)
    free(line[j]);
  return s;
}

/* ---- The job ------------------------------------------------------------- */

/* Kafka (message timestamps, watermark = max - 1 per partition) -> key_by
 * -> tumbling 1 s count with a late side output -> in-memory sinks. */
static sl_job_t *build_job(env *e, int par, const sl_kafka_source_opts_t *so,
                           const char *from, sl_stream_t **src_out) {
  const char *kv[] = {"checkpoint.dir",
                      e->dir,
                      "checkpoint.interval.ms",
                      "3600000",
                      "broker.timeout.ms",
                      "10000",
                      "source.batch.size",
                      "1",
                      "log.level",
                      "error",
                      from ? "restore.from" : NULL,
                      from,
                      NULL};
  sl_job_t *job = tk_job("bounded", tk_conf(&e->c, par, kv));
  sl_stream_t *src = sl_source_kafka(job, "in", "in", so);
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED, .bound_ms = 0};
  sl_with_watermarks(src, &wm);
  if (src_out)
    *src_out = src;
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

/* Runs a job that must end by itself within WAIT_MS (else it is stopped
 * and the test fails), destroys it and returns how many records its
 * source emitted. */
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

static void check_output(const char *want, int par) {
  char *got = outs_take();
  ck_assert_msg(strcmp(got, want) == 0, "P=%d:\n%s\nexpected:\n%s", par, got,
                want);
  free(got);
}

/* ---- Latest offsets ------------------------------------------------------ */

/* The first message the source decodes writes more to every partition:
 * after the source resolved its stop offsets, so never read. */
typedef struct more {
  env *e;
  atomic_bool done;
} more;

static int produce_more(const sl_kafka_msg_t *m, sl_record_t *rec, char *err,
                        size_t errlen, void *opaque) {
  (void)m, (void)rec, (void)err, (void)errlen;
  more *mo = opaque;
  if (!atomic_exchange(&mo->done, true))
    produce(mo->e, 5, 900000);
  return 0;
}

START_TEST(bounded_latest_ends_by_itself) {
  env e;
  env_start(&e, 2);
  produce(&e, 30, 100);
  /* P=3: the subtask without partitions ends at once. The second run
   * also reads what the first one's decode wrote. */
  for (int par = 1; par <= 3; par += 2) {
    int64_t stop[8];
    for (int p = 0; p < 8; p++)
      stop[p] = e.next_off[p];
    uint64_t n_read;
    char *want = expected(&e, stop, &n_read);
    ck_assert(strstr(want, "window key=k6") != NULL);
    outs_reset();
    more mo = {&e, false};
    sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST,
                                 .stop = SL_KAFKA_STOP_LATEST,
                                 .decode = produce_more,
                                 .decode_opaque = &mo};
    ck_assert_uint_eq(run_alone(build_job(&e, par, &so, NULL, NULL)), n_read);
    ck_assert(atomic_load(&mo.done));
    check_output(want, par);
    free(want);
  }
  env_stop(&e);
}
END_TEST

/* ---- Given offsets and a timestamp --------------------------------------- */

START_TEST(bounded_at_given_offsets) {
  env e;
  env_start(&e, 3);
  produce(&e, 20, 100);
  /* Partition 0 up to offset 7, partition 1 nothing (stop at its start),
   * partition 2 not listed: its latest offset. */
  sl_kafka_offset_t offs[] = {{"in", 0, 7}, {"in", 1, 0}};
  int64_t stop[8] = {7, 0, -1};
  uint64_t n_read;
  char *want = expected(&e, stop, &n_read);
  for (int par = 1; par <= 2; par++) {
    outs_reset();
    sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST,
                                 .stop = SL_KAFKA_STOP_OFFSETS,
                                 .stop_offsets = offs,
                                 .n_stop_offsets = 2};
    ck_assert_uint_eq(run_alone(build_job(&e, par, &so, NULL, NULL)), n_read);
    check_output(want, par);
  }
  free(want);
  env_stop(&e);
}
END_TEST

START_TEST(bounded_at_timestamp) {
  env e;
  env_start(&e, 2);
  produce(&e, 40, 100);
  /* Per partition the first offset with a timestamp >= 2000: i = 20
   * (100 + 20 * 97 = 2040). (The mock answers offsets-for-times with -1,
   * the latest offset then; the source finds the first message at or
   * past the timestamp as it reads, as the broker's lookup would.) */
  int64_t stop[8] = {20, 20};
  uint64_t n_read;
  char *want = expected(&e, stop, &n_read);
  ck_assert_uint_eq(n_read, 40);
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST,
                               .stop = SL_KAFKA_STOP_TIMESTAMP,
                               .stop_ts_ms = 2000};
  ck_assert_uint_eq(run_alone(build_job(&e, 2, &so, NULL, NULL)), n_read);
  check_output(want, 2);
  free(want);
  env_stop(&e);
}
END_TEST

START_TEST(bounded_options_are_checked) {
  env e;
  env_start(&e, 1);
  sl_job_t *job = tk_job("bounded", tk_conf(&e.c, 1, NULL));
  sl_kafka_offset_t bad[] = {{NULL, 0, 1}};
  sl_kafka_source_opts_t so = {
      .stop = SL_KAFKA_STOP_OFFSETS, .stop_offsets = bad, .n_stop_offsets = 1};
  ck_assert_ptr_null(sl_source_kafka(job, "in", "in", &so));
  ck_assert(strstr(sl_job_errmsg(job), "bad stop") != NULL);
  sl_job_destroy(job);
  env_stop(&e);
}
END_TEST

/* ---- Bounded and restored ------------------------------------------------ */

/* Stops the job after `at` records (one per poll: exactly there). */
typedef struct stopper {
  sl_job_t *job;
  uint64_t at, seen;
} stopper;

static int stop_after(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *o,
                      void *opaque) {
  (void)ctx, (void)in, (void)o;
  stopper *s = opaque;
  if (++s->seen == s->at)
    sl_job_stop(s->job);
  return 0;
}

static int discard(sl_ctx_t *ctx, const sl_record_t *r, void *opaque) {
  (void)ctx, (void)r, (void)opaque;
  return 0;
}

/* Run 1 reads 25 records and stops (its final checkpoint has the
 * positions and the stop offsets); more is written to every partition;
 * run 2, restored at par2, stops where run 1 would have and ends by
 * itself. Both runs' output is exactly one bounded run's over the first
 * input. */
static void bounded_restored(int par2) {
  env e;
  env_start(&e, 2);
  produce(&e, 30, 100);
  int64_t stop[8];
  for (int p = 0; p < 8; p++)
    stop[p] = e.next_off[p];
  uint64_t n_read;
  char *want = expected(&e, stop, &n_read);
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST,
                               .stop = SL_KAFKA_STOP_LATEST};
  sl_stream_t *src;
  sl_job_t *job = build_job(&e, 1, &so, NULL, &src);
  stopper st = {job, 25, 0};
  ck_assert_int_eq(sl_sink(sl_map(src, "stopper", stop_after, &st), "discard",
                           discard, NULL),
                   0);
  tk_run r;
  tk_run_start(&r, job);
  pthread_join(r.t, NULL);
  ck_assert_int_eq(r.rc, 0);
  sl_op_stats_t os = {0};
  ck_assert_int_eq(sl_job_op_stats(job, "in", &os), 0);
  ck_assert_uint_eq(os.records_out, 25);
  sl_job_destroy(job);
  produce(&e, 5, 900000);
  ck_assert_uint_eq(run_alone(build_job(&e, par2, &so, "latest", NULL)),
                    n_read - 25);
  check_output(want, par2);
  free(want);
  env_stop(&e);
}

START_TEST(bounded_restore_keeps_stop_offsets) {
  bounded_restored(1);
}
END_TEST

START_TEST(bounded_restore_at_other_parallelism_keeps_stop_offsets) {
  bounded_restored(2);
}
END_TEST

static void wait_records(sl_job_t *job, uint64_t n) {
  sl_op_stats_t st = {0};
  for (int i = 0; i < WAIT_MS / 25; i++) {
    ck_assert_int_eq(sl_job_op_stats(job, "in", &st), 0);
    if (st.records_out >= n)
      return;
    tk_sleep_ms(25);
  }
  ck_abort_msg("%" PRIu64 " of %" PRIu64 " records read", st.records_out, n);
}

/* ---- A user generator per partition -------------------------------------- */

/* Punctuated: a record whose value is "p" emits its timestamp. Counts the
 * instances alive and made. */
static _Atomic int gens_live, gens_made;

static int pgen_create(void **state, void *opaque) {
  (void)opaque;
  *state = NULL;
  gens_live++;
  gens_made++;
  return 0;
}
static void pgen_destroy(void *state, void *opaque) {
  (void)state, (void)opaque;
  gens_live--;
}
static void pgen_event(sl_wm_output_t *out, const sl_record_t *rec, void *state,
                       void *opaque) {
  (void)state, (void)opaque;
  if (rec->value_len == 1 && *(const char *)rec->value == 'p')
    sl_wm_emit(out, rec->ts);
}
static const sl_watermark_gen_t pgen = {
    .create = pgen_create, .destroy = pgen_destroy, .on_event = pgen_event};

START_TEST(user_generator_per_partition) {
  env e;
  env_start(&e, 2);
  /* Partition 0 punctuates at 3000, then has a record of [1 s, 2 s);
   * partition 1 never punctuates. One generator per partition: the
   * watermark is the minimum, held at the start by partition 1, so the
   * record at 1200 is not late (with one generator for both it would be,
   * whatever the order they are read in). The source is unbounded (a
   * finished partition 1 would no longer hold it back): once it read
   * everything, a stop with drain fires every window. */
  tk_send(e.prod, "in", 0, "a", "x", 100, NULL, NULL);
  tk_send(e.prod, "in", 0, "a", "p", 3000, NULL, NULL);
  tk_send(e.prod, "in", 0, "a", "x", 1200, NULL, NULL);
  tk_send(e.prod, "in", 1, "b", "x", 200, NULL, NULL);
  tk_flush(e.prod);
  gens_made = 0;
  for (int par = 1; par <= 2; par++) {
    outs_reset();
    const char *kv[] = {"broker.timeout.ms", "10000", "log.level", "error",
                        NULL};
    sl_job_t *job = tk_job("bounded", tk_conf(&e.c, par, kv));
    sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
    sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
    sl_watermark_spec_t wm = {.kind = SL_WM_CUSTOM, .gen = &pgen};
    sl_with_watermarks(src, &wm);
    sl_window_spec_t spec = sl_window_tumbling(1000);
    spec.late_tag = "late";
    sl_window_fn_t fn = {.builtin = SL_AGG_COUNT};
    sl_stream_t *w =
        sl_window(sl_key_by(src, NULL, NULL), "count", &spec, &fn, NULL);
    ck_assert_int_eq(sl_sink(w, "out", count_sink, NULL), 0);
    ck_assert_int_eq(
        sl_sink(sl_side_output(w, "late"), "lateout", late_sink, NULL), 0);
    tk_run r;
    tk_run_start(&r, job);
    wait_records(job, 4);
    sl_job_stop_drain(job);
    pthread_join(r.t, NULL);
    ck_assert_int_eq(r.rc, 0);
    sl_job_destroy(job);
    check_output("window key=a ts=1999 v=1\n"
                 "window key=a ts=3999 v=1\n"
                 "window key=a ts=999 v=1\n"
                 "window key=b ts=999 v=1\n",
                 par);
    ck_assert_int_eq(gens_live, 0);
  }
  ck_assert_int_eq(gens_made, 4); /* two partitions, two runs */
  env_stop(&e);
}
END_TEST

/* ---- Watermark alignment ------------------------------------------------- */

/* At P=1 both partitions are read by one subtask; at P=2 each by its own,
 * the slowest found over both. */
static void alignment(int par) {
  env e;
  env_start(&e, 2);
  /* Partition 0: ts 100..10000 every 100; partition 1: 100..1100 (a
   * timestamp of 0 would be the producer's clock). */
  for (int i = 1; i <= 100; i++)
    send_ts(&e, 0, "a", i * 100);
  for (int i = 1; i <= 11; i++)
    send_ts(&e, 1, "b", i * 100);
  tk_flush(e.prod);
  const char *kv[] = {"broker.timeout.ms", "10000", "log.level", "error", NULL};
  sl_job_t *job = tk_job("align", tk_conf(&e.c, par, kv));
  sl_clock_t *clock = sl_clock_new_manual(0);
  sl_job_set_clock(job, clock);
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
  sl_watermark_spec_t wm = {
      .kind = SL_WM_BOUNDED, .idle_timeout_ms = 1000, .align_drift_ms = 2000};
  sl_with_watermarks(src, &wm);
  ck_assert_int_eq(sl_sink(src, "out", discard, NULL), 0);
  tk_run r;
  tk_run_start(&r, job);
  /* Partition 1 ends at watermark 1099: partition 0 is read while its
   * watermark is at most 3099, so up to ts 3200 (watermark 3099 before
   * it), 32 records; with partition 1's 11, 43. Nothing more comes while
   * partition 1 holds it back (a partition without alignment would have
   * been read to its end long before the check). */
  wait_records(job, 43);
  tk_sleep_ms(500);
  sl_op_stats_t st = {0};
  ck_assert_int_eq(sl_job_op_stats(job, "in", &st), 0);
  ck_assert_uint_eq(st.records_out, 43);
  ck_assert_int_eq(sl_job_op_stats(job, "out", &st), 0);
  ck_assert_int_eq(st.watermark, 1099);
  /* Partition 1 goes idle: no longer the slowest; partition 0 resumes
   * where it stopped and is read to its end, none twice. */
  sl_clock_advance(clock, 1000);
  wait_records(job, 111);
  ck_assert_int_eq(tk_run_stop(&r), 0);
  ck_assert_int_eq(sl_job_op_stats(job, "in", &st), 0);
  ck_assert_uint_eq(st.records_out, 111);
  sl_job_destroy(job);
  sl_clock_destroy(clock);
  env_stop(&e);
}

START_TEST(alignment_pauses_partition_ahead) {
  alignment(1);
}
END_TEST

START_TEST(alignment_over_subtasks_pauses_partition_ahead) {
  alignment(2);
}
END_TEST

int main(void) {
  Suite *s = suite_create("kafka_bounded");
  TCase *tc = tcase_create("bounded");
  tcase_set_timeout(tc, 240);
  tcase_add_test(tc, bounded_latest_ends_by_itself);
  tcase_add_test(tc, bounded_at_given_offsets);
  tcase_add_test(tc, bounded_at_timestamp);
  tcase_add_test(tc, bounded_options_are_checked);
  tcase_add_test(tc, bounded_restore_keeps_stop_offsets);
  tcase_add_test(tc, bounded_restore_at_other_parallelism_keeps_stop_offsets);
  tcase_add_test(tc, user_generator_per_partition);
  tcase_add_test(tc, alignment_pauses_partition_ahead);
  tcase_add_test(tc, alignment_over_subtasks_pauses_partition_ahead);
  suite_add_tcase(s, tc);
  /* The mock cluster's control API hangs in a forked child. */
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
