/* SPDX-License-Identifier: Apache-2.0 */
/* The job bench_rebalance runs as the members of one group: Kafka "in"
 * (group mode, co-partitioned) -> flat_map -> key_by -> a value state per
 * key -> Kafka "out". A record "fill:<n>" expands into n keys of its own
 * partition (so a task's state is built from a few input records; the
 * dev broker keeps little data per partition), each counted in state; a
 * record "probe" is counted too and answered on "out" with this
 * process's name, the task and the wall-clock time of the answer.
 * usage: rebalance-job BOOTSTRAP PARTITIONS CHECKPOINT_DIR STATE_DIR BACKEND
 *        NAME; runs until SIGTERM. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/hash.h"
#include "sluice.h"

static sl_job_t *job;
static const char *name;
static uint32_t parts;

static void on_term(int sig) {
  (void)sig;
  sl_job_stop(job);
}

/* Keys of the record's partition: "<partition>-<i>" for the i that
 * murmur2 sends there, so the in-process exchange keeps them in the
 * task whose record asked for them. */
static int expand(sl_ctx_t *ctx, const sl_record_t *in, void *opaque) {
  (void)opaque;
  if (in->value_len < 5 || memcmp(in->value, "fill:", 5)) {
    sl_record_t r = *in;
    return sl_emit(ctx, &r);
  }
  char num[32] = "";
  size_t l = in->value_len - 5 < 31 ? in->value_len - 5 : 31;
  memcpy(num, (const char *)in->value + 5, l);
  long n = atol(num);
  uint32_t task = sl__murmur2_partition(in->key, in->key_len, parts);
  char key[48];
  /* The fill record's own key starts the sequence: two fills of one
   * task make different keys. */
  int kl0 = snprintf(key, sizeof(key), "%.*s-", (int)in->key_len,
                     (const char *)in->key);
  for (long i = 0, made = 0; made < n; i++) {
    int kl = kl0 + snprintf(key + kl0, sizeof(key) - (size_t)kl0, "%ld", i);
    if (sl__murmur2_partition(key, (size_t)kl, parts) != task)
      continue;
    sl_record_t r = {key, (size_t)kl, "f", 1, in->ts};
    int rc = sl_emit(ctx, &r);
    if (rc)
      return rc;
    made++;
  }
  return 0;
}

static int count_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_desc_t d = {.name = "n", .kind = SL_STATE_VALUE};
  sl_state_t *st = sl_state_register(ctx, &d);
  sl_ctx_set_local(ctx, st);
  return st ? 0 : SL_ERR_STATE;
}

static int count_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  sl_state_t *st = sl_ctx_local(ctx);
  int64_t n = 0;
  const void *v;
  size_t len;
  if (sl_value_get(ctx, st, &v, &len) == 1 && len == sizeof(n))
    memcpy(&n, v, sizeof(n));
  n++;
  int rc = sl_value_put(ctx, st, &n, sizeof(n));
  if (rc || rec->value_len != 5 || memcmp(rec->value, "probe", 5))
    return rc;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  char *out = sl_ctx_alloc(ctx, 128);
  if (!out)
    return SL_ERR_NOMEM;
  int ol =
      snprintf(out, 128, "%s %" PRIu32 " %lld", name,
               sl__murmur2_partition(rec->key, rec->key_len, parts),
               (long long)ts.tv_sec * 1000000 + (long long)ts.tv_nsec / 1000);
  sl_record_t o = {rec->key, rec->key_len, out, (size_t)ol, rec->ts};
  return sl_emit(ctx, &o);
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: rebalance-job BOOTSTRAP PARTITIONS "
                    "CHECKPOINT_DIR STATE_DIR BACKEND NAME\n");
    return 2;
  }
  name = argv[6];
  parts = (uint32_t)atoi(argv[2]);
  const char *kv[] = {"kafka.bootstrap.servers",
                      argv[1],
                      "group.mode",
                      "copartitioned",
                      "group.partitions",
                      argv[2],
                      "checkpoint.dir",
                      argv[3],
                      "state.dir",
                      argv[4],
                      "state.backend",
                      argv[5],
                      "instance.id",
                      name,
                      "checkpoint.interval.ms",
                      "200",
                      "kafka.log_level",
                      "2",
                      "log.level",
                      "info",
                      "kafka.session.timeout.ms",
                      "6000",
                      "kafka.heartbeat.interval.ms",
                      "500",
                      NULL};
  char err[512];
  sl_conf_t *conf = sl_conf_new();
  for (int i = 0; kv[i]; i += 2)
    if (sl_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err))) {
      fprintf(stderr, "rebalance-job: %s\n", err);
      return 2;
    }
  if (!(job = sl_job_new("rebalance", conf, err, sizeof(err)))) {
    fprintf(stderr, "rebalance-job: %s\n", err);
    return 2;
  }
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *s = sl_source_kafka(job, "in", "in", &so);
  s = sl_flat_map(s, "expand", expand, NULL);
  sl_process_ops_t po = {.open = count_open, .on_element = count_element};
  s = sl_process(sl_key_by(s, NULL, NULL), "count", &po, NULL);
  sl_sink_kafka(s, "out", "out", NULL);
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  int rc = sl_job_run(job);
  if (rc)
    fprintf(stderr, "rebalance-job: %s: %s\n", sl_strerror(rc),
            sl_job_errmsg(job));
  sl_job_destroy(job);
  return rc ? 1 : 0;
}
