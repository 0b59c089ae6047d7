/* SPDX-License-Identifier: Apache-2.0 */
/* Broker faults through the mock cluster's fault injection: a broker down
 * and back, partition leaders that move, request errors on Produce,
 * Fetch, OffsetCommit, InitProducerId, AddOffsetsToTxn and EndTxn, a
 * transaction or group coordinator that moves, a slow broker. The job is
 * Kafka (bounded by end markers) -> keyed tumbling count -> Kafka with
 * checkpoints; for each fault the expected outcome is asserted — librdkafka
 * retries and the job continues, or the job fails with a clear error and a
 * restart from its checkpoint finishes — and the output is compared
 * exactly with the expected counts: nothing lost, and with at_least_once
 * nothing but duplicates of the same lines. */
#include <check.h>
#include <stdatomic.h>
#include <unistd.h>

#include "test_kafka_util.h"

/* Kafka API keys (the mock's request error injection takes them). */
enum {
  API_PRODUCE = 0,
  API_FETCH = 1,
  API_OFFSET_COMMIT = 8,
  API_SYNC_GROUP = 14,
  API_INIT_PRODUCER_ID = 22,
  API_ADD_OFFSETS_TO_TXN = 25,
  API_END_TXN = 26
};

#define USERS 4
#define WINDOWS 12
#define PER 4

typedef struct env {
  tk_cluster c;
  char dir[256];
  int out_n; /* output topic number, one per job run series */
  char out[32];
} env;

static void env_start(env *e, int brokers) {
  memset(e, 0, sizeof(*e));
  tk_start(&e->c, brokers);
  tk_topic(&e->c, "in", 2);
  tk_topic(&e->c, "out", 1);
  snprintf(e->out, sizeof(e->out), "out");
  rd_kafka_t *p = tk_producer(&e->c);
  char v[128], user[16];
  for (int w = 0; w < WINDOWS; w++)
    for (int i = 0; i < PER; i++)
      for (int u = 0; u < USERS; u++) {
        snprintf(user, sizeof(user), "u%d", u);
        snprintf(v, sizeof(v), "{\"user\":\"%s\",\"ts\":%d}", user,
                 w * 1000 + i * 100 + u);
        tk_send(p, "in", u % 2, user, v, 0, NULL, NULL);
      }
  for (int part = 0; part < 2; part++)
    tk_send(p, "in", part, "end", "{\"user\":\"end\",\"ts\":99999999}", 0, NULL,
            NULL);
  tk_flush(p);
  rd_kafka_destroy(p);
  snprintf(e->dir, sizeof(e->dir), "/tmp/sluice-kfault-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(e->dir));
}

static void env_stop(env *e) {
  tk_stop(&e->c);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
  ck_assert_int_eq(system(cmd), 0);
}

static bool is_end(const sl_kafka_msg_t *msg, const sl_record_t *rec,
                   void *opaque) {
  (void)msg, (void)opaque;
  return rec->key_len == 3 && memcmp(rec->key, "end", 3) == 0;
}

/* 15 ms per record (about 3 s for the input), so faults meet a running
 * job (run_to_end checks that it was). */
static int throttle(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx, (void)rec, (void)opaque;
  usleep(15000);
  return 1;
}

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
  char v[96];
  int len = snprintf(v, sizeof(v), "%.*s %lld %lld", (int)klen,
                     (const char *)key, (long long)win->end, (long long)n);
  sl_record_t out = {.key = key,
                     .key_len = klen,
                     .value = v,
                     .value_len = (size_t)len,
                     .ts = win->end - 1};
  return sl_emit(ctx, &out);
}

typedef struct job_run {
  tk_run r;
  int rc;
  char errmsg[1024];
} job_run;

static sl_job_t *build(env *e, int par, const char *guarantee) {
  const char *kv[] = {"sink.delivery.guarantee",
                      guarantee,
                      "checkpoint.dir",
                      e->dir,
                      "checkpoint.interval.ms",
                      "100",
                      "restore.from",
                      "latest",
                      "broker.timeout.ms",
                      "10000",
                      "kafka.group.id",
                      "faults",
                      "source.batch.size",
                      "4",
                      "log.level",
                      "error",
                      NULL};
  sl_job_t *job = tk_job("faults", tk_conf(&e->c, par, kv));
  sl_kafka_source_opts_t so = {.codec = SL_KAFKA_JSON,
                               .key_pointer = "/user",
                               .ts_pointer = "/ts",
                               .start = SL_KAFKA_START_EARLIEST,
                               .is_end = is_end};
  sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
  sl_watermark_spec_t wm = {.kind = SL_WM_MONOTONOUS};
  sl_with_watermarks(src, &wm);
  src = sl_filter(src, "throttle", throttle, NULL);
  sl_window_spec_t spec = sl_window_tumbling(1000);
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT, .process = emit_count};
  sl_stream_t *counts =
      sl_window(sl_key_by(src, NULL, NULL), "count", &spec, &fn, NULL);
  ck_assert_int_eq(sl_sink_kafka(counts, "out", e->out, NULL), 0);
  return job;
}

/* Runs the job to its end (the end markers) and returns sl_job_run's
 * result; errmsg gets the job's message. */
static int run_to_end(env *e, int par, const char *guarantee,
                      void (*during)(env *, sl_job_t *), char *errmsg,
                      size_t errlen) {
  sl_job_t *job = build(e, par, guarantee);
  tk_run r;
  tk_run_start(&r, job);
  if (during) {
    during(e, job);
    /* The fault met the job, not its end. */
    sl_op_stats_t st;
    ck_assert_int_eq(sl_job_op_stats(job, "count", &st), 0);
    ck_assert_msg(st.records_in < USERS * WINDOWS * PER,
                  "the job had read all its input before the fault");
  }
  pthread_join(r.t, NULL);
  snprintf(errmsg, errlen, "%s", sl_job_errmsg(job));
  sl_job_destroy(job);
  return r.rc;
}

/* Every (user, window) count exactly, each line at least once and no
 * other line. */
static void expect_output(env *e) {
  tk_reader rd;
  tk_reader_open(&rd, &e->c, e->out, 1);
  int seen[USERS][WINDOWS] = {{0}};
  int distinct = 0;
  for (int waited = 0; distinct < USERS * WINDOWS && waited < 30000;
       waited += 200) {
    tk_read(&rd, rd.n + 1, 200);
    distinct = 0;
    memset(seen, 0, sizeof(seen));
    for (size_t i = 0; i < rd.n; i++) {
      int u;
      long long end, n;
      ck_assert_msg(sscanf(rd.m[i].value, "u%d %lld %lld", &u, &end, &n) == 3,
                    "bad line %s", rd.m[i].value);
      int w = (int)(end / 1000) - 1;
      ck_assert_msg(u >= 0 && u < USERS && w >= 0 && w < WINDOWS && n == PER,
                    "wrong line %s", rd.m[i].value);
      distinct += !seen[u][w]++;
    }
  }
  ck_assert_int_eq(distinct, USERS * WINDOWS);
  tk_reader_close(&rd);
}

static void wait_checkpoint(sl_job_t *job) {
  sl_checkpoint_info_t i = {0};
  for (int n = 0; n < 2000 && !i.id; n++) {
    sl_job_checkpoint_info(job, &i);
    tk_sleep_ms(5);
  }
  ck_assert_uint_gt(i.id, 0);
}

/* ---- Retried: the job continues ---------------------------------------- */

static void broker_down_then_up(env *e, sl_job_t *job) {
  wait_checkpoint(job);
  ck_assert_int_eq(rd_kafka_mock_broker_set_down(e->c.mc, 1), 0);
  tk_sleep_ms(1500);
  ck_assert_int_eq(rd_kafka_mock_broker_set_up(e->c.mc, 1), 0);
}

static void leaders_move(env *e, sl_job_t *job) {
  wait_checkpoint(job);
  for (int p = 0; p < 2; p++)
    ck_assert_int_eq(rd_kafka_mock_partition_set_leader(e->c.mc, "in", p, 2),
                     0);
  ck_assert_int_eq(rd_kafka_mock_partition_set_leader(e->c.mc, "out", 0, 3), 0);
  tk_sleep_ms(300);
  ck_assert_int_eq(rd_kafka_mock_partition_set_leader(e->c.mc, "in", 0, 3), 0);
}

static void retriable_errors(env *e, sl_job_t *job) {
  wait_checkpoint(job);
  rd_kafka_mock_push_request_errors(e->c.mc, API_PRODUCE, 3,
                                    RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                    RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                    RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
  rd_kafka_mock_push_request_errors(e->c.mc, API_FETCH, 3,
                                    RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                    RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
                                    RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
  rd_kafka_mock_push_request_errors(
      e->c.mc, API_OFFSET_COMMIT, 2, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
      RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE);
}

static void txn_retriable_errors(env *e, sl_job_t *job) {
  wait_checkpoint(job);
  rd_kafka_mock_push_request_errors(
      e->c.mc, API_ADD_OFFSETS_TO_TXN, 2,
      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
      RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS);
  rd_kafka_mock_push_request_errors(
      e->c.mc, API_END_TXN, 2, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
      RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS);
}

static void coordinators_move(env *e, sl_job_t *job) {
  wait_checkpoint(job);
  ck_assert_int_eq(
      rd_kafka_mock_coordinator_set(e->c.mc, "transaction", "sluice-faults", 2),
      0);
  ck_assert_int_eq(rd_kafka_mock_coordinator_set(e->c.mc, "group", "faults", 3),
                   0);
}

static void slow_broker(env *e, sl_job_t *job) {
  (void)job;
  for (int b = 1; b <= 3; b++)
    ck_assert_int_eq(rd_kafka_mock_broker_set_rtt(e->c.mc, b, 300), 0);
}

typedef struct retried_case {
  const char *name;
  int brokers;
  const char *guarantee;
  void (*during)(env *, sl_job_t *);
} retried_case;

static const retried_case retried[] = {
    {"broker down and up", 1, "at_least_once", broker_down_then_up},
    {"broker down and up, exactly-once", 1, "exactly_once",
     broker_down_then_up},
    {"leaders move", 3, "at_least_once", leaders_move},
    {"retriable Produce, Fetch, OffsetCommit errors", 1, "at_least_once",
     retriable_errors},
    {"retriable AddOffsetsToTxn, EndTxn errors", 1, "exactly_once",
     txn_retriable_errors},
    {"coordinators move", 3, "exactly_once", coordinators_move},
    {"slow brokers", 3, "exactly_once", slow_broker},
};

START_TEST(retried_and_continues) {
  const retried_case *rc = &retried[_i];
  env e;
  env_start(&e, rc->brokers);
  char msg[1024];
  int r = run_to_end(&e, 1, rc->guarantee, rc->during, msg, sizeof(msg));
  ck_assert_msg(r == SL_OK, "%s: %s", rc->name, msg);
  expect_output(&e);
  env_stop(&e);
}
END_TEST

/* ---- Fails clearly, restarts from its checkpoint ------------------------ */

static void produce_fails(env *e, sl_job_t *job) {
  wait_checkpoint(job);
  /* Not retriable: the delivery fails after librdkafka's own handling. */
  rd_kafka_mock_push_request_errors(
      e->c.mc, API_PRODUCE, 1, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
}

static void add_offsets_fails(env *e, sl_job_t *job) {
  wait_checkpoint(job);
  rd_kafka_mock_push_request_errors(
      e->c.mc, API_ADD_OFFSETS_TO_TXN, 1,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
}

static void end_txn_fails(env *e, sl_job_t *job) {
  wait_checkpoint(job);
  rd_kafka_mock_push_request_errors(e->c.mc, API_END_TXN, 1,
                                    RD_KAFKA_RESP_ERR_INVALID_TXN_STATE);
}

typedef struct failing_case {
  const char *name;
  const char *guarantee;
  int api; /* pushed before the job starts (-1: none) */
  int err;
  void (*during)(env *, sl_job_t *);
  const char *message; /* part of the job's error message */
} failing_case;

static const failing_case failing[] = {
    {"Produce refused", "at_least_once", -1, 0, produce_fails,
     "delivery to out[0] failed"},
    {"InitProducerId refused", "exactly_once", API_INIT_PRODUCER_ID,
     RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED, NULL,
     "Failed to acquire transactional PID from broker TxnCoordinator/1: "
     "Broker: Transactional Id authorization failed"},
    {"AddOffsetsToTxn refused", "exactly_once", -1, 0, add_offsets_fails,
     "commit failed: send_offsets_to_transaction: Failed to "
     "add offsets to transaction on broker TxnCoordinator/1: Broker: Topic "
     "authorization failed"},
    /* chk-1 is complete but its transaction never committed: the restart
     * skips it and, with no committed checkpoint before it, starts
     * empty (it failed to start: "none of the 1 complete checkpoints
     * ... is valid"). */
    {"EndTxn refused at the first checkpoint", "exactly_once", API_END_TXN,
     RD_KAFKA_RESP_ERR_INVALID_TXN_STATE, NULL, "Failed to end transaction: "},
    {"EndTxn refused", "exactly_once", -1, 0, end_txn_fails,
     /* commit_transaction's error, or the fatal error it raised */
     "Failed to end transaction: "
     "Broker: Producer attempted a transactional operation in an invalid "
     "state"},
};

START_TEST(fails_clearly_and_restarts) {
  const failing_case *fc = &failing[_i];
  env e;
  env_start(&e, 1);
  if (fc->api >= 0)
    rd_kafka_mock_push_request_errors(e.c.mc, fc->api, 1, fc->err);
  char msg[1024];
  int r = run_to_end(&e, 1, fc->guarantee, fc->during, msg, sizeof(msg));
  ck_assert_msg(r != SL_OK && strstr(msg, fc->message), "%s: rc %d: %s",
                fc->name, r, msg);
  rd_kafka_mock_clear_request_errors(e.c.mc, API_PRODUCE);
  r = run_to_end(&e, 2, fc->guarantee, NULL, msg, sizeof(msg));
  ck_assert_msg(r == SL_OK, "%s, restarted: %s", fc->name, msg);
  expect_output(&e);
  env_stop(&e);
}
END_TEST

/* ---- A group member stopped while its group forms ------------------------ */

/* A process of a group (docs/scaling.md) stopped before the group gave
 * its member an assignment: the group's SyncGroup keeps failing, so the
 * member has joined (its JoinGroup named the assignor) but never got an
 * assignment. librdkafka 2.0.2 aborts the process when such a consumer
 * of the cooperative-sticky assignor is freed (its issue 4312); the job
 * stops cleanly instead. */
START_TEST(stopped_while_the_group_forms) {
  env e;
  env_start(&e, 1);
  rd_kafka_mock_push_request_errors(e.c.mc, API_SYNC_GROUP, 8,
                                    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                                    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                                    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                                    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                                    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                                    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                                    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                                    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
  const char *kv[] = {"group.mode",
                      "copartitioned",
                      "group.partitions",
                      "2",
                      "kafka.group.id",
                      "forming",
                      "kafka.session.timeout.ms",
                      "6000",
                      "kafka.heartbeat.interval.ms",
                      "500",
                      "log.level",
                      "error",
                      NULL};
  sl_job_t *job = tk_job("forming", tk_conf(&e.c, 2, kv));
  sl_kafka_source_opts_t so = {.codec = SL_KAFKA_JSON,
                               .key_pointer = "/user",
                               .start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
  ck_assert_int_eq(
      sl_sink_kafka(sl_key_by(src, NULL, NULL), "out", "out", NULL), 0);
  tk_run r;
  tk_run_start(&r, job);
  /* Past the mock's 3 s wait before a new group's first JoinGroup
   * answer: the members have joined, their SyncGroup fails. There is no
   * event to wait for (this librdkafka's mock does not count requests). */
  tk_sleep_ms(4500);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  sl_job_destroy(job);
  env_stop(&e);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("kafka_faults");
  TCase *tc = tcase_create("faults");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, retried_and_continues, 0,
                      (int)(sizeof(retried) / sizeof(retried[0])));
  tcase_add_loop_test(tc, fails_clearly_and_restarts, 0,
                      (int)(sizeof(failing) / sizeof(failing[0])));
  suite_add_tcase(s, tc);
  TCase *forming = tcase_create("forming");
  tcase_set_timeout(forming, 120);
  tcase_add_test(forming, stopped_while_the_group_forms);
  suite_add_tcase(s, forming);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(suite());
  srunner_set_fork_status(sr, CK_NOFORK); /* the mock's control API */
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
