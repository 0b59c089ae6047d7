/* SPDX-License-Identifier: Apache-2.0 */
/* Per-task watermarks of a keyed stage in group mode (docs/scaling.md):
 * a task (a key group, an input partition) that arrives at a process
 * behind the operator's watermark keeps a watermark of its own until it
 * catches up, so its records are judged late and its event-time timers
 * fire as they would have where it came from. Every keyed operator of
 * the stage keeps one table: at the stage's entry each input port
 * derives a task's watermark from the task's records, or (a user
 * watermark generator) takes the one the source sends for the task's
 * partition; further down a port takes it from the operator upstream,
 * which sends it in-band (runtime/keyed.c); a task's watermark is the
 * minimum over the ports. */
#ifndef SL_TIME_TASKWM_H
#define SL_TIME_TASKWM_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/time.h"

/* A task's standing on a port that follows records (sl__taskwm_port.st)
 * and in the table (sl__taskwm.st: held here or not). */
enum {
  SL__TASKWM_NONE = 0,  /* not held here: the operator's watermark */
  SL__TASKWM_FRESH = 1, /* loaded, no record of it seen since */
  SL__TASKWM_LIVE = 2,  /* its records flow */
};

/* Where an input port's task watermarks come from. */
enum {
  SL__TASKWM_PORT_OP = 0,      /* none: the port's watermark (a broadcast
                                  input, an input from outside the stage) */
  SL__TASKWM_PORT_RECORDS = 1, /* the task's records: max ts - bound - 1 */
  SL__TASKWM_PORT_SENT = 2,    /* what the keyed operator upstream sent */
  SL__TASKWM_PORT_SOURCE = 3,  /* what the source sent for the task's
                                  partition (a user generator's) */
};

#define SL__TASKWM_PORTS 2

/* Why a fresh task is not lifted by the port's watermark (a port that
 * follows records): that watermark may have been emitted upstream
 * before the task's partition was assigned there (it travels in the same
 * channel as the task's records, ahead of them), so it says nothing
 * about the task. Once a record of the task arrived, every later advance
 * of the watermark came from a source minimum that included the task's
 * partition (sources only forward a higher watermark), so it is at most
 * the task's own and lifting by it is exact; it also carries idleness
 * (an idle partition is left out of that minimum) as in one process. */
typedef struct sl__taskwm_port {
  int kind;    /* SL__TASKWM_PORT_* */
  int64_t sub; /* RECORDS: bound + 1, a record at ts moves its task to
                  ts - sub */
  int64_t *v;  /* per key group: the task's watermark on this port,
                  SL_TS_MAX while it follows the port's (not OP) */
  uint8_t *st; /* RECORDS: per key group, SL__TASKWM_* */
} sl__taskwm_port;

typedef struct sl__taskwm {
  uint32_t n;  /* key groups */
  int n_ports; /* input ports of the operator */
  int64_t op;  /* the operator's watermark, as last advanced */
  /* Per key group: the minimum over the ports' v (SL_TS_MAX while no
   * port holds the task back), so that the task's watermark is
   * min(op, wm[kg]) and it lags while wm[kg] < op; whether the task is
   * held here; and what the operators downstream were last sent for it
   * (SL_TS_MAX: that they follow the forwarded watermark). */
  int64_t *wm;
  uint8_t *st;
  int64_t *sent;
  sl__taskwm_port port[SL__TASKWM_PORTS];
} sl__taskwm;

/* A table for n key groups of an operator with n_ports inputs (at most
 * SL__TASKWM_PORTS), every port of kind SL__TASKWM_PORT_OP until set.
 * NULL when out of memory. */
sl__taskwm *sl__taskwm_new(uint32_t n, int n_ports);
/* Port port's tasks follow their records (RECORDS, bounded
 * out-of-orderness bound >= 0) or what is sent (SENT, SOURCE). SL_OK or
 * SL_ERR_NOMEM. */
int sl__taskwm_port_set(sl__taskwm *tw, int port, int kind, int64_t bound);
/* NULL is a no-op. */
void sl__taskwm_free(sl__taskwm *tw);

/* The task kg is loaded here, with the watermark it had where its
 * snapshot was taken (SL_TS_MIN: none) on the ports that follow records
 * or what their source sends (held there until the source, which reads
 * the task's partition, sends the watermark its generator starts from);
 * ports that follow what a keyed operator sends wait for it to send it
 * (sl__taskwm_due after its own load). */
void sl__taskwm_load(sl__taskwm *tw, uint32_t kg, int64_t wm);
/* The task kg left this process. */
void sl__taskwm_drop(sl__taskwm *tw, uint32_t kg);
/* The operator's watermark advanced to op, its ports' to port_wm[i]
 * (NULL: op): held tasks that saw a record on a port since they were
 * loaded follow that port's; at SL_TS_MAX (end of input) all. */
void sl__taskwm_advance(sl__taskwm *tw, int64_t op, const int64_t *port_wm);
/* The operator upstream of port (SENT), or the source (SOURCE), sent
 * task kg's watermark w (SL_TS_MAX: it follows the port's); on a port
 * that follows records (RECORDS) the source sends only SL_TS_MAX, for a
 * task whose partition stayed idle since the load, which releases it as
 * its first record would have. port_wm: the
 * port's watermark now (SL_TS_MIN while the port is idle), where a task
 * a source released starts to follow the port from; not the operator's,
 * which another input may have taken past the task while this one was
 * idle. */
void sl__taskwm_set(sl__taskwm *tw, int port, uint32_t kg, int64_t w,
                    int64_t port_wm);

/* The watermark the ports that follow their source hold task kg at
 * (SL_TS_MAX: none does): after a load, the task's snapshot's. */
int64_t sl__taskwm_source(const sl__taskwm *tw, uint32_t kg);

/* The watermark of task kg. */
static inline int64_t sl__taskwm_get(const sl__taskwm *tw, uint32_t kg) {
  int64_t w = tw->wm[kg];
  return w < tw->op ? w : tw->op;
}

/* Whether task kg is behind the operator's watermark. */
static inline bool sl__taskwm_lags(const sl__taskwm *tw, uint32_t kg) {
  return tw->wm[kg] < tw->op;
}

/* Whether the operators downstream must be sent task kg's watermark:
 * it lags and moved, or it started or stopped lagging. Then *w is what
 * to send (SL_TS_MAX once it follows the operator's), recorded as sent.
 * Sent before the records that follow the change, and before the
 * operator forwards its watermark, so that each record reaches the
 * operators downstream with the task's watermark it met here. */
static inline bool sl__taskwm_due(sl__taskwm *tw, uint32_t kg, int64_t *w) {
  int64_t want = tw->st[kg] != SL__TASKWM_NONE && sl__taskwm_lags(tw, kg)
                     ? tw->wm[kg]
                     : SL_TS_MAX;
  if (want == tw->sent[kg])
    return false;
  tw->sent[kg] = *w = want;
  return true;
}

/* The minimum over the ports' watermarks of task kg. */
static inline int64_t sl__taskwm_min(const sl__taskwm *tw, uint32_t kg) {
  int64_t m = SL_TS_MAX;
  for (int p = 0; p < tw->n_ports; p++)
    if (tw->port[p].v && tw->port[p].v[kg] < m)
      m = tw->port[p].v[kg];
  return m;
}

/* A record of task kg at ts was processed on port. Returns true when the
 * task lags and its watermark moved (its due timers are to fire). */
static inline bool sl__taskwm_record(sl__taskwm *tw, int port, uint32_t kg,
                                     int64_t ts) {
  sl__taskwm_port *p = &tw->port[port];
  if (p->kind != SL__TASKWM_PORT_RECORDS)
    return false;
  if (p->st[kg] == SL__TASKWM_FRESH)
    p->st[kg] = SL__TASKWM_LIVE;
  if (tw->wm[kg] >= tw->op)
    return false;
  /* ts - sub without overflow near SL_TS_MIN. */
  int64_t w = ts < SL_TS_MIN + p->sub ? SL_TS_MIN : ts - p->sub;
  if (w <= p->v[kg])
    return false;
  p->v[kg] = w;
  int64_t before = tw->wm[kg];
  tw->wm[kg] = tw->n_ports == 1 ? w : sl__taskwm_min(tw, kg);
  return tw->wm[kg] != before;
}

#endif
