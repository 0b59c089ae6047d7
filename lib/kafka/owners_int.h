/* SPDX-License-Identifier: Apache-2.0 */
/* Group mode's owners directory (docs/serving.md): which process of the
 * consumer group owns which task, and at which endpoint it answers
 * queries. Each process keeps the tasks its group members were assigned
 * and announces them with its instance id and query endpoint on the
 * owners topic (group.owners.topic); every process reads that topic and
 * answers "who owns task t" from the newest announcement that claims t.
 * librdkafka's DescribeConsumerGroups would say the same from the
 * group's own metadata, but the dev broker (librdkafka's mock cluster)
 * does not answer it; a topic works on every broker. The rebalance
 * figures of the members (runtime/group.h) are reported from the same
 * hook. */
#ifndef SL_KAFKA_OWNERS_INT_H
#define SL_KAFKA_OWNERS_INT_H

#include <librdkafka/rdkafka.h>
#include <stdint.h>

#include "kafka/kafka_int.h"

typedef struct sl__kowners sl__kowners;

/* Graph-build time, group mode: the job's directory, created and
 * registered (a service of the job, the runtime's owner function) by the
 * first Kafka source. NULL when out of memory (a build error is set). */
sl__kowners *sl__kowners_get(sl__kjob *kj);

/* A member's rebalance events, from librdkafka's rebalance callback (the
 * member's polling thread) or its join: e is RD_KAFKA_RESP_ERR_NO_ERROR
 * when it joins the group, _ASSIGN_PARTITIONS or _REVOKE_PARTITIONS
 * (anything else: a failed rebalance that gave up l). *since is the
 * member's own: when its rebalance began (monotonic ms), 0 when none. o
 * may be NULL (a no-op). */
void sl__kowners_event(sl__kowners *o, int64_t *since, rd_kafka_resp_err_t e,
                       const rd_kafka_topic_partition_list_t *l);

#endif
