/* SPDX-License-Identifier: Apache-2.0 */
/* Kafka metrics of a running job, read through sl_job_metric_value():
 * per-partition position, high watermark and consumer lag (lag while a
 * slow source works through a backlog, none once it caught up), and the
 * dead-letter counter by reason (decode, user); sink deliveries and the
 * producer's statistics while the broker is slow; the exactly-once sink's
 * bound on held output. */
#include <check.h>

#include <pthread.h>
#include <stdatomic.h>

#include "kafka/kafka_int.h"
#include "sluice/metrics.h"
#include "test_kafka_util.h"

/* Decode callback that takes ~10 ms per message, so the source's position
 * trails the high watermark for a while. */
static int slow_decode(const sl_kafka_msg_t *m, sl_record_t *out, char *err,
                       size_t errlen, void *opaque) {
  (void)m;
  (void)out;
  (void)err;
  (void)errlen;
  (void)opaque;
  tk_sleep_ms(10);
  return 0;
}

static double metric(sl_job_t *job, const char *name, const char *labels) {
  double v = -1;
  int rc = sl_job_metric_value(job, name, labels, &v);
  return rc == SL_OK ? v : -1;
}

START_TEST(consumer_lag_and_offset) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "in", 2);
  tk_topic(&c, "out", 1);
  rd_kafka_t *p = tk_producer(&c);
  for (int i = 0; i < 150; i++)
    tk_send(p, "in", 0, "k", "v", 0, NULL, NULL);
  for (int i = 0; i < 3; i++)
    tk_send(p, "in", 1, "k", "v", 0, NULL, NULL);
  tk_flush(p);
  /* Small batches: the source returns to its loop (and updates the
   * metrics) while the backlog lasts. */
  const char *kv[] = {"source.batch.size", "4", NULL};
  sl_job_t *job = tk_job("lag", tk_conf(&c, 1, kv));
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST,
                               .decode = slow_decode};
  ck_assert_int_eq(
      sl_sink_kafka(sl_source_kafka(job, "src", "in", &so), "out", "out", NULL),
      0);
  tk_run r;
  tk_run_start(&r, job);
  const char *p0 = "source=src,topic=in,partition=0";
  const char *p1 = "source=src,topic=in,partition=1";
  double max_lag = 0, lag = -1, off = -1;
  bool part_read = false;
  for (int i = 0; i < 400; i++) {
    lag = metric(job, "sluice_kafka_consumer_lag", p0);
    off = metric(job, "sluice_kafka_partition_offset", p0);
    if (lag > max_lag)
      max_lag = lag;
    part_read |= lag > 0 && lag < 150;
    if (off == 150 && lag == 0)
      break;
    tk_sleep_ms(25);
  }
  /* While the backlog lasted, the lag was the records not yet read: all
   * 150 before the first fetch came back (a slow run can sample that),
   * then fewer as they were read (at 10 ms a record, over many samples). */
  ck_assert_msg(max_lag <= 150, "max lag %g", max_lag);
  ck_assert_msg(part_read, "no lag seen while the backlog was read");
  ck_assert_msg(off == 150 && lag == 0, "offset %g lag %g", off, lag);
  ck_assert_double_eq(metric(job, "sluice_kafka_partition_high_watermark", p0),
                      150);
  for (int i = 0;
       i < 200 && metric(job, "sluice_kafka_partition_offset", p1) != 3; i++)
    tk_sleep_ms(25);
  ck_assert_double_eq(metric(job, "sluice_kafka_partition_offset", p1), 3);
  ck_assert_double_eq(metric(job, "sluice_kafka_consumer_lag", p1), 0);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  sl_job_destroy(job);
  rd_kafka_destroy(p);
  tk_stop(&c);
}
END_TEST

/* A user function that rejects the JSON string "bad" (the record value
 * is the message value as consumed, quotes included). */
static int fail_on_bad(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  if (rec->value_len == 5 && memcmp(rec->value, "\"bad\"", 5) == 0)
    return 1;
  return sl_emit(ctx, rec);
}

START_TEST(dead_letters_counted_by_reason) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "in", 1);
  tk_topic(&c, "out", 1);
  tk_topic(&c, "dlq", 1);
  rd_kafka_t *p = tk_producer(&c);
  const char *vals[] = {"{\"a\":1}", "not json", "\"bad\"", "{",
                        "\"bad\"",   "\"bad\"",  "2"};
  for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
    tk_send(p, "in", 0, "k", vals[i], 0, NULL, NULL);
  tk_flush(p);
  const char *kv[] = {"error.policy", "dlq", "dlq.topic", "dlq", NULL};
  sl_job_t *job = tk_job("dlq", tk_conf(&c, 1, kv));
  sl_kafka_source_opts_t so = {.codec = SL_KAFKA_JSON,
                               .start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *s = sl_source_kafka(job, "src", "in", &so);
  sl_stream_t *m = sl_flat_map(s, "check", fail_on_bad, NULL);
  ck_assert_int_eq(sl_sink_kafka(m, "out", "out", NULL), 0);
  tk_run r;
  tk_run_start(&r, job);
  tk_reader rd;
  tk_reader_open(&rd, &c, "dlq", 1);
  ck_assert_uint_eq(tk_read(&rd, 5, 10000), 5);
  ck_assert_int_eq(tk_run_stop(&r), SL_OK);
  tk_reader_close(&rd);
  ck_assert_double_eq(metric(job, "sluice_dead_letter_records_total",
                             "operator=src,reason=decode"),
                      2);
  ck_assert_double_eq(metric(job, "sluice_dead_letter_records_total",
                             "operator=check,reason=user"),
                      3);
  sl_job_destroy(job);
  rd_kafka_destroy(p);
  tk_stop(&c);
}
END_TEST

/* Emits n records "v<i>" (key "k") and ends. */
typedef struct nsrc {
  int next, n;
} nsrc;

static int nsrc_poll(sl_source_ctx_t *ctx, void *opaque) {
  nsrc *s = opaque;
  if (s->next >= s->n)
    return SL_POLL_END;
  char v[16];
  int vl = snprintf(v, sizeof(v), "v%d", s->next);
  sl_record_t r = {"k", 1, v, (size_t)vl, 1000 + s->next};
  s->next++;
  int rc = sl_source_emit(ctx, &r);
  return rc ? rc : SL_POLL_MORE;
}

/* A broker with 150 ms round trips: every record is delivered (counted
 * exactly by delivery reports), none failed, the queue is empty at the
 * end, and librdkafka's statistics report the slow round trip. */
START_TEST(sink_deliveries_and_slow_broker_statistics) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "out", 2);
  ck_assert_int_eq(rd_kafka_mock_broker_set_rtt(c.mc, 1, 150), 0);
  const char *kv[] = {"kafka.statistics.interval.ms", "100",
                      "sink.delivery.guarantee", "at_least_once", NULL};
  sl_job_t *job = tk_job("slow", tk_conf(&c, 1, kv));
  static const sl_source_ops_t so = {.poll = nsrc_poll};
  nsrc src = {.n = 300};
  ck_assert_int_eq(
      sl_sink_kafka(sl_source(job, "gen", &so, &src), "out", "out", NULL), 0);
  /* The input ends by itself; the sink flushes before the run returns. */
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  ck_assert_double_eq(
      metric(job, "sluice_kafka_sink_records_delivered_total", "sink=out"),
      300);
  ck_assert_double_eq(
      metric(job, "sluice_kafka_sink_records_failed_total", "sink=out"), 0);
  ck_assert_double_eq(
      metric(job, "sluice_kafka_producer_queue_messages", "producer=plain"), 0);
  /* The producer lives until the job is destroyed and keeps sending
   * statistics; a round trip is at least the broker's added delay. */
  double rtt = -1;
  for (int i = 0; i < 200 && rtt < 0.15; i++) {
    rtt = metric(job, "sluice_kafka_broker_rtt_seconds",
                 "producer=plain,broker=1");
    tk_sleep_ms(25);
  }
  ck_assert_msg(rtt >= 0.15, "rtt %g", rtt);
  ck_assert_double_eq(metric(job, "sluice_kafka_producer_request_retries_total",
                             "producer=plain"),
                      0);
  ck_assert_double_ge(metric(job, "sluice_kafka_broker_throttle_seconds",
                             "producer=plain,broker=1"),
                      0);
  /* What the broker holds is exactly what was counted. */
  tk_reader rd;
  tk_reader_open(&rd, &c, "out", 2);
  ck_assert_uint_eq(tk_read(&rd, 300, 10000), 300);
  tk_read(&rd, 301, 300);
  ck_assert_uint_eq(rd.n, 300);
  tk_reader_close(&rd);
  char *text = NULL;
  ck_assert_int_eq(
      sl_job_metrics_format(job, SL_METRICS_PROMETHEUS, &text, NULL), SL_OK);
  ck_assert_ptr_nonnull(strstr(
      text, "sluice_kafka_sink_records_delivered_total{sink=\"out\",worker="
            "\"0\"} 300\n"));
  free(text);
  sl_job_destroy(job);
  tk_stop(&c);
}
END_TEST

/* ---- The exactly-once sink's bound on held output ------------------------ */

static _Atomic int waiting;
static bool probe(void *arg) {
  (void)arg;
  atomic_store(&waiting, 1);
  return false;
}

typedef struct writes {
  sl__kwriter *w;
  int from, to;
  int rc;
} writes;

static void *write_range(void *arg) {
  writes *x = arg;
  char v[16], err[256];
  for (int i = x->from; i < x->to && !x->rc; i++) {
    snprintf(v, sizeof(v), "b%d", i);
    sl_record_t r = {"k", 1, v, strlen(v), 2000 + i};
    x->rc = sl__kwriter_write(x->w, &r, NULL, err, sizeof(err));
  }
  return NULL;
}

/* After barrier 1 the writer holds output until checkpoint 1 commits; with
 * sink.held.max.bytes = 12 it holds four 3-byte records ("k" + "bN") and
 * the fifth write waits, held bytes and time blocked showing, until the
 * commit releases them. Nothing is lost or duplicated: the topic holds
 * exactly a0..a4 (epoch 0) then b0..b9 (epoch 1), in order. */
START_TEST(eos_held_output_is_bounded) {
  tk_cluster c;
  tk_start(&c, 1);
  tk_topic(&c, "out", 1);
  char err[256];
  sl_conf_t *conf = tk_conf(&c, 1, NULL);
  ck_assert_int_eq(
      sl_conf_set(conf, "broker.timeout.ms", "10000", err, sizeof(err)), 0);
  sl_job_t *job = tk_job("bound", conf);
  sl__kjob *kj = sl__kjob_get(job);
  ck_assert_ptr_nonnull(kj);
  kj->participant = true; /* as an exactly_once sink registers it */
  sl__kprod *p = sl__kprod_acquire(kj, true, kj->conf, err, sizeof(err));
  ck_assert_msg(p != NULL, "%s", err);
  sl__kwriter *w = sl__kwriter_new(p, "out", true);
  sl__kwriter_set_stats(w, sl__kstats_sink(kj, "out", 0));
  sl__kwriter_set_limit(w, 12, probe, NULL);
  for (int i = 0; i < 5; i++) {
    char v[8];
    snprintf(v, sizeof(v), "a%d", i);
    sl_record_t rec = {"k", 1, v, strlen(v), 1000 + i};
    ck_assert_int_eq(sl__kwriter_write(w, &rec, NULL, err, sizeof(err)), 0);
  }
  ck_assert_int_eq(sl__kwriter_barrier(w, 1, false, err, sizeof(err)), 0);
  atomic_store(&waiting, 0);
  writes x = {w, 0, 10, 0};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, write_range, &x), 0);
  while (!atomic_load(&waiting))
    tk_sleep_ms(1);
  /* Blocked on the fifth record: four held, 12 bytes. */
  ck_assert_uint_eq(sl__kwriter_held(w), 4);
  ck_assert_double_eq(metric(job, "sluice_kafka_sink_held_bytes", "sink=out"),
                      12);
  ck_assert_int_eq(sl__ktxn_commit(1, kj), 0);
  pthread_join(t, NULL);
  ck_assert_int_eq(x.rc, 0);
  ck_assert_uint_eq(sl__kwriter_held(w), 0);
  ck_assert_double_eq(metric(job, "sluice_kafka_sink_held_bytes", "sink=out"),
                      0);
  ck_assert_double_gt(
      metric(job, "sluice_kafka_sink_backpressure_seconds_total", "sink=out"),
      0);
  ck_assert_int_eq(sl__kwriter_barrier(w, 2, false, err, sizeof(err)), 0);
  ck_assert_int_eq(sl__ktxn_commit(2, kj), 0);
  ck_assert_double_eq(
      metric(job, "sluice_kafka_transaction_commit_seconds", NULL), 2);
  ck_assert_double_eq(
      metric(job, "sluice_kafka_sink_records_delivered_total", "sink=out"), 15);
  sl__kwriter_free(w);
  sl__kprod_release(p);

  tk_reader rd;
  tk_reader_open(&rd, &c, "out", 1);
  tk_read(&rd, 15, 10000);
  tk_read(&rd, 16, 300);
  ck_assert_uint_eq(rd.n, 15);
  char buf[32];
  for (size_t i = 0; i < rd.n; i++) {
    char want[8];
    snprintf(want, sizeof(want), i < 5 ? "a%zu" : "b%zu", i < 5 ? i : i - 5);
    ck_assert_str_eq(rd.m[i].value, want);
    ck_assert_str_eq(tk_header(&rd.m[i], "sluice.epoch", buf, sizeof(buf)),
                     i < 5 ? "0" : "1");
  }
  tk_reader_close(&rd);
  sl_job_destroy(job);
  tk_stop(&c);
}
END_TEST

static Suite *metrics_suite(void) {
  Suite *s = suite_create("kafka_metrics");
  TCase *tc = tcase_create("metrics");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, consumer_lag_and_offset);
  tcase_add_test(tc, dead_letters_counted_by_reason);
  tcase_add_test(tc, sink_deliveries_and_slow_broker_statistics);
  tcase_add_test(tc, eos_held_output_is_bounded);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(metrics_suite());
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
