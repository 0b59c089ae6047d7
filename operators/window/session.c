/* SPDX-License-Identifier: Apache-2.0 */
/* Session windows (Flink's MergingWindowSet): the current key's sessions
 * live in one value state, sorted by start; a new element's window merges
 * with every session it overlaps or touches, and their contents fold into
 * the state window of the earliest one, which stays put. Event-time
 * sessions with the default trigger keep one lazy timer per session (see
 * lazy_element) instead of moving timers on every extension. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "state/state.h"
#include "time/timers.h"
#include "window_int.h"

/* One stored session: the window and the start of its state window (the
 * namespace its contents live in, which stays put when it merges). */
typedef struct sess {
  int64_t start, end, sstart;
} sess;

/* ---- Session windows (Flink's MergingWindowSet) -------------------------- */

/* The current key's sessions, sorted by start, copied into w->buf. */
static int sess_load(win *w, sess **out, size_t *n, size_t extra) {
  const void *v;
  size_t len;
  w->k.ns = NULL;
  w->k.ns_len = 0;
  int rc = sl__value_get(&w->k, w->sess, &v, &len);
  if (rc < 0)
    return rc;
  size_t cnt = rc == 1 ? len / sizeof(sess) : 0;
  sess *s = sl__win_buf(w, (cnt + extra) * sizeof(sess));
  if (!s)
    return SL_ERR_NOMEM;
  if (cnt)
    memcpy(s, v, cnt * sizeof(sess));
  *out = s;
  *n = cnt;
  return 0;
}

static int sess_store(win *w, const sess *s, size_t n) {
  w->k.ns = NULL;
  w->k.ns_len = 0;
  if (!n)
    return sl__state_clear(&w->k, w->sess);
  return sl__value_put(&w->k, w->sess, s, n * sizeof(sess));
}

/* Folds the contents and trigger state of namespace from into w->ns. */
static int merge_state(win *w, int64_t from) {
  const warg *a = w->a;
  int64_t into = w->ns;
  const void *src_ns = &from;
  size_t src_len = sizeof(from);
  int rc;
  if (!a->agg) {
    rc = sl__state_merge_ns(&w->k, w->list, &src_ns, &src_len, 1);
  } else {
    const void *v;
    size_t len;
    w_set_ns(w, from);
    rc = sl__value_get(&w->k, w->acc, &v, &len);
    if (rc == 1) {
      unsigned char *tmp = w_spare(w);
      memcpy(tmp, v, a->acc_size);
      if ((rc = sl__state_clear(&w->k, w->acc)) == 0) {
        bool fresh;
        int e = 0;
        w_set_ns(w, into);
        void *acc = sl__value_ptr(&w->k, w->acc, a->acc_size, &fresh, &e);
        if (!acc)
          return e;
        if (fresh)
          memcpy(acc, tmp, a->acc_size);
        else
          w_agg_merge(a, acc, tmp);
      }
    }
    w_set_ns(w, into);
  }
  if (rc < 0)
    return rc;
  if (a->trig == SL_TRIGGER_COUNT) {
    /* Count trigger: the merged window's count is the sum. */
    const void *v;
    size_t len;
    int64_t c = 0;
    w_set_ns(w, from);
    if ((rc = sl__value_get(&w->k, w->cnt, &v, &len)) == 1 &&
        len == sizeof(c)) {
      memcpy(&c, v, sizeof(c));
      rc = sl__state_clear(&w->k, w->cnt);
    }
    w_set_ns(w, into);
    if (rc < 0)
      return rc;
    int e = 0;
    int64_t *t = sl__value_ptr(&w->k, w->cnt, sizeof(int64_t), NULL, &e);
    if (!t)
      return e;
    *t += c;
  }
  if (a->trig == SL_TRIGGER_CONTINUOUS_EVENT_TIME) {
    /* The next early firing is the earliest of the merged ones (Flink
     * merges the fire-timestamp state with min). */
    const void *v;
    size_t len;
    int64_t f;
    w_set_ns(w, from);
    rc = sl__value_get(&w->k, w->fire, &v, &len);
    if (rc == 1 && len == sizeof(f)) {
      memcpy(&f, v, sizeof(f));
      if ((rc = sl__state_clear(&w->k, w->fire)) == 0) {
        w_set_ns(w, into);
        rc = sl__value_get(&w->k, w->fire, &v, &len);
        int64_t g;
        if (rc == 0 ||
            (rc == 1 && len == sizeof(g) && (memcpy(&g, v, sizeof(g)), f < g)))
          rc = sl__value_put(&w->k, w->fire, &f, sizeof(f));
      }
    }
    w_set_ns(w, into);
  }
  return rc < 0 ? rc : 0;
}

/* Flink's onMerge for the trigger of the merged window. */
static int trig_merge(win *w, const sl_window_t *wd, int64_t wm) {
  const warg *a = w->a;
  int64_t m = w_max_ts(wd);
  switch (a->trig) {
  case SL_TRIGGER_EVENT_TIME:
    return m > wm ? sl__win_tset(w, SL_EVENT_TIME, m, wd) : 0;
  case SL_TRIGGER_PROC_TIME:
    return sl__win_tset(w, SL_PROC_TIME, m, wd);
  case SL_TRIGGER_CONTINUOUS_EVENT_TIME: {
    int rc = m > wm ? sl__win_tset(w, SL_EVENT_TIME, m, wd) : 0;
    /* The merged fire timestamp, now a timer of the merged window. */
    const void *v;
    size_t len;
    int64_t f;
    if (!rc && (rc = sl__value_get(&w->k, w->fire, &v, &len)) == 1 &&
        len == sizeof(f)) {
      memcpy(&f, v, sizeof(f));
      rc = sl__win_tset(w, SL_EVENT_TIME, f, wd);
    }
    return rc < 0 ? rc : 0;
  }
  default:
    return 0;
  }
}

/* ---- Event-time sessions with the default trigger: the fast path --------
 * A session extends with nearly every element; moving its trigger and
 * cleanup timers each time (as Flink does) costs a timer delete and add per
 * element. Each key has one chain of event-time timers instead: a timer is
 * pending exactly at the earliest deadline of its sessions (max_ts until
 * fired, then max_ts + lateness), registered again at the next deadline
 * when it fires. Extensions only move deadlines later, so a pending timer
 * that became early just re-registers; a new session or a re-opened fired
 * one adds its own exact deadline. Most become early long before they are
 * due (a key's session grows with each element), so the timer service
 * asks about each as its coarse slot comes up (sl__session_due), and an
 * early one moves on to the next deadline there, in a batch whose state
 * is prefetched, instead of firing. Firing and cleanup so happen at exactly
 * Flink's watermarks, each session once per max_ts.
 *
 * A key's sessions, sorted by start, are two value states without
 * namespace:
 * - `session_ends`: per session its end and its data (the accumulator, or
 *   without an aggregate the namespace of the session's element list);
 *   one session with 8 bytes of data is 16 bytes, inline in a hashmap
 *   slot, and this is the state prefetched with the key;
 * - `session_starts`: per session its start.
 * An element nearly always extends the key's last session: its window
 * [t, t + gap) starts at or before that session's end and ends at or
 * after it. With a fixed gap a session is at least gap long (merging only
 * widens), so such a t is at or after the session's start, and the
 * session becomes [start, t + gap): its end and data decide everything,
 * and the element costs one state read (lz_extend). A new session, a
 * merge, an element before the last session, a dynamic gap, and firing
 * read both (lz_read, on a decoded copy).
 *
 * A last session shorter than the gap (its end saturated at SL_TS_MAX, or
 * stored under a smaller or dynamic gap and restored under this one) is
 * marked by an 8-byte trailer after the key's `session_ends`, which
 * lz_extend refuses; lz_write sets or clears it whenever it stores a key.
 * A checkpoint of this layout records the gap (win_open); restored under
 * a larger fixed gap, every key is stored again once before any element
 * (sl__session_restored), which marks its sessions as needed.
 *
 * The earlier layout, two reads per element (`sessions`: start, end;
 * `session_data`: the data), is still registered so that its checkpoints
 * restore: a key found there is converted at its first access (lz_read),
 * and every key with sessions has a pending timer, so each is in time. */

static int64_t lz_i64(const unsigned char *p) {
  int64_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}

static void lz_skey(const win *w, uint32_t id, sl__skey *sk) {
  *sk = (sl__skey){id, w->k.kg, w->k.hash, w->k.key, w->k.key_len, NULL, 0};
}

/* The current key's value of state id (the backend's get: 1 found, 0
 * absent, < 0 an error). */
static inline int lz_get(win *w, uint32_t id, void **p, size_t *len,
                         bool write) {
  sl__backend *be = sl__kstate_backend(w->k.state);
  sl__skey sk;
  lz_skey(w, id, &sk);
  return be->ops->get(be, &sk, p, len, write);
}

/* Room for n bytes of decoded sessions (start, end, data each), kept
 * apart from w->buf, which element frames and firing copies use. */
static unsigned char *lz_scratch(win *w, size_t n) {
  w->sbuf.len = 0;
  return sl__buf_reserve(&w->sbuf, n) ? NULL : w->sbuf.data;
}

/* Stores the n decoded sessions s (fs bytes each) as the current key's
 * two states, or removes both when n is 0. */
static int lz_write(win *w, const unsigned char *s, size_t n) {
  const warg *a = w->a;
  sl__backend *be = sl__kstate_backend(w->k.state);
  size_t ds = w_session_ds(a), es = ds + 8, fs = ds + 16;
  sl__skey se, ss;
  lz_skey(w, w->ends_id, &se);
  lz_skey(w, w->starts_id, &ss);
  int rc;
  if (!n) {
    if ((rc = be->ops->del(be, &se)) < 0 || (rc = be->ops->del(be, &ss)) < 0)
      return rc;
    return 0;
  }
  /* end >= start, so the difference is exact as unsigned. */
  const unsigned char *l = s + (n - 1) * fs;
  bool shorter = !a->s.gap_fn && (uint64_t)lz_i64(l + 8) - (uint64_t)lz_i64(l) <
                                     (uint64_t)a->s.gap;
  void *p;
  if ((rc = be->ops->slot(be, &se, n * es + (shorter ? 8 : 0), &p)) < 0)
    return rc;
  unsigned char *e = p;
  for (size_t i = 0; i < n; i++)
    memcpy(e + i * es, s + i * fs + 8, es);
  if (shorter)
    memset(e + n * es, 0, 8);
  if ((rc = be->ops->slot(be, &ss, n * sizeof(int64_t), &p)) < 0)
    return rc;
  for (size_t i = 0; i < n; i++)
    memcpy((unsigned char *)p + i * sizeof(int64_t), s + i * fs,
           sizeof(int64_t));
  return 0;
}

/* A key still in the earlier layout: its sessions decoded into the
 * scratch (with room for extra more), stored in this layout, and the old
 * entries removed. *n = 0 when it has none there either. */
static int lz_convert(win *w, unsigned char **out, size_t *n, size_t extra) {
  const warg *a = w->a;
  sl__backend *be = sl__kstate_backend(w->k.state);
  size_t ds = w_session_ds(a), fs = ds + 16;
  sl__skey sk;
  void *p;
  size_t len;
  lz_skey(w, w->sess_id, &sk);
  int rc = be->ops->get(be, &sk, &p, &len, false);
  if (rc < 0)
    return rc;
  size_t cnt = rc == 1 ? len / (2 * sizeof(int64_t)) : 0;
  unsigned char *s = lz_scratch(w, (cnt + extra) * fs);
  if (!s)
    return SL_ERR_NOMEM;
  *out = s;
  *n = 0;
  if (!cnt)
    return 0;
  for (size_t i = 0; i < cnt; i++)
    memcpy(s + i * fs, (unsigned char *)p + i * 16, 16);
  sk.state = w->sdata_id;
  if ((rc = be->ops->get(be, &sk, &p, &len, false)) < 0)
    return rc;
  if (rc == 0 || len != cnt * ds)
    return SL_ERR_CORRUPT;
  for (size_t i = 0; i < cnt; i++)
    memcpy(s + i * fs + 16, (unsigned char *)p + i * ds, ds);
  if ((rc = be->ops->del(be, &sk)) < 0)
    return rc;
  sk.state = w->sess_id;
  if ((rc = be->ops->del(be, &sk)) < 0 || (rc = lz_write(w, s, cnt)))
    return rc;
  *n = cnt;
  return 0;
}

/* The current key's sessions decoded into the scratch, with room for
 * extra more: start, end and data each (*n = 0 when none). */
static int lz_read(win *w, unsigned char **out, size_t *n, size_t extra) {
  const warg *a = w->a;
  sl__backend *be = sl__kstate_backend(w->k.state);
  size_t ds = w_session_ds(a), es = ds + 8, fs = ds + 16;
  sl__skey sk;
  void *p;
  size_t len;
  lz_skey(w, w->ends_id, &sk);
  int rc = be->ops->get(be, &sk, &p, &len, false);
  if (rc < 0)
    return rc;
  if (rc == 0)
    return lz_convert(w, out, n, extra);
  size_t cnt = len / es;
  if (!cnt || (len % es != 0 && len % es != 8))
    return SL_ERR_CORRUPT;
  unsigned char *s = lz_scratch(w, (cnt + extra) * fs);
  if (!s)
    return SL_ERR_NOMEM;
  for (size_t i = 0; i < cnt; i++)
    memcpy(s + i * fs + 8, (unsigned char *)p + i * es, es);
  /* Copied before the second lookup, which may move the first's bytes. */
  sk.state = w->starts_id;
  if ((rc = be->ops->get(be, &sk, &p, &len, false)) < 0)
    return rc;
  if (rc == 0 || len != cnt * sizeof(int64_t))
    return SL_ERR_CORRUPT;
  for (size_t i = 0; i < cnt; i++)
    memcpy(s + i * fs, (unsigned char *)p + i * sizeof(int64_t),
           sizeof(int64_t));
  *out = s;
  *n = cnt;
  return 0;
}

static int lz_timer_at(win *w, int64_t ts) {
  if (ts == INT64_MAX)
    return 0;
  return sl__timers_add(w->k.timers, SL__TIMER_EVENT, ts, w->k.hash, w->k.kg,
                        w->k.key, w->k.key_len, NULL, 0);
}

/* Fires session aw: data is its accumulator (a copy) or its namespace. */
static int lz_fire(win *w, const sl_window_t *aw, const void *data) {
  if (!w->a->agg) {
    int64_t ns;
    memcpy(&ns, data, sizeof(ns));
    w_set_ns(w, ns);
    return sl__win_emit(w, aw);
  }
  sl_ctx_t *op = w->k.op;
  sl_op_set_out_ts(op, true, w_max_ts(aw));
  sl_arena_mark_t m = sl_op_arena_mark(op);
  int rc = sl__win_emit_result(w, aw, data);
  sl_op_arena_release(op, m);
  return rc;
}

/* The start of the last of the key's n sessions (for firing). */
static int lz_last_start(win *w, size_t n, int64_t *start) {
  void *p;
  size_t len;
  int rc = lz_get(w, w->starts_id, &p, &len, false);
  if (rc < 0)
    return rc;
  if (rc == 0 || len != n * sizeof(int64_t))
    return SL_ERR_CORRUPT;
  *start = lz_i64((unsigned char *)p + len - sizeof(int64_t));
  return 0;
}

/* The one-read path: the element's window nw reaches from at or before
 * the end of the key's last session (its end and data at e, in place in
 * session_ends of n sessions) to at or after it, so that session becomes
 * [start, nw.end). */
static int lz_extend(win *w, int port, const sl_record_t *rec, unsigned char *e,
                     size_t n, sl_window_t nw, int64_t wm, bool *skipped) {
  const warg *a = w->a;
  sl_window_t old = {nw.start, lz_i64(e)};
  int64_t m = w_max_ts(&nw);
  /* A session that fired already waits for its cleanup: extended past
   * the watermark, it must fire again at its new max_ts first. */
  bool refire = w_max_ts(&old) <= wm && m > wm;
  memcpy(e, &nw.end, sizeof(nw.end));
  *skipped = false;
  int rc;
  if (refire && (rc = lz_timer_at(w, m)))
    return rc;
  bool fire = m <= wm;
  sl_window_t aw = nw;
  if (a->agg) {
    if ((rc = w_agg_add(a, e + 8, rec)) || !fire)
      return rc;
    /* User code gets a copy: the entry may move meanwhile. */
    void *acc = w_spare(w);
    memcpy(acc, e + 8, a->acc_size);
    if ((rc = lz_last_start(w, n, &aw.start)))
      return rc;
    return lz_fire(w, &aw, acc);
  }
  int64_t ns = lz_i64(e + 8);
  w_set_ns(w, ns);
  bool fresh;
  if ((rc = sl__win_add(w, port, rec, &fresh)) || !fire)
    return rc;
  if ((rc = lz_last_start(w, n, &aw.start)))
    return rc;
  return lz_fire(w, &aw, &ns);
}

/* Session i of decoded sessions s: start, end, data. */
#define LZ_S(s, i, fs) ((s) + (i) * (fs))

static int lazy_general(win *w, int port, const sl_record_t *rec,
                        sl_window_t nw, int64_t wm, bool *skipped) {
  const warg *a = w->a;
  size_t ds = w_session_ds(a), fs = ds + 16;
  unsigned char *s;
  size_t n;
  int rc = lz_read(w, &s, &n, 1);
  if (rc)
    return rc;
  size_t i = 0, j;
  while (i < n && lz_i64(LZ_S(s, i, fs) + 8) < nw.start)
    i++;
  j = i;
  while (j < n && lz_i64(LZ_S(s, j, fs)) <= nw.end)
    j++;
  sl_window_t aw;
  int64_t tm = INT64_MAX; /* a timer to add */
  size_t merged = 0;
  int64_t *ms = NULL;
  if (i == j) {
    if (sl__win_late(a, &nw, wm))
      return 0;
    memmove(LZ_S(s, i + 1, fs), LZ_S(s, i, fs), (n - i) * fs);
    unsigned char *x = LZ_S(s, i, fs);
    memcpy(x, &nw.start, 8);
    memcpy(x + 8, &nw.end, 8);
    memset(x + 16, 0, ds);
    if (a->agg)
      w_agg_init(a, x + 16);
    else
      memcpy(x + 16, &nw.start, sizeof(int64_t));
    n++;
    aw = nw;
    int64_t m = w_max_ts(&aw);
    tm = m > wm ? m : w_cleanup(a, &aw);
  } else {
    unsigned char *x = LZ_S(s, i, fs);
    sl_window_t first = {lz_i64(x), lz_i64(x + 8)};
    int64_t last_end = lz_i64(LZ_S(s, j - 1, fs) + 8);
    aw.start = first.start < nw.start ? first.start : nw.start;
    aw.end = last_end > nw.end ? last_end : nw.end;
    /* A session that fired already waits for its cleanup: merged into a
     * window whose max_ts is ahead of the watermark, it must fire again
     * there first. */
    if (w_max_ts(&first) <= wm && w_max_ts(&aw) > wm)
      tm = w_max_ts(&aw);
    merged = j - i - 1;
    if (merged) {
      if (a->agg) {
        for (size_t y = i + 1; y < j; y++)
          w_agg_merge(a, x + 16, LZ_S(s, y, fs) + 16);
      } else {
        if (!(ms = sl__win_buf(w, merged * sizeof(int64_t))))
          return SL_ERR_NOMEM;
        for (size_t y = i + 1; y < j; y++)
          memcpy(ms + (y - i - 1), LZ_S(s, y, fs) + 16, sizeof(int64_t));
      }
      memmove(LZ_S(s, i + 1, fs), LZ_S(s, j, fs), (n - j) * fs);
      n -= merged;
    }
    memcpy(x, &aw.start, 8);
    memcpy(x + 8, &aw.end, 8);
  }
  *skipped = false;
  bool fire = w_max_ts(&aw) <= wm;
  unsigned char *data = LZ_S(s, i, fs) + 16;
  /* The session is stored whatever the aggregate says, as the timers are:
   * an error skipped by error.policy must leave a consistent key. */
  int add = a->agg ? w_agg_add(a, data, rec) : 0;
  if ((rc = lz_write(w, s, n)) || (rc = lz_timer_at(w, tm)))
    return rc;
  if (a->agg) {
    if (add || !fire)
      return add;
    void *acc = w_spare(w);
    memcpy(acc, data, a->acc_size);
    return lz_fire(w, &aw, acc);
  }
  int64_t ns = lz_i64(data);
  w_set_ns(w, ns);
  for (size_t y = 0; y < merged; y++)
    if ((rc = merge_state(w, ms[y])))
      return rc;
  w_set_ns(w, ns);
  bool fresh;
  if ((rc = sl__win_add(w, port, rec, &fresh)))
    return rc;
  return fire ? lz_fire(w, &aw, &ns) : 0;
}

static int lazy_element(win *w, int port, const sl_record_t *rec,
                        sl_window_t nw, int64_t wm, bool *skipped) {
  const warg *a = w->a;
  if (SL__LIKELY(!a->s.gap_fn)) {
    size_t es = w_session_ds(a) + 8;
    void *p;
    size_t len;
    int rc = lz_get(w, w->ends_id, &p, &len, true);
    if (SL__UNLIKELY(rc < 0))
      return rc;
    if (SL__LIKELY(rc == 1 && len % es == 0 && len)) {
      unsigned char *e = (unsigned char *)p + len - es;
      int64_t end = lz_i64(e);
      if (SL__LIKELY(nw.start <= end && nw.end >= end))
        return lz_extend(w, port, rec, e, len / es, nw, wm, skipped);
    }
  }
  return lazy_general(w, port, rec, nw, wm, skipped);
}

/* Whether the timer of a key at ts is due: whether one of its n
 * sessions, whose ends lie es bytes apart from p on (session_ends), has
 * its max_ts at ts or its cleanup at or before ts. If not, *next is the
 * earliest of their deadlines after ts (INT64_MAX: none), where the
 * key's chain goes on: the timer at ts fired early, as most do, because
 * the session it was set for has grown since. The ends alone say so. */
static bool lz_due(const warg *a, const unsigned char *p, size_t n, size_t es,
                   int64_t ts, int64_t *next) {
  *next = INT64_MAX;
  for (size_t i = 0; i < n; i++) {
    sl_window_t aw = {0, lz_i64(p + i * es)};
    int64_t m = w_max_ts(&aw), c = w_cleanup(a, &aw);
    if (m == ts || c <= ts)
      return true;
    int64_t d = m > ts ? m : c;
    if (d < *next)
      *next = d;
  }
  return false;
}

int64_t sl__session_due(void *opaque, const sl__timer_view *v) {
  win *w = opaque;
  size_t es = w_session_ds(w->a) + 8, len;
  const unsigned char *p = v->ns_len
                               ? NULL
                               : sl__value_peek_key(w->ends, v->kg, v->key,
                                                    v->key_len, v->hash, &len);
  if (!p)
    return v->ts;
  /* The key's sessions as the firing would find them, else no move (a
   * corrupt value: the firing reports it). One, nearly always: no
   * division. */
  size_t n = len == es ? 1 : len / es;
  int64_t next;
  if (!n || (len - n * es != 0 && len - n * es != 8) ||
      lz_due(w->a, p, n, es, v->ts, &next))
    return v->ts;
  return next;
}

int sl__session_lazy_timer(win *w, int64_t ts) {
  const warg *a = w->a;
  size_t ds = w_session_ds(a), es = ds + 8, fs = ds + 16;
  /* One session, as nearly always: found by the value state's direct
   * probe (as window.c's session_hit does for elements), else through
   * the backend. */
  void *p = sl__value_ptr_hit(&w->k, w->ends, es);
  size_t len = es;
  int rc = p ? 1 : lz_get(w, w->ends_id, &p, &len, false);
  if (rc < 0)
    return rc;
  int64_t next;
  if (rc == 1 && !lz_due(a, p, len / es, es, ts, &next))
    return lz_timer_at(w, next);
  unsigned char *s;
  size_t n;
  if ((rc = lz_read(w, &s, &n, 0)) || !n)
    return rc;
  next = INT64_MAX;
  /* Decide everything first, then fire: firing runs user code. Fired
   * sessions are copied (window, then what, then data). */
  size_t fsz = sizeof(sl_window_t) + sizeof(int64_t) + ds;
  unsigned char *fb = sl__win_buf(w, n * fsz);
  if (!fb)
    return SL_ERR_NOMEM;
  size_t nf = 0, keep = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char *x = LZ_S(s, i, fs);
    sl_window_t aw = {lz_i64(x), lz_i64(x + 8)};
    int64_t m = w_max_ts(&aw), c = w_cleanup(a, &aw);
    bool clean = c <= ts;
    if (m == ts || clean) {
      unsigned char *f = fb + nf++ * fsz;
      int64_t what = (m == ts) | (clean ? 2 : 0);
      memcpy(f, &aw, sizeof(aw));
      memcpy(f + sizeof(aw), &what, sizeof(what));
      memcpy(f + sizeof(aw) + sizeof(what), x + 16, ds);
    }
    if (clean)
      continue;
    int64_t d = m > ts ? m : c;
    if (d < next)
      next = d;
    if (keep != i)
      memmove(LZ_S(s, keep, fs), x, fs);
    keep++;
  }
  if (keep != n && (rc = lz_write(w, s, keep)))
    return rc;
  /* The chain goes on before firing, so that a firing skipped by
   * error.policy does not stop it. */
  if ((rc = lz_timer_at(w, next)))
    return rc;
  int first = 0;
  for (size_t f = 0; f < nf; f++) {
    unsigned char *e = fb + f * fsz;
    sl_window_t aw;
    int64_t what;
    memcpy(&aw, e, sizeof(aw));
    memcpy(&what, e + sizeof(aw), sizeof(what));
    void *data = e + sizeof(aw) + sizeof(what);
    if ((what & 1) && (rc = lz_fire(w, &aw, data)) && !first)
      first = rc;
    if ((what & 2) && !a->agg) {
      int64_t ns;
      memcpy(&ns, data, sizeof(ns));
      w_set_ns(w, ns);
      if ((rc = sl__win_clear(w)) && !first)
        first = rc;
    }
  }
  return first;
}

int sl__session_element(win *w, int port, const sl_record_t *rec, int64_t t,
                        int64_t wm, bool *skipped) {
  const warg *a = w->a;
  int64_t gap = a->s.gap;
  if (a->s.gap_fn && (gap = a->s.gap_fn(rec, a->opaque)) <= 0)
    return SL_ERR_USER;
  sl_window_t nw = {t, w_sat_add(t, gap)};
  if (a->lazy_sessions)
    return lazy_element(w, port, rec, nw, wm, skipped);
  sess *s;
  size_t n;
  int rc = sess_load(w, &s, &n, 1);
  if (rc)
    return rc;
  /* Sessions are disjoint and sorted; those intersecting nw (touching
   * counts) are contiguous: [i, j). */
  size_t i = 0, j;
  while (i < n && s[i].end < nw.start)
    i++;
  j = i;
  while (j < n && s[j].start <= nw.end)
    j++;
  sl_window_t aw; /* the actual window the element ends up in */
  int64_t sstart;
  if (i == j) {
    if (sl__win_late(a, &nw, wm))
      return 0; /* never stored: Flink retires it at once */
    memmove(s + i + 1, s + i, (n - i) * sizeof(sess));
    s[i] = (sess){nw.start, nw.end, nw.start};
    n++;
    aw = nw;
    sstart = nw.start;
  } else {
    aw.start = s[i].start < nw.start ? s[i].start : nw.start;
    aw.end = s[j - 1].end > nw.end ? s[j - 1].end : nw.end;
    sstart = s[i].sstart;
    if (j - i > 1 || aw.start != s[i].start || aw.end != s[i].end) {
      /* Flink's merge function: the merged windows' trigger timers and
       * cleanup timers go, their state folds into the first one's state
       * window, then the trigger learns of the merged window. */
      for (size_t x = i; x < j; x++) {
        sl_window_t old = {s[x].start, s[x].end};
        w_set_ns(w, s[x].sstart);
        if ((rc = sl__win_trig_clear(w, &old, false, true)))
          return rc;
        int64_t c = w_cleanup(a, &old);
        if (c != INT64_MAX)
          sl__win_tdel(w, a->event ? SL_EVENT_TIME : SL_PROC_TIME, c, &old);
        if (x > i) {
          w_set_ns(w, sstart);
          if ((rc = merge_state(w, s[x].sstart)))
            return rc;
        }
      }
      w_set_ns(w, sstart);
      if ((rc = trig_merge(w, &aw, wm)))
        return rc;
      s[i] = (sess){aw.start, aw.end, sstart};
      memmove(s + i + 1, s + j, (n - j) * sizeof(sess));
      n -= j - i - 1;
    }
  }
  if ((rc = sess_store(w, s, n)))
    return rc;
  if (sl__win_late(a, &aw, wm))
    return 0;
  *skipped = false;
  w_set_ns(w, sstart);
  return sl__win_one(w, port, rec, &aw, wm, true);
}

/* Removes session wd from the set; *sstart gets its state window start.
 * Returns 1 when found, 0 when wd is not (or no longer) a session. */
int sl__session_find(win *w, const sl_window_t *wd, int64_t *sstart,
                     bool remove) {
  sess *s;
  size_t n;
  int rc = sess_load(w, &s, &n, 0);
  if (rc)
    return rc;
  for (size_t i = 0; i < n; i++) {
    if (s[i].start != wd->start || s[i].end != wd->end)
      continue;
    *sstart = s[i].sstart;
    if (!remove)
      return 1;
    memmove(s + i, s + i + 1, (n - i - 1) * sizeof(sess));
    rc = sess_store(w, s, n - 1);
    return rc ? rc : 1;
  }
  return 0;
}

/* ---- A restore under another gap ----------------------------------------
 * Sessions stored under a gap g are at least g long, or marked; under a
 * gap_fn any length. Restored under a fixed gap no larger than g they
 * keep the one-read rule; under a larger one (or after a gap_fn) a last
 * session may be shorter than the gap and unmarked, which lz_extend would
 * extend from the wrong start. So then every key of session_ends is read
 * and stored again (lz_read, lz_write: that marks it against today's
 * gap), once, before any element or timer: results stay those of the two
 * reads per element that do not depend on the gap. A group task loaded
 * on assignment hands over the layout its snapshot recorded as a whole
 * restore does; only a snapshot from before layouts were recorded hands
 * none, and then its keys are stored again whatever the gap. Keys still
 * in the earlier layout are converted at their first access as ever. */

typedef struct rkeys {
  sl_buf_t b; /* per key: size_t length, then the bytes */
  uint32_t ends_id;
} rkeys;

static int collect_key(uint32_t state, const void *key, size_t key_len,
                       const void *ns, size_t ns_len, const void *mk,
                       size_t mk_len, const void *val, size_t len,
                       void *opaque) {
  (void)ns, (void)ns_len, (void)mk, (void)mk_len, (void)val, (void)len;
  rkeys *r = opaque;
  if (state != r->ends_id)
    return 0;
  int rc = sl_buf_append(&r->b, &key_len, sizeof(key_len));
  return rc ? rc : sl_buf_append(&r->b, key, key_len);
}

/* The value of the gap=... a layout text recorded ("dynamic" for a
 * gap_fn), NULL when it has none; its length in *len. */
static const char *recorded_gap(const char *layout, size_t *len) {
  const char *p = layout;
  while ((p = strstr(p, "gap=")) && p != layout && p[-1] != ' ')
    p += 4;
  if (!p)
    return NULL;
  *len = strcspn(p + 4, " ");
  return p + 4;
}

/* Whether sessions stored under the gap a layout text recorded may be
 * shorter than gap. */
static bool gap_grew(const char *layout, int64_t gap) {
  size_t len;
  const char *v = recorded_gap(layout, &len);
  if (!v)
    return true;
  char *end;
  long long g = strtoll(v, &end, 10);
  return end == v || end != v + len || g < gap;
}

int sl__session_restored(win *w, uint32_t kg_lo, uint32_t kg_hi, bool layouts) {
  const warg *a = w->a;
  if (a->s.gap_fn)
    return 0;
  /* The restore recorded the gap (none: no sessions of this layout
   * restored); a snapshot without layouts may have had any gap, so its
   * keys are stored again. */
  const char *old = sl__state_restored(w->ends);
  if (layouts && (!old || !gap_grew(old, a->s.gap)))
    return 0;
  sl__backend *be = sl__kstate_backend(w->k.state);
  rkeys r = {.ends_id = w->ends_id};
  int rc = 0;
  uint64_t stored = 0;
  for (uint32_t kg = kg_lo; !rc && kg < kg_hi; kg++) {
    r.b.len = 0;
    /* Keys first: storing them again must not run under the scan. */
    if ((rc = be->ops->kg_scan(be, kg, collect_key, &r)))
      break;
    for (size_t off = 0; !rc && off < r.b.len;) {
      size_t kl;
      memcpy(&kl, r.b.data + off, sizeof(kl));
      w->k.key = r.b.data + off + sizeof(kl);
      w->k.key_len = kl;
      w->k.hash = sl__hash64(w->k.key, kl);
      w->k.kg = kg;
      off += sizeof(kl) + kl;
      unsigned char *s;
      size_t n;
      if (!(rc = lz_read(w, &s, &n, 0)) && n && !(rc = lz_write(w, s, n)))
        stored++;
    }
  }
  w->k.key = NULL;
  w->k.key_len = 0;
  sl__buf_free(&r.b);
  /* What the restore cost, as docs/windows.md tells. */
  size_t gl = 0;
  const char *g = layouts && old ? recorded_gap(old, &gl) : NULL;
  if (!rc && stored)
    sl_op_log(w->k.op, SL_LOG_INFO,
              "key groups [%" PRIu32 ", %" PRIu32 "): %" PRIu64
              " key(s) with sessions stored again under gap=%lld (their "
              "snapshot recorded %s%.*s)",
              kg_lo, kg_hi, stored, (long long)a->s.gap, g ? "gap=" : "no gap",
              (int)gl, g ? g : "");
  return rc;
}
