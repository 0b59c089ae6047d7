/* SPDX-License-Identifier: Apache-2.0 */
/* The per-job Kafka context, librdkafka configuration from kafka.* keys,
 * source position blobs, and the accessors of consumed messages. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/service.h"
#include "graph/graph.h"
#include "kafka/group_int.h"
#include "kafka/kafka_int.h"
#include "runtime/runtime.h"

_Thread_local const sl_kafka_msg_t *sl__kafka_cur;

void sl__klog(const sl__kjob *kj, int level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  sl__log(kj ? kj->conf : NULL, kj ? kj->name : NULL, level, "kafka", "%s",
          msg);
}

/* ---- Per-job context ----------------------------------------------------- */

/* Jobs are few and built on one thread each; a list under a lock finds a
 * job's context from any builder without a field in the runtime's job. */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static sl__kjob **reg;
static size_t n_reg;

static void kjob_free(void *arg) {
  sl__kjob *kj = arg;
  pthread_mutex_lock(&reg_lock);
  for (size_t i = 0; i < n_reg; i++) {
    if (reg[i] == kj) {
      reg[i] = reg[--n_reg];
      break;
    }
  }
  if (n_reg == 0) {
    free(reg);
    reg = NULL;
  }
  pthread_mutex_unlock(&reg_lock);
  sl__kprod_destroy(kj->plain);
  sl__kprod_destroy(kj->txn);
  sl__kstats_free(kj);
  sl__kpos_drop(kj, UINT64_MAX);
  free(kj->pos);
  free(kj->members);
  for (size_t i = 0; i < kj->n_src; i++)
    free(kj->src_uids[i]);
  free(kj->src_uids);
  for (size_t i = 0; i < kj->n_repart; i++)
    free(kj->repart_topics[i]);
  free(kj->repart_topics);
  free(kj->name);
  pthread_mutex_destroy(&kj->lock);
  pthread_mutex_destroy(&kj->dlq_lock);
  free(kj);
}

/* Group mode: a revival (core/service.h) starts the exactly-once
 * protocol over with a new transactional producer. */
static int kjob_restart(void *svc, char *err, size_t errlen) {
  (void)err, (void)errlen;
  sl__ktxn_restart(svc);
  return SL_OK;
}

static const sl__service_ops kjob_ops = {.name = "kafka",
                                         .restart = kjob_restart};

sl__kjob *sl__kjob_get(sl_job_t *job) {
  pthread_mutex_lock(&reg_lock);
  for (size_t i = 0; i < n_reg; i++) {
    if (reg[i]->job == job) {
      sl__kjob *kj = reg[i];
      pthread_mutex_unlock(&reg_lock);
      return kj;
    }
  }
  sl__kjob *kj = calloc(1, sizeof(*kj));
  sl__kjob **r = realloc(reg, (n_reg + 1) * sizeof(*reg));
  if (r)
    reg = r;
  if (!kj || !r || !(kj->name = strdup(sl_job_name(job)))) {
    pthread_mutex_unlock(&reg_lock);
    free(kj);
    sl_job_build_error(job, SL_ERR_NOMEM, "kafka: out of memory");
    return NULL;
  }
  kj->job = job;
  kj->conf = sl_job_conf(job);
  pthread_mutex_init(&kj->lock, NULL);
  pthread_mutex_init(&kj->dlq_lock, NULL);
  if (sl__kstats_init(kj)) {
    pthread_mutex_unlock(&reg_lock);
    sl__kstats_free(kj);
    pthread_mutex_destroy(&kj->lock);
    pthread_mutex_destroy(&kj->dlq_lock);
    free(kj->name);
    free(kj);
    sl_job_build_error(job, SL_ERR_NOMEM, "kafka: out of memory");
    return NULL;
  }
  reg[n_reg++] = kj;
  pthread_mutex_unlock(&reg_lock);
  sl_job_adopt(job, kj, kjob_free);
  if (sl__kgroup_on(kj->conf) && sl__job_add_service(job, &kjob_ops, kj)) {
    sl_job_build_error(job, SL_ERR_NOMEM, "kafka: out of memory");
    return NULL;
  }
  /* Group mode with repartition topics: every key_by crosses processes
   * through one (repart.c); the runtime cuts the graph when it starts. */
  if (sl__kgroup_repartition(kj->conf)) {
    sl__graph *g = sl__graph_of(job);
    g->split = sl__krepart_split;
    g->split_arg = kj;
  }
  return kj;
}

int sl_kafka_set_committed_lookup(sl_job_t *job, sl_kafka_committed_fn fn,
                                  void *opaque) {
  if (!job || !fn)
    return SL_ERR_INVAL;
  sl__kjob *kj = sl__kjob_get(job);
  if (!kj)
    return SL_ERR_NOMEM;
  kj->committed = fn;
  kj->committed_opaque = opaque;
  return SL_OK;
}

/* ---- librdkafka configuration -------------------------------------------- */

typedef struct kconf_arg {
  rd_kafka_conf_t *rc;
  char *err;
  size_t errlen;
  int rc_err;
} kconf_arg;

static int kconf_set(const char *key, const char *value, void *opaque) {
  kconf_arg *a = opaque;
  if (strncmp(key, "kafka.", 6) != 0)
    return 0;
  char e[512];
  if (rd_kafka_conf_set(a->rc, key + 6, value, e, sizeof(e)) !=
      RD_KAFKA_CONF_OK) {
    /* librdkafka may quote the value it refused: not a secret's. */
    if (sl_conf_is_secret(key) && *value && strstr(e, value))
      snprintf(e, sizeof(e),
               "librdkafka refused the value (not shown: the "
               "key holds a secret)");
    snprintf(a->err, a->errlen, "%s: %s", key, e);
    a->rc_err = SL_ERR_CONF;
    return 1;
  }
  return 0;
}

const char *sl__kconf_get(const sl_conf_t *conf, const char *key) {
  char k[256];
  snprintf(k, sizeof(k), "kafka.%s", key);
  return conf ? sl_conf_get(conf, k) : NULL;
}

int sl__kconf_brokers(const sl_conf_t *conf, char *err, size_t errlen) {
  const char *b = sl__kconf_get(conf, "bootstrap.servers");
  if (!b)
    b = sl__kconf_get(conf, "metadata.broker.list");
  if (b && b[strspn(b, ", \t")] != '\0')
    return SL_OK;
  snprintf(err, errlen,
           "kafka.bootstrap.servers is %s: set it to the brokers' "
           "comma-separated host:port list",
           b ? "empty" : "not set");
  return SL_ERR_CONF;
}

int sl__kconf(const sl_conf_t *conf, const char *const *defaults,
              rd_kafka_conf_t **out, char *err, size_t errlen) {
  rd_kafka_conf_t *rc = rd_kafka_conf_new();
  char e[512];
  for (; defaults && defaults[0]; defaults += 2) {
    if (!defaults[1] || sl__kconf_get(conf, defaults[0]))
      continue;
    if (rd_kafka_conf_set(rc, defaults[0], defaults[1], e, sizeof(e)) !=
        RD_KAFKA_CONF_OK) {
      snprintf(err, errlen, "kafka.%s: %s", defaults[0], e);
      rd_kafka_conf_destroy(rc);
      return SL_ERR_CONF;
    }
  }
  kconf_arg a = {rc, err, errlen, 0};
  if (conf)
    sl_conf_foreach(conf, kconf_set, &a);
  if (a.rc_err) {
    rd_kafka_conf_destroy(rc);
    return a.rc_err;
  }
  *out = rc;
  return SL_OK;
}

/* ---- Positions ------------------------------------------------------------
 */

int sl__kpos_add(sl__kjob *kj, uint64_t id, const char *group,
                 const char *topic, int32_t partition, int64_t offset,
                 int member, bool task) {
  pthread_mutex_lock(&kj->lock);
  int rc = SL_OK;
  if (kj->n_pos == kj->cap_pos) {
    size_t cap = kj->cap_pos ? kj->cap_pos * 2 : 64;
    sl__kpos *p = realloc(kj->pos, cap * sizeof(*p));
    if (!p) {
      rc = SL_ERR_NOMEM;
      goto out;
    }
    kj->pos = p;
    kj->cap_pos = cap;
  }
  sl__kpos *p = &kj->pos[kj->n_pos];
  p->id = id;
  p->partition = partition;
  p->offset = offset;
  p->member = member;
  p->task = task;
  p->group = strdup(group);
  p->topic = strdup(topic);
  if (!p->group || !p->topic) {
    free(p->group);
    free(p->topic);
    rc = SL_ERR_NOMEM;
    goto out;
  }
  kj->n_pos++;
out:
  pthread_mutex_unlock(&kj->lock);
  return rc;
}

void sl__kpos_drop(sl__kjob *kj, uint64_t id) {
  pthread_mutex_lock(&kj->lock);
  size_t o = 0;
  for (size_t i = 0; i < kj->n_pos; i++) {
    if (kj->pos[i].id <= id) {
      free(kj->pos[i].group);
      free(kj->pos[i].topic);
    } else {
      kj->pos[o++] = kj->pos[i];
    }
  }
  kj->n_pos = o;
  pthread_mutex_unlock(&kj->lock);
}

#define KPOS_MAGIC 0x314b4c53u      /* "SLK1" */
#define KPOS_TIME_MAGIC 0x544b4c53u /* "SLKT" */
#define KPOS_END_MAGIC 0x454b4c53u  /* "SLKE" */
/* Flags of an SLKT entry. Bits only ever get added: a reader ignores
 * those it does not know, and a blob written before a bit existed reads
 * as that bit clear (finished: false, the partition is read). */
#define KPOS_IDLE 1u
#define KPOS_FINISHED 2u
#define KPOS_WM 4u

int sl__kpos_encode(sl_buf_t *out, const char *group, const char *const *topic,
                    const int32_t *partition, const int64_t *offset, size_t n) {
  return sl__kpos_encode_time(out, group, topic, partition, offset, NULL, n);
}

int sl__kpos_encode_time(sl_buf_t *out, const char *group,
                         const char *const *topic, const int32_t *partition,
                         const int64_t *offset, const sl__kpos_time *time,
                         size_t n) {
  int rc = sl__buf_u32(out, KPOS_MAGIC);
  if (!rc)
    rc = sl__buf_bytes(out, group, strlen(group));
  if (!rc)
    rc = sl__buf_u32(out, (uint32_t)n);
  for (size_t i = 0; i < n && !rc; i++) {
    rc = sl__buf_bytes(out, topic[i], strlen(topic[i]));
    if (!rc)
      rc = sl__buf_u32(out, (uint32_t)partition[i]);
    if (!rc)
      rc = sl__buf_u64(out, (uint64_t)offset[i]);
  }
  /* Event time follows the positions, so that a reader of the positions
   * alone (and a blob written before it existed) stays as it was. */
  if (!rc && time)
    rc = sl__buf_u32(out, KPOS_TIME_MAGIC);
  for (size_t i = 0; time && i < n && !rc; i++) {
    uint8_t flags = (uint8_t)((time[i].idle ? KPOS_IDLE : 0) |
                              (time[i].finished ? KPOS_FINISHED : 0) |
                              (time[i].wm ? KPOS_WM : 0));
    rc = sl__buf_u64(out, (uint64_t)time[i].max_ts);
    if (!rc)
      rc = sl_buf_append(out, &flags, 1);
  }
  /* Stop offsets only for a bounded source: unbounded blobs stay as they
   * were before bounds existed. */
  bool bounded = false;
  for (size_t i = 0; time && i < n; i++)
    bounded = bounded || time[i].bounded;
  if (!rc && bounded)
    rc = sl__buf_u32(out, KPOS_END_MAGIC);
  for (size_t i = 0; bounded && i < n && !rc; i++)
    rc = sl__buf_u64(out, (uint64_t)(time[i].bounded ? time[i].end : -1));
  return rc;
}

typedef struct rd {
  const unsigned char *p, *end;
} rd;

static bool rd_u32(rd *r, uint32_t *v) {
  if (r->end - r->p < 4)
    return false;
  *v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
       (uint32_t)r->p[3] << 24;
  r->p += 4;
  return true;
}

static bool rd_u64(rd *r, uint64_t *v) {
  uint32_t lo, hi;
  if (!rd_u32(r, &lo) || !rd_u32(r, &hi))
    return false;
  *v = (uint64_t)hi << 32 | lo;
  return true;
}

/* A length-prefixed string, copied NUL-terminated into buf. */
static bool rd_str(rd *r, char *buf, size_t cap) {
  uint32_t n;
  if (!rd_u32(r, &n) || n >= cap || (size_t)(r->end - r->p) < n)
    return false;
  memcpy(buf, r->p, n);
  buf[n] = '\0';
  r->p += n;
  return true;
}

static bool rd_time(rd *r, sl__kpos_time *t) {
  uint64_t ts;
  if (!rd_u64(r, &ts) || r->p == r->end)
    return false;
  t->max_ts = (int64_t)ts;
  t->idle = (*r->p & KPOS_IDLE) != 0;
  t->finished = (*r->p & KPOS_FINISHED) != 0;
  t->wm = (*r->p++ & KPOS_WM) != 0;
  t->bounded = false;
  t->end = -1;
  return true;
}

/* Two passes: the event-time part (if any) follows every position. */
int sl__kpos_decode_time(const sl_blob_t *blob, sl__kpos_visit_time visit,
                         void *arg) {
  rd r = {blob->data, (const unsigned char *)blob->data + blob->len};
  uint32_t magic, n;
  char group[512], topic[512];
  if (blob->len == 0)
    return SL_OK;
  if (!rd_u32(&r, &magic) || magic != KPOS_MAGIC ||
      !rd_str(&r, group, sizeof(group)) || !rd_u32(&r, &n))
    return SL_ERR_CORRUPT;
  rd entries = r;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t part;
    uint64_t off;
    if (!rd_str(&r, topic, sizeof(topic)) || !rd_u32(&r, &part) ||
        !rd_u64(&r, &off))
      return SL_ERR_CORRUPT;
  }
  rd times = r, ends = r;
  bool timed = r.p != r.end, bounded = false;
  if (timed) {
    sl__kpos_time t;
    if (!rd_u32(&times, &magic) || magic != KPOS_TIME_MAGIC)
      return SL_ERR_CORRUPT;
    rd check = times;
    for (uint32_t i = 0; i < n; i++)
      if (!rd_time(&check, &t))
        return SL_ERR_CORRUPT;
    ends = check;
    if (check.p != check.end) {
      uint64_t e;
      bounded = true;
      if (!rd_u32(&ends, &magic) || magic != KPOS_END_MAGIC)
        return SL_ERR_CORRUPT;
      check = ends;
      for (uint32_t i = 0; i < n; i++)
        if (!rd_u64(&check, &e))
          return SL_ERR_CORRUPT;
      if (check.p != check.end)
        return SL_ERR_CORRUPT;
    }
  }
  for (uint32_t i = 0; i < n; i++) {
    uint32_t part = 0;
    uint64_t off = 0, end = 0;
    sl__kpos_time t = {SL_TS_MIN, false, false, false, false, -1};
    rd_str(&entries, topic, sizeof(topic));
    rd_u32(&entries, &part);
    rd_u64(&entries, &off);
    if (timed)
      rd_time(&times, &t);
    if (bounded && rd_u64(&ends, &end) && (int64_t)end >= 0) {
      t.bounded = true;
      t.end = (int64_t)end;
    }
    int rc = visit(group, topic, (int32_t)part, (int64_t)off, timed ? &t : NULL,
                   arg);
    if (rc)
      return rc;
  }
  return SL_OK;
}

typedef struct plain_visit {
  sl__kpos_visit visit;
  void *arg;
} plain_visit;

static int visit_plain(const char *group, const char *topic, int32_t partition,
                       int64_t offset, const sl__kpos_time *t, void *arg) {
  (void)t;
  plain_visit *v = arg;
  return v->visit(group, topic, partition, offset, v->arg);
}

int sl__kpos_decode(const sl_blob_t *blob, sl__kpos_visit visit, void *arg) {
  plain_visit v = {visit, arg};
  return sl__kpos_decode_time(blob, visit_plain, &v);
}

/* ---- Consumed messages -----------------------------------------------------
 */

const char *sl_kafka_msg_topic(const sl_kafka_msg_t *m) {
  return m->topic;
}
int32_t sl_kafka_msg_partition(const sl_kafka_msg_t *m) {
  return m->m->partition;
}
int64_t sl_kafka_msg_offset(const sl_kafka_msg_t *m) {
  return m->m->offset;
}
int64_t sl_kafka_msg_timestamp(const sl_kafka_msg_t *m) {
  return rd_kafka_message_timestamp(m->m, NULL);
}
void sl_kafka_msg_key(const sl_kafka_msg_t *m, const void **key, size_t *len) {
  *key = m->m->key;
  *len = m->m->key ? m->m->key_len : 0;
}
void sl_kafka_msg_value(const sl_kafka_msg_t *m, const void **value,
                        size_t *len) {
  *value = m->m->payload;
  *len = m->m->payload ? m->m->len : 0;
}

static rd_kafka_headers_t *msg_headers(const sl_kafka_msg_t *m) {
  rd_kafka_headers_t *h = NULL;
  /* librdkafka parses headers lazily on first access; the message is
   * logically const to the user. */
  if (rd_kafka_message_headers((rd_kafka_message_t *)m->m, &h))
    return NULL;
  return h;
}

size_t sl_kafka_msg_header_count(const sl_kafka_msg_t *m) {
  rd_kafka_headers_t *h = msg_headers(m);
  return h ? rd_kafka_header_cnt(h) : 0;
}

int sl_kafka_msg_header_at(const sl_kafka_msg_t *m, size_t i, const char **name,
                           const void **value, size_t *len) {
  rd_kafka_headers_t *h = msg_headers(m);
  if (!h || rd_kafka_header_get_all(h, i, name, value, len))
    return SL_ERR_NOTFOUND;
  return SL_OK;
}

int sl_kafka_msg_header(const sl_kafka_msg_t *m, const char *name,
                        const void **value, size_t *len) {
  rd_kafka_headers_t *h = msg_headers(m);
  if (!h || rd_kafka_header_get_last(h, name, value, len))
    return SL_ERR_NOTFOUND;
  return SL_OK;
}

json_t *sl_kafka_msg_json(const sl_kafka_msg_t *m) {
  if (!m)
    return NULL;
  /* The codec only scanned the value; build the document the first time a
   * function asks (the source frees it after the record's emit). */
  if (!m->json && m->lazy) {
    sl_kafka_msg_t *w = (sl_kafka_msg_t *)m;
    json_error_t je;
    w->json = sl__jload(m->m->payload ? m->m->payload : "",
                        m->m->payload ? m->m->len : 0, &je);
    w->lazy = false;
  }
  return m->json;
}

/* Only a chained operator runs inside the source's emit on this thread;
 * anything behind a key_by may run during some other message's emit, so
 * it must not see that message. The check walks the few nodes between
 * the operator and its sources (no cache: instances of a later job may
 * reuse an address). */
const sl_kafka_msg_t *sl_kafka_current(const sl_ctx_t *ctx) {
  if (!sl__kafka_cur || !ctx)
    return NULL;
  return sl_op_chained_to_sources(ctx) ? sl__kafka_cur : NULL;
}

/* ---- Sink headers and JSON helpers ----------------------------------------
 */

struct sl_kafka_headers {
  rd_kafka_headers_t *h;
};

int sl_kafka_headers_add(sl_kafka_headers_t *h, const char *name,
                         const void *value, size_t len) {
  if (!h || !name)
    return SL_ERR_INVAL;
  return rd_kafka_header_add(h->h, name, -1, value, value ? (ssize_t)len : 0)
             ? SL_ERR_NOMEM
             : SL_OK;
}

json_t *sl_json_pointer(json_t *root, const char *field) {
  if (!root || !field)
    return NULL;
  if (field[0] != '/')
    return *field ? NULL : root;
  json_t *cur = root;
  char tok[256];
  const char *p = field;
  while (cur && *p == '/') {
    p++;
    size_t n = 0;
    while (*p && *p != '/' && n + 1 < sizeof(tok)) {
      if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
        tok[n++] = p[1] == '0' ? '~' : '/';
        p += 2;
      } else {
        tok[n++] = *p++;
      }
    }
    tok[n] = '\0';
    if (json_is_object(cur)) {
      cur = json_object_get(cur, tok);
    } else if (json_is_array(cur)) {
      char *end;
      unsigned long i = strtoul(tok, &end, 10);
      cur = (*tok && !*end) ? json_array_get(cur, i) : NULL;
    } else {
      cur = NULL;
    }
  }
  return cur;
}

int sl_json_emit(sl_ctx_t *ctx, const void *key, size_t key_len,
                 const json_t *value, int64_t ts) {
  if (!ctx || !value)
    return SL_ERR_INVAL;
  /* One pass for values that fit the stack buffer, else a second one into
   * scratch memory of the right size. */
  char small[512];
  size_t n = sl_json_dumpb(value, small, sizeof(small));
  if (n == 0)
    return SL_ERR_INVAL;
  char *buf = sl_ctx_alloc(ctx, n);
  if (!buf)
    return SL_ERR_NOMEM;
  if (n <= sizeof(small))
    memcpy(buf, small, n);
  else
    sl_json_dumpb(value, buf, n);
  sl_record_t r = {key, key_len, buf, n, ts};
  return sl_emit(ctx, &r);
}

/* Headers handed to a sink's headers callback wrap librdkafka's list. */
int sl__kheaders_call(sl_kafka_headers_fn fn, sl_ctx_t *ctx,
                      const sl_record_t *rec, rd_kafka_headers_t *h,
                      void *opaque) {
  sl_kafka_headers_t w = {h};
  return fn(ctx, rec, &w, opaque);
}
