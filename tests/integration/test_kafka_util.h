/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers for the Kafka suites: an in-process mock cluster per test,
 * producing and reading test data with plain librdkafka clients, running
 * a job on a thread until enough output arrived, and the tumbling-count
 * process function the end-to-end tests and the benchmark use until
 * sl_window lands. Header-only so each suite stays one file. */
#ifndef SL_TEST_KAFKA_UTIL_H
#define SL_TEST_KAFKA_UTIL_H

#include <check.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice.h"
#include "sluice/json.h"

/* ---- Mock cluster -------------------------------------------------------- */

typedef struct tk_cluster {
  rd_kafka_t *rk; /* hosts the mock */
  rd_kafka_mock_cluster_t *mc;
  char bootstrap[256];
} tk_cluster;

static inline void tk_start(tk_cluster *c, int brokers) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "2", NULL, 0);
  c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  ck_assert_msg(c->rk != NULL, "%s", err);
  c->mc = rd_kafka_mock_cluster_new(c->rk, brokers);
  ck_assert_ptr_nonnull(c->mc);
  snprintf(c->bootstrap, sizeof(c->bootstrap), "%s",
           rd_kafka_mock_cluster_bootstraps(c->mc));
}

static inline void tk_topic(tk_cluster *c, const char *name, int parts) {
  ck_assert_int_eq(rd_kafka_mock_topic_create(c->mc, name, parts, 1), 0);
}

static inline void tk_stop(tk_cluster *c) {
  rd_kafka_mock_cluster_destroy(c->mc);
  rd_kafka_destroy(c->rk);
}

/* A job configuration on the cluster; extra NULL-terminated key/values. */
static inline sl_conf_t *tk_conf(const tk_cluster *c, int par,
                                 const char *const *kv) {
  char err[256], p[16];
  sl_conf_t *conf = sl_conf_new();
  snprintf(p, sizeof(p), "%d", par);
  ck_assert_int_eq(sl_conf_set(conf, "parallelism", p, err, sizeof(err)), 0);
  ck_assert_int_eq(sl_conf_set(conf, "kafka.bootstrap.servers", c->bootstrap,
                               err, sizeof(err)),
                   0);
  ck_assert_int_eq(sl_conf_set(conf, "kafka.log_level", "2", err, sizeof(err)),
                   0);
  for (; kv && kv[0]; kv += 2)
    ck_assert_msg(sl_conf_set(conf, kv[0], kv[1], err, sizeof(err)) == 0, "%s",
                  err);
  return conf;
}

static inline sl_job_t *tk_job(const char *name, sl_conf_t *conf) {
  char err[256];
  sl_job_t *job = sl_job_new(name, conf, err, sizeof(err));
  ck_assert_msg(job != NULL, "%s", err);
  return job;
}

/* ---- Plain clients ------------------------------------------------------- */

static inline rd_kafka_t *tk_producer(const tk_cluster *c) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstrap, NULL, 0);
  rd_kafka_conf_set(conf, "log_level", "2", NULL, 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  ck_assert_msg(rk != NULL, "%s", err);
  return rk;
}

/* Produces one message to an explicit partition (-1: by key). */
static inline void tk_send(rd_kafka_t *p, const char *topic, int32_t part,
                           const char *key, const char *value, int64_t ts,
                           const char *hname, const char *hvalue) {
  rd_kafka_headers_t *h = NULL;
  if (hname) {
    h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, hname, -1, hvalue, -1);
  }
  rd_kafka_resp_err_t e = rd_kafka_producev(
      p, RD_KAFKA_V_TOPIC(topic),
      RD_KAFKA_V_PARTITION(part < 0 ? RD_KAFKA_PARTITION_UA : part),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
      RD_KAFKA_V_VALUE((void *)value, value ? strlen(value) : 0),
      RD_KAFKA_V_TIMESTAMP(ts), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
  ck_assert_msg(e == 0, "produce: %s", rd_kafka_err2str(e));
}

static inline void tk_flush(rd_kafka_t *p) {
  ck_assert_int_eq(rd_kafka_flush(p, 10000), 0);
}

/* A message read back, with its headers flattened to "a=1;b=2;". */
typedef struct tk_msg {
  char key[64];
  char value[512];
  /* The value's first bytes as they are (binary values), and its
   * length. */
  unsigned char raw[16];
  size_t len;
  char headers[512];
  int64_t ts;
  int32_t partition;
  int64_t offset;
} tk_msg;

typedef struct tk_reader {
  rd_kafka_t *rk;
  tk_msg *m;
  size_t n, cap;
} tk_reader;

static inline void tk_reader_open(tk_reader *r, const tk_cluster *c,
                                  const char *topic, int parts) {
  char err[512];
  memset(r, 0, sizeof(*r));
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstrap, NULL, 0);
  rd_kafka_conf_set(conf, "group.id", "tk-reader", NULL, 0);
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
  rd_kafka_conf_set(conf, "log_level", "2", NULL, 0);
  r->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  ck_assert_msg(r->rk != NULL, "%s", err);
  rd_kafka_poll_set_consumer(r->rk);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
  for (int i = 0; i < parts; i++)
    rd_kafka_topic_partition_list_add(l, topic, i)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  ck_assert_int_eq(rd_kafka_assign(r->rk, l), 0);
  rd_kafka_topic_partition_list_destroy(l);
}

/* Reads until at least want messages arrived or timeout_ms passed;
 * returns how many there are. */
static inline size_t tk_read(tk_reader *r, size_t want, int timeout_ms) {
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (r->n < want) {
    clock_gettime(CLOCK_MONOTONIC, &t);
    if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >
        timeout_ms)
      break;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, 50);
    if (!m)
      continue;
    if (!m->err) {
      if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->m = realloc(r->m, r->cap * sizeof(*r->m));
      }
      tk_msg *x = &r->m[r->n++];
      memset(x, 0, sizeof(*x));
      if (m->key)
        snprintf(x->key, sizeof(x->key), "%.*s", (int)m->key_len,
                 (const char *)m->key);
      if (m->payload) {
        snprintf(x->value, sizeof(x->value), "%.*s", (int)m->len,
                 (const char *)m->payload);
        memcpy(x->raw, m->payload, m->len < 16 ? m->len : 16);
        x->len = m->len;
      }
      x->ts = rd_kafka_message_timestamp(m, NULL);
      x->partition = m->partition;
      x->offset = m->offset;
      rd_kafka_headers_t *h = NULL;
      if (!rd_kafka_message_headers(m, &h)) {
        const char *name;
        const void *v;
        size_t len;
        size_t o = 0;
        for (size_t i = 0; !rd_kafka_header_get_all(h, i, &name, &v, &len); i++)
          o += (size_t)snprintf(x->headers + o, sizeof(x->headers) - o,
                                "%s=%.*s;", name, (int)len,
                                v ? (const char *)v : "");
      }
    }
    rd_kafka_message_destroy(m);
  }
  return r->n;
}

static inline void tk_reader_close(tk_reader *r) {
  rd_kafka_consumer_close(r->rk);
  rd_kafka_destroy(r->rk);
  free(r->m);
}

/* The value of header name in a flattened header string, or "". */
static inline const char *tk_header(const tk_msg *m, const char *name,
                                    char *buf, size_t cap) {
  char pat[128];
  snprintf(pat, sizeof(pat), "%s=", name);
  buf[0] = '\0';
  for (const char *p = m->headers; (p = strstr(p, pat)); p++) {
    if (p != m->headers && p[-1] != ';')
      continue;
    p += strlen(pat);
    size_t n = strcspn(p, ";");
    snprintf(buf, cap, "%.*s", (int)n, p);
    break;
  }
  return buf;
}

/* ---- Running a job ------------------------------------------------------- */

typedef struct tk_run {
  sl_job_t *job;
  pthread_t t;
  int rc;
} tk_run;

static inline void *tk_run_main(void *arg) {
  tk_run *r = arg;
  r->rc = sl_job_run(r->job);
  return NULL;
}

static inline void tk_run_start(tk_run *r, sl_job_t *job) {
  r->job = job;
  r->rc = -999;
  ck_assert_int_eq(pthread_create(&r->t, NULL, tk_run_main, r), 0);
}

/* Stops the job and returns what sl_job_run() returned. */
static inline int tk_run_stop(tk_run *r) {
  sl_job_stop(r->job);
  pthread_join(r->t, NULL);
  if (r->rc)
    fprintf(stderr, "job failed: %s: %s\n", sl_strerror(r->rc),
            sl_job_errmsg(r->job));
  return r->rc;
}

static inline void tk_sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

/* ---- Keyed tumbling count as a process function ---------------------------
 */

/* Until sl_window is on main: a map state window_end -> count per key and
 * an event-time timer at the window's max timestamp, as Flink's docs build
 * a tumbling window from a KeyedProcessFunction. Output: JSON
 * {"key":..,"end":..,"count":..} with the window's max timestamp. */
typedef struct tk_window {
  int64_t size;
} tk_window;

static inline int tkw_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_desc_t d = {.name = "counts", .kind = SL_STATE_MAP};
  sl_state_t *st = sl_state_register(ctx, &d);
  if (!st)
    return SL_ERR_STATE;
  sl_ctx_set_local(ctx, st);
  return 0;
}

static inline int tkw_element(sl_ctx_t *ctx, const sl_record_t *rec,
                              void *opaque) {
  tk_window *w = opaque;
  sl_state_t *st = sl_ctx_local(ctx);
  int64_t start = rec->ts - ((rec->ts % w->size) + w->size) % w->size;
  int64_t end = start + w->size;
  const void *v;
  size_t len;
  uint64_t n = 0;
  if (sl_map_get(ctx, st, &end, sizeof(end), &v, &len) == 1)
    memcpy(&n, v, sizeof(n));
  n++;
  int rc = sl_map_put(ctx, st, &end, sizeof(end), &n, sizeof(n));
  return rc ? rc : sl_timer_set(ctx, SL_EVENT_TIME, end - 1);
}

static inline int tkw_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts,
                            void *opaque) {
  (void)opaque;
  (void)d;
  sl_state_t *st = sl_ctx_local(ctx);
  int64_t end = ts + 1;
  const void *v, *key;
  size_t len, klen;
  uint64_t n = 0;
  if (sl_map_get(ctx, st, &end, sizeof(end), &v, &len) != 1)
    return 0;
  memcpy(&n, v, sizeof(n));
  sl_map_remove(ctx, st, &end, sizeof(end));
  sl_ctx_key(ctx, &key, &klen);
  /* Encoded with the JSON helper the Kafka module offers. */
  json_t *o = json_pack("{s:s%,s:I,s:I}", "key", (const char *)key, klen, "end",
                        (json_int_t)end, "count", (json_int_t)n);
  int rc = o ? sl_json_emit(ctx, key, klen, o, ts) : SL_ERR_NOMEM;
  json_decref(o);
  return rc;
}

static const sl_process_ops_t tk_window_ops = {
    .open = tkw_open, .on_element = tkw_element, .on_timer = tkw_timer};

#endif
