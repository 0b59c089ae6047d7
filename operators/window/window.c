/* SPDX-License-Identifier: Apache-2.0 */
/* The window operator (Flink's WindowOperator): assigns each element to
 * its windows, keeps per-window contents in keyed state whose namespace is
 * the window, runs the trigger on elements and timers, fires and purges,
 * handles allowed lateness and late data, merges session windows and their
 * state, and cleans each window at max_ts + lateness. Window joins are this
 * operator with two inputs whose elements are kept tagged by side. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "runtime/keyed.h"
#include "state/state.h"
#include "time/timers.h"

#include "window_int.h"

/* Full-window elements are stored as a header and the value bytes. */
typedef struct elem_hdr {
  int64_t ts;
  int32_t port;
  int32_t pad;
} elem_hdr;

void *sl__win_buf(win *w, size_t n) {
  if (n > w->buf_cap) {
    size_t cap = w->buf_cap ? w->buf_cap : 256;
    while (cap < n)
      cap *= 2;
    void *p = realloc(w->buf, cap);
    if (!p)
      return NULL;
    w->buf = p;
    w->buf_cap = cap;
  }
  return w->buf;
}

/* ---- Timers ------------------------------------------------------------- */

static int tdom(int d) {
  return d == SL_PROC_TIME ? SL__TIMER_PROC : SL__TIMER_EVENT;
}

int sl__win_tset(win *w, int d, int64_t ts, const sl_window_t *wd) {
  w->tns[0] = wd->start;
  w->tns[1] = wd->end;
  return sl__timers_add(w->k.timers, tdom(d), ts, w->k.hash, w->k.kg, w->k.key,
                        w->k.key_len, w->tns, sizeof(w->tns));
}

void sl__win_tdel(win *w, int d, int64_t ts, const sl_window_t *wd) {
  w->tns[0] = wd->start;
  w->tns[1] = wd->end;
  sl__timers_del(w->k.timers, tdom(d), ts, w->k.hash, w->k.kg, w->k.key,
                 w->k.key_len, w->tns, sizeof(w->tns));
}

static int cleanup_timer(win *w, const sl_window_t *wd) {
  int64_t c = w_cleanup(w->a, wd);
  if (c == INT64_MAX)
    return 0; /* global window: never cleaned (Flink) */
  return sl__win_tset(w, w->a->event ? SL_EVENT_TIME : SL_PROC_TIME, c, wd);
}

/* ---- Elements ----------------------------------------------------------- */

typedef struct elems_int {
  union {
    sl_list_iter_t it;
    int64_t one_ts;
  } u;
  const void *key;
  size_t key_len;
  const void *one; /* combined form: the result */
  uint32_t one_len;
  uint32_t mode; /* 0 list, 1 one result, 2 done */
} elems_int;
_Static_assert(sizeof(elems_int) <= sizeof(sl_window_elems_t),
               "sl_window_elems_t too small");

int sl_window_elems_next(sl_window_elems_t *it, sl_record_t *out) {
  elems_int *e = (elems_int *)it;
  if (e->mode == 1) {
    *out = (sl_record_t){e->key, e->key_len, e->one, e->one_len, e->u.one_ts};
    e->mode = 2;
    return 1;
  }
  if (e->mode != 0)
    return 0;
  const void *v;
  size_t len;
  for (;;) {
    if (sl_list_next(&e->u.it, &v, &len) != 1)
      return 0;
    if (len < sizeof(elem_hdr))
      continue;
    elem_hdr h;
    memcpy(&h, v, sizeof(h));
    *out =
        (sl_record_t){e->key, e->key_len, (const unsigned char *)v + sizeof(h),
                      len - sizeof(h), h.ts};
    return 1;
  }
}

/* ---- Firing ------------------------------------------------------------- */

int sl__win_emit_result(win *w, const sl_window_t *wd, const void *acc) {
  const warg *a = w->a;
  sl_ctx_t *op = w->k.op;
  const void *r = w_agg_result(a, acc, w->res);
  if (!a->f.process) {
    sl_record_t out = {w->k.key, w->k.key_len, r, a->res_size, w_max_ts(wd)};
    return sl_emit(op, &out);
  }
  elems_int e;
  memset(&e, 0, sizeof(e));
  e.key = w->k.key;
  e.key_len = w->k.key_len;
  e.one = r;
  e.one_len = (uint32_t)a->res_size;
  e.u.one_ts = w_max_ts(wd);
  e.mode = 1;
  return a->f.process(op, wd, (sl_window_elems_t *)&e, a->opaque);
}

typedef struct pair_view {
  const void *v;
  size_t len;
  int64_t ts;
  int port;
} pair_view;

static int emit_join(win *w, sl_list_iter_t *it) {
  const warg *a = w->a;
  size_t n = 0;
  const void *v;
  size_t len;
  /* The list's bytes stay put while only the join function runs (it
   * reaches no state of this instance), so views point into them. */
  while (sl_list_next(it, &v, &len) == 1) {
    if (len < sizeof(elem_hdr))
      continue;
    if (n == w->pairs_cap) {
      size_t cap = w->pairs_cap ? w->pairs_cap * 2 : 64;
      void *p = realloc(w->pairs, cap * sizeof(pair_view));
      if (!p)
        return SL_ERR_NOMEM;
      w->pairs = p;
      w->pairs_cap = cap;
    }
    elem_hdr h;
    memcpy(&h, v, sizeof(h));
    ((pair_view *)w->pairs)[n++] = (pair_view){
        (const unsigned char *)v + sizeof(h), len - sizeof(h), h.ts, h.port};
  }
  pair_view *p = w->pairs;
  for (size_t i = 0; i < n; i++) {
    if (p[i].port != 0)
      continue;
    sl_record_t l = {w->k.key, w->k.key_len, p[i].v, p[i].len, p[i].ts};
    for (size_t j = 0; j < n; j++) {
      if (p[j].port != 1)
        continue;
      sl_record_t r = {w->k.key, w->k.key_len, p[j].v, p[j].len, p[j].ts};
      int rc = a->join(w->k.op, &l, &r, a->opaque);
      if (rc)
        return rc;
    }
  }
  return 0;
}

/* Emits the contents of window wd, stored in namespace w->ns. */
int sl__win_emit(win *w, const sl_window_t *wd) {
  const warg *a = w->a;
  sl_ctx_t *op = w->k.op;
  int rc;
  sl_op_set_out_ts(op, true, w_max_ts(wd));
  sl_arena_mark_t m = sl_op_arena_mark(op);
  if (a->agg) {
    const void *acc;
    size_t len;
    rc = sl__value_get(&w->k, w->acc, &acc, &len);
    if (rc == 1)
      rc =
          len == a->acc_size ? sl__win_emit_result(w, wd, acc) : SL_ERR_CORRUPT;
  } else {
    elems_int e;
    memset(&e, 0, sizeof(e));
    rc = sl__list_get(&w->k, w->list, &e.u.it);
    if (rc == 1) {
      if (a->join) {
        rc = emit_join(w, &e.u.it);
      } else {
        e.key = w->k.key;
        e.key_len = w->k.key_len;
        rc = a->f.process(op, wd, (sl_window_elems_t *)&e, a->opaque);
      }
    }
  }
  sl_op_arena_release(op, m);
  return rc < 0 || rc > 1 ? rc : 0;
}

int sl__win_clear(win *w) {
  return sl__state_clear(&w->k, w->a->agg ? w->acc : w->list);
}

/* ---- Triggers ----------------------------------------------------------- */

/* Continuous trigger: the next early firing at or after ts. */
int sl__win_cont_register(win *w, const sl_window_t *wd, int64_t next) {
  int64_t m = w_max_ts(wd);
  if (next > m)
    next = m;
  int rc = sl__value_put(&w->k, w->fire, &next, sizeof(next));
  return rc ? rc : sl__win_tset(w, SL_EVENT_TIME, next, wd);
}

static int trig_element(win *w, const sl_window_t *wd, const sl_record_t *rec,
                        int64_t wm, bool fresh) {
  const warg *a = w->a;
  int64_t m = w_max_ts(wd);
  int r = 0, rc;
  switch (a->trig) {
  case SL_TRIGGER_EVENT_TIME:
    if (m <= wm)
      r = W_FIRE;
    else if (fresh && (rc = sl__win_tset(w, SL_EVENT_TIME, m, wd)))
      return rc;
    break;
  case SL_TRIGGER_PROC_TIME:
    if (fresh && (rc = sl__win_tset(w, SL_PROC_TIME, m, wd)))
      return rc;
    break;
  case SL_TRIGGER_COUNT: {
    int e = 0;
    int64_t *c = sl__value_ptr(&w->k, w->cnt, sizeof(int64_t), NULL, &e);
    if (!c)
      return e;
    if ((uint64_t)++ * c >= a->s.count) {
      if ((rc = sl__state_clear(&w->k, w->cnt)))
        return rc;
      r = W_FIRE;
    }
    break;
  }
  case SL_TRIGGER_CONTINUOUS_EVENT_TIME: {
    if (m <= wm)
      return W_FIRE | (a->s.purge ? W_PURGE : 0);
    if (fresh && (rc = sl__win_tset(w, SL_EVENT_TIME, m, wd)))
      return rc;
    const void *v;
    size_t len;
    rc = sl__value_get(&w->k, w->fire, &v, &len);
    if (rc < 0)
      return rc;
    if (rc == 0) {
      int64_t iv = a->s.interval;
      int64_t start = rec->ts - w_fmod(rec->ts, iv);
      if ((rc = sl__win_cont_register(w, wd, w_sat_add(start, iv))))
        return rc;
    }
    break;
  }
  default:
    break;
  }
  if (r && a->s.purge)
    r |= W_PURGE;
  return r;
}

static int trig_timer(win *w, const sl_window_t *wd, int d, int64_t ts) {
  const warg *a = w->a;
  int r = 0;
  switch (a->trig) {
  case SL_TRIGGER_EVENT_TIME:
    r = d == SL_EVENT_TIME && ts == w_max_ts(wd) ? W_FIRE : 0;
    break;
  case SL_TRIGGER_PROC_TIME:
    r = d == SL_PROC_TIME ? W_FIRE : 0;
    break;
  case SL_TRIGGER_CONTINUOUS_EVENT_TIME: {
    if (d != SL_EVENT_TIME)
      break;
    if (ts == w_max_ts(wd)) {
      r = W_FIRE;
      break;
    }
    const void *v;
    size_t len;
    int rc = sl__value_get(&w->k, w->fire, &v, &len);
    if (rc < 0)
      return rc;
    int64_t f;
    if (rc == 1 && len == sizeof(f) && (memcpy(&f, v, sizeof(f)), f == ts)) {
      if ((rc = sl__state_clear(&w->k, w->fire)) ||
          (rc = sl__win_cont_register(w, wd, w_sat_add(ts, a->s.interval))))
        return rc;
      r = W_FIRE;
    }
    break;
  }
  default:
    break;
  }
  if (r && a->s.purge)
    r |= W_PURGE;
  return r;
}

/* Flink's Trigger.clear(): the trigger's timers and (with state) its state
 * of window wd. A session merge keeps the state, which merge_state folds
 * into the merged window's. */
int sl__win_trig_clear(win *w, const sl_window_t *wd, bool state, bool timers) {
  const warg *a = w->a;
  switch (a->trig) {
  case SL_TRIGGER_EVENT_TIME:
    if (timers)
      sl__win_tdel(w, SL_EVENT_TIME, w_max_ts(wd), wd);
    break;
  case SL_TRIGGER_PROC_TIME:
    if (timers)
      sl__win_tdel(w, SL_PROC_TIME, w_max_ts(wd), wd);
    break;
  case SL_TRIGGER_COUNT:
    return state ? sl__state_clear(&w->k, w->cnt) : 0;
  case SL_TRIGGER_CONTINUOUS_EVENT_TIME: {
    const void *v;
    size_t len;
    int64_t f;
    int rc = 0;
    if (timers) {
      sl__win_tdel(w, SL_EVENT_TIME, w_max_ts(wd), wd);
      rc = sl__value_get(&w->k, w->fire, &v, &len);
      if (rc == 1 && len == sizeof(f)) {
        memcpy(&f, v, sizeof(f));
        sl__win_tdel(w, SL_EVENT_TIME, f, wd);
      }
    }
    return rc < 0 || !state ? (rc < 0 ? rc : 0)
                            : sl__state_clear(&w->k, w->fire);
  }
  default:
    break;
  }
  return 0;
}

/* ---- Per-window element path --------------------------------------------- */

/* sl__state_hash() of the current namespace, with the namespace's own
 * hash cached: consecutive elements mostly share their window, and the
 * per-record path should hash nothing but the key (once, in key_by). */
static inline uint64_t ns_state_hash(win *w) {
  if (SL__UNLIKELY(w->ns != w->last_start || !w->ns_hash_ok)) {
    w->last_start = w->ns;
    w->last_ns_hash = sl__hash64(&w->ns, sizeof(w->ns));
    w->ns_hash_ok = true;
  }
  return sl__state_hash_ns(w->k.hash, w->last_ns_hash);
}

static inline int win_acc(win *w, void **acc, bool *fresh) {
  const warg *a = w->a;
  /* The accumulator has no TTL, so its stored bytes are exactly ours:
   * sl__value_ptr() without hashing the namespace. */
  int rc = sl__ns_slot(&w->k, w->acc, ns_state_hash(w), a->acc_size, acc);
  if (SL__UNLIKELY(rc < 0))
    return rc;
  *fresh = rc != 1;
  if (*fresh)
    w_agg_init(a, *acc);
  return 0;
}

/* Out of line for minibatch.c; the per-record path inlines win_acc. */
int sl__win_acc(win *w, void **acc, bool *fresh) {
  return win_acc(w, acc, fresh);
}

int sl__win_add(win *w, int port, const sl_record_t *rec, bool *fresh) {
  const warg *a = w->a;
  if (a->agg) {
    void *acc;
    int rc = win_acc(w, &acc, fresh);
    return SL__UNLIKELY(rc) ? rc : w_agg_add(a, acc, rec);
  }
  size_t n = sizeof(elem_hdr) + rec->value_len;
  unsigned char *b = sl__win_buf(w, n);
  if (!b)
    return SL_ERR_NOMEM;
  elem_hdr h = {rec->ts, port, 0};
  memcpy(b, &h, sizeof(h));
  if (rec->value_len)
    memcpy(b + sizeof(h), rec->value, rec->value_len);
  *fresh = true; /* the list does not say; timers deduplicate */
  return sl__list_add(&w->k, w->list, b, n);
}

/* One (non-late) window of an element: add, trigger, fire, purge, and the
 * cleanup timer of a window that just got contents. need_timers forces
 * the trigger to (re-)register its timers (merged sessions). */
int sl__win_one(win *w, int port, const sl_record_t *rec, const sl_window_t *wd,
                int64_t wm, bool need_timers) {
  const warg *a = w->a;
  bool fresh;
  int rc = sl__win_add(w, port, rec, &fresh);
  if (SL__UNLIKELY(rc))
    return rc;
  fresh |= need_timers;
  int r = trig_element(w, wd, rec, wm, fresh);
  if (SL__UNLIKELY(r < 0))
    return r;
  if (r & W_FIRE) {
    if ((rc = sl__win_emit(w, wd)))
      return rc;
    w_set_ns(w, w->ns); /* emitting may have run other operators */
  }
  if ((r & W_PURGE) && (rc = sl__win_clear(w)))
    return rc;
  if (!fresh)
    return 0;
  /* Without lateness the cleanup timer is the event-time trigger's own
   * timer, just registered: skip the duplicate's lookup. */
  if (a->trig == SL_TRIGGER_EVENT_TIME && !(r & W_FIRE) &&
      w_cleanup(a, wd) == w_max_ts(wd))
    return 0;
  return cleanup_timer(w, wd);
}

bool sl__win_late(const warg *a, const sl_window_t *wd, int64_t wm) {
  return a->event && w_cleanup(a, wd) <= wm;
}

/* ---- Operator callbacks ------------------------------------------------- */

/* The usual element of event-time sessions with a fixed gap and an
 * aggregate (a->session_hits): its key has one session, whose
 * session_ends value (its end, then the accumulator; session.c) the
 * value state's direct probe finds with exactly those bytes (no trailer:
 * the session is at least gap long), the element's window [t, t + gap)
 * reaches from at or before the session's end to at or after it, and
 * the watermark wm is below the session's max_ts. The session becomes
 * [start, t + gap) and the element is added: all that session.c's
 * lz_extend does, since neither the old max_ts nor the new, later one
 * is due (no firing, no re-firing timer). The key: key_len bytes, key
 * group kg, key hash h. Returns the accumulator with the end already
 * moved, or NULL for the session path (nothing changed). */
static inline __attribute__((always_inline)) void *
session_hit(win *w, int64_t t, int64_t wm, uint32_t kg, const void *key,
            size_t key_len, uint64_t h) {
  const warg *a = w->a;
  /* session_hits implies an aggregate: its data is the accumulator. */
  unsigned char *one = sl__value_ptr_hit_key(&w->k, w->ends, kg, key, key_len,
                                             h, 8 + w_acc_ds(a));
  if (!one)
    return NULL;
  int64_t end, nend = w_sat_add(t, a->s.gap);
  memcpy(&end, one, sizeof(end));
  sl_window_t old = {t, end};
  if (t > end || nend < end || w_max_ts(&old) <= wm)
    return NULL;
  memcpy(one, &nend, sizeof(nend));
  return one + 8;
}

/* The usual element of a tumbling event-time aggregate with the default
 * trigger and no purge (a->tumble_hits): its time t falls in the window
 * the last element went to through the general path, whose max_ts the
 * watermark has not reached, and that window already holds the key's
 * accumulator. Adding to it is then all the general path would do: the
 * trigger neither fires (max_ts > wm) nor registers a timer (the window
 * is not fresh), nothing is purged, and no cleanup timer is due.
 *
 * tumble_acc: the accumulator of the key (key_len bytes, key group kg,
 * key hash h) in that window, or NULL for the general path: a probe that
 * misses (a first element, another backend, or a namespace hash cached
 * for another window: the probe compares the key and the namespace, so
 * it can miss but never find the wrong entry). */
static inline __attribute__((always_inline)) void *
tumble_acc(win *w, uint32_t kg, const void *key, size_t key_len, uint64_t h) {
  return sl__ns_slot_hit_key(w->acc, kg, key, key_len, &w->tb_lo,
                             sl__state_hash_ns(h, w->last_ns_hash),
                             w->a->acc_size);
}

static inline bool tumble_in(const win *w, int64_t t) {
  return (uint64_t)t - (uint64_t)w->tb_lo < w->tb_span;
}

/* For the current key, at time t, under watermark wm: the operator's or,
 * in group mode, the record's task's, which may be ahead of it (tb_span
 * follows the operator's alone). */
static inline void *tumble_hit(win *w, int64_t t, int64_t wm) {
  if (!tumble_in(w, t) || w->tb_max <= wm)
    return NULL;
  return tumble_acc(w, w->k.kg, w->k.key, w->k.key_len, w->k.hash);
}

/* The usual element (tumble_hit, session_hit) of a record of
 * sl__keyed_loop (not group mode) before its key is made current:
 * sl__keyed_loop's hit, one for each kind so that each loop tests
 * nothing else. The operator's watermark holds for the whole batch;
 * tumbling windows need not read it, tb_span being 0 once it reached
 * tb_max. */
static inline __attribute__((always_inline)) bool
win_hit_add(sl__keyed *k, const sl_keyed_rec_t *r, void *acc, int *rc) {
  win *w = (win *)k;
  if (!acc)
    return false;
  int e = w_agg_add(w->a, acc, &r->rec);
  if (SL__UNLIKELY(e)) {
    sl__keyed_set_key(k, r);
    *rc = sl_op_user_error(k->op, &r->rec, e);
  }
  return true;
}

static inline __attribute__((always_inline)) bool
win_tumble_hit(sl__keyed *k, const sl_keyed_rec_t *r, int *rc) {
  win *w = (win *)k;
  if (!tumble_in(w, r->rec.ts))
    return false;
  return win_hit_add(
      k, r, tumble_acc(w, r->kg, r->rec.key, r->rec.key_len, r->hash), rc);
}

static inline __attribute__((always_inline)) bool
win_session_hit(sl__keyed *k, const sl_keyed_rec_t *r, int *rc) {
  win *w = (win *)k;
  return win_hit_add(k, r,
                     session_hit(w, r->rec.ts, sl_ctx_watermark(k->op), r->kg,
                                 r->rec.key, r->rec.key_len, r->hash),
                     rc);
}

/* One record, its key already current in k (the win's first member).
 * Always inlined into win_process's loop, as before minibatch.c became
 * its second caller. */
static inline __attribute__((always_inline)) int
win_element(sl__keyed *k, int port, const sl_keyed_rec_t *kr) {
  win *w = (win *)k;
  sl_ctx_t *op = k->op;
  const sl_record_t *rec = &kr->rec;
  const warg *a = w->a;
  int64_t wm = sl_ctx_watermark(op);
  int64_t t = a->event ? rec->ts : sl_ctx_now(op);
  bool skipped = true;
  int rc = 0;
  if (a->tumble_hits || a->session_hits) {
    void *acc = a->tumble_hits
                    ? tumble_hit(w, t, wm)
                    : session_hit(w, t, wm, k->kg, k->key, k->key_len, k->hash);
    if (SL__LIKELY(acc != NULL)) {
      rc = w_agg_add(a, acc, rec);
      return SL__UNLIKELY(rc) ? sl_op_user_error(op, rec, rc) : 0;
    }
  }
  switch (a->s.assigner) {
  case SL_WINDOW_TUMBLING: {
    int64_t st = w_start(t, a->s.offset, a->s.size);
    sl_window_t wd = {st, w_sat_add(st, a->s.size)};
    if (!sl__win_late(a, &wd, wm)) {
      skipped = false;
      w_set_ns(w, st);
      /* The window's namespace hash is cached by the accumulator's
       * access, sl__win_one's first step. */
      w->tb_lo = st;
      w->tb_max = w_max_ts(&wd);
      w->tb_span = w->tb_max > wm ? (uint64_t)wd.end - (uint64_t)st : 0;
      rc = sl__win_one(w, port, rec, &wd, wm, false);
    }
    break;
  }
  case SL_WINDOW_SLIDING:
    if (a->sliced) {
      rc = sl__sliced_element(w, rec, wm, &skipped);
      break;
    }
    for (int64_t st = w_start(t, a->s.offset, a->s.slide);
         st > t - a->s.size && !rc; st -= a->s.slide) {
      sl_window_t wd = {st, w_sat_add(st, a->s.size)};
      if (sl__win_late(a, &wd, wm))
        continue;
      skipped = false;
      w_set_ns(w, st);
      rc = sl__win_one(w, port, rec, &wd, wm, false);
    }
    break;
  case SL_WINDOW_SESSION:
    rc = sl__session_element(w, port, rec, t, wm, &skipped);
    break;
  default: {
    sl_window_t wd = {INT64_MIN, INT64_MAX};
    skipped = false;
    w_set_ns(w, INT64_MIN);
    rc = sl__win_one(w, port, rec, &wd, wm, false);
  }
  }
  if (SL__UNLIKELY(rc))
    return sl_op_user_error(op, rec, rc);
  if (skipped && a->event && w_sat_add(rec->ts, a->s.allowed_lateness) <= wm) {
    if (!a->late_tag) {
      sl_op_count_late(op);
      return 0;
    }
    sl_op_set_out_ts(op, false, 0);
    return sl_emit_to(op, a->late_tag, rec);
  }
  return 0;
}

/* Out of line for minibatch.c; win_process inlines win_element. */
int sl__win_element(sl__keyed *k, int port, const sl_keyed_rec_t *kr) {
  return win_element(k, port, kr);
}

static int clear_all(win *w, const sl_window_t *wd) {
  const warg *a = w->a;
  int rc = sl__win_clear(w);
  if (rc)
    return rc;
  /* Cleanup runs from the cleanup timer, in the trigger's own time domain
   * for the usual triggers: their timers (at or before max_ts) have fired
   * already, so there is nothing to delete. */
  bool popped = a->event ? (a->trig == SL_TRIGGER_EVENT_TIME ||
                            a->trig == SL_TRIGGER_CONTINUOUS_EVENT_TIME)
                         : a->trig == SL_TRIGGER_PROC_TIME;
  return sl__win_trig_clear(w, wd, true, !popped);
}

static int win_timer(sl__keyed *k, sl_time_domain d, int64_t ts) {
  win *w = (win *)k;
  const warg *a = w->a;
  sl_ctx_t *op = k->op;
  int rc = 0;
  if (a->sliced) {
    rc = d == SL_EVENT_TIME ? sl__sliced_timer(w, ts) : 0;
    goto out;
  }
  if (a->lazy_sessions) {
    rc = d == SL_EVENT_TIME && k->ns_len == 0 ? sl__session_lazy_timer(w, ts)
                                              : 0;
    goto out;
  }
  if (k->ns_len != sizeof(w->tns))
    return 0;
  sl_window_t wd;
  memcpy(&wd, k->ns, sizeof(wd));
  int64_t sstart = wd.start;
  if (a->s.assigner == SL_WINDOW_SESSION &&
      (rc = sl__session_find(w, &wd, &sstart, false)) != 1)
    goto out; /* a window that has merged into another meanwhile */
  w_set_ns(w, sstart);
  int r = trig_timer(w, &wd, d, ts);
  if ((rc = r) < 0)
    goto out;
  /* A failed firing (skipped by error.policy) still purges and cleans up:
   * the window's state must not outlive it. */
  rc = (r & W_FIRE) ? sl__win_emit(w, &wd) : 0;
  w_set_ns(w, sstart);
  int rc2 = (r & W_PURGE) ? sl__win_clear(w) : 0;
  if (!rc2 && (a->event == (d == SL_EVENT_TIME)) && ts == w_cleanup(a, &wd)) {
    rc2 = clear_all(w, &wd);
    if (!rc2 && a->s.assigner == SL_WINDOW_SESSION)
      rc2 = sl__session_find(w, &wd, &sstart, true);
  }
  if (!rc && rc2 != 1)
    rc = rc2;
out:
  if (rc < 0 || rc > 1) {
    sl_record_t r = {k->key, k->key_len, NULL, 0, ts};
    return sl_op_user_error(op, &r, rc);
  }
  return 0;
}

static int win_watermark(sl_ctx_t *op, int64_t wm) {
  win *w = sl_op_data(op);
  if (w->tb_max <= wm)
    w->tb_span = 0;
  return sl__keyed_fire(&w->k, SL_EVENT_TIME, wm, win_timer);
}

static int win_time(sl_ctx_t *op, int64_t now) {
  win *w = sl_op_data(op);
  return sl__keyed_fire(&w->k, SL_PROC_TIME, now, win_timer);
}

/* The state of a tumbling window lives under the window's namespace,
 * unknown before the record's timestamp is: guess the window of the last
 * element, right for all but the first elements of each window in a
 * mostly ordered stream. Sliced and session state is under the key alone. */
static void win_prefetch(sl__keyed *k, const sl_keyed_rec_t *r, size_t n) {
  win *w = (win *)k;
  const warg *a = w->a;
  sl__backend *be = sl__kstate_backend(w->k.state);
  const uint64_t *h = &r->hash;
  const uint32_t *g = &r->kg;
  size_t stride = sizeof(*r);
  if (!be->ops->prefetch)
    return;
  if (a->sliced) {
    be->ops->prefetch(be, sl__state_id(w->slices), h, g, stride, n);
  } else if (a->lazy_sessions) {
    sl__state_prefetch(&w->k, w->ends, 0, h, g, stride, n);
  } else if (a->s.assigner == SL_WINDOW_SESSION) {
    be->ops->prefetch(be, sl__state_id(w->sess), h, g, stride, n);
  } else if (a->agg && a->s.assigner == SL_WINDOW_TUMBLING && w->ns_hash_ok) {
    sl__state_prefetch(&w->k, w->acc, w->last_ns_hash, h, g, stride, n);
  }
}

/* Every timer of event-time sessions reads its key's session_ends
 * (sl__session_lazy_timer): nearly all fire early, and that read is all
 * they need of the state. */
static void win_timer_prefetch(sl__keyed *k, const uint64_t *hash,
                               const uint32_t *kg, size_t stride, size_t n) {
  win *w = (win *)k;
  sl__state_prefetch(&w->k, w->ends, 0, hash, kg, stride, n);
}

/* The same for the timers' recheck (sl__session_due). */
static void win_due_prefetch(void *opaque, const uint64_t *hash,
                             const uint32_t *kg, size_t stride, size_t n) {
  win_timer_prefetch(&((win *)opaque)->k, hash, kg, stride, n);
}

static int win_process(sl_ctx_t *op, int port, const sl_keyed_rec_t *recs,
                       size_t n) {
  win *w = sl_op_data(op);
  /* The mini-batch path reads the watermark once per batch; per-task
   * watermarks (group mode) need it per record. */
  if (w->mb && !w->k.tw)
    return sl__win_minibatch(w, port, recs, n);
  if (w->a->tumble_hits)
    return sl__keyed_loop(&w->k, port, recs, n, win_prefetch, win_tumble_hit,
                          win_element, true);
  if (w->a->session_hits)
    return sl__keyed_loop(&w->k, port, recs, n, win_prefetch, win_session_hit,
                          win_element, true);
  return sl__keyed_batch(&w->k, port, recs, n, win_prefetch, win_element);
}

static sl_state_t *reg(win *w, sl_state_desc_t *d, char *err, size_t n,
                       int *rc) {
  sl_state_t *st = NULL;
  if (!*rc)
    *rc = sl__state_register(w->k.state, d, &st, err, n);
  return st;
}

/* What the layout of the window's contents depends on, recorded in each
 * checkpoint (checkpoint/layout.h): the assigner, whether the function
 * aggregates (its accumulator size) or keeps every element, and the path.
 * A sliding aggregate with merge keeps one accumulator per slice, without
 * one per window, so gaining or losing merge changes the path (merge
 * itself is not recorded: a tumbling aggregate that gains it keeps its
 * layout); and
 * per-window accumulators cannot be split into slices, nor (without the
 * merge the per-window job lacks) slices combined, so a restore across
 * that change fails instead of reading one layout as the other. */
static int set_layout(sl_state_t *st, const warg *a) {
  static const char *const assigners[] = {"tumbling", "sliding", "session",
                                          "global"};
  char text[256];
  int s = (int)a->s.assigner;
  snprintf(text, sizeof(text), "window=%s fn=%s acc=%zu path=%s slice=%lld",
           assigners[s >= 0 && s < 4 ? s : 0], a->agg ? "aggregate" : "full",
           a->agg ? a->acc_size : 0,
           a->sliced          ? "per-slice"
           : a->lazy_sessions ? "sessions"
                              : "per-window",
           (long long)(a->sliced ? a->slice : 0));
  return st ? sl__state_set_layout(st, text) : 0;
}

/* The layout of session_ends and session_starts (session.c) records the
 * gap too: the one-read path relies on every stored session being at
 * least gap long (or marked). The gap may change across a restore, as in
 * Flink: the restore does not compare it and hands the recorded one to
 * sl__session_restored, which marks the sessions a larger gap leaves
 * shorter. Both states carry the same text, so that a restore that drops
 * one (restore.allow.dropped.state) drops the other. */
static int set_session_layout(sl_state_t *st, const warg *a) {
  char text[256];
  char gap[32];
  if (a->s.gap_fn)
    snprintf(gap, sizeof(gap), "dynamic");
  else
    snprintf(gap, sizeof(gap), "%lld", (long long)a->s.gap);
  snprintf(text, sizeof(text), "window=session fn=%s acc=%zu path=ends gap=%s",
           a->agg ? "aggregate" : "full", a->agg ? a->acc_size : 0, gap);
  int rc = sl__state_set_layout(st, text);
  return rc ? rc : sl__state_set_layout_adapts(st, "gap");
}

static int win_restored(sl_ctx_t *op, uint32_t kg_lo, uint32_t kg_hi,
                        bool layouts) {
  win *w = sl_op_data(op);
  return w->a->lazy_sessions ? sl__session_restored(w, kg_lo, kg_hi, layouts)
                             : 0;
}

static int win_open(sl_ctx_t *op) {
  const warg *a = sl_op_arg(op);
  win *w = calloc(1, sizeof(*w));
  if (!w)
    return SL_ERR_NOMEM;
  w->a = a;
  w->k.op = op;
  sl_op_set_data(op, w);
  sl_op_set_keyed(op, &w->k);
  int rc = sl__timers_new(&w->k.timers);
  if (!rc)
    rc = sl__kstate_open(&w->k);
  if (rc)
    return sl_op_fail(op, rc, "cannot create keyed state: %s", sl_strerror(rc));
  /* res holds a result and, after it, one spare accumulator. */
  w->res = calloc(1, ((a->res_size + 7) & ~(size_t)7) + a->acc_size + 8);
  if (!w->res)
    return sl_op_fail(op, SL_ERR_NOMEM, "out of memory");
  char err[256] = "cannot record the state layout";
  rc = 0;
  sl_state_desc_t d = {.name = "contents", .kind = SL_STATE_VALUE};
  if (a->sliced) {
    d.name = "slices";
    w->slices = reg(w, &d, err, sizeof(err), &rc);
  } else if (a->agg && !a->lazy_sessions) {
    w->acc = reg(w, &d, err, sizeof(err), &rc);
  } else if (!a->agg) {
    d.kind = SL_STATE_LIST;
    w->list = reg(w, &d, err, sizeof(err), &rc);
  }

  if (a->trig == SL_TRIGGER_COUNT) {
    sl_state_desc_t c = {.name = "count", .kind = SL_STATE_VALUE};
    w->cnt = reg(w, &c, err, sizeof(err), &rc);
  }
  if (a->trig == SL_TRIGGER_CONTINUOUS_EVENT_TIME) {
    sl_state_desc_t c = {.name = "fire", .kind = SL_STATE_VALUE};
    w->fire = reg(w, &c, err, sizeof(err), &rc);
  }
  if (a->s.assigner == SL_WINDOW_SESSION) {
    sl_state_desc_t c = {.name = "sessions", .kind = SL_STATE_VALUE};
    w->sess = reg(w, &c, err, sizeof(err), &rc);
  }
  if (a->lazy_sessions) {
    sl_state_desc_t c = {.name = "session_data", .kind = SL_STATE_VALUE};
    w->sdata = reg(w, &c, err, sizeof(err), &rc);
    c.name = "session_ends";
    w->ends = reg(w, &c, err, sizeof(err), &rc);
    c.name = "session_starts";
    w->starts = reg(w, &c, err, sizeof(err), &rc);
    if (!rc) {
      w->sess_id = sl__state_id(w->sess);
      w->sdata_id = sl__state_id(w->sdata);
      w->ends_id = sl__state_id(w->ends);
      w->starts_id = sl__state_id(w->starts);
      rc = set_session_layout(w->ends, a);
      if (!rc)
        rc = set_session_layout(w->starts, a);
    }
  }
  /* Event-time sessions keep the layout text of their earlier states
   * (path=sessions on session_data or contents), so that checkpoints of
   * that layout restore; their current states carry their own. */
  if (!rc)
    rc = set_layout(w->slices ? w->slices
                    : w->acc  ? w->acc
                    : w->list ? w->list
                              : w->sdata,
                    a);
  if (rc)
    return sl_op_fail(op, rc, "%s", err);
  w->mb = sl__win_minibatch_applies(a) &&
          sl__conf_bool(sl_op_conf(op), "mini.batch");
  const sl__backend *be = sl__kstate_backend(w->k.state);
  if (a->lazy_sessions && be->ops->prefetch)
    w->k.timer_prefetch = win_timer_prefetch;
  /* Each key's next session timer lies a gap ahead, alone at its
   * timestamp more often than not. */
  if (a->lazy_sessions)
    sl__timers_coarse(w->k.timers, SL__TIMER_EVENT);
  /* Most have become early by the time their slot comes up, and move on
   * from there without firing; the recheck reads the key's sessions by
   * a direct probe, so only a backend with direct tables can answer. */
  if (a->lazy_sessions && be->ops->direct)
    sl__timers_recheck(w->k.timers, SL__TIMER_EVENT, sl__session_due,
                       win_due_prefetch, w);
  return 0;
}

static void win_close(sl_ctx_t *op) {
  win *w = sl_op_data(op);
  if (!w)
    return;
  sl__kstate_close(&w->k);
  sl__timers_free(w->k.timers);
  sl_op_set_keyed(op, NULL);
  sl_op_set_data(op, NULL);
  free(w->res);
  free(w->buf);
  sl__buf_free(&w->sbuf);
  free(w->pairs);
  sl__win_minibatch_free(w);
  free(w);
}

static void warg_free(void *p) {
  warg *a = p;
  if (a)
    free(a->late_tag);
  free(a);
}

static const sl_operator_ops_t window_ops = {
    .kind = "window",
    .keyed = true,
    .open = win_open,
    .restored = win_restored,
    .process_keyed = win_process,
    .on_watermark = win_watermark,
    .on_proc_time = win_time,
    .close = win_close,
    .free_arg = warg_free,
};

/* ---- Building ------------------------------------------------------------ */

static int64_t gcd64(int64_t a, int64_t b) {
  while (b) {
    int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

static const char *spec_check(const sl_window_spec_t *s, bool join) {
  if ((unsigned)s->assigner > SL_WINDOW_GLOBAL)
    return "unknown assigner";
  if ((unsigned)s->time > SL_PROC_TIME)
    return "unknown time domain";
  if ((s->assigner == SL_WINDOW_TUMBLING || s->assigner == SL_WINDOW_SLIDING) &&
      s->size <= 0)
    return "size must be > 0";
  if (s->assigner == SL_WINDOW_SLIDING && s->slide <= 0)
    return "slide must be > 0";
  if (s->assigner == SL_WINDOW_SESSION && !s->gap_fn && s->gap <= 0)
    return "a session window needs gap > 0 or gap_fn";
  if ((unsigned)s->trigger > SL_TRIGGER_CONTINUOUS_EVENT_TIME)
    return "unknown trigger";
  if (s->trigger == SL_TRIGGER_COUNT && !s->count)
    return "the count trigger needs count > 0";
  if (s->trigger == SL_TRIGGER_CONTINUOUS_EVENT_TIME && s->interval <= 0)
    return "the continuous trigger needs interval > 0";
  if (s->allowed_lateness < 0)
    return "allowed_lateness must be >= 0";
  if (join && s->assigner == SL_WINDOW_GLOBAL && s->trigger != SL_TRIGGER_COUNT)
    return "a global window join needs the count trigger";
  return NULL;
}

static const char *fn_check(const sl_window_fn_t *f, bool session) {
  if ((unsigned)f->builtin > SL_AGG_MAX_INT)
    return "unknown built-in aggregate";
  if (f->builtin && f->add)
    return "give either a built-in aggregate or add, not both";
  if (f->builtin > SL_AGG_COUNT && f->builtin <= SL_AGG_AVG && !f->num)
    return "the built-in aggregate needs a numeric extractor (num)";
  if (f->builtin >= SL_AGG_SUM_INT && !f->num_int)
    return "the built-in integer aggregate needs an integer extractor "
           "(num_int)";
  if (f->add && (!f->acc_size || f->acc_size > 65536))
    return "an aggregate needs 0 < acc_size <= 65536";
  if (f->add && f->result && (!f->result_size || f->result_size > 65536))
    return "an aggregate with result needs 0 < result_size <= 65536";
  if (!f->builtin && !f->add && !f->process)
    return "a window function needs an aggregate, process, or both";
  if (session && f->add && !f->merge)
    return "session windows need the aggregate's merge";
  return NULL;
}

static sl_stream_t *add(sl_stream_t *const *in, size_t n, const char *uid,
                        const sl_window_spec_t *spec, const sl_window_fn_t *fn,
                        sl_join_fn join, void *opaque) {
  if (!in[0] || (n > 1 && !in[1]))
    return NULL;
  sl_job_t *job = sl_stream_job(in[0]);
  const char *kind = join ? "window join" : "window";
  const char *why = !spec          ? "no window spec"
                    : !join && !fn ? "no window function"
                                   : NULL;
  if (!why)
    why = spec_check(spec, join != NULL);
  if (!why && !join)
    why = fn_check(fn, spec->assigner == SL_WINDOW_SESSION);
  if (why) {
    sl_job_build_error(job, SL_ERR_INVAL, "%s \"%s\": %s", kind, uid ? uid : "",
                       why);
    return NULL;
  }
  warg *a = calloc(1, sizeof(*a));
  if (!a || (spec->late_tag && !(a->late_tag = strdup(spec->late_tag)))) {
    free(a);
    sl_job_build_error(job, SL_ERR_NOMEM, "%s: out of memory", kind);
    return NULL;
  }
  a->s = *spec;
  a->s.late_tag = a->late_tag;
  if (fn)
    a->f = *fn;
  a->opaque = opaque;
  a->join = join;
  a->event = spec->time == SL_EVENT_TIME;
  if (spec->assigner == SL_WINDOW_TUMBLING)
    a->s.offset = w_fmod(spec->offset, spec->size);
  if (spec->assigner == SL_WINDOW_SLIDING)
    a->s.offset = w_fmod(spec->offset, spec->slide);
  a->trig = spec->trigger;
  if (a->trig == SL_TRIGGER_DEFAULT)
    a->trig = spec->assigner == SL_WINDOW_GLOBAL ? W_TRIG_NEVER
              : a->event                         ? SL_TRIGGER_EVENT_TIME
                                                 : SL_TRIGGER_PROC_TIME;
  a->agg = !join && (a->f.builtin || a->f.add);
  if (a->f.builtin) {
    a->acc_size = a->f.builtin == SL_AGG_AVG ? sizeof(w_avg) : 8;
    a->res_size = 8;
  } else if (a->agg) {
    a->acc_size = a->f.acc_size;
    a->res_size = a->f.result ? a->f.result_size : a->f.acc_size;
  }
  /* Slicing needs merge and the plain event-time trigger. */
  a->sliced = a->agg && spec->assigner == SL_WINDOW_SLIDING && a->event &&
              a->trig == SL_TRIGGER_EVENT_TIME && !spec->purge &&
              (a->f.builtin || a->f.merge);
  if (a->sliced)
    a->slice = gcd64(spec->size, spec->slide);
  a->lazy_sessions = spec->assigner == SL_WINDOW_SESSION && a->event &&
                     a->trig == SL_TRIGGER_EVENT_TIME && !spec->purge;
  a->tumble_hits = a->agg && spec->assigner == SL_WINDOW_TUMBLING && a->event &&
                   a->trig == SL_TRIGGER_EVENT_TIME && !spec->purge;
  a->session_hits = a->lazy_sessions && a->agg && !spec->gap_fn;
  return sl_op_add(in, n, uid, &window_ops, a, false);
}

sl_stream_t *sl_window(sl_stream_t *keyed, const char *uid,
                       const sl_window_spec_t *spec, const sl_window_fn_t *fn,
                       void *opaque) {
  return add(&keyed, 1, uid, spec, fn, NULL, opaque);
}

sl_stream_t *sl_window_join(sl_stream_t *left, sl_stream_t *right,
                            const char *uid, const sl_window_spec_t *spec,
                            sl_join_fn fn, void *opaque) {
  sl_stream_t *in[2] = {left, right};
  if (!fn && left) {
    sl_job_build_error(sl_stream_job(left), SL_ERR_INVAL,
                       "window join \"%s\": no join function", uid ? uid : "");
    return NULL;
  }
  return add(in, 2, uid, spec, NULL, fn, opaque);
}
