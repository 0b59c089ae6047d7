/* SPDX-License-Identifier: Apache-2.0 */
/* Timer service (see timers.h). Timers with the same (domain, ts) share a
 * bucket holding them in insertion order; a 4-ary min-heap per domain
 * orders the buckets, and open-addressing tables find timers (dedup,
 * delete) and buckets (add). Records live in pages that never move. */
#include "time/timers.h"

#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "sluice/common.h"

/* Why buckets: timestamps are milliseconds, so at any real rate many
 * timers share one (window ends, now + timeout); the heap then holds
 * distinct timestamps only, stays small and cache-resident, and equal
 * timestamps fire in insertion order without a sequence number. With all
 * timestamps distinct it degrades to a plain heap plus one table probe. */

#define TM_NONE UINT32_MAX
#define TM_POPPED (UINT32_MAX - 1) /* record.bucket of the popped record */
/* Key + ns bytes up to this size live inside the record: an 8-byte key
 * plus a 16-byte window namespace needs no extra memory. */
#define TM_INLINE 24
#define TM_PAGE_BITS 12
#define TM_PAGE (1u << TM_PAGE_BITS)
/* Longer key + ns bytes come from power-of-two size classes carved from
 * chunks and recycled through free lists, so steady state never mallocs;
 * beyond the largest class they are malloc'd one by one. */
#define TM_CLS_MIN_SHIFT 5 /* 32 bytes */
#define TM_NCLS 8          /* up to 4096 bytes */
#define TM_CHUNK (64 * 1024)
/* A bucket emptied by deletes stays in the heap (no back-pointers to
 * maintain on every sift) until it reaches the top, or until empty
 * buckets outnumber the others and the heap is rebuilt. */
#define TM_COMPACT_MIN 64

/* One pending timer. bucket == TM_NONE marks a free record. 64 bytes. */
typedef struct tm_ent {
  uint64_t hash;
  uint32_t kg;
  uint32_t tag; /* upper half of the timer hash: finds the index slot */
  uint32_t klen;
  uint32_t nslen;
  uint32_t next; /* bucket list; free list while free */
  uint32_t prev;
  uint32_t bucket; /* gives ts and domain */
  union {
    unsigned char in[TM_INLINE]; /* klen + nslen <= TM_INLINE */
    unsigned char *ext;          /* otherwise */
  } b;
} tm_ent;

/* All pending timers of one (domain, ts), oldest first. A bucket is in its
 * domain's heap exactly while it is in the bucket table, empty or not. */
typedef struct tm_bucket {
  int64_t ts;
  uint32_t head; /* next free bucket while free */
  uint32_t tail;
  uint32_t n;
  uint32_t tag;
  uint32_t domain;
} tm_bucket;

/* 16 bytes, so the four children of a node share one cache line. */
typedef struct tm_node {
  int64_t ts;
  uint64_t bid;
} tm_node;

typedef struct tm_heap {
  tm_node *n; /* n[0] is the root; children of i are 4i+1 .. 4i+4 */
  void *mem;  /* 64-byte aligned block; n = mem + 3 nodes aligns groups */
  size_t len;
  size_t cap;
  size_t empty; /* buckets in the heap with no timers */
  size_t live;  /* pending timers */
} tm_heap;

/* Open addressing, linear probing, backward-shift erase. id1 == 0: empty.
 * home = tag & mask, so growing and erasing never read the records. */
typedef struct tm_slot {
  uint32_t tag;
  uint32_t id1;
} tm_slot;

typedef struct tm_tab {
  tm_slot *s;
  size_t mask; /* capacity - 1; 0 while s is NULL */
  size_t used;
} tm_tab;

typedef struct tm_chunk {
  struct tm_chunk *next;
} tm_chunk;

struct sl__timers {
  tm_heap q[SL__TIMER_DOMAINS];
  tm_tab idx;  /* (domain, ts, key, ns) -> record */
  tm_tab bidx; /* (domain, ts) -> bucket */
  tm_ent **pages;
  size_t npages;
  uint32_t nents; /* record ids handed out so far (high-water mark) */
  uint32_t free_ent;
  tm_bucket *bk;
  uint32_t nbk; /* bucket ids handed out so far */
  uint32_t bk_cap;
  uint32_t free_bk;
  uint32_t pending; /* record behind the last popped view, freed lazily */
  unsigned char *cls_free[TM_NCLS];
  tm_chunk *chunks;
  unsigned char *chunk_ptr;
  size_t chunk_left;
};

static inline tm_ent *tm_ent_at(const struct sl__timers *t, uint32_t id) {
  return &t->pages[id >> TM_PAGE_BITS][id & (TM_PAGE - 1)];
}

static inline unsigned char *tm_bytes(tm_ent *e) {
  return e->klen + (size_t)e->nslen <= TM_INLINE ? e->b.in : e->b.ext;
}

static inline uint64_t tm_ts_mix(int domain, int64_t ts) {
  return (uint64_t)ts * 0x9e3779b97f4a7c15ULL ^
         (domain ? 0xd6e8feb86659fd93ULL : 0);
}

/* The key hash is already uniform; ts, the namespace and the domain only
 * need to be folded in before one final mix. */
static inline uint32_t tm_timer_tag(int domain, int64_t ts, uint64_t key_hash,
                                    const void *ns, size_t nslen) {
  uint64_t h = key_hash ^ tm_ts_mix(domain, ts);
  if (nslen > 16) {
    h ^= sl__hash64(ns, nslen);
  } else if (nslen) {
    uint64_t a = 0, b = 0;
    size_t la = nslen < 8 ? nslen : 8;
    memcpy(&a, ns, la);
    memcpy(&b, (const unsigned char *)ns + la, nslen - la);
    h ^= sl__mix64(a ^ (b * 0xc2b2ae3d27d4eb4fULL) ^ nslen);
  }
  return (uint32_t)(sl__mix64(h) >> 32);
}

static inline uint32_t tm_bucket_tag(int domain, int64_t ts) {
  return (uint32_t)(sl__mix64(tm_ts_mix(domain, ts)) >> 32);
}

/* ---- byte storage for long keys ------------------------------------------ */

static int tm_cls(size_t size) {
  int c = 0;
  while (((size_t)1 << (c + TM_CLS_MIN_SHIFT)) < size)
    c++;
  return c; /* == TM_NCLS when too big for a class */
}

static unsigned char *tm_bytes_alloc(struct sl__timers *t, size_t size) {
  int c = tm_cls(size);
  if (c >= TM_NCLS)
    return malloc(size);
  unsigned char *p = t->cls_free[c];
  if (p) {
    memcpy(&t->cls_free[c], p, sizeof p);
    return p;
  }
  size_t bsz = (size_t)1 << (c + TM_CLS_MIN_SHIFT);
  if (t->chunk_left < bsz) {
    /* The tail of the old chunk is abandoned: less than one block per
     * chunk, and only until the free lists fill. */
    tm_chunk *ch = malloc(TM_CHUNK);
    if (!ch)
      return NULL;
    ch->next = t->chunks;
    t->chunks = ch;
    t->chunk_ptr = (unsigned char *)ch + 16; /* blocks stay 16-aligned */
    t->chunk_left = TM_CHUNK - 16;
  }
  p = t->chunk_ptr;
  t->chunk_ptr += bsz;
  t->chunk_left -= bsz;
  return p;
}

static void tm_bytes_release(struct sl__timers *t, unsigned char *p,
                             size_t size) {
  int c = tm_cls(size);
  if (c >= TM_NCLS) {
    free(p);
    return;
  }
  memcpy(p, &t->cls_free[c], sizeof p);
  t->cls_free[c] = p;
}

/* ---- tables -------------------------------------------------------------- */

/* Makes room for one more entry at a load of at most 70 %. */
static int tm_tab_reserve(tm_tab *tb) {
  if ((tb->used + 1) * 10 <= (tb->s ? tb->mask + 1 : 0) * 7)
    return SL_OK;
  size_t ncap = tb->s ? (tb->mask + 1) * 2 : 64;
  if (ncap > ((size_t)1 << 32))
    return SL_ERR_NOMEM; /* the tag is the only stored hash */
  tm_slot *ns = calloc(ncap, sizeof *ns);
  if (!ns)
    return SL_ERR_NOMEM;
  size_t nmask = ncap - 1;
  for (size_t i = 0; tb->s && i <= tb->mask; i++) {
    if (!tb->s[i].id1)
      continue;
    size_t j = tb->s[i].tag & nmask;
    while (ns[j].id1)
      j = (j + 1) & nmask;
    ns[j] = tb->s[i];
  }
  free(tb->s);
  tb->s = ns;
  tb->mask = nmask;
  return SL_OK;
}

static void tm_tab_insert(tm_tab *tb, uint32_t tag, uint32_t id) {
  size_t i = tag & tb->mask;
  while (tb->s[i].id1)
    i = (i + 1) & tb->mask;
  tb->s[i].tag = tag;
  tb->s[i].id1 = id + 1;
  tb->used++;
}

static void tm_tab_erase_at(tm_tab *tb, size_t i) {
  size_t mask = tb->mask;
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!tb->s[j].id1)
      break;
    size_t home = tb->s[j].tag & mask;
    if (((j - home) & mask) >= ((j - i) & mask)) {
      tb->s[i] = tb->s[j];
      i = j;
    }
  }
  tb->s[i].id1 = 0;
  tb->used--;
}

static void tm_tab_erase_id(tm_tab *tb, uint32_t tag, uint32_t id) {
  size_t i = tag & tb->mask;
  while (tb->s[i].id1 != id + 1)
    i = (i + 1) & tb->mask;
  tm_tab_erase_at(tb, i);
}

/* Slot of the pending timer equal to the arguments, or -1. */
static ptrdiff_t tm_find_timer(const struct sl__timers *t, uint32_t tag,
                               int domain, int64_t ts, uint64_t key_hash,
                               const void *key, size_t klen, const void *ns,
                               size_t nslen) {
  const tm_tab *tb = &t->idx;
  if (!tb->s)
    return -1;
  for (size_t i = tag & tb->mask;; i = (i + 1) & tb->mask) {
    tm_slot s = tb->s[i];
    if (!s.id1)
      return -1;
    if (s.tag != tag)
      continue;
    tm_ent *e = tm_ent_at(t, s.id1 - 1);
    const tm_bucket *b = &t->bk[e->bucket];
    if (e->hash != key_hash || e->klen != klen || e->nslen != nslen ||
        b->ts != ts || b->domain != (uint32_t)domain)
      continue;
    const unsigned char *p = tm_bytes(e);
    if ((!klen || memcmp(p, key, klen) == 0) &&
        (!nslen || memcmp(p + klen, ns, nslen) == 0))
      return (ptrdiff_t)i;
  }
}

static uint32_t tm_find_bucket(const struct sl__timers *t, uint32_t tag,
                               int domain, int64_t ts) {
  const tm_tab *tb = &t->bidx;
  if (!tb->s)
    return TM_NONE;
  for (size_t i = tag & tb->mask;; i = (i + 1) & tb->mask) {
    tm_slot s = tb->s[i];
    if (!s.id1)
      return TM_NONE;
    const tm_bucket *b = &t->bk[s.id1 - 1];
    if (s.tag == tag && b->ts == ts && b->domain == (uint32_t)domain)
      return s.id1 - 1;
  }
}

/* ---- heap ---------------------------------------------------------------- */

static int tm_heap_reserve(tm_heap *h, size_t need) {
  if (need <= h->cap)
    return SL_OK;
  size_t ncap = h->cap ? h->cap * 2 : 64;
  while (ncap < need)
    ncap *= 2;
  /* 3 spare nodes in front put each child group 4i+1..4i+4 on one 64-byte
   * line; the size is a multiple of 64 as aligned_alloc requires. */
  size_t bytes = ((ncap + 3) * sizeof(tm_node) + 63) & ~(size_t)63;
  void *mem = aligned_alloc(64, bytes);
  if (!mem)
    return SL_ERR_NOMEM;
  tm_node *n = (tm_node *)mem + 3;
  if (h->len)
    memcpy(n, h->n, h->len * sizeof *n);
  free(h->mem);
  h->mem = mem;
  h->n = n;
  h->cap = ncap;
  return SL_OK;
}

/* Timestamps in one heap are distinct: one bucket per (domain, ts). */
static inline void tm_sift_up(tm_node *n, size_t i, tm_node x) {
  while (i > 0) {
    size_t p = (i - 1) / 4;
    if (n[p].ts <= x.ts)
      break;
    n[i] = n[p];
    i = p;
  }
  n[i] = x;
}

static inline void tm_sift_down(tm_node *n, size_t len, size_t i, tm_node x) {
  for (;;) {
    size_t c = 4 * i + 1;
    if (c >= len)
      break;
    /* The next level's four candidate groups are contiguous: fetching
     * them now overlaps their misses with this level's compares. */
    size_t gc = 4 * c + 1;
    if (gc < len) {
      const char *g = (const char *)&n[gc];
      __builtin_prefetch(g);
      __builtin_prefetch(g + 64);
      __builtin_prefetch(g + 128);
      __builtin_prefetch(g + 192);
    }
    size_t m = c;
    size_t end = c + 4 < len ? c + 4 : len;
    for (size_t k = c + 1; k < end; k++)
      if (n[k].ts < n[m].ts)
        m = k;
    if (n[m].ts >= x.ts)
      break;
    n[i] = n[m];
    i = m;
  }
  n[i] = x;
}

static void tm_bucket_free(struct sl__timers *t, uint32_t bid) {
  tm_bucket *b = &t->bk[bid];
  tm_tab_erase_id(&t->bidx, b->tag, bid);
  b->head = t->free_bk;
  t->free_bk = bid;
}

/* Removes the root bucket, which must be empty. */
static void tm_heap_drop_root(struct sl__timers *t, tm_heap *h) {
  tm_bucket_free(t, (uint32_t)h->n[0].bid);
  h->empty--;
  tm_node x = h->n[--h->len];
  if (h->len)
    tm_sift_down(h->n, h->len, 0, x);
}

/* Frees the empty buckets and rebuilds the heap bottom-up in O(len). */
static void tm_heap_compact(struct sl__timers *t, tm_heap *h) {
  size_t w = 0;
  for (size_t r = 0; r < h->len; r++) {
    if (t->bk[h->n[r].bid].n)
      h->n[w++] = h->n[r];
    else
      tm_bucket_free(t, (uint32_t)h->n[r].bid);
  }
  h->len = w;
  h->empty = 0;
  if (w > 1)
    for (size_t i = (w - 2) / 4 + 1; i-- > 0;)
      tm_sift_down(h->n, w, i, h->n[i]);
}

/* ---- records ------------------------------------------------------------- */

static int tm_ent_alloc(struct sl__timers *t, uint32_t *id) {
  if (t->free_ent != TM_NONE) {
    *id = t->free_ent;
    t->free_ent = tm_ent_at(t, *id)->next;
    return SL_OK;
  }
  if (t->nents >= TM_POPPED)
    return SL_ERR_NOMEM;
  if (t->nents == t->npages * TM_PAGE) {
    tm_ent **pages = realloc(t->pages, (t->npages + 1) * sizeof *pages);
    if (!pages)
      return SL_ERR_NOMEM;
    t->pages = pages;
    tm_ent *pg = aligned_alloc(64, TM_PAGE * sizeof(tm_ent));
    if (!pg)
      return SL_ERR_NOMEM;
    pages[t->npages++] = pg;
  }
  *id = t->nents++;
  return SL_OK;
}

static void tm_ent_release(struct sl__timers *t, uint32_t id) {
  tm_ent *e = tm_ent_at(t, id);
  size_t n = e->klen + (size_t)e->nslen;
  if (n > TM_INLINE)
    tm_bytes_release(t, e->b.ext, n);
  e->bucket = TM_NONE;
  e->next = t->free_ent;
  t->free_ent = id;
}

static void tm_release_pending(struct sl__timers *t) {
  if (t->pending != TM_NONE) {
    tm_ent_release(t, t->pending);
    t->pending = TM_NONE;
  }
}

static void tm_view(tm_ent *e, int64_t ts, sl__timer_view *v) {
  unsigned char *b = tm_bytes(e);
  v->ts = ts;
  v->key = b;
  v->key_len = e->klen;
  v->hash = e->hash;
  v->kg = e->kg;
  v->ns = b + e->klen;
  v->ns_len = e->nslen;
}

/* Takes record id out of its bucket's list; returns the bucket. */
static tm_bucket *tm_unlink(struct sl__timers *t, uint32_t id) {
  tm_ent *e = tm_ent_at(t, id);
  tm_bucket *b = &t->bk[e->bucket];
  if (e->prev != TM_NONE)
    tm_ent_at(t, e->prev)->next = e->next;
  else
    b->head = e->next;
  if (e->next != TM_NONE)
    tm_ent_at(t, e->next)->prev = e->prev;
  else
    b->tail = e->prev;
  b->n--;
  return b;
}

/* ---- API ----------------------------------------------------------------- */

int sl__timers_new(struct sl__timers **out) {
  struct sl__timers *t = calloc(1, sizeof *t);
  if (!t)
    return SL_ERR_NOMEM;
  t->free_ent = TM_NONE;
  t->free_bk = TM_NONE;
  t->pending = TM_NONE;
  *out = t;
  return SL_OK;
}

void sl__timers_free(struct sl__timers *t) {
  if (!t)
    return;
  /* Only blocks beyond the largest class were malloc'd one by one. */
  for (uint32_t id = 0; id < t->nents; id++) {
    tm_ent *e = tm_ent_at(t, id);
    size_t n = e->klen + (size_t)e->nslen;
    if (e->bucket != TM_NONE && n > TM_INLINE && tm_cls(n) >= TM_NCLS)
      free(e->b.ext);
  }
  for (size_t p = 0; p < t->npages; p++)
    free(t->pages[p]);
  free(t->pages);
  while (t->chunks) {
    tm_chunk *c = t->chunks;
    t->chunks = c->next;
    free(c);
  }
  for (int d = 0; d < SL__TIMER_DOMAINS; d++)
    free(t->q[d].mem);
  free(t->idx.s);
  free(t->bidx.s);
  free(t->bk);
  free(t);
}

int sl__timers_add(struct sl__timers *t, int domain, int64_t ts,
                   uint64_t key_hash, uint32_t kg, const void *key, size_t klen,
                   const void *ns, size_t nslen) {
  if ((unsigned)domain >= SL__TIMER_DOMAINS || klen > UINT32_MAX ||
      nslen > UINT32_MAX - klen)
    return SL_ERR_INVAL;
  uint32_t tag = tm_timer_tag(domain, ts, key_hash, ns, nslen);
  if (tm_find_timer(t, tag, domain, ts, key_hash, key, klen, ns, nslen) >= 0)
    return SL_OK;

  /* Everything that can fail happens before the first visible change. */
  tm_heap *h = &t->q[domain];
  uint32_t btag = tm_bucket_tag(domain, ts);
  uint32_t bid = tm_find_bucket(t, btag, domain, ts);
  int rc;
  if (bid == TM_NONE) {
    if ((rc = tm_tab_reserve(&t->bidx)) != SL_OK ||
        (rc = tm_heap_reserve(h, h->len + 1)) != SL_OK)
      return rc;
    if (t->free_bk == TM_NONE && t->nbk == t->bk_cap) {
      if (t->bk_cap >= TM_POPPED / 2)
        return SL_ERR_NOMEM;
      uint32_t ncap = t->bk_cap ? t->bk_cap * 2 : 64;
      tm_bucket *nb = realloc(t->bk, ncap * sizeof *nb);
      if (!nb)
        return SL_ERR_NOMEM;
      t->bk = nb;
      t->bk_cap = ncap;
    }
  }
  if ((rc = tm_tab_reserve(&t->idx)) != SL_OK)
    return rc;
  size_t n = klen + nslen;
  unsigned char *ext = NULL;
  if (n > TM_INLINE && !(ext = tm_bytes_alloc(t, n)))
    return SL_ERR_NOMEM;
  uint32_t id;
  if ((rc = tm_ent_alloc(t, &id)) != SL_OK) {
    if (ext)
      tm_bytes_release(t, ext, n);
    return rc;
  }

  if (bid == TM_NONE) {
    if (t->free_bk != TM_NONE) {
      bid = t->free_bk;
      t->free_bk = t->bk[bid].head;
    } else {
      bid = t->nbk++;
    }
    t->bk[bid] = (tm_bucket){ts, TM_NONE, TM_NONE, 0, btag, (uint32_t)domain};
    tm_tab_insert(&t->bidx, btag, bid);
    tm_sift_up(h->n, h->len++, (tm_node){ts, bid});
    h->empty++;
  }
  tm_bucket *b = &t->bk[bid];
  if (!b->n)
    h->empty--;

  tm_ent *e = tm_ent_at(t, id);
  e->hash = key_hash;
  e->kg = kg;
  e->tag = tag;
  e->klen = (uint32_t)klen;
  e->nslen = (uint32_t)nslen;
  e->bucket = bid;
  e->next = TM_NONE;
  e->prev = b->tail;
  if (ext)
    e->b.ext = ext;
  unsigned char *p = tm_bytes(e);
  /* The source may be the last popped view: another record, no overlap. */
  if (klen)
    memcpy(p, key, klen);
  if (nslen)
    memcpy(p + klen, ns, nslen);
  if (b->tail != TM_NONE)
    tm_ent_at(t, b->tail)->next = id;
  else
    b->head = id;
  b->tail = id;
  b->n++;
  tm_tab_insert(&t->idx, tag, id);
  h->live++;
  return SL_OK;
}

int sl__timers_del(struct sl__timers *t, int domain, int64_t ts,
                   uint64_t key_hash, uint32_t kg, const void *key, size_t klen,
                   const void *ns, size_t nslen) {
  (void)kg;
  if ((unsigned)domain >= SL__TIMER_DOMAINS)
    return SL_ERR_INVAL;
  if (klen > UINT32_MAX || nslen > UINT32_MAX - klen)
    return 0;
  uint32_t tag = tm_timer_tag(domain, ts, key_hash, ns, nslen);
  ptrdiff_t i =
      tm_find_timer(t, tag, domain, ts, key_hash, key, klen, ns, nslen);
  if (i < 0)
    return 0;
  uint32_t id = t->idx.s[i].id1 - 1;
  tm_tab_erase_at(&t->idx, (size_t)i);
  tm_heap *h = &t->q[domain];
  if (!tm_unlink(t, id)->n)
    h->empty++;
  tm_ent_release(t, id);
  h->live--;
  if (h->empty >= TM_COMPACT_MIN && h->empty > h->len - h->empty)
    tm_heap_compact(t, h);
  return 1;
}

bool sl__timers_peek(struct sl__timers *t, int domain, int64_t *ts) {
  if ((unsigned)domain >= SL__TIMER_DOMAINS)
    return false;
  tm_heap *h = &t->q[domain];
  while (h->len) {
    if (t->bk[h->n[0].bid].n) {
      *ts = h->n[0].ts;
      return true;
    }
    tm_heap_drop_root(t, h);
  }
  return false;
}

int sl__timers_pop(struct sl__timers *t, int domain, int64_t upto,
                   sl__timer_view *out) {
  if ((unsigned)domain >= SL__TIMER_DOMAINS)
    return SL_ERR_INVAL;
  tm_release_pending(t);
  tm_heap *h = &t->q[domain];
  while (h->len) {
    tm_bucket *b = &t->bk[h->n[0].bid];
    if (!b->n) {
      tm_heap_drop_root(t, h);
      continue;
    }
    int64_t ts = b->ts;
    if (ts > upto)
      return 0;
    uint32_t id = b->head;
    tm_ent *e = tm_ent_at(t, id);
    /* The caller usually pops again right after this timer's callback. */
    if (e->next != TM_NONE)
      __builtin_prefetch(tm_ent_at(t, e->next));
    tm_unlink(t, id);
    tm_tab_erase_id(&t->idx, e->tag, id);
    h->live--;
    if (!b->n) {
      h->empty++;
      tm_heap_drop_root(t, h);
    }
    /* The record stays allocated behind the view until the next pop. */
    e->bucket = TM_POPPED;
    t->pending = id;
    tm_view(e, ts, out);
    return 1;
  }
  return 0;
}

size_t sl__timers_count(const struct sl__timers *t, int domain) {
  if ((unsigned)domain >= SL__TIMER_DOMAINS)
    return 0;
  return t->q[domain].live;
}

static int tm_cmp_ts(const void *a, const void *b) {
  const tm_node *x = a, *y = b;
  return (x->ts > y->ts) - (x->ts < y->ts);
}

int sl__timers_foreach_kg(struct sl__timers *t, uint32_t kg_first,
                          uint32_t kg_last,
                          int (*fn)(const sl__timer_view *v, int domain,
                                    void *opaque),
                          void *opaque) {
  for (int d = 0; d < SL__TIMER_DOMAINS; d++) {
    tm_heap *h = &t->q[d];
    if (!h->live)
      continue;
    /* A sorted copy of the heap: fn may not change t, so bucket ids and
     * lists stay valid throughout. */
    tm_node *tmp = malloc(h->len * sizeof *tmp);
    if (!tmp)
      return SL_ERR_NOMEM;
    memcpy(tmp, h->n, h->len * sizeof *tmp);
    qsort(tmp, h->len, sizeof *tmp, tm_cmp_ts);
    for (size_t k = 0; k < h->len; k++) {
      for (uint32_t id = t->bk[tmp[k].bid].head; id != TM_NONE;) {
        tm_ent *e = tm_ent_at(t, id);
        id = e->next;
        if (e->kg < kg_first || e->kg > kg_last)
          continue;
        sl__timer_view v;
        tm_view(e, tmp[k].ts, &v);
        int rc = fn(&v, d, opaque);
        if (rc) {
          free(tmp);
          return rc;
        }
      }
    }
    free(tmp);
  }
  return SL_OK;
}

int sl__timers_foreach(struct sl__timers *t,
                       int (*fn)(const sl__timer_view *v, int domain,
                                 void *opaque),
                       void *opaque) {
  return sl__timers_foreach_kg(t, 0, UINT32_MAX, fn, opaque);
}
