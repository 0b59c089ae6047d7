/* SPDX-License-Identifier: Apache-2.0 */
/* The keyed context behind the public key and timer functions, and the
 * timer firing loop shared by every keyed operator (process functions,
 * windows, joins): pop due timers in order, make each timer's key current,
 * and hand it to the operator. */
#include "runtime/keyed.h"

#include "runtime/runtime.h"

#include <stdlib.h>

#include "state/keyed.h"
#include "state/state.h"
#include "time/taskwm.h"
#include "time/timers.h"

static int64_t op_now(void *op) {
  return sl_ctx_now(op);
}

int sl__kstate_open(sl__keyed *k) {
  sl_ctx_t *op = k->op;
  char err[256];
  /* Every keyed operator on a worker shares the worker's backend (one
   * RocksDB per worker; one snapshot per worker), its states named
   * "<uid>/<name>". */
  sl__backend *be = sl_op_backend(op, err, sizeof(err));
  if (!be)
    return sl_op_fail(op, SL_ERR_CONF, "%s", err);
  k->state = sl__kstate_new(be, false, sl_op_uid(op), op_now, op);
  if (!k->state)
    return sl_op_fail(op, SL_ERR_NOMEM, "out of memory for keyed state");
  return 0;
}

int sl_ctx_key(const sl_ctx_t *ctx, const void **key, size_t *len) {
  const sl__keyed *k = sl_op_keyed(ctx);
  /* A context with neither state nor timers has no key (the broadcast
   * side of a broadcast process function). */
  if (!k || (!k->state && !k->timers))
    return SL_ERR_STATE;
  *key = k->key;
  *len = k->key_len;
  return SL_OK;
}

int64_t sl_ctx_timestamp(const sl_ctx_t *ctx) {
  const sl__keyed *k = sl_op_keyed(ctx);
  return k ? k->ts : SL_TS_MIN;
}

int sl_timer_set(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts) {
  sl__keyed *k = sl_op_keyed(ctx);
  if (!k || !k->timers)
    return SL_ERR_STATE;
  return sl__timers_add(
      k->timers, domain == SL_PROC_TIME ? SL__TIMER_PROC : SL__TIMER_EVENT, ts,
      k->hash, k->kg, k->key, k->key_len, k->ns, k->ns_len);
}

int sl_timer_del(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts) {
  sl__keyed *k = sl_op_keyed(ctx);
  if (!k || !k->timers)
    return SL_ERR_STATE;
  int rc = sl__timers_del(
      k->timers, domain == SL_PROC_TIME ? SL__TIMER_PROC : SL__TIMER_EVENT, ts,
      k->hash, k->kg, k->key, k->key_len, k->ns, k->ns_len);
  return rc < 0 ? rc : SL_OK;
}

/* ---- Per-task watermarks (group mode's keyed stage) --------------------- */

/* The instance's watermark is what sl_ctx_watermark() and event-time TTL
 * read (k->wm points at it): while a lagging task's record or timer is
 * handled it reads as the task's, and is put back after. The runtime
 * owns it and reads it only between two calls into the operator. */
/* A popped timer's key, namespace and time become current (the view
 * stays valid while the callback registers or deletes timers). */
static inline void set_timer_key(sl__keyed *k, const sl__timer_view *v) {
  k->key = v->key;
  k->key_len = v->key_len;
  k->hash = v->hash;
  k->kg = v->kg;
  k->ns = v->ns;
  k->ns_len = v->ns_len;
  k->ts = v->ts;
}

/* sl__timers_pop for a firing loop: the state of the timers about to fire
 * is requested in groups, as records' is (keyed.h): every
 * SL__TIMER_PREFETCH_AHEAD pops, those up to twice that many ahead that
 * were not requested yet (sl__timers_ahead remembers how far it went).
 * *left counts the pops to the next request; a loop starts it at 0. */
static inline int pop_timer(sl__keyed *k, int d, int64_t upto,
                            sl__timer_view *v, unsigned *left) {
  if (k->timer_prefetch && !(*left)--) {
    sl__timer_run run[2];
    size_t n =
        sl__timers_ahead(k->timers, d, upto, 2 * SL__TIMER_PREFETCH_AHEAD, run);
    for (size_t i = 0; i < n; i++)
      k->timer_prefetch(k, run[i].hash, run[i].kg, run[i].stride, run[i].n);
    *left = SL__TIMER_PREFETCH_AHEAD - 1;
  }
  return sl__timers_pop(k->timers, d, upto, v);
}

static void tw_set_wm(sl__keyed *k, int64_t wm) {
  *(int64_t *)k->wm = wm;
}

/* A timer popped for a task that still lags, re-registered after the
 * loop that popped it (re-registered in the loop it would pop again). */
typedef struct held_timer {
  int64_t ts;
  uint64_t hash;
  uint32_t kg;
  size_t key_len, ns_len;
  unsigned char *bytes; /* key, then ns */
} held_timer;

/* Fires every event-time timer with ts <= upto whose task's watermark
 * has reached it, in timestamp order; the others stay pending. */
static int tw_fire_due(sl__keyed *k, int64_t upto, sl__keyed_timer_fn fn) {
  sl__taskwm *tw = k->tw;
  /* Zeroed: with pop_timer inlined, gcc -O3 -flto cannot tell that v is
   * set whenever the pop returns 1. */
  sl__timer_view v = {0};
  int64_t next;
  int got, rc = 0;
  unsigned left = 0;
  if (!sl__timers_peek(k->timers, SL__TIMER_EVENT, &next) || next > upto)
    return 0;
  held_timer *held = NULL;
  size_t n_held = 0, cap = 0;
  while (!rc && (got = pop_timer(k, SL__TIMER_EVENT, upto, &v, &left)) == 1) {
    if (v.kg < tw->n && v.ts > sl__taskwm_get(tw, v.kg)) {
      if (n_held == cap) {
        size_t nc = cap ? cap * 2 : 16;
        held_timer *a = realloc(held, nc * sizeof(*a));
        if (!a) {
          rc = SL_ERR_NOMEM;
          break;
        }
        held = a;
        cap = nc;
      }
      held_timer *h = &held[n_held];
      *h = (held_timer){v.ts,      v.hash,   v.kg,
                        v.key_len, v.ns_len, malloc(v.key_len + v.ns_len + 1)};
      if (!h->bytes) {
        rc = SL_ERR_NOMEM;
        break;
      }
      memcpy(h->bytes, v.key, v.key_len);
      memcpy(h->bytes + v.key_len, v.ns, v.ns_len);
      n_held++;
      continue;
    }
    set_timer_key(k, &v);
    bool lag = v.kg < tw->n && sl__taskwm_lags(tw, v.kg);
    int64_t own = *k->wm;
    if (lag)
      tw_set_wm(k, sl__taskwm_get(tw, v.kg));
    rc = fn(k, SL_EVENT_TIME, v.ts);
    if (lag)
      tw_set_wm(k, own);
  }
  if (!rc && got < 0)
    rc = got;
  /* Also after an error (only a timer whose copy could not be made is
   * lost, and then the job fails). */
  for (size_t i = 0; i < n_held; i++) {
    held_timer *h = &held[i];
    int r =
        sl__timers_add(k->timers, SL__TIMER_EVENT, h->ts, h->hash, h->kg,
                       h->bytes, h->key_len, h->bytes + h->key_len, h->ns_len);
    if (r && !rc)
      rc = r;
    free(h->bytes);
  }
  free(held);
  if (rc == SL_ERR_NOMEM)
    return sl_op_fail(k->op, rc, "out of memory holding a task's timers");
  return rc;
}

/* Sends the operators downstream task kg's watermark if it changed for
 * them (sl__taskwm_due): after the records and timer output that came
 * before the change, before any that follow it. */
static int tw_send(sl__keyed *k, uint32_t kg) {
  int64_t w;
  if (!sl__taskwm_due(k->tw, kg, &w))
    return 0;
  return sl__forward_task_wm(k->op, kg, w);
}

static __attribute__((noinline)) int
batch_tasks(sl__keyed *k, int port, const sl_keyed_rec_t *r, size_t n,
            void (*prefetch)(sl__keyed *k, const sl_keyed_rec_t *r, size_t n),
            int (*process)(sl__keyed *k, int port, const sl_keyed_rec_t *r)) {
  sl__taskwm *tw = k->tw;
  sl_ctx_t *op = k->op;
  size_t i;
  if (n)
    prefetch(k, r, n < SL__PREFETCH_AHEAD ? n : SL__PREFETCH_AHEAD);
  sl_arena_mark_t m = sl_op_arena_mark(op);
  int rc = 0;
  for (i = 0; i < n && !rc;) {
    size_t end = n - i > SL__PREFETCH_AHEAD ? i + SL__PREFETCH_AHEAD : n;
    if (end < n)
      prefetch(k, r + end,
               n - end < SL__PREFETCH_AHEAD ? n - end : SL__PREFETCH_AHEAD);
    for (; i < end && !rc; i++) {
      uint32_t kg = r[i].kg;
      sl__keyed_set_key(k, &r[i]);
      if (kg >= tw->n) {
        rc = process(k, port, &r[i]);
        continue;
      }
      bool lag = sl__taskwm_lags(tw, kg);
      int64_t own = *k->wm;
      if (lag)
        tw_set_wm(k, sl__taskwm_get(tw, kg));
      rc = process(k, port, &r[i]);
      if (lag)
        tw_set_wm(k, own);
      /* The task's watermark moves after its record, as a source's
       * moves after the record that raised it. */
      if (sl__taskwm_record(tw, port, kg, r[i].rec.ts) && !rc) {
        if (k->tw_fire)
          rc = tw_fire_due(k, sl__taskwm_get(tw, kg), k->tw_fire);
        if (!rc)
          rc = tw_send(k, kg);
      }
    }
  }
  sl_op_arena_release(op, m);
  return rc;
}

/* Cold, so that the branch to it in sl__keyed_batch() is laid out as
 * never taken and the ordinary loop compiles as without it; the work is
 * in batch_tasks, optimized for speed. */
__attribute__((noinline, cold)) int sl__keyed_batch_tasks(
    sl__keyed *k, int port, const sl_keyed_rec_t *r, size_t n,
    void (*prefetch)(sl__keyed *k, const sl_keyed_rec_t *r, size_t n),
    int (*process)(sl__keyed *k, int port, const sl_keyed_rec_t *r)) {
  return batch_tasks(k, port, r, n, prefetch, process);
}

int sl__keyed_fire(sl__keyed *k, sl_time_domain domain, int64_t upto,
                   sl__keyed_timer_fn fn) {
  if (domain == SL_EVENT_TIME && k->tw) {
    sl__taskwm *tw = k->tw;
    const sl_ctx_t *op = k->op;
    /* An idle input is left out of upto (sl__wm_merge): its tasks
     * follow upto, not the watermark it had when it went idle. */
    int64_t pw[SL__TASKWM_PORTS];
    for (int i = 0; i < tw->n_ports; i++)
      pw[i] = i < op->n_ports && !op->ports[i].idle ? op->ports[i].wm : upto;
    k->tw_fire = fn;
    sl__taskwm_advance(tw, upto, pw);
    int rc = tw_fire_due(k, upto, fn);
    /* Tasks that caught up, or that this advance left behind, are sent
     * before the operator forwards upto. */
    for (uint32_t kg = 0; !rc && kg < tw->n; kg++)
      rc = tw_send(k, kg);
    return rc;
  }
  int d = domain == SL_PROC_TIME ? SL__TIMER_PROC : SL__TIMER_EVENT;
  /* Zeroed: with pop_timer inlined, gcc -O3 -flto cannot tell that v is
   * set whenever the pop returns 1. */
  sl__timer_view v = {0};
  int64_t next;
  int got;
  /* Called on every watermark and clock tick: nothing due is the common
   * case, answered by a look at the earliest timer. */
  if (!sl__timers_peek(k->timers, d, &next) || next > upto)
    return 0;
  /* A processing-time timer has no event time of its own: event-time
   * TTL reads it at the watermark (sl__keyed_event_now). */
  k->in_proc_timer = d == SL__TIMER_PROC;
  int rc = 0;
  unsigned left = 0;
  while (!rc && (got = pop_timer(k, d, upto, &v, &left)) == 1) {
    set_timer_key(k, &v);
    rc = fn(k, domain, v.ts);
  }
  k->in_proc_timer = false;
  if (rc)
    return rc;
  return got < 0 ? got : 0;
}

int sl__keyed_user_timer(sl__keyed *k, sl_time_domain domain, int64_t ts,
                         sl__user_timer_fn fn, void *opaque) {
  sl_ctx_t *op = k->op;
  if (!fn)
    return 0;
  /* Event-time timer output carries the timer's timestamp (Flink); a
   * processing-time timer's output carries what the function sets. */
  sl_op_set_out_ts(op, domain == SL_EVENT_TIME, ts);
  sl_arena_mark_t m = sl_op_arena_mark(op);
  int rc = fn(op, domain, ts, opaque);
  sl_op_arena_release(op, m);
  if (rc) {
    sl_record_t r = {k->key, k->key_len, NULL, 0, ts};
    return sl_op_user_error(op, &r, rc);
  }
  return 0;
}

int sl__keyed_task_wm(sl__keyed *k, int port, uint32_t kg, int64_t w) {
  sl__taskwm *tw = k->tw;
  if (kg >= tw->n)
    return 0;
  int64_t before = sl__taskwm_get(tw, kg);
  const sl_ctx_t *op = k->op;
  int64_t pw = port < op->n_ports && !op->ports[port].idle ? op->ports[port].wm
                                                           : SL_TS_MIN;
  sl__taskwm_set(tw, port, kg, w, pw);
  int rc = 0;
  if (sl__taskwm_get(tw, kg) > before && k->tw_fire)
    rc = tw_fire_due(k, sl__taskwm_get(tw, kg), k->tw_fire);
  return rc ? rc : tw_send(k, kg);
}

int sl__keyed_task_announce(sl__keyed *k, uint32_t kg) {
  return k->tw && kg < k->tw->n ? tw_send(k, kg) : 0;
}
