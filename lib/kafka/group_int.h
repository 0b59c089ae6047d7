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
#include <stdatomic.h>
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
  bool fenced; /* ... and it is a fence (sl__kgroup_fence) */
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
  /* How many partitions the member reads, by its own count of the
   * rebalance steps it made (rebalance thread). */
  int reads;
  /* Exactly-once across processes: the member's consumer and its index
   * in the job's members (sl__kgroup_register); lost is set, never
   * cleared, once librdkafka called the member's assignment lost (its
   * session timed out, or the coordinator no longer knew it) or a
   * rebalance failed: from then on this process commits nothing it read
   * (sl__kgroup_check_members). */
  rd_kafka_t *rk;
  int member;
  _Atomic int lost;
  /* Whether the group ever gave the member an assignment (an empty one
   * counts): see sl__kgroup_destroy(). */
  bool synced;
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
/* rd_kafka_destroy() of the member's consumer, once it is closed. Before
 * librdkafka 2.3.0 destroying a consumer of the cooperative-sticky
 * assignor that never got an assignment fails an assertion (librdkafka
 * issue 4312), which aborts the process: such a consumer (it was stopped
 * while the group was still forming) is closed but left allocated until
 * the process exits, with a log line. */
void sl__kgroup_destroy(rd_kafka_t *rk, sl__kgroup *g);
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
/* Adds g (its rk set) to the job's members; SL_OK or SL_ERR_NOMEM. The
 * member must be unregistered before its consumer is closed. */
struct sl__kjob;
int sl__kgroup_register(struct sl__kjob *kj, sl__kgroup *g);
void sl__kgroup_unregister(struct sl__kjob *kj, sl__kgroup *g);
/* On the thread that commits a transaction, kj->lock held: confirms that
 * every registered member still holds its assignment (see group.c for
 * why this is sound and what it cannot see) and returns, in md[i] for
 * member i (md has n_members entries), the member's current group
 * metadata for send_offsets_to_transaction. 0, or SL_ERR_KAFKA with the
 * member that lost its assignment named in err (md then holds nothing to
 * free). */
int sl__kgroup_check_members(struct sl__kjob *kj,
                             rd_kafka_consumer_group_metadata_t **md, char *err,
                             size_t errlen);
/* Whether member g still holds its assignment, confirmed as the commit
 * does (group.c): false once its session ran out, also when the rebalance
 * callback that says so has not run yet. */
bool sl__kgroup_holds(sl__kgroup *g);
/* Records the first failure of a rebalance step (the source fails the
 * job with it on its next poll). */
void sl__kgroup_fail(sl__kgroup *g, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for a fence: the member lost partitions whose output since
 * the last commit must not be committed. The source fails the job with
 * it as a fence (runtime/group.h), which the process survives by a
 * revival. */
void sl__kgroup_fence(sl__kgroup *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
