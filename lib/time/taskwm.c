/* SPDX-License-Identifier: Apache-2.0 */
/* Per-task watermarks (taskwm.h): a table per keyed operator instance,
 * touched by its worker thread only. */
#include "time/taskwm.h"

#include <stdlib.h>

sl__taskwm *sl__taskwm_new(uint32_t n, int64_t bound) {
  sl__taskwm *tw = calloc(1, sizeof(*tw));
  if (!tw)
    return NULL;
  tw->wm = malloc((n ? n : 1) * sizeof(*tw->wm));
  tw->st = calloc(n ? n : 1, 1);
  if (!tw->wm || !tw->st) {
    sl__taskwm_free(tw);
    return NULL;
  }
  tw->n = n;
  tw->sub = bound < 0 ? 1 : bound + 1;
  tw->op = SL_TS_MIN;
  for (uint32_t i = 0; i < n; i++)
    tw->wm[i] = SL_TS_MAX;
  return tw;
}

void sl__taskwm_free(sl__taskwm *tw) {
  if (!tw)
    return;
  free(tw->wm);
  free(tw->st);
  free(tw);
}

void sl__taskwm_load(sl__taskwm *tw, uint32_t kg, int64_t wm) {
  if (kg >= tw->n)
    return;
  tw->wm[kg] = wm;
  tw->st[kg] = SL__TASKWM_FRESH;
}

void sl__taskwm_drop(sl__taskwm *tw, uint32_t kg) {
  if (kg >= tw->n)
    return;
  tw->wm[kg] = SL_TS_MAX;
  tw->st[kg] = SL__TASKWM_NONE;
}

void sl__taskwm_advance(sl__taskwm *tw, int64_t op) {
  if (op <= tw->op)
    return;
  tw->op = op;
  for (uint32_t i = 0; i < tw->n; i++)
    if ((tw->st[i] == SL__TASKWM_LIVE ||
         (op == SL_TS_MAX && tw->st[i] == SL__TASKWM_FRESH)) &&
        tw->wm[i] < op)
      tw->wm[i] = op;
}
