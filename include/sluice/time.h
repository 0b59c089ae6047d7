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
} sl_watermark_kind;

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
} sl_watermark_spec_t;

/* Watermarks that cover everything: end of input emits this. */
#define SL_WATERMARK_MAX SL_TS_MAX

#ifdef __cplusplus
}
#endif
#endif
