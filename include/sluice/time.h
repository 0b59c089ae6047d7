/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/time.h — clocks (processing time) and watermark strategies (event
 * time). A job reads processing time only through its clock, so tests swap
 * in a manual clock and never sleep. */
#ifndef SLUICE_TIME_H
#define SLUICE_TIME_H

#include "sluice/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_clock sl_clock_t;

/* The wall clock: milliseconds since the epoch (CLOCK_REALTIME). */
SL_API sl_clock_t *sl_clock_new_system(void);

/* A manual clock that starts at start_ms and moves only when told to. Safe
 * to read and set from any thread. */
SL_API sl_clock_t *sl_clock_new_manual(int64_t start_ms);

/* Frees a clock. NULL is a no-op. A clock must outlive every job using it. */
SL_API void sl_clock_destroy(sl_clock_t *clock);

/* Current time in ms. Thread-safe. */
SL_API int64_t sl_clock_now(const sl_clock_t *clock);

/* Sets / advances a manual clock; a manual clock never goes backwards, so
 * setting an earlier time is ignored. Returns SL_ERR_INVAL on a system
 * clock. Thread-safe. */
SL_API int sl_clock_set(sl_clock_t *clock, int64_t now_ms);
SL_API int sl_clock_advance(sl_clock_t *clock, int64_t delta_ms);

/* How a source turns record timestamps into watermarks (Flink's
 * WatermarkStrategy). */
typedef enum sl_watermark_kind {
  SL_WM_NONE = 0,   /* no event time: the watermark stays at SL_TS_MIN */
  SL_WM_BOUNDED,    /* bounded out-of-orderness: max_ts - bound - 1 */
  SL_WM_MONOTONOUS, /* ascending timestamps: bounded with bound = 0 */
  SL_WM_CUSTOM,     /* a user generator (sl_watermark_gen_t) */
} sl_watermark_kind;

/* What a user watermark generator emits into: one per generator instance
 * (per source subtask, or per Kafka partition in a Kafka source). */
typedef struct sl_wm_output sl_wm_output_t;

/* Emits the watermark wm: the generator's watermark becomes wm when that
 * is higher (watermarks only move forward; lower ones are ignored). From
 * on_event, the watermark follows the record at once (punctuated); from
 * on_periodic, it goes out with the poll that called it. Thread: the
 * generator's callback's. */
SL_API void sl_wm_emit(sl_wm_output_t *out, int64_t wm);

/* Marks the generator's input idle (Flink's WatermarkOutput.markIdle):
 * it no longer holds the watermark downstream back, until its next
 * record makes it active again. */
SL_API void sl_wm_mark_idle(sl_wm_output_t *out);

/* A user watermark generator (Flink's WatermarkGenerator): every source
 * subtask, and every partition of a Kafka source, runs its own instance
 * with its own state. Callbacks run on the source subtask's worker
 * thread. A generator starts with the watermark at SL_TS_MIN; an
 * instance made anew on a restore, or in group mode for a partition that
 * moved to this process (docs/scaling.md), at the watermark recorded for
 * its partition or task, with its state made anew by create. */
typedef struct sl_watermark_gen {
  /* Makes an instance's state in *state (NULL allowed); non-zero fails
   * the source. Optional (state NULL). */
  int (*create)(void **state, void *opaque);
  /* Frees an instance's state. Optional. */
  void (*destroy)(void *state, void *opaque);
  /* Every record with its final event time (rec->ts), before the record
   * is emitted downstream. A watermark emitted here (punctuated) follows
   * the record. Optional. */
  void (*on_event)(sl_wm_output_t *out, const sl_record_t *rec, void *state,
                   void *opaque);
  /* Every watermark.interval.ms of processing time (the job's clock),
   * checked once per poll of the source. Optional. */
  void (*on_periodic)(sl_wm_output_t *out, void *state, void *opaque);
} sl_watermark_gen_t;

/* Extracts the event time of a record; returns the timestamp in *ts and 0,
 * or non-zero when the record is malformed (handled by error.policy). */
typedef int (*sl_ts_fn)(const sl_record_t *rec, int64_t *ts, void *opaque);

typedef struct sl_watermark_spec {
  sl_watermark_kind kind;
  int64_t bound_ms;        /* SL_WM_BOUNDED: allowed out-of-orderness (>= 0) */
  int64_t idle_timeout_ms; /* > 0: mark the input idle after this much
                              processing time without records; 0 = never */
  sl_ts_fn ts_fn;          /* optional timestamp assigner; NULL keeps rec->ts */
  void *ts_opaque;
  /* SL_WM_CUSTOM: the generator (borrowed: it and gen_opaque must
   * outlive the job). */
  const sl_watermark_gen_t *gen;
  void *gen_opaque;
  /* Watermark alignment (Flink's withWatermarkAlignment), Kafka sources:
   * > 0 pauses reading a partition whose watermark is more than this far
   * ahead of the slowest non-idle, unfinished partition of the source
   * (over every subtask), until the slowest catches up or goes idle.
   * Other sources ignore it. 0 = off. */
  int64_t align_drift_ms;
} sl_watermark_spec_t;

/* Watermarks that cover everything: end of input emits this. */
#define SL_WATERMARK_MAX SL_TS_MAX

#ifdef __cplusplus
}
#endif
#endif
