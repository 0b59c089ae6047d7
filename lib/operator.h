/* SPDX-License-Identifier: Apache-2.0 */
/* The operator plug-in interface: everything an operator (map, keyed
 * process, window, sink...) needs from the runtime, and the table of
 * functions the runtime calls on it. They never reach into the runtime's
 * structures.
 *
 * The operator SDK is this header plus, for keyed operators, the keyed
 * tier (the layer table of docs/architecture.md checks it):
 *   runtime/keyed.h  a batch of keyed records with prefetch, timers fired
 *                    with their key made current, opening keyed state;
 *   state/state.h    keyed state on the sl__keyed context (state/keyed.h)
 *                    and the backend contract (state/backend.h), for
 *                    operators that lay out their own state (windows);
 *   time/timers.h    the timer service of a keyed context;
 *   lib/core         helpers (core/util.h, core/hash.h).
 * Nothing else of lib/: no _int.h header of another folder, no runtime
 * structure (runtime/runtime.h). */
#ifndef SL_OPERATOR_H
#define SL_OPERATOR_H

#include <stdbool.h>

#include "sluice.h"

/* A record from sl_key_by() with its key's 64-bit hash (hashed once, by
 * the exchange; state backends and timers never hash the key again) and
 * key group. */
typedef struct sl_keyed_rec {
  sl_record_t rec;
  uint64_t hash;
  uint32_t kg;
} sl_keyed_rec_t;

/* An operator's step (sl_operator_ops_t.step): a user function of one
 * of the public API's three per-record shapes, which the runtime calls
 * straight from its loop. */
typedef enum sl_step_kind {
  SL_STEP_MAP = 1, /* sl_map_fn: one record out */
  SL_STEP_FILTER,  /* sl_filter_fn: the record on, or none */
  SL_STEP_CONSUME, /* sl_record_fn: none (a sink) */
} sl_step_kind_t;
typedef struct sl_step {
  sl_step_kind_t kind;
  void *fn;
  void *opaque;
} sl_step_t;

/* What a step hands on. */
enum { SL_STEP_NONE = 0, SL_STEP_OUT = 1, SL_STEP_IN = 2 };

/* One operator instance on one worker. Every callback below receives the
 * instance as an sl_ctx_t, the same handle user callbacks get, so an
 * operator passes it straight through to user code. */
typedef struct sl_operator_ops {
  const char *kind; /* "map", "process", ... for messages */
  bool keyed;       /* every input must come straight from sl_key_by() */
  /* The last input is a broadcast stream (sl_broadcast()), the others
   * keyed; its records reach process_keyed with hash and key group 0. */
  bool broadcast_in;

  /* Creates the instance's data (sl_op_set_data) from sl_op_arg(). */
  int (*open)(sl_ctx_t *op);
  /* One record on input `port` (the index of the input stream). */
  int (*process)(sl_ctx_t *op, int port, const sl_record_t *rec);
  /* Optional: recs[0..n) on input `port`, in order — what n calls of
   * process would do, as one loop. The records (and their bytes) are
   * borrowed for the call. Sources hand their records on in batches
   * (sl_source_emit appends to one), and a batch reaches an operator this
   * way when it is the only reader of its input; operators without it get
   * the records one by one through process. A chained map or filter
   * passes its output on with sl_op_emit_batch(), so a chain of them runs
   * as one loop per operator over the batch. */
  int (*process_batch)(sl_ctx_t *op, int port, const sl_record_t *recs,
                       size_t n);
  /* Optional, for an operator with one input that hands on at most one
   * record per input record and keeps none (map, filter, the user sink):
   * describes in *st the user function that is all it does to a record
   * (sl_op_arg() is there already). A chain of such operators that is a
   * source's only reader runs record by record inside the source's
   * sl_source_emit(), on the source's own record, calling each function
   * straight from one loop (sl_op_step_run), so the record's bytes are
   * copied (into the source's batch) only where the chain reaches an
   * operator without a step, and not at all when it ends in a sink. The
   * runtime counts the records in and out. */
  void (*step)(sl_ctx_t *op, sl_step_t *st);
  /* The combined input watermark advanced to wm. Anything emitted here
   * reaches downstream before the watermark itself, which the runtime
   * forwards when this returns 0. Optional. */
  int (*on_watermark)(sl_ctx_t *op, int64_t wm);
  /* Keyed operators (keyed = true) take their records here, in batches
   * straight from the exchange's buffers: records[i] in order, each with
   * its key's hash and key group (computed once by key_by). Batches let
   * the operator request the state of a record a few places ahead while
   * it processes the current one (runtime/keyed.h: sl__keyed_batch), so
   * state lookups overlap instead of each stalling on memory. process is
   * not called on a keyed operator. */
  int (*process_keyed)(sl_ctx_t *op, int port, const sl_keyed_rec_t *recs,
                       size_t n);
  /* Processing time moved on: called by the worker every round with the
   * clock's time (timers, processing-time windows). Optional. */
  int (*on_proc_time)(sl_ctx_t *op, int64_t now);
  /* Every input ended (after their final watermark). Optional. */
  int (*on_end)(sl_ctx_t *op);
  /* Frees the instance's data; called once for every instance whose open
   * ran — also when open failed (so it must cope with a half-opened
   * instance) and when the job fails. Optional. */
  void (*close)(sl_ctx_t *op);
  /* Frees the graph-time argument when the job is destroyed. Optional. */
  void (*free_arg)(void *arg);

  /* Checkpoints (optional). Keyed state and timers are snapshotted by the
   * runtime (the worker's backend, the keyed context's timers); these are
   * for an operator's own state (e.g. a sink's pending output).
   * snapshot  every input delivered barrier id and nothing after it was
   *           processed: append the state to out (sl_buf_append). An
   *           at-least-once sink flushes here. Non-zero fails the
   *           checkpoint (not the job).
   * restore   before open: the snapshots of every instance of this uid in
   *           the checkpoint (union, any old parallelism); n may be 0.
   * checkpoint_complete / checkpoint_abort  on the worker thread, once
   *           checkpoint id is durable / was given up. */
  int (*snapshot)(sl_ctx_t *op, uint64_t id, sl_buf_t *out);
  int (*restore)(sl_ctx_t *op, const sl_blob_t *snaps, size_t n);
  /* restored  after open, once keyed state and timers of key groups
   *           [kg_lo, kg_hi) are in the worker's backend (a whole
   *           restore, before any record or timer; or a group task
   *           loaded on assignment): adapts stored bytes to layout keys a
   *           restore may change (state/state.h:
   *           sl__state_set_layout_adapts). layouts: whether the
   *           snapshot recorded layouts, handed to the states that adapt
   *           (sl__state_restored; a whole restore also compared the
   *           others); a snapshot from before layouts were recorded has
   *           none, so anything may have changed. A task's load calls
   *           the operators of the task's stage only. Optional. */
  int (*restored)(sl_ctx_t *op, uint32_t kg_lo, uint32_t kg_hi, bool layouts);
  int (*checkpoint_complete)(sl_ctx_t *op, uint64_t id);
  void (*checkpoint_abort)(sl_ctx_t *op, uint64_t id);
} sl_operator_ops_t;

/* Job-wide checkpoint participants (one per job process, e.g. the
 * transactional Kafka producer), called on the thread that runs
 * sl_job_run(), in checkpoint order:
 * commit   after checkpoint id's metadata is durable and before it is
 *          marked committed (chk-N/_COMMITTED). Non-zero: the checkpoint
 *          stays uncommitted and the job fails (exactly-once output could
 *          not be committed).
 * abort    checkpoint id was given up (timeout, failure).
 * resolve  at restore, for a checkpoint that has metadata but no
 *          _COMMITTED mark (the process died between the two): given the
 *          source positions it recorded (per source uid, every subtask's
 *          blob), return 1 when its output is known to be committed (use
 *          it), 0 when not (fall back to the previous checkpoint), or a
 *          negative error. */
typedef struct sl_ckpt_participant {
  int (*commit)(uint64_t id, void *opaque);
  void (*abort)(uint64_t id, void *opaque);
  int (*resolve)(uint64_t id, const char *const *uids,
                 const sl_blob_t *const *positions, const size_t *n,
                 size_t n_uids, void *opaque);
  /* Optional: why the last commit failed (NULL: unknown), for the job's
   * error message. */
  const char *(*error)(void *opaque);
  void *opaque;
} sl_ckpt_participant_t;
/* Registers a participant at graph-build time; SL_OK or an error. */
int sl_job_add_ckpt_participant(sl_job_t *job, const sl_ckpt_participant_t *p);

/* Adds an operator node reading n input streams (n >= 1; ports follow the
 * order of inputs). arg is handed to every instance through sl_op_arg();
 * the job owns it from this call on (freed with ops->free_arg), also when
 * the call fails. uid names the operator for messages, metrics and state;
 * it must be unique in the job. An operator that keeps no state may pass
 * uid NULL: it is then named "<kind>#<node number>", stable for a given
 * graph. A sink passes sink = true: its stream cannot be consumed. Returns
 * the output stream, or NULL on error (recorded in the job). */
sl_stream_t *sl_op_add(sl_stream_t *const *inputs, size_t n, const char *uid,
                       const sl_operator_ops_t *ops, void *arg, bool sink);

/* Hands ptr to the job, which calls free_fn(ptr) when it is destroyed: for
 * graph-time allocations that are not an operator's arg (e.g. a source's
 * opaque block). On out-of-memory, free_fn(ptr) runs at once and the job
 * records the error. */
void sl_job_adopt(sl_job_t *job, void *ptr, void (*free_fn)(void *));

/* The job a stream belongs to (for recording build errors). */
sl_job_t *sl_stream_job(const sl_stream_t *s);
/* What a builder that returns an int reports after a failed call: the
 * job's first graph-building error, or SL_ERR_STATE for a change refused
 * because the job already started. */
int sl_job_build_err(const sl_job_t *job);
/* Records a graph-building error in the job (first one wins). */
void sl_job_build_error(sl_job_t *job, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void *sl_op_arg(const sl_ctx_t *op);
void *sl_op_data(const sl_ctx_t *op);
void sl_op_set_data(sl_ctx_t *op, void *data);
const char *sl_op_uid(const sl_ctx_t *op);
/* The index of the instance's worker, 0..parallelism-1. */
int sl_op_worker(const sl_ctx_t *op);
const sl_conf_t *sl_op_conf(const sl_ctx_t *op);

uint32_t sl_op_max_parallelism(const sl_ctx_t *op);

/* The state backend of the instance's worker (state.backend, owning the
 * worker's key groups), opened on first use and closed after every
 * instance of the worker closed. NULL with a message in err when it cannot
 * be opened. */
struct sl__backend;
struct sl__backend *sl_op_backend(sl_ctx_t *op, char *err, size_t errlen);

/* Keyed operators attach their keyed context (lib/state/keyed.h) so that
 * the public state and timer functions can find it from the sl_ctx_t. */
struct sl__keyed;
void sl_op_set_keyed(sl_ctx_t *op, struct sl__keyed *keyed);
struct sl__keyed *sl_op_keyed(const sl_ctx_t *op);

/* Broadcast process operators attach their broadcast states
 * (state/state.h) so that the runtime snapshots and restores them and
 * sl_bstate_register() finds them from the sl_ctx_t. */
struct sl__bstates;
void sl_op_set_bcast(sl_ctx_t *op, struct sl__bstates *bs);
struct sl__bstates *sl_op_bcast(const sl_ctx_t *op);

/* Applies error.policy to a failed user function (rc != 0) on rec:
 * returns 0 when the record is to be skipped (counted in the operator's
 * errors), or a negative error after failing the job with a message that
 * names the operator and the record. If the job is already failing (rc came
 * back from downstream), returns that failure without counting. */
int sl_op_user_error(sl_ctx_t *op, const sl_record_t *rec, int rc);

/* Logs a message (operator uid prepended) through the job's log at level
 * (SL_LOG_*), when log.level lets it through. */
void sl_op_log(const sl_ctx_t *op, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fails the job with a message (operator uid prepended); returns err. */
int sl_op_fail(sl_ctx_t *op, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Emits recs[0..n) on op's main output, in order, with what n calls of
 * sl_emit() would do: each reader gets the batch whole (process_batch)
 * when it is the only reader, else the records one by one, each to every
 * reader before the next, as sl_emit() delivers them. The records must
 * stay valid until the call returns. Not for operators that fix the
 * output timestamp (sl_op_set_out_ts). */
int sl_op_emit_batch(sl_ctx_t *op, const sl_record_t *recs, size_t n);

/* *d = *s, eight bytes at a time. A record is usually read right after
 * its fields were written one by one (a source's or a map's function
 * fills it in); the 16-byte moves a structure copy compiles to would each
 * span two of those stores, and a load that spans stores still waiting to
 * be written cannot take their data and stalls until they are. The empty
 * asm keeps the compiler from merging the moves again. */
static inline void sl_op_record_copy(sl_record_t *d, const sl_record_t *s) {
  const void *k = s->key, *v = s->value;
  size_t kl = s->key_len, vl = s->value_len;
  int64_t ts = s->ts;
  __asm__("" : "+r"(k), "+r"(kl), "+r"(v), "+r"(vl), "+r"(ts));
  d->key = k;
  d->key_len = kl;
  d->value = v;
  d->value_len = vl;
  d->ts = ts;
}

/* Runs step st of operator op on one input record, in: SL_STEP_OUT when
 * its output is what it wrote to *out (its bytes borrowed until the next
 * call), SL_STEP_IN when in goes on as it is, SL_STEP_NONE when nothing
 * goes on (filtered out, consumed, or a failed record the error policy
 * handled), or a negative error that fails the job. */
static inline int sl_op_step_run(const sl_step_t *st, sl_ctx_t *op,
                                 const sl_record_t *in, sl_record_t *out) {
  int rc;
  switch (st->kind) {
  case SL_STEP_MAP:
    sl_op_record_copy(out, in);
    if (__builtin_expect(!(rc = ((sl_map_fn)st->fn)(op, in, out, st->opaque)),
                         1))
      return SL_STEP_OUT;
    break;
  case SL_STEP_FILTER:
    if (__builtin_expect((rc = ((sl_filter_fn)st->fn)(op, in, st->opaque)) >= 0,
                         1))
      return rc > 0 ? SL_STEP_IN : SL_STEP_NONE;
    break;
  default:
    if (__builtin_expect(!(rc = ((sl_record_fn)st->fn)(op, in, st->opaque)), 1))
      return SL_STEP_NONE;
    break;
  }
  return sl_op_user_error(op, in, rc);
}

/* Makes every record emitted through op carry timestamp ts (fixed) or
 * the timestamp given by the emitter (!fixed). */
void sl_op_set_out_ts(sl_ctx_t *op, bool fixed, int64_t ts);
/* Makes every record emitted through op carry *at as it is when the
 * record is emitted (NULL: the emitter's timestamp), until the next call
 * of either function: a keyed operator points it at its keyed context's
 * current timestamp once per batch instead of setting it per record. *at
 * must stay valid meanwhile. */
void sl_op_set_out_ts_at(sl_ctx_t *op, const int64_t *at);

/* Counts a record dropped as late. */
void sl_op_count_late(sl_ctx_t *op);

/* ---- Hooks for connector sources and sinks (Kafka) ---------------------- */

/* The operator instance of a source subtask (for sl_op_conf, sl_op_fail,
 * sl_ctx_now...). */
sl_ctx_t *sl_source_op(sl_source_ctx_t *s);
/* Called in open(): the source generates its own watermarks and idleness
 * (e.g. per Kafka partition) instead of the worker's generator, and
 * applies the timestamp assigner itself. Returns the stream's watermark
 * spec (sl_with_watermarks), never NULL. */
const sl_watermark_spec_t *sl_source_own_watermarks(sl_source_ctx_t *s);
/* Forwards the source's watermark when it is higher than the last one;
 * forwards a change of the source's idleness. 0 or an error to return. */
int sl_source_watermark(sl_source_ctx_t *s, int64_t wm);
int sl_source_idle(sl_source_ctx_t *s, bool idle);

/* Whether no key_by lies between op and its sources, i.e. op runs inside
 * the source's emit call on the source's thread (chained). */
bool sl_op_chained_to_sources(const sl_ctx_t *op);

/* error.policy=dlq: the job hands each bad record (rec NULL for a
 * malformed input the source could not turn into a record) with a
 * message to fn, on the thread that hit the error. fn returns 0 when the
 * record was written to the dead-letter queue. One hook per job (the last
 * one set wins); set at graph-build time. */
typedef int (*sl_dlq_fn)(sl_ctx_t *op, const sl_record_t *rec, const char *why,
                         void *opaque);
void sl_job_set_dlq(sl_job_t *job, sl_dlq_fn fn, void *opaque);

const char *sl_job_name(const sl_job_t *job);
/* The job's configuration (owned by the job; read-only). */
const sl_conf_t *sl_job_conf(const sl_job_t *job);
/* Whether the job is failing (a close hook aborts instead of committing). */
bool sl_op_job_failing(const sl_ctx_t *op);

/* Scratch memory: a mark/release pair bounds sl_ctx_alloc() use to one
 * record's processing. */
typedef struct sl_arena_mark {
  void *chunk;
  size_t used;
} sl_arena_mark_t;
sl_arena_mark_t sl_op_arena_mark(sl_ctx_t *op);
void sl_op_arena_release(sl_ctx_t *op, sl_arena_mark_t mark);

#endif
