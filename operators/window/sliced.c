/* SPDX-License-Identifier: Apache-2.0 */
/* Sliding windows aggregated per slice: time is cut into slices of
 * gcd(size, slide) ms, each element folds into the one accumulator of its
 * slice, and a window's result merges the slices it covers. Per element the
 * cost is that of a tumbling window whatever size/slide is; per firing it
 * is one merge per non-empty slice of the window, over one contiguous
 * array. One chained event-time timer per key walks the window ends that
 * have data, so no per-window timers or state exist. */
#include <stdlib.h>
#include <string.h>

#include "state/state.h"
#include "time/timers.h"
#include "window_int.h"

/* The per-key value: a header, then n items of (slice end, accumulator)
 * sorted by slice end; the stored length says the capacity. */
typedef struct sl_hdr {
  int64_t next_fire; /* window end of the chained timer, INT64_MAX: none */
  uint32_t n;
  uint32_t pad;
} sl_hdr;

static size_t item_size(const warg *a) {
  return sizeof(int64_t) + ((a->acc_size + 7) & ~(size_t)7);
}

static void skey(const win *w, sl__skey *sk) {
  sk->state = sl__state_id(w->slices);
  sk->kg = w->k.kg;
  sk->hash = w->k.hash; /* empty namespace: the key's hash as is */
  sk->key = w->k.key;
  sk->key_len = w->k.key_len;
  sk->ns = NULL;
  sk->ns_len = 0;
}

static sl__backend *be_of(const win *w) {
  return sl__kstate_backend(w->k.state);
}

/* The key's slice array, writable in place (one lookup): 1 with *p and
 * *len, 0 when the key has none. The state has no TTL, so its bytes are
 * exactly ours; using the backend directly saves the second lookup a
 * size-checked sl__value_ptr() would need to grow the array. */
static int load(win *w, unsigned char **p, size_t *len) {
  sl__skey sk;
  skey(w, &sk);
  sl__backend *be = be_of(w);
  void *v;
  int rc = be->ops->get(be, &sk, &v, len, true);
  if (rc == 1)
    *p = v;
  return rc;
}

static int resize(win *w, size_t len, unsigned char **p) {
  sl__skey sk;
  skey(w, &sk);
  sl__backend *be = be_of(w);
  void *v;
  int rc = be->ops->slot(be, &sk, len, &v);
  if (rc < 0)
    return rc;
  *p = v;
  return rc;
}

static int drop(win *w) {
  sl__skey sk;
  skey(w, &sk);
  sl__backend *be = be_of(w);
  int rc = be->ops->del(be, &sk);
  return rc < 0 ? rc : 0;
}

static int64_t *item_se(unsigned char *p, const warg *a, size_t i) {
  return (int64_t *)(p + sizeof(sl_hdr) + i * item_size(a));
}
static void *item_acc(unsigned char *p, const warg *a, size_t i) {
  return p + sizeof(sl_hdr) + i * item_size(a) + sizeof(int64_t);
}

/* Window ends are congruent to offset + size modulo slide. */
static int64_t last_end_of(const warg *a, int64_t ts) {
  return w_start(ts, a->s.offset, a->s.slide) + a->s.size;
}
/* The first window end >= x. */
static int64_t end_at_or_after(const warg *a, int64_t x) {
  return x + w_fmod(a->s.offset + a->s.size - x, a->s.slide);
}

static int chain(win *w, int64_t end) {
  return sl__timers_add(w->k.timers, SL__TIMER_EVENT, end - 1, w->k.hash,
                        w->k.kg, w->k.key, w->k.key_len, NULL, 0);
}

/* Merges the slices of window [end - size, end) and emits the result.
 * Returns 0 also when the window has no data. */
static int fire(win *w, int64_t end) {
  const warg *a = w->a;
  unsigned char *p;
  size_t len;
  int rc = load(w, &p, &len);
  if (rc != 1)
    return rc;
  sl_hdr h;
  memcpy(&h, p, sizeof(h));
  void *acc = w_spare(w);
  bool any = false;
  int64_t lo = end - a->s.size;
  for (size_t i = h.n; i-- > 0;) {
    int64_t se = *item_se(p, a, i);
    if (se <= lo)
      break;
    if (se > end)
      continue;
    if (!any)
      memcpy(acc, item_acc(p, a, i), a->acc_size);
    else
      w_agg_merge(a, acc, item_acc(p, a, i));
    any = true;
  }
  if (!any)
    return 0;
  sl_window_t wd = {lo, end};
  sl_ctx_t *op = w->k.op;
  sl_op_set_out_ts(op, true, end - 1);
  sl_arena_mark_t m = sl_op_arena_mark(op);
  rc = sl__win_emit_result(w, &wd, acc);
  sl_op_arena_release(op, m);
  return rc;
}

int sl__sliced_element(win *w, const sl_record_t *rec, int64_t wm,
                       bool *skipped) {
  const warg *a = w->a;
  int64_t t = rec->ts, L = a->s.allowed_lateness;
  int64_t last = last_end_of(a, t);
  if (t >= last)
    return 0; /* slide > size: ts falls between windows, in none */
  if (w_sat_add(last - 1, L) <= wm)
    return 0; /* every window of the element is late */
  *skipped = false;
  int64_t se = w_start(t, a->s.offset % a->slice, a->slice) + a->slice;
  size_t isz = item_size(a);
  unsigned char *p = NULL;
  size_t len;
  int rc = load(w, &p, &len);
  if (rc < 0)
    return rc;
  sl_hdr h;
  if (rc == 0) {
    if ((rc = resize(w, sizeof(sl_hdr) + 2 * isz, &p)) < 0)
      return rc;
    h = (sl_hdr){INT64_MAX, 0, 0};
    len = sizeof(sl_hdr) + 2 * isz;
  } else {
    memcpy(&h, p, sizeof(h));
  }
  /* Usually the newest slice or a new one after it: search backwards. */
  size_t i = h.n;
  while (i > 0 && *item_se(p, a, i - 1) > se)
    i--;
  if (i == 0 || *item_se(p, a, i - 1) != se) {
    size_t cap = (len - sizeof(sl_hdr)) / isz;
    if (h.n == cap) {
      if ((rc = resize(w, sizeof(sl_hdr) + 2 * cap * isz, &p)) < 0)
        return rc;
    }
    memmove(item_se(p, a, i + 1), item_se(p, a, i), (h.n - i) * isz);
    *item_se(p, a, i) = se;
    w_agg_init(a, item_acc(p, a, i));
    h.n++;
    i++;
  }
  if ((rc = w_agg_add(a, item_acc(p, a, i - 1), rec)))
    return rc;
  /* The first window of the element that the watermark has not passed
   * joins the chain; the ones it passed (allowed lateness) re-fire now. */
  int64_t first = last - ((last - t - 1) / a->s.slide) * a->s.slide;
  int64_t e0 = first;
  if (e0 - 1 <= wm)
    e0 = end_at_or_after(a, wm + 2 > first ? wm + 2 : first);
  if (e0 <= last && e0 < h.next_fire) {
    if ((rc = chain(w, e0)))
      return rc;
    h.next_fire = e0;
  }
  memcpy(p, &h, sizeof(h));
  for (int64_t e = first; e <= last && e - 1 <= wm; e += a->s.slide)
    if (w_sat_add(e - 1, L) > wm && (rc = fire(w, e)))
      return rc;
  return 0;
}

int sl__sliced_timer(win *w, int64_t ts) {
  const warg *a = w->a;
  int64_t end = ts + 1;
  unsigned char *p;
  size_t len;
  int rc = load(w, &p, &len);
  if (rc != 1)
    return rc;
  sl_hdr h;
  memcpy(&h, p, sizeof(h));
  int fired = 0;
  if (end == h.next_fire) {
    /* The next window end that has a slice, chained before firing so
     * that a firing skipped by error.policy does not stop the chain. */
    h.next_fire = INT64_MAX;
    for (size_t i = 0; i < h.n; i++) {
      int64_t se = *item_se(p, a, i);
      if (se <= end + a->s.slide - a->s.size)
        continue;
      int64_t e = end_at_or_after(a, se);
      h.next_fire = e > end + a->s.slide ? e : end + a->s.slide;
      break;
    }
    memcpy(p, &h, sizeof(h));
    if (h.next_fire != INT64_MAX && (rc = chain(w, h.next_fire)))
      return rc;
    fired = fire(w, end);
    if ((rc = load(w, &p, &len)) != 1)
      return rc;
    memcpy(&h, p, sizeof(h));
  }
  /* Drop the slices whose every window is past its lateness: slices are
   * sorted, and so are their last windows. */
  size_t isz = item_size(a), k = 0;
  int64_t L = a->s.allowed_lateness;
  while (k < h.n &&
         w_sat_add(last_end_of(a, *item_se(p, a, k) - a->slice) - 1, L) <= ts)
    k++;
  if (k) {
    memmove(item_se(p, a, 0), item_se(p, a, k), (h.n - k) * isz);
    h.n -= (uint32_t)k;
  }
  if (!h.n && h.next_fire == INT64_MAX)
    return (rc = drop(w)) ? rc : fired;
  memcpy(p, &h, sizeof(h));
  if (h.next_fire == INT64_MAX && h.n) {
    /* No more firings, but slices kept for allowed lateness: a timer for
     * when the newest of them is past it. */
    int64_t c =
        w_sat_add(last_end_of(a, *item_se(p, a, h.n - 1) - a->slice) - 1, L);
    rc = sl__timers_add(w->k.timers, SL__TIMER_EVENT, c, w->k.hash, w->k.kg,
                        w->k.key, w->k.key_len, NULL, 0);
    return rc ? rc : fired;
  }
  /* Keep the array small once slices have been dropped. */
  size_t cap = (len - sizeof(sl_hdr)) / isz;
  if (cap > 8 && h.n < cap / 4 &&
      (rc = resize(w, sizeof(sl_hdr) + cap / 2 * isz, &p)) < 0)
    return rc;
  return fired;
}
