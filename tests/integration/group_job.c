/* SPDX-License-Identifier: Apache-2.0 */
/* The job the group-mode tests run as several processes: Kafka topic "in"
 * (message keys and timestamps) -> key_by -> tumbling 1 s count -> the
 * count as text -> Kafka topic "out". It runs until SIGTERM; its log
 * (stderr, level info) says how many partitions it reads after each
 * rebalance. With CHECKPOINT_DIR it checkpoints every 200 ms into that
 * shared store with state backend BACKEND (hashmap or rocksdb; its
 * RocksDB files under CHECKPOINT_DIR/../state-<pid>), and PARALLELISM
 * worker threads (default 1). With GROUP_JOB_KEY_BY_VALUE set, key_by
 * keys by the value instead of the message key, with a watermark bound
 * of 10 s (records read back from a repartition topic come from several
 * input partitions, out of order). With GROUP_JOB_EXACTLY_ONCE=<name>
 * the sink is exactly_once, with a transactional id of its own per name,
 * and every record carries the header gj.proc=<name>, so a test can tell
 * whose transaction a record belongs to.
 * usage: group-job BOOTSTRAP GROUP_MODE PARTITIONS
 *        [CHECKPOINT_DIR BACKEND [PARALLELISM]] */
#include <inttypes.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice.h"

static sl_job_t *job;

static void on_term(int sig) {
  (void)sig;
  sl_job_stop(job);
}

static const char *proc_name;

static int proc_header(sl_ctx_t *ctx, const sl_record_t *rec,
                       sl_kafka_headers_t *h, void *opaque) {
  (void)ctx;
  (void)rec;
  (void)opaque;
  return sl_kafka_headers_add(h, "gj.proc", proc_name, strlen(proc_name));
}

static int fmt_count(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                     void *opaque) {
  (void)opaque;
  int64_t n;
  memcpy(&n, in->value, sizeof(n));
  char *s = sl_ctx_alloc(ctx, 32);
  if (!s)
    return -1;
  out->value = s;
  out->value_len = (size_t)snprintf(s, 32, "%" PRId64, n);
  return 0;
}

static int value_key(const sl_record_t *rec, const void **key, size_t *len,
                     void *opaque) {
  (void)opaque;
  *key = rec->value;
  *len = rec->value_len;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4 || argc == 5 || argc > 7) {
    fprintf(stderr, "usage: group-job BOOTSTRAP GROUP_MODE PARTITIONS "
                    "[CHECKPOINT_DIR BACKEND [PARALLELISM]]\n");
    return 2;
  }
  const char *kv[] = {"kafka.bootstrap.servers",
                      argv[1],
                      "group.mode",
                      argv[2],
                      "group.partitions",
                      argv[3],
                      "kafka.log_level",
                      "2",
                      "log.level",
                      "info",
                      "broker.timeout.ms",
                      "20000",
                      "kafka.session.timeout.ms",
                      "6000",
                      "kafka.heartbeat.interval.ms",
                      "500",
                      NULL};
  char err[512];
  sl_conf_t *conf = sl_conf_new();
  for (int i = 0; kv[i]; i += 2)
    if (sl_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err))) {
      fprintf(stderr, "group-job: %s\n", err);
      return 2;
    }
  if (argc >= 6) {
    char state[1024];
    snprintf(state, sizeof(state), "%s/../state-%ld", argv[4], (long)getpid());
    const char *ck[] = {"parallelism",
                        argc == 7 ? argv[6] : "1",
                        "checkpoint.dir",
                        argv[4],
                        "checkpoint.interval.ms",
                        "200",
                        "state.backend",
                        argv[5],
                        "state.dir",
                        state,
                        NULL};
    for (int i = 0; ck[i]; i += 2)
      if (sl_conf_set(conf, ck[i], ck[i + 1], err, sizeof(err))) {
        fprintf(stderr, "group-job: %s\n", err);
        return 2;
      }
  }
  proc_name = getenv("GROUP_JOB_EXACTLY_ONCE");
  if (proc_name) {
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "group-job-%s", proc_name);
    if (sl_conf_set(conf, "sink.delivery.guarantee", "exactly_once", err,
                    sizeof(err)) ||
        sl_conf_set(conf, "sink.transactional.id.prefix", prefix, err,
                    sizeof(err))) {
      fprintf(stderr, "group-job: %s\n", err);
      return 2;
    }
  }
  /* Debugging a test: librdkafka's debug contexts, e.g. "cgrp". */
  const char *dbg = getenv("GROUP_JOB_KAFKA_DEBUG");
  if (dbg && sl_conf_set(conf, "kafka.debug", dbg, err, sizeof(err))) {
    fprintf(stderr, "group-job: %s\n", err);
    return 2;
  }
  if (!(job = sl_job_new("group-job", conf, err, sizeof(err)))) {
    fprintf(stderr, "group-job: %s\n", err);
    return 2;
  }
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
  bool by_value = getenv("GROUP_JOB_KEY_BY_VALUE") != NULL;
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED,
                            .bound_ms = by_value ? 10000 : 0};
  sl_with_watermarks(src, &wm);
  sl_window_spec_t spec = sl_window_tumbling(1000);
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT};
  sl_stream_t *w = sl_window(sl_key_by(src, by_value ? value_key : NULL, NULL),
                             "count", &spec, &fn, NULL);
  sl_kafka_sink_opts_t ko = {.headers = proc_name ? proc_header : NULL};
  sl_sink_kafka(sl_map(w, "fmt", fmt_count, NULL), "out", "out", &ko);
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  int rc = sl_job_run(job);
  if (rc)
    fprintf(stderr, "group-job: %s: %s\n", sl_strerror(rc), sl_job_errmsg(job));
  sl_job_destroy(job);
  return rc ? 1 : 0;
}
