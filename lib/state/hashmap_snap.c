/* SPDX-License-Identifier: Apache-2.0 */
/* Copy-on-write snapshots of the hashmap backend's key groups (the
 * freeze / frozen_scan / frozen_release part of backend.h): a checkpoint
 * freezes the key groups it writes whole and hands the view to another
 * thread that serializes them, while the worker goes on.
 *
 * Each frozen key group has one atomic state. The scanning thread takes
 * a key group still FROZEN (-> SCANNING), reads the live tables, marks
 * them recorded and gives it back (-> BACK). The worker's first call that
 * touches a frozen key group (hm_tab sees the table's frozen flag) takes
 * it if still FROZEN (-> COPYING): it copies the key group's live slots
 * into one dense array per state (out-of-line entries and maps one by
 * one), marking them recorded in the same pass, and gives it back
 * (-> BACK) with the copy for the scan; if the scan has it, the worker
 * waits for that key group's scan to end. Neither thread touches a key
 * group the other one holds, and each hand-over is a release store read
 * with acquire, so the live tables need no lock. The per-record lookup
 * tests nothing: a frozen table's ctrl points at zeros, so it misses,
 * and the general path takes the key group back (hm_tab_fast). */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/common.h"
#include "state/hashmap.h"

enum { FZ_NONE = 0, FZ_FROZEN, FZ_SCANNING, FZ_COPYING, FZ_BACK };

typedef struct fz_state {
  hm_table *tables; /* the live tables, one per owned key group */
  hm_dlog *dlog;    /* its logs of changes (NULL: none yet) */
  sl__btype type;
} fz_state;

typedef struct fz_kg {
  _Atomic uint8_t st;
  /* Written by the thread holding the key group, read after the
   * hand-over: the copy (one per state), whether copying failed,
   * whether the scan had it. */
  bool failed, scanned;
  struct fz_copy *copy;
} fz_kg;

struct sl__frozen {
  _Atomic int refs; /* the backend's and the scanner's */
  uint32_t kg_lo, n_kg, n_states;
  fz_state *sv;                /* the states registered when frozen */
  uint8_t *kg_known, *kg_rest; /* the backend's (hashmap.h) */
  fz_kg *kg;                   /* per owned key group */
  uint8_t *zeros; /* what frozen tables' ctrl points at (hm_tab_fast) */
};

/* Waiting for the other thread to finish with one key group: its copy
 * or its scan, so short; spin a little first. */
static void fz_wait(unsigned *n) {
  if (++*n < 64)
    return;
  if (*n < 128) {
    sched_yield();
    return;
  }
  struct timespec ts = {0, 20000};
  nanosleep(&ts, NULL);
}

/* ---- Copies ------------------------------------------------------------- */

static void map_free(hm_map *m) {
  size_t cap = m->slots ? (size_t)1 << m->bits : 0;
  for (size_t i = 0; i < cap; i++)
    if (m->slots[i].e && m->slots[i].e != HM_MTOMB)
      free(m->slots[i].e);
  free(m->slots);
  free(m);
}

static hm_map *map_copy(const hm_map *m) {
  hm_map *n = malloc(sizeof(*n));
  if (!n)
    return NULL;
  *n = *m;
  size_t cap = m->slots ? (size_t)1 << m->bits : 0;
  n->slots = cap ? calloc(cap, sizeof(*n->slots)) : NULL;
  if (cap && !n->slots) {
    free(n);
    return NULL;
  }
  for (size_t i = 0; i < cap; i++) {
    hm_mentry *e = m->slots[i].e;
    n->slots[i].hash = m->slots[i].hash;
    if (!e || e == HM_MTOMB) {
      n->slots[i].e = e;
      continue;
    }
    size_t sz =
        sizeof(*e) + (((size_t)e->mk_len + 7) & ~(size_t)7) + e->val_len;
    hm_mentry *c = malloc(sz);
    if (!c) {
      map_free(n);
      return NULL;
    }
    memcpy(c, e, sz);
    c->val_cap = c->val_len;
    n->slots[i].e = c;
  }
  return n;
}

/* Makes the copied slot s own copies of what it points to. */
static bool slot_copy(sl__btype type, hm_slot *s) {
  hm_entry *ne = NULL;
  if (hm_tag(s) == HM_EXT) {
    hm_entry *e = s->u.e;
    size_t sz = sizeof(*e) + hm_voff(e->key_len, e->ns_len) + e->val_len;
    if (!(ne = malloc(sz)))
      return false;
    memcpy(ne, e, sz);
    ne->val_cap = ne->val_len;
    s->u.e = ne;
  }
  if (type != SL__BT_MAP)
    return true;
  hm_map *m = hm_map_of(s);
  if (m) {
    hm_map *nm = map_copy(m);
    if (!nm) {
      free(ne);
      return false;
    }
    memcpy(hm_sval(s), &nm, sizeof(nm));
  }
  return true;
}

/* A key group's entries of one state, as the scan reads them (kg_scan's
 * order), copied: the live slots only, one after the other, owning
 * copies of what they point to. */
typedef struct fz_copy {
  hm_slot *s;
  size_t n;
} fz_copy;

static void copy_free(sl__btype type, fz_copy *c) {
  for (size_t i = 0; i < c->n; i++) {
    hm_slot *s = &c->s[i];
    if (type == SL__BT_MAP && hm_map_of(s))
      map_free(hm_map_of(s));
    if (hm_tag(s) == HM_EXT)
      free(s->u.e);
  }
  free(c->s);
  c->s = NULL;
  c->n = 0;
}

/* Copies table t into c and, if mark, marks its entries recorded (the
 * HM_CLEAN of kg_clean), in one pass. On failure the copy is freed; some
 * entries may be marked already, which is harmless: the snapshot fails,
 * and the next one writes the key group whole. */
static int table_copy(sl__btype type, hm_table *t, fz_copy *c, bool mark) {
  size_t want = t->count + t->old_count;
  c->n = 0;
  c->s = want ? malloc(want * sizeof(*c->s)) : NULL;
  if (want && !c->s)
    return SL_ERR_NOMEM;
  hm_slot *arrs[2] = {t->slots, t->old};
  uint8_t bits[2] = {t->bits, t->old_bits};
  for (int a = 0; a < 2; a++) {
    size_t cap = arrs[a] ? (size_t)1 << bits[a] : 0;
    for (size_t i = 0; i < cap; i++) {
      hm_slot *s = &arrs[a][i];
      if (!hm_live(s))
        continue;
      hm_slot *d = &c->s[c->n];
      *d = *s;
      if ((hm_tag(s) == HM_EXT || type == SL__BT_MAP) && !slot_copy(type, d)) {
        copy_free(type, c);
        return SL_ERR_NOMEM;
      }
      c->n++;
      if (mark)
        s->meta |= HM_CLEAN;
    }
  }
  return 0;
}

static int copy_scan(uint32_t id, sl__btype type, fz_copy *c, sl__entry_fn fn,
                     void *opaque) {
  for (size_t i = 0; i < c->n; i++) {
    int rc = sl__hm_scan_entry(id, type, &c->s[i], fn, opaque);
    if (rc)
      return rc;
  }
  return 0;
}

static void kg_copy_free(struct sl__frozen *f, fz_kg *k) {
  if (!k->copy)
    return;
  for (uint32_t id = 0; id < f->n_states; id++)
    copy_free(f->sv[id].type, &k->copy[id]);
  free(k->copy);
  k->copy = NULL;
}

/* ---- Hand-overs --------------------------------------------------------- */

/* Whether key group g, written whole by this snapshot, has its changes
 * tracked from now on, or rests (written whole next time too, untracked:
 * hashmap.c, "A key group that outgrew its log"). By whichever thread
 * holds g. */
static bool kg_track(struct sl__frozen *f, uint32_t g) {
  if (!f->kg_rest[g])
    return true;
  f->kg_rest[g]--;
  return false;
}

/* Key group g as recorded by the snapshot (kg_clean of the live tables),
 * by whichever thread holds it; nothing while it rests. */
static void kg_recorded(struct sl__frozen *f, uint32_t g) {
  if (!kg_track(f, g))
    return;
  for (uint32_t id = 0; id < f->n_states; id++)
    sl__hm_mark_clean(&f->sv[id].tables[g],
                      f->sv[id].dlog ? &f->sv[id].dlog[g] : NULL);
  f->kg_known[g] = 1;
}

/* The worker holds key group g (COPYING): copies it for the scan and
 * marks it recorded. A copy that fails fails the scan. */
static void kg_take(struct sl__frozen *f, uint32_t g) {
  fz_kg *k = &f->kg[g];
  fz_copy *copy = calloc(f->n_states ? f->n_states : 1, sizeof(*copy));
  bool track = kg_track(f, g);
  uint32_t id = 0;
  for (; copy && id < f->n_states; id++)
    if (table_copy(f->sv[id].type, &f->sv[id].tables[g], &copy[id], track))
      break;
  if (!copy || id < f->n_states) {
    for (uint32_t j = 0; copy && j < id; j++)
      copy_free(f->sv[j].type, &copy[j]);
    free(copy);
    k->failed = true;
    return;
  }
  k->copy = copy;
  if (!track)
    return;
  for (id = 0; id < f->n_states; id++)
    if (f->sv[id].dlog)
      sl__hm_mark_clean(NULL, &f->sv[id].dlog[g]);
  f->kg_known[g] = 1;
}

void sl__hm_thaw(hm *b, uint32_t g) {
  struct sl__frozen *f = b->frozen;
  if (f) {
    fz_kg *k = &f->kg[g];
    uint8_t s = FZ_FROZEN;
    if (atomic_compare_exchange_strong_explicit(&k->st, &s, FZ_COPYING,
                                                memory_order_acq_rel,
                                                memory_order_acquire)) {
      kg_take(f, g);
      atomic_store_explicit(&k->st, FZ_BACK, memory_order_release);
    } else {
      for (unsigned n = 0; s == FZ_SCANNING;
           s = atomic_load_explicit(&k->st, memory_order_acquire))
        fz_wait(&n);
    }
  }
  for (uint32_t id = 0; id < b->n_states; id++) {
    hm_table *t = &b->states[id].tables[g];
    if (t->frozen && t->slots)
      t->ctrl = hm_ctrl_of(t->slots, t->bits);
    t->frozen = 0;
  }
}

static void fz_unref(struct sl__frozen *f) {
  if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (uint32_t g = 0; g < f->n_kg; g++)
    kg_copy_free(f, &f->kg[g]);
  free(f->kg);
  free(f->sv);
  free(f->zeros);
  free(f);
}

void sl__hm_thaw_all(hm *b) {
  struct sl__frozen *f = b->frozen;
  if (!f)
    return;
  for (uint32_t g = 0; g < b->n_kg; g++)
    for (uint32_t id = 0; id < b->n_states; id++)
      if (b->states[id].tables[g].frozen) {
        sl__hm_thaw(b, g);
        break;
      }
  b->frozen = NULL;
  fz_unref(f);
}

struct sl__frozen *sl__hm_freeze(sl__backend *be, const uint32_t *kgs,
                                 size_t n) {
  hm *b = (hm *)be;
  sl__hm_thaw_all(b);
  if (sl__hm_kg_init(b))
    return NULL;
  struct sl__frozen *f = calloc(1, sizeof(*f));
  if (!f)
    return NULL;
  f->sv = calloc(b->n_states ? b->n_states : 1, sizeof(*f->sv));
  f->kg = calloc(b->n_kg, sizeof(*f->kg));
  if (!f->sv || !f->kg) {
    free(f->sv);
    free(f->kg);
    free(f);
    return NULL;
  }
  atomic_init(&f->refs, 2);
  f->kg_lo = be->kg_lo;
  f->n_kg = b->n_kg;
  f->n_states = b->n_states;
  f->kg_known = b->kg_known;
  f->kg_rest = b->kg_rest;
  for (uint32_t id = 0; id < b->n_states; id++)
    f->sv[id] = (fz_state){b->states[id].tables, b->states[id].dlog,
                           b->states[id].type};
  for (uint32_t g = 0; g < b->n_kg; g++)
    atomic_init(&f->kg[g].st, FZ_NONE);
  /* Control bytes that say "empty" for the largest frozen table (a
   * group's load reads HM_GROUP bytes past its start). */
  uint8_t max_bits = 0;
  for (size_t i = 0; i < n; i++)
    for (uint32_t id = 0;
         kgs[i] >= be->kg_lo && kgs[i] < be->kg_hi && id < b->n_states; id++) {
      const hm_table *t = &b->states[id].tables[kgs[i] - be->kg_lo];
      if (t->slots && t->bits > max_bits)
        max_bits = t->bits;
    }
  if (!(f->zeros = calloc(((size_t)1 << max_bits) + HM_GROUP, 1))) {
    free(f->sv);
    free(f->kg);
    free(f);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    if (kgs[i] < be->kg_lo || kgs[i] >= be->kg_hi)
      continue;
    uint32_t g = kgs[i] - be->kg_lo;
    atomic_init(&f->kg[g].st, FZ_FROZEN);
    for (uint32_t id = 0; id < b->n_states; id++) {
      hm_table *t = &b->states[id].tables[g];
      t->frozen = 1;
      if (t->slots)
        t->ctrl = f->zeros;
    }
  }
  b->frozen = f;
  /* Bytes handed out before now are looked up again (and so taken back)
   * before they are written. */
  be->epoch++;
  return f;
}

int sl__hm_frozen_scan(struct sl__frozen *f, uint32_t kg, sl__entry_fn fn,
                       void *opaque) {
  uint32_t g = kg - f->kg_lo;
  if (kg < f->kg_lo || g >= f->n_kg)
    return SL_ERR_RANGE;
  fz_kg *k = &f->kg[g];
  uint8_t s = FZ_FROZEN;
  int rc = 0;
  if (atomic_compare_exchange_strong_explicit(&k->st, &s, FZ_SCANNING,
                                              memory_order_acq_rel,
                                              memory_order_acquire)) {
    for (uint32_t id = 0; !rc && id < f->n_states; id++)
      rc = sl__hm_scan_table(id, f->sv[id].type, &f->sv[id].tables[g], fn,
                             opaque);
    if (!rc)
      kg_recorded(f, g);
    k->scanned = true;
    atomic_store_explicit(&k->st, FZ_BACK, memory_order_release);
    return rc;
  }
  for (unsigned n = 0; s == FZ_COPYING;
       s = atomic_load_explicit(&k->st, memory_order_acquire))
    fz_wait(&n);
  if (s != FZ_BACK || k->scanned)
    return SL_ERR_INVAL; /* not frozen, or scanned before */
  k->scanned = true;
  if (k->failed)
    return SL_ERR_NOMEM;
  for (uint32_t id = 0; !rc && id < f->n_states; id++)
    rc = copy_scan(id, f->sv[id].type, &k->copy[id], fn, opaque);
  kg_copy_free(f, k);
  return rc;
}

void sl__hm_frozen_release(struct sl__frozen *f) {
  if (!f)
    return;
  for (uint32_t g = 0; g < f->n_kg; g++) {
    fz_kg *k = &f->kg[g];
    uint8_t s = FZ_FROZEN;
    if (atomic_compare_exchange_strong_explicit(
            &k->st, &s, FZ_BACK, memory_order_acq_rel, memory_order_acquire))
      continue; /* given back unrecorded */
    for (unsigned n = 0; s == FZ_COPYING;
         s = atomic_load_explicit(&k->st, memory_order_acquire))
      fz_wait(&n);
    if (s == FZ_BACK)
      kg_copy_free(f, k);
  }
  fz_unref(f);
}
