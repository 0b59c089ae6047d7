/* SPDX-License-Identifier: Apache-2.0 */
/* Per-task watermarks (taskwm.h): a table per keyed operator instance,
 * touched by its worker thread only. */
#include "time/taskwm.h"

#include <stdlib.h>

#include "sluice/common.h"

static void fill_max(int64_t *a, uint32_t n) {
  for (uint32_t i = 0; i < n; i++)
    a[i] = SL_TS_MAX;
}

sl__taskwm *sl__taskwm_new(uint32_t n, int n_ports) {
  if (n_ports < 1 || n_ports > SL__TASKWM_PORTS)
    return NULL;
  sl__taskwm *tw = calloc(1, sizeof(*tw));
  if (!tw)
    return NULL;
  size_t m = n ? n : 1;
  tw->wm = malloc(m * sizeof(*tw->wm));
  tw->sent = malloc(m * sizeof(*tw->sent));
  tw->st = calloc(m, 1);
  if (!tw->wm || !tw->sent || !tw->st) {
    sl__taskwm_free(tw);
    return NULL;
  }
  tw->n = n;
  tw->n_ports = n_ports;
  tw->op = SL_TS_MIN;
  fill_max(tw->wm, n);
  fill_max(tw->sent, n);
  return tw;
}

int sl__taskwm_port_set(sl__taskwm *tw, int port, int kind, int64_t bound) {
  if (port < 0 || port >= tw->n_ports)
    return SL_ERR_INVAL;
  sl__taskwm_port *p = &tw->port[port];
  size_t m = tw->n ? tw->n : 1;
  p->kind = kind;
  p->sub = bound < 0 ? 1 : bound + 1;
  if (kind == SL__TASKWM_PORT_OP)
    return SL_OK;
  if (!p->v && !(p->v = malloc(m * sizeof(*p->v))))
    return SL_ERR_NOMEM;
  fill_max(p->v, tw->n);
  if ((kind == SL__TASKWM_PORT_RECORDS || kind == SL__TASKWM_PORT_SOURCE) &&
      !p->st && !(p->st = calloc(m, 1)))
    return SL_ERR_NOMEM;
  return SL_OK;
}

void sl__taskwm_free(sl__taskwm *tw) {
  if (!tw)
    return;
  for (int p = 0; p < SL__TASKWM_PORTS; p++) {
    free(tw->port[p].v);
    free(tw->port[p].st);
  }
  free(tw->wm);
  free(tw->sent);
  free(tw->st);
  free(tw);
}

void sl__taskwm_load(sl__taskwm *tw, uint32_t kg, int64_t wm) {
  if (kg >= tw->n)
    return;
  for (int i = 0; i < tw->n_ports; i++) {
    sl__taskwm_port *p = &tw->port[i];
    if (p->kind == SL__TASKWM_PORT_RECORDS ||
        p->kind == SL__TASKWM_PORT_SOURCE) {
      /* SOURCE: held until the source sends; between the load and that,
       * the operator's watermark may pass the task's. */
      p->v[kg] = wm;
      p->st[kg] = SL__TASKWM_FRESH;
    } else if (p->v) {
      p->v[kg] = SL_TS_MAX;
    }
  }
  tw->st[kg] = SL__TASKWM_FRESH;
  tw->wm[kg] = sl__taskwm_min(tw, kg);
  /* The operators downstream dropped the task too, or never had it. */
  tw->sent[kg] = SL_TS_MAX;
}

void sl__taskwm_drop(sl__taskwm *tw, uint32_t kg) {
  if (kg >= tw->n)
    return;
  for (int i = 0; i < tw->n_ports; i++) {
    if (tw->port[i].v)
      tw->port[i].v[kg] = SL_TS_MAX;
    if (tw->port[i].st)
      tw->port[i].st[kg] = SL__TASKWM_NONE;
  }
  tw->wm[kg] = SL_TS_MAX;
  tw->st[kg] = SL__TASKWM_NONE;
  tw->sent[kg] = SL_TS_MAX;
}

void sl__taskwm_advance(sl__taskwm *tw, int64_t op, const int64_t *port_wm) {
  if (op <= tw->op)
    return;
  tw->op = op;
  for (int i = 0; i < tw->n_ports; i++) {
    sl__taskwm_port *p = &tw->port[i];
    /* A task on a SOURCE port follows the port once its source released
     * it (LIVE), as a RECORDS task once its records flow: the port's
     * watermark, not the operator's, which another input may have taken
     * past the task while this one was idle. At the end of input (a
     * source sends nothing more) every task. */
    if (p->kind != SL__TASKWM_PORT_RECORDS && p->kind != SL__TASKWM_PORT_SOURCE)
      continue;
    int64_t to = port_wm ? port_wm[i] : op;
    if (op == SL_TS_MAX)
      to = SL_TS_MAX;
    for (uint32_t kg = 0; kg < tw->n; kg++)
      if ((p->st[kg] == SL__TASKWM_LIVE ||
           (to == SL_TS_MAX && p->st[kg] == SL__TASKWM_FRESH)) &&
          p->v[kg] < to) {
        p->v[kg] = to;
        tw->wm[kg] = sl__taskwm_min(tw, kg);
      }
  }
}

void sl__taskwm_set(sl__taskwm *tw, int port, uint32_t kg, int64_t w,
                    int64_t port_wm) {
  if (kg >= tw->n || port < 0 || port >= tw->n_ports ||
      tw->port[port].kind == SL__TASKWM_PORT_OP ||
      tw->st[kg] == SL__TASKWM_NONE)
    return;
  sl__taskwm_port *p = &tw->port[port];
  /* A port that follows records takes only a release: the task's
   * partition stayed idle since the load. */
  if (p->kind == SL__TASKWM_PORT_RECORDS &&
      (w != SL_TS_MAX || p->st[kg] != SL__TASKWM_FRESH))
    return;
  if (p->kind != SL__TASKWM_PORT_SENT) {
    /* Released: it follows the port (from its watermark now, then at
     * each of the operator's advances); else held at w. */
    p->st[kg] = w == SL_TS_MAX ? SL__TASKWM_LIVE : SL__TASKWM_FRESH;
    if (w == SL_TS_MAX)
      w = port_wm > p->v[kg] ? port_wm : p->v[kg];
  }
  p->v[kg] = w;
  tw->wm[kg] = sl__taskwm_min(tw, kg);
}

int64_t sl__taskwm_source(const sl__taskwm *tw, uint32_t kg) {
  int64_t m = SL_TS_MAX;
  for (int i = 0; kg < tw->n && i < tw->n_ports; i++)
    if (tw->port[i].kind == SL__TASKWM_PORT_SOURCE &&
        tw->port[i].st[kg] != SL__TASKWM_LIVE && tw->port[i].v[kg] < m)
      m = tw->port[i].v[kg];
  return m;
}
