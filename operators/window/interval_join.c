/* SPDX-License-Identifier: Apache-2.0 */
/* Interval join (Flink's IntervalJoinOperator): per key, each side's
 * elements are buffered in a map from timestamp to the elements with that
 * timestamp; an arriving element is buffered, then joined with every
 * buffered element of the other side in its interval; an event-time timer
 * per (side, timestamp) drops a bucket once no future element can join
 * it. Elements behind the watermark are late. */
#include <stdlib.h>
#include <string.h>

#include "runtime/keyed.h"
#include "state/backend.h"
#include "state/state.h"
#include "time/timers.h"
#include "window_int.h"

typedef struct jarg {
  int64_t lo, hi; /* inclusive bounds after exclusive ends were applied */
  sl_join_fn fn;
  void *opaque;
  char *tag[2];
} jarg;

typedef struct ij {
  sl__keyed k; /* first: ij_element gets the ij from its keyed context */
  const jarg *a;
  sl_state_t *buf[2];
  unsigned char *tmp;
  size_t cap;
} ij;

static const unsigned char side_ns[2] = {'L', 'R'};

static void *room(ij *j, size_t n) {
  if (n > j->cap) {
    size_t cap = j->cap ? j->cap : 256;
    while (cap < n)
      cap *= 2;
    void *p = realloc(j->tmp, cap);
    if (!p)
      return NULL;
    j->tmp = p;
    j->cap = cap;
  }
  return j->tmp;
}

/* Appends rec's value as one frame to the bucket of its timestamp. */
static int buffer(ij *j, int side, const sl_record_t *rec) {
  const void *old = NULL;
  size_t olen = 0;
  int64_t ts = rec->ts;
  int rc = sl__map_get(&j->k, j->buf[side], &ts, sizeof(ts), &old, &olen);
  if (rc < 0)
    return rc;
  size_t fl = sl__list_frame(rec->value_len);
  unsigned char *b = room(j, olen + fl);
  if (!b)
    return SL_ERR_NOMEM;
  if (olen)
    memcpy(b, old, olen);
  memset(b + olen, 0, fl);
  uint32_t l32 = (uint32_t)rec->value_len;
  memcpy(b + olen, &l32, sizeof(l32));
  if (rec->value_len)
    memcpy(b + olen + SL__LIST_HDR, rec->value, rec->value_len);
  return sl__map_put(&j->k, j->buf[side], &ts, sizeof(ts), b, olen + fl);
}

/* One record, its key already current in k (the ij's first member). */
static int ij_element(sl__keyed *k, int port, const sl_keyed_rec_t *kr) {
  ij *j = (ij *)k;
  sl_ctx_t *op = k->op;
  const sl_record_t *rec = &kr->rec;
  const jarg *a = j->a;
  int64_t wm = sl_ctx_watermark(op);
  if (wm != INT64_MIN && rec->ts < wm) {
    if (!a->tag[port]) {
      sl_op_count_late(op);
      return 0;
    }
    sl_op_set_out_ts(op, false, 0);
    return sl_emit_to(op, a->tag[port], rec);
  }
  /* Relative bounds of the other side's timestamps. */
  int64_t rlo = port == 0 ? a->lo : -a->hi;
  int64_t rhi = port == 0 ? a->hi : -a->lo;
  int rc = buffer(j, port, rec);
  if (rc)
    return sl_op_user_error(op, rec, rc);
  int64_t from = w_sat_add(rec->ts, rlo), to = w_sat_add(rec->ts, rhi);
  sl_map_iter_t it;
  if ((rc = sl__map_iter(&j->k, j->buf[!port], &it)))
    return sl_op_user_error(op, rec, rc);
  const void *mk, *v;
  size_t mkl, vl;
  sl_arena_mark_t m = sl_op_arena_mark(op);
  int got;
  while (!rc && (got = sl_map_next(&it, &mk, &mkl, &v, &vl)) == 1) {
    int64_t ts;
    if (mkl != sizeof(ts))
      continue;
    memcpy(&ts, mk, sizeof(ts));
    if (ts < from || ts > to)
      continue;
    sl_op_set_out_ts(op, true, ts > rec->ts ? ts : rec->ts);
    const unsigned char *f = v, *end = f + vl;
    while (!rc && f + SL__LIST_HDR <= end) {
      size_t el = sl__list_elem_len(f);
      sl_record_t o = {rec->key, rec->key_len, f + SL__LIST_HDR, el, ts};
      rc = port == 0 ? a->fn(op, rec, &o, a->opaque)
                     : a->fn(op, &o, rec, a->opaque);
      f += sl__list_frame(el);
    }
  }
  sl_op_arena_release(op, m);
  if (!rc && got < 0)
    rc = got;
  if (rc)
    return sl_op_user_error(op, rec, rc);
  int64_t cleanup = rhi > 0 ? w_sat_add(rec->ts, rhi) : rec->ts;
  rc = sl__timers_add(j->k.timers, SL__TIMER_EVENT, cleanup, j->k.hash, j->k.kg,
                      j->k.key, j->k.key_len, &side_ns[port], 1);
  return rc ? sl_op_user_error(op, rec, rc) : 0;
}

static int ij_timer(sl__keyed *k, sl_time_domain d, int64_t ts) {
  ij *j = (ij *)k;
  const jarg *a = j->a;
  if (d != SL_EVENT_TIME || k->ns_len != 1)
    return 0;
  int side = *(const unsigned char *)k->ns == 'R';
  int64_t bucket;
  if (side == 0)
    bucket = a->hi <= 0 ? ts : ts - a->hi;
  else
    bucket = a->lo <= 0 ? ts + a->lo : ts;
  k->ns = NULL;
  k->ns_len = 0;
  int rc = sl__map_remove(k, j->buf[side], &bucket, sizeof(bucket));
  if (rc < 0) {
    sl_record_t r = {k->key, k->key_len, NULL, 0, ts};
    return sl_op_user_error(k->op, &r, rc);
  }
  return 0;
}

static int ij_watermark(sl_ctx_t *op, int64_t wm) {
  ij *j = sl_op_data(op);
  return sl__keyed_fire(&j->k, SL_EVENT_TIME, wm, ij_timer);
}

static int ij_process(sl_ctx_t *op, int port, const sl_keyed_rec_t *recs,
                      size_t n) {
  ij *j = sl_op_data(op);
  return sl__keyed_batch(&j->k, port, recs, n, sl__keyed_prefetch, ij_element);
}

static int ij_open(sl_ctx_t *op) {
  ij *j = calloc(1, sizeof(*j));
  if (!j)
    return SL_ERR_NOMEM;
  j->a = sl_op_arg(op);
  j->k.op = op;
  sl_op_set_data(op, j);
  sl_op_set_keyed(op, &j->k);
  int rc = sl__timers_new(&j->k.timers);
  if (!rc)
    rc = sl__kstate_open(&j->k);
  if (rc)
    return sl_op_fail(op, rc, "cannot create keyed state: %s", sl_strerror(rc));
  char err[256];
  sl_state_desc_t d = {.name = "left", .kind = SL_STATE_MAP};
  rc = sl__state_register(j->k.state, &d, &j->buf[0], err, sizeof(err));
  d.name = "right";
  if (!rc)
    rc = sl__state_register(j->k.state, &d, &j->buf[1], err, sizeof(err));
  return rc ? sl_op_fail(op, rc, "%s", err) : 0;
}

static void ij_close(sl_ctx_t *op) {
  ij *j = sl_op_data(op);
  if (!j)
    return;
  sl__kstate_close(&j->k);
  sl__timers_free(j->k.timers);
  sl_op_set_keyed(op, NULL);
  sl_op_set_data(op, NULL);
  free(j->tmp);
  free(j);
}

static void jarg_free(void *p) {
  jarg *a = p;
  if (a) {
    free(a->tag[0]);
    free(a->tag[1]);
  }
  free(a);
}

static const sl_operator_ops_t interval_join_ops = {
    .kind = "interval_join",
    .keyed = true,
    .open = ij_open,
    .process_keyed = ij_process,
    .on_watermark = ij_watermark,
    .close = ij_close,
    .free_arg = jarg_free,
};

sl_stream_t *sl_interval_join(sl_stream_t *left, sl_stream_t *right,
                              const char *uid,
                              const sl_interval_join_spec_t *spec,
                              sl_join_fn fn, void *opaque) {
  if (!left || !right)
    return NULL;
  sl_job_t *job = sl_stream_job(left);
  const char *why = NULL;
  int64_t lo = 0, hi = 0;
  if (!spec || !fn) {
    why = "a spec and a join function are required";
  } else {
    lo = spec->lower_exclusive ? w_sat_add(spec->lower, 1) : spec->lower;
    hi = spec->upper_exclusive ? w_sat_add(spec->upper, -1) : spec->upper;
    if (lo > hi)
      why = "the interval is empty (lower > upper)";
  }
  if (why) {
    sl_job_build_error(job, SL_ERR_INVAL, "interval join \"%s\": %s",
                       uid ? uid : "", why);
    return NULL;
  }
  jarg *a = calloc(1, sizeof(*a));
  if (a && spec->late_left_tag)
    a->tag[0] = strdup(spec->late_left_tag);
  if (a && spec->late_right_tag)
    a->tag[1] = strdup(spec->late_right_tag);
  if (!a || (spec->late_left_tag && !a->tag[0]) ||
      (spec->late_right_tag && !a->tag[1])) {
    jarg_free(a);
    sl_job_build_error(job, SL_ERR_NOMEM, "interval join: out of memory");
    return NULL;
  }
  a->lo = lo;
  a->hi = hi;
  a->fn = fn;
  a->opaque = opaque;
  sl_stream_t *in[2] = {left, right};
  return sl_op_add(in, 2, uid, &interval_join_ops, a, false);
}
