/* SPDX-License-Identifier: Apache-2.0 */
/* Private to operators/window: the window operator's graph-time argument
 * and per-instance data, the window arithmetic (correct for negative
 * timestamps) and the aggregate dispatch shared by the generic per-window
 * path (window.c) and the sliced sliding path (sliced.c). */
#ifndef SL_WINDOW_INT_H
#define SL_WINDOW_INT_H

#include <math.h>
#include <string.h>

#include "core/buf.h"
#include "core/util.h"
#include "operator.h"
#include "sluice/window.h"
#include "state/keyed.h"
#include "time/timers.h"

/* Trigger results (Flink's TriggerResult as bits). */
#define W_FIRE 1
#define W_PURGE 2
/* Resolved trigger of a global window without one: never fires. */
#define W_TRIG_NEVER 100

typedef struct warg {
  sl_window_spec_t s;
  sl_window_fn_t f;
  void *opaque;
  char *late_tag;
  sl_join_fn join; /* window join: two ports, elements tagged by port */
  bool event;      /* event-time assigner */
  int trig;        /* sl_trigger_kind or W_TRIG_NEVER */
  bool agg;        /* incremental aggregate (builtin or add) */
  bool sliced;     /* sliding windows aggregated per slice (sliced.c) */
  size_t acc_size;
  size_t res_size;
  int64_t slice; /* sliced: slice length, gcd(size, slide) */
  /* Event-time sessions with the default trigger keep one lazy timer per
   * session (see window.c), not a timer per window version. */
  bool lazy_sessions;
  /* A tumbling event-time aggregate with the default trigger and no
   * purge: an element that finds its window's accumulator only adds to
   * it (tumble_hit in window.c). */
  bool tumble_hits;
  /* Event-time sessions (lazy_sessions) with a fixed gap and an
   * aggregate: an element that extends its key's one session before it
   * is due only updates it (session_hit in window.c). */
  bool session_hits;
} warg;

typedef struct win {
  sl__keyed k; /* first: timer callbacks get &k */
  const warg *a;
  sl_state_t *acc, *list, *cnt, *fire, *sess, *sdata, *slices;
  /* Event-time sessions (session.c): the states of the key's sessions
   * (ends with data, starts) and their ids; sess and sdata hold the
   * earlier layout, converted key by key. */
  sl_state_t *ends, *starts;
  uint32_t sess_id, sdata_id, ends_id, starts_id;
  sl_buf_t sbuf;  /* decoded sessions (session.c) */
  int64_t ns;     /* state namespace bytes: the (state) window start */
  int64_t tns[2]; /* timer namespace: window start, end */
  unsigned char *res;
  unsigned char *buf; /* element frames, session sets, slice arrays */
  size_t buf_cap;
  void *pairs; /* window join: element views of one firing */
  size_t pairs_cap;
  /* Prefetch guess for tumbling windows: the namespace hash of the last
   * window an element went to (streams are mostly in order). */
  int64_t last_start;
  uint64_t last_ns_hash;
  bool ns_hash_ok;
  /* The tumbling window the last element went to through the general
   * path, [tb_lo, tb_lo + tb_span) with max_ts tb_max (a->tumble_hits);
   * tb_span 0 while there is none, and once the operator's watermark
   * reached tb_max (win_watermark). */
  int64_t tb_lo, tb_max;
  uint64_t tb_span;
  bool mb;                 /* mini-batch folding (minibatch.c) is on */
  struct win_mb *mb_state; /* its per-batch tables, NULL until used */
} win;

/* floor(a mod m) for m > 0, also for negative a. */
static inline int64_t w_fmod(int64_t a, int64_t m) {
  int64_t r = a % m;
  return r < 0 ? r + m : r;
}

/* Start of the window of length size (offset already in [0, size)) that
 * holds ts: ts - floormod(ts - offset, size). */
static inline int64_t w_start(int64_t ts, int64_t offset, int64_t size) {
  return ts - w_fmod(ts - offset, size);
}

static inline int64_t w_sat_add(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? (b > 0 ? INT64_MAX : INT64_MIN) : r;
}

/* max_ts: end - 1, and SL_TS_MAX for the global window (Flink). */
static inline int64_t w_max_ts(const sl_window_t *w) {
  return w->end == INT64_MAX ? INT64_MAX : w->end - 1;
}

/* When the window's state is dropped: max_ts + lateness in event time,
 * max_ts in processing time; SL_TS_MAX means never. */
static inline int64_t w_cleanup(const warg *a, const sl_window_t *w) {
  int64_t m = w_max_ts(w);
  return a->event ? w_sat_add(m, a->s.allowed_lateness) : m;
}

static inline void w_set_ns(win *w, int64_t start) {
  w->ns = start;
  w->k.ns = &w->ns;
  w->k.ns_len = sizeof(w->ns);
}

/* ---- Aggregates: built-ins inline, user functions through pointers ---- */

typedef struct w_avg {
  double sum;
  int64_t n;
} w_avg;

static inline void w_agg_init(const warg *a, void *acc) {
  memset(acc, 0, a->acc_size);
  switch (a->f.builtin) {
  case SL_AGG_MIN:
    *(double *)acc = INFINITY;
    break;
  case SL_AGG_MAX:
    *(double *)acc = -INFINITY;
    break;
  case SL_AGG_MIN_INT:
    *(int64_t *)acc = INT64_MAX;
    break;
  case SL_AGG_MAX_INT:
    *(int64_t *)acc = INT64_MIN;
    break;
  case SL_AGG_NONE:
    if (a->f.init)
      a->f.init(acc, a->opaque);
    break;
  default:
    break;
  }
}

static inline int w_agg_add(const warg *a, void *acc, const sl_record_t *rec) {
  if (a->f.builtin == SL_AGG_COUNT) {
    ++*(int64_t *)acc;
    return 0;
  }
  if (a->f.builtin == SL_AGG_NONE)
    return a->f.add(acc, rec, a->opaque) ? SL_ERR_USER : 0;
  if (a->f.builtin >= SL_AGG_SUM_INT) {
    int64_t i, *x = acc;
    if (a->f.num_int(rec, &i, a->opaque))
      return SL_ERR_USER;
    if (a->f.builtin == SL_AGG_SUM_INT)
      *x = (int64_t)((uint64_t)*x + (uint64_t)i); /* wraps, no UB */
    else if (a->f.builtin == SL_AGG_MIN_INT ? i < *x : i > *x)
      *x = i;
    return 0;
  }
  double v = 0;
  if (a->f.num(rec, &v, a->opaque))
    return SL_ERR_USER;
  double *d = acc;
  switch (a->f.builtin) {
  case SL_AGG_SUM:
    *d += v;
    break;
  case SL_AGG_MIN:
    if (v < *d)
      *d = v;
    break;
  case SL_AGG_MAX:
    if (v > *d)
      *d = v;
    break;
  default: {
    w_avg *x = acc;
    x->sum += v;
    x->n++;
  }
  }
  return 0;
}

static inline void w_agg_merge(const warg *a, void *acc, const void *o) {
  switch (a->f.builtin) {
  case SL_AGG_COUNT:
    *(int64_t *)acc += *(const int64_t *)o;
    break;
  case SL_AGG_SUM:
    *(double *)acc += *(const double *)o;
    break;
  case SL_AGG_MIN:
    if (*(const double *)o < *(double *)acc)
      *(double *)acc = *(const double *)o;
    break;
  case SL_AGG_MAX:
    if (*(const double *)o > *(double *)acc)
      *(double *)acc = *(const double *)o;
    break;
  case SL_AGG_AVG:
    ((w_avg *)acc)->sum += ((const w_avg *)o)->sum;
    ((w_avg *)acc)->n += ((const w_avg *)o)->n;
    break;
  case SL_AGG_SUM_INT:
    *(int64_t *)acc = (int64_t)((uint64_t) * (int64_t *)acc +
                                (uint64_t) * (const int64_t *)o);
    break;
  case SL_AGG_MIN_INT:
    if (*(const int64_t *)o < *(int64_t *)acc)
      *(int64_t *)acc = *(const int64_t *)o;
    break;
  case SL_AGG_MAX_INT:
    if (*(const int64_t *)o > *(int64_t *)acc)
      *(int64_t *)acc = *(const int64_t *)o;
    break;
  default:
    a->f.merge(acc, o, a->opaque);
  }
}

/* The result bytes of acc: acc itself, or res filled by result(). */
static inline const void *w_agg_result(const warg *a, const void *acc,
                                       unsigned char *res) {
  if (a->f.builtin == SL_AGG_AVG) {
    const w_avg *x = acc;
    double r = x->n ? x->sum / (double)x->n : 0.0;
    memcpy(res, &r, sizeof(r));
    return res;
  }
  if (a->f.builtin == SL_AGG_NONE && a->f.result) {
    a->f.result(acc, res, a->opaque);
    return res;
  }
  return acc;
}

/* Event-time sessions (session.c): the bytes of a session's data in
 * session_ends, after its 8-byte end: the accumulator, 8-byte aligned,
 * or without an aggregate the namespace of its element list. */
static inline size_t w_acc_ds(const warg *a) {
  return (a->acc_size + 7) & ~(size_t)7;
}
static inline size_t w_session_ds(const warg *a) {
  return a->agg ? w_acc_ds(a) : sizeof(int64_t);
}

/* Spare accumulator bytes after the result buffer (8-byte aligned). */
static inline void *w_spare(win *w) {
  return w->res + ((w->a->res_size + 7) & ~(size_t)7);
}

/* Room for n bytes in w->buf (kept between records: no per-record
 * allocation once warm). NULL when out of memory. */
void *sl__win_buf(win *w, size_t n);

/* Emits the result of one aggregate for window wd of the current key:
 * through process (combined form) or as a record. */
int sl__win_emit_result(win *w, const sl_window_t *wd, const void *acc);

/* The per-window machinery of window.c, shared with session.c. */
int sl__win_tset(win *w, int d, int64_t ts, const sl_window_t *wd);
void sl__win_tdel(win *w, int d, int64_t ts, const sl_window_t *wd);
int sl__win_add(win *w, int port, const sl_record_t *rec, bool *fresh);
/* The accumulator slot of the current key and namespace w->ns, created and
 * initialised when absent (*fresh); valid until the next backend call. */
int sl__win_acc(win *w, void **acc, bool *fresh);
/* The per-record path: one record, its key current in k. */
int sl__win_element(sl__keyed *k, int port, const sl_keyed_rec_t *kr);
int sl__win_one(win *w, int port, const sl_record_t *rec, const sl_window_t *wd,
                int64_t wm, bool need_timers);
int sl__win_emit(win *w, const sl_window_t *wd);
int sl__win_clear(win *w);
int sl__win_trig_clear(win *w, const sl_window_t *wd, bool state, bool timers);
int sl__win_cont_register(win *w, const sl_window_t *wd, int64_t next);
bool sl__win_late(const warg *a, const sl_window_t *wd, int64_t wm);

/* Session windows (session.c): an element, and finding (and removing)
 * the session wd, whose state window start goes to *sstart; 1 found, 0
 * not (a window merged away meanwhile). */
int sl__session_element(win *w, int port, const sl_record_t *rec, int64_t t,
                        int64_t wm, bool *skipped);
int sl__session_find(win *w, const sl_window_t *wd, int64_t *sstart,
                     bool remove);
/* Event-time sessions with the default trigger: the key's timer chain
 * (empty namespace). */
int sl__session_lazy_timer(win *w, int64_t ts);
/* Its recheck (sl__timers_recheck, opaque the win): a timer of the
 * chain that would fire early moves on to the key's next deadline
 * before its slot's timers are flushed. */
int64_t sl__session_due(void *opaque, const sl__timer_view *v);
/* After a restore of key groups [kg_lo, kg_hi) (the operator's restored
 * hook): marks the restored sessions a larger gap than the checkpoint's
 * leaves short (session.c). */
int sl__session_restored(win *w, uint32_t kg_lo, uint32_t kg_hi, bool layouts);

/* Mini-batch aggregation (minibatch.c, config mini.batch): whether the
 * window a folds a batch's records per key and window, the batch path
 * that does, and freeing its tables. */
bool sl__win_minibatch_applies(const warg *a);
int sl__win_minibatch(win *w, int port, const sl_keyed_rec_t *recs, size_t n);
void sl__win_minibatch_free(win *w);

/* Sliced sliding path (sliced.c). */
int sl__sliced_element(win *w, const sl_record_t *rec, int64_t wm,
                       bool *skipped);
int sl__sliced_timer(win *w, int64_t ts);

#endif
