/* SPDX-License-Identifier: Apache-2.0 */
/* Session windows in group mode, one process on a mock cluster: each task
 * assigned is loaded from its snapshot, and the session window adapts the
 * loaded sessions to its gap (docs/windows.md). Under the gap the snapshot
 * recorded, a load stores nothing again; under a larger one every loaded
 * key with sessions is stored again once, as in a whole restore. What was
 * stored again is read from the operator's log line. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "core/hash.h"
#include "test_kafka_util.h"

#define PARTS 4
#define KEYS 24
#define WAIT_MS 60000

/* The "stored again" lines of the session window, and the keys they
 * name. */
typedef struct relog {
  pthread_mutex_t mu;
  int lines;
  long keys;
  char first[512];
  int drops;           /* "dropped (restore.allow.dropped.state)" lines */
  int drops_of[PARTS]; /* of them, per task ("task N: ...") */
  char drop[512];
} relog;

static void log_cb(sl_log_level level, const char *component,
                   const char *message, void *opaque) {
  (void)level;
  relog *l = opaque;
  if (strcmp(component, "checkpoint") == 0 &&
      strstr(message, "dropped (restore.allow.dropped.state)")) {
    long task =
        strncmp(message, "task ", 5) == 0 ? strtol(message + 5, NULL, 10) : -1;
    pthread_mutex_lock(&l->mu);
    if (!l->drops++)
      snprintf(l->drop, sizeof(l->drop), "%s", message);
    if (task >= 0 && task < PARTS)
      l->drops_of[task]++;
    pthread_mutex_unlock(&l->mu);
    return;
  }
  const char *p = strstr(message, " key(s) with sessions stored again");
  if (strcmp(component, "operator") != 0 || !p)
    return;
  const char *n = p;
  while (n > message && n[-1] >= '0' && n[-1] <= '9')
    n--;
  pthread_mutex_lock(&l->mu);
  if (!l->lines++)
    snprintf(l->first, sizeof(l->first), "%s", message);
  l->keys += strtol(n, NULL, 10);
  pthread_mutex_unlock(&l->mu);
}

static int discard(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx, (void)rec, (void)opaque;
  return 0;
}

/* Kafka "in" -> key_by(message key) -> event-time sessions of gap ms
 * (gap 0: tumbling windows of 10 s, another state layout) counting ->
 * nowhere; one process of group "gs" with checkpoints in dir; allow:
 * restore.allow.dropped.state. The watermark stays at the start, so no
 * window fires. */
static sl_job_t *session_job(const tk_cluster *c, const char *dir,
                             const char *backend, int64_t gap, bool allow,
                             relog *l) {
  char parts[16];
  snprintf(parts, sizeof(parts), "%d", PARTS);
  char state_dir[300];
  snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
  const char *kv[] = {"group.mode",
                      "copartitioned",
                      "group.partitions",
                      parts,
                      "instance.id",
                      "a",
                      "checkpoint.dir",
                      dir,
                      "checkpoint.interval.ms",
                      "3600000",
                      "state.backend",
                      backend,
                      "state.dir",
                      state_dir,
                      "log.level",
                      "info",
                      "kafka.session.timeout.ms",
                      "6000",
                      "kafka.heartbeat.interval.ms",
                      "500",
                      "restore.allow.dropped.state",
                      allow ? "true" : "false",
                      NULL};
  sl_conf_t *conf = tk_conf(c, 2, kv);
  sl_conf_set_log_cb(conf, log_cb, l);
  sl_job_t *job = tk_job("gs", conf);
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
  sl_window_spec_t ws =
      gap ? sl_window_session(gap) : sl_window_tumbling(10000);
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT};
  sl_stream_t *w =
      sl_window(sl_key_by(src, NULL, NULL), "sessions", &ws, &fn, NULL);
  ck_assert_ptr_nonnull(w);
  ck_assert_int_eq(sl_sink(w, "out", discard, NULL), SL_OK);
  return job;
}

/* Produces one record of every key at ts, each to the partition Kafka's
 * partitioner gives its key. */
static void produce(tk_cluster *c, int64_t ts) {
  rd_kafka_t *p = tk_producer(c);
  char key[32];
  for (int i = 0; i < KEYS; i++) {
    snprintf(key, sizeof(key), "user-%d", i);
    tk_send(p, "in", (int32_t)sl__murmur2_partition(key, strlen(key), PARTS),
            key, "x", ts, NULL, NULL);
  }
  tk_flush(p);
  rd_kafka_destroy(p);
}

/* Runs a job until its session window took n records (every task it
 * reads is loaded by then: a task's records follow its load), then stops
 * it; returns the log of what was stored again. */
static void relog_reset(relog *l) {
  memset(l, 0, sizeof(*l));
  pthread_mutex_init(&l->mu, NULL);
}

static void run_until(tk_cluster *c, const char *dir, const char *backend,
                      int64_t gap, bool allow, uint64_t n, relog *l) {
  relog_reset(l);
  sl_job_t *job = session_job(c, dir, backend, gap, allow, l);
  tk_run r;
  tk_run_start(&r, job);
  sl_op_stats_t st = {0};
  for (int i = 0; i < WAIT_MS && st.records_in < n; i += 10) {
    tk_sleep_ms(10);
    ck_assert_int_eq(sl_job_op_stats(job, "sessions", &st), SL_OK);
  }
  ck_assert_uint_eq(st.records_in, n);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  sl_checkpoint_info_t ci;
  sl_job_checkpoint_info(job, &ci);
  ck_assert_uint_ge(ci.completed, 1); /* the final one, with the tasks */
  sl_job_destroy(job);
}

/* A cluster with the job's topics, and a checkpoint store in dir (a
 * mkdtemp template); stop() removes both. */
static void start(tk_cluster *c, char *dir) {
  tk_start(c, 1);
  tk_topic(c, "in", PARTS);
  tk_topic(c, "sluice-gs-owners", 1);
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void stop(tk_cluster *c, const char *dir) {
  tk_stop(c);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static void loads_store_again_only_when_the_gap_grew(const char *backend) {
  tk_cluster c;
  char dir[] = "/tmp/sl-group-session-XXXXXX";
  start(&c, dir);
  relog l;

  /* The first run loads no task: nothing to store again. */
  produce(&c, 1000);
  run_until(&c, dir, backend, 10000, false, KEYS, &l);
  ck_assert_int_eq(l.lines, 0);

  /* The same gap: each task is loaded from the final checkpoint above
   * (the next records are only read after it), and nothing is stored
   * again. */
  produce(&c, 2000);
  run_until(&c, dir, backend, 10000, false, KEYS, &l);
  ck_assert_msg(l.lines == 0, "%d line(s), %ld key(s) stored again: %s",
                l.lines, l.keys, l.first);

  /* A smaller gap needs nothing either. */
  produce(&c, 3000);
  run_until(&c, dir, backend, 5000, false, KEYS, &l);
  ck_assert_msg(l.lines == 0, "%d line(s), %ld key(s) stored again: %s",
                l.lines, l.keys, l.first);

  /* A larger one than the snapshots recorded (5000): every key, each
   * once, in the load of its task. */
  produce(&c, 4000);
  run_until(&c, dir, backend, 20000, false, KEYS, &l);
  ck_assert_int_eq(l.keys, KEYS);
  ck_assert_int_le(l.lines, PARTS);
  ck_assert_msg(strstr(l.first, "under gap=20000 (their snapshot recorded "
                                "gap=5000)"),
                "%s", l.first);

  /* And again the gap the newest snapshots recorded: nothing. */
  produce(&c, 5000);
  run_until(&c, dir, backend, 20000, false, KEYS, &l);
  ck_assert_msg(l.lines == 0, "%d line(s), %ld key(s) stored again: %s",
                l.lines, l.keys, l.first);

  stop(&c, dir);
}

/* A task's load checks the layouts its snapshot recorded, as a whole
 * restore does: with the operator "sessions" now a tumbling window, whose
 * state has another layout, the first load fails the job with the
 * operator, the state and the option named, and nothing is read in the
 * wrong layout; with restore.allow.dropped.state every load drops that
 * state (logged, per task) and the window runs on from empty state. */
static void loads_refuse_a_changed_layout(const char *backend) {
  tk_cluster c;
  char dir[] = "/tmp/sl-group-session-XXXXXX";
  start(&c, dir);
  relog l;
  produce(&c, 1000);
  run_until(&c, dir, backend, 10000, false, KEYS, &l);

  produce(&c, 2000);
  relog_reset(&l);
  sl_job_t *job = session_job(&c, dir, backend, 0, false, &l);
  tk_run r;
  tk_run_start(&r, job);
  bool ended = false;
  for (int i = 0; i < WAIT_MS && !ended; i += 10) {
    ended = pthread_tryjoin_np(r.t, NULL) == 0;
    if (!ended)
      tk_sleep_ms(10);
  }
  ck_assert_msg(ended, "the job with the changed layout did not fail");
  ck_assert_int_eq(r.rc, SL_ERR_STATE);
  const char *msg = sl_job_errmsg(job);
  ck_assert_msg(strstr(msg, ": load from checkpoint ") &&
                    strstr(msg, "operator \"sessions\", state ") &&
                    strstr(msg, "restore.allow.dropped.state=true"),
                "%s", msg);
  sl_op_stats_t st = {0};
  ck_assert_int_eq(sl_job_op_stats(job, "sessions", &st), SL_OK);
  ck_assert_uint_eq(st.records_in, 0);
  sl_job_destroy(job);

  /* Allowed: each of the PARTS tasks drops the window's states (the
   * same ones) as it loads. */
  run_until(&c, dir, backend, 0, true, KEYS, &l);
  ck_assert_msg(l.drops_of[0] > 0, "%d drop(s): %s", l.drops, l.drop);
  for (int t = 0; t < PARTS; t++)
    ck_assert_int_eq(l.drops_of[t], l.drops_of[0]);
  ck_assert_int_eq(l.drops, PARTS * l.drops_of[0]);
  ck_assert_msg(strstr(l.drop, ": load from checkpoint ") &&
                    strstr(l.drop, "operator \"sessions\""),
                "%s", l.drop);

  stop(&c, dir);
}

START_TEST(changed_layout_hashmap) {
  loads_refuse_a_changed_layout("hashmap");
}
END_TEST

START_TEST(changed_layout_rocksdb) {
  loads_refuse_a_changed_layout("rocksdb");
}
END_TEST

START_TEST(task_loads_hashmap) {
  loads_store_again_only_when_the_gap_grew("hashmap");
}
END_TEST

START_TEST(task_loads_rocksdb) {
  loads_store_again_only_when_the_gap_grew("rocksdb");
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("group_session");
  TCase *tc = tcase_create("group_session");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, task_loads_hashmap);
  tcase_add_test(tc, task_loads_rocksdb);
  tcase_add_test(tc, changed_layout_hashmap);
  tcase_add_test(tc, changed_layout_rocksdb);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
