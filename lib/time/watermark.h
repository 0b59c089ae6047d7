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
 * the last record, to derive the watermark and idleness. A user generator
 * (SL_WM_CUSTOM) sets its watermark itself; this struct is the output it
 * emits into (sl_wm_output_t). */
typedef struct sl_wm_output {
  sl_watermark_kind kind;
  int64_t bound;
  int64_t idle_timeout;
  int64_t max_ts;      /* SL_TS_MIN until the first record */
  int64_t last_active; /* processing time of the last record (or start) */
  bool idle;
  /* SL_WM_CUSTOM: the generator, its instance state, the watermark it
   * emitted (only moves forward), an idle mark not yet reported, and the
   * processing time of the next on_periodic (every interval ms). */
  bool mark_idle;
  bool created; /* create ran (destroy is due) */
  const sl_watermark_gen_t *gen;
  void *gen_opaque;
  void *state;
  int64_t wm;
  int64_t interval;
  int64_t next_periodic;
} sl__wmgen;

void sl__wmgen_init(sl__wmgen *g, const sl_watermark_spec_t *spec, int64_t now);
/* Creates a user generator's instance state (nothing for other kinds);
 * interval: ms between its on_periodic calls.
 * SL_OK, or the create callback's error (SL_ERR_USER when positive). */
int sl__wmgen_open(sl__wmgen *g, int64_t interval);
/* Frees it; safe on a generator never opened. */
void sl__wmgen_close(sl__wmgen *g);

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

/* sl__wmgen_on_event() for a record, also calling a user generator's
 * on_event (which may emit a watermark: punctuated). */
static inline bool sl__wmgen_on_record(sl__wmgen *g, const sl_record_t *rec) {
  bool active = sl__wmgen_on_event(g, rec->ts);
  if (__builtin_expect(g->kind == SL_WM_CUSTOM, 0)) {
    g->mark_idle = false;
    if (g->gen->on_event)
      g->gen->on_event(g, rec, g->state, g->gen_opaque);
  }
  return active;
}

/* Calls a user generator's on_periodic when its interval has passed at
 * processing time now; nothing for other kinds. */
void sl__wmgen_periodic(sl__wmgen *g, int64_t now);

/* Notes that records arrived at processing time now. Called once per
 * source poll rather than per record, to keep clock reads off the hot
 * path; idleness is measured in polls' granularity anyway. */
static inline void sl__wmgen_touch(sl__wmgen *g, int64_t now) {
  g->last_active = now;
}

/* The watermark implied by what was seen: max_ts - bound - 1, never below
 * SL_TS_MIN and SL_TS_MIN for SL_WM_NONE or before the first record; a
 * user generator's: the highest it emitted. */
int64_t sl__wmgen_current(const sl__wmgen *g);

/* Called when the source had nothing to emit: returns true exactly once
 * when the idle timeout has elapsed since the last record, or a user
 * generator marked its input idle (then also when records were read). */
bool sl__wmgen_check_idle(sl__wmgen *g, int64_t now);

/* Merge state of one input port. */
typedef struct sl__wmport {
  int64_t wm;
  bool idle;
  bool ended;
  uint64_t bar; /* last checkpoint barrier delivered on this port */
} sl__wmport;

/* Result of sl__wm_merge(): the minimum watermark over non-idle ports
 * (ended ports count with their last watermark), or all_idle when every
 * port that has neither ended nor reached the maximum is idle, and one
 * has not. An ended input (or one at the maximum, whose end follows)
 * alone does not move the watermark while the others are idle: it would
 * jump to the maximum, and every record the idle inputs bring later
 * would be late. When every port has ended, the minimum over them. */
typedef struct sl__wm_min {
  int64_t wm;
  bool all_idle;
} sl__wm_min;
sl__wm_min sl__wm_merge(const sl__wmport *ports, int n);

#endif
