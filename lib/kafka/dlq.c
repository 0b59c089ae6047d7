/* SPDX-License-Identifier: Apache-2.0 */
/* The dead-letter queue (error.policy=dlq): a bad record is written to
 * dlq.topic with headers saying what went wrong and where it came from.
 * A message that came straight from a Kafka source keeps its original key,
 * value, timestamp and headers, so it can be replayed as it was. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/conf.h"
#include "kafka/kafka_int.h"
#include "metrics/metrics.h"

static void add(rd_kafka_headers_t *h, const char *name, const char *v) {
  rd_kafka_header_add(h, name, -1, v, -1);
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
    sl__klog("dead-letter queue: %s", err);
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
  int rc = sl__kprod_send(p, sl__conf_str(kj->conf, "dlq.topic"), key, key_len,
                          value, value_len, ts, h, err, sizeof(err));
  if (rc)
    sl__klog("dead-letter queue: %s", err);
  else
    /* rec is NULL exactly when the source could not decode the input. */
    sl__metrics_dead_letter(kj->job, sl_op_uid(op) ? sl_op_uid(op) : "",
                            rec ? "user" : "decode", 1);
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
