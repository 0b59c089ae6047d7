/* SPDX-License-Identifier: Apache-2.0 */
/* Session windows (Flink's MergingWindowSet): the current key's sessions
 * live in one value state, sorted by start; a new element's window merges
 * with every session it overlaps or touches, and their contents fold into
 * the state window of the earliest one, which stays put. Event-time
 * sessions with the default trigger keep one lazy timer per session (see
 * lazy_element) instead of moving timers on every extension. */
#include <stdlib.h>
#include <string.h>

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
 * element, and a session set plus a separately namespaced accumulator cost
 * two lookups, one of them impossible to prefetch. Here a key's sessions
 * are two parallel arrays in two value states without namespace, both
 * small enough to sit inline in the backend and both prefetched with the
 * key: `sessions` (start, end) and `session_data` (the accumulator, or
 * without an aggregate the namespace of the session's element list).
 * Each key has one chain of event-time timers: a timer is pending exactly
 * at the earliest deadline of its sessions (max_ts until fired, then
 * max_ts + lateness), registered again at the next deadline when it fires.
 * Extensions only move deadlines later, so a pending timer that became
 * early just re-registers; a new session or a re-opened fired one adds
 * its own exact deadline. Firing and cleanup so happen at exactly Flink's
 * watermarks, each session once per max_ts. */

typedef struct sbound {
  int64_t start, end;
} sbound;

typedef struct lz {
  sbound *b;
  unsigned char *d;
  size_t n;
} lz;

static size_t lz_ds(const warg *a) {
  return a->agg ? (a->acc_size + 7) & ~(size_t)7 : sizeof(int64_t);
}

static void lz_skey(const win *w, uint32_t id, sl__skey *sk) {
  *sk = (sl__skey){id, w->k.kg, w->k.hash, w->k.key, w->k.key_len, NULL, 0};
}

/* The current key's session bounds, writable in place; *n = 0 when none. */
static int lz_bounds(win *w, sl__backend *be, sbound **b, size_t *n) {
  sl__skey sk;
  void *p;
  size_t len;
  lz_skey(w, w->sess_id, &sk);
  int rc = be->ops->get(be, &sk, &p, &len, true);
  *b = rc == 1 ? p : NULL;
  *n = rc == 1 ? len / sizeof(sbound) : 0;
  return rc < 0 ? rc : 0;
}

/* Both arrays of the current key, writable in place (the states have no
 * TTL, so the stored bytes are the arrays). z->n = 0 when none. */
static int lz_load(win *w, lz *z) {
  sl__backend *be = sl__kstate_backend(w->k.state);
  sl__skey sk;
  void *b, *d;
  size_t bl, dl;
  lz_skey(w, w->sess_id, &sk);
  int rc = be->ops->get(be, &sk, &b, &bl, true);
  if (rc <= 0) {
    *z = (lz){NULL, NULL, 0};
    return rc;
  }
  z->n = bl / sizeof(sbound);
  uint64_t epoch = be->epoch;
  sk.state = w->sdata_id;
  if ((rc = be->ops->get(be, &sk, &d, &dl, true)) < 0)
    return rc;
  if (rc == 0 || dl != z->n * lz_ds(w->a))
    return SL_ERR_CORRUPT;
  /* The second lookup may have moved the first entry's bytes: the
   * backend's epoch says when (never, for a plain read of the hashmap). */
  sk.state = w->sess_id;
  if (be->epoch != epoch && (rc = be->ops->get(be, &sk, &b, &bl, true)) != 1)
    return rc < 0 ? rc : SL_ERR_CORRUPT;
  z->b = b;
  z->d = d;
  return 0;
}

/* Resizes both arrays to n sessions (each keeps its first bytes), or
 * removes them when n is 0, then reloads z. */
static int lz_resize(win *w, lz *z, size_t n) {
  sl__backend *be = sl__kstate_backend(w->k.state);
  sl__skey sb, sd;
  lz_skey(w, w->sess_id, &sb);
  lz_skey(w, w->sdata_id, &sd);
  int rc;
  void *p;
  if (!n) {
    if ((rc = be->ops->del(be, &sb)) < 0 || (rc = be->ops->del(be, &sd)) < 0)
      return rc;
    *z = (lz){NULL, NULL, 0};
    return 0;
  }
  if ((rc = be->ops->slot(be, &sb, n * sizeof(sbound), &p)) < 0 ||
      (rc = be->ops->slot(be, &sd, n * lz_ds(w->a), &p)) < 0)
    return rc;
  return lz_load(w, z);
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

static int lazy_element(win *w, int port, const sl_record_t *rec,
                        sl_window_t nw, int64_t wm, bool *skipped) {
  const warg *a = w->a;
  size_t ds = lz_ds(a);
  lz z;
  int rc = lz_load(w, &z);
  if (rc)
    return rc;
  size_t i = 0, j, n = z.n;
  while (i < n && z.b[i].end < nw.start)
    i++;
  j = i;
  while (j < n && z.b[j].start <= nw.end)
    j++;
  sl_window_t aw;
  if (i == j) {
    if (sl__win_late(a, &nw, wm))
      return 0;
    if ((rc = lz_resize(w, &z, n + 1)))
      return rc;
    memmove(z.b + i + 1, z.b + i, (n - i) * sizeof(sbound));
    memmove(z.d + (i + 1) * ds, z.d + i * ds, (n - i) * ds);
    z.b[i] = (sbound){nw.start, nw.end};
    if (a->agg)
      w_agg_init(a, z.d + i * ds);
    else
      memcpy(z.d + i * ds, &nw.start, sizeof(int64_t));
    aw = nw;
    int64_t m = w_max_ts(&aw);
    if ((rc = lz_timer_at(w, m > wm ? m : w_cleanup(a, &aw))))
      return rc;
  } else {
    aw.start = z.b[i].start < nw.start ? z.b[i].start : nw.start;
    aw.end = z.b[j - 1].end > nw.end ? z.b[j - 1].end : nw.end;
    sl_window_t first = {z.b[i].start, z.b[i].end};
    /* A session that fired already waits for its cleanup: merged into a
     * window whose max_ts is ahead of the watermark, it must fire again
     * there first. */
    bool refire = w_max_ts(&first) <= wm && w_max_ts(&aw) > wm;
    size_t merged = j - i - 1;
    int64_t *ms = NULL;
    if (merged) {
      if (a->agg) {
        for (size_t x = i + 1; x < j; x++)
          w_agg_merge(a, z.d + i * ds, z.d + x * ds);
      } else {
        if (!(ms = sl__win_buf(w, merged * sizeof(int64_t))))
          return SL_ERR_NOMEM;
        memcpy(ms, z.d + (i + 1) * ds, merged * ds);
      }
      memmove(z.b + i + 1, z.b + j, (n - j) * sizeof(sbound));
      memmove(z.d + (i + 1) * ds, z.d + j * ds, (n - j) * ds);
    }
    z.b[i] = (sbound){aw.start, aw.end};
    if (merged && (rc = lz_resize(w, &z, n - merged)))
      return rc;
    if (refire && (rc = lz_timer_at(w, w_max_ts(&aw))))
      return rc;
    if (ms) {
      int64_t into;
      memcpy(&into, z.d + i * ds, sizeof(into));
      w_set_ns(w, into);
      for (size_t x = 0; x < merged; x++)
        if ((rc = merge_state(w, ((int64_t *)w->buf)[x])))
          return rc;
      /* Merging moved state around: z's bytes may be stale (only the
       * list namespace is read below). */
      if ((rc = lz_load(w, &z)))
        return rc;
    }
  }
  *skipped = false;
  bool fire = w_max_ts(&aw) <= wm;
  if (a->agg) {
    if ((rc = w_agg_add(a, z.d + i * ds, rec)))
      return rc;
    if (!fire)
      return 0;
    /* User code gets a copy: the array may move meanwhile. */
    void *acc = w_spare(w);
    memcpy(acc, z.d + i * ds, a->acc_size);
    return lz_fire(w, &aw, acc);
  }
  int64_t ns;
  memcpy(&ns, z.d + i * ds, sizeof(ns));
  w_set_ns(w, ns);
  bool fresh;
  if ((rc = sl__win_add(w, port, rec, &fresh)))
    return rc;
  return fire ? lz_fire(w, &aw, &ns) : 0;
}

int sl__session_lazy_timer(win *w, int64_t ts) {
  const warg *a = w->a;
  size_t ds = lz_ds(a);
  /* Most firings are early: the session the timer was set for has grown
   * since. The bounds alone say so; the chain then just moves on. */
  sbound *sb;
  size_t sn;
  int rc = lz_bounds(w, sl__kstate_backend(w->k.state), &sb, &sn);
  if (rc || !sn)
    return rc;
  int64_t next = INT64_MAX;
  bool due = false;
  for (size_t i = 0; i < sn && !due; i++) {
    sl_window_t aw = {sb[i].start, sb[i].end};
    int64_t m = w_max_ts(&aw), c = w_cleanup(a, &aw);
    due = m == ts || c <= ts;
    int64_t d = m > ts ? m : c;
    if (d < next)
      next = d;
  }
  if (!due)
    return lz_timer_at(w, next);
  next = INT64_MAX;
  lz z;
  if ((rc = lz_load(w, &z)) || !z.n)
    return rc;
  /* Decide everything first, then fire: firing runs user code and may
   * move the arrays. Fired sessions are copied (window, then data). */
  size_t fs = sizeof(sl_window_t) + ds + sizeof(int64_t);
  unsigned char *fb = sl__win_buf(w, z.n * fs);
  if (!fb)
    return SL_ERR_NOMEM;
  size_t nf = 0, keep = 0;
  for (size_t i = 0; i < z.n; i++) {
    sl_window_t aw = {z.b[i].start, z.b[i].end};
    int64_t m = w_max_ts(&aw), c = w_cleanup(a, &aw);
    bool clean = c <= ts;
    if (m == ts || clean) {
      unsigned char *f = fb + nf++ * fs;
      int64_t what = (m == ts) | (clean ? 2 : 0);
      memcpy(f, &aw, sizeof(aw));
      memcpy(f + sizeof(aw), &what, sizeof(what));
      memcpy(f + sizeof(aw) + sizeof(what), z.d + i * ds, ds);
    }
    if (clean)
      continue;
    int64_t d = m > ts ? m : c;
    if (d < next)
      next = d;
    if (keep != i) {
      z.b[keep] = z.b[i];
      memmove(z.d + keep * ds, z.d + i * ds, ds);
    }
    keep++;
  }
  if (keep != z.n && (rc = lz_resize(w, &z, keep)))
    return rc;
  /* The chain goes on before firing, so that a firing skipped by
   * error.policy does not stop it. */
  if ((rc = lz_timer_at(w, next)))
    return rc;
  int first = 0;
  for (size_t f = 0; f < nf; f++) {
    unsigned char *e = fb + f * fs;
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
