/* SPDX-License-Identifier: Apache-2.0 */
/* Watermark generation (per source subtask or per Kafka partition) and the
 * merge of several inputs' watermarks into one, ignoring idle inputs. The
 * same two pieces serve sources, unions, exchanges and two-input operators. */
#ifndef SL_TIME_WATERMARK_H
#define SL_TIME_WATERMARK_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/time.h"

/* Generator: tracks the highest timestamp seen and the processing time of
 * the last record, to derive the watermark and idleness. */
typedef struct sl__wmgen {
  sl_watermark_kind kind;
  int64_t bound;
  int64_t idle_timeout;
  int64_t max_ts;      /* SL_TS_MIN until the first record */
  int64_t last_active; /* processing time of the last record (or start) */
  bool idle;
} sl__wmgen;

void sl__wmgen_init(sl__wmgen *g, const sl_watermark_spec_t *spec, int64_t now);

/* Observes a record's timestamp. Returns true when the generator was idle
 * and is now active again (the caller forwards an "active" status first). */
static inline bool sl__wmgen_on_event(sl__wmgen *g, int64_t ts) {
  if (ts > g->max_ts)
    g->max_ts = ts;
  if (g->idle) {
    g->idle = false;
    return true;
  }
  return false;
}

/* Notes that records arrived at processing time now. Called once per
 * source poll rather than per record, to keep clock reads off the hot
 * path; idleness is measured in polls' granularity anyway. */
static inline void sl__wmgen_touch(sl__wmgen *g, int64_t now) {
  g->last_active = now;
}

/* The watermark implied by what was seen: max_ts - bound - 1, never below
 * SL_TS_MIN and SL_TS_MIN for SL_WM_NONE or before the first record. */
int64_t sl__wmgen_current(const sl__wmgen *g);

/* Called when the source had nothing to emit: returns true exactly once
 * when the idle timeout has elapsed since the last record. */
bool sl__wmgen_check_idle(sl__wmgen *g, int64_t now);

/* Merge state of one input port. */
typedef struct sl__wmport {
  int64_t wm;
  bool idle;
  bool ended;
  uint64_t bar; /* last checkpoint barrier delivered on this port */
} sl__wmport;

/* Result of sl__wm_merge(): the minimum watermark over non-idle ports, or
 * all_idle when every port is idle (ended ports count with their last
 * watermark and are never idle). */
typedef struct sl__wm_min {
  int64_t wm;
  bool all_idle;
} sl__wm_min;
sl__wm_min sl__wm_merge(const sl__wmport *ports, int n);

#endif
