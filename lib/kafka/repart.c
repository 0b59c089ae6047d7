/* SPDX-License-Identifier: Apache-2.0 */
/* Group mode's repartition topic (group.mode=repartition,
 * docs/scaling.md): the graph's split hook cuts a key_by into an internal
 * Kafka sink, which writes the key_by's input keyed by its key into
 * <job>-<uid>-repartition with Kafka's murmur2 partitioner, and an
 * internal Kafka source, which reads it back in the job's consumer group
 * with the topic's partitions as the tasks; and a service of the job
 * that, before any worker starts, checks each topic's partition count or
 * creates it through the admin API. Every cut key_by is a keyed stage
 * with a topic of its own; a task is a partition of one of them. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/conf.h"
#include "core/service.h"
#include "graph/graph.h"
#include "kafka/kafka_int.h"
#include "runtime/runtime.h"

/* Before the workers start, so that no source has joined the group when
 * a topic turns out to be wrong. */
static int repart_start(void *kjob, char *err, size_t errlen) {
  sl__kjob *kj = kjob;
  int rc = SL_OK;
  for (size_t i = 0; i < kj->n_repart && !rc; i++)
    rc = sl__krepart_ensure(kj, kj->conf, kj->repart_topics[i], err, errlen);
  return rc;
}

static const sl__service_ops repart_ops = {.name = "repartition",
                                           .start = repart_start};

sl_stream_t *sl__krepart_split(sl_job_t *job, const sl__node *k,
                               sl_stream_t *in, const char *uid, void *kjob) {
  sl__kjob *kj = kjob;
  char topic[512], sink[300], src[300];
  snprintf(topic, sizeof(topic), "%s-%s-repartition", kj->name, uid);
  snprintf(sink, sizeof(sink), "%s-repartition-sink", uid);
  snprintf(src, sizeof(src), "%s-repartition", uid);
  /* One topic per keyed stage, at the stage's index: a task is a
   * partition of one of them (sl__ktask_of). */
  assert((size_t)k->stage == kj->n_repart);
  char **t = realloc(kj->repart_topics, (kj->n_repart + 1) * sizeof(*t));
  if (t)
    kj->repart_topics = t;
  if (!t || !(t[kj->n_repart] = strdup(topic)) ||
      (kj->n_repart == 0 && sl__job_add_service(job, &repart_ops, kj))) {
    sl_job_build_error(job, SL_ERR_NOMEM, "key_by: out of memory");
    return NULL;
  }
  kj->n_repart++;
  int32_t parts = (int32_t)sl__conf_int(kj->conf, "group.partitions");
  if (sl__ksink_repart(in, sink, topic, k->key_fn, k->key_opaque, parts))
    return NULL;
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  return sl__ksource_new(job, src, topic, &so, true);
}

int sl__ktask_stage(const sl__kjob *kj, const char *topic) {
  if (!kj->n_repart)
    return 0;
  for (size_t i = 0; i < kj->n_repart; i++)
    if (strcmp(kj->repart_topics[i], topic) == 0)
      return (int)i;
  return -1;
}

int64_t sl__ktask_of(const sl__kjob *kj, const char *topic, int32_t partition) {
  int stage = sl__ktask_stage(kj, topic);
  if (stage < 0 || partition < 0)
    return -1;
  return (int64_t)stage * sl__conf_int(kj->conf, "group.partitions") +
         partition;
}

/* The topic's partition count from the cluster's metadata; 0 while the
 * cluster does not know it yet (just created), -1 on another error. */
static int partitions_of(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int tmo,
                         char *err, size_t errlen) {
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, tmo);
  if (e) {
    snprintf(err, errlen, "metadata: %s", rd_kafka_err2str(e));
    return -1;
  }
  int n = 0;
  if (md->topic_cnt == 1) {
    e = md->topics[0].err;
    if (!e)
      n = md->topics[0].partition_cnt;
    else if (e != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART &&
             e != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE) {
      snprintf(err, errlen, "metadata: %s", rd_kafka_err2str(e));
      n = -1;
    }
  }
  rd_kafka_metadata_destroy(md);
  return n;
}

static int create(rd_kafka_t *rk, const char *topic, int want, int tmo,
                  char *err, size_t errlen) {
  char why[512];
  /* Replication factor -1: the broker's default. */
  rd_kafka_NewTopic_t *nt =
      rd_kafka_NewTopic_new(topic, want, -1, why, sizeof(why));
  if (!nt) {
    snprintf(err, errlen, "cannot create topic %s: %s", topic, why);
    return SL_ERR_KAFKA;
  }
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t *ao =
      rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_request_timeout(ao, tmo, why, sizeof(why));
  rd_kafka_AdminOptions_set_operation_timeout(ao, tmo, why, sizeof(why));
  rd_kafka_CreateTopics(rk, &nt, 1, ao, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, tmo + 1000);
  int rc = SL_OK;
  const rd_kafka_CreateTopics_result_t *res =
      ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
  size_t n = 0;
  const rd_kafka_topic_result_t **tr =
      res ? rd_kafka_CreateTopics_result_topics(res, &n) : NULL;
  if (!ev) {
    snprintf(err, errlen, "cannot create topic %s: no answer within %d ms",
             topic, tmo);
    rc = SL_ERR_KAFKA;
  } else if (rd_kafka_event_error(ev)) {
    snprintf(err, errlen, "cannot create topic %s: %s", topic,
             rd_kafka_event_error_string(ev));
    rc = SL_ERR_KAFKA;
  } else if (n != 1) {
    snprintf(err, errlen, "cannot create topic %s: no result", topic);
    rc = SL_ERR_KAFKA;
  } else if (rd_kafka_topic_result_error(tr[0]) &&
             rd_kafka_topic_result_error(tr[0]) !=
                 RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
    const char *s = rd_kafka_topic_result_error_string(tr[0]);
    snprintf(err, errlen, "cannot create topic %s: %s", topic,
             s ? s : rd_kafka_err2str(rd_kafka_topic_result_error(tr[0])));
    rc = SL_ERR_KAFKA;
  }
  if (ev)
    rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(ao);
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
  return rc;
}

int sl__krepart_ensure(sl__kjob *kj, const sl_conf_t *conf, const char *topic,
                       char *err, size_t errlen) {
  int want = (int)sl__conf_int(conf, "group.partitions");
  int tmo = (int)sl__conf_int(conf, "broker.timeout.ms");
  char cid[300];
  snprintf(cid, sizeof(cid), "sluice-%s-admin", kj->name);
  /* A metadata request must not create the topic with the broker's
   * default partition count. */
  const char *defaults[] = {"client.id", cid, "allow.auto.create.topics",
                            "false", NULL};
  rd_kafka_conf_t *c;
  int rc = sl__kconf(conf, defaults, &c, err, errlen);
  if (rc)
    return rc;
  char why[512];
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof(why));
  if (!rk) {
    rd_kafka_conf_destroy(c);
    snprintf(err, errlen, "cannot create an admin client: %s", why);
    return SL_ERR_KAFKA;
  }
  /* An existing topic is checked, not created: librdkafka 2.0's mock
   * cluster (the dev broker) does not create topics through the admin
   * API, so there the tool creates it. */
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  int have = rkt ? partitions_of(rk, rkt, tmo, why, sizeof(why)) : -1;
  if (have < 0) {
    snprintf(err, errlen, "topic %s: %s", topic, rkt ? why : "out of memory");
    rc = SL_ERR_KAFKA;
  } else if (have == 0) {
    rc = create(rk, topic, want, tmo, err, errlen);
  }
  /* A topic just created may take a moment to show in the metadata. */
  for (int64_t until = sl__mono_ms() + tmo; !rc && have == 0;) {
    have = partitions_of(rk, rkt, tmo, why, sizeof(why));
    if (have < 0) {
      snprintf(err, errlen, "topic %s: %s", topic, why);
      rc = SL_ERR_KAFKA;
    } else if (have > 0) {
      break;
    } else if (sl__mono_ms() >= until) {
      snprintf(err, errlen,
               "topic %s: not in the cluster's metadata after %d ms", topic,
               tmo);
      rc = SL_ERR_KAFKA;
    } else {
      nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
    }
  }
  if (!rc && have != want) {
    snprintf(err, errlen,
             "repartition topic %s has %d partitions but group.partitions is "
             "%d: the topic's partitions are the job's tasks, so every "
             "process must declare the count the topic has (or the topic be "
             "deleted, with what it holds)",
             topic, have, want);
    rc = SL_ERR_CONF;
  }
  if (rkt)
    rd_kafka_topic_destroy(rkt);
  rd_kafka_destroy(rk);
  return rc;
}
