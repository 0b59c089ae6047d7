/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/window.h — windows on keyed streams (Flink's WindowedStream):
 * tumbling, sliding, session and global assigners in event or processing
 * time, triggers, allowed lateness with a late-data side output, incremental
 * aggregation and full-window functions; window joins and interval joins.
 * docs/windows.md explains the semantics with worked examples. */
#ifndef SLUICE_WINDOW_H
#define SLUICE_WINDOW_H

#include <stdbool.h>

#include "sluice/job.h"
#include "sluice/process.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Window specification ------------------------------------------------ */

typedef enum sl_window_assigner {
  /* [start, start + size) with start = ts - floormod(ts - offset, size). */
  SL_WINDOW_TUMBLING = 0,
  /* Every [s, s + size) containing ts, s stepping by slide from offset. */
  SL_WINDOW_SLIDING,
  /* [ts, ts + gap) per element; windows that overlap or touch merge. */
  SL_WINDOW_SESSION,
  /* One window per key holding everything: [SL_TS_MIN, SL_TS_MAX). Never
   * fires unless a trigger (usually SL_TRIGGER_COUNT) says so. */
  SL_WINDOW_GLOBAL,
} sl_window_assigner;

typedef enum sl_trigger_kind {
  /* The assigner's default: SL_TRIGGER_EVENT_TIME for event-time windows,
   * SL_TRIGGER_PROC_TIME for processing-time ones, never for global. */
  SL_TRIGGER_DEFAULT = 0,
  /* Fires when the watermark reaches the window's max_ts (end - 1), and
   * again for each allowed-late element (Flink's EventTimeTrigger). */
  SL_TRIGGER_EVENT_TIME,
  /* Fires when processing time reaches max_ts (ProcessingTimeTrigger). */
  SL_TRIGGER_PROC_TIME,
  /* Fires each time the window has received `count` more elements
   * (CountTrigger). */
  SL_TRIGGER_COUNT,
  /* Event-time trigger with early firings every `interval` ms of event
   * time, aligned to multiples of interval (ContinuousEventTimeTrigger). */
  SL_TRIGGER_CONTINUOUS_EVENT_TIME,
} sl_trigger_kind;

/* Dynamic session gap (Flink's SessionWindowTimeGapExtractor): the gap in
 * ms for this element, > 0; anything else is a user error handled by
 * error.policy. opaque is the one given to sl_window(). */
typedef int64_t (*sl_session_gap_fn)(const sl_record_t *rec, void *opaque);

typedef struct sl_window_spec {
  sl_window_assigner assigner;
  /* SL_EVENT_TIME (default): windows from record timestamps, fired by
   * watermarks. SL_PROC_TIME: windows from the job's clock when the
   * record arrives; lateness does not apply. */
  sl_time_domain time;
  int64_t size;   /* tumbling, sliding: > 0 */
  int64_t slide;  /* sliding: 0 < slide */
  int64_t offset; /* tumbling, sliding: shifts window starts (any value) */
  int64_t gap;    /* session: static gap > 0, unless gap_fn is set */
  sl_session_gap_fn gap_fn;

  sl_trigger_kind trigger;
  uint64_t count;   /* SL_TRIGGER_COUNT: > 0 */
  int64_t interval; /* SL_TRIGGER_CONTINUOUS_EVENT_TIME: > 0 */
  /* Clears the window's contents after every firing (PurgingTrigger), so
   * each firing sees only what arrived since the previous one. */
  bool purge;

  /* Event time: elements up to this many ms behind the watermark still
   * update (and re-fire) their windows; window state is kept until the
   * watermark passes max_ts + allowed_lateness. >= 0. */
  int64_t allowed_lateness;
  /* Elements too late for every window they belong to go to this side
   * output (read it with sl_side_output(window_stream, late_tag)),
   * unchanged; NULL counts them in sl_op_stats_t.late_dropped instead. */
  const char *late_tag;
} sl_window_spec_t;

/* Shorthands for the common specifications (event time, default trigger,
 * no lateness); adjust the returned struct's fields for anything else. */
static inline sl_window_spec_t sl_window_tumbling(int64_t size) {
  sl_window_spec_t s = {SL_WINDOW_TUMBLING,
                        SL_EVENT_TIME,
                        size,
                        0,
                        0,
                        0,
                        0,
                        SL_TRIGGER_DEFAULT,
                        0,
                        0,
                        false,
                        0,
                        0};
  return s;
}
static inline sl_window_spec_t sl_window_sliding(int64_t size, int64_t slide) {
  sl_window_spec_t s = sl_window_tumbling(size);
  s.assigner = SL_WINDOW_SLIDING;
  s.slide = slide;
  return s;
}
static inline sl_window_spec_t sl_window_session(int64_t gap) {
  sl_window_spec_t s = sl_window_tumbling(0);
  s.assigner = SL_WINDOW_SESSION;
  s.gap = gap;
  return s;
}
/* Global window fired (and purged) every count elements: Flink's
 * countWindow(count). */
static inline sl_window_spec_t sl_window_count(uint64_t count) {
  sl_window_spec_t s = sl_window_tumbling(0);
  s.assigner = SL_WINDOW_GLOBAL;
  s.trigger = SL_TRIGGER_COUNT;
  s.count = count;
  s.purge = true;
  return s;
}

/* ---- Window functions -------------------------------------------------- */

/* A window: [start, end). Results carry max_ts = end - 1. */
typedef struct sl_window {
  int64_t start;
  int64_t end;
} sl_window_t;

/* The elements a window function sees. Fields are private. */
typedef struct sl_window_elems {
  uint64_t priv_[16];
} sl_window_elems_t;

/* Next element of the window: returns 1 and sets *out (key, value and
 * timestamp, bytes valid until the window function returns), or 0 at the
 * end. In the combined form (aggregate + process) there is exactly one
 * element: the aggregate's result bytes, with the window's max_ts.
 * Thread: only inside the window function that received it (on the
 * worker that owns the key); it never fails. */
SL_API int sl_window_elems_next(sl_window_elems_t *it, sl_record_t *out);

/* Numeric extractors of the built-in aggregates: set *out from the record
 * and return 0, or non-zero for a malformed record (error.policy). */
typedef int (*sl_num_fn)(const sl_record_t *rec, double *out, void *opaque);
typedef int (*sl_int_fn)(const sl_record_t *rec, int64_t *out, void *opaque);

/* Built-in incremental aggregates. Result value bytes (native byte
 * order): 8 bytes each.
 * - COUNT: an int64_t, the number of elements (no extractor).
 * - SUM, MIN, MAX, AVG over fn.num: a double; AVG is sum / count.
 * - SUM_INT, MIN_INT, MAX_INT over fn.num_int: an int64_t, exact for
 *   every int64 value (doubles lose integers beyond 2^53). SUM_INT wraps
 *   around on overflow (two's complement, as Java's long sum in Flink):
 *   addition modulo 2^64 gives the same result in any order, so sliced
 *   sliding windows and merged sessions agree with one pass over the
 *   elements. */
typedef enum sl_window_agg {
  SL_AGG_NONE = 0,
  SL_AGG_COUNT,
  SL_AGG_SUM,
  SL_AGG_MIN,
  SL_AGG_MAX,
  SL_AGG_AVG,
  SL_AGG_SUM_INT,
  SL_AGG_MIN_INT,
  SL_AGG_MAX_INT,
} sl_window_agg;

/* What a window computes, in one of three forms (Flink's aggregate(),
 * process() and aggregate(agg, process)):
 * - Incremental aggregate: `builtin`, or add (+ acc_size, optional init,
 *   merge, result). Each element is folded into a fixed-size accumulator
 *   as it arrives; nothing else is stored. Without process, a firing emits
 *   one record: the current key, the result bytes (result_size bytes from
 *   result(), or the accumulator itself), timestamp max_ts.
 * - Full window: process only. Every element is kept; a firing calls
 *   process with all of them and the window bounds.
 * - Combined: an aggregate and process. process sees one element, the
 *   result, and the window bounds.
 * Callbacks run on the worker that owns the key; opaque is the one given
 * to sl_window(). Records emitted from process carry max_ts (whatever
 * timestamp they are given), as in Flink. A non-zero return from add or
 * process is a user error handled by error.policy.
 * merge is required by session windows and by the sliced sliding path
 * (without it, sliding windows keep one accumulator per window). */
typedef struct sl_window_fn {
  sl_window_agg builtin;
  sl_num_fn num;     /* builtin extractor (SUM, MIN, MAX, AVG) */
  sl_int_fn num_int; /* builtin extractor (SUM_INT, MIN_INT, MAX_INT) */

  size_t acc_size; /* bytes, 8-byte aligned storage; <= 65536 */
  void (*init)(void *acc, void *opaque);
  int (*add)(void *acc, const sl_record_t *rec, void *opaque);
  void (*merge)(void *acc, const void *other, void *opaque);
  size_t result_size;
  void (*result)(const void *acc, void *out, void *opaque);

  int (*process)(sl_ctx_t *ctx, const sl_window_t *win,
                 sl_window_elems_t *elems, void *opaque);
} sl_window_fn_t;

/* Windows the keyed stream (from sl_key_by()) by spec and applies fn to
 * each window's contents when its trigger fires. spec and fn are copied
 * (late_tag too); opaque is passed to fn's callbacks and not owned.
 * Returns the stream of results, or NULL on error (SL_ERR_INVAL for an
 * inconsistent spec or fn, recorded in the job; see sl_job_errmsg()).
 * Thread: graph building only (before sl_job_run()). */
SL_API sl_stream_t *sl_window(sl_stream_t *keyed, const char *uid,
                              const sl_window_spec_t *spec,
                              const sl_window_fn_t *fn, void *opaque);

/* ---- Joins --------------------------------------------------------------- */

/* Called once per joined pair; emits any number of records with
 * sl_emit() (their timestamp is set by the join, see below). left and
 * right are borrowed for the call. Non-zero return: user error. */
typedef int (*sl_join_fn)(sl_ctx_t *ctx, const sl_record_t *left,
                          const sl_record_t *right, void *opaque);

/* Window join (Flink's join().where().equalTo().window()): both keyed
 * inputs are windowed by spec (any assigner and trigger; a global window
 * needs the count trigger; lateness and late_tag apply to both inputs,
 * whose late elements share the tag). When a window of key k fires, fn is
 * called for every pair (left, right) of that window's elements, lefts in
 * arrival order, then rights in arrival order; a window with elements on
 * one side only produces nothing. Output timestamp: the window's max_ts.
 * opaque is passed to fn and not owned. Returns the joined stream or NULL
 * (SL_ERR_INVAL for a bad spec or no fn, recorded in the job). Thread:
 * graph building only. */
SL_API sl_stream_t *sl_window_join(sl_stream_t *left, sl_stream_t *right,
                                   const char *uid,
                                   const sl_window_spec_t *spec, sl_join_fn fn,
                                   void *opaque);

/* Interval join bounds: a left element at l.ts joins every right element
 * of the same key with r.ts in [l.ts + lower, l.ts + upper] (lower <=
 * upper; each end inclusive unless marked exclusive). Event time only.
 * Elements behind the watermark (ts < watermark) are late: sent unchanged
 * to late_left_tag / late_right_tag when set, else counted and dropped. */
typedef struct sl_interval_join_spec {
  int64_t lower;
  int64_t upper;
  bool lower_exclusive;
  bool upper_exclusive;
  const char *late_left_tag;
  const char *late_right_tag;
} sl_interval_join_spec_t;

/* Interval join (Flink's intervalJoin().between().process()): each pair
 * is joined as soon as its second element arrives; output timestamp
 * max(l.ts, r.ts). Buffered elements are removed by event-time timers once
 * the watermark shows they can join nothing more. spec is copied (tags
 * too); opaque is passed to fn and not owned. Returns the joined stream or
 * NULL (SL_ERR_INVAL for no spec or fn, or an empty interval, recorded in
 * the job). Thread: graph building only. */
SL_API sl_stream_t *sl_interval_join(sl_stream_t *left, sl_stream_t *right,
                                     const char *uid,
                                     const sl_interval_join_spec_t *spec,
                                     sl_join_fn fn, void *opaque);

#ifdef __cplusplus
}
#endif
#endif
