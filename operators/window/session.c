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

/* ---- Lazy timers for event-time sessions with the default trigger -------
 * A session extends with nearly every element; moving its trigger and
 * cleanup timers each time (as Flink does) costs a timer delete and add per
 * element. Instead each session keeps one pending event-time timer, under
 * namespace = its state window start, at or before its next deadline: its
 * max_ts until it fired, then max_ts + lateness. Extensions only push the
 * deadlines later, so the timer stays valid; when it fires early it is
 * re-registered at the current deadline. Firing happens exactly when the
 * watermark passes max_ts, as with Flink's timers, and at most once per
 * max_ts (timers are unique per (key, namespace, timestamp)).
 * With an incremental aggregate the accumulator is stored in the session's
 * entry of the array, so an element costs one state lookup. */

static int lazy_set(win *w, int64_t sstart, int64_t ts) {
  if (ts == INT64_MAX)
    return 0;
  return sl__timers_add(w->k.timers, SL__TIMER_EVENT, ts, w->k.hash, w->k.kg,
                        w->k.key, w->k.key_len, &sstart, sizeof(sstart));
}

/* Bytes per session entry: the session, then the accumulator if any. */
static size_t lazy_es(const warg *a) {
  return sizeof(sess) + (a->agg ? (a->acc_size + 7) & ~(size_t)7 : 0);
}
static sess *lazy_at(const warg *a, void *base, size_t i) {
  return (sess *)((unsigned char *)base + i * lazy_es(a));
}
static void *lazy_acc(sess *e) {
  return e + 1;
}

static void lazy_skey(const win *w, sl__skey *sk) {
  *sk = (sl__skey){sl__state_id(w->sess), w->k.kg, w->k.hash, w->k.key,
                   w->k.key_len,          NULL,    0};
}

/* The current key's session array, in place (the state has no TTL, so the
 * stored bytes are the array): *n sessions, 0 when none. */
static int lazy_load(win *w, void **s, size_t *n) {
  sl__backend *be = sl__kstate_backend(w->k.state);
  sl__skey sk;
  lazy_skey(w, &sk);
  size_t len;
  int rc = be->ops->get(be, &sk, s, &len, true);
  if (rc < 0)
    return rc;
  if (rc == 0)
    *s = NULL;
  *n = rc == 1 ? len / lazy_es(w->a) : 0;
  return 0;
}

/* Resizes the array to n sessions (bytes kept up to the shorter length),
 * or removes it when n is 0. */
static int lazy_resize(win *w, size_t n, void **s) {
  sl__backend *be = sl__kstate_backend(w->k.state);
  sl__skey sk;
  lazy_skey(w, &sk);
  if (!n) {
    *s = NULL;
    int rc = be->ops->del(be, &sk);
    return rc < 0 ? rc : 0;
  }
  int rc = be->ops->slot(be, &sk, n * lazy_es(w->a), s);
  return rc < 0 ? rc : 0;
}

static int lazy_fire(win *w, const sl_window_t *aw, const void *acc) {
  if (!w->a->agg)
    return sl__win_emit(w, aw);
  sl_ctx_t *op = w->k.op;
  sl_op_set_out_ts(op, true, w_max_ts(aw));
  sl_arena_mark_t m = sl_op_arena_mark(op);
  int rc = sl__win_emit_result(w, aw, acc);
  sl_op_arena_release(op, m);
  return rc;
}

static int lazy_element(win *w, int port, const sl_record_t *rec,
                        sl_window_t nw, int64_t wm, bool *skipped) {
  const warg *a = w->a;
  size_t es = lazy_es(a);
  void *s;
  size_t n;
  int rc = lazy_load(w, &s, &n);
  if (rc)
    return rc;
  size_t i = 0, j;
  while (i < n && lazy_at(a, s, i)->end < nw.start)
    i++;
  j = i;
  while (j < n && lazy_at(a, s, j)->start <= nw.end)
    j++;
  sl_window_t aw;
  int64_t sstart;
  sess *e;
  if (i == j) {
    if (sl__win_late(a, &nw, wm))
      return 0;
    if ((rc = lazy_resize(w, n + 1, &s)))
      return rc;
    e = lazy_at(a, s, i);
    memmove(lazy_at(a, s, i + 1), e, (n - i) * es);
    *e = (sess){nw.start, nw.end, nw.start};
    if (a->agg)
      w_agg_init(a, lazy_acc(e));
    aw = nw;
    sstart = nw.start;
    int64_t m = w_max_ts(&aw);
    if ((rc = lazy_set(w, sstart, m > wm ? m : w_cleanup(a, &aw))))
      return rc;
  } else {
    e = lazy_at(a, s, i);
    sess *last = lazy_at(a, s, j - 1);
    aw.start = e->start < nw.start ? e->start : nw.start;
    aw.end = last->end > nw.end ? last->end : nw.end;
    sstart = e->sstart;
    sl_window_t first = {e->start, e->end};
    /* A session that fired already waits for its cleanup: the merged one
     * must fire at its own max_ts first. */
    bool refire = w_max_ts(&first) <= wm && w_max_ts(&aw) > wm;
    size_t merged = j - i - 1;
    int64_t *ms = NULL;
    if (merged && !a->agg) {
      if (!(ms = sl__win_buf(w, merged * sizeof(int64_t))))
        return SL_ERR_NOMEM;
      for (size_t x = 0; x < merged; x++)
        ms[x] = lazy_at(a, s, i + 1 + x)->sstart;
    }
    for (size_t x = 0; x < merged && a->agg; x++)
      w_agg_merge(a, lazy_acc(e), lazy_acc(lazy_at(a, s, i + 1 + x)));
    *e = (sess){aw.start, aw.end, sstart};
    if (merged) {
      memmove(lazy_at(a, s, i + 1), lazy_at(a, s, j), (n - j) * es);
      if ((rc = lazy_resize(w, n - merged, &s)))
        return rc;
      e = lazy_at(a, s, i);
    }
    if (refire && (rc = lazy_set(w, sstart, w_max_ts(&aw))))
      return rc;
    /* The merged sessions' timers find no session of theirs and lapse. */
    w_set_ns(w, sstart);
    for (size_t x = 0; x < merged && !a->agg; x++)
      if ((rc = merge_state(w, ms[x])))
        return rc;
  }
  *skipped = false;
  if (a->agg) {
    if ((rc = w_agg_add(a, lazy_acc(e), rec)))
      return rc;
    return w_max_ts(&aw) <= wm ? lazy_fire(w, &aw, lazy_acc(e)) : 0;
  }
  w_set_ns(w, sstart);
  bool fresh;
  if ((rc = sl__win_add(w, port, rec, &fresh)))
    return rc;
  return w_max_ts(&aw) <= wm ? lazy_fire(w, &aw, NULL) : 0;
}

int sl__session_lazy_timer(win *w, int64_t ts) {
  const warg *a = w->a;
  int64_t sstart;
  memcpy(&sstart, w->k.ns, sizeof(sstart));
  void *s;
  size_t n, i;
  int rc = lazy_load(w, &s, &n);
  if (rc)
    return rc;
  for (i = 0; i < n && lazy_at(a, s, i)->sstart != sstart; i++)
    ;
  if (i == n)
    return 0; /* merged into another session, or cleaned */
  sess *e = lazy_at(a, s, i);
  sl_window_t aw = {e->start, e->end};
  int64_t m = w_max_ts(&aw), c = w_cleanup(a, &aw);
  if (ts < m)
    return lazy_set(w, sstart, m);
  if (ts > m && ts < c)
    return lazy_set(w, sstart, c);
  unsigned char *acc = NULL;
  if (a->agg) {
    /* Firing passes the accumulator to user code: a copy, as the array
     * may move or shrink meanwhile. */
    acc = w_spare(w);
    memcpy(acc, lazy_acc(e), a->acc_size);
  }
  if (ts == c) {
    /* Cleanup (and, without lateness, the firing just before it). */
    memmove(e, lazy_at(a, s, i + 1), (n - i - 1) * lazy_es(a));
    if ((rc = lazy_resize(w, n - 1, &s)))
      return rc;
  }
  /* The cleanup timer goes in before firing, so that a firing skipped by
   * error.policy does not leave the session behind. */
  if (ts != c && (rc = lazy_set(w, sstart, c)))
    return rc;
  w_set_ns(w, sstart);
  int fired = ts == m ? lazy_fire(w, &aw, acc) : 0;
  if (ts == c && !a->agg) {
    w_set_ns(w, sstart);
    rc = sl__win_clear(w);
  }
  return fired ? fired : rc;
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
        if ((rc = sl__win_trig_clear(w, &old, false)))
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
