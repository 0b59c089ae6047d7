/* SPDX-License-Identifier: Apache-2.0 */
/* Kafka source and sink on librdkafka's mock cluster (one per test, in
 * this process; Check runs without fork because the mock's control API
 * hangs in a forked child): JSON in -> keyed window -> JSON out,
 * per-partition watermarks with an idle partition, restart from source
 * positions, dead-letter queue, broker loss. */
#include <check.h>

#include "core/buf.h"
#include "kafka/kafka_int.h"
#include "runtime/runtime.h"
#include "test_kafka_util.h"
#include "testutil.h"

/* ---- End to end: JSON in -> keyed tumbling count -> JSON out --------------
 */

static void e2e(int par) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "clicks", 3);
  tk_topic(&c, "counts", 1);
  rd_kafka_t *p = tk_producer(&c);
  char v[128], user[16];
  /* 5 users x 5 one-second windows x 3 clicks, keyed so a user stays on
   * one partition and its timestamps ascend there. */
  for (int w = 0; w < 5; w++)
    for (int u = 0; u < 5; u++)
      for (int i = 0; i < 3; i++) {
        snprintf(user, sizeof(user), "u%d", u);
        snprintf(v, sizeof(v), "{\"user\":\"%s\",\"ts\":%d}", user,
                 w * 1000 + u * 10 + i * 100);
        tk_send(p, "clicks", -1, user, v, 0, NULL, NULL);
      }
  /* Every partition moves past the last window. */
  for (int part = 0; part < 3; part++)
    tk_send(p, "clicks", part, "zz", "{\"user\":\"zz\",\"ts\":100000}", 0, NULL,
            NULL);
  tk_flush(p);

  sl_job_t *job = tk_job("e2e", tk_conf(&c, par, NULL));
  sl_kafka_source_opts_t so = {.codec = SL_KAFKA_JSON,
                               .key_pointer = "/user",
                               .ts_pointer = "/ts",
                               .start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "clicks", "clicks", &so);
  sl_watermark_spec_t wm = {.kind = SL_WM_MONOTONOUS};
  sl_with_watermarks(src, &wm);
  tk_window win = {1000};
  sl_stream_t *counts =
      sl_process(sl_key_by(src, NULL, NULL), "count", &tk_window_ops, &win);
  ck_assert_int_eq(sl_sink_kafka(counts, "out", "counts", NULL), 0);
  tk_run r;
  tk_run_start(&r, job);
  tk_reader rd;
  tk_reader_open(&rd, &c, "counts", 1);
  size_t n = tk_read(&rd, 25, 20000);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  tk_read(&rd, 26, 300); /* nothing more may arrive */
  ck_assert_uint_eq(rd.n, 25);
  (void)n;
  int seen[5][5] = {{0}};
  for (size_t i = 0; i < rd.n; i++) {
    json_t *j = json_loads(rd.m[i].value, 0, NULL);
    ck_assert_msg(j != NULL, "not JSON: %s", rd.m[i].value);
    const char *key = json_string_value(json_object_get(j, "key"));
    int64_t end = json_integer_value(json_object_get(j, "end"));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "count")), 3);
    ck_assert_str_eq(rd.m[i].key, key);
    ck_assert_int_eq(rd.m[i].ts, end - 1); /* the window's max timestamp */
    int u = key[1] - '0', w = (int)(end / 1000) - 1;
    ck_assert(u >= 0 && u < 5 && w >= 0 && w < 5);
    seen[u][w]++;
    json_decref(j);
  }
  for (int u = 0; u < 5; u++)
    for (int w = 0; w < 5; w++)
      ck_assert_int_eq(seen[u][w], 1);
  tk_reader_close(&rd);
  sl_job_destroy(job);
  rd_kafka_destroy(p);
  tk_stop(&c);
}

START_TEST(json_window_json_p1) {
  e2e(1);
}
END_TEST

START_TEST(json_window_json_p2) {
  e2e(2);
}
END_TEST

/* ---- Per-partition watermarks with an idle partition -----------------------
 */

static int64_t last_wm(tu_log *log, size_t *recs) {
  pthread_mutex_lock(&log->lock);
  int64_t wm = SL_TS_MIN;
  size_t n = 0;
  for (size_t i = 0; i < log->n; i++) {
    if (log->ev[i].kind == TU_WM)
      wm = log->ev[i].ts;
    else if (log->ev[i].kind == TU_REC)
      n++;
  }
  pthread_mutex_unlock(&log->lock);
  if (recs)
    *recs = n;
  return wm;
}

/* Waits until the log holds want records and, if wm != SL_TS_MIN, the
 * watermark wm. */
static void wait_log(tu_log *log, size_t want, int64_t wm) {
  size_t n = 0;
  int64_t cur = SL_TS_MIN;
  for (int i = 0; i < 400; i++) {
    cur = last_wm(log, &n);
    if (n >= want && (wm == SL_TS_MIN || cur == wm))
      return;
    tk_sleep_ms(25);
  }
  ck_abort_msg("waited for %zu records and watermark %" PRId64
               ", have %zu and %" PRId64,
               want, wm, n, cur);
}

START_TEST(per_partition_watermarks_idle_partition) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "ev", 2);
  rd_kafka_t *p = tk_producer(&c);
  sl_clock_t *clk = sl_clock_new_manual(1000000);
  sl_job_t *job = tk_job("wm", tk_conf(&c, 1, NULL));
  sl_job_set_clock(job, clk);
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "ev", "ev", &so);
  sl_watermark_spec_t wm = {.kind = SL_WM_MONOTONOUS, .idle_timeout_ms = 5000};
  sl_with_watermarks(src, &wm);
  tu_log log;
  tu_log_init(&log);
  tu_sink none;
  tu_sink_init(&none);
  ck_assert_int_eq(
      sl_sink(tu_log_op(src, "log", &log), "sink", tu_sink_fn, &none), 0);
  tk_run r;
  tk_run_start(&r, job);

  tk_send(p, "ev", 0, "a", "a1", 1000, NULL, NULL);
  tk_send(p, "ev", 0, "a", "a2", 2000, NULL, NULL);
  tk_send(p, "ev", 1, "b", "b1", 500, NULL, NULL);
  tk_flush(p);
  /* The minimum over partitions, not the maximum: 500 - 1. */
  wait_log(&log, 3, 499);
  tk_send(p, "ev", 0, "a", "a3", 3000, NULL, NULL);
  tk_flush(p);
  wait_log(&log, 4, SL_TS_MIN);
  tk_sleep_ms(200);
  ck_assert_int_eq(last_wm(&log, NULL), 499); /* partition 1 holds it */
  /* Partition 1 goes idle: partition 0 alone decides. Partition 0 had a
   * record within the timeout, so only partition 1 is idle. */
  sl_clock_advance(clk, 4000);
  tk_send(p, "ev", 0, "a", "a4", 3500, NULL, NULL);
  tk_flush(p);
  wait_log(&log, 5, SL_TS_MIN);
  sl_clock_advance(clk, 2000);
  wait_log(&log, 5, 3499);
  /* Partition 1 becomes active again behind: the watermark never goes
   * back, and it follows the minimum again from there. */
  tk_send(p, "ev", 1, "b", "b2", 4000, NULL, NULL);
  tk_flush(p);
  /* b2 first: were a5 read before it, partition 1 would still be idle and
   * the watermark would rightly follow a5 alone. */
  wait_log(&log, 6, SL_TS_MIN);
  tk_send(p, "ev", 0, "a", "a5", 6000, NULL, NULL);
  tk_flush(p);
  wait_log(&log, 7, 3999);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  /* Watermarks only ever increase. */
  int64_t prev = SL_TS_MIN;
  for (size_t i = 0; i < log.n; i++)
    if (log.ev[i].kind == TU_WM) {
      ck_assert_int_ge(log.ev[i].ts, prev);
      prev = log.ev[i].ts;
    }
  sl_job_destroy(job);
  sl_clock_destroy(clk);
  tu_log_free(&log);
  tu_sink_free(&none);
  rd_kafka_destroy(p);
  tk_stop(&c);
}
END_TEST

/* ---- Restart from source positions ----------------------------------------
 */

/* Stands in for the checkpoint coordinator (not on this branch yet): wraps
 * the Kafka source's ops, takes snapshot 1 between two polls once `at`
 * records were seen, and restores a saved snapshot before open. */
typedef struct wrap {
  const sl_source_ops_t *ops;
  void *opaque;
  sl_source_ops_t mine;
  pthread_mutex_t lock;
  size_t seen, at, seen_at_snap;
  bool snapped;
  sl_blob_t restore[4];
  size_t n_restore;
  sl_buf_t snaps[4];
  int n_snaps;
  /* (partition, offset) of every record, in order. */
  int32_t part[4096];
  int64_t off[4096];
  size_t n;
} wrap;

static int w_open(sl_source_ctx_t *ctx, void *o) {
  wrap *w = o;
  /* The runtime calls restore before open when the job restores. */
  if (w->n_restore) {
    int rc = w->ops->restore(ctx, w->restore, w->n_restore, w->opaque);
    if (rc)
      return rc;
  }
  return w->ops->open(ctx, w->opaque);
}
static void w_close(sl_source_ctx_t *ctx, void *o) {
  wrap *w = o;
  w->ops->close(ctx, w->opaque);
}
static int w_poll(sl_source_ctx_t *ctx, void *o) {
  wrap *w = o;
  int rc = w->ops->poll(ctx, w->opaque);
  pthread_mutex_lock(&w->lock);
  bool snap = !w->snapped && w->at && w->seen >= w->at;
  pthread_mutex_unlock(&w->lock);
  if (!rc && snap) {
    /* Between two polls, as the runtime calls snapshot at a barrier. */
    pthread_mutex_lock(&w->lock);
    int i = w->n_snaps++;
    pthread_mutex_unlock(&w->lock);
    ck_assert_int_eq(w->ops->snapshot(ctx, 1, &w->snaps[i], w->opaque), 0);
    /* Checkpoint 1 completes: offsets go to the group (lag monitoring). */
    w->ops->checkpoint_complete(ctx, 1, w->opaque);
    pthread_mutex_lock(&w->lock);
    if (w->n_snaps == sl_source_ctx_subtasks(ctx)) {
      w->snapped = true;
      w->seen_at_snap = w->seen;
    }
    pthread_mutex_unlock(&w->lock);
  }
  return rc;
}
static int w_restore(sl_source_ctx_t *ctx, const sl_blob_t *b, size_t n,
                     void *o) {
  wrap *w = o;
  return w->ops->restore(ctx, b, n, w->opaque);
}

/* Every record, in a sink chained to the source (sees the message). */
static int w_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *o) {
  (void)rec;
  wrap *w = o;
  const sl_kafka_msg_t *m = sl_kafka_current(ctx);
  ck_assert_ptr_nonnull(m);
  pthread_mutex_lock(&w->lock);
  if (w->n < 4096) {
    w->part[w->n] = sl_kafka_msg_partition(m);
    w->off[w->n] = sl_kafka_msg_offset(m);
    w->n++;
  }
  w->seen++;
  pthread_mutex_unlock(&w->lock);
  return 0;
}

/* Runs a job whose source is wrapped; restores the given snapshots. */
static sl_job_t *wrapped_job(tk_cluster *c, int par, wrap *w) {
  /* Small polls, so that the snapshot falls inside the input. */
  static const char *small[] = {"source.batch.size", "50", NULL};
  sl_job_t *job = tk_job("restart", tk_conf(c, par, small));
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
  ck_assert_ptr_nonnull(src);
  w->ops = src->node->src_ops;
  w->opaque = src->node->src_opaque;
  w->mine = *w->ops;
  w->mine.open = w_open;
  w->mine.poll = w_poll;
  w->mine.close = w_close;
  w->mine.restore = w_restore;
  src->node->src_ops = &w->mine;
  src->node->src_opaque = w;
  ck_assert_int_eq(sl_sink(src, "collect", w_sink, w), 0);
  return job;
}

static void wait_seen(wrap *w, size_t want) {
  for (int i = 0; i < 800; i++) {
    pthread_mutex_lock(&w->lock);
    size_t n = w->seen;
    pthread_mutex_unlock(&w->lock);
    if (n >= want)
      return;
    tk_sleep_ms(25);
  }
  ck_abort_msg("saw fewer than %zu records", want);
}

typedef struct pos_arg {
  int64_t off[2];
} pos_arg;

static int get_pos(const char *group, const char *topic, int32_t partition,
                   int64_t offset, void *arg) {
  (void)group;
  ck_assert_str_eq(topic, "in");
  ((pos_arg *)arg)->off[partition] = offset;
  return 0;
}

START_TEST(restart_resumes_at_checkpointed_offsets) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "in", 2);
  rd_kafka_t *p = tk_producer(&c);
  char v[32];
  for (int i = 0; i < 400; i++) {
    snprintf(v, sizeof(v), "v%d", i);
    tk_send(p, "in", i % 2, NULL, v, 0, NULL, NULL);
  }
  tk_flush(p);

  /* Run 1 at P=1: snapshot after >= 150 records, then read on. */
  static wrap w1, w2;
  memset(&w1, 0, sizeof(w1));
  memset(&w2, 0, sizeof(w2));
  pthread_mutex_init(&w1.lock, NULL);
  pthread_mutex_init(&w2.lock, NULL);
  w1.at = 150;
  sl_job_t *job = wrapped_job(&c, 1, &w1);
  /* A small batch so that the snapshot falls inside the input. */
  tk_run r;
  tk_run_start(&r, job);
  wait_seen(&w1, 400);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  sl_job_destroy(job);
  ck_assert(w1.snapped);
  pos_arg pos = {{-1, -1}};
  sl_blob_t blob = {w1.snaps[0].data, w1.snaps[0].len};
  ck_assert_int_eq(sl__kpos_decode(&blob, get_pos, &pos), 0);
  ck_assert_int_eq(pos.off[0] + pos.off[1], (int64_t)w1.seen_at_snap);
  /* The completed checkpoint's positions are the group's offsets. */
  {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", c.bootstrap, NULL, 0);
    rd_kafka_conf_set(conf, "group.id", "sluice-restart", NULL, 0);
    rd_kafka_t *k = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(l, "in", 0);
    rd_kafka_topic_partition_list_add(l, "in", 1);
    ck_assert_int_eq(rd_kafka_committed(k, l, 5000), 0);
    ck_assert_int_eq(l->elems[0].offset, pos.off[0]);
    ck_assert_int_eq(l->elems[1].offset, pos.off[1]);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(k);
  }

  /* Run 2 at P=2 from the snapshot (union redistribution). */
  w2.restore[0] = blob;
  w2.n_restore = 1;
  sl_job_t *job2 = wrapped_job(&c, 2, &w2);
  tk_run_start(&r, job2);
  size_t rest = (size_t)(400 - pos.off[0] - pos.off[1]);
  wait_seen(&w2, rest);
  tk_sleep_ms(300);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  sl_job_destroy(job2);

  /* Run 1 before the snapshot: exactly offsets [0, pos) per partition. */
  int have[2][200];
  memset(have, 0, sizeof(have));
  for (size_t i = 0; i < w1.seen_at_snap; i++) {
    ck_assert_int_lt(w1.off[i], pos.off[w1.part[i]]);
    have[w1.part[i]][w1.off[i]]++;
  }
  /* Run 2: starts exactly at the positions, reads each record once. */
  ck_assert_uint_eq(w2.n, rest);
  for (size_t i = 0; i < w2.n; i++) {
    ck_assert_int_ge(w2.off[i], pos.off[w2.part[i]]);
    have[w2.part[i]][w2.off[i]]++;
  }
  /* Nothing lost, nothing twice across the restart. */
  for (int q = 0; q < 2; q++)
    for (int o = 0; o < 200; o++)
      ck_assert_msg(have[q][o] == 1, "partition %d offset %d seen %d times", q,
                    o, have[q][o]);
  /* Run 1 went on past the snapshot: those records are the only ones
   * that a restart delivers again (at-least-once duplicates). */
  ck_assert_uint_gt(w1.seen, w1.seen_at_snap);

  for (int i = 0; i < 4; i++)
    sl__buf_free(&w1.snaps[i]);
  rd_kafka_destroy(p);
  tk_stop(&c);
}
END_TEST

/* ---- Bad input: dead-letter queue, skip ------------------------------------
 */

/* A user function that fails on {"boom": true}, reading the JSON the
 * source already parsed (decode once per record), and rejects
 * {"reject": "<why>"} with a reason. */
static int boom_map(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                    void *opaque) {
  (void)in;
  (void)out;
  (void)opaque;
  const sl_kafka_msg_t *m = sl_kafka_current(ctx);
  ck_assert_ptr_nonnull(m);
  json_t *j = sl_kafka_msg_json(m);
  ck_assert_ptr_nonnull(j);
  json_t *why = sl_json_pointer(j, "/reject");
  if (why)
    return sl_ctx_reject(
        ctx, "id %lld: %s",
        (long long)json_integer_value(sl_json_pointer(j, "/id")),
        json_string_value(why));
  return json_is_true(sl_json_pointer(j, "/boom")) ? -1 : 0;
}

static sl_job_t *bad_input_job(tk_cluster *c, const char *policy) {
  const char *kv[] = {"error.policy", policy, "dlq.topic", "dead", NULL};
  sl_job_t *job = tk_job("bad", tk_conf(c, 1, kv));
  sl_kafka_source_opts_t so = {.codec = SL_KAFKA_JSON,
                               .start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
  sl_stream_t *m = sl_map(src, "boom-map", boom_map, NULL);
  ck_assert_int_eq(sl_sink_kafka(m, "out", "good", NULL), 0);
  return job;
}

static void produce_bad_input(tk_cluster *c) {
  rd_kafka_t *p = tk_producer(c);
  tk_send(p, "in", 0, "k1", "{\"id\":1}", 0, NULL, NULL);
  tk_send(p, "in", 0, "k2", "{oops", 1234, "trace", "abc");
  tk_send(p, "in", 0, "k3", "{\"id\":2,\"boom\":true}", 0, "trace", "def");
  tk_send(p, "in", 0, "k4", "{\"id\":3}", 0, NULL, NULL);
  tk_flush(p);
  rd_kafka_destroy(p);
}

START_TEST(poison_records_reach_dead_letter_topic) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "in", 1);
  tk_topic(&c, "good", 1);
  tk_topic(&c, "dead", 1);
  produce_bad_input(&c);
  /* A record the user function rejects with a reason. */
  rd_kafka_t *p = tk_producer(&c);
  tk_send(p, "in", 0, "k5", "{\"id\":5,\"reject\":\"amount over limit\"}", 0,
          NULL, NULL);
  tk_flush(p);
  rd_kafka_destroy(p);
  sl_job_t *job = bad_input_job(&c, "dlq");
  tk_run r;
  tk_run_start(&r, job);
  tk_reader good, dead;
  tk_reader_open(&good, &c, "good", 1);
  tk_reader_open(&dead, &c, "dead", 1);
  tk_read(&good, 2, 15000);
  tk_read(&dead, 3, 15000);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  ck_assert_uint_eq(good.n, 2);
  ck_assert_str_eq(good.m[0].value, "{\"id\":1}");
  ck_assert_str_eq(good.m[1].value, "{\"id\":3}");
  ck_assert_uint_eq(dead.n, 3);
  char b[256];
  /* Undecodable: the original message with its headers, plus why and
   * where it came from. */
  ck_assert_str_eq(dead.m[0].key, "k2");
  ck_assert_str_eq(dead.m[0].value, "{oops");
  ck_assert_int_eq(dead.m[0].ts, 1234);
  ck_assert_str_eq(tk_header(&dead.m[0], "trace", b, sizeof(b)), "abc");
  ck_assert_ptr_nonnull(strstr(
      tk_header(&dead.m[0], "sluice.error", b, sizeof(b)), "invalid JSON"));
  ck_assert_str_eq(tk_header(&dead.m[0], "sluice.source.topic", b, sizeof(b)),
                   "in");
  ck_assert_str_eq(
      tk_header(&dead.m[0], "sluice.source.partition", b, sizeof(b)), "0");
  ck_assert_str_eq(tk_header(&dead.m[0], "sluice.source.offset", b, sizeof(b)),
                   "1");
  ck_assert_str_eq(tk_header(&dead.m[0], "sluice.error.operator", b, sizeof(b)),
                   "in");
  /* A user-function error in an operator chained to the source. */
  ck_assert_str_eq(dead.m[1].value, "{\"id\":2,\"boom\":true}");
  ck_assert_str_eq(tk_header(&dead.m[1], "trace", b, sizeof(b)), "def");
  ck_assert_str_eq(tk_header(&dead.m[1], "sluice.error.operator", b, sizeof(b)),
                   "boom-map");
  ck_assert_str_eq(tk_header(&dead.m[1], "sluice.source.offset", b, sizeof(b)),
                   "2");
  ck_assert_str_eq(tk_header(&dead.m[1], "sluice.error", b, sizeof(b)),
                   "user function of boom-map returned -1");
  /* The reason the user function gave (sl_ctx_reject) is the header. */
  ck_assert_str_eq(dead.m[2].key, "k5");
  ck_assert_str_eq(tk_header(&dead.m[2], "sluice.error", b, sizeof(b)),
                   "id 5: amount over limit");
  ck_assert_str_eq(tk_header(&dead.m[2], "sluice.error.operator", b, sizeof(b)),
                   "boom-map");
  ck_assert_str_eq(tk_header(&dead.m[2], "sluice.source.offset", b, sizeof(b)),
                   "4");
  /* errors counts the dead letters of each operator. */
  sl_op_stats_t st;
  ck_assert_int_eq(sl_job_op_stats(job, "in", &st), 0);
  ck_assert_uint_eq(st.errors, 1);
  ck_assert_int_eq(sl_job_op_stats(job, "boom-map", &st), 0);
  ck_assert_uint_eq(st.errors, 2);
  tk_reader_close(&good);
  tk_reader_close(&dead);
  sl_job_destroy(job);
  tk_stop(&c);
}
END_TEST

START_TEST(poison_records_skipped_and_counted_or_fail) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "in", 1);
  tk_topic(&c, "good", 1);
  tk_topic(&c, "dead", 1);
  produce_bad_input(&c);
  sl_job_t *job = bad_input_job(&c, "skip");
  tk_run r;
  tk_run_start(&r, job);
  tk_reader good;
  tk_reader_open(&good, &c, "good", 1);
  tk_read(&good, 2, 15000);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  ck_assert_uint_eq(good.n, 2);
  sl_op_stats_t st;
  ck_assert_int_eq(sl_job_op_stats(job, "in", &st), 0);
  ck_assert_uint_eq(st.errors, 1);
  tk_reader_close(&good);
  sl_job_destroy(job);

  /* fail: the job stops with the record's location. */
  job = bad_input_job(&c, "fail");
  ck_assert_int_eq(sl_job_run(job), SL_ERR_DECODE);
  ck_assert_ptr_nonnull(strstr(sl_job_errmsg(job), "in[0]@1"));
  sl_job_destroy(job);
  tk_stop(&c);
}
END_TEST

/* ---- Oversized dead letters ------------------------------------------------
 */

/* One message read back whole: key, value and headers as they are. */
typedef struct big_msg {
  char key[64];
  unsigned char *value;
  size_t value_len, key_len;
  size_t headers_size; /* sum over headers of name + value + 10 bytes */
  char headers[512];   /* "a=1;b=2;", values cut at 100 bytes */
} big_msg;

static void read_whole(tk_cluster *c, const char *topic, big_msg *out) {
  char err[512];
  memset(out, 0, sizeof(*out));
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstrap, NULL, 0);
  rd_kafka_conf_set(conf, "group.id", "big-reader", NULL, 0);
  rd_kafka_conf_set(conf, "log_level", "2", NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  ck_assert_msg(rk != NULL, "%s", err);
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, 0)->offset =
      RD_KAFKA_OFFSET_BEGINNING;
  ck_assert_int_eq(rd_kafka_assign(rk, l), 0);
  rd_kafka_topic_partition_list_destroy(l);
  for (int i = 0; i < 300 && !out->value; i++) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
    if (!m)
      continue;
    if (!m->err) {
      out->value = malloc(m->len + 1);
      memcpy(out->value, m->payload, m->len);
      out->value_len = m->len;
      out->key_len = m->key_len;
      snprintf(out->key, sizeof(out->key), "%.*s", (int)m->key_len,
               (const char *)m->key);
      rd_kafka_headers_t *h = NULL;
      const char *name;
      const void *v;
      size_t len, o = 0;
      if (!rd_kafka_message_headers(m, &h))
        for (size_t j = 0; !rd_kafka_header_get_all(h, j, &name, &v, &len);
             j++) {
          out->headers_size += strlen(name) + len + 10;
          o += (size_t)snprintf(out->headers + o, sizeof(out->headers) - o,
                                "%s=%.*s;", name, (int)(len < 100 ? len : 100),
                                v ? (const char *)v : "");
        }
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  ck_assert_msg(out->value != NULL, "nothing on %s", topic);
}

static const char *big_header(const big_msg *m, const char *name, char *buf,
                              size_t cap) {
  tk_msg t;
  snprintf(t.headers, sizeof(t.headers), "%s", m->headers);
  return tk_header(&t, name, buf, cap);
}

/* A value of n bytes that varies along its length, so a prefix check
 * sees where it was cut; valid JSON when boom. */
static char *big_value(size_t n, bool boom) {
  char *v = malloc(n + 1);
  const char *head = boom ? "{\"boom\":true,\"pad\":\"" : "{not json ";
  size_t hl = strlen(head);
  memcpy(v, head, hl);
  for (size_t i = hl; i < n; i++)
    v[i] = (char)('a' + i % 26);
  if (boom)
    memcpy(v + n - 2, "\"}", 2);
  v[n] = '\0';
  return v;
}

/* A bad record larger than the producer's message.max.bytes (librdkafka's
 * default, 1000000): before, its dead letter failed the job, and a
 * restart failed on it again. It is written cut to fit, with headers
 * saying so, and the records after it are processed. */
START_TEST(oversized_dead_letter_written_truncated) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "in", 1);
  tk_topic(&c, "good", 1);
  tk_topic(&c, "dead", 1);
  const size_t n = 1200000;
  char *huge = big_value(n, false);
  char err[512];
  rd_kafka_conf_t *pc = rd_kafka_conf_new();
  rd_kafka_conf_set(pc, "bootstrap.servers", c.bootstrap, NULL, 0);
  rd_kafka_conf_set(pc, "message.max.bytes", "2000000", NULL, 0);
  rd_kafka_conf_set(pc, "log_level", "2", NULL, 0);
  rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof(err));
  ck_assert_msg(p != NULL, "%s", err);
  tk_send(p, "in", 0, "k1", "{\"id\":1}", 0, NULL, NULL);
  tk_send(p, "in", 0, "k2", huge, 1234, "trace", "abc");
  tk_send(p, "in", 0, "k3", "{\"id\":2}", 0, NULL, NULL);
  tk_flush(p);
  rd_kafka_destroy(p);

  sl_job_t *job = bad_input_job(&c, "dlq");
  tk_run r;
  tk_run_start(&r, job);
  tk_reader good;
  tk_reader_open(&good, &c, "good", 1);
  tk_read(&good, 2, 15000);
  big_msg dead;
  read_whole(&c, "dead", &dead);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  ck_assert_uint_eq(good.n, 2);
  ck_assert_str_eq(good.m[0].value, "{\"id\":1}");
  ck_assert_str_eq(good.m[1].value, "{\"id\":2}");

  char b[256];
  ck_assert_str_eq(dead.key, "k2");
  ck_assert_str_eq(big_header(&dead, "sluice.truncated", b, sizeof(b)), "true");
  ck_assert_str_eq(big_header(&dead, "sluice.original.size", b, sizeof(b)),
                   "1200000");
  ck_assert_str_eq(big_header(&dead, "sluice.original.key.size", b, sizeof(b)),
                   "2");
  ck_assert_str_eq(big_header(&dead, "sluice.source.topic", b, sizeof(b)),
                   "in");
  ck_assert_str_eq(big_header(&dead, "sluice.source.partition", b, sizeof(b)),
                   "0");
  ck_assert_str_eq(big_header(&dead, "sluice.source.offset", b, sizeof(b)),
                   "1");
  ck_assert_ptr_nonnull(
      strstr(big_header(&dead, "sluice.error", b, sizeof(b)), "invalid JSON"));
  ck_assert_str_eq(big_header(&dead, "trace", b, sizeof(b)), "abc");
  /* The value is the original's prefix that fills message.max.bytes less
   * the 1 KiB reserve, the key and the headers (docs/kafka.md). */
  ck_assert_uint_eq(dead.key_len + dead.value_len + dead.headers_size,
                    1000000 - 1024);
  ck_assert_int_eq(memcmp(dead.value, huge, dead.value_len), 0);
  sl_op_stats_t st;
  ck_assert_int_eq(sl_job_op_stats(job, "in", &st), 0);
  ck_assert_uint_eq(st.errors, 1);
  free(dead.value);
  free(huge);
  tk_reader_close(&good);
  sl_job_destroy(job);
  tk_stop(&c);
}
END_TEST

/* Kafka's log lines of component "kafka", as the host's log callback
 * gets them. */
typedef struct klines {
  pthread_mutex_t lock;
  char text[2048];
} klines;

static void on_klog(sl_log_level level, const char *component, const char *msg,
                    void *opaque) {
  klines *k = opaque;
  if (strcmp(component, "kafka") != 0)
    return;
  pthread_mutex_lock(&k->lock);
  size_t n = strlen(k->text);
  snprintf(k->text + n, sizeof(k->text) - n, "%d %s\n", (int)level, msg);
  pthread_mutex_unlock(&k->lock);
}

/* A dead letter within the producer's limit that the broker refuses as
 * too large (a topic's max.message.bytes below it; injected here) is
 * written again with half its value, and the job goes on; the host's log
 * callback is told, as a warning of component "kafka". */
START_TEST(dead_letter_refused_by_broker_retried_truncated) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "in", 1);
  tk_topic(&c, "dead", 1);
  const size_t n = 5000;
  char *boom = big_value(n, true);
  rd_kafka_t *p = tk_producer(&c);
  tk_send(p, "in", 0, "k1", "{\"id\":1}", 0, NULL, NULL);
  tk_send(p, "in", 0, "k2", boom, 0, NULL, NULL);
  tk_send(p, "in", 0, "k3", "{\"id\":3}", 0, NULL, NULL);
  tk_flush(p);
  rd_kafka_destroy(p);
  /* The job's only produce requests are dead letters: the first one
   * fails (0 = the Produce API). */
  rd_kafka_mock_push_request_errors(c.mc, 0, 1,
                                    RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);

  const char *kv[] = {"error.policy", "dlq", "dlq.topic", "dead", NULL};
  klines logs = {.lock = PTHREAD_MUTEX_INITIALIZER};
  sl_conf_t *conf = tk_conf(&c, 1, kv);
  sl_conf_set_log_cb(conf, on_klog, &logs);
  sl_job_t *job = tk_job("refused", conf);
  sl_kafka_source_opts_t so = {.codec = SL_KAFKA_JSON,
                               .start = SL_KAFKA_START_EARLIEST};
  tu_sink sink;
  tu_sink_init(&sink);
  sl_sink(
      sl_map(sl_source_kafka(job, "in", "in", &so), "boom-map", boom_map, NULL),
      "s", tu_sink_fn, &sink);
  tk_run r;
  tk_run_start(&r, job);
  big_msg dead;
  read_whole(&c, "dead", &dead);
  for (int i = 0; i < 200; i++) {
    pthread_mutex_lock(&sink.lock);
    size_t got = sink.n;
    pthread_mutex_unlock(&sink.lock);
    if (got >= 2)
      break;
    tk_sleep_ms(25);
  }
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  ck_assert_uint_eq(sink.n, 2);
  ck_assert_str_eq(sink.recs[0].value, "{\"id\":1}");
  ck_assert_str_eq(sink.recs[1].value, "{\"id\":3}");
  char b[256];
  ck_assert_str_eq(dead.key, "k2");
  ck_assert_uint_eq(dead.value_len, n / 2);
  ck_assert_int_eq(memcmp(dead.value, boom, n / 2), 0);
  ck_assert_str_eq(big_header(&dead, "sluice.truncated", b, sizeof(b)), "true");
  ck_assert_str_eq(big_header(&dead, "sluice.original.size", b, sizeof(b)),
                   "5000");
  ck_assert_str_eq(big_header(&dead, "sluice.source.offset", b, sizeof(b)),
                   "1");
  ck_assert_str_eq(big_header(&dead, "sluice.error.operator", b, sizeof(b)),
                   "boom-map");
  char want[256];
  snprintf(want, sizeof(want),
           "%d dead-letter queue: dead[0] refused a dead letter of 5002 bytes "
           "as too large; writing it cut to 2502 bytes\n",
           (int)SL_LOG_WARN);
  ck_assert_str_eq(logs.text, want);
  free(dead.value);
  free(boom);
  sl_job_destroy(job);
  tu_sink_free(&sink);
  tk_stop(&c);
}
END_TEST

/* ---- Configuration errors --------------------------------------------------
 */

static int end_at_once(sl_source_ctx_t *ctx, void *opaque) {
  (void)ctx;
  (void)opaque;
  return SL_POLL_END;
}

/* A job with Kafka clients but no broker to reach is a configuration error
 * when it is built, not a minute of retries (broker.timeout.ms) at run
 * time; both for a source and for a sink. */
START_TEST(no_bootstrap_servers_is_a_configuration_error) {
  char err[256];
  for (int sink = 0; sink < 2; sink++) {
    sl_conf_t *conf = sl_conf_new();
    ck_assert_int_eq(
        sl_conf_set(conf, "broker.timeout.ms", "1000", err, sizeof(err)), 0);
    sl_job_t *job = tk_job("nobroker", conf);
    if (sink) {
      sl_source_ops_t ops = {.poll = end_at_once};
      ck_assert_int_eq(
          sl_sink_kafka(sl_source(job, "gen", &ops, NULL), "out", "t", NULL),
          SL_ERR_CONF);
    } else {
      ck_assert_ptr_null(sl_source_kafka(job, "in", "in", NULL));
    }
    ck_assert_int_eq(sl_job_run(job), SL_ERR_CONF);
    ck_assert_str_eq(sl_job_errmsg(job),
                     sink ? "kafka sink \"out\": kafka.bootstrap.servers is "
                            "not set: set it to the brokers' comma-separated "
                            "host:port list"
                          : "kafka source \"in\": kafka.bootstrap.servers is "
                            "not set: set it to the brokers' comma-separated "
                            "host:port list");
    sl_job_destroy(job);
  }
}
END_TEST

/* ---- Broker loss -----------------------------------------------------------
 */

START_TEST(broker_gone_source_fails_after_timeout) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "in", 1);
  const char *kv[] = {"broker.timeout.ms", "1000", NULL};
  sl_job_t *job = tk_job("down", tk_conf(&c, 1, kv));
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  tu_sink sink;
  tu_sink_init(&sink);
  sl_sink(sl_source_kafka(job, "in", "in", &so), "s", tu_sink_fn, &sink);
  tk_run r;
  tk_run_start(&r, job);
  tk_sleep_ms(500);
  rd_kafka_mock_broker_set_down(c.mc, 1);
  pthread_join(r.t, NULL);
  ck_assert_int_eq(r.rc, SL_ERR_KAFKA);
  ck_assert_msg(strstr(sl_job_errmsg(job), "no Kafka broker reachable"), "%s",
                sl_job_errmsg(job));
  sl_job_destroy(job);
  tu_sink_free(&sink);
  tk_stop(&c);
}
END_TEST

static int gen5(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  static const char *v[] = {"a", "b", "c", "d", "e"};
  out->value = v[i % 5];
  out->value_len = 1;
  return 0;
}

START_TEST(broker_gone_sink_delivery_error_fails_job) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "out", 1);
  rd_kafka_mock_broker_set_down(c.mc, 1);
  const char *kv[] = {"broker.timeout.ms", "1000", NULL};
  sl_job_t *job = tk_job("down", tk_conf(&c, 1, kv));
  sl_generator_opts_t g = {.count = 5, .gen = gen5};
  sl_stream_t *src = sl_source_generator(job, "gen", &g);
  ck_assert_int_eq(sl_sink_kafka(src, "out", "out", NULL), 0);
  ck_assert_int_eq(sl_job_run(job), SL_ERR_KAFKA);
  ck_assert_msg(strstr(sl_job_errmsg(job), "out"), "%s", sl_job_errmsg(job));
  sl_job_destroy(job);
  tk_stop(&c);
}
END_TEST

/* ---- Start positions -------------------------------------------------------
 */

typedef struct firsts {
  pthread_mutex_t lock;
  int n;
  int64_t off[64];
} firsts;

static int note_offset(sl_ctx_t *ctx, const sl_record_t *rec, void *o) {
  (void)rec;
  firsts *f = o;
  const sl_kafka_msg_t *m = sl_kafka_current(ctx);
  pthread_mutex_lock(&f->lock);
  if (f->n < 64)
    f->off[f->n++] = sl_kafka_msg_offset(m);
  pthread_mutex_unlock(&f->lock);
  return 0;
}

/* Runs a job reading topic "pos" from the given start until it saw want
 * records (then waits a little for extras) and returns the offsets. */
static void run_from(tk_cluster *c, const sl_kafka_source_opts_t *so, int want,
                     firsts *f, rd_kafka_t *late) {
  memset(f, 0, sizeof(*f));
  pthread_mutex_init(&f->lock, NULL);
  sl_job_t *job = tk_job("pos", tk_conf(c, 1, NULL));
  ck_assert_int_eq(
      sl_sink(sl_source_kafka(job, "pos", "pos", so), "s", note_offset, f), 0);
  tk_run r;
  tk_run_start(&r, job);
  if (late) {
    tk_sleep_ms(300); /* subtask open: its start position is fixed */
    tk_send(late, "pos", 0, "k", "late", 20000, NULL, NULL);
    tk_flush(late);
  }
  for (int i = 0; i < 400; i++) {
    pthread_mutex_lock(&f->lock);
    int n = f->n;
    pthread_mutex_unlock(&f->lock);
    if (n >= want)
      break;
    tk_sleep_ms(25);
  }
  tk_sleep_ms(200);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  sl_job_destroy(job);
  pthread_mutex_destroy(&f->lock);
}

START_TEST(start_positions) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "pos", 1);
  rd_kafka_t *p = tk_producer(&c);
  for (int i = 0; i < 10; i++)
    tk_send(p, "pos", 0, "k", "v", 1000 * (i + 1), NULL, NULL);
  tk_flush(p);
  firsts f;
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  run_from(&c, &so, 10, &f, NULL);
  ck_assert_int_eq(f.n, 10);
  ck_assert_int_eq(f.off[0], 0);
  /* SL_KAFKA_START_TIMESTAMP is not tested here: the mock answers every
   * offsets-for-times lookup with -1 (which the source treats as "past the
   * end"), so it would prove nothing. */
  /* The group's committed offset. */
  char err[256];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", c.bootstrap, NULL, 0);
  rd_kafka_conf_set(conf, "group.id", "grp-pos", NULL, 0);
  rd_kafka_t *k = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, "pos", 0)->offset = 7;
  ck_assert_int_eq(rd_kafka_commit(k, l, 0), 0);
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(k);
  so = (sl_kafka_source_opts_t){.start = SL_KAFKA_START_COMMITTED,
                                .group_id = "grp-pos"};
  run_from(&c, &so, 3, &f, NULL);
  ck_assert_int_eq(f.n, 3);
  ck_assert_int_eq(f.off[0], 7);
  /* Latest: only what arrives after the start. */
  so = (sl_kafka_source_opts_t){.start = SL_KAFKA_START_LATEST};
  run_from(&c, &so, 1, &f, p);
  ck_assert_int_eq(f.n, 1);
  ck_assert_int_eq(f.off[0], 10);
  rd_kafka_destroy(p);
  tk_stop(&c);
}
END_TEST

/* ---- A user decode callback
 * --------------------------------------------------- */

/* Builds the record from the message: key from the header "user", value
 * as is, timestamp from the header "at"; drops messages with a "drop"
 * header and rejects those without "user". */
static int decode_hdr(const sl_kafka_msg_t *m, sl_record_t *out, char *err,
                      size_t errlen, void *opaque) {
  static _Thread_local char ts[32];
  (void)opaque;
  const void *v;
  size_t len;
  if (sl_kafka_msg_header(m, "drop", &v, &len) == SL_OK)
    return 1;
  if (sl_kafka_msg_header(m, "user", &v, &len) != SL_OK) {
    snprintf(err, errlen, "no user header");
    return -1;
  }
  out->key = v;
  out->key_len = len;
  if (sl_kafka_msg_header(m, "at", &v, &len) == SL_OK && len < sizeof(ts)) {
    memcpy(ts, v, len);
    ts[len] = '\0';
    out->ts = atoll(ts);
  }
  ck_assert_uint_eq(sl_kafka_msg_header_count(m), 2);
  return 0;
}

START_TEST(decode_callback_sees_headers) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "h", 1);
  rd_kafka_t *p = tk_producer(&c);
  rd_kafka_headers_t *h = rd_kafka_headers_new(2);
  rd_kafka_header_add(h, "user", -1, "alice", -1);
  rd_kafka_header_add(h, "at", -1, "4242", -1);
  ck_assert_int_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC("h"),
                                     RD_KAFKA_V_VALUE("v1", 2),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                     RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END),
                   0);
  tk_send(p, "h", 0, NULL, "v2", 0, "drop", "1");
  tk_send(p, "h", 0, NULL, "v3", 0, NULL, NULL); /* bad: skipped */
  tk_flush(p);
  rd_kafka_destroy(p);
  const char *kv[] = {"error.policy", "skip", NULL};
  sl_job_t *job = tk_job("dec", tk_conf(&c, 1, kv));
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST,
                               .decode = decode_hdr};
  tu_sink sink;
  tu_sink_init(&sink);
  ck_assert_int_eq(
      sl_sink(sl_source_kafka(job, "h", "h", &so), "s", tu_sink_fn, &sink), 0);
  tk_run r;
  tk_run_start(&r, job);
  /* The bad message follows the good one in the same partition: once the
   * good one arrived, the rest of that poll has been handled too. Stats
   * are read after the stop (sl_job_op_stats races with the job's start
   * on this branch; reported to the runtime's owner). */
  for (int i = 0; i < 400; i++) {
    pthread_mutex_lock(&sink.lock);
    size_t n = sink.n;
    pthread_mutex_unlock(&sink.lock);
    if (n >= 1)
      break;
    tk_sleep_ms(25);
  }
  tk_sleep_ms(300);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  sl_op_stats_t st = {0};
  sl_job_op_stats(job, "h", &st);
  ck_assert_uint_eq(sink.n, 1);
  ck_assert_str_eq(sink.recs[0].key, "alice");
  ck_assert_str_eq(sink.recs[0].value, "v1");
  ck_assert_int_eq(sink.recs[0].ts, 4242);
  ck_assert_uint_eq(st.errors, 1);
  sl_job_destroy(job);
  tu_sink_free(&sink);
  tk_stop(&c);
}
END_TEST

Suite *kafka_suite(void);
Suite *kafka_suite(void) {
  Suite *s = suite_create("kafka");
  TCase *tc = tcase_create("mock");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, json_window_json_p1);
  tcase_add_test(tc, json_window_json_p2);
  tcase_add_test(tc, per_partition_watermarks_idle_partition);
  tcase_add_test(tc, restart_resumes_at_checkpointed_offsets);
  tcase_add_test(tc, start_positions);
  tcase_add_test(tc, decode_callback_sees_headers);
  tcase_add_test(tc, poison_records_reach_dead_letter_topic);
  tcase_add_test(tc, poison_records_skipped_and_counted_or_fail);
  tcase_add_test(tc, oversized_dead_letter_written_truncated);
  tcase_add_test(tc, dead_letter_refused_by_broker_retried_truncated);
  tcase_add_test(tc, no_bootstrap_servers_is_a_configuration_error);
  tcase_add_test(tc, broker_gone_source_fails_after_timeout);
  tcase_add_test(tc, broker_gone_sink_delivery_error_fails_job);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(kafka_suite());
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
