/* SPDX-License-Identifier: Apache-2.0 */
/* Queries in group mode: two jobs of one consumer group in this process,
 * on a mock cluster, each owning some of the input's partitions. Each
 * answers for the keys of its tasks and names the other, through the C
 * API (SL_ERR_NOT_OWNER, sl_job_query_owner) and HTTP (307 to the owner),
 * and learns of a move when the other leaves. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../httpget.h"
#include "core/hash.h"
#include "test_kafka_util.h"

#define PARTS 6
#define KEYS 24
#define WAIT_MS 60000

static int last_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_desc_t d = {.name = "v", .kind = SL_STATE_VALUE, .queryable = true};
  sl_state_t *st = sl_state_register(ctx, &d);
  sl_ctx_set_local(ctx, st);
  return st ? 0 : SL_ERR_STATE;
}

static int last_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  return sl_value_put(ctx, sl_ctx_local(ctx), rec->value, rec->value_len);
}

static int discard(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx, (void)rec, (void)opaque;
  return 0;
}

/* Kafka "in" -> key_by(message key) -> the last value per key, queryable
 * as state "v" of operator "last". */
static sl_job_t *member(const tk_cluster *c, const char *instance) {
  char parts[16];
  snprintf(parts, sizeof(parts), "%d", PARTS);
  const char *kv[] = {"group.mode",
                      "copartitioned",
                      "group.partitions",
                      parts,
                      "instance.id",
                      instance,
                      "metrics.listen",
                      "127.0.0.1:0",
                      "log.level",
                      "warn",
                      "kafka.session.timeout.ms",
                      "6000",
                      "kafka.heartbeat.interval.ms",
                      "500",
                      NULL};
  sl_job_t *job = tk_job("gq", tk_conf(c, 2, kv));
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
  sl_process_ops_t po = {.open = last_open, .on_element = last_element};
  sl_stream_t *p = sl_process(sl_key_by(src, NULL, NULL), "last", &po, NULL);
  sl_sink(p, "out", discard, NULL);
  return job;
}

static void key_of(int i, char *buf, size_t cap) {
  snprintf(buf, cap, "user-%d", i);
}

/* A key of task t. */
static void key_of_task(uint32_t t, char *buf, size_t cap) {
  for (int i = 0;; i++) {
    snprintf(buf, cap, "probe-%d", i);
    if (sl__murmur2_partition(buf, strlen(buf), PARTS) == t)
      return;
  }
}

static sl_query_where where(sl_job_t *job, uint32_t t, sl_query_owner_t *o) {
  char key[32], err[256];
  key_of_task(t, key, sizeof(key));
  ck_assert_int_eq(
      sl_job_query_owner(job, key, strlen(key), o, err, sizeof(err)), SL_OK);
  ck_assert_uint_eq(o->task, t);
  return o->where;
}

static void endpoint_of(sl_job_t *job, char *buf, size_t cap) {
  snprintf(buf, cap, "http://127.0.0.1:%d", sl_job_metrics_port(job));
}

/* Waits until every task is local to exactly one of jobs[0..n), each job
 * has one, and every other job names that owner with its instance and
 * endpoint. */
static void wait_settled(sl_job_t **jobs, const char **names, int n) {
  char ep[8][64];
  for (int j = 0; j < n; j++)
    endpoint_of(jobs[j], ep[j], sizeof(ep[j]));
  for (int round = 0; round < WAIT_MS / 50; round++) {
    bool ok = true;
    int owned[8] = {0};
    for (uint32_t t = 0; t < PARTS && ok; t++) {
      int owner = -1;
      for (int j = 0; j < n && ok; j++) {
        sl_query_owner_t o;
        if (where(jobs[j], t, &o) == SL_QUERY_LOCAL) {
          ok = owner < 0;
          owner = j;
        }
      }
      ok = ok && owner >= 0;
      for (int j = 0; j < n && ok; j++) {
        sl_query_owner_t o;
        if (j != owner)
          ok = where(jobs[j], t, &o) == SL_QUERY_REMOTE &&
               strcmp(o.instance, names[owner]) == 0 &&
               strcmp(o.endpoint, ep[owner]) == 0;
      }
      if (ok)
        owned[owner]++;
    }
    for (int j = 0; j < n && ok; j++)
      ok = owned[j] > 0;
    if (ok)
      return;
    tk_sleep_ms(50);
  }
  ck_abort_msg("the group never settled on one owner per task");
}

/* Runs job and follows its health until ready: in group mode its members
 * join the group while it opens, so the first state after starting is
 * rebalancing (tasks move to it), never ready at once. */
static void start_rebalancing(tk_run *r, sl_job_t *job) {
  tk_run_start(r, job);
  sl_health h = SL_HEALTH_STARTING, first = SL_HEALTH_STARTING;
  char why[512];
  for (int i = 0; i < WAIT_MS && h != SL_HEALTH_READY; i++) {
    h = sl_job_health(job, why, sizeof(why));
    if (first == SL_HEALTH_STARTING)
      first = h;
    if (h != SL_HEALTH_READY)
      tk_sleep_ms(1);
  }
  ck_assert_msg(first == SL_HEALTH_REBALANCING, "first %s: %s",
                sl_health_name(first), why);
  ck_assert_msg(h == SL_HEALTH_READY, "%s", why);
}

static double metric(sl_job_t *job, const char *name, const char *labels) {
  double v = -1;
  ck_assert_msg(sl_job_metric_value(job, name, labels, &v) == SL_OK, "%s %s",
                name, labels);
  return v;
}

/* A settled process's figures: its tasks, every member assigned, the
 * tasks moved in and out adding up to what it holds, one pause per
 * member's join and per revocation; every series names the instance. */
static void check_settled_metrics(sl_job_t *job, const char *name) {
  int local = 0;
  for (uint32_t t = 0; t < PARTS; t++) {
    sl_query_owner_t o;
    local += where(job, t, &o) == SL_QUERY_LOCAL;
  }
  char inst[64], in_a[96], in_r[96];
  snprintf(inst, sizeof(inst), "instance=%s", name);
  snprintf(in_a, sizeof(in_a), "instance=%s,direction=assigned", name);
  snprintf(in_r, sizeof(in_r), "instance=%s,direction=revoked", name);
  ck_assert_int_eq((int)metric(job, "sluice_group_tasks", inst), local);
  ck_assert_int_eq((int)metric(job, "sluice_group_rebalancing", inst), 0);
  ck_assert_int_eq((int)(metric(job, "sluice_group_tasks_moved_total", in_a) -
                         metric(job, "sluice_group_tasks_moved_total", in_r)),
                   local);
  snprintf(in_r, sizeof(in_r), "instance=%s,event=revoked", name);
  ck_assert_int_eq(
      (int)metric(job, "sluice_group_rebalance_pause_seconds", inst),
      2 + (int)metric(job, "sluice_group_rebalances_total", in_r));
  char *text = NULL, want[128];
  ck_assert_int_eq(
      sl_job_metrics_format(job, SL_METRICS_PROMETHEUS, &text, NULL), SL_OK);
  snprintf(want, sizeof(want), "\nsluice_group_tasks{instance=\"%s\"} %d\n",
           name, local);
  ck_assert_msg(strstr(text, want), "no %s", want);
  snprintf(want, sizeof(want), "\nsluice_job_parallelism{instance=\"%s\"} 2\n",
           name);
  ck_assert_msg(strstr(text, want), "no %s", want);
  free(text);
}

START_TEST(each_member_answers_its_keys_and_names_the_owner) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "in", PARTS);
  /* A process that died holding every task left its claim behind: the
   * members' own claims come later and win. */
  tk_topic(&c, "sluice-gq-owners", 1);
  rd_kafka_t *g = tk_producer(&c);
  tk_send(g, "sluice-gq-owners", 0, "ghost",
          "{\"instance\":\"ghost\",\"endpoint\":\"http://"
          "192.0.2.1:1\",\"tasks\":[0,1,2,3,4,5]}",
          1, NULL, NULL);
  tk_flush(g);
  rd_kafka_destroy(g);
  sl_job_t *jobs[2] = {member(&c, "a"), member(&c, "b")};
  const char *names[2] = {"a", "b"};
  tk_run ra, rb;
  start_rebalancing(&ra, jobs[0]);
  wait_settled(jobs, names, 1);
  /* Every claim of the rebalance b's join causes is refused at first
   * (only claims are produced until the input below): each is published
   * again until one is delivered, else the other never learns of it. */
  rd_kafka_mock_push_request_errors(
      c.mc, 0 /* Produce */, 12, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
  start_rebalancing(&rb, jobs[1]);
  wait_settled(jobs, names, 2);
  check_settled_metrics(jobs[0], "a");
  check_settled_metrics(jobs[1], "b");

  rd_kafka_t *p = tk_producer(&c);
  char key[32], val[32];
  for (int i = 0; i < KEYS; i++) {
    key_of(i, key, sizeof(key));
    snprintf(val, sizeof(val), "v%d", i);
    tk_send(p, "in", (int32_t)sl__murmur2_partition(key, strlen(key), PARTS),
            key, val, 1000 + i, NULL, NULL);
  }
  tk_flush(p);
  rd_kafka_destroy(p);

  for (int i = 0; i < KEYS; i++) {
    key_of(i, key, sizeof(key));
    snprintf(val, sizeof(val), "v%d", i);
    uint32_t t = sl__murmur2_partition(key, strlen(key), PARTS);
    sl_query_owner_t o;
    int own = where(jobs[0], t, &o) == SL_QUERY_LOCAL ? 0 : 1;
    char err[512];
    /* The owner answers, once the record arrived. */
    sl_query_result_t *res = NULL;
    int rc = 0;
    for (int r = 0; r < WAIT_MS / 50 && rc != 1; r++) {
      rc = sl_job_query(jobs[own], "last", "v", key, strlen(key), NULL, &res,
                        err, sizeof(err));
      if (rc != 1)
        tk_sleep_ms(50);
    }
    ck_assert_msg(rc == 1, "%s at %s: %d %s", key, names[own], rc, err);
    ck_assert_uint_eq(res->items[0].value_len, strlen(val));
    ck_assert_mem_eq(res->items[0].value, val, strlen(val));
    sl_query_result_free(res);
    /* The other names it. */
    sl_query_owner_t named;
    memset(&named, 0xff, sizeof(named));
    sl_query_opts_t opts = {.owner = &named};
    rc = sl_job_query(jobs[!own], "last", "v", key, strlen(key), &opts, &res,
                      err, sizeof(err));
    ck_assert_int_eq(rc, SL_ERR_NOT_OWNER);
    ck_assert_ptr_null(res);
    char ep[64];
    endpoint_of(jobs[own], ep, sizeof(ep));
    ck_assert_int_eq(named.where, SL_QUERY_REMOTE);
    ck_assert_uint_eq(named.task, t);
    ck_assert_str_eq(named.instance, names[own]);
    ck_assert_str_eq(named.endpoint, ep);
    ck_assert_msg(strstr(err, names[own]) && strstr(err, ep), "%s", err);

    /* HTTP: the other redirects to the same query at the owner. */
    char path[256], want[320], hex[64] = "", *head, *body;
    for (size_t b = 0; b < strlen(key); b++)
      snprintf(hex + 2 * b, 3, "%02x", (unsigned char)key[b]);
    snprintf(path, sizeof(path), "/state/last/v?key=%s", key);
    ck_assert_int_eq(
        hg_get_head(sl_job_metrics_port(jobs[!own]), path, NULL, &head, &body),
        307);
    snprintf(want, sizeof(want), "\r\nLocation: %s/state/last/v?key_hex=%s\r\n",
             ep, hex);
    char *h = NULL;
    if (asprintf(&h, "%s\r\n", head) < 0)
      ck_abort();
    ck_assert_msg(strstr(h, want), "%s", head);
    char bwant[256];
    snprintf(bwant, sizeof(bwant),
             "\"owner\":{\"task\":%u,\"instance\":\"%s\",\"endpoint\":\"%s\"}",
             t, names[own], ep);
    ck_assert_msg(strstr(body, bwant), "%s", body);
    free(h);
    free(head);
    free(body);
    snprintf(path, sizeof(path), "/state/last/v?key_hex=%s", hex);
    ck_assert_int_eq(hg_get(sl_job_metrics_port(jobs[own]), path, &body), 200);
    snprintf(bwant, sizeof(bwant), "\"value\":\"%s\"", val);
    ck_assert_msg(strstr(body, bwant), "%s", body);
    free(body);
  }

  /* b leaves: a owns every task again, and says so at once for the tasks
   * it is assigned (their state stayed with b: a's answer is its own). */
  ck_assert_int_eq(tk_run_stop(&rb), 0);
  sl_job_destroy(jobs[1]);
  for (int r = 0;; r++) {
    int local = 0;
    for (uint32_t t = 0; t < PARTS; t++) {
      sl_query_owner_t o;
      local += where(jobs[0], t, &o) == SL_QUERY_LOCAL;
    }
    if (local == PARTS)
      break;
    ck_assert_msg(r < WAIT_MS / 50, "a owns %d of %d tasks", local, PARTS);
    tk_sleep_ms(50);
  }
  ck_assert_int_eq(tk_run_stop(&ra), 0);
  sl_job_destroy(jobs[0]);
  tk_stop(&c);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("group_query");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 180);
  tcase_add_test(tc, each_member_answers_its_keys_and_names_the_owner);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  /* The mock cluster lives in this process: no fork per test. */
  SRunner *sr = srunner_create(suite());
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
