/* SPDX-License-Identifier: Apache-2.0 */
/* The repartition path of group mode against the in-process exchange, in
 * one run on librdkafka's in-process mock cluster: Kafka (4 partitions)
 * -> key_by -> keyed tumbling count -> Kafka, one process of two workers,
 * first with group.mode=copartitioned (records cross workers through the
 * in-memory exchange only), then with group.mode=repartition (every
 * record is written to the repartition topic and read back before the
 * key_by). Each run waits until the group has assigned every partition
 * to its sources (a rebalance while records flow stalls them for up to a
 * session timeout, which is not what is measured) and only then writes
 * the events. Prints one line: records per second into the keyed stage
 * for both and their ratio. */
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define PARTS "4"
#define JOB "bench_repartition"

static char bootstrap[256];
static long n_events = 200000;

/* Events: 1000 users, timestamps ascending 1 ms apart, written round
 * robin to the partitions (not by user). */
static void preload(const char *topic) {
  char err[512], key[16];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, NULL, 0);
  rd_kafka_conf_set(c, "log_level", "2", NULL, 0);
  rd_kafka_conf_set(c, "linger.ms", "20", NULL, 0);
  rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
  if (!p) {
    fprintf(stderr, "repartition bench: %s\n", err);
    exit(2);
  }
  for (long i = 0; i < n_events; i++) {
    int kl = snprintf(key, sizeof(key), "u%ld", (i * 7919) % 1000);
    while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic),
                             RD_KAFKA_V_PARTITION((int32_t)(i % 4)),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_KEY(key, (size_t)kl),
                             RD_KAFKA_V_VALUE("page-view", 9),
                             RD_KAFKA_V_TIMESTAMP(1000000 + i),
                             RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
      rd_kafka_poll(p, 10);
  }
  if (rd_kafka_flush(p, 60000)) {
    fprintf(stderr, "repartition bench: preload did not finish\n");
    exit(2);
  }
  rd_kafka_destroy(p);
}

typedef struct run {
  sl_job_t *job;
  int rc;
} run;

/* Partitions the sources read, from the job's rebalance log lines
 * ("source <uid>[<subtask>]: group rebalance: ...; reads <n>"), per
 * (repartition source?, subtask). */
static _Atomic int reads[2][2];

static void on_log(sl_log_level level, const char *component,
                   const char *message, void *opaque) {
  (void)level;
  (void)component;
  (void)opaque;
  const char *r = strstr(message, "; reads ");
  const char *b = strchr(message, '[');
  if (!r || !b || !strstr(message, "group rebalance"))
    return;
  int rep = strstr(message, "source count-repartition[") == message;
  atomic_store(&reads[rep][atoi(b + 1) & 1], atoi(r + 8));
}

static int settled(int rep) {
  return atomic_load(&reads[rep][0]) + atomic_load(&reads[rep][1]) ==
             atoi(PARTS) &&
         atomic_load(&reads[rep][0]) && atomic_load(&reads[rep][1]);
}

static void *run_main(void *arg) {
  run *r = arg;
  r->rc = sl_job_run(r->job);
  return NULL;
}

/* One run; the rate is taken from the first record the source emitted
 * to the last one the keyed stage took, so group joins are left out. */
static double pipeline(const char *mode, const char *topic) {
  const char *kv[] = {"group.mode", mode, "group.partitions", PARTS,
                      "kafka.bootstrap.servers", bootstrap, "kafka.log_level",
                      "2", "kafka.group.id", topic, "sink.delivery.guarantee",
                      "at_least_once",
                      /* Larger batches: the mock cluster finds a fetch
                       * offset by a scan over the partition's batches,
                       * so many small ones make reading back slower the
                       * longer the log. */
                      "kafka.linger.ms", "50", NULL};
  char err[256];
  sl_conf_t *conf = sl_conf_new();
  sl_conf_set_log_cb(conf, on_log, NULL);
  int bad = sl_conf_set(conf, "parallelism", "2", err, sizeof(err));
  for (const char *const *k = kv; !bad && k[0]; k += 2)
    bad = sl_conf_set(conf, k[0], k[1], err, sizeof(err));
  sl_job_t *job = bad ? NULL : sl_job_new(JOB, conf, err, sizeof(err));
  if (!job) {
    fprintf(stderr, "repartition bench: %s\n", err);
    exit(2);
  }
  bool rep = strcmp(mode, "repartition") == 0;
  memset(reads, 0, sizeof(reads));
  sl_stream_t *src = sl_source_kafka(job, "src", topic, NULL);
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED, .bound_ms = 100};
  sl_with_watermarks(src, &wm);
  sl_window_spec_t spec = sl_window_tumbling(1000);
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT};
  sl_stream_t *counts =
      sl_window(sl_key_by(src, NULL, NULL), "count", &spec, &fn, NULL);
  if (sl_sink_kafka(counts, "out", "out", NULL)) {
    fprintf(stderr, "repartition bench: %s\n", sl_job_errmsg(job));
    exit(2);
  }
  run r = {job, 0};
  pthread_t t;
  double start = bench_now(), t0 = 0;
  pthread_create(&t, NULL, run_main, &r);
  while (!(settled(0) && (!rep || settled(1))) && bench_now() - start < 120) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  preload(topic);
  sl_op_stats_t in = {0}, keyed = {0};
  while (keyed.records_in < (uint64_t)n_events) {
    struct timespec ts = {0, 500 * 1000};
    nanosleep(&ts, NULL);
    if (sl_job_op_stats(job, "src", &in) ||
        sl_job_op_stats(job, "count", &keyed) || bench_now() - start > 300)
      break;
    if (!t0 && in.records_out)
      t0 = bench_now();
  }
  sl_job_stop(job);
  pthread_join(t, NULL);
  double dt = bench_now() - t0;
  if (r.rc || keyed.records_in < (uint64_t)n_events) {
    fprintf(stderr,
            "repartition bench: %s: job failed or stalled (%" PRIu64 "): %s\n",
            mode, keyed.records_in, sl_job_errmsg(job));
    exit(1);
  }
  sl_job_destroy(job);
  return (double)n_events / dt;
}

int main(void) {
  const char *env = getenv("SL_BENCH_REPART_EVENTS");
  if (env && atol(env) > 0)
    n_events = atol(env);
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "log_level", "2", NULL, 0);
  rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
  rd_kafka_mock_cluster_t *mc =
      host ? rd_kafka_mock_cluster_new(host, 1) : NULL;
  if (!mc) {
    fprintf(stderr, "repartition bench: no mock cluster: %s\n", err);
    return 2;
  }
  snprintf(bootstrap, sizeof(bootstrap), "%s",
           rd_kafka_mock_cluster_bootstraps(mc));
  rd_kafka_mock_topic_create(mc, "in-xchg", atoi(PARTS), 1);
  rd_kafka_mock_topic_create(mc, "in-repart", atoi(PARTS), 1);
  rd_kafka_mock_topic_create(mc, "out", 1, 1);
  /* The mock cluster does not create topics through the admin API. */
  rd_kafka_mock_topic_create(mc, JOB "-count-repartition", atoi(PARTS), 1);
  double xchg = pipeline("copartitioned", "in-xchg");
  double repart = pipeline("repartition", "in-repart");
  printf("bench=repartition p=2 partitions=" PARTS " events=%ld "
         "exchange_eps=%.0f repartition_eps=%.0f ratio=%.2f\n",
         n_events, xchg, repart, repart / xchg);
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(host);
  return 0;
}
