/* SPDX-License-Identifier: Apache-2.0 */
/* Mini-batch aggregation of event-time tumbling window aggregates (Flink
 * SQL's table.exec.mini-batch, config mini.batch): the records of one
 * batch are folded per (key, window) into a local copy of the window's
 * accumulator, so each distinct (key, window) of a batch costs one state
 * lookup (its first record) and one write (at the end of the batch)
 * instead of one lookup per record. */
#include <stdlib.h>
#include <string.h>

#include "runtime/keyed.h"
#include "state/state.h"

#include "window_int.h"

/* Why the results are exactly those of the per-record path:
 * - A batch is one process_keyed call: no watermark, timer or barrier
 *   falls inside it, so every record of the batch meets the same
 *   watermark wm, and a checkpoint never sees a half-folded batch.
 * - Only records whose window is neither late nor due (max_ts > wm) are
 *   folded. Such a record emits nothing, and nothing reads its window's
 *   accumulator before the next watermark. Every other record (late, or
 *   allowed-late re-firing its window) takes the per-record path at its
 *   place in the batch; it touches only windows with max_ts <= wm, never
 *   one being folded.
 * - A group's first record does exactly what the per-record path does
 *   (slot, init, add, timers), so timers are registered in the same order
 *   (equal timestamps fire in registration order) and an add that fails
 *   leaves the same state behind; the accumulator is then copied out, the
 *   group's later records are added to the copy in batch order (the same
 *   adds on the same bytes: no merge, so floating-point sums and user
 *   aggregates without merge come out bit for bit), and the copy is
 *   written back at the end of the batch. A copy, because a slot pointer
 *   lives only until the next backend call.
 * - A failing add is reported at its place in the batch, as before. */

typedef struct mb_group {
  const void *key; /* into the batch's records: valid for this call */
  uint32_t key_len;
  uint32_t kg;
  uint64_t hash;
  int64_t start; /* window start */
  uint32_t pos;  /* its index in the table, to clear it */
  bool live;     /* acc holds the window's accumulator */
} mb_group;

typedef struct win_mb {
  uint32_t *table; /* group index + 1; 0 empty */
  uint32_t mask;
  mb_group *groups;
  unsigned char *accs; /* stride bytes per group */
  size_t stride;
  size_t cap; /* groups (and accs) room */
} win_mb;

bool sl__win_minibatch_applies(const warg *a) {
  return a->agg && !a->join && a->event &&
         a->s.assigner == SL_WINDOW_TUMBLING &&
         a->trig == SL_TRIGGER_EVENT_TIME && !a->s.purge;
}

void sl__win_minibatch_free(win *w) {
  win_mb *m = w->mb_state;
  if (!m)
    return;
  free(m->table);
  free(m->groups);
  free(m->accs);
  free(m);
  w->mb_state = NULL;
}

/* Room for n groups, the table at most half full. */
static win_mb *mb_reserve(win *w, size_t n) {
  win_mb *m = w->mb_state;
  if (!m) {
    m = calloc(1, sizeof(*m));
    if (!m)
      return NULL;
    m->stride = (w->a->acc_size + 7) & ~(size_t)7;
    w->mb_state = m;
  }
  if (n <= m->cap)
    return m;
  size_t cap = m->cap ? m->cap : 64;
  while (cap < n)
    cap *= 2;
  uint32_t *t = calloc(cap * 2, sizeof(*t));
  mb_group *g = malloc(cap * sizeof(*g));
  unsigned char *acc = malloc(cap * m->stride);
  if (!t || !g || !acc) {
    free(t);
    free(g);
    free(acc);
    return NULL;
  }
  free(m->table);
  free(m->groups);
  free(m->accs);
  m->table = t;
  m->mask = (uint32_t)(cap * 2 - 1);
  m->groups = g;
  m->accs = acc;
  m->cap = cap;
  return m;
}

static void set_key(win *w, const mb_group *g) {
  w->k.key = g->key;
  w->k.key_len = g->key_len;
  w->k.hash = g->hash;
  w->k.kg = g->kg;
  w->k.ns = NULL;
  w->k.ns_len = 0;
}

/* The group's first record: the per-record path's sl__win_one for a
 * window that neither fires nor purges, keeping a copy of the
 * accumulator. live tells whether the copy exists. */
static int first(win *w, mb_group *g, unsigned char *copy,
                 const sl_keyed_rec_t *kr, const sl_window_t *wd) {
  const warg *a = w->a;
  void *acc;
  bool fresh;
  sl__keyed_set_key(&w->k, kr);
  w_set_ns(w, g->start);
  int rc = sl__win_acc(w, &acc, &fresh);
  if (SL__UNLIKELY(rc))
    return rc; /* no slot: the next record of the group tries again */
  rc = w_agg_add(a, acc, &kr->rec);
  memcpy(copy, acc, a->acc_size);
  g->live = true;
  if (rc || !fresh)
    return rc;
  int64_t m = w_max_ts(wd), c = w_cleanup(a, wd);
  if ((rc = sl__win_tset(w, SL_EVENT_TIME, m, wd)))
    return rc;
  return c == m || c == INT64_MAX ? 0 : sl__win_tset(w, SL_EVENT_TIME, c, wd);
}

/* Writes every live copy back (in first-record order) and empties the
 * table. Returns the first error. */
static int flush(win *w, win_mb *m, size_t ng) {
  int rc = 0;
  for (size_t i = 0; i < ng; i++) {
    mb_group *g = &m->groups[i];
    m->table[g->pos] = 0;
    if (!g->live || rc)
      continue;
    void *acc;
    bool fresh;
    set_key(w, g);
    w_set_ns(w, g->start);
    rc = sl__win_acc(w, &acc, &fresh);
    if (!rc)
      memcpy(acc, m->accs + i * m->stride, w->a->acc_size);
  }
  return rc;
}

static inline bool key_eq(const mb_group *g, const sl_record_t *r) {
  if (g->key_len != r->key_len)
    return false;
  if (r->key_len == 8) { /* the common fixed-size key, without a call */
    uint64_t x, y;
    memcpy(&x, g->key, 8);
    memcpy(&y, r->key, 8);
    return x == y;
  }
  return !memcmp(g->key, r->key, r->key_len);
}

static void no_prefetch(sl__keyed *k, const sl_keyed_rec_t *r, size_t n) {
  (void)k, (void)r, (void)n;
}

int sl__win_minibatch(win *w, int port, const sl_keyed_rec_t *recs, size_t n) {
  const warg *a = w->a;
  sl_ctx_t *op = w->k.op;
  win_mb *m = mb_reserve(w, n);
  if (!m) /* no room for the tables: the per-record path still works */
    return sl__keyed_batch(&w->k, port, recs, n, no_prefetch, sl__win_element);
  int64_t wm = sl_ctx_watermark(op);
  sl_arena_mark_t mark = sl_op_arena_mark(op);
  size_t ng = 0;
  int rc = 0;
  /* The window of the previous record: most records of a batch share it,
   * which saves the division of w_start(). */
  sl_window_t wd = {0, 0};
  for (size_t i = 0; i < n && !rc; i++) {
    const sl_keyed_rec_t *kr = &recs[i];
    int64_t ts = kr->rec.ts;
    if (SL__UNLIKELY(ts < wd.start || ts >= wd.end || wd.start == wd.end)) {
      wd.start = w_start(ts, a->s.offset, a->s.size);
      wd.end = w_sat_add(wd.start, a->s.size);
    }
    int64_t st = wd.start;
    if (SL__UNLIKELY(w_max_ts(&wd) <= wm)) {
      /* Late or due: the per-record path, at its place. */
      sl__keyed_set_key(&w->k, kr);
      rc = sl__win_element(&w->k, port, kr);
      continue;
    }
    /* The key hash is already uniform: its high half, stirred by the
     * window start, indexes the table. */
    uint64_t h = kr->hash + (uint64_t)st * 0x9e3779b97f4a7c15ULL;
    uint32_t p = (uint32_t)(h >> 32) & m->mask;
    mb_group *g;
    for (;;) {
      uint32_t gi = m->table[p];
      if (!gi) {
        g = &m->groups[ng];
        *g = (mb_group){
            kr->rec.key, (uint32_t)kr->rec.key_len, kr->kg, kr->hash, st, p,
            false};
        m->table[p] = (uint32_t)++ng;
        break;
      }
      g = &m->groups[gi - 1];
      if (g->hash == kr->hash && g->start == st && key_eq(g, &kr->rec))
        break;
      p = (p + 1) & m->mask;
    }
    unsigned char *copy = m->accs + (size_t)(g - m->groups) * m->stride;
    int e = g->live ? w_agg_add(a, copy, &kr->rec) : first(w, g, copy, kr, &wd);
    if (SL__UNLIKELY(e)) {
      sl__keyed_set_key(&w->k, kr);
      rc = sl_op_user_error(op, &kr->rec, e);
    }
  }
  int frc = flush(w, m, ng);
  sl_op_arena_release(op, mark);
  if (frc && !rc)
    rc = sl_op_fail(op, frc, "cannot write a window accumulator: %s",
                    sl_strerror(frc));
  return rc;
}
