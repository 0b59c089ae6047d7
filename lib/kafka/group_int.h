/* SPDX-License-Identifier: Apache-2.0 */
/* Group membership of the Kafka source in group mode (docs/scaling.md):
 * each source subtask's consumer is a member of the job's consumer group
 * with the cooperative-sticky assignor, and Kafka, not the job, decides
 * which partitions it reads. The source hands in what to do when
 * partitions arrive and leave; this file speaks librdkafka's rebalance
 * protocol (incremental assign/unassign) and checks the co-partitioning
 * the user declared. */
#ifndef SL_KAFKA_GROUP_INT_H
#define SL_KAFKA_GROUP_INT_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

#include "sluice/conf.h"

typedef struct sl__kgroup {
  /* Called from librdkafka's rebalance callback, on the thread that
   * polls or closes the consumer (the subtask's worker). assigned sets
   * the offset of each element of l to where the partition starts
   * (RD_KAFKA_OFFSET_INVALID: the group's committed offset, else
   * auto.offset.reset); revoked commits what was read of each element of
   * l and forgets it. A failure is reported through sl__kgroup_fail(). */
  void (*assigned)(void *sub, rd_kafka_topic_partition_list_t *l);
  /* Returns true to keep the partitions until the source calls
   * sl__kgroup_release() (group mode with checkpoints: a revoked task is
   * snapshotted first); never when now is set (a rebalance error: they
   * are let go at once). */
  bool (*revoked)(void *sub, const rd_kafka_topic_partition_list_t *l,
                  bool now);
  void *sub;
  const sl_conf_t *conf; /* the job's: log lines */
  const char *job, *uid;
  int subtask; /* in log lines: one member per source subtask */
  int err;     /* first failure, 0: none */
  char errmsg[256];
  /* The job's owners directory and rebalance figures (owners_int.h),
   * told of every rebalance event; since: this member's rebalance began
   * (monotonic ms), 0 when none. */
  struct sl__kowners *owners;
  int64_t since;
  /* The assignor's protocol, from the configuration: librdkafka 2.0.2's
   * rd_kafka_rebalance_protocol() can block when called from the
   * callback its consumer close makes. */
  bool coop;
} sl__kgroup;

/* Whether the job runs in group mode (group.mode is not off). */
bool sl__kgroup_on(const sl_conf_t *conf);
/* Whether it runs with repartition topics (group.mode=repartition). */
bool sl__kgroup_repartition(const sl_conf_t *conf);
/* The declared partition count (group.partitions) against a topic's:
 * SL_OK or SL_ERR_CONF with the reason in err. */
int sl__kgroup_check(const sl_conf_t *conf, const char *topic, int partitions,
                     char *err, size_t errlen);
/* Before rd_kafka_new(): the rebalance callback with g as the client's
 * opaque, and the cooperative-sticky assignor unless the job sets
 * kafka.partition.assignment.strategy. SL_OK or SL_ERR_CONF. */
int sl__kgroup_conf(rd_kafka_conf_t *c, const sl_conf_t *conf, sl__kgroup *g,
                    char *err, size_t errlen);
/* Subscribes the consumer to the topics: it joins the group. */
int sl__kgroup_join(rd_kafka_t *rk, char *const *topics, int n, char *err,
                    size_t errlen);
/* Lets go of partitions whose revocation the source kept (revoked
 * returned true): the group's rebalance goes on. */
void sl__kgroup_release(rd_kafka_t *rk, sl__kgroup *g,
                        rd_kafka_topic_partition_list_t *l);
/* Before rd_kafka_consumer_close(): revokes what the member still reads
 * through the same steps as a rebalance (commit or snapshot, unassign).
 * librdkafka 2.0.2's close does not always call the rebalance callback
 * with the cooperative protocol (seen after a second, empty assignment),
 * and a member that leaves must hand over exactly where it stopped. */
void sl__kgroup_leave(rd_kafka_t *rk, sl__kgroup *g);
/* Records the first failure of a rebalance step (the source fails the
 * job with it on its next poll). */
void sl__kgroup_fail(sl__kgroup *g, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
