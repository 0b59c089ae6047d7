/* SPDX-License-Identifier: Apache-2.0 */
/* Watermark generation and merging as in Flink: bounded out-of-orderness
 * emits max_ts - bound - 1; idle inputs do not hold the minimum back. */
#include "time/watermark.h"

void sl__wmgen_init(sl__wmgen *g, const sl_watermark_spec_t *spec,
                    int64_t now) {
  g->kind = spec ? spec->kind : SL_WM_NONE;
  g->bound = (spec && g->kind == SL_WM_BOUNDED) ? spec->bound_ms : 0;
  g->idle_timeout = spec ? spec->idle_timeout_ms : 0;
  g->max_ts = SL_TS_MIN;
  g->last_active = now;
  g->idle = false;
  g->mark_idle = false;
  g->gen = g->kind == SL_WM_CUSTOM ? spec->gen : NULL;
  g->gen_opaque = g->gen ? spec->gen_opaque : NULL;
  g->state = NULL;
  g->created = false;
  g->wm = SL_TS_MIN;
  g->interval = 0;
  g->next_periodic = now;
  if (g->kind == SL_WM_CUSTOM && !g->gen)
    g->kind = SL_WM_NONE; /* refused when the spec is set */
}

int sl__wmgen_open(sl__wmgen *g, int64_t interval) {
  g->interval = interval > 0 ? interval : 1;
  if (g->kind != SL_WM_CUSTOM || !g->gen->create)
    return SL_OK;
  int rc = g->gen->create(&g->state, g->gen_opaque);
  if (rc) {
    g->state = NULL;
    return rc < 0 ? rc : SL_ERR_USER;
  }
  g->created = true;
  return SL_OK;
}

void sl__wmgen_close(sl__wmgen *g) {
  if (g->created && g->gen->destroy)
    g->gen->destroy(g->state, g->gen_opaque);
  g->created = false;
  g->state = NULL;
}

void sl__wmgen_periodic(sl__wmgen *g, int64_t now) {
  if (g->kind != SL_WM_CUSTOM || !g->gen->on_periodic || now < g->next_periodic)
    return;
  /* Missed intervals are not made up: one call, the next a full interval
   * later (Flink's periodic emitter on a busy thread). */
  g->next_periodic = now + g->interval;
  g->gen->on_periodic(g, g->state, g->gen_opaque);
}

void sl_wm_emit(sl_wm_output_t *out, int64_t wm) {
  if (out && wm > out->wm)
    out->wm = wm;
}

void sl_wm_mark_idle(sl_wm_output_t *out) {
  if (out && !out->idle)
    out->mark_idle = true;
}

int64_t sl__wmgen_current(const sl__wmgen *g) {
  if (g->kind == SL_WM_CUSTOM)
    return g->wm;
  if (g->kind == SL_WM_NONE || g->max_ts == SL_TS_MIN)
    return SL_TS_MIN;
  /* max_ts - bound - 1 without overflow near SL_TS_MIN. */
  if (g->max_ts < SL_TS_MIN + g->bound + 1)
    return SL_TS_MIN;
  return g->max_ts - g->bound - 1;
}

bool sl__wmgen_check_idle(sl__wmgen *g, int64_t now) {
  if (g->idle)
    return false;
  if (g->mark_idle) {
    g->mark_idle = false;
    g->idle = true;
    return true;
  }
  if (g->idle_timeout <= 0)
    return false;
  if (now - g->last_active >= g->idle_timeout) {
    g->idle = true;
    return true;
  }
  return false;
}

sl__wm_min sl__wm_merge(const sl__wmport *ports, int n) {
  sl__wm_min r = {SL_TS_MAX, false};
  bool open = false, active = false;
  for (int i = 0; i < n; i++) {
    /* At the maximum an input is as good as ended: its end follows. */
    if (!ports[i].ended && ports[i].wm != SL_TS_MAX) {
      open = true;
      if (ports[i].idle)
        continue;
      active = true;
    }
    if (ports[i].wm < r.wm)
      r.wm = ports[i].wm;
  }
  r.all_idle = n == 0 || (open && !active);
  if (r.all_idle)
    r.wm = SL_TS_MIN;
  return r;
}
