/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the example programs: seeded randomness, locating the
 * broker, a paced producer and the delivery-delay queue (see exutil.h). */
#include "exutil.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

void ex_rng_seed(ex_rng *r, uint64_t seed) {
  r->s = seed ^ 0x9e3779b97f4a7c15ULL;
}

uint64_t ex_rng_next(ex_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double ex_rng_unit(ex_rng *r) {
  return (double)(ex_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

int64_t ex_rng_range(ex_rng *r, int64_t lo, int64_t hi) {
  return lo + (int64_t)(ex_rng_next(r) % (uint64_t)(hi - lo + 1));
}

double ex_rng_exp(ex_rng *r, double mean) {
  return -mean * log(1.0 - ex_rng_unit(r));
}

double ex_rng_normal(ex_rng *r) {
  /* Box-Muller; 1 - u keeps log() away from 0. */
  double u = 1.0 - ex_rng_unit(r), v = ex_rng_unit(r);
  return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

const char *ex_default_bootstrap_file(void) {
  static char path[512];
  const char *tmp = getenv("TMPDIR");
  snprintf(path, sizeof(path), "%s/sluice-kafka-dev.bootstrap",
           tmp && *tmp ? tmp : "/tmp");
  return path;
}

int ex_resolve_brokers(const char *brokers, const char *bootstrap_file,
                       int wait_ms, char *out, size_t outlen) {
  if (brokers) {
    snprintf(out, outlen, "%s", brokers);
    return 0;
  }
  const char *path =
      bootstrap_file ? bootstrap_file : ex_default_bootstrap_file();
  /* The dev broker writes the file atomically once its topics exist, so a
   * file that is there is complete. */
  for (int waited = 0;; waited += 50) {
    FILE *f = fopen(path, "r");
    if (f) {
      char *ok = fgets(out, (int)outlen, f);
      fclose(f);
      if (ok) {
        out[strcspn(out, "\r\n")] = '\0';
        if (*out)
          return 0;
      }
    } else if (errno != ENOENT) {
      fprintf(stderr, "cannot read %s: %s\n", path, strerror(errno));
      return -1;
    }
    if (waited >= wait_ms)
      break;
    ex_sleep_ms(50);
  }
  fprintf(stderr,
          "no broker: pass --brokers host:port for a Kafka cluster, or start "
          "the local dev broker first:\n  sluice-kafka-dev --bootstrap-file "
          "%s --topic <name>:<partitions> ...\n",
          path);
  return -1;
}

struct ex_producer {
  rd_kafka_t *rk;
  const char *topic;
  rd_kafka_topic_t *rkt;
  double rate;
  int64_t started;
  uint64_t sent;
  int failed;
  /* EX_GEN_PAUSE="N:FILE": after N records, wait until FILE exists. */
  uint64_t pause_at;
  char pause_file[512];
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque) {
  (void)opaque;
  if (m->err) {
    ex_producer *p = rd_kafka_opaque(rk);
    if (!p->failed++)
      fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(m->err));
  }
}

ex_producer *ex_producer_new(const char *brokers, const char *topic,
                             double rate, int batch) {
  char err[512], batch_s[32];
  snprintf(batch_s, sizeof(batch_s), "%d", batch);
  ex_producer *p = calloc(1, sizeof(*p));
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (!p || !conf)
    goto fail;
  /* Idempotence keeps each partition in the order we produced it even
   * across retries: the generators rely on per-key order. */
  if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof(err)) ||
      rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)) ||
      rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof(err)) ||
      (batch > 0 && rd_kafka_conf_set(conf, "batch.num.messages", batch_s, err,
                                      sizeof(err))) ||
      rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err))) {
    fprintf(stderr, "producer: %s\n", err);
    goto fail;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_conf_set_opaque(conf, p);
  p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!p->rk) {
    fprintf(stderr, "producer: %s\n", err);
    goto fail;
  }
  conf = NULL;
  rd_kafka_topic_conf_t *tc = rd_kafka_topic_conf_new();
  rd_kafka_topic_conf_set(tc, "partitioner", "murmur2_random", NULL, 0);
  p->rkt = rd_kafka_topic_new(p->rk, topic, tc);
  if (!p->rkt) {
    fprintf(stderr, "producer: topic %s: %s\n", topic,
            rd_kafka_err2str(rd_kafka_last_error()));
    goto fail;
  }
  p->topic = rd_kafka_topic_name(p->rkt);
  p->rate = rate;
  p->started = ex_wall_ms();
  const char *pause = getenv("EX_GEN_PAUSE");
  int at = 0;
  if (pause && sscanf(pause, "%" SCNu64 ":%n", &p->pause_at, &at) == 1 && at)
    snprintf(p->pause_file, sizeof(p->pause_file), "%s", pause + at);
  return p;
fail:
  if (conf)
    rd_kafka_conf_destroy(conf);
  if (p && p->rk)
    rd_kafka_destroy(p->rk);
  free(p);
  return NULL;
}

int ex_producer_send(ex_producer *p, const char *key, int32_t partition,
                     const char *value, size_t len, int64_t ts) {
  for (;;) {
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_RKT(p->rkt),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
        RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
        RD_KAFKA_V_VALUE((void *)value, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_TIMESTAMP(ts),
        RD_KAFKA_V_END);
    if (!e)
      break;
    if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
      return -1;
    }
    rd_kafka_poll(p->rk, 10);
  }
  rd_kafka_poll(p->rk, 0);
  p->sent++;
  if (p->pause_file[0] && p->sent == p->pause_at) {
    /* What was written so far is in the topic while the writer waits. */
    int64_t t0 = ex_wall_ms();
    rd_kafka_flush(p->rk, 30000);
    while (access(p->pause_file, F_OK) != 0)
      ex_sleep_ms(10);
    p->started += ex_wall_ms() - t0; /* the pace goes on from here */
  }
  if (p->rate > 0) {
    /* Sleep in steps of at least 5 ms: the rate holds on average without a
     * syscall per record. */
    int64_t due = p->started + (int64_t)((double)p->sent * 1000.0 / p->rate);
    int64_t ahead = due - ex_wall_ms();
    if (ahead >= 5)
      ex_sleep_ms((long)ahead);
  }
  return p->failed ? -1 : 0;
}

int ex_producer_close(ex_producer *p) {
  if (!p)
    return 0;
  rd_kafka_resp_err_t e = rd_kafka_flush(p->rk, 30000);
  if (e)
    fprintf(stderr, "flush: %s\n", rd_kafka_err2str(e));
  int rc = e || p->failed ? -1 : 0;
  rd_kafka_topic_destroy(p->rkt);
  rd_kafka_destroy(p->rk);
  free(p);
  return rc;
}

static bool earlier(const ex_pending *a, const ex_pending *b) {
  return a->deliver_at < b->deliver_at ||
         (a->deliver_at == b->deliver_at && a->seq < b->seq);
}

int ex_queue_push(ex_queue *q, int64_t deliver_at, const char *key,
                  const char *json, int64_t ts) {
  if (q->n == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 1024;
    ex_pending *v = realloc(q->v, cap * sizeof(*v));
    if (!v)
      return -1;
    q->v = v;
    q->cap = cap;
  }
  ex_pending e = {deliver_at, q->seq++, strdup(key), strdup(json), ts};
  if (!e.key || !e.json) {
    free(e.key);
    free(e.json);
    return -1;
  }
  size_t i = q->n++;
  while (i > 0 && earlier(&e, &q->v[(i - 1) / 2])) {
    q->v[i] = q->v[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  q->v[i] = e;
  return 0;
}

bool ex_queue_pop_due(ex_queue *q, int64_t now, ex_pending *out) {
  if (!q->n || q->v[0].deliver_at > now)
    return false;
  *out = q->v[0];
  ex_pending last = q->v[--q->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= q->n)
      break;
    if (c + 1 < q->n && earlier(&q->v[c + 1], &q->v[c]))
      c++;
    if (!earlier(&q->v[c], &last))
      break;
    q->v[i] = q->v[c];
    i = c;
  }
  if (q->n)
    q->v[i] = last;
  return true;
}

int ex_queue_send_due(ex_queue *q, ex_producer *p, int64_t now,
                      int64_t *max_ts) {
  ex_pending e;
  int rc = 0;
  while (!rc && ex_queue_pop_due(q, now, &e)) {
    if (e.ts > *max_ts)
      *max_ts = e.ts;
    rc = ex_producer_send(p, e.key, -1, e.json, strlen(e.json), e.ts);
    free(e.key);
    free(e.json);
  }
  return rc;
}

void ex_queue_free(ex_queue *q) {
  for (size_t i = 0; i < q->n; i++) {
    free(q->v[i].key);
    free(q->v[i].json);
  }
  free(q->v);
  memset(q, 0, sizeof(*q));
}

long long ex_arg_ll(const char *prog, const char *flag, const char *v) {
  char *end;
  errno = 0;
  long long x = v ? strtoll(v, &end, 10) : 0;
  if (!v || errno || *end || end == v) {
    fprintf(stderr, "%s: %s needs an integer, got \"%s\"\n", prog, flag,
            v ? v : "");
    exit(2);
  }
  return x;
}

double ex_arg_double(const char *prog, const char *flag, const char *v) {
  char *end;
  errno = 0;
  double x = v ? strtod(v, &end) : 0;
  if (!v || errno || *end || end == v) {
    fprintf(stderr, "%s: %s needs a number, got \"%s\"\n", prog, flag,
            v ? v : "");
    exit(2);
  }
  return x;
}

void ex_sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) && errno == EINTR)
    ;
}

int64_t ex_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ex_read_topic(const char *prog, const char *brokers, const char *topic,
                  bool read_committed, const char *what, ex_msg_fn fn,
                  void *opaque, size_t *taken) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof(err)) ||
      rd_kafka_conf_set(conf, "group.id", "sluice-evaluator", err,
                        sizeof(err)) ||
      rd_kafka_conf_set(conf, "enable.auto.commit", "false", err,
                        sizeof(err)) ||
      rd_kafka_conf_set(conf, "isolation.level",
                        read_committed ? "read_committed" : "read_uncommitted",
                        err, sizeof(err)) ||
      rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err))) {
    fprintf(stderr, "%s: %s\n", prog, err);
    rd_kafka_conf_destroy(conf);
    return -1;
  }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  if (!rk) {
    fprintf(stderr, "%s: %s\n", prog, err);
    rd_kafka_conf_destroy(conf);
    return -1;
  }
  int rc = -1, open = 0;
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_topic_partition_list_t *parts = NULL;
  int64_t *high = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) || md->topic_cnt != 1 ||
      md->topics[0].err) {
    fprintf(stderr, "%s: no topic %s at %s\n", prog, topic, brokers);
    goto out;
  }
  int np = md->topics[0].partition_cnt;
  high = calloc((size_t)np, sizeof(int64_t));
  parts = rd_kafka_topic_partition_list_new(np);
  for (int p = 0; p < np; p++) {
    int64_t lo;
    if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &high[p], 10000)) {
      fprintf(stderr, "%s: cannot read the end of %s/%d\n", prog, topic, p);
      goto out;
    }
    if (high[p] > lo) {
      rd_kafka_topic_partition_list_add(parts, topic, p)->offset =
          RD_KAFKA_OFFSET_BEGINNING;
      open++;
    }
  }
  rd_kafka_assign(rk, parts);
  int64_t idle_since = ex_wall_ms();
  while (open > 0) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
    if (!m) {
      if (ex_wall_ms() - idle_since > 20000) {
        fprintf(stderr, "%s: timed out reading %s\n", prog, topic);
        break;
      }
      continue;
    }
    idle_since = ex_wall_ms();
    if (m->err) {
      if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        fprintf(stderr, "%s: %s\n", prog, rd_kafka_message_errstr(m));
    } else if (m->offset < high[m->partition]) {
      rd_kafka_timestamp_type_t tt;
      if (fn(m->payload, m->len, rd_kafka_message_timestamp(m, &tt), opaque))
        fprintf(stderr, "%s: %s/%d@%lld: not %s, ignored\n", prog, topic,
                (int)m->partition, (long long)m->offset, what);
      else if (taken)
        (*taken)++;
      if (m->offset + 1 == high[m->partition])
        open--;
    }
    rd_kafka_message_destroy(m);
  }
  rc = open > 0 ? -1 : 0;
out:
  free(high);
  if (md)
    rd_kafka_metadata_destroy(md);
  if (parts)
    rd_kafka_topic_partition_list_destroy(parts);
  rd_kafka_topic_destroy(rkt);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return rc;
}
