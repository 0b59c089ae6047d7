/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the fraud and botdetect example programs: a seeded
 * random generator, finding the broker (--brokers or the dev broker's
 * bootstrap file), a paced Kafka producer for the generators, and the
 * delivery-delay queue that makes generated input out of order. */
#ifndef EX_UTIL_H
#define EX_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

/* 2026-01-01T00:00:00Z: where every generator's event time starts, so runs
 * with the same seed produce byte-identical input. */
#define EX_EPOCH_MS 1767225600000LL

/* ---- Deterministic randomness (splitmix64) ------------------------------ */

typedef struct ex_rng {
  uint64_t s;
} ex_rng;

void ex_rng_seed(ex_rng *r, uint64_t seed);
uint64_t ex_rng_next(ex_rng *r);
double ex_rng_unit(ex_rng *r);                           /* [0, 1) */
int64_t ex_rng_range(ex_rng *r, int64_t lo, int64_t hi); /* [lo, hi] */
double ex_rng_exp(ex_rng *r, double mean);
double ex_rng_normal(ex_rng *r);

/* ---- Broker address ------------------------------------------------------ */

/* The default bootstrap file of the dev broker: $TMPDIR (or /tmp) +
 * "/sluice-kafka-dev.bootstrap". Returns a static string. */
const char *ex_default_bootstrap_file(void);

/* Resolves where Kafka is: brokers when non-NULL (a real cluster), else the
 * address in bootstrap_file (written by sluice-kafka-dev), waiting up to
 * wait_ms for the file to appear. 0 on success; else prints why to stderr
 * (with how to start the dev broker) and returns -1. */
int ex_resolve_brokers(const char *brokers, const char *bootstrap_file,
                       int wait_ms, char *out, size_t outlen);

/* ---- Producer for the generators ---------------------------------------- */

typedef struct ex_producer ex_producer;

/* A producer writing to topic with the Java client's keyed partitioner
 * (murmur2), so each key's records stay in one partition in order.
 * rate > 0 paces produce() to that many records per second of wall time.
 * batch > 0 caps the records per produced batch (batch.num.messages): a
 * consumer then fetches each partition in as many small steps as input
 * produced slowly gives it. With EX_GEN_PAUSE="N:FILE" in the
 * environment, a producer that has written N records flushes them and
 * waits until FILE exists before it writes the next
 * (examples/run-example.sh --kill-after-ms: the job is killed while the
 * input is only half written). NULL on error (printed). */
ex_producer *ex_producer_new(const char *brokers, const char *topic,
                             double rate, int batch);
/* Writes one record; partition < 0 lets the partitioner choose. 0 or -1
 * (printed). */
int ex_producer_send(ex_producer *p, const char *key, int32_t partition,
                     const char *value, size_t len, int64_t ts);
/* Flushes and frees; returns 0 when every record was delivered. */
int ex_producer_close(ex_producer *p);

/* ---- Delivery-delay queue ------------------------------------------------ */

/* Generated events carry their true event time; each is delivered after a
 * random network delay, so the topic holds them out of event-time order
 * (bounded by the largest delay). A min-heap on delivery time. */
typedef struct ex_pending {
  int64_t deliver_at;
  uint64_t seq; /* ties: generation order, so the output is deterministic */
  char *key;
  char *json;
  int64_t ts;
} ex_pending;

typedef struct ex_queue {
  ex_pending *v;
  size_t n, cap;
  uint64_t seq;
} ex_queue;

/* Queues a copy of key and json. 0 or -1 (out of memory). */
int ex_queue_push(ex_queue *q, int64_t deliver_at, const char *key,
                  const char *json, int64_t ts);
/* Pops the earliest event due at or before now into *out (caller frees
 * out->key and out->json); returns false when none is due. */
bool ex_queue_pop_due(ex_queue *q, int64_t now, ex_pending *out);
void ex_queue_free(ex_queue *q);

/* Writes every queued event due at or before now (INT64_MAX: all) to p, in
 * delivery order; raises *max_ts to the latest event time written. 0 or
 * -1 (printed). */
int ex_queue_send_due(ex_queue *q, ex_producer *p, int64_t now,
                      int64_t *max_ts);

/* ---- Command lines ------------------------------------------------------- */

/* Strict number parsing for flags: exits with a message on bad input (the
 * examples are programs, so exiting here is fine). */
long long ex_arg_ll(const char *prog, const char *flag, const char *v);
double ex_arg_double(const char *prog, const char *flag, const char *v);

/* ---- Reading a topic ---------------------------------------------------- */

/* One message's value and timestamp; 0 when taken, non-zero when it is
 * not what the reader expects (reported and skipped). */
typedef int (*ex_msg_fn)(const char *v, size_t len, int64_t ts, void *opaque);

/* Reads every partition of topic at brokers from its beginning up to the
 * end it had when the read started (what is written later belongs to a
 * later evaluation), calling fn per message in partition order; with
 * read_committed the consumer reads only committed transactions. A
 * message fn refuses is reported as "<prog>: <topic>/<p>@<offset>: not
 * <what>, ignored". *taken (may be NULL) counts the messages fn took.
 * 0, or -1 with the reason printed. */
int ex_read_topic(const char *prog, const char *brokers, const char *topic,
                  bool read_committed, const char *what, ex_msg_fn fn,
                  void *opaque, size_t *taken);

/* Sleeps ms milliseconds (the generators' pacing). */
void ex_sleep_ms(long ms);
int64_t ex_wall_ms(void);

#endif
