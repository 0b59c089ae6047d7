/* SPDX-License-Identifier: Apache-2.0 */
/* Kafka metrics of a running job, read through sl_job_metric_value():
 * per-partition position, high watermark and consumer lag (lag while a
 * slow source works through a backlog, none once it caught up), and the
 * dead-letter counter by reason (decode, user). */
#include <check.h>

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
  for (int i = 0; i < 400; i++) {
    lag = metric(job, "sluice_kafka_consumer_lag", p0);
    off = metric(job, "sluice_kafka_partition_offset", p0);
    if (lag > max_lag)
      max_lag = lag;
    if (off == 150 && lag == 0)
      break;
    tk_sleep_ms(25);
  }
  /* While the backlog lasted, the lag was the records not yet read. */
  ck_assert_msg(max_lag > 0 && max_lag < 150, "max lag %g", max_lag);
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

static Suite *metrics_suite(void) {
  Suite *s = suite_create("kafka_metrics");
  TCase *tc = tcase_create("metrics");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, consumer_lag_and_offset);
  tcase_add_test(tc, dead_letters_counted_by_reason);
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
