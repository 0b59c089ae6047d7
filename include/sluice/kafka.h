/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/kafka.h — Kafka source and sink (librdkafka), the raw and JSON
 * codecs, access to a consumed message's headers, and the hooks of the
 * exactly-once protocol that tests and custom offset stores plug into.
 * docs/kafka.md explains the delivery guarantees and their limits. */
#ifndef SLUICE_KAFKA_H
#define SLUICE_KAFKA_H

#include <stdbool.h>

#include "sluice/job.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Consumed messages -------------------------------------------------- */

/* A message as the Kafka source read it: borrowed, valid only during the
 * callback that received it. */
typedef struct sl_kafka_msg sl_kafka_msg_t;

SL_API const char *sl_kafka_msg_topic(const sl_kafka_msg_t *m);
SL_API int32_t sl_kafka_msg_partition(const sl_kafka_msg_t *m);
SL_API int64_t sl_kafka_msg_offset(const sl_kafka_msg_t *m);
/* The message timestamp in ms (CreateTime or LogAppendTime), or -1. */
SL_API int64_t sl_kafka_msg_timestamp(const sl_kafka_msg_t *m);
/* Key and value bytes (NULL and 0 when absent). */
SL_API void sl_kafka_msg_key(const sl_kafka_msg_t *m, const void **key,
                             size_t *len);
SL_API void sl_kafka_msg_value(const sl_kafka_msg_t *m, const void **value,
                               size_t *len);
/* Headers in the order they were written. header_at returns SL_OK or
 * SL_ERR_NOTFOUND past the end; header returns the last header named name
 * (SL_ERR_NOTFOUND if none). A header without a value has *value NULL. */
SL_API size_t sl_kafka_msg_header_count(const sl_kafka_msg_t *m);
SL_API int sl_kafka_msg_header_at(const sl_kafka_msg_t *m, size_t i,
                                  const char **name, const void **value,
                                  size_t *len);
SL_API int sl_kafka_msg_header(const sl_kafka_msg_t *m, const char *name,
                               const void **value, size_t *len);
/* The JSON codec's parsed document: sl_kafka_msg_json() in sluice/json.h. */

/* The Kafka message the current record came from, for user functions of
 * operators chained directly after a Kafka source (no key_by in between):
 * records carry only {key, value, ts} through exchanges, so headers,
 * offsets and the parsed JSON are reachable only on the source's thread.
 * NULL anywhere else (after a key_by, in timers, for records of other
 * sources). Thread: the callback's. */
SL_API const sl_kafka_msg_t *sl_kafka_current(const sl_ctx_t *ctx);

/* ---- Source ------------------------------------------------------------- */

typedef enum sl_kafka_start {
  SL_KAFKA_START_DEFAULT = 0, /* the job's source.startup.mode */
  SL_KAFKA_START_EARLIEST,
  SL_KAFKA_START_LATEST,
  SL_KAFKA_START_COMMITTED, /* the group's committed offsets, else earliest */
  SL_KAFKA_START_TIMESTAMP, /* first offset with timestamp >= start_ts_ms */
} sl_kafka_start;

/* Where a bounded Kafka source stops (Flink's KafkaSource.setBounded):
 * each partition is read up to, not including, its stop offset, then
 * finished, as by an end marker (sl_kafka_source_opts_t.is_end). */
typedef enum sl_kafka_stop {
  SL_KAFKA_STOP_NONE = 0,  /* unbounded (unless is_end) */
  SL_KAFKA_STOP_LATEST,    /* the partitions' end offsets when it started */
  SL_KAFKA_STOP_OFFSETS,   /* stop_offsets; partitions not listed: latest */
  SL_KAFKA_STOP_TIMESTAMP, /* the first offset whose message timestamp is
                              >= stop_ts_ms; partitions without one:
                              latest */
} sl_kafka_stop;

/* A partition's offset (SL_KAFKA_STOP_OFFSETS: the first offset not read). */
typedef struct sl_kafka_offset {
  const char *topic;
  int32_t partition;
  int64_t offset;
} sl_kafka_offset_t;

typedef enum sl_kafka_codec {
  SL_KAFKA_RAW = 0, /* key, value and timestamp of the message as they are */
  SL_KAFKA_JSON,    /* the value must be JSON; parsed once per message */
} sl_kafka_codec;

/* Turns a message into a record (a user codec). out's bytes may point
 * into the message or into memory of the callback valid until its next
 * call on the same subtask. Return 0 to emit out, 1 to drop the message,
 * or a negative error after writing the reason into err: the message is
 * bad input (error.policy: fail, skip, or the dead-letter topic). Runs on
 * the source subtask's worker thread. */
typedef int (*sl_kafka_decode_fn)(const sl_kafka_msg_t *msg, sl_record_t *out,
                                  char *err, size_t errlen, void *opaque);

/* Says whether a decoded record is the end of its partition (Flink's
 * DeserializationSchema.isEndOfStream): msg is the message (headers, the
 * JSON codec's document through sl_kafka_msg_json()), rec the record the
 * codec or decode made of it, with its final event time. Return true for
 * an end-of-partition marker: it is not emitted and its partition is
 * finished (see sl_kafka_source_opts_t.is_end). Runs on the source
 * subtask's worker thread, for every record that decoded; it must not
 * fail (a malformed record is decode's to reject). */
typedef bool (*sl_kafka_end_fn)(const sl_kafka_msg_t *msg,
                                const sl_record_t *rec, void *opaque);

typedef struct sl_kafka_source_opts {
  /* Consumer group for committed offsets (start position `committed`,
   * lag monitoring, exactly-once). NULL: kafka.group.id, else
   * "sluice-<job name>". */
  const char *group_id;
  sl_kafka_start start;
  int64_t start_ts_ms; /* SL_KAFKA_START_TIMESTAMP */
  sl_kafka_codec codec;
  /* JSON codec: JSON pointers (RFC 6901, "/user/id") to the key (string
   * or integer; NULL keeps the message key) and to the event time
   * (integer ms; NULL keeps the message timestamp). */
  const char *key_pointer;
  const char *ts_pointer;
  /* A user codec; replaces codec when set. */
  sl_kafka_decode_fn decode;
  void *decode_opaque;
  /* Bounded input: when set, a record for which is_end returns true
   * finishes its partition. The marker is not emitted, but its event time
   * counts for the partition's watermark as the record's would; the
   * partition is not read any further (records after the marker are
   * never emitted), no longer holds the subtask's watermark back, and is
   * recorded as finished in checkpoints. A subtask whose partitions have
   * all finished ends (SL_POLL_END: the maximum watermark fires every
   * window and timer), and so does at once a subtask without partitions;
   * the job ends by itself once every subtask of every source has ended.
   * NULL (the default) and no stop (below): the input never ends. */
  sl_kafka_end_fn is_end;
  void *is_end_opaque;
  /* Bounded input by position: stop offsets are resolved once for every
   * partition, when the first subtask of the source opens (latest: each
   * partition's high watermark then; timestamp: the broker's offset for
   * stop_ts_ms, and the first message at or past it met while reading),
   * and kept in checkpoints, so a restored job stops where the first run
   * would have, whatever was written since. A partition whose position
   * reaches its stop offset finishes exactly as after an end marker (with
   * is_end set too, whichever comes first). Resolved at or below the
   * start position: finished at once, nothing read. */
  sl_kafka_stop stop;
  int64_t stop_ts_ms;                    /* SL_KAFKA_STOP_TIMESTAMP */
  const sl_kafka_offset_t *stop_offsets; /* SL_KAFKA_STOP_OFFSETS (copied) */
  size_t n_stop_offsets;
} sl_kafka_source_opts_t;

/* A Kafka source reading the comma-separated topics. It runs one subtask
 * per worker; the partitions of all topics, sorted by topic and
 * partition, are dealt round-robin to the subtasks (partition i of the
 * sorted list to subtask i % P). Each subtask starts at the checkpoint's
 * positions for its partitions when the job restores, else at opts->start.
 * Event time is the message timestamp unless the codec or decode sets
 * another, or the stream's watermark spec has a timestamp assigner;
 * watermarks and idleness (sl_with_watermarks) are tracked per partition
 * and the subtask emits the minimum over its non-idle, unfinished
 * partitions; a user generator (SL_WM_CUSTOM) runs one instance per
 * partition, and watermark alignment (align_drift_ms) pauses partitions
 * ahead. Checkpoints record each partition's next offset, event time,
 * idleness, whether it finished (opts->is_end, opts->stop) and its stop
 * offset; a restore
 * resumes them whatever subtask now owns the partition, and a finished
 * partition is not read again (also by a job without is_end).
 * In group mode (group.mode=copartitioned or repartition,
 * docs/scaling.md) the partitions are not dealt by the job: each subtask
 * is a member of the consumer group and reads what the group assigns it,
 * and the subtask runs until the job stops; with copartitioned every
 * topic must have group.partitions partitions, with repartition any
 * count (the job's key_by then crosses processes through a repartition
 * topic, and this source feeds it). With checkpoint.dir a partition
 * whose task moved here starts its user generator at the watermark the
 * task's snapshot recorded, and the source sends the keyed stage the
 * task's watermark while the partition lags (docs/scaling.md).
 * Consumer settings come from the job's kafka.* keys. opts may be NULL;
 * it and its strings are copied. Returns the stream or NULL (error in the
 * job). */
SL_API sl_stream_t *sl_source_kafka(sl_job_t *job, const char *uid,
                                    const char *topics,
                                    const sl_kafka_source_opts_t *opts);

/* ---- Sink --------------------------------------------------------------- */

typedef enum sl_kafka_delivery {
  SL_KAFKA_DELIVERY_DEFAULT = 0, /* the job's sink.delivery.guarantee */
  SL_KAFKA_NONE,                 /* fire and forget (errors still fail) */
  SL_KAFKA_AT_LEAST_ONCE,        /* flush on every checkpoint barrier */
  SL_KAFKA_EXACTLY_ONCE,         /* one transaction per checkpoint epoch */
} sl_kafka_delivery;

/* Headers of a record being written; see sl_kafka_sink_opts_t.headers. */
typedef struct sl_kafka_headers sl_kafka_headers_t;
/* Adds a header (value copied; NULL value = header without value).
 * SL_OK or SL_ERR_NOMEM. */
SL_API int sl_kafka_headers_add(sl_kafka_headers_t *h, const char *name,
                                const void *value, size_t len);

/* Computes the headers of the record written for rec; non-zero is a user
 * error (error.policy). Runs on the sink instance's worker thread. */
typedef int (*sl_kafka_headers_fn)(sl_ctx_t *ctx, const sl_record_t *rec,
                                   sl_kafka_headers_t *h, void *opaque);

typedef struct sl_kafka_sink_opts {
  sl_kafka_delivery delivery;
  /* Copy the headers of the consumed message when the sink is chained
   * directly after a Kafka source (see sl_kafka_current()). */
  bool copy_headers;
  sl_kafka_headers_fn headers;
  void *headers_opaque;
} sl_kafka_sink_opts_t;

/* Writes every record to topic: key and value bytes, the record's
 * timestamp as CreateTime (none when ts < 0), headers from opts. The
 * partition is librdkafka's murmur2_random (the Java client's default
 * for keyed records) unless kafka.partitioner says otherwise. Producer
 * settings come from the job's kafka.* keys. A delivery error fails the
 * job (after librdkafka's retries, within kafka.message.timeout.ms, by
 * default broker.timeout.ms). exactly_once: every sink of the job shares
 * one transactional producer (transactional.id =
 * sink.transactional.id.prefix + "-" + job name); each record carries
 * the header sluice.epoch = id of the last checkpoint barrier before it
 * (after a restore from checkpoint N, N until the run's first barrier, so
 * the value names one epoch across runs). opts
 * may be NULL. Returns SL_OK or an error (recorded in the job). */
SL_API int sl_sink_kafka(sl_stream_t *in, const char *uid, const char *topic,
                         const sl_kafka_sink_opts_t *opts);

/* ---- Exactly-once restart resolution ------------------------------------ */

/* Reads the offset a consumer group committed for a partition: *offset
 * is the next offset to read, or -1 when the group committed none;
 * metadata (metadata_size bytes, at least 1, "" on entry) receives the
 * metadata committed with it, NUL-terminated and cut to fit, or stays ""
 * when there is none or it is not known. An exactly_once job commits the
 * name of the checkpoint whose transaction carries the offset as its
 * metadata (instances/<instance>/chk-<id>, as task pointers name it), and
 * a group-mode job resolves a task's pending checkpoint by it
 * (docs/scaling.md); without metadata it compares offsets. Returns SL_OK
 * or an error (the restore fails). */
typedef int (*sl_kafka_committed_fn)(const char *group_id, const char *topic,
                                     int32_t partition, int64_t *offset,
                                     char *metadata, size_t metadata_size,
                                     void *opaque);

/* Replaces how an exactly_once job reads the consumer group's committed
 * offsets when it resolves a checkpoint whose transaction may or may not
 * have committed (docs/kafka.md): for tests (librdkafka's mock cluster
 * drops offsets sent with a transaction) and for offsets kept elsewhere.
 * In group mode it is also asked, on the worker thread of the source
 * subtask, where a partition starts that the group assigns upstream of an
 * exactly-once repartition topic (docs/scaling.md; -1: where the consumer
 * would start by itself). Before sl_job_run(). SL_OK, SL_ERR_INVAL or
 * SL_ERR_NOMEM. */
SL_API int sl_kafka_set_committed_lookup(sl_job_t *job,
                                         sl_kafka_committed_fn fn,
                                         void *opaque);

#ifdef __cplusplus
}
#endif
#endif
