/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/job.h — building and running a job: sources, stateless
 * transformations, key_by, union, side outputs, sinks, and the context that
 * user callbacks receive. */
#ifndef SLUICE_JOB_H
#define SLUICE_JOB_H

#include <stdbool.h>

#include "sluice/common.h"
#include "sluice/conf.h"
#include "sluice/time.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_job sl_job_t;
typedef struct sl_stream sl_stream_t;
typedef struct sl_ctx sl_ctx_t;
typedef struct sl_source_ctx sl_source_ctx_t;

/* Bytes handed to a callback (borrowed for the call). */
typedef struct sl_blob {
  const void *data;
  size_t len;
} sl_blob_t;

/* A growable byte buffer owned by the runtime, for snapshots. */
typedef struct sl_buf sl_buf_t;
/* Appends n bytes; SL_OK or SL_ERR_NOMEM. */
SL_API int sl_buf_append(sl_buf_t *buf, const void *data, size_t n);

/* ---- Job lifecycle ------------------------------------------------------ */

/* Creates a job. conf may be NULL (all defaults); on success the job owns
 * conf (do not use or destroy it afterwards); on failure the caller keeps
 * it, NULL is returned and err holds the reason (e.g. parallelism greater
 * than max.parallelism). */
SL_API sl_job_t *sl_job_new(const char *name, sl_conf_t *conf, char *err,
                            size_t errlen);

/* Frees the job and every stream handle it returned. Must not be called
 * while sl_job_run() is executing. NULL is a no-op. */
SL_API void sl_job_destroy(sl_job_t *job);

/* Uses clock for processing time instead of the system clock. The job
 * borrows clock, which must outlive it. Only before sl_job_run(). */
SL_API int sl_job_set_clock(sl_job_t *job, sl_clock_t *clock);

/* Validates the graph, starts `parallelism` worker threads and blocks until
 * every source has ended and all records are processed, sl_job_stop() was
 * called and in-flight records drained, or the job failed. Can be called
 * once per job. Returns SL_OK, the first graph-building error (SL_ERR_GRAPH,
 * SL_ERR_INVAL...), or the error that failed the job (SL_ERR_USER,
 * SL_ERR_DECODE, SL_ERR_IO...); sl_job_errmsg() says what happened. In
 * group mode a process fenced by its consumer group (docs/scaling.md)
 * starts its run over on this thread, within group.revive.max, instead of
 * returning (the workers and the consumers are new, the job stays). */
SL_API int sl_job_run(sl_job_t *job);

/* Asks a running job to stop: sources stop reading, records already read
 * are processed, then sl_job_run() returns SL_OK. Unlike the end of input,
 * a stop does not advance the watermark to the maximum (so open event-time
 * windows do not fire), as with Flink's stop without drain. Thread-safe and
 * async-signal-safe; may be called before or during sl_job_run(). */
SL_API void sl_job_stop(sl_job_t *job);

/* Stops a running job with drain (Flink's stop --drain): as sl_job_stop(),
 * but every source subtask advances its watermark to the maximum before
 * it ends, so every event-time window fires and every event-time timer
 * runs before the final checkpoint (checkpoint.final). Its sources are
 * not recorded as ended: a job restored from that checkpoint reads on
 * from their positions. Processing-time timers do not fire. Called after
 * sl_job_stop(), it turns the stop into a drain for the sources that have
 * not ended yet; sl_job_stop() after it keeps the drain. Thread-safe and
 * async-signal-safe; may be called before or during sl_job_run(). */
SL_API void sl_job_stop_drain(sl_job_t *job);

/* The message of the job's first error, "" if none. Valid until the job is
 * destroyed. */
SL_API const char *sl_job_errmsg(const sl_job_t *job);

/* Per-operator counters, summed over workers. Safe to call from any thread
 * while the job runs (values may lag slightly). */
typedef struct sl_op_stats {
  uint64_t records_in;
  uint64_t records_out;
  /* Records a user function or the input rejected that did not fail the
   * job: skipped under error.policy=skip, written to the dead-letter
   * topic under error.policy=dlq. */
  uint64_t errors;
  uint64_t late_dropped;
  int64_t watermark; /* lowest current input watermark over workers */
} sl_op_stats_t;

/* Fills *out for the operator with the given uid. SL_ERR_NOTFOUND for an
 * unknown uid. */
SL_API int sl_job_op_stats(sl_job_t *job, const char *uid, sl_op_stats_t *out);

/* ---- Context for user callbacks ---------------------------------------- */

/* Emits a record downstream (main output). The record is copied or consumed
 * before the call returns, so rec may point to stack or reused memory.
 * Returns 0, or a negative sl_err if the job is failing (just return it). */
SL_API int sl_emit(sl_ctx_t *ctx, const sl_record_t *rec);

/* Emits a record to the side output named tag (see sl_side_output()). A tag
 * that no stream consumes drops the record. */
SL_API int sl_emit_to(sl_ctx_t *ctx, const char *tag, const sl_record_t *rec);

/* Scratch memory valid until the callback returns: for building an output
 * record's bytes without a malloc per record. NULL when out of memory. */
SL_API void *sl_ctx_alloc(sl_ctx_t *ctx, size_t size);

/* Current watermark of the operator's input (SL_TS_MIN before the first). */
SL_API int64_t sl_ctx_watermark(const sl_ctx_t *ctx);

/* Processing time from the job's clock. */
SL_API int64_t sl_ctx_now(const sl_ctx_t *ctx);

/* Per-instance data. An operator runs as one instance per worker, all
 * sharing the opaque pointer given when the job was built; what belongs to
 * one instance (state handles from sl_state_register(), buffers) is kept
 * here, typically set in open() and freed in close(). NULL until set. */
SL_API void sl_ctx_set_local(sl_ctx_t *ctx, void *data);
SL_API void *sl_ctx_local(const sl_ctx_t *ctx);

/* Index of the worker running this callback (0..parallelism-1) and the
 * job's parallelism. */
SL_API int sl_ctx_worker(const sl_ctx_t *ctx);
SL_API int sl_ctx_parallelism(const sl_ctx_t *ctx);

/* Rejects the record the callback is handling, saying why, and returns
 * SL_ERR_USER for the callback to return:
 *
 *   if (!parse_amount(rec, &cents))
 *     return sl_ctx_reject(ctx, "amount \"%.*s\" is not a number", n, p);
 *
 * The error goes through error.policy like any non-zero return, with the
 * reason (printf format, cut to 255 bytes) in place of the generic "user
 * function of <uid> returned -6": under dlq it is the dead letter's
 * sluice.error header; under fail it ends the job's error message
 * (sl_job_errmsg()); under skip the record is counted in errors. The
 * reason belongs to the next error of this operator instance, so a
 * callback that rejects must return the error (a reason left behind by a
 * callback that returned 0 would name a later error). Thread: the
 * callback's. */
#if defined(__GNUC__)
#define SL__PRINTF_2_3 __attribute__((format(printf, 2, 3)))
#else
#define SL__PRINTF_2_3
#endif
SL_API int sl_ctx_reject(sl_ctx_t *ctx, const char *fmt, ...) SL__PRINTF_2_3;

/* ---- Sources ------------------------------------------------------------ */

/* Return values of sl_source_ops_t.poll. Negative values are errors. */
enum {
  SL_POLL_MORE = 0,  /* more records may follow immediately */
  SL_POLL_EMPTY = 1, /* nothing available right now; poll again later */
  SL_POLL_END = 2,   /* the source is finished */
};

/* A user source. Every callback runs on the worker thread that owns the
 * subtask. With parallel = true there is one subtask per worker (each gets
 * its index from sl_source_ctx_subtask()); otherwise only worker 0 runs it.
 * open and close are optional; close runs whenever open ran, even if open
 * failed. poll emits records with sl_source_emit(); it
 * should emit at most sl_source_ctx_budget() records per call so the worker
 * can serve its other inputs. */
typedef struct sl_source_ops {
  int (*open)(sl_source_ctx_t *ctx, void *opaque);
  int (*poll)(sl_source_ctx_t *ctx, void *opaque);
  void (*close)(sl_source_ctx_t *ctx, void *opaque);
  bool parallel;

  /* Checkpoints (all optional; a source without snapshot starts from its
   * beginning after a restore, so the job is not exactly-once).
   * snapshot  on the subtask's worker, between two polls, when the
   *           checkpoint's barrier is emitted: appends the subtask's
   *           position (everything emitted so far, nothing more) to out
   *           with sl_buf_append(). Non-zero fails the checkpoint.
   * restore   before open, when the job starts from a checkpoint: the
   *           positions of every subtask of this source (uid) in the
   *           checkpoint, whatever the parallelism was then (Flink's union
   *           redistribution), so each subtask takes what is its own
   *           (e.g. the partitions it is assigned). n may be 0 (the source
   *           is new in the job). Non-zero fails the job. The subtask's
   *           watermark generator (highest timestamp, idleness) is
   *           restored with it and forwarded before the first record.
   * checkpoint_complete  on the worker, once checkpoint id is durable
   *           (its metadata written): e.g. commit offsets to a consumer
   *           group for monitoring. Errors here are logged, not fatal. */
  int (*snapshot)(sl_source_ctx_t *ctx, uint64_t id, sl_buf_t *out,
                  void *opaque);
  int (*restore)(sl_source_ctx_t *ctx, const sl_blob_t *positions, size_t n,
                 void *opaque);
  void (*checkpoint_complete)(sl_source_ctx_t *ctx, uint64_t id, void *opaque);
} sl_source_ops_t;

/* Emits one record from poll. The record and its bytes are copied before
 * the call returns, so rec may point to reused memory. During poll the
 * copy goes into a batch the runtime owns, which travels downstream as a
 * whole when it holds batch.size records, before any watermark, idleness
 * change or barrier of the source, and when poll returns; operators read
 * it in one loop each. Records reach every operator in the order they were
 * emitted, and control elements fall between the same records as if each
 * record had been handed on at once. 0, or a negative sl_err to return
 * from poll (the job is failing). */
SL_API int sl_source_emit(sl_source_ctx_t *ctx, const sl_record_t *rec);
/* Emits recs[0..n) from poll, in order: the same as n calls of
 * sl_source_emit(), for a source that already holds its records in an
 * array (pre-read events, a consumed batch of messages). The records and
 * their bytes are borrowed for the call only and are handed downstream
 * without a copy, in batches of at most batch.size records. 0, or a
 * negative sl_err (SL_ERR_INVAL for recs NULL with n > 0). */
SL_API int sl_source_emit_batch(sl_source_ctx_t *ctx, const sl_record_t *recs,
                                size_t n);
SL_API int sl_source_ctx_subtask(const sl_source_ctx_t *ctx);
SL_API int sl_source_ctx_subtasks(const sl_source_ctx_t *ctx);
SL_API size_t sl_source_ctx_budget(const sl_source_ctx_t *ctx);
/* Reports a malformed input (where = e.g. "file.jsonl:12") to the job's
 * error.policy: returns 0 if the record is to be skipped (and counts it),
 * or a negative error to return from poll when the job fails. */
SL_API int sl_source_bad_input(sl_source_ctx_t *ctx, const char *where,
                               const char *why);

/* Fails the job from a source callback with a message (the source's uid
 * is prepended), e.g. when the input cannot be opened. Returns err (or the
 * job's first error), for the callback to return. */
SL_API int sl_source_fail(sl_source_ctx_t *ctx, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adds a user source. opaque is passed to every callback; the job does not
 * own it. Returns the source's stream, or NULL on error (see
 * sl_job_errmsg(); sl_job_run() will return the error too). */
SL_API sl_stream_t *sl_source(sl_job_t *job, const char *uid,
                              const sl_source_ops_t *ops, void *opaque);

/* Sets the watermark strategy of a source stream (Flink's
 * fromSource(..., WatermarkStrategy)); each source subtask runs its own
 * generator. Returns src, or NULL when src is not a source. */
SL_API sl_stream_t *sl_with_watermarks(sl_stream_t *src,
                                       const sl_watermark_spec_t *spec);

/* Generator source: record i (0 <= i < count, count 0 = unbounded) is made
 * by gen(i, &rec, opaque); rec's bytes must stay valid until the next call
 * on the same worker. With parallel, worker w makes i = w, w+P, ... */
typedef int (*sl_gen_fn)(uint64_t i, sl_record_t *out, void *opaque);
typedef struct sl_generator_opts {
  uint64_t count;
  sl_gen_fn gen;
  void *opaque;
  bool parallel;
} sl_generator_opts_t;
SL_API sl_stream_t *sl_source_generator(sl_job_t *job, const char *uid,
                                        const sl_generator_opts_t *opts);

/* JSON-lines file source (one reader, on worker 0): each line is one record
 * whose value is the line's bytes. key_field and ts_field, when set, name a
 * top-level member (or a JSON pointer starting with '/') used as the key
 * (strings as their bytes, numbers in decimal) and as the event time
 * (integer ms). A line that is not a JSON object, or lacks a required field,
 * is malformed input and goes to error.policy, with file:line in the
 * message. Blank lines are ignored. */
typedef struct sl_jsonl_source_opts {
  const char *key_field;
  const char *ts_field;
} sl_jsonl_source_opts_t;
SL_API sl_stream_t *sl_source_jsonl(sl_job_t *job, const char *uid,
                                    const char *path,
                                    const sl_jsonl_source_opts_t *opts);

/* ---- Transformations ---------------------------------------------------- */

/* map: out starts as a copy of *in (bytes borrowed from in); the function
 * may change any field, pointing bytes at in, at its own memory valid until
 * the next call, or at sl_ctx_alloc() memory. Non-zero return = error. */
typedef int (*sl_map_fn)(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                         void *opaque);
/* filter: returns 1 to keep the record, 0 to drop it, negative on error. */
typedef int (*sl_filter_fn)(sl_ctx_t *ctx, const sl_record_t *rec,
                            void *opaque);
/* flat_map and sinks: emit any number of records with sl_emit(); non-zero
 * return = error. */
typedef int (*sl_record_fn)(sl_ctx_t *ctx, const sl_record_t *rec,
                            void *opaque);
/* key_by: sets *key and *key_len to the record's key bytes (pointing into rec,
 * or to memory valid until the next call on this worker). */
typedef int (*sl_key_fn)(const sl_record_t *rec, const void **key,
                         size_t *key_len, void *opaque);

SL_API sl_stream_t *sl_map(sl_stream_t *in, const char *uid, sl_map_fn fn,
                           void *opaque);
SL_API sl_stream_t *sl_filter(sl_stream_t *in, const char *uid, sl_filter_fn fn,
                              void *opaque);
SL_API sl_stream_t *sl_flat_map(sl_stream_t *in, const char *uid,
                                sl_record_fn fn, void *opaque);

/* Partitions by key: records with equal keys reach the same worker, in the
 * order they left each upstream worker. key_group = hash(key) % K and
 * worker = key_group * P / K. fn NULL keys by the record's own key; else
 * the output record's key is what fn returned. Returns a keyed stream. */
SL_API sl_stream_t *sl_key_by(sl_stream_t *in, sl_key_fn fn, void *opaque);

/* Merges n streams (n >= 2) into one operator named uid; its watermark is
 * the minimum over the non-idle inputs. uid names it as any operator's
 * does (sl_job_op_stats(), metrics labels; unique in the job); NULL
 * gives "union#<node number>". Returns the merged stream or NULL (error
 * in the job). */
SL_API sl_stream_t *sl_union(sl_stream_t *const *streams, size_t n,
                             const char *uid);

/* The side output `tag` of an operator's stream (records emitted with
 * sl_emit_to(ctx, tag, ...)). Watermarks flow to side outputs too. */
SL_API sl_stream_t *sl_side_output(sl_stream_t *op, const char *tag);

/* ---- Sinks -------------------------------------------------------------- */

/* User sink: fn is called for every record on the worker that holds it, so
 * with parallelism > 1 it runs concurrently from several threads. */
SL_API int sl_sink(sl_stream_t *in, const char *uid, sl_record_fn fn,
                   void *opaque);

/* How the JSON-lines and stdout sinks write a record. VALUE writes the
 * value bytes as the line; ENVELOPE writes {"key":..,"ts":..,"value":..}
 * where key and value are embedded as JSON when they parse, else as
 * strings. */
typedef enum sl_line_format {
  SL_LINE_VALUE = 0,
  SL_LINE_ENVELOPE,
} sl_line_format;

/* Appends records as lines to path (created or truncated when the job
 * starts). Lines from different workers never interleave. */
SL_API int sl_sink_jsonl(sl_stream_t *in, const char *uid, const char *path,
                         sl_line_format format);
SL_API int sl_sink_stdout(sl_stream_t *in, const char *uid,
                          sl_line_format format);

#ifdef __cplusplus
}
#endif
#endif
