/* SPDX-License-Identifier: Apache-2.0 */
/* The dead-letter queue (error.policy=dlq): a bad record is written to
 * dlq.topic with headers saying what went wrong and where it came from.
 * A message that came straight from a Kafka source keeps its original key,
 * value, timestamp and headers, so it can be replayed as it was. A dead
 * letter too large to write whole is written truncated, never dropped and
 * never fatal: otherwise the record would fail the job on every restart. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "kafka/kafka_int.h"

/* Room kept below message.max.bytes for what librdkafka and the broker
 * count besides key, value and headers: the record's own framing (at most
 * 36 bytes of varints and attributes) and the batch header (61 bytes) of
 * a batch that holds only this record. */
#define DLQ_RESERVE 1024

char sl__kdlq_tag;

static void add(rd_kafka_headers_t *h, const char *name, const char *v) {
  rd_kafka_header_add(h, name, -1, v, -1);
}

static bool is_ours(const char *name) {
  return strncmp(name, "sluice.", 7) == 0;
}

/* Bytes the headers take in a record, rounded up: name and value plus two
 * varint lengths of at most 5 bytes each. */
static size_t headers_size(const rd_kafka_headers_t *h) {
  const char *name;
  const void *v;
  size_t len, n = 0;
  for (size_t i = 0; h && !rd_kafka_header_get_all(h, i, &name, &v, &len); i++)
    n += strlen(name) + len + 10;
  return n;
}

/* A copy of h without the headers of the consumed message (keeps
 * sluice.*), for a dead letter whose own headers do not fit. */
static rd_kafka_headers_t *only_ours(const rd_kafka_headers_t *h,
                                     bool *dropped) {
  rd_kafka_headers_t *o = rd_kafka_headers_new(8);
  const char *name;
  const void *v;
  size_t len;
  *dropped = false;
  for (size_t i = 0; h && !rd_kafka_header_get_all(h, i, &name, &v, &len); i++)
    if (is_ours(name))
      rd_kafka_header_add(o, name, -1, v, (ssize_t)len);
    else
      *dropped = true;
  return o;
}

static void add_truncated(rd_kafka_headers_t *h, size_t key_len,
                          size_t value_len) {
  char num[32];
  add(h, "sluice.truncated", "true");
  snprintf(num, sizeof(num), "%zu", value_len);
  add(h, "sluice.original.size", num);
  snprintf(num, sizeof(num), "%zu", key_len);
  add(h, "sluice.original.key.size", num);
}

/* The producer's message.max.bytes: librdkafka refuses a larger record
 * before it reaches any broker. */
static size_t max_bytes(rd_kafka_t *rk) {
  char buf[32];
  size_t len = sizeof(buf);
  if (rd_kafka_conf_get(rd_kafka_conf(rk), "message.max.bytes", buf, &len) !=
      RD_KAFKA_CONF_OK)
    return 1000000; /* librdkafka's default */
  return (size_t)strtoull(buf, NULL, 10);
}

/* Cuts a dead letter to fit the producer's limit: the value first, then
 * the key, and the consumed message's own headers only when even they do
 * not fit. Returns whether anything was cut (headers say so). */
static bool fit(rd_kafka_t *rk, size_t *key_len, size_t *value_len,
                rd_kafka_headers_t **h) {
  size_t max = max_bytes(rk);
  size_t limit = max > DLQ_RESERVE ? max - DLQ_RESERVE : 0;
  if (*key_len + *value_len + headers_size(*h) <= limit)
    return false;
  add_truncated(*h, *key_len, *value_len);
  size_t hs = headers_size(*h);
  if (hs > limit) {
    bool dropped;
    rd_kafka_headers_t *o = only_ours(*h, &dropped);
    rd_kafka_headers_destroy(*h);
    *h = o;
    if (dropped)
      add(*h, "sluice.truncated.headers", "true");
    hs = headers_size(*h);
  }
  size_t room = limit > hs ? limit - hs : 0;
  if (*key_len > room)
    *key_len = room;
  room -= *key_len;
  if (*value_len > room)
    *value_len = room;
  return true;
}

bool sl__kdlq_redeliver(const sl__kjob *kj, rd_kafka_t *rk,
                        const rd_kafka_message_t *m) {
  if (m->_private != &sl__kdlq_tag ||
      m->err != RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE || !m->rkt)
    return false;
  rd_kafka_headers_t *src = NULL, *h;
  if (rd_kafka_message_headers(m, &src) || !src)
    src = NULL;
  h = src ? rd_kafka_headers_copy(src) : rd_kafka_headers_new(8);
  const void *v;
  size_t len;
  if (rd_kafka_header_get_last(h, "sluice.truncated", &v, &len))
    add_truncated(h, m->key_len, m->len);
  /* The broker's limit (a topic's max.message.bytes) is not known here:
   * halve what is left until it is accepted, value before key before the
   * consumed message's headers, so a few round trips find it. */
  size_t key_len = m->key_len, value_len = m->len;
  if (value_len)
    value_len /= 2;
  else if (key_len)
    key_len /= 2;
  else {
    bool dropped;
    rd_kafka_headers_t *o = only_ours(h, &dropped);
    rd_kafka_headers_destroy(h);
    h = o;
    if (!dropped) {
      rd_kafka_headers_destroy(h);
      return false; /* nothing left to cut: the delivery error stands */
    }
    add(h, "sluice.truncated.headers", "true");
  }
  const char *topic = rd_kafka_topic_name(m->rkt);
  /* Produced from the delivery report itself, so a flush that is waiting
   * sees the retry queued before the failed message leaves the queue. */
  rd_kafka_resp_err_t e = rd_kafka_producev(
      rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(m->partition),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(m->key, key_len),
      RD_KAFKA_V_VALUE(m->payload, value_len),
      RD_KAFKA_V_TIMESTAMP(rd_kafka_message_timestamp(m, NULL)),
      RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&sl__kdlq_tag), RD_KAFKA_V_END);
  if (e) {
    rd_kafka_headers_destroy(h);
    sl__klog(kj, SL__LOG_WARN,
             "dead-letter queue: retrying a dead letter the broker found too "
             "large: %s",
             rd_kafka_err2str(e));
    return false;
  }
  sl__klog(kj, SL__LOG_WARN,
           "dead-letter queue: %s[%" PRId32 "] refused a dead letter of %zu "
           "bytes as too large; writing it cut to %zu bytes",
           topic, m->partition, m->key_len + m->len, key_len + value_len);
  return true;
}

static int dlq_hook(sl_ctx_t *op, const sl_record_t *rec, const char *why,
                    void *opaque) {
  sl__kjob *kj = opaque;
  char err[512];
  pthread_mutex_lock(&kj->dlq_lock);
  if (!kj->dlq)
    kj->dlq = sl__kprod_acquire(kj, false, kj->conf, err, sizeof(err));
  sl__kprod *p = kj->dlq;
  pthread_mutex_unlock(&kj->dlq_lock);
  if (!p) {
    sl__klog(kj, SL__LOG_ERROR, "dead-letter queue: %s", err);
    return SL_ERR_KAFKA;
  }
  const sl_kafka_msg_t *m = sl_kafka_current(op);
  rd_kafka_headers_t *h = NULL;
  const void *key = NULL, *value = NULL;
  size_t key_len = 0, value_len = 0;
  int64_t ts = -1;
  if (m) {
    rd_kafka_headers_t *src = NULL;
    if (!rd_kafka_message_headers((rd_kafka_message_t *)m->m, &src) && src)
      h = rd_kafka_headers_copy(src);
    sl_kafka_msg_key(m, &key, &key_len);
    sl_kafka_msg_value(m, &value, &value_len);
    ts = sl_kafka_msg_timestamp(m);
  } else if (rec) {
    key = rec->key;
    key_len = rec->key_len;
    value = rec->value;
    value_len = rec->value_len;
    ts = rec->ts;
  }
  if (!h)
    h = rd_kafka_headers_new(6);
  add(h, "sluice.error", why);
  add(h, "sluice.error.operator", sl_op_uid(op) ? sl_op_uid(op) : "");
  add(h, "sluice.job", kj->name);
  if (m) {
    char num[32];
    add(h, "sluice.source.topic", sl_kafka_msg_topic(m));
    snprintf(num, sizeof(num), "%" PRId32, sl_kafka_msg_partition(m));
    add(h, "sluice.source.partition", num);
    snprintf(num, sizeof(num), "%" PRId64, sl_kafka_msg_offset(m));
    add(h, "sluice.source.offset", num);
  }
  size_t whole = key_len + value_len;
  if (fit(sl__kprod_handle(p), &key_len, &value_len, &h)) {
    char where[300] = "";
    if (m)
      snprintf(where, sizeof(where), " from %s[%" PRId32 "]@%" PRId64,
               sl_kafka_msg_topic(m), sl_kafka_msg_partition(m),
               sl_kafka_msg_offset(m));
    sl__klog(kj, SL__LOG_WARN,
             "dead-letter queue: the dead letter%s (%zu bytes) exceeds "
             "kafka.message.max.bytes; writing it cut to %zu bytes",
             where, whole, key_len + value_len);
  }
  int rc = sl__kprod_sendv(p, sl__conf_str(kj->conf, "dlq.topic"),
                           RD_KAFKA_PARTITION_UA, key, key_len, value,
                           value_len, ts, h, &sl__kdlq_tag, err, sizeof(err));
  if (rc)
    sl__klog(kj, SL__LOG_ERROR, "dead-letter queue: %s", err);
  else
    /* rec is NULL exactly when the source could not decode the input. */
    sl__kstats_dead_letter(kj, sl_op_uid(op) ? sl_op_uid(op) : "",
                           rec ? "user" : "decode");
  return rc;
}

void sl__kdlq_install(sl__kjob *kj) {
  sl_job_set_dlq(kj->job, dlq_hook, kj);
}

int sl__kdlq_flush(sl__kjob *kj, char *err, size_t errlen) {
  pthread_mutex_lock(&kj->dlq_lock);
  sl__kprod *p = kj->dlq;
  pthread_mutex_unlock(&kj->dlq_lock);
  return p ? sl__kprod_flush(p, err, errlen) : SL_OK;
}
