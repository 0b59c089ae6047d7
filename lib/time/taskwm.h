/* SPDX-License-Identifier: Apache-2.0 */
/* Per-task watermarks of a keyed stage in group mode (docs/scaling.md):
 * a task (a key group, an input partition) that arrives at a process
 * behind the operator's watermark keeps a watermark of its own until it
 * catches up, so its records are judged late and its event-time timers
 * fire as they would have where it came from. */
#ifndef SL_TIME_TASKWM_H
#define SL_TIME_TASKWM_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/time.h"

/* A task's standing (sl__taskwm.st). */
enum {
  SL__TASKWM_NONE = 0,  /* not held here: the operator's watermark */
  SL__TASKWM_FRESH = 1, /* loaded, no record of it seen since */
  SL__TASKWM_LIVE = 2,  /* its records flow */
};

/* Why a fresh task is not lifted by the operator's watermark: that
 * watermark may have been emitted upstream before the task's partition
 * was assigned there (it travels in the same channel as the task's
 * records, ahead of them), so it says nothing about the task. Once a
 * record of the task arrived, every later advance of the operator's
 * watermark came from a source minimum that included the task's
 * partition (sources only forward a higher watermark), so it is at most
 * the task's own and lifting by it is exact; it also carries idleness
 * (an idle partition is left out of that minimum) as in one process. */
typedef struct sl__taskwm {
  uint32_t n;  /* key groups */
  int64_t sub; /* bound + 1: a record at ts moves its task to ts - sub */
  int64_t op;  /* the operator's watermark, as last advanced */
  /* Per key group: the task's own watermark (SL_TS_MAX while not held,
   * so that the operator's applies) and its standing. The task's
   * watermark is min(op, wm[kg]); it lags while wm[kg] < op. */
  int64_t *wm;
  uint8_t *st;
} sl__taskwm;

/* A table for n key groups whose tasks' records carry event time with
 * bounded out-of-orderness bound (>= 0). NULL when out of memory. */
sl__taskwm *sl__taskwm_new(uint32_t n, int64_t bound);
/* NULL is a no-op. */
void sl__taskwm_free(sl__taskwm *tw);

/* The task kg is loaded here, with the watermark it had where its
 * snapshot was taken (SL_TS_MIN: none). */
void sl__taskwm_load(sl__taskwm *tw, uint32_t kg, int64_t wm);
/* The task kg left this process. */
void sl__taskwm_drop(sl__taskwm *tw, uint32_t kg);
/* The operator's watermark advanced to op: held tasks that saw a record
 * since they were loaded follow it; at SL_TS_MAX (end of input) all. */
void sl__taskwm_advance(sl__taskwm *tw, int64_t op);

/* The watermark of task kg. */
static inline int64_t sl__taskwm_get(const sl__taskwm *tw, uint32_t kg) {
  int64_t w = tw->wm[kg];
  return w < tw->op ? w : tw->op;
}

/* Whether task kg is behind the operator's watermark. */
static inline bool sl__taskwm_lags(const sl__taskwm *tw, uint32_t kg) {
  return tw->wm[kg] < tw->op;
}

/* A record of task kg at ts was processed. Returns true when the task
 * lags and its watermark moved (its due timers are to fire). */
static inline bool sl__taskwm_record(sl__taskwm *tw, uint32_t kg, int64_t ts) {
  if (tw->st[kg] == SL__TASKWM_FRESH)
    tw->st[kg] = SL__TASKWM_LIVE;
  if (tw->wm[kg] >= tw->op)
    return false;
  /* ts - sub without overflow near SL_TS_MIN. */
  int64_t w = ts < SL_TS_MIN + tw->sub ? SL_TS_MIN : ts - tw->sub;
  if (w <= tw->wm[kg])
    return false;
  tw->wm[kg] = w;
  return true;
}

#endif
