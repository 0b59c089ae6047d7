/* SPDX-License-Identifier: Apache-2.0 */
/* Nexmark end to end through Kafka (nx_kafka.c): starting the dev broker
 * (sluice-kafka-dev), producing the generated events to a topic as JSON,
 * and the decode function of the Kafka source that reads them back for a
 * query. */
#ifndef NX_KAFKA_H
#define NX_KAFKA_H

#include <sys/types.h>

#include "nexmark.h"

typedef struct nx_kafka_dev {
  pid_t pid;
  char bootstrap[256];
  char file[128]; /* the bootstrap file the broker writes */
} nx_kafka_dev;

/* Starts the dev broker at path tool with one topic of `partitions`
 * partitions and waits (up to 10 s) until it serves. 0, or -1 with err. */
int nx_kafka_dev_start(const char *tool, const char *topic, int partitions,
                       nx_kafka_dev *dev, char *err, size_t errlen);
/* Stops it (SIGTERM) and waits for it; a no-op when it is not running. */
void nx_kafka_dev_stop(nx_kafka_dev *dev);

/* Produces events 0..n-1 of c as JSON (nx_event_to_json), event i to
 * partition i % partitions; then checks that the broker kept every
 * message (the dev broker silently drops
 * a partition's oldest data beyond ~5 MiB). 0, or -1 with err. */
int nx_kafka_produce(const char *bootstrap, const char *topic, int partitions,
                     const nx_config *c, uint64_t n, char *err, size_t errlen);

/* sl_kafka_decode_fn: a JSON event to its nx_event record, event time
 * from the event. */
int nx_kafka_decode(const sl_kafka_msg_t *msg, sl_record_t *out, char *err,
                    size_t errlen, void *opaque);

#endif
