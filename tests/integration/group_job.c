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
 * whose transaction a record belongs to. With GROUP_JOB_BROADCAST set,
 * the counts pass through a keyed broadcast process function that
 * multiplies each by the factor in force at its window's end: the
 * latest record of topic "rules" (value: the factor as text, message
 * timestamp: from when) at or before it, 1 before the first; each count
 * waits in keyed state for an event-time timer at its window's end, so
 * the rules' watermark decides when it is judged.
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

/* ---- GROUP_JOB_BROADCAST: counts times the factor in force ------------ */

typedef struct scale_states {
  sl_bstate_t *factors; /* big-endian from-time -> factor (int64) */
  sl_state_t *pending;  /* per key: window end -> count (int64) */
} scale_states;

static void be64(int64_t v, unsigned char out[8]) {
  uint64_t u = (uint64_t)v ^ (UINT64_C(1) << 63); /* sorts signed */
  for (int i = 7; i >= 0; i--, u >>= 8)
    out[i] = (unsigned char)u;
}

static int scale_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  scale_states *s = calloc(1, sizeof(*s));
  if (!s)
    return SL_ERR_NOMEM;
  sl_ctx_set_local(ctx, s);
  sl_state_desc_t d = {.name = "pending", .kind = SL_STATE_MAP};
  s->factors = sl_bstate_register(ctx, "factors");
  s->pending = sl_state_register(ctx, &d);
  return s->factors && s->pending ? 0 : SL_ERR_STATE;
}

static void scale_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static int scale_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  scale_states *s = sl_ctx_local(ctx);
  unsigned char mk[8];
  be64(rec->ts, mk);
  int rc =
      sl_map_put(ctx, s->pending, mk, sizeof(mk), rec->value, rec->value_len);
  return rc ? rc : sl_timer_set(ctx, SL_EVENT_TIME, rec->ts);
}

static int scale_rule(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  scale_states *s = sl_ctx_local(ctx);
  char text[32];
  snprintf(text, sizeof(text), "%.*s", (int)rec->value_len,
           (const char *)rec->value);
  int64_t factor = strtoll(text, NULL, 10);
  unsigned char mk[8];
  be64(rec->ts, mk);
  return sl_bstate_put(ctx, s->factors, mk, sizeof(mk), &factor,
                       sizeof(factor));
}

static int scale_timer(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts,
                       void *opaque) {
  (void)domain;
  (void)opaque;
  scale_states *s = sl_ctx_local(ctx);
  unsigned char at[8];
  be64(ts, at);
  const void *v;
  size_t len;
  int rc = sl_map_get(ctx, s->pending, at, sizeof(at), &v, &len);
  if (rc != 1 || len != sizeof(int64_t))
    return rc < 0 ? rc : SL_ERR_STATE;
  int64_t count, factor = 1;
  memcpy(&count, v, sizeof(count));
  sl_bstate_iter_t it;
  const void *k, *f;
  size_t kl, fl;
  if ((rc = sl_bstate_iter(ctx, s->factors, &it)))
    return rc;
  while (sl_bstate_next(&it, &k, &kl, &f, &fl) == 1 && memcmp(k, at, 8) <= 0)
    memcpy(&factor, f, sizeof(factor));
  count *= factor;
  const void *key;
  size_t key_len;
  if ((rc = sl_ctx_key(ctx, &key, &key_len)))
    return rc;
  if ((rc = sl_map_remove(ctx, s->pending, at, sizeof(at))) < 0)
    return rc;
  sl_record_t out = {.key = key,
                     .key_len = key_len,
                     .value = &count,
                     .value_len = sizeof(count),
                     .ts = ts};
  return sl_emit(ctx, &out);
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
  if (getenv("GROUP_JOB_BROADCAST")) {
    sl_kafka_source_opts_t ro = {.start = SL_KAFKA_START_EARLIEST};
    sl_watermark_spec_t rwm = {.kind = SL_WM_BOUNDED};
    sl_stream_t *rules =
        sl_with_watermarks(sl_source_kafka(job, "rules", "rules", &ro), &rwm);
    sl_broadcast_process_ops_t bo = {.open = scale_open,
                                     .on_element = scale_element,
                                     .on_broadcast = scale_rule,
                                     .on_timer = scale_timer,
                                     .close = scale_close};
    w = sl_broadcast_process(sl_key_by(w, NULL, NULL), sl_broadcast(rules),
                             "scale", &bo, NULL);
  }
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
