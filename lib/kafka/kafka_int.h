/* SPDX-License-Identifier: Apache-2.0 */
/* Internals shared by the Kafka source, sink, transactional producer and
 * dead-letter queue: the per-job Kafka context (source positions per
 * checkpoint, shared producers, committed-offsets lookup), librdkafka
 * configuration from the job's kafka.* keys, and the consumed message. */
#ifndef SL_KAFKA_INT_H
#define SL_KAFKA_INT_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/log.h"
#include "operator.h"
#include "sluice/json.h"
#include "sluice/kafka.h"

struct sl_kafka_msg {
  const rd_kafka_message_t *m;
  const char *topic;
  struct json_t *json; /* the parsed value, once built (owned) */
  bool lazy; /* JSON codec: the value is valid JSON, parse on first use */
};

/* The message whose record is being emitted by a Kafka source subtask on
 * this thread (NULL otherwise); see sl_kafka_current(). */
extern _Thread_local const sl_kafka_msg_t *sl__kafka_cur;

/* One source position recorded at checkpoint `id` (for the transaction of
 * that checkpoint). member: the group member that read it (an index in
 * sl__kjob.members), -1 outside group mode. task: the partition is a
 * task of group mode held by this process, whose pointer names the
 * checkpoint pending before the transaction commits. */
typedef struct sl__kpos {
  uint64_t id;
  char *group, *topic;
  int32_t partition;
  int64_t offset;
  int member;
  bool task;
} sl__kpos;

typedef struct sl__kprod sl__kprod;
typedef struct sl__kpart_stat sl__kpart_stat;
typedef struct sl__ksink_stat sl__ksink_stat;
typedef struct sl__kdlq_stat sl__kdlq_stat;

/* Transaction commit latency buckets (seconds), as the metrics layer
 * registers sluice_kafka_transaction_commit_seconds. */
#define SL__KCOMMIT_BOUNDS                                                     \
  { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 }
#define SL__KCOMMIT_N 12

/* Everything Kafka that is shared by the instances of one job. Created
 * at graph-build time, freed with the job. */
typedef struct sl__kjob {
  sl_job_t *job;
  char *name; /* job name */
  pthread_mutex_t lock;
  sl__kpos *pos;
  size_t n_pos, cap_pos;
  char **src_uids; /* Kafka source uids, for restart resolution */
  size_t n_src;
  sl__kprod *plain; /* none/at_least_once sinks and the DLQ */
  sl__kprod *txn;   /* exactly_once sinks */
  sl__kprod *dlq;   /* plain, once the dead-letter queue was used */
  pthread_mutex_t dlq_lock;
  sl_kafka_committed_fn committed;
  void *committed_opaque;
  const sl_conf_t *conf; /* the job's */
  bool participant;      /* the exactly-once participant is registered */
  /* Group mode: the owners directory (owners.c), a service of the job
   * that frees it. */
  struct sl__kowners *owners;
  /* Group mode with repartition topics (repart.c): their names, one per
   * keyed stage, at the stage's index (sl__node.stage). */
  char **repart_topics;
  size_t n_repart;
  /* Group mode: this process's members of the consumer group (one per
   * Kafka source subtask), each registered while its consumer exists
   * (NULL after), so that the exactly-once commit can check that every
   * member still holds its assignment and send its offsets with its
   * group metadata (group.c). Indices are never reused; under lock. */
  struct sl__kgroup **members;
  size_t n_members, cap_members;
  /* Figures (stats.c), read at scrape time through the runtime's
   * reporter; the lists are guarded by stat_lock, the values are atomics
   * written by their owner. */
  pthread_mutex_t stat_lock;
  sl__kpart_stat *parts;
  sl__ksink_stat *sinks;
  sl__kdlq_stat *dlqs;
  /* Exactly-once commits, observed on the coordinator thread. */
  _Atomic uint64_t commit_buckets[SL__KCOMMIT_N + 1];
  _Atomic uint64_t commit_sum; /* bits of a double */
} sl__kjob;

/* The job's Kafka context, created on first use (graph-build time). */
sl__kjob *sl__kjob_get(sl_job_t *job);

/* Builds a librdkafka configuration: defaults (key, value pairs ending in
 * NULL) apply unless the job sets kafka.<key>; then every kafka.* key of
 * conf. SL_OK or SL_ERR_CONF with the message in err. */
int sl__kconf(const sl_conf_t *conf, const char *const *defaults,
              rd_kafka_conf_t **out, char *err, size_t errlen);
/* SL_OK when conf names at least one broker (kafka.bootstrap.servers or
 * kafka.metadata.broker.list), else SL_ERR_CONF with why in err: a client
 * without brokers would only retry for broker.timeout.ms. */
int sl__kconf_brokers(const sl_conf_t *conf, char *err, size_t errlen);
/* The value of kafka.<key> in conf, or NULL. */
const char *sl__kconf_get(const sl_conf_t *conf, const char *key);

/* Source positions per checkpoint. */
int sl__kpos_add(sl__kjob *kj, uint64_t id, const char *group,
                 const char *topic, int32_t partition, int64_t offset,
                 int member, bool task);
/* Drops the positions of checkpoints <= id. */
void sl__kpos_drop(sl__kjob *kj, uint64_t id);

/* Position blobs (a source subtask's snapshot): group, then (topic,
 * partition, next offset) entries; little-endian, with a magic. */
int sl__kpos_encode(sl_buf_t *out, const char *group, const char *const *topic,
                    const int32_t *partition, const int64_t *offset, size_t n);
typedef int (*sl__kpos_visit)(const char *group, const char *topic,
                              int32_t partition, int64_t offset, void *arg);
/* Calls visit for every entry; SL_ERR_CORRUPT for a malformed blob, or
 * the first non-zero return of visit. */
int sl__kpos_decode(const sl_blob_t *blob, sl__kpos_visit visit, void *arg);

/* A partition's event time at a checkpoint: its watermark generator's
 * highest timestamp (wm: the watermark a user generator emitted
 * instead), whether it was idle, whether it finished (its end-of-partition
 * marker was read, or its stop offset reached), and the stop offset of a
 * bounded source (bounded: end holds it). A blob may carry it after the
 * positions: u32 magic "SLKT", then per entry (in the same order) u64
 * max_ts and u8 flags (bit 0: idle, bit 1: finished, bit 2: wm; readers
 * ignore the others); then, only when some entry is bounded, u32 magic
 * "SLKE" and per entry an i64 stop offset (-1: none). Blobs without the
 * event time (written before it existed) decode with time NULL: the
 * partition starts from the minimum; blobs from before the finished bit
 * decode with finished false, and without "SLKE" unbounded. */
typedef struct sl__kpos_time {
  int64_t max_ts;
  bool idle;
  bool finished;
  bool wm;
  bool bounded;
  int64_t end;
} sl__kpos_time;
int sl__kpos_encode_time(sl_buf_t *out, const char *group,
                         const char *const *topic, const int32_t *partition,
                         const int64_t *offset, const sl__kpos_time *time,
                         size_t n);
typedef int (*sl__kpos_visit_time)(const char *group, const char *topic,
                                   int32_t partition, int64_t offset,
                                   const sl__kpos_time *time, void *arg);
int sl__kpos_decode_time(const sl_blob_t *blob, sl__kpos_visit_time visit,
                         void *arg);

/* ---- Figures (stats.c) ------------------------------------------------------
 * Kafka keeps its figures here; the metrics layer reads them when it is
 * scraped, through the reporter sl__kjob_get() registers with the runtime
 * (runtime/stats.h). Nothing here runs per record except plain stores. */

/* One assigned source partition, from its subtask's open to its close. */
struct sl__kpart_stat {
  sl__kpart_stat *next;
  char *source, *topic;
  int32_t partition;
  _Atomic int64_t offset, hw; /* -1: unknown */
};
/* NULL when out of memory (the partition then has no metrics). */
sl__kpart_stat *sl__kstats_partition(sl__kjob *kj, const char *source,
                                     const char *topic, int32_t partition);
/* offset: the next offset the source reads; high_watermark: the
 * partition's log end offset as last reported. Negative: not updated. */
void sl__kstats_partition_update(sl__kpart_stat *p, int64_t offset,
                                 int64_t high_watermark);
void sl__kstats_partition_remove(sl__kjob *kj, sl__kpart_stat *p);

/* One Kafka sink instance, for the life of the job (counts stay readable
 * after the run). delivered and failed are counted by delivery reports
 * (librdkafka's threads), held_bytes and blocked_ns by the instance. */
struct sl__ksink_stat {
  sl__ksink_stat *next;
  char *sink;
  int worker;
  _Atomic uint64_t delivered, failed;
  _Atomic uint64_t held_bytes, blocked_ns;
};
sl__ksink_stat *sl__kstats_sink(sl__kjob *kj, const char *sink, int worker);

/* A record of operator uid went to the dead-letter topic; reason is
 * "decode" or "user". */
void sl__kstats_dead_letter(sl__kjob *kj, const char *uid, const char *reason);
/* An exactly-once commit took seconds. */
void sl__kstats_commit(sl__kjob *kj, double seconds);
/* Registers kj's reporter (sl__kjob_get); frees the figures (kjob_free). */
int sl__kstats_init(sl__kjob *kj);
void sl__kstats_free(sl__kjob *kj);
/* Producer figures for the reporter (producer.c): messages in the queue,
 * and from librdkafka's statistics (kafka.statistics.interval.ms) request
 * retries and per-broker round trip and throttle time. */
typedef struct sl__kbroker_stat {
  int32_t id;
  double rtt_s, throttle_s;
} sl__kbroker_stat;
typedef struct sl__kprod_stat {
  bool live;       /* the client exists */
  int64_t queue;   /* rd_kafka_outq_len() */
  bool have_stats; /* statistics arrived at least once */
  uint64_t retries;
  sl__kbroker_stat brokers[16];
  size_t n_brokers;
} sl__kprod_stat;
void sl__kprod_stats(sl__kprod *p, sl__kprod_stat *out);

/* ---- JSON codec fast path (json_scan.c) ---------------------------------- */

#define SL__JPTR_MAX 16 /* tokens of a compiled pointer */

typedef struct sl__jtok {
  char s[256]; /* decoded, NUL-terminated; capped like sl_json_pointer() */
  size_t len;
  uint64_t index; /* as an array index; UINT64_MAX: none */
} sl__jtok;

/* An RFC 6901 pointer split into tokens once. */
typedef struct sl__jptr {
  sl__jtok tok[SL__JPTR_MAX];
  size_t n;
  bool never; /* not "" and not starting with '/': matches nothing */
} sl__jptr;

typedef enum sl__jkind {
  SL__J_NONE = 0, /* no value at the pointer */
  SL__J_STRING,   /* s, len: the raw bytes between the quotes */
  SL__J_INTEGER,  /* s, len: the number's text */
  SL__J_OTHER,
} sl__jkind;

typedef struct sl__jval {
  sl__jkind kind;
  const char *s;
  size_t len;
  bool esc; /* a string with escapes: decode with sl__junescape() */
} sl__jval;

/* SL_OK, or SL_ERR_INVAL for a pointer of more than SL__JPTR_MAX tokens
 * (then use jansson). */
int sl__jptr_compile(sl__jptr *p, const char *ptr);
/* Validates text as one JSON value (what jansson's json_loadb with
 * JSON_DECODE_ANY accepts) and sets out[j] to the value at ptrs[j]
 * (n <= 64; for a duplicate key the last one wins). 0, or -1 with
 * "invalid JSON: why (line L column C)" in err. No allocation. */
int sl__jscan(const void *text, size_t len, const sl__jptr *ptrs, size_t n,
              sl__jval *out, char *err, size_t errlen);
/* The document of a value the scanner accepts, by jansson; NULL with
 * je set when the scanner would reject it. jansson alone is not the
 * reference: it skips a NUL byte right after a number or literal
 * ("[1\0]" loads), which RFC 8259 and the scanner reject. */
json_t *sl__jload(const void *text, size_t len, json_error_t *je);
/* A JSON integer's text to int64; -1 when it does not fit. */
int sl__jint(const void *text, size_t len, int64_t *out);
/* Decodes a validated string's escapes into out (at least len bytes). */
int sl__junescape(const void *raw, size_t len, char *out, size_t *out_len);

/* ---- Producers (sink.c) -------------------------------------------------- */

/* Events of the transactional producer, recorded for tests. */
typedef enum sl__ktxn_event {
  SL__KTXN_INIT = 1,
  SL__KTXN_BEGIN,
  SL__KTXN_SEND_OFFSETS,
  SL__KTXN_COMMIT,
  SL__KTXN_ABORT,
} sl__ktxn_event;

/* The shared producer of a job (plain or transactional), created by the
 * first instance that opens it. */
sl__kprod *sl__kprod_acquire(sl__kjob *kj, bool txn, const sl_conf_t *conf,
                             char *err, size_t errlen);
void sl__kprod_release(sl__kprod *p);
/* Frees a producer at job destruction (NULL is a no-op). */
void sl__kprod_destroy(sl__kprod *p);
rd_kafka_t *sl__kprod_handle(sl__kprod *p);
/* The first delivery error, or NULL. */
const char *sl__kprod_error(sl__kprod *p);
/* Waits for every queued message; SL_OK or SL_ERR_KAFKA. */
int sl__kprod_flush(sl__kprod *p, char *err, size_t errlen);
/* Produces one message (copied); waits while librdkafka's queue is full.
 * hdrs is consumed (also on failure). */
int sl__kprod_send(sl__kprod *p, const char *topic, const void *key,
                   size_t key_len, const void *value, size_t value_len,
                   int64_t ts, rd_kafka_headers_t *hdrs, char *err,
                   size_t errlen);
/* The same with librdkafka's per-message opaque, which the delivery
 * report sees (&sl__kdlq_tag marks dead letters). */
int sl__kprod_sendv(sl__kprod *p, const char *topic, int32_t partition,
                    const void *key, size_t key_len, const void *value,
                    size_t value_len, int64_t ts, rd_kafka_headers_t *hdrs,
                    void *msg_opaque, char *err, size_t errlen);
/* Flushes the job's plain producer when it exists; SL_OK or
 * SL_ERR_KAFKA. */
int sl__kprod_flush_plain(sl__kjob *kj, char *err, size_t errlen);

/* The job's transactional producer (its client is created by the first
 * exactly_once sink that opens). NULL when out of memory. */
sl__kprod *sl__ktxn_get(sl__kjob *kj);

/* Exactly-once protocol steps (the job-wide participant): commit the open
 * transaction with the source offsets of checkpoint id and begin the
 * next one; or give up checkpoint id (the transaction continues). Called
 * on the coordinator thread. */
int sl__ktxn_commit(uint64_t id, void *kjob);
void sl__ktxn_abort(uint64_t id, void *kjob);
/* A revival (runtime/group.h), once the sinks of the run that ended
 * closed (their last one aborted the open transaction): the
 * transactional producer forgets its client and its failure, so the
 * first sink of the next run creates a new client, whose
 * init_transactions fences the old one's epoch; the positions of the
 * run's checkpoints are dropped. */
void sl__ktxn_restart(sl__kjob *kj);
/* Why the transactional producer failed (NULL: it did not). */
const char *sl__ktxn_error(void *kjob);
/* The offset group committed for topic[partition] (-1: none), from the
 * job's lookup (sl_kafka_set_committed_lookup) or else the cluster, and
 * into meta (metalen bytes; may be NULL) the metadata committed with it
 * ("": none). SL_OK or an error. */
int sl__ktxn_committed(sl__kjob *kj, const char *group, const char *topic,
                       int32_t partition, int64_t *offset, char *meta,
                       size_t metalen);
/* Whether the transaction of checkpoint pending (a task pointer's name
 * for it), which carried topic[partition] at pending_offset for group,
 * committed: 1 when the metadata committed with the group's offset names
 * it, 0 when it names another; without metadata, 1 iff the offset is
 * pending_offset. Or an error of the lookup. */
int sl__ktxn_pending_committed(sl__kjob *kj, const char *group,
                               const char *topic, int32_t partition,
                               const char *pending, int64_t pending_offset);
int sl__ktxn_resolve(uint64_t id, const char *const *uids,
                     const sl_blob_t *const *positions, const size_t *n,
                     size_t n_uids, void *kjob);
/* Highest checkpoint id whose records may be written into the open
 * transaction (see sink.c). */
uint64_t sl__ktxn_released(sl__kprod *p);
/* The protocol calls made so far (tests): copies up to cap events. */
size_t sl__ktxn_log(sl__kprod *p, sl__ktxn_event *ev, uint64_t *ids,
                    size_t cap);

/* Writer: what one sink instance does, independent of the runtime so that
 * the exactly-once protocol can be tested by direct calls. */
typedef struct sl__kwriter sl__kwriter;
sl__kwriter *sl__kwriter_new(sl__kprod *p, const char *topic, bool eos);
/* Delivery reports of the writer's records count in st (may be NULL). */
void sl__kwriter_set_stats(sl__kwriter *w, sl__ksink_stat *st);
/* exactly_once: a write that would hold more than max_held_bytes of key
 * and value bytes waits until the commit releases held output (0: no
 * bound); give_up(arg), asked while waiting, ends the wait with
 * SL_ERR_STOPPED (the job is failing). */
void sl__kwriter_set_limit(sl__kwriter *w, size_t max_held_bytes,
                           bool (*give_up)(void *arg), void *arg);
void sl__kwriter_free(sl__kwriter *w);
/* Writes each record to the partition Kafka's default partitioner gives
 * its key among partitions (murmur2, whatever kafka.partitioner says):
 * the repartition topic's contract. 0: the producer's partitioner. */
void sl__kwriter_set_partitions(sl__kwriter *w, int32_t partitions);
/* The job restored checkpoint id: its output continues epoch id (the
 * sluice.epoch header), so epochs are unique across runs. Before any
 * write. */
void sl__kwriter_resume(sl__kwriter *w, uint64_t id);
/* Writes (or, exactly_once after a barrier whose transaction is not yet
 * committed, holds) one record; hdrs consumed. */
int sl__kwriter_write(sl__kwriter *w, const sl_record_t *rec,
                      rd_kafka_headers_t *hdrs, char *err, size_t errlen);
/* Barrier id passed: at_least_once flushes; exactly_once starts holding. */
int sl__kwriter_barrier(sl__kwriter *w, uint64_t id, bool flush, char *err,
                        size_t errlen);
/* Writes held records whose transaction is now open. */
int sl__kwriter_drain(sl__kwriter *w, char *err, size_t errlen);
size_t sl__kwriter_held(const sl__kwriter *w);

/* ---- Repartition topics (repart.c) ----------------------------------------
 * Group mode's group.mode=repartition: a key_by crosses processes through
 * the topic <job>-<uid>-repartition (docs/scaling.md). */

/* The graph's split hook (graph.h): adds the internal sink and source
 * of key_by k's topic. */
struct sl__node;
sl_stream_t *sl__krepart_split(sl_job_t *job, const struct sl__node *k,
                               sl_stream_t *in, const char *uid, void *kjob);
/* Makes sure topic exists with group.partitions partitions: finds it,
 * or creates it through the admin API. SL_OK, or
 * SL_ERR_CONF for a topic with another partition count, SL_ERR_KAFKA
 * when it cannot be created or described; the reason in err. */
int sl__krepart_ensure(sl__kjob *kj, const sl_conf_t *conf, const char *topic,
                       char *err, size_t errlen);
/* Group mode: the keyed stage whose tasks topic's partitions are (the
 * index of the repartition topic; 0 for every topic without repartition
 * topics), or -1 for a topic upstream of them. */
int sl__ktask_stage(const sl__kjob *kj, const char *topic);
/* The task (runtime/tasks.h) of a partition: stage * group.partitions +
 * partition, or -1 when the partition is not a task. */
int64_t sl__ktask_of(const sl__kjob *kj, const char *topic, int32_t partition);
/* The internal source and sink (source.c, sink.c): a Kafka source whose
 * partitions are the group's tasks; a Kafka sink keying each record by
 * key_fn (NULL: its own key) and writing it to the murmur2 partition of
 * that key among partitions, at least once, or in the job's transactions
 * when its sinks are exactly_once and it has a task store. */
sl_stream_t *sl__ksource_new(sl_job_t *job, const char *uid, const char *topics,
                             const sl_kafka_source_opts_t *opts, bool repart);
int sl__ksink_repart(sl_stream_t *in, const char *uid, const char *topic,
                     sl_key_fn key_fn, void *key_opaque, int32_t partitions);

/* ---- Dead-letter queue (dlq.c) ------------------------------------------- */

/* Installs the job's error.policy=dlq hook (idempotent). */
void sl__kdlq_install(sl__kjob *kj);
/* Flushes dead-letter records written so far; SL_OK or SL_ERR_KAFKA. */
int sl__kdlq_flush(sl__kjob *kj, char *err, size_t errlen);
/* The msg_opaque of every dead letter. */
extern char sl__kdlq_tag;
/* From a delivery report (librdkafka's callback thread): a dead letter
 * the broker refused as too large is produced again, smaller, with
 * headers saying so. True when the retry is queued (the failure is
 * handled); false for any other message or error. */
bool sl__kdlq_redeliver(const sl__kjob *kj, rd_kafka_t *rk,
                        const rd_kafka_message_t *m);

/* Calls a user headers callback with librdkafka's header list. */
int sl__kheaders_call(sl_kafka_headers_fn fn, sl_ctx_t *ctx,
                      const sl_record_t *rec, rd_kafka_headers_t *h,
                      void *opaque);

/* A log line of component "kafka" through the job's log (log.level, the
 * host's callback or stderr); kj NULL: stderr at the default level. */
void sl__klog(const sl__kjob *kj, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
