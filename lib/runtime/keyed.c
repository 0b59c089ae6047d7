/* SPDX-License-Identifier: Apache-2.0 */
/* The keyed context behind the public key and timer functions, and the
 * timer firing loop shared by every keyed operator (process functions,
 * windows, joins): pop due timers in order, make each timer's key current,
 * and hand it to the operator. */
#include "runtime/keyed.h"

#include "runtime/runtime.h"

#include "state/keyed.h"
#include "state/state.h"
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

int sl__keyed_fire(sl__keyed *k, sl_time_domain domain, int64_t upto,
                   sl__keyed_timer_fn fn) {
  int d = domain == SL_PROC_TIME ? SL__TIMER_PROC : SL__TIMER_EVENT;
  sl__timer_view v;
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
  while (!rc && (got = sl__timers_pop(k->timers, d, upto, &v)) == 1) {
    /* The view stays valid while fn registers or deletes timers. */
    k->key = v.key;
    k->key_len = v.key_len;
    k->hash = v.hash;
    k->kg = v.kg;
    k->ns = v.ns;
    k->ns_len = v.ns_len;
    k->ts = v.ts;
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
