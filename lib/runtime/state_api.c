/* SPDX-License-Identifier: Apache-2.0 */
/* The public keyed-state functions of sluice/state.h: each finds the
 * operator instance's keyed context (the runtime's) and calls the sl__
 * function of the same name in lib/state, which tests and window
 * operators use directly. A failure the backend explains fails the
 * operator here, so lib/state never reaches into the runtime. */
#include "core/util.h"
#include "operator.h"
#include "state/state.h"

/* A backend that failed beyond one call (I/O error, full disk, corruption)
 * says why, naming its directory: that becomes the job's error, so the job
 * stops with the real cause whatever the user function does with the
 * return code. */
static inline int checked(sl_ctx_t *ctx, int rc) {
  if (SL__UNLIKELY(rc < 0)) {
    sl__keyed *k = sl_op_keyed(ctx);
    sl__backend *be = k && k->state ? sl__kstate_backend(k->state) : NULL;
    if (be && be->errmsg)
      sl_op_fail(ctx, rc, "%s", be->errmsg);
  }
  return rc;
}

sl_state_t *sl_state_register(sl_ctx_t *ctx, const sl_state_desc_t *desc) {
  sl__keyed *k = sl_op_keyed(ctx);
  if (!k || !k->state) {
    sl_op_fail(ctx, SL_ERR_STATE,
               "keyed state needs a keyed operator (a stream from "
               "sl_key_by)");
    return NULL;
  }
  char err[256];
  sl_state_t *st;
  int rc = sl__state_register(k->state, desc, &st, err, sizeof(err));
  if (rc) {
    sl_op_fail(ctx, rc, "%s", err);
    return NULL;
  }
  return st;
}

int sl_state_clear(sl_ctx_t *ctx, sl_state_t *st) {
  return checked(ctx, sl__state_clear(sl_op_keyed(ctx), st));
}

int sl_value_get(sl_ctx_t *ctx, sl_state_t *st, const void **val, size_t *len) {
  return checked(ctx, sl__value_get(sl_op_keyed(ctx), st, val, len));
}

int sl_value_put(sl_ctx_t *ctx, sl_state_t *st, const void *val, size_t len) {
  return checked(ctx, sl__value_put(sl_op_keyed(ctx), st, val, len));
}

/* Everything but the per-record case, out of line: the inlined fast path
 * then needs no registers kept across a call, so a caller's frame is only
 * set up on this path. */
static __attribute__((noinline)) void *
value_ptr_slow(sl_ctx_t *ctx, sl_state_t *st, size_t size, bool *created) {
  int err; /* set by sl__value_ptr when it returns NULL */
  void *p = sl__value_ptr(sl_op_keyed(ctx), st, size, created, &err);
  if (!p) {
    sl__keyed *k = sl_op_keyed(ctx);
    sl__backend *be = k && k->state ? sl__kstate_backend(k->state) : NULL;
    sl_op_fail(ctx, err, "sl_value_ptr on state \"%s\": %s",
               st ? sl__state_name(st) : "(null)",
               be && be->errmsg ? be->errmsg : sl_strerror(err));
  }
  return p;
}

void *sl_value_ptr(sl_ctx_t *ctx, sl_state_t *st, size_t size, bool *created) {
  void *p = sl__value_ptr_hit(sl_op_keyed(ctx), st, size);
  if (SL__LIKELY(p != NULL)) {
    if (created)
      *created = false;
    return p;
  }
  return value_ptr_slow(ctx, st, size, created);
}

int sl_list_add(sl_ctx_t *ctx, sl_state_t *st, const void *val, size_t len) {
  return checked(ctx, sl__list_add(sl_op_keyed(ctx), st, val, len));
}

int sl_list_get(sl_ctx_t *ctx, sl_state_t *st, sl_list_iter_t *it) {
  return checked(ctx, sl__list_get(sl_op_keyed(ctx), st, it));
}

int sl_list_update(sl_ctx_t *ctx, sl_state_t *st, const void *const *vals,
                   const size_t *lens, size_t n) {
  return checked(ctx, sl__list_update(sl_op_keyed(ctx), st, vals, lens, n));
}

int sl_map_get(sl_ctx_t *ctx, sl_state_t *st, const void *mk, size_t mk_len,
               const void **val, size_t *len) {
  return checked(ctx, sl__map_get(sl_op_keyed(ctx), st, mk, mk_len, val, len));
}

int sl_map_put(sl_ctx_t *ctx, sl_state_t *st, const void *mk, size_t mk_len,
               const void *val, size_t len) {
  return checked(ctx, sl__map_put(sl_op_keyed(ctx), st, mk, mk_len, val, len));
}

int sl_map_remove(sl_ctx_t *ctx, sl_state_t *st, const void *mk,
                  size_t mk_len) {
  return checked(ctx, sl__map_remove(sl_op_keyed(ctx), st, mk, mk_len));
}

int sl_map_contains(sl_ctx_t *ctx, sl_state_t *st, const void *mk,
                    size_t mk_len) {
  return checked(ctx, sl__map_contains(sl_op_keyed(ctx), st, mk, mk_len));
}

int sl_map_is_empty(sl_ctx_t *ctx, sl_state_t *st) {
  return checked(ctx, sl__map_is_empty(sl_op_keyed(ctx), st));
}

int sl_map_iter(sl_ctx_t *ctx, sl_state_t *st, sl_map_iter_t *it) {
  return checked(ctx, sl__map_iter(sl_op_keyed(ctx), st, it));
}

int sl_reducing_add(sl_ctx_t *ctx, sl_state_t *st, const void *val,
                    size_t len) {
  return checked(ctx, sl__reducing_add(sl_op_keyed(ctx), st, val, len));
}

int sl_reducing_get(sl_ctx_t *ctx, sl_state_t *st, const void **val,
                    size_t *len) {
  return checked(ctx, sl__reducing_get(sl_op_keyed(ctx), st, val, len));
}

int sl_aggregating_add(sl_ctx_t *ctx, sl_state_t *st, const void *in,
                       size_t len) {
  return checked(ctx, sl__aggregating_add(sl_op_keyed(ctx), st, in, len));
}

int sl_aggregating_get(sl_ctx_t *ctx, sl_state_t *st, const void **out,
                       size_t *len) {
  return checked(ctx, sl__aggregating_get(sl_op_keyed(ctx), st, out, len));
}
