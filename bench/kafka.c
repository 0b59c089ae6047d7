/* SPDX-License-Identifier: Apache-2.0 */
/* Kafka -> decode JSON -> keyed tumbling count (sl_window) -> encode ->
 * Kafka on librdkafka's in-process mock cluster, at P=1 and P=2, against a
 * plain librdkafka consume-and-produce loop over the same data in the same
 * run; then at_least_once against exactly_once with 1 s checkpoints.
 * Prints two lines per parallelism: kafka_pipeline (ratio to the loop) and
 * kafka_eos (exactly_once over at_least_once). */
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define PARTS 4

static char bootstrap[256];
static long n_events = 200000;

static rd_kafka_t *client(rd_kafka_type_t type, const char *const *kv) {
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, NULL, 0);
  rd_kafka_conf_set(c, "log_level", "2", NULL, 0);
  for (; kv && kv[0]; kv += 2)
    rd_kafka_conf_set(c, kv[0], kv[1], NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(type, c, err, sizeof(err));
  if (!rk) {
    fprintf(stderr, "kafka bench: %s\n", err);
    exit(2);
  }
  return rk;
}

/* Events: 1000 users, timestamps ascending 1 ms apart, keyed by user. */
static void preload(void) {
  const char *kv[] = {"linger.ms", "20", "batch.num.messages", "10000", NULL};
  rd_kafka_t *p = client(RD_KAFKA_PRODUCER, kv);
  char key[16], val[96];
  for (long i = 0; i < n_events; i++) {
    int kl = snprintf(key, sizeof(key), "u%ld", (i * 7919) % 1000);
    int vl = snprintf(val, sizeof(val),
                      "{\"user\":\"%s\",\"ts\":%ld,\"page\":\"/p/%ld\"}", key,
                      1000000 + i, i % 50);
    while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC("in"),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_KEY(key, (size_t)kl),
                             RD_KAFKA_V_VALUE(val, (size_t)vl),
                             RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
      rd_kafka_poll(p, 10);
  }
  if (rd_kafka_flush(p, 60000)) {
    fprintf(stderr, "kafka bench: preload did not finish\n");
    exit(2);
  }
  rd_kafka_destroy(p);
}

/* Both sides are timed from their first consumed event to the last one
 * delivered, so client start-up (metadata, offsets) is left out of the
 * steady-state rate and reported separately. */
static double base_startup, pipe_startup;
static uint64_t last_checkpoints; /* completed by the last pipeline run */

/* The baseline: consume every event and produce it again, unchanged. */
static double baseline(void) {
  const char *ckv[] = {"group.id", "bench-base", "enable.auto.commit", "false",
                       NULL};
  double start = bench_now(), t0 = 0;
  rd_kafka_t *c = client(RD_KAFKA_CONSUMER, ckv);
  rd_kafka_t *p = client(RD_KAFKA_PRODUCER, NULL);
  rd_kafka_poll_set_consumer(c);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
  for (int i = 0; i < PARTS; i++)
    rd_kafka_topic_partition_list_add(l, "in", i)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_assign(c, l);
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(c);
  rd_kafka_message_t *ms[1024];
  long got = 0;
  while (got < n_events) {
    ssize_t n = rd_kafka_consume_batch_queue(q, 100, ms, 1024);
    for (ssize_t i = 0; i < n; i++) {
      rd_kafka_message_t *m = ms[i];
      if (!m->err) {
        if (!got++) {
          t0 = bench_now();
          base_startup = t0 - start;
        }
        while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC("base-out"),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_KEY(m->key, m->key_len),
                                 RD_KAFKA_V_VALUE(m->payload, m->len),
                                 RD_KAFKA_V_END) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
          rd_kafka_poll(p, 1);
      }
      rd_kafka_message_destroy(m);
    }
    rd_kafka_poll(p, 0);
  }
  rd_kafka_flush(p, 60000);
  double dt = bench_now() - t0;
  rd_kafka_queue_destroy(q);
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  rd_kafka_destroy(p);
  return (double)n_events / dt;
}

/* The window's result as JSON {"user":..,"end":..,"count":..}, written by
 * hand into the record's scratch memory (no allocation per result). */
static char *put_i64(char *o, int64_t v) {
  char tmp[24];
  int n = 0;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  do
    tmp[n++] = (char)('0' + u % 10);
  while ((u /= 10));
  if (v < 0)
    *o++ = '-';
  while (n)
    *o++ = tmp[--n];
  return o;
}

static int encode_count(sl_ctx_t *ctx, const sl_window_t *win,
                        sl_window_elems_t *elems, void *opaque) {
  (void)opaque;
  sl_record_t r;
  int64_t n = 0;
  if (sl_window_elems_next(elems, &r) == 1 && r.value_len == sizeof(n))
    memcpy(&n, r.value, sizeof(n));
  const void *key = NULL;
  size_t klen = 0;
  sl_ctx_key(ctx, &key, &klen);
  char *buf = sl_ctx_alloc(ctx, klen + 80), *o = buf;
  if (!buf)
    return SL_ERR_NOMEM;
  memcpy(o, "{\"user\":\"", 9), o += 9;
  memcpy(o, key, klen), o += klen;
  memcpy(o, "\",\"end\":", 8), o += 8;
  o = put_i64(o, win->end);
  memcpy(o, ",\"count\":", 9), o += 9;
  o = put_i64(o, n);
  *o++ = '}';
  sl_record_t out = {key, klen, buf, (size_t)(o - buf), win->end - 1};
  return sl_emit(ctx, &out);
}

typedef struct run {
  sl_job_t *job;
  int rc;
} run;

static void *run_main(void *arg) {
  run *r = arg;
  r->rc = sl_job_run(r->job);
  return NULL;
}

/* One run of the pipeline; interval_ms > 0 takes checkpoints into a
 * temporary directory at that interval. */
static double pipeline(int par, const char *delivery, const char *group,
                       int interval_ms) {
  char dir[64] = "", interval[24];
  snprintf(interval, sizeof(interval), "%d", interval_ms);
  if (interval_ms > 0) {
    snprintf(dir, sizeof(dir), "/tmp/sluice-bench-kafka-XXXXXX");
    if (!mkdtemp(dir)) {
      perror("mkdtemp");
      exit(2);
    }
  }
  const char *kv[] = {"checkpoint.dir",
                      dir,
                      "checkpoint.interval.ms",
                      interval,
                      "kafka.bootstrap.servers",
                      bootstrap,
                      "kafka.log_level",
                      "2",
                      "kafka.group.id",
                      group,
                      "sink.delivery.guarantee",
                      delivery,
                      "source.startup.mode",
                      "earliest",
                      NULL};
  sl_job_t *job = bench_job("kafka_pipeline", par, kv);
  sl_kafka_source_opts_t so = {
      .codec = SL_KAFKA_JSON, .key_pointer = "/user", .ts_pointer = "/ts"};
  sl_stream_t *src = sl_source_kafka(job, "src", "in", &so);
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED, .bound_ms = 100};
  sl_with_watermarks(src, &wm);
  sl_window_spec_t spec = sl_window_tumbling(1000);
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT, .process = encode_count};
  sl_stream_t *counts =
      sl_window(sl_key_by(src, NULL, NULL), "count", &spec, &fn, NULL);
  if (sl_sink_kafka(counts, "out", "out", NULL)) {
    fprintf(stderr, "kafka bench: %s\n", sl_job_errmsg(job));
    exit(2);
  }
  run r = {job, 0};
  pthread_t t;
  double start = bench_now(), t0 = 0;
  pthread_create(&t, NULL, run_main, &r);
  sl_op_stats_t st = {0};
  while (st.records_out < (uint64_t)n_events) {
    struct timespec ts = {0, 500 * 1000};
    nanosleep(&ts, NULL);
    if (sl_job_op_stats(job, "src", &st) || bench_now() - start > 300)
      break;
    if (!t0 && st.records_out) {
      t0 = bench_now();
      pipe_startup = t0 - start;
    }
  }
  sl_job_stop(job);
  pthread_join(t, NULL);
  double dt = bench_now() - t0;
  if (r.rc || st.records_out < (uint64_t)n_events) {
    fprintf(stderr, "kafka bench: job failed or stalled (%" PRIu64 "): %s\n",
            st.records_out, sl_job_errmsg(job));
    exit(1);
  }
  sl_checkpoint_info_t ci;
  sl_job_checkpoint_info(job, &ci);
  last_checkpoints = ci.completed;
  sl_job_destroy(job);
  if (dir[0]) {
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd))
      fprintf(stderr, "kafka bench: cannot remove %s\n", dir);
  }
  return (double)n_events / dt;
}

int main(void) {
  const char *env = getenv("SL_BENCH_KAFKA_EVENTS");
  if (env && atol(env) > 0)
    n_events = atol(env);
  rd_kafka_t *host = client(RD_KAFKA_PRODUCER, NULL);
  rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(host, 1);
  snprintf(bootstrap, sizeof(bootstrap), "%s",
           rd_kafka_mock_cluster_bootstraps(mc));
  rd_kafka_mock_topic_create(mc, "in", PARTS, 1);
  rd_kafka_mock_topic_create(mc, "out", PARTS, 1);
  rd_kafka_mock_topic_create(mc, "base-out", PARTS, 1);
  preload();
  for (int par = 1; par <= 2; par++) {
    char group[32];
    snprintf(group, sizeof(group), "bench-p%d", par);
    /* Baseline right before each run: the machine is noisy. */
    double base = baseline();
    double eps = pipeline(par, "at_least_once", group, 0);
    printf("bench=kafka_pipeline p=%d events=%ld eps=%.0f baseline_eps=%.0f "
           "ratio=%.2f startup_ms=%.0f baseline_startup_ms=%.0f\n",
           par, n_events, eps, base, eps / base, pipe_startup * 1e3,
           base_startup * 1e3);
    fflush(stdout);
    /* The price of exactly_once: both guarantees with 1 s checkpoints,
     * one after the other (each with its own consumer group). */
    snprintf(group, sizeof(group), "bench-alo-p%d", par);
    double alo = pipeline(par, "at_least_once", group, 1000);
    uint64_t alo_ck = last_checkpoints;
    snprintf(group, sizeof(group), "bench-eos-p%d", par);
    double eos = pipeline(par, "exactly_once", group, 1000);
    printf("bench=kafka_eos p=%d events=%ld interval_ms=1000 alo_eps=%.0f "
           "eos_eps=%.0f eos_over_alo=%.2f alo_checkpoints=%" PRIu64
           " eos_checkpoints=%" PRIu64 "\n",
           par, n_events, alo, eos, eos / alo, alo_ck, last_checkpoints);
    fflush(stdout);
  }
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(host);
  return 0;
}
