/* SPDX-License-Identifier: Apache-2.0 */
/* The RocksDB backend's write-back cache: hot entries live in an
 * open-addressing table in front of RocksDB, so a hot key's
 * read-modify-write costs one table probe, not a RocksDB get and put per
 * event. Dirty entries are written in write batches (no WAL) when the
 * cache is over its share of the memory budget, before iterations and at
 * snapshots; eviction is CLOCK (second chance) over clean entries. */
#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "sluice/common.h"
#include "state/rocksdb_int.h"

#define RK_MIN_BITS 10
/* What the allocator adds to each block (glibc: 8 bytes, 16-aligned). */
#define RK_MALLOC_OVERHEAD 16
/* Slabs: 256 KiB, size classes of 16 bytes up to 512. Not under
 * AddressSanitizer, which then checks every entry as a heap block. */
#define RK_SLAB ((size_t)256 << 10)
#define RK_CLASS_STEP 16
#if defined(__SANITIZE_ADDRESS__)
#define RK_SLAB_MAX 0
#else
#define RK_SLAB_MAX 512
#endif
/* Writes go out in batches of about this many bytes, so a flush of a
 * large cache does not build one huge batch outside the budget. */
#define RK_BATCH_BYTES ((size_t)4 << 20)
/* Where a snapshot builds a table file for RocksDB to take in, in the DB's
 * directory (RocksDB leaves a name it did not make alone). */
#define RK_INGEST_FILE "sluice-ingest.tmp"
/* Dirty victims are written in groups of this many (a fixed array, so
 * eviction allocates nothing). */
#define RK_VICTIMS 16384

/* A list held whole in the cache is at most this large (or 1/64 of the
 * cache); a longer one keeps only its unflushed appends (RK_APPEND), so a
 * long list costs one merge operand per flush, not a rewrite. */
static size_t list_max(const rk_cache *c) {
  size_t m = c->limit / 64;
  return m < 4096 ? 4096 : m;
}

/* ---- Entry memory ------------------------------------------------------- *
 * Entries up to RK_SLAB_MAX bytes come from slabs of one size class each,
 * mapped apart from the heap: mixed in the heap with RocksDB's blocks (a
 * few KiB, coming and going with the block cache), hundreds of thousands
 * of small entries freed at each eviction round fragment it until the
 * process holds tens of megabytes beyond the budget. Slabs are reused, not
 * returned, until the backend closes.                                      */

static size_t ent_size(const rk_entry *e, uint32_t xl) {
  return rk_voff(e->key_len, e->ns_len, xl) + e->val_cap;
}

static size_t cls_of(size_t n) {
  /* ceil(n / step) - 1 for n >= 1, written so that n = 0 maps to class 0
   * instead of wrapping around. */
  return n ? (n - 1) / RK_CLASS_STEP : 0;
}

/* What an entry of n bytes costs: its size class, or for a large one what
 * the allocator adds. */
static size_t alloc_bytes(size_t n) {
  if (n <= RK_SLAB_MAX)
    return (cls_of(n) + 1) * RK_CLASS_STEP;
  return ((n + 15) & ~(size_t)15) + RK_MALLOC_OVERHEAD;
}

static size_t ent_bytes(const rk_entry *e, uint32_t xl) {
  return alloc_bytes(ent_size(e, xl));
}

static void *ent_alloc(rk_cache *c, size_t n) {
  if (n > RK_SLAB_MAX)
    return malloc(n);
  size_t k = cls_of(n), sz = (k + 1) * RK_CLASS_STEP;
  rk_slabs *s = &c->slabs;
  void *p = s->free[k];
  if (p) {
    memcpy(&s->free[k], p, sizeof(void *));
    return p;
  }
  if (!s->bump[k] || s->bump[k] + sz > s->end[k]) {
    if (s->n == s->cap) {
      size_t cap = s->cap ? s->cap * 2 : 64;
      void **m = realloc(s->maps, cap * sizeof(*m));
      if (!m)
        return NULL;
      s->maps = m;
      s->cap = cap;
    }
    void *m = mmap(NULL, RK_SLAB, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
      return NULL;
    s->maps[s->n++] = m;
    s->bump[k] = m;
    s->end[k] = (unsigned char *)m + RK_SLAB;
  }
  p = s->bump[k];
  s->bump[k] += sz;
  return p;
}

/* Frees an entry whose allocation was n bytes. */
static void ent_free(rk_cache *c, void *p, size_t n) {
  if (n > RK_SLAB_MAX) {
    free(p);
    return;
  }
  size_t k = cls_of(n);
  memcpy(p, &c->slabs.free[k], sizeof(void *));
  c->slabs.free[k] = p;
}

static void *ent_realloc(rk_cache *c, void *p, size_t old, size_t n) {
  if (old > RK_SLAB_MAX && n > RK_SLAB_MAX)
    return realloc(p, n);
  if (old <= RK_SLAB_MAX && n <= RK_SLAB_MAX && cls_of(old) == cls_of(n))
    return p;
  void *q = ent_alloc(c, n);
  if (!q)
    return NULL;
  memcpy(q, p, old < n ? old : n);
  ent_free(c, p, old);
  return q;
}

static void free_entry(rk *b, rk_entry *e) {
  ent_free(&b->cache, e, ent_size(e, rk_xlen(e, rk_st(b, e->state))));
}

int sl__rk_cache_init(rk *b, size_t limit) {
  rk_cache *c = &b->cache;
  memset(c, 0, sizeof(*c));
  c->bits = RK_MIN_BITS;
  c->cap_dirty = (size_t)1 << c->bits;
  c->slots = calloc(c->cap_dirty, sizeof(*c->slots));
  c->dirty = malloc(c->cap_dirty * sizeof(*c->dirty));
  c->victims = malloc(RK_VICTIMS * sizeof(*c->victims));
  /* One write batch, reused: its buffer (up to RK_BATCH_BYTES and a bit)
   * stays allocated instead of coming and going between small blocks. */
  c->wb = rocksdb_writebatch_create();
  if (!c->slots || !c->dirty || !c->victims || !c->wb)
    return SL_ERR_NOMEM;
  c->limit = limit;
  c->bytes = c->cap_dirty * (sizeof(*c->slots) + sizeof(*c->dirty)) +
             RK_VICTIMS * sizeof(*c->victims) + RK_BATCH_BYTES;
  c->hand = 0x9e3779b97f4a7c15ULL; /* the eviction order's random state */
  c->gen = 1;
  c->fgen = RK_NO_GEN;
  return 0;
}

void sl__rk_cache_free(rk *b) {
  rk_cache *c = &b->cache;
  size_t cap = c->slots ? (size_t)1 << c->bits : 0;
  for (size_t i = 0; i < cap; i++)
    if (c->slots[i].e)
      free_entry(b, c->slots[i].e); /* large ones: slabs go below */
  for (size_t i = 0; i < c->n_retired; i++)
    free_entry(b, c->retired[i]);
  for (size_t i = 0; i < c->slabs.n; i++)
    munmap(c->slabs.maps[i], RK_SLAB);
  free(c->slabs.maps);
  free(c->slots);
  free(c->dirty);
  free(c->retired);
  free(c->victims);
  if (c->wb)
    rocksdb_writebatch_destroy(c->wb);
  memset(c, 0, sizeof(*c));
}

/* ---- Table -------------------------------------------------------------- */

/* Backward-shift deletion: no tombstones, so probes stay short. */
static void table_remove(rk_cache *c, size_t i) {
  size_t mask = ((size_t)1 << c->bits) - 1, j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!c->slots[j].e)
      break;
    size_t h = rk_idx(c->slots[j].h, c->bits);
    /* The entry at j may fill the hole at i unless its home h lies
     * cyclically in (i, j]. */
    bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
    if (!stays) {
      c->slots[i] = c->slots[j];
      i = j;
    }
  }
  c->slots[i].e = NULL;
  c->slots[i].h = 0;
  c->count--;
}

/* The dirty list grows with the table (it never holds more than the
 * table), so marking an entry dirty never allocates. */
static int table_grow(rk_cache *c) {
  uint8_t nb = (uint8_t)(c->bits + 1);
  rk_entry **nd = realloc(c->dirty, ((size_t)1 << nb) * sizeof(*nd));
  if (!nd)
    return SL_ERR_NOMEM;
  c->dirty = nd;
  c->cap_dirty = (size_t)1 << nb;
  rk_slot *ns = calloc((size_t)1 << nb, sizeof(*ns));
  if (!ns)
    return SL_ERR_NOMEM;
  size_t cap = (size_t)1 << c->bits, mask = ((size_t)1 << nb) - 1;
  for (size_t i = 0; i < cap; i++) {
    if (!c->slots[i].e)
      continue;
    size_t j = rk_idx(c->slots[i].h, nb);
    while (ns[j].e)
      j = (j + 1) & mask;
    ns[j] = c->slots[i];
  }
  free(c->slots);
  c->slots = ns;
  c->bytes += cap * (sizeof(*ns) + sizeof(*nd));
  c->bits = nb;
  return 0;
}

/* The slot of entry e, found again from its key (after a flush, which
 * works from the dirty list and has no slot indices). */
static size_t slot_of(rk *b, rk_entry *e) {
  rk_state *st = rk_st(b, e->state);
  uint32_t ml = rk_mklen(e, st);
  sl__skey k = {.state = e->state,
                .kg = e->kg,
                .key = e->data,
                .key_len = e->key_len,
                .ns = e->data + e->key_len,
                .ns_len = e->ns_len};
  k.hash = sl__state_hash(sl__hash64(k.key, k.key_len), k.ns, k.ns_len);
  const unsigned char *mk = e->data + e->key_len + e->ns_len;
  uint64_t h =
      st->type == SL__BT_MAP ? rk_mhash(&k, rk_entry_mh(e)) : rk_hash(&k);
  rk_entry *f;
  size_t i = rk_probe(&b->cache, h, &k, st->type == SL__BT_MAP, mk, ml, &f);
  return f == e ? i : SIZE_MAX;
}

/* ---- Entries ------------------------------------------------------------ */

/* What a snapshot wrote is RocksDB's now: e (clean, or frozen and
 * copied) holds no change of its own. A list's appended frames are part
 * of RocksDB's list. */
static void written(rk_entry *e) {
  if (e->flags & RK_APPEND) {
    e->u.base_len += e->val_len;
    e->val_len = 0;
  }
  e->dgen = 0;
}

/* Replaces the frozen entry at slot by a copy, so the worker changes the
 * copy while the snapshot's thread reads the original; the original is
 * freed once the thread has copied and sorted the frozen set (sl__rk_thaw). Its
 * bytes count until then. */
static int cow(rk *b, size_t slot, rk_entry **ep) {
  rk_cache *c = &b->cache;
  rk_entry *e = *ep;
  assert(slot != SIZE_MAX && c->slots[slot].e == e);
  if (c->n_retired == c->cap_retired) {
    size_t cap = c->cap_retired ? 2 * c->cap_retired : 1024;
    rk_entry **r = realloc(c->retired, cap * sizeof(*r));
    if (!r)
      return SL_ERR_NOMEM;
    c->bytes += (cap - c->cap_retired) * sizeof(*r);
    c->retired = r;
    c->cap_retired = cap;
  }
  uint32_t xl = rk_xlen(e, rk_st(b, e->state));
  size_t sz = ent_size(e, xl);
  rk_entry *n = ent_alloc(c, sz);
  if (!n)
    return SL_ERR_NOMEM;
  memcpy(n, e, sz);
  c->slots[slot].e = n;
  c->retired[c->n_retired++] = e;
  c->bytes += ent_bytes(n, xl);
  c->cows++;
  b->base.epoch++; /* bytes handed out before now are the original's */
  *ep = n;
  return 0;
}

int sl__rk_own(rk *b, size_t slot, rk_entry **ep) {
  rk_cache *c = &b->cache;
  rk_entry *e = *ep;
  if (e->dgen == c->gen || !e->dgen)
    return 0;
  /* Frozen: the thread copies v[0, done) before it publishes done, so an
   * entry below it is read no more (acquire: its reads happened before). */
  if (e->dgen == c->fgen &&
      e->dirty_idx >=
          atomic_load_explicit(&c->fz->done, memory_order_acquire)) {
    int rc = cow(b, slot, ep);
    if (rc)
      return rc;
  }
  written(*ep);
  return 0;
}

int sl__rk_dirty(rk *b, size_t slot, rk_entry **ep) {
  rk_cache *c = &b->cache;
  if ((*ep)->dgen == c->gen)
    return 0;
  int rc = sl__rk_own(b, slot, ep);
  if (rc)
    return rc;
  rk_entry *e = *ep;
  assert(c->n_dirty < c->cap_dirty);
  e->dirty_idx = (uint32_t)c->n_dirty;
  c->dirty[c->n_dirty++] = e;
  e->dgen = c->gen;
  rk_st(b, e->state)->n_dirty++;
  return 0;
}

int sl__rk_reserve(rk *b, size_t slot, rk_entry **ep, size_t cap) {
  rk_entry *e = *ep;
  if (cap <= e->val_cap)
    return 0;
  if (cap > UINT32_MAX - 64)
    return SL_ERR_RANGE;
  rk_cache *c = &b->cache;
  /* Owned (sl__rk_own): a frozen entry is never moved from under the
   * snapshot's thread. */
  assert(e->dgen == c->gen || !e->dgen);
  uint32_t xl = rk_xlen(e, rk_st(b, e->state));
  size_t before = ent_bytes(e, xl);
  size_t vo = rk_voff(e->key_len, e->ns_len, xl);
  rk_entry *n = ent_realloc(c, e, ent_size(e, xl), vo + cap);
  if (!n)
    return SL_ERR_NOMEM;
  n->val_cap = (uint32_t)cap;
  c->bytes += ent_bytes(n, xl) - before;
  if (n != e) {
    c->slots[slot].e = n;
    if (rk_dirty_now(c, n))
      c->dirty[n->dirty_idx] = n;
    b->base.epoch++; /* bytes handed out before now live elsewhere */
  }
  *ep = n;
  if (c->bytes > c->limit) { /* make room for what grew, except it */
    uint8_t pinned = n->wflags & RK_PIN;
    n->wflags |= RK_PIN;
    int rc = sl__rk_evict(b);
    n->wflags = (uint8_t)((n->wflags & ~RK_PIN) | pinned);
    return rc;
  }
  return 0;
}

/* A list larger than list_max() after a flush keeps only what the cache
 * needs: that it exists, and its length. */
static void demote_list(rk *b, rk_entry *e) {
  size_t i = slot_of(b, e);
  if (i == SIZE_MAX)
    return;
  rk_cache *c = &b->cache;
  size_t before = ent_bytes(e, 0);
  rk_entry *n =
      ent_realloc(c, e, ent_size(e, 0), rk_voff(e->key_len, e->ns_len, 0));
  if (!n)
    return; /* keeping it whole is fine too */
  n->u.base_len = n->val_len;
  n->val_len = n->val_cap = 0;
  n->flags |= RK_APPEND;
  c->slots[i].e = n;
  c->bytes -= before - ent_bytes(n, 0);
  b->base.epoch++;
}

/* A record: the entry's RocksDB write, as the snapshot's thread copied it
 * (header, encoded key, value, padded to 8). */
typedef struct rk_rec {
  uint32_t state, key_len, val_len;
  uint8_t op; /* RK_OP_* */
  uint8_t pad_[3];
  unsigned char data[];
} rk_rec;
enum { RK_OP_PUT, RK_OP_DELETE, RK_OP_MERGE };

/* The snapshot's record under (state, encoded key), or NULL (below, with
 * the records' order). */
static const rk_rec *frozen_find(const rk_frozen *f, uint32_t state,
                                 const void *key, size_t kl);

/* ---- Reading through the cache ------------------------------------------ */

static rk_entry *entry_new(rk_cache *c, const sl__skey *k, bool map,
                           uint64_t mh, const void *mk, size_t ml, size_t cap) {
  size_t vo = rk_voff(k->key_len, k->ns_len, map ? ml + 8 : 0);
  rk_entry *e = ent_alloc(c, vo + cap);
  if (!e)
    return NULL;
  memset(e, 0, sizeof(*e));
  e->state = (uint16_t)k->state;
  e->key_len = (uint32_t)k->key_len;
  e->ns_len = (uint32_t)k->ns_len;
  if (map)
    e->u.mk_len = (uint32_t)ml;
  e->val_cap = (uint32_t)cap;
  e->kg = (uint16_t)k->kg;
  if (k->key_len)
    memcpy(e->data, k->key, k->key_len);
  if (k->ns_len)
    memcpy(e->data + k->key_len, k->ns, k->ns_len);
  if (ml)
    memcpy(e->data + k->key_len + k->ns_len, mk, ml);
  if (map)
    memcpy(e->data + k->key_len + k->ns_len + ml, &mh, 8);
  return e;
}

/* The slot array (with the dirty list) grows while the doubling fits in
 * the limit, so small entries get the slots they need; beyond that entries
 * are evicted to keep it under 3/4 full. */
static bool can_grow(const rk_cache *c) {
  size_t more = ((size_t)1 << c->bits) * (sizeof(rk_slot) + sizeof(rk_entry *));
  return c->bytes + more <= c->limit;
}
static bool crowded(const rk_cache *c) {
  return (c->count + 1) * 4 > ((size_t)3 << c->bits);
}

/* Adds new entry e (not in the table) under hash h, evicting others when
 * the cache is over its limit (never e). */
static int insert(rk *b, uint64_t h, const sl__skey *k, bool map,
                  const void *mk, size_t ml, rk_entry *e, rk_entry **out,
                  size_t *slot) {
  rk_cache *c = &b->cache;
  int rc = 0;
  if ((c->count + 1) * 4 > ((size_t)3 << c->bits) && can_grow(c))
    rc = table_grow(c);
  else if (crowded(c))
    rc = sl__rk_evict(b);
  if (rc) {
    free_entry(b, e);
    return rc;
  }
  rk_entry *none;
  size_t i = rk_probe(c, h, k, map, mk, ml, &none);
  c->slots[i].h = h;
  c->slots[i].e = e;
  c->count++;
  c->bytes += ent_bytes(e, map ? (uint32_t)ml + 8 : 0);
  if (c->bytes > c->limit) {
    e->wflags |= RK_PIN;
    rc = sl__rk_evict(b);
    e->wflags &= (uint8_t)~RK_PIN;
    i = rk_probe(c, h, k, map, mk, ml, &none); /* entries moved */
    if (rc)
      return rc;
  }
  *out = e;
  *slot = i;
  return 0;
}

int sl__rk_fetch(rk *b, const sl__skey *k, bool map, uint64_t mh,
                 const void *mk, size_t ml, bool full, size_t cap,
                 rk_entry **out, size_t *slot) {
  rk_cache *c = &b->cache;
  int rc = rk_failed(b);
  if (rc)
    return rc;
  uint64_t h = map ? rk_mhash(k, mh) : rk_hash(k);
  rk_entry *e;
  size_t i = rk_probe(c, h, k, map, mk, ml, &e);
  if (e) {
    e->wflags |= RK_REF;
    *out = e;
    *slot = i;
    if (full && (e->flags & RK_APPEND))
      return sl__rk_list_full(b, i, out);
    return 0;
  }
  if (k->key_len > UINT32_MAX / 2 || k->ns_len > UINT32_MAX / 2 ||
      ml > UINT32_MAX / 2)
    return SL_ERR_RANGE;
  rk_state *st = rk_st(b, k->state);
  size_t kl = sl__rk_encode(b, k->kg, k->key, k->key_len, k->ns, k->ns_len, map,
                            mh, mk, ml);
  if (!kl)
    return SL_ERR_NOMEM;
  /* An entry of a snapshot in flight, evicted since it was copied, is in
   * the snapshot's records, not yet in RocksDB (a list's appended frames
   * are never evicted then: their record is not the whole list). */
  const rk_rec *r =
      c->snap && !c->fz ? frozen_find(c->snap, k->state, b->kbuf, kl) : NULL;
  if (r && r->op == RK_OP_MERGE) {
    if ((rc = sl__rk_settle(b)))
      return rc;
    r = NULL;
  }
  rocksdb_pinnableslice_t *ps = NULL;
  size_t vl = 0;
  const char *v = NULL;
  bool found;
  if (r) {
    c->early_read++;
    found = r->op == RK_OP_PUT;
    v = (const char *)r->data + r->key_len;
    vl = r->val_len;
  } else {
    char *err = NULL;
    ps = rocksdb_get_pinned_cf(b->db, b->ro, st->cf, (const char *)b->kbuf, kl,
                               &err);
    if (err)
      return sl__rk_fail(b, "read", err);
    found = ps != NULL;
    v = ps ? rocksdb_pinnableslice_value(ps, &vl) : NULL;
  }
  bool append = ps && st->type == SL__BT_LIST && !full && vl > list_max(c);
  if (found && vl > UINT32_MAX - 64) {
    rocksdb_pinnableslice_destroy(ps);
    return SL_ERR_RANGE;
  }
  /* A new entry gets the room its caller is about to fill, so creating
   * a key costs one allocation, not an allocation and a realloc. */
  e = entry_new(c, k, map, mh, mk, ml, found && !append ? vl : cap);
  if (!e) {
    rocksdb_pinnableslice_destroy(ps);
    return SL_ERR_NOMEM;
  }
  e->wflags = RK_REF;
  if (append) {
    e->flags = RK_PRESENT | RK_APPEND;
    e->u.base_len = (uint32_t)vl;
  } else if (found) {
    e->flags = RK_PRESENT;
    e->val_len = (uint32_t)vl;
    if (vl)
      memcpy(rk_val(e, map ? (uint32_t)ml + 8 : 0), v, vl);
  }
  rocksdb_pinnableslice_destroy(ps);
  return insert(b, h, k, map, mk, ml, e, out, slot);
}

int sl__rk_adopt(rk *b, const sl__skey *k, uint64_t mh, const void *mk,
                 size_t ml, const void *val, size_t vl, rk_entry **out,
                 size_t *slot) {
  rk_cache *c = &b->cache;
  uint64_t h = rk_mhash(k, mh);
  rk_entry *e;
  size_t i = rk_probe(c, h, k, true, mk, ml, &e);
  if (e) {
    e->wflags |= RK_REF;
    *out = e;
    *slot = i;
    return 0;
  }
  if (vl > UINT32_MAX - 64)
    return SL_ERR_RANGE;
  if (!(e = entry_new(c, k, true, mh, mk, ml, vl)))
    return SL_ERR_NOMEM;
  e->flags = RK_PRESENT;
  e->wflags = RK_REF;
  e->val_len = (uint32_t)vl;
  if (vl)
    memcpy(rk_val(e, (uint32_t)ml + 8), val, vl);
  return insert(b, h, k, true, mk, ml, e, out, slot);
}

int sl__rk_list_full(rk *b, size_t slot, rk_entry **ep) {
  rk_entry *e = *ep;
  if (!(e->flags & RK_APPEND))
    return 0;
  /* Flush first (the pending appends go out as a merge operand), so the
   * list read below is all of it. */
  int rc = sl__rk_settle(b);
  if (!rc)
    rc = sl__rk_flush(b);
  if (!rc) /* nothing is frozen now: only what a snapshot wrote is taken */
    rc = sl__rk_own(b, slot, ep);
  if (rc)
    return rc;
  e = *ep;
  rk_state *st = rk_st(b, e->state);
  size_t kl = sl__rk_encode(b, e->kg, e->data, e->key_len, e->data + e->key_len,
                            e->ns_len, false, 0, NULL, 0);
  if (!kl)
    return SL_ERR_NOMEM;
  char *err = NULL;
  rocksdb_pinnableslice_t *ps = rocksdb_get_pinned_cf(
      b->db, b->ro, st->cf, (const char *)b->kbuf, kl, &err);
  if (err)
    return sl__rk_fail(b, "read", err);
  size_t vl = 0;
  const char *v = ps ? rocksdb_pinnableslice_value(ps, &vl) : NULL;
  /* The list differs from what we wrote only when the compaction filter
   * dropped expired elements (or all of them) meanwhile; its drops are
   * already in the state's dropped counters. */
  if (!ps)
    e->flags &= (uint8_t)~RK_PRESENT;
  if ((rc = sl__rk_reserve(b, slot, ep, vl))) {
    rocksdb_pinnableslice_destroy(ps);
    return rc;
  }
  e = *ep;
  if (vl)
    memcpy(rk_val(e, 0), v, vl);
  e->val_len = (uint32_t)vl;
  e->u.base_len = 0;
  e->flags &= (uint8_t)~RK_APPEND;
  rocksdb_pinnableslice_destroy(ps);
  return 0;
}

/* ---- Writing back ------------------------------------------------------- */

/* Writes wb (the cache's) and clears it. */
static int batch_write(rk *b, rocksdb_writebatch_t *wb) {
  int rc = sl__rk_settle(b);
  if (rc)
    return rc;
  char *err = NULL;
  size_t n;
  rocksdb_writebatch_data(wb, &n);
  rocksdb_write(b->db, b->wo, wb, &err);
  rocksdb_writebatch_clear(wb);
  b->wseq++;
  if (err)
    return sl__rk_fail(b, "write", err);
  sl__rk_written(b, n);
  return 0;
}

/* Key order, nearly: (state, key group, key length, key, ns length, ns, map
 * key) is the order of the encoded keys whenever lengths fit in one varint
 * byte, and close to it otherwise (map entries are stored by the map key's
 * hash first). It only needs to be close: RocksDB's memtable inserts keys
 * that arrive in order several times faster than random ones. */
static int dirty_cmp(const void *pa, const void *pb, const void *ctx) {
  const rk_entry *a = pa, *b = pb;
  if (a->state != b->state)
    return a->state < b->state ? -1 : 1;
  if (a->kg != b->kg)
    return a->kg < b->kg ? -1 : 1;
  if (a->key_len != b->key_len)
    return a->key_len < b->key_len ? -1 : 1;
  /* The rest of both entries' names (key | ns | map key) are adjacent. */
  const rk_state *st = rk_st((rk *)ctx, a->state);
  size_t la = a->key_len + a->ns_len + rk_mklen(a, st);
  size_t lb = b->key_len + b->ns_len + rk_mklen(b, st);
  int r = memcmp(a->data, b->data, la < lb ? la : lb);
  return r ? r : (la > lb) - (la < lb);
}

/* One in-place sort for two kinds of elements (qsort would allocate a
 * buffer as large as the array, and a transient multi-megabyte block
 * between small entries is what fragments the heap: RSS stays above the
 * budget after it is freed). Quicksort with median of three, insertion
 * sort below 16, heapsort when too deep. RK_SORT(name, T, CMP) defines
 * name(T *v, size_t n, int depth, const void *ctx), sorting by
 * CMP(const T *a, const T *b, ctx). */
#define RK_SORT(name, T, CMP)                                                  \
  static void name##_swap(T *a, T *b) {                                        \
    T t = *a;                                                                  \
    *a = *b;                                                                   \
    *b = t;                                                                    \
  }                                                                            \
  static void name##_sift(T *v, size_t i, size_t n, const void *ctx) {         \
    for (size_t c; (c = 2 * i + 1) < n; i = c) {                               \
      if (c + 1 < n && CMP(&v[c], &v[c + 1], ctx) < 0)                         \
        c++;                                                                   \
      if (CMP(&v[i], &v[c], ctx) >= 0)                                         \
        return;                                                                \
      name##_swap(&v[i], &v[c]);                                               \
    }                                                                          \
  }                                                                            \
  static void name(T *v, size_t n, int depth, const void *ctx) {               \
    while (n > 16) {                                                           \
      if (depth-- == 0) {                                                      \
        for (size_t i = n / 2; i-- > 0;)                                       \
          name##_sift(v, i, n, ctx);                                           \
        for (size_t i = n; i-- > 1;) {                                         \
          name##_swap(&v[0], &v[i]);                                           \
          name##_sift(v, 0, i, ctx);                                           \
        }                                                                      \
        return;                                                                \
      }                                                                        \
      size_t m = n / 2;                                                        \
      if (CMP(&v[m], &v[0], ctx) < 0)                                          \
        name##_swap(&v[m], &v[0]);                                             \
      if (CMP(&v[n - 1], &v[0], ctx) < 0)                                      \
        name##_swap(&v[n - 1], &v[0]);                                         \
      if (CMP(&v[n - 1], &v[m], ctx) < 0)                                      \
        name##_swap(&v[n - 1], &v[m]);                                         \
      T pivot = v[m];                                                          \
      size_t i = 0, j = n - 1;                                                 \
      for (;;) {                                                               \
        while (CMP(&v[i], &pivot, ctx) < 0)                                    \
          i++;                                                                 \
        while (CMP(&pivot, &v[j], ctx) < 0)                                    \
          j--;                                                                 \
        if (i >= j)                                                            \
          break;                                                               \
        name##_swap(&v[i++], &v[j--]);                                         \
      }                                                                        \
      /* [0, j] <= pivot <= [j + 1, n): recurse into the smaller part. */      \
      if (j + 1 < n - j - 1) {                                                 \
        name(v, j + 1, depth, ctx);                                            \
        v += j + 1, n -= j + 1;                                                \
      } else {                                                                 \
        name(v + j + 1, n - j - 1, depth, ctx);                                \
        n = j + 1;                                                             \
      }                                                                        \
    }                                                                          \
    for (size_t i = 1; i < n; i++)                                             \
      for (size_t k = i; k > 0 && CMP(&v[k], &v[k - 1], ctx) < 0; k--)         \
        name##_swap(&v[k], &v[k - 1]);                                         \
  }

/* The dirty entries a flush writes, by dirty_cmp. */
static inline int entry_cmp(rk_entry *const *a, rk_entry *const *b,
                            const void *ctx) {
  return dirty_cmp(*a, *b, ctx);
}
RK_SORT(sort_entries, rk_entry *, entry_cmp)

/* Writes entries v[0..n) as they are in the cache (sorted first) in write
 * batches. On failure the backend fails for good (sticky error). */
static int write_entries(rk *b, rk_entry **v, size_t n) {
  sort_entries(v, n, 64, b);
  rocksdb_writebatch_t *wb = b->cache.wb;
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    rk_entry *e = v[i];
    rk_state *st = rk_st(b, e->state);
    uint32_t ml = rk_mklen(e, st);
    bool map = st->type == SL__BT_MAP;
    const unsigned char *mk = e->data + e->key_len + e->ns_len;
    size_t kl =
        sl__rk_encode(b, e->kg, e->data, e->key_len, e->data + e->key_len,
                      e->ns_len, map, map ? rk_entry_mh(e) : 0, mk, ml);
    if (!kl) {
      rc = SL_ERR_NOMEM;
      break;
    }
    const char *key = (const char *)b->kbuf;
    const char *val = (const char *)rk_val(e, rk_xlen(e, st));
    if (!(e->flags & RK_PRESENT))
      rocksdb_writebatch_delete_cf(wb, st->cf, key, kl);
    else if (e->flags & RK_APPEND)
      rocksdb_writebatch_merge_cf(wb, st->cf, key, kl, val, e->val_len);
    else
      rocksdb_writebatch_put_cf(wb, st->cf, key, kl, val, e->val_len);
    size_t sz;
    rocksdb_writebatch_data(wb, &sz);
    if (sz >= RK_BATCH_BYTES) {
      rc = batch_write(b, wb);
      wb = b->cache.wb;
    }
  }
  if (!rc && rocksdb_writebatch_count(wb))
    rc = batch_write(b, wb);
  rocksdb_writebatch_clear(b->cache.wb);
  return rc;
}

int sl__rk_flush(rk *b) {
  rk_cache *c = &b->cache;
  if (!c->n_dirty)
    return 0;
  /* Nothing reaches RocksDB before the snapshot in flight. */
  int rc = sl__rk_settle(b);
  if (rc || (rc = write_entries(b, c->dirty, c->n_dirty)))
    return rc; /* the sticky error fails every later call */
  size_t lmax = list_max(c);
  for (size_t i = 0; i < c->n_dirty; i++) {
    rk_entry *e = c->dirty[i];
    rk_st(b, e->state)->n_dirty = 0;
    written(e);
    if (!(e->flags & RK_APPEND) && (e->flags & RK_PRESENT) &&
        !(e->wflags & RK_PIN) && rk_st(b, e->state)->type == SL__BT_LIST &&
        e->val_len > lmax) {
      demote_list(b, e);
    }
  }
  c->n_dirty = 0;
  return 0;
}

/* Takes e off the dirty list (the last one takes its place). */
static void undirty(rk *b, rk_entry *e) {
  rk_cache *c = &b->cache;
  rk_entry *last = c->dirty[--c->n_dirty];
  c->dirty[e->dirty_idx] = last;
  last->dirty_idx = e->dirty_idx;
  e->dgen = 0;
  rk_st(b, e->state)->n_dirty--;
}

/* Writes and frees dirty victims (out of the table already). */
static int write_victims(rk *b, rk_entry **v, size_t n) {
  int rc = write_entries(b, v, n);
  for (size_t i = 0; i < n; i++)
    free_entry(b, v[i]);
  return rc;
}

/* Whether the cache needs room. */
static bool over(const rk_cache *c) {
  return c->bytes > c->limit || crowded(c);
}

/* What eviction may drop while a snapshot is in flight, when nothing may
 * reach RocksDB before the snapshot: a clean entry, which RocksDB holds
 * or, once the thread has copied the frozen set and sorted the records,
 * the snapshot's records do (a miss finds it there); not a frozen entry
 * before that, nor a list's appended frames (RocksDB has only the list's
 * start until the snapshot's merge is in). */
static bool droppable(const rk_cache *c, const rk_entry *e) {
  return !rk_dirty_now(c, e) && !(e->flags & RK_APPEND) &&
         !(c->fz && e->dgen == c->fgen);
}

/* Second chance (CLOCK) down to 3/4 of the limit, so evictions come in
 * rounds, not on every miss. The hand visits slots in a random order, not
 * in turn: sweeping the table in order would thin it behind the hand and
 * leave it crowded ahead, and linear probing degrades into runs tens of
 * thousands of slots long. Only the dirty victims are written: a hot entry
 * that stays is written once, at the next flush, however many rounds it
 * survives. early: only what droppable() allows; *short_of: the round
 * ended above 3/4. */
static int clock_round(rk *b, bool early, bool *short_of) {
  rk_cache *c = &b->cache;
  size_t target = c->limit - c->limit / 4;
  size_t max_count = can_grow(c) ? SIZE_MAX : ((size_t)5 << c->bits) / 8;
  size_t mask = ((size_t)1 << c->bits) - 1;
  size_t steps = 4 * (mask + 1); /* enough to clear every reference */
  rk_entry **out = c->victims;
  size_t n_out = 0;
  bool freed = false;
  int rc = 0;
  while ((c->bytes > target || c->count > max_count) && steps--) {
    /* xorshift64 */
    c->hand ^= c->hand << 13, c->hand ^= c->hand >> 7, c->hand ^= c->hand << 17;
    size_t i = (size_t)(c->hand >> 11) & mask;
    rk_entry *e = c->slots[i].e;
    if (!e || (e->wflags & RK_PIN) || (early && !droppable(c, e)))
      continue;
    if (e->wflags & RK_REF) {
      e->wflags &= (uint8_t)~RK_REF;
      continue;
    }
    c->bytes -= ent_bytes(e, rk_xlen(e, rk_st(b, e->state)));
    if (rk_dirty_now(c, e)) {
      undirty(b, e);
      out[n_out++] = e;
    } else {
      free_entry(b, e);
      c->early_evicted += early;
    }
    table_remove(c, i);
    freed = true;
    if (n_out == RK_VICTIMS && (rc = write_victims(b, out, n_out)))
      break;
    n_out = n_out == RK_VICTIMS ? 0 : n_out;
  }
  if (!rc && n_out)
    rc = write_victims(b, out, n_out);
  if (freed)
    b->base.epoch++;
  *short_of = c->bytes > target || c->count > max_count;
  return rc;
}

/* While a snapshot is in flight the cache may hold an eighth more than its
 * limit rather than make the worker wait: right after a barrier nearly
 * every entry may be frozen (all were written since the last one) and
 * none may go before the thread has copied them. */
static bool over_grace(const rk_cache *c) {
  return c->bytes > c->limit + c->limit / 8 || crowded(c);
}

int sl__rk_evict(rk *b) {
  rk_cache *c = &b->cache;
  if (!over(c))
    return 0;
  bool short_of = true;
  sl__rk_poll(b); /* a copied frozen set may be dropped, a done one is in */
  if (b->bg && c->fz) {
    if (!over_grace(c))
      return 0;
    sl__rk_wait_bg(b, false);
  }
  if (b->bg && !c->early_spent) {
    size_t before = c->bytes;
    int rc = clock_round(b, true, &short_of);
    if (rc || !short_of)
      return rc;
    /* The rest is the snapshot's records and what is dirty since the
     * barrier: a round that freed less than a sixteenth of the limit is
     * not tried again before the snapshot's next step. */
    c->early_spent = before - c->bytes < c->limit / 16;
  }
  if (b->bg && over_grace(c))
    sl__rk_wait_bg(b, true); /* the records go once RocksDB has them */
  if (b->bg && !over_grace(c))
    return 0;
  /* What is left is dirty since the barrier (or a list's frames): wait
   * until the snapshot is in RocksDB, then write it out. This is the bound
   * on what the cache holds while a snapshot completes. */
  int rc = sl__rk_settle(b);
  if (rc || !over(c))
    return rc;
  return clock_round(b, false, &short_of);
}

void sl__rk_cache_drop_kg(rk *b, uint32_t kg) {
  rk_cache *c = &b->cache;
  sl__rk_settle(b); /* a dropped entry would be read back from RocksDB */
  size_t cap = (size_t)1 << c->bits;
  bool freed = false;
  for (size_t i = 0; i < cap;) {
    rk_entry *e = c->slots[i].e;
    if (!e || (kg != UINT32_MAX && e->kg != kg) || rk_dirty_now(c, e) ||
        (e->wflags & RK_PIN)) {
      i++;
      continue;
    }
    c->bytes -= ent_bytes(e, rk_xlen(e, rk_st(b, e->state)));
    free_entry(b, e);
    table_remove(c, i); /* slot i now holds the next entry: look again */
    freed = true;
  }
  if (freed)
    b->base.epoch++;
}

/* ---- Snapshots: the frozen set ------------------------------------------ *
 * At a barrier the dirty list becomes the snapshot's (sl__rk_freeze) and
 * the worker goes on at once; nothing else of the cache is touched. The
 * snapshot's thread reads the frozen entries while the worker may still
 * read them (a byte of flags of their own keeps the worker's marks apart)
 * but changes none of them: its first write to one the thread has not
 * copied yet changes a copy (sl__rk_own), so the thread sees every frozen
 * entry as it was at the barrier. The thread copies the entries into
 * records first and publishes how far it got, which bounds how many the
 * worker copies; it sorts and writes the records after that, while the
 * worker writes in place again. Until the whole snapshot is in RocksDB
 * the worker writes nothing there (sl__rk_settle), so the frozen entries,
 * in the cache as clean ones, are what its reads see.                      */

int sl__rk_freeze(rk *b, rk_frozen *f) {
  rk_cache *c = &b->cache;
  assert(c->fgen == RK_NO_GEN && c->n_dirty);
  memset(f, 0, sizeof(*f));
  f->is_map = malloc(b->n_states);
  f->cfs = malloc(b->n_states * sizeof(*f->cfs));
  f->opts = malloc(b->n_states * sizeof(*f->opts));
  size_t il = strlen(b->dir) + sizeof("/" RK_INGEST_FILE);
  if ((f->ingest = malloc(il)))
    snprintf(f->ingest, il, "%s/" RK_INGEST_FILE, b->dir);
  /* The next generation's list: allocated, not filled (the pages come as
   * entries are dirtied). */
  rk_entry **nl = malloc(c->cap_dirty * sizeof(*nl));
  if (!f->is_map || !f->cfs || !f->opts || !f->ingest || !nl) {
    free(nl);
    sl__rk_frozen_free(f);
    return SL_ERR_NOMEM;
  }
  for (uint32_t id = 0; id < b->n_states; id++) {
    rk_state *st = rk_st(b, id);
    f->is_map[id] = st->type == SL__BT_MAP;
    f->cfs[id] = st->cf;
    f->opts[id] = st->opts;
    st->n_dirty = 0;
  }
  f->v = c->dirty;
  f->n = c->n_dirty;
  f->list_bytes = c->cap_dirty * sizeof(*nl);
  atomic_init(&f->done, 0);
  atomic_init(&f->sorted, false);
  atomic_init(&f->written, false);
  c->dirty = nl;
  c->n_dirty = 0;
  c->bytes += f->list_bytes;
  c->fgen = c->gen;
  c->gen = c->gen == RK_GEN_MAX ? 1 : (uint16_t)(c->gen + 1);
  c->fz = f;
  c->snap = f;
  return 0;
}

void sl__rk_unfreeze(rk *b, rk_frozen *f) {
  rk_cache *c = &b->cache;
  assert(c->fz == f && !c->n_dirty && !c->n_retired);
  free(c->dirty);
  c->bytes -= f->list_bytes;
  c->dirty = f->v;
  c->n_dirty = f->n;
  f->v = NULL;
  c->gen = (uint16_t)c->fgen;
  c->fgen = RK_NO_GEN;
  c->fz = NULL;
  c->snap = NULL;
  for (size_t i = 0; i < c->n_dirty; i++)
    rk_st(b, c->dirty[i]->state)->n_dirty++;
}

/* Once per wrap of the generations (the snapshot that reaches RK_GEN_MAX
 * and the next one): every entry a snapshot wrote takes it now, so no
 * entry keeps a generation that is about to come round again. Two passes
 * over the table per 65535 snapshots, after the copy, not at a barrier. */
static void sweep(rk *b) {
  rk_cache *c = &b->cache;
  size_t cap = (size_t)1 << c->bits;
  for (size_t i = 0; i < cap; i++) {
    rk_entry *e = c->slots[i].e;
    if (e && e->dgen && e->dgen != c->gen)
      written(e);
  }
}

void sl__rk_release(rk *b) {
  rk_cache *c = &b->cache;
  rk_frozen *f = c->snap;
  free(f->buf);
  free(f->keys);
  f->buf = NULL;
  f->keys = NULL;
  c->bytes -= b->bg_bytes;
  b->bg_bytes = 0;
  c->snap = NULL;
  c->early_spent = false;
}

void sl__rk_thaw(rk *b) {
  rk_cache *c = &b->cache;
  rk_frozen *f = c->fz;
  if (!f)
    return;
  for (size_t i = 0; i < c->n_retired; i++) {
    rk_entry *e = c->retired[i];
    c->bytes -= ent_bytes(e, rk_xlen(e, rk_st(b, e->state)));
    free_entry(b, e);
  }
  c->n_retired = 0;
  c->bytes -= f->list_bytes;
  /* The records count until the snapshot completes (sl__rk_settle). */
  b->bg_bytes = f->bytes;
  c->bytes += f->bytes;
  uint32_t was = c->fgen;
  c->fgen = RK_NO_GEN;
  c->fz = NULL;
  c->early_spent = false; /* the frozen entries may go now */
  if (c->gen == RK_GEN_MAX || was == RK_GEN_MAX) {
    int64_t t0 = sl__mono_ns();
    sweep(b);
    b->base.snap_wait_ns += sl__mono_ns() - t0; /* part of the pause */
  }
}

/* Where a record sorts: RocksDB's order is the column family's (the
 * state's), then the encoded key's bytes. The state and the key's first
 * 12 bytes (zero after its end, which sorts a key before its extensions
 * as memcmp does) decide most comparisons without reading the records,
 * which lie in copy order, scattered with respect to the sorted one. */
typedef struct rk_sortkey {
  uint64_t p0, p1; /* state << 32 | bytes 0-3; bytes 4-11 (big-endian) */
  size_t off;      /* the record's offset in buf */
} rk_sortkey;

static void sortkey_of(rk_sortkey *k, uint32_t state, const void *key,
                       size_t kl, size_t off) {
  unsigned char b[12] = {0};
  memcpy(b, key, kl < 12 ? kl : 12);
  k->p0 = (uint64_t)state << 32 | rk_get_be64(b) >> 32;
  k->p1 = rk_get_be64(b + 4);
  k->off = off;
}

/* The order of two sort keys: 0 when the keys' records decide it. */
static inline int prefix_cmp(const rk_sortkey *a, const rk_sortkey *b) {
  if (a->p0 != b->p0)
    return a->p0 < b->p0 ? -1 : 1;
  if (a->p1 != b->p1)
    return a->p1 < b->p1 ? -1 : 1;
  return 0;
}
static inline int bytes_cmp(const void *a, size_t la, const void *b,
                            size_t lb) {
  int r = memcmp(a, b, la < lb ? la : lb);
  return r ? r : (la > lb) - (la < lb);
}

static inline int sortkey_cmp(const rk_sortkey *a, const rk_sortkey *b,
                              const void *buf) {
  int c = prefix_cmp(a, b);
  if (c)
    return c;
  const rk_rec *x = (const void *)((const unsigned char *)buf + a->off);
  const rk_rec *y = (const void *)((const unsigned char *)buf + b->off);
  return bytes_cmp(x->data, x->key_len, y->data, y->key_len);
}
RK_SORT(sort_records, rk_sortkey, sortkey_cmp)

int sl__rk_frozen_copy(rk_frozen *f, size_t to) {
  size_t i = atomic_load_explicit(&f->done, memory_order_relaxed);
  /* Both buffers are fresh memory each time (tens of megabytes at 10^6
   * records): their pages are taken in one call each, not one fault per
   * page, which took two fifths of the copy's time. */
  if (!f->keys && f->n) {
    if (!(f->keys = malloc(f->n * sizeof(*f->keys))))
      return SL_ERR_NOMEM;
    sl__prefault(f->keys, f->n * sizeof(*f->keys));
  }
  for (; i < to; i++) {
    const rk_entry *e = f->v[i];
    bool map = f->is_map[e->state];
    uint32_t ml = map ? e->u.mk_len : 0, xl = map ? ml + 8 : 0;
    size_t need = (sizeof(rk_rec) + RK_KEY_MAX(e->key_len, e->ns_len, ml) +
                   e->val_len + 7) &
                  ~(size_t)7;
    if (f->len + need > f->cap) {
      size_t cap = f->cap ? 2 * f->cap : f->n * 48;
      if (cap < f->len + need)
        cap = f->len + need;
      unsigned char *p = realloc(f->buf, cap);
      if (!p)
        return SL_ERR_NOMEM;
      sl__prefault(p + f->cap, cap - f->cap);
      f->buf = p;
      f->cap = cap;
    }
    rk_rec *r = (rk_rec *)(f->buf + f->len);
    const unsigned char *mk = e->data + e->key_len + e->ns_len;
    uint64_t mh = 0;
    if (map)
      memcpy(&mh, mk + ml, 8);
    r->state = e->state;
    r->key_len = (uint32_t)sl__rk_encode_into(r->data, e->kg, e->data,
                                              e->key_len, e->data + e->key_len,
                                              e->ns_len, map, mh, mk, ml);
    r->op = !(e->flags & RK_PRESENT) ? RK_OP_DELETE
            : (e->flags & RK_APPEND) ? RK_OP_MERGE
                                     : RK_OP_PUT;
    r->val_len = r->op == RK_OP_DELETE ? 0 : e->val_len;
    if (r->val_len)
      memcpy(r->data + r->key_len,
             (const unsigned char *)e + rk_voff(e->key_len, e->ns_len, xl),
             r->val_len);
    sortkey_of(&f->keys[i], r->state, r->data, r->key_len, f->len);
    f->len += (sizeof(rk_rec) + r->key_len + r->val_len + 7) & ~(size_t)7;
    /* The last store below publishes f->bytes too. */
    if ((i & 255) == 255 && i + 1 < f->n)
      atomic_store_explicit(&f->done, i + 1, memory_order_release);
  }
  if (to == f->n) {
    /* The records count in the cache's bytes until they are in RocksDB:
     * not the slack of the last doubling. */
    unsigned char *p = f->len ? realloc(f->buf, f->len) : NULL;
    if (p) {
      f->buf = p;
      f->cap = f->len;
    }
    free(f->v);
    f->v = NULL;
    f->bytes = f->cap + f->n * sizeof(*f->keys);
  }
  atomic_store_explicit(&f->done, to, memory_order_release);
  return 0;
}

/* The records of one state, keys[0, n) in order, into RocksDB. From
 * sl__rk_ingest_min records on as a table file that RocksDB then takes in
 * whole (moved into the DB's files, under a sequence number above
 * everything it holds: the worker wrote nothing since the barrier): a
 * memtable insert costs about a microsecond per entry at 10^6 entries,
 * and the flush then writes the same entries into a table file anyway.
 * Fewer go through write batches, as a small file each time would only
 * add work for compaction. */
static int write_run(rk_frozen *f, rocksdb_t *db, rocksdb_writeoptions_t *wo,
                     const rk_sortkey *keys, size_t n, char **rerr) {
  rocksdb_column_family_handle_t *cf = f->cfs[keys[0].p0 >> 32];
  rocksdb_envoptions_t *eo = NULL;
  rocksdb_sstfilewriter_t *w = NULL;
  rocksdb_writebatch_t *wb = NULL;
  if (n >= sl__rk_ingest_min) {
    eo = rocksdb_envoptions_create();
    w = rocksdb_sstfilewriter_create(eo, f->opts[keys[0].p0 >> 32]);
    unlink(f->ingest); /* left by a process that died here */
    rocksdb_sstfilewriter_open(w, f->ingest, rerr);
  } else if (!(wb = rocksdb_writebatch_create())) {
    return SL_ERR_NOMEM;
  }
  for (size_t i = 0; i < n && !*rerr; i++) {
    /* In sorted order the records are scattered over buf. */
    if (i + 8 < n)
      __builtin_prefetch(f->buf + keys[i + 8].off);
    const rk_rec *r = (const void *)(f->buf + keys[i].off);
    const char *key = (const char *)r->data;
    const char *val = key + r->key_len;
    if (w) {
      if (r->op == RK_OP_DELETE)
        rocksdb_sstfilewriter_delete(w, key, r->key_len, rerr);
      else if (r->op == RK_OP_MERGE)
        rocksdb_sstfilewriter_merge(w, key, r->key_len, val, r->val_len, rerr);
      else
        rocksdb_sstfilewriter_put(w, key, r->key_len, val, r->val_len, rerr);
      continue;
    }
    if (r->op == RK_OP_DELETE)
      rocksdb_writebatch_delete_cf(wb, cf, key, r->key_len);
    else if (r->op == RK_OP_MERGE)
      rocksdb_writebatch_merge_cf(wb, cf, key, r->key_len, val, r->val_len);
    else
      rocksdb_writebatch_put_cf(wb, cf, key, r->key_len, val, r->val_len);
    size_t sz;
    rocksdb_writebatch_data(wb, &sz);
    if (sz >= RK_BATCH_BYTES || i + 1 == n) {
      rocksdb_write(db, wo, wb, rerr);
      rocksdb_writebatch_clear(wb);
    }
  }
  if (wb) {
    rocksdb_writebatch_destroy(wb);
    return 0;
  }
  if (!*rerr)
    rocksdb_sstfilewriter_finish(w, rerr);
  rocksdb_sstfilewriter_destroy(w);
  rocksdb_envoptions_destroy(eo);
  if (!*rerr) {
    rocksdb_ingestexternalfileoptions_t *io =
        rocksdb_ingestexternalfileoptions_create();
    rocksdb_ingestexternalfileoptions_set_move_files(io, 1);
    const char *files[] = {f->ingest};
    rocksdb_ingest_external_file_cf(db, cf, files, 1, io, rerr);
    rocksdb_ingestexternalfileoptions_destroy(io);
  }
  unlink(f->ingest); /* a move leaves nothing; a failure its file */
  return 0;
}

size_t sl__rk_ingest_min = 16384;

void sl__rk_frozen_sort(rk_frozen *f) {
  assert(atomic_load(&f->done) == f->n);
  sort_records(f->keys, f->n, 64, f->buf);
  atomic_store_explicit(&f->sorted, true, memory_order_release);
}

/* Binary search of the sorted records: the sort keys decide most steps
 * without reading a record. */
static const rk_rec *frozen_find(const rk_frozen *f, uint32_t state,
                                 const void *key, size_t kl) {
  rk_sortkey want;
  sortkey_of(&want, state, key, kl, 0);
  size_t lo = 0, hi = f->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const rk_sortkey *k = &f->keys[mid];
    const rk_rec *r = (const void *)(f->buf + k->off);
    int c = prefix_cmp(k, &want);
    if (!c && !(c = bytes_cmp(r->data, r->key_len, key, kl)))
      return r;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

int sl__rk_frozen_write(rk_frozen *f, rocksdb_t *db, rocksdb_writeoptions_t *wo,
                        char **rerr) {
  assert(atomic_load(&f->sorted));
  rk_sortkey *k = f->keys;
  /* Each state's records are a run of the sorted ones. */
  for (size_t lo = 0, hi; lo < f->n && !*rerr; lo = hi) {
    for (hi = lo + 1; hi < f->n && k[hi].p0 >> 32 == k[lo].p0 >> 32;)
      hi++;
    if (write_run(f, db, wo, k + lo, hi - lo, rerr))
      return SL_ERR_NOMEM;
  }
  return 0;
}

void sl__rk_frozen_free(rk_frozen *f) {
  free(f->v);
  free(f->is_map);
  free(f->cfs);
  free(f->opts);
  free(f->ingest);
  free(f->buf);
  free(f->keys);
  memset(f, 0, sizeof(*f));
}
