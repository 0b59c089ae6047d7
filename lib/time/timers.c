/* SPDX-License-Identifier: Apache-2.0 */
/* Timer service (see timers.h). Timers with the same (domain, ts) share a
 * bucket: an array of timers in insertion order, fired front to back,
 * deduplicated in passes over the array (or, once timers of the bucket are
 * deleted, by a table of its own). A 4-ary min-heap per domain orders the
 * buckets; a table finds a bucket by (domain, ts), behind a direct-mapped
 * wheel indexed by the low bits of ts. Timestamps well ahead first wait in
 * a coarse level, one bucket per 256 ms slot (see "the coarse level"). */
#include "time/timers.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "sluice/common.h"

/* Why buckets of arrays: timestamps are milliseconds, so at any real rate
 * many timers share one (window ends, now + timeout). The heap then holds
 * distinct timestamps only and stays small and cache-resident; adding a
 * timer appends to its bucket's array and firing reads the array in order,
 * both sequential in memory; equal timestamps fire in insertion order
 * without a sequence number. With all timestamps distinct it degrades to a
 * plain heap with a one-timer bucket per timestamp.
 *
 * Why deduplication is deferred: checking each registration against its
 * bucket at once costs a random read in a structure as large as all
 * pending timers (one cache miss per timer, most of the time a
 * registration took). Instead a registration is appended unchecked, and a
 * *pass* deduplicates the whole bucket in one go, through one scratch
 * table shared by all buckets and so kept in cache: when the bucket's
 * array is full (so repetitions never make it grow past four times its
 * distinct timers, or TM_PASS_MIN), before its first timer fires, and
 * before count or foreach answer. A later copy of
 * a timer that was pending when it was registered is dropped, the first
 * stays: the order and the result are those of checking each
 * registration, because nothing of the bucket fires before its pass. The
 * scratch table stays valid for the bucket that had the last pass, whose
 * registrations are then checked at once, cheaply (the bucket that is
 * firing, whose on_timer callbacks re-register into it).
 *
 * Deletes need to find one timer among many: a bucket of a few timers is
 * scanned, a larger one gets a dedup table of its own at its first delete
 * (linear probing, tag and index per slot), and from then on checks every
 * registration against it, as Flink's timer queue does for all timers. A
 * fired timer's slot in that table goes stale (its index is below the
 * bucket's fire cursor, so no read is needed to tell) and is reused or
 * dropped when the table is rebuilt. */

#define TM_NONE UINT32_MAX
#define TM_DEAD UINT32_MAX /* tm_ent.klen of a deleted timer */
/* Key + ns bytes up to this size live inside the timer: an 8-byte key
 * plus a 16-byte window namespace needs no extra memory. */
#define TM_INLINE 24
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
/* Smallest dedup table of a bucket; a freed bucket keeps its array for
 * reuse unless it is far larger than what it last held. */
#define TM_MIN_CAP 16u
/* A bucket's first array: timestamps with a single timer are common
 * (all distinct, in the worst case), so it starts small. */
#define TM_MIN_ENTS 1u
/* A delete in a bucket of up to this many timers scans it. */
#define TM_SCAN 8u
/* A full array of at least this many timers is deduplicated before it
 * grows; smaller ones just grow. */
#define TM_PASS_MIN 64u
#define TM_WHEEL 4096u
/* The coarse level: slots of 2^TM_COARSE_SHIFT ms. */
#define TM_COARSE_SHIFT 8
#define TM_COARSE_SLOT (1u << TM_COARSE_SHIFT)
/* A coarse array is deduplicated only from this size on: it fills at
 * registration rate, mostly with distinct timers (the level's user, a
 * session window, registers a key's timer again at a timestamp only when
 * a fired session re-opens), so smaller passes would be work for nothing
 * (at 256, passes took 2% of a session job's instructions). It starts as small
 * as a bucket's: a slot far ahead may hold a single timer. */
#define TM_COARSE_MIN 4096u
/* Coarse buckets cached per domain, by slot: registrations a gap ahead
 * spread over the few slots of the last second's events. */
#define TM_CB_WAYS 64u

/* One timer in its bucket's array. 48 bytes. */
typedef struct tm_ent {
  uint64_t hash;
  uint32_t kg;
  uint32_t klen; /* TM_DEAD: deleted */
  uint32_t nslen;
  uint32_t tag; /* tm_key_tag() of hash and namespace */
  union {
    /* klen + nslen <= TM_INLINE; the bytes after them are zero, so that
     * two inline timers compare as three words. */
    unsigned char in[TM_INLINE];
    unsigned char *ext; /* otherwise */
  } b;
} tm_ent;

/* All timers of one (domain, ts). Entries [0, head) have fired; of
 * [head, len), `live` are pending or repeat a pending one (until a pass
 * drops them), the rest deleted. A bucket is in its domain's heap exactly
 * while it is in the bucket table, empty or not. */
typedef struct tm_bucket {
  int64_t ts;
  tm_ent *e;
  /* Dedup table once the bucket has seen a delete, else NULL. Linear
   * probing: tag << 32 | (index + 1), 0 empty. A slot whose index is below
   * head is stale (its timer fired). */
  uint64_t *s;
  uint32_t len, cap;
  uint32_t head;
  uint32_t live;
  /* Entries [head, checked) are distinct; [checked, len) were appended
   * unchecked. checked == len while s is set or the scratch table holds
   * the bucket. */
  uint32_t checked;
  uint32_t smask; /* slots - 1; 0 while s is NULL */
  uint32_t sused; /* slots not empty, stale ones included */
  uint32_t btag;
  uint32_t domain;
  uint32_t next_free;
  /* A bucket of the coarse level (ts: its slot's first timestamp; never
   * a dedup table, as deletes turn the level off) keeps beside each
   * timer its timestamp's offset in the slot, in off[0 .. cap). */
  bool coarse;
  uint16_t *off;
  /* A coarse bucket: the timers its last flush moved. */
  uint32_t flushed;
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

/* The bucket table: open addressing, linear probing, backward-shift
 * erase. id1 == 0: empty. home = tag & mask. */
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
  /* A direct-mapped cache of the bucket table indexed by the low bits of
   * ts (a timer wheel for the near future): TM_NONE or a bucket id, which
   * is the bucket of that ts only if its ts says so. */
  uint32_t wheel[SL__TIMER_DOMAINS][TM_WHEEL];
  tm_tab bidx; /* (domain, ts) -> bucket */
  tm_bucket *bk;
  uint32_t nbk; /* bucket ids handed out so far */
  uint32_t bk_cap;
  uint32_t free_bk;
  /* The bytes behind the last popped view: a copy of inline bytes, or the
   * popped timer's own long bytes, released at the next pop. */
  unsigned char vin[TM_INLINE];
  unsigned char *vext;
  size_t vext_len;
  unsigned char *cls_free[TM_NCLS];
  tm_chunk *chunks;
  unsigned char *chunk_ptr;
  size_t chunk_left;
  /* The scratch table of passes: gen << 32 | index, a slot of another
   * generation is empty, so a pass clears nothing. It has at least four times
   * as many slots as the largest bucket array, so a pass never allocates;
   * it holds bucket scr_bid's timers (TM_NONE: none) in scr_mask + 1
   * slots. */
  uint64_t *scr;
  uint32_t scr_slots;
  uint32_t scr_mask;
  uint32_t scr_gen;
  uint32_t scr_bid;
  /* What sl__timers_ahead() described last: the entries of bucket ah_bid
   * below ah_end, and, when that bucket is not the root of its heap, the
   * whole root bucket's (TM_NONE: nothing). Passes keep it in step as
   * they move entries; a freed bucket clears it. */
  uint32_t ah_bid;
  uint32_t ah_end;
  /* The coarse level, per domain: timestamps in slots at or after
   * near[d] (tm_cslot) go to their slot's coarse bucket, the others to
   * their own bucket; cb[d] caches coarse buckets by slot (direct-mapped,
   * TM_NONE or a bucket that is its slot's if its ts says so). near only
   * grows; UINT64_MAX turns the level off. */
  uint64_t near[SL__TIMER_DOMAINS];
  uint32_t cb[SL__TIMER_DOMAINS][TM_CB_WAYS];
  /* The arrays of the last coarse bucket freed, for the next one (cap 0:
   * none): slots fill alike, and growing each one's arrays from nothing
   * again costs a copy per doubling, fresh pages and passes. */
  tm_ent *spare_e;
  uint16_t *spare_off;
  uint32_t spare_cap;
  /* sl__timers_recheck, per domain (due NULL: off). */
  sl__timer_due_fn due[SL__TIMER_DOMAINS];
  sl__timer_pf_fn due_pf[SL__TIMER_DOMAINS];
  void *due_opaque[SL__TIMER_DOMAINS];
  /* A flush's scratch: per offset in the slot, a count, then a bucket. */
  uint32_t fl_cnt[TM_COARSE_SLOT];
  uint32_t fl_bid[TM_COARSE_SLOT];
};

static inline unsigned char *tm_bytes(tm_ent *e) {
  return e->klen + (size_t)e->nslen <= TM_INLINE ? e->b.in : e->b.ext;
}

static inline uint64_t tm_ts_mix(int domain, int64_t ts) {
  return (uint64_t)ts * 0x9e3779b97f4a7c15ULL ^
         (domain ? 0xd6e8feb86659fd93ULL : 0);
}

/* The key hash is already uniform; only the namespace needs folding in.
 * Within a bucket, ts and domain are the same for every timer. */
static inline uint32_t tm_key_tag(uint64_t key_hash, const void *ns,
                                  size_t nslen) {
  if (!nslen)
    return (uint32_t)(key_hash >> 32);
  uint64_t h = key_hash;
  if (nslen > 16) {
    h ^= sl__hash64(ns, nslen);
  } else {
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

/* The coarse slot of ts, as an unsigned number that orders as ts does. */
static inline uint64_t tm_cslot(int64_t ts) {
  return ((uint64_t)ts ^ (UINT64_C(1) << 63)) >> TM_COARSE_SHIFT;
}

/* The first timestamp of slot c. */
static inline int64_t tm_cslot_start(uint64_t c) {
  return (int64_t)((c << TM_COARSE_SHIFT) ^ (UINT64_C(1) << 63));
}

/* A coarse bucket's entry in the bucket table: its own tags, so that it
 * never answers for the per-timestamp bucket of its first timestamp. */
static inline uint32_t tm_coarse_tag(int domain, int64_t ts) {
  return tm_bucket_tag(domain + SL__TIMER_DOMAINS, ts);
}

/* Where cb caches the coarse bucket of the slot starting at start. */
static inline uint32_t *tm_cb_way(struct sl__timers *t, int domain,
                                  int64_t start) {
  return &t->cb[domain][tm_cslot(start) & (TM_CB_WAYS - 1)];
}

/* Drops coarse bucket bid of domain from cb. */
static inline void tm_cb_forget(struct sl__timers *t, uint32_t domain,
                                uint32_t bid) {
  uint32_t *w = tm_cb_way(t, (int)domain, t->bk[bid].ts);
  if (*w == bid)
    *w = TM_NONE;
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

static void tm_ent_release(struct sl__timers *t, tm_ent *e) {
  size_t n = e->klen + (size_t)e->nslen;
  if (n > TM_INLINE)
    tm_bytes_release(t, e->b.ext, n);
  e->klen = TM_DEAD;
}

/* ---- the bucket table ---------------------------------------------------- */

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

static void tm_tab_erase_id(tm_tab *tb, uint32_t tag, uint32_t id) {
  size_t mask = tb->mask;
  size_t i = tag & mask;
  while (tb->s[i].id1 != id + 1)
    i = (i + 1) & mask;
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

static inline uint32_t tm_find_bucket(struct sl__timers *t, int domain,
                                      int64_t ts) {
  uint32_t *w = &t->wheel[domain][(uint64_t)ts & (TM_WHEEL - 1)];
  if (*w != TM_NONE && t->bk[*w].ts == ts)
    return *w;
  const tm_tab *tb = &t->bidx;
  if (!tb->s)
    return TM_NONE;
  uint32_t tag = tm_bucket_tag(domain, ts);
  for (size_t i = tag & tb->mask;; i = (i + 1) & tb->mask) {
    tm_slot s = tb->s[i];
    if (!s.id1)
      return TM_NONE;
    const tm_bucket *b = &t->bk[s.id1 - 1];
    if (s.tag == tag && b->ts == ts && b->domain == (uint32_t)domain &&
        !b->coarse)
      return *w = s.id1 - 1;
  }
}

/* ---- a bucket's dedup table ---------------------------------------------- */

/* Whether e is the timer given by the arguments. A deleted timer's klen
 * never equals a valid one. */
static inline bool tm_ent_is(const tm_ent *e, uint64_t key_hash,
                             const void *key, size_t klen, const void *ns,
                             size_t nslen) {
  if (e->hash != key_hash || e->klen != klen || e->nslen != nslen)
    return false;
  const unsigned char *p = tm_bytes((tm_ent *)e);
  return (!klen || memcmp(p, key, klen) == 0) &&
         (!nslen || memcmp(p + klen, ns, nslen) == 0);
}

/* Whether two timers of one bucket, neither deleted, are equal. */
static inline bool tm_ent_eq(const tm_ent *a, const tm_ent *b) {
  if (a->hash != b->hash || a->klen != b->klen || a->nslen != b->nslen)
    return false;
  size_t n = a->klen + (size_t)a->nslen;
  if (n > TM_INLINE)
    return memcmp(a->b.ext, b->b.ext, n) == 0;
  uint64_t x[3], y[3];
  memcpy(x, a->b.in, sizeof x);
  memcpy(y, b->b.in, sizeof y);
  return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2])) == 0;
}

/* Index of the pending timer of b equal to the arguments, or -1; b has a
 * table. *slot gets its slot, or where it would go: the first stale slot
 * on its probe path (still before the first empty one, so lookups find it
 * there), else that empty slot. */
static inline ptrdiff_t tm_find_timer(const tm_bucket *b, uint32_t tag,
                                      uint64_t key_hash, const void *key,
                                      size_t klen, const void *ns, size_t nslen,
                                      uint32_t *slot) {
  *slot = TM_NONE;
  for (uint32_t i = tag & b->smask;; i = (i + 1) & b->smask) {
    uint64_t s = b->s[i];
    if (!s) {
      if (*slot == TM_NONE)
        *slot = i;
      return -1;
    }
    uint32_t idx = (uint32_t)s - 1;
    if (idx < b->head) {
      if (*slot == TM_NONE)
        *slot = i;
      continue;
    }
    if ((uint32_t)(s >> 32) != tag)
      continue;
    if (tm_ent_is(&b->e[idx], key_hash, key, klen, ns, nslen)) {
      *slot = i;
      return (ptrdiff_t)idx;
    }
  }
}

/* Puts the timer at idx into slot i (from tm_find_timer's *ins). */
static inline void tm_slot_put(tm_bucket *b, uint32_t i, uint32_t tag,
                               uint32_t idx) {
  b->sused += !b->s[i];
  b->s[i] = (uint64_t)tag << 32 | (idx + 1);
}

/* Inserts the timer at idx, known to be absent. */
static void tm_slot_insert(tm_bucket *b, uint32_t tag, uint32_t idx) {
  uint32_t i = tag & b->smask;
  while (b->s[i] && (uint32_t)b->s[i] - 1 >= b->head)
    i = (i + 1) & b->smask;
  tm_slot_put(b, i, tag, idx);
}

/* Inserts b's pending timers into its empty table. */
static void tm_slots_fill(tm_bucket *b) {
  b->sused = 0;
  for (uint32_t r = b->head; r < b->len; r++)
    if (b->e[r].klen != TM_DEAD)
      tm_slot_insert(b, b->e[r].tag, r);
}

/* Builds b's table anew from its pending timers, with room for at least
 * `need` timers at a load of at most 1/2. */
static int tm_slots_rebuild(tm_bucket *b, uint32_t need) {
  size_t ncap = TM_MIN_CAP;
  while (ncap < (size_t)need * 2)
    ncap *= 2;
  if (ncap > ((size_t)1 << 31))
    return SL_ERR_NOMEM;
  uint64_t *ns = calloc(ncap, sizeof *ns);
  if (!ns)
    return SL_ERR_NOMEM;
  free(b->s);
  b->s = ns;
  b->smask = (uint32_t)ncap - 1;
  tm_slots_fill(b);
  return SL_OK;
}

static void tm_slot_erase_at(tm_bucket *b, uint32_t i) {
  uint32_t mask = b->smask;
  uint32_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!b->s[j])
      break;
    uint32_t home = (uint32_t)(b->s[j] >> 32) & mask;
    if (((j - home) & mask) >= ((j - i) & mask)) {
      b->s[i] = b->s[j];
      i = j;
    }
  }
  b->s[i] = 0;
  b->sused--;
}

/* ---- passes through the scratch table ------------------------------------ */

static inline uint32_t tm_pow2(uint64_t n) {
  uint32_t c = 16;
  while (c < n)
    c *= 2;
  return c;
}

/* Makes the scratch table large enough for passes over a bucket array of
 * cap timers. */
static int tm_scr_reserve(struct sl__timers *t, uint32_t cap) {
  uint32_t need = tm_pow2((uint64_t)cap * 4);
  if (need <= t->scr_slots)
    return SL_OK;
  uint64_t *n = calloc(need, sizeof *n);
  if (!n)
    return SL_ERR_NOMEM;
  free(t->scr);
  t->scr = n;
  t->scr_slots = need;
  t->scr_gen = 0;
  t->scr_bid = TM_NONE;
  return SL_OK;
}

/* Index of the pending timer of bucket bid, which the scratch table holds,
 * equal to the arguments, or -1; *slot gets the empty slot where it would
 * go. Slots of fired timers stay (their index is below head) and deleted
 * ones stay too: the table holds at most one slot per index of the array,
 * which is at most a quarter of its slots. */
static inline ptrdiff_t tm_scr_find(const struct sl__timers *t,
                                    const tm_bucket *b, uint32_t tag,
                                    uint64_t key_hash, const void *key,
                                    size_t klen, const void *ns, size_t nslen,
                                    uint32_t *slot) {
  uint32_t mask = t->scr_mask;
  uint64_t gen = (uint64_t)t->scr_gen << 32;
  for (uint32_t i = tag & mask;; i = (i + 1) & mask) {
    uint64_t s = t->scr[i];
    if ((s & ~(uint64_t)UINT32_MAX) != gen) {
      *slot = i;
      return -1;
    }
    uint32_t idx = (uint32_t)s;
    if (idx >= b->head &&
        tm_ent_is(&b->e[idx], key_hash, key, klen, ns, nslen)) {
      *slot = i;
      return (ptrdiff_t)idx;
    }
  }
}

/* A coarse entry's tag: the timer's, with its offset folded in. */
static inline uint32_t tm_coarse_key(uint32_t tag, uint16_t off) {
  return tag ^ ((uint32_t)off + 1) * 0x9e3779b1u;
}

/* The pass over bucket bid, which has no table of its own: drops its
 * fired and deleted timers and every pending one that repeats an earlier
 * pending one, moves the rest to the front in order, and leaves the
 * scratch table holding them. Never allocates (tm_scr_reserve ran for
 * the bucket's capacity). coarse (a constant at each call): bid is a
 * coarse bucket, whose timers repeat only at the same offset too, whose
 * offsets move with them, and which the scratch table then does not
 * hold. */
static inline __attribute__((always_inline)) void
tm_pass_in(struct sl__timers *t, uint32_t bid, bool coarse) {
  tm_bucket *b = &t->bk[bid];
  tm_heap *h = &t->q[b->domain];
  if (++t->scr_gen == 0) {
    memset(t->scr, 0, (size_t)t->scr_slots * sizeof *t->scr);
    t->scr_gen = 1;
  }
  /* A quarter full at most: probes are short, and the table of the
   * largest buckets still fits the cache. */
  uint32_t mask = tm_pow2((uint64_t)b->cap * 4) - 1;
  uint64_t gen = (uint64_t)t->scr_gen << 32;
  uint64_t *s = t->scr;
  tm_ent *ents = b->e;
  uint16_t *off = coarse ? b->off : NULL;
  uint32_t w = 0, dups = 0, checked = b->checked, len = b->len;
  /* The entries described for prefetching stay described where they
   * move: ah_end becomes the count of those kept before it. */
  uint32_t ah = !coarse && t->ah_bid == bid ? t->ah_end : 0, nah = 0;
  for (uint32_t r = b->head; r < len; r++) {
    tm_ent *e = &ents[r];
    if (!coarse && r == ah)
      nah = w;
    if (e->klen == TM_DEAD)
      continue;
    uint32_t i = (coarse ? tm_coarse_key(e->tag, off[r]) : e->tag) & mask;
    if (r < checked) {
      /* Distinct from the timers before it: only its slot is needed. */
      while ((s[i] & ~(uint64_t)UINT32_MAX) == gen)
        i = (i + 1) & mask;
    } else {
      for (;; i = (i + 1) & mask) {
        uint64_t x = s[i];
        if ((x & ~(uint64_t)UINT32_MAX) != gen)
          break;
        if ((!coarse || off[(uint32_t)x] == off[r]) &&
            tm_ent_eq(&ents[(uint32_t)x], e))
          break;
      }
      if ((s[i] & ~(uint64_t)UINT32_MAX) == gen) {
        tm_ent_release(t, e);
        dups++;
        continue;
      }
    }
    s[i] = gen | w;
    if (w != r) {
      ents[w] = *e;
      if (coarse)
        off[w] = off[r];
    }
    w++;
  }
  b->live -= dups;
  h->live -= dups;
  b->len = b->checked = w;
  b->head = 0;
  if (coarse) {
    t->scr_bid = TM_NONE;
    return;
  }
  if (t->ah_bid == bid)
    t->ah_end = ah >= len ? w : nah;
  t->scr_bid = bid;
  t->scr_mask = mask;
}

static void tm_pass(struct sl__timers *t, uint32_t bid) {
  tm_pass_in(t, bid, false);
}

/* tm_pass for the coarse bucket bid. */
static void tm_cpass(struct sl__timers *t, uint32_t bid) {
  tm_pass_in(t, bid, true);
}

/* Makes every timer of bucket bid, which has no table, checked. A single
 * timer repeats none (the common bucket when timestamps rarely coincide):
 * it needs no pass, and the scratch table keeps what it holds. */
static inline void tm_check(struct sl__timers *t, uint32_t bid) {
  tm_bucket *b = &t->bk[bid];
  if (b->len - b->head == 1)
    b->checked = b->len;
  else
    tm_pass(t, bid);
}

/* Passes over every bucket of domain d with unchecked timers, so that the
 * counts are exact and no timer is visited twice. */
static void tm_settle(struct sl__timers *t, int d) {
  tm_heap *h = &t->q[d];
  for (size_t i = 0; i < h->len; i++) {
    uint32_t bid = (uint32_t)h->n[i].bid;
    tm_bucket *b = &t->bk[bid];
    if (b->coarse) {
      if (b->checked < b->len)
        tm_cpass(t, bid);
    } else if (!b->s && b->checked < b->len) {
      tm_check(t, bid);
    }
  }
}

/* Bucket bid's arrays (a coarse bucket's offsets too) at ncap timers. */
static int tm_bucket_resize(struct sl__timers *t, uint32_t bid, uint32_t ncap) {
  tm_bucket *b = &t->bk[bid];
  int rc = tm_scr_reserve(t, ncap);
  if (rc != SL_OK)
    return rc;
  tm_ent *ne = realloc(b->e, (size_t)ncap * sizeof *ne);
  if (!ne)
    return SL_ERR_NOMEM;
  b->e = ne;
  if (b->coarse) {
    uint16_t *no = realloc(b->off, (size_t)ncap * sizeof *no);
    if (!no)
      return SL_ERR_NOMEM;
    b->off = no;
  }
  b->cap = ncap;
  /* The scratch table would be more than a quarter full. */
  if (t->scr_bid == bid && (uint64_t)ncap * 4 > (uint64_t)t->scr_mask + 1)
    t->scr_bid = TM_NONE;
  return SL_OK;
}

/* Grows bucket bid for appends after a pass (passed) or none. After a
 * pass, half full is full: the next pass must wait for as many appends
 * as it will read. A pass that dropped nothing (still full) predicts the
 * next one: the array grows fourfold, halving the passes of a bucket of
 * distinct timers. */
static int tm_bucket_grow(struct sl__timers *t, uint32_t bid, bool passed) {
  const tm_bucket *b = &t->bk[bid];
  if (b->cap >= UINT32_MAX / 8)
    return SL_ERR_NOMEM;
  return tm_bucket_resize(t, bid,
                          !b->cap                      ? TM_MIN_ENTS
                          : passed && b->len == b->cap ? b->cap * 4
                                                       : b->cap * 2);
}

/* Makes room to append one timer to bucket bid. A full array is first
 * cleared of its fired and deleted timers (and, without a table, of
 * repeated ones) when that frees enough, else it doubles; a table is kept
 * at a load of at most 1/2. */
static int tm_bucket_reserve(struct sl__timers *t, uint32_t bid) {
  tm_bucket *b = &t->bk[bid];
  bool passed = false;
  if (b->len == b->cap) {
    uint32_t gone = b->len - b->live;
    if (!b->s && (b->cap >= TM_PASS_MIN || (gone && gone >= b->len / 2))) {
      tm_pass(t, bid);
      passed = true;
    } else if (b->s && gone && gone >= b->len / 2) {
      /* Pending timers move to the front, in order; indices change, so
       * the table is rebuilt from the array. */
      uint32_t w = 0;
      for (uint32_t r = b->head; r < b->len; r++)
        if (b->e[r].klen != TM_DEAD)
          b->e[w++] = b->e[r];
      b->len = b->checked = w;
      b->head = 0;
      if (t->ah_bid == bid)
        t->ah_bid = TM_NONE;
      memset(b->s, 0, ((size_t)b->smask + 1) * sizeof *b->s);
      tm_slots_fill(b);
    }
  }
  if (b->len == b->cap || (passed && b->len * 2 > b->cap)) {
    int rc = tm_bucket_grow(t, bid, passed);
    if (rc != SL_OK)
      return rc;
  }
  if (b->s && (b->sused + 1) * 2 > b->smask + 1)
    return tm_slots_rebuild(b, b->live + 1);
  return SL_OK;
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

/* One bucket per (domain, ts): timestamps in one heap are distinct but
 * for a coarse bucket's, and the order of ties does not matter. */
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

/* Returns bucket bid, which has no pending timers, to the free list. Its
 * array stays for the next bucket unless it is far larger than what it
 * held; its table goes, as the next bucket starts without one. */
static void tm_bucket_free(struct sl__timers *t, uint32_t bid) {
  tm_bucket *b = &t->bk[bid];
  tm_tab_erase_id(&t->bidx, b->btag, bid);
  uint32_t *w = &t->wheel[b->domain][(uint64_t)b->ts & (TM_WHEEL - 1)];
  if (*w == bid)
    *w = TM_NONE;
  if (b->coarse) {
    tm_cb_forget(t, b->domain, bid);
    /* Kept for the next coarse bucket unless far larger than what this
     * one held (a burst), or smaller than the spare already kept. */
    uint32_t used = b->flushed > TM_COARSE_MIN ? b->flushed : TM_COARSE_MIN;
    if (b->cap > t->spare_cap && b->cap <= 4 * used) {
      free(t->spare_e);
      free(t->spare_off);
      t->spare_e = b->e;
      t->spare_off = b->off;
      t->spare_cap = b->cap;
      b->e = NULL;
      b->cap = 0;
    } else {
      free(b->off);
    }
    b->off = NULL;
    b->coarse = false;
  }
  if (t->scr_bid == bid)
    t->scr_bid = TM_NONE;
  if (t->ah_bid == bid)
    t->ah_bid = TM_NONE;
  uint32_t held = b->len > TM_MIN_CAP ? b->len : TM_MIN_CAP;
  if (b->cap > 4 * held) {
    free(b->e);
    b->e = NULL;
    b->cap = 0;
  }
  free(b->s);
  b->s = NULL;
  b->smask = 0;
  b->sused = 0;
  b->len = b->head = b->checked = 0;
  b->next_free = t->free_bk;
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

/* Removes node i, a child of the root, whose bucket is empty. The last
 * node, no earlier than the root, takes its place and sinks. */
static void tm_heap_remove_child(struct sl__timers *t, tm_heap *h, size_t i) {
  assert(i >= 1 && i <= 4 && !t->bk[h->n[i].bid].live);
  tm_bucket_free(t, (uint32_t)h->n[i].bid);
  h->empty--;
  tm_node x = h->n[--h->len];
  if (i < h->len)
    tm_sift_down(h->n, h->len, i, x);
}

/* Frees the empty buckets and rebuilds the heap bottom-up in O(len). */
static void tm_heap_compact(struct sl__timers *t, tm_heap *h) {
  size_t w = 0;
  for (size_t r = 0; r < h->len; r++) {
    if (t->bk[h->n[r].bid].live)
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

/* A new, empty bucket for (domain, ts), in the heap and the table; a
 * coarse one (ts its slot's start) is not in the wheel, starts without
 * an array and sorts in its heap at ts - 1. Every step that can fail
 * comes first. */
static int tm_bucket_new(struct sl__timers *t, int domain, int64_t ts,
                         bool coarse, uint32_t *out) {
  tm_heap *h = &t->q[domain];
  int rc;
  if ((rc = tm_tab_reserve(&t->bidx)) != SL_OK ||
      (rc = tm_heap_reserve(h, h->len + 1)) != SL_OK)
    return rc;
  uint32_t bid;
  if (t->free_bk != TM_NONE) {
    bid = t->free_bk;
    t->free_bk = t->bk[bid].next_free;
  } else {
    if (t->nbk == t->bk_cap) {
      if (t->bk_cap >= UINT32_MAX / 4)
        return SL_ERR_NOMEM;
      uint32_t ncap = t->bk_cap ? t->bk_cap * 2 : 64;
      tm_bucket *nb = realloc(t->bk, ncap * sizeof *nb);
      if (!nb)
        return SL_ERR_NOMEM;
      t->bk = nb;
      t->bk_cap = ncap;
    }
    bid = t->nbk++;
    t->bk[bid] = (tm_bucket){0};
  }
  tm_bucket *b = &t->bk[bid];
  b->ts = ts;
  b->live = 0;
  b->coarse = coarse;
  b->btag = coarse ? tm_coarse_tag(domain, ts) : tm_bucket_tag(domain, ts);
  b->domain = (uint32_t)domain;
  if (coarse) {
    free(b->e);
    b->e = t->spare_e;
    b->off = t->spare_off;
    b->cap = t->spare_cap;
    b->flushed = 0;
    t->spare_e = NULL;
    t->spare_off = NULL;
    t->spare_cap = 0;
  }
  tm_tab_insert(&t->bidx, b->btag, bid);
  /* A coarse bucket sorts before every bucket of its slot, even one a
   * failed flush filled: it is flushed before any of them fires. */
  int64_t key = coarse && ts != INT64_MIN ? ts - 1 : ts;
  tm_sift_up(h->n, h->len++, (tm_node){key, bid});
  h->empty++;
  if (!coarse)
    t->wheel[domain][(uint64_t)ts & (TM_WHEEL - 1)] = bid;
  *out = bid;
  return SL_OK;
}

/* ---- API ----------------------------------------------------------------- */

int sl__timers_new(struct sl__timers **out) {
  struct sl__timers *t = calloc(1, sizeof *t);
  if (!t)
    return SL_ERR_NOMEM;
  t->free_bk = TM_NONE;
  t->scr_bid = TM_NONE;
  t->ah_bid = TM_NONE;
  for (int d = 0; d < SL__TIMER_DOMAINS; d++)
    t->near[d] = UINT64_MAX; /* the coarse level off (sl__timers_coarse) */
  memset(t->wheel, 0xff, sizeof t->wheel);
  memset(t->cb, 0xff, sizeof t->cb);
  *out = t;
  return SL_OK;
}

void sl__timers_coarse(struct sl__timers *t, int domain) {
  if ((unsigned)domain < SL__TIMER_DOMAINS && t->q[domain].len == 0)
    t->near[domain] = 0;
}

void sl__timers_recheck(struct sl__timers *t, int domain, sl__timer_due_fn due,
                        sl__timer_pf_fn pf, void *opaque) {
  if ((unsigned)domain >= SL__TIMER_DOMAINS)
    return;
  t->due[domain] = due;
  t->due_pf[domain] = pf;
  t->due_opaque[domain] = opaque;
}

static void tm_release_view(struct sl__timers *t) {
  if (t->vext) {
    tm_bytes_release(t, t->vext, t->vext_len);
    t->vext = NULL;
  }
}

void sl__timers_free(struct sl__timers *t) {
  if (!t)
    return;
  /* Only blocks beyond the largest class were malloc'd one by one. */
  for (uint32_t id = 0; id < t->nbk; id++) {
    tm_bucket *b = &t->bk[id];
    for (uint32_t i = b->head; i < b->len; i++) {
      tm_ent *e = &b->e[i];
      size_t n = e->klen + (size_t)e->nslen;
      if (e->klen != TM_DEAD && n > TM_INLINE && tm_cls(n) >= TM_NCLS)
        free(e->b.ext);
    }
    free(b->e);
    free(b->s);
    free(b->off);
  }
  if (t->vext && tm_cls(t->vext_len) >= TM_NCLS)
    free(t->vext);
  while (t->chunks) {
    tm_chunk *c = t->chunks;
    t->chunks = c->next;
    free(c);
  }
  for (int d = 0; d < SL__TIMER_DOMAINS; d++)
    free(t->q[d].mem);
  free(t->bidx.s);
  free(t->bk);
  free(t->scr);
  free(t->spare_e);
  free(t->spare_off);
  free(t);
}

/* Writes a timer into the entry e; ext: its out-of-line bytes when they
 * do not fit inline, else NULL. */
static inline void tm_ent_fill(tm_ent *e, uint64_t key_hash, uint32_t kg,
                               const void *key, size_t klen, const void *ns,
                               size_t nslen, uint32_t tag, unsigned char *ext) {
  e->hash = key_hash;
  e->kg = kg;
  e->klen = (uint32_t)klen;
  e->nslen = (uint32_t)nslen;
  e->tag = tag;
  unsigned char *p;
  if (ext) {
    p = e->b.ext = ext;
  } else {
    memset(e->b.in, 0, TM_INLINE);
    p = e->b.in;
  }
  /* The source may be the last popped view: other memory, no overlap. */
  if (klen)
    memcpy(p, key, klen);
  if (nslen)
    memcpy(p + klen, ns, nslen);
}

/* ---- the coarse level ----------------------------------------------------
 * Why: a timer is mostly registered seconds ahead (a session's gap, a
 * window's size, a timeout), into one of thousands of pending buckets
 * that nothing else touches meanwhile; the bucket and the end of its
 * array were two cache misses per registration, most of its cost. A
 * registration into a slot of TM_COARSE_SLOT ms at or after the domain's
 * `near` slot is instead appended to the slot's coarse bucket, which
 * registrations made at about the same time share: a sequential append.
 * When a coarse bucket becomes the earliest of its heap (its node's ts is
 * the slot's start, at or before each of its timers), it is *flushed*:
 * its timers move, in order, into per-timestamp buckets sized at once,
 * in one loop whose misses overlap, and near moves past its slot, so that
 * later registrations into that slot go straight to their buckets.
 *
 * Order and deduplication stay those of the per-timestamp buckets: near
 * only grows and passes a slot only once its coarse bucket is flushed, so
 * every timer of a timestamp that sits in a per-timestamp bucket was
 * registered before those still in the coarse level, and the flush
 * appends after them, unchecked, for the bucket's passes. A full coarse
 * array is deduplicated by a pass as the others (tm_cpass, timestamp
 * included). Deletes would need a table per coarse bucket: the first
 * delete of a domain flushes its coarse buckets and turns the level off
 * for it (near = UINT64_MAX), as timers that are deleted are mostly
 * deleted often (a timeout moved per record). foreach flushes them too,
 * leaving near where it was (tm_flush_all). */

/* The coarse bucket of domain starting at start, or TM_NONE. */
static inline uint32_t tm_find_coarse(struct sl__timers *t, int domain,
                                      int64_t start) {
  uint32_t *w = tm_cb_way(t, domain, start);
  if (*w != TM_NONE && t->bk[*w].ts == start)
    return *w;
  const tm_tab *tb = &t->bidx;
  if (!tb->s)
    return TM_NONE;
  uint32_t tag = tm_coarse_tag(domain, start);
  for (size_t i = tag & tb->mask;; i = (i + 1) & tb->mask) {
    tm_slot s = tb->s[i];
    if (!s.id1)
      return TM_NONE;
    const tm_bucket *b = &t->bk[s.id1 - 1];
    if (s.tag == tag && b->ts == start && b->domain == (uint32_t)domain &&
        b->coarse)
      return *w = s.id1 - 1;
  }
}

/* Room to append one timer to coarse bucket bid, as tm_bucket_reserve. */
static int tm_coarse_reserve(struct sl__timers *t, uint32_t bid) {
  tm_bucket *b = &t->bk[bid];
  bool passed = false;
  if (b->len == b->cap && b->cap >= TM_COARSE_MIN) {
    tm_cpass(t, bid);
    passed = true;
  }
  if (b->len < b->cap && !(passed && b->len * 2 > b->cap))
    return SL_OK;
  return tm_bucket_grow(t, bid, passed);
}

/* tm_coarse_room's other cases: the slot's bucket not in the cache, not
 * made yet, or full. */
static __attribute__((noinline)) int tm_coarse_room_slow(struct sl__timers *t,
                                                         int domain,
                                                         int64_t start,
                                                         uint32_t *bid) {
  uint32_t id = tm_find_coarse(t, domain, start);
  int rc;
  if (id == TM_NONE) {
    if ((rc = tm_bucket_new(t, domain, start, true, &id)) != SL_OK)
      return rc;
    *tm_cb_way(t, domain, start) = id;
  }
  if (t->bk[id].len == t->bk[id].cap &&
      (rc = tm_coarse_reserve(t, id)) != SL_OK)
    return rc;
  *bid = id;
  return SL_OK;
}

/* The coarse bucket of domain for the slot starting at start, found or
 * made, with room for one more timer: its id in *bid. Registrations and
 * moves go to a few slots, so the usual case is the cached bucket with
 * room, without a call. */
static inline int tm_coarse_room(struct sl__timers *t, int domain,
                                 int64_t start, uint32_t *bid) {
  uint32_t id = *tm_cb_way(t, domain, start);
  if (id != TM_NONE && t->bk[id].ts == start && t->bk[id].len < t->bk[id].cap) {
    *bid = id;
    return SL_OK;
  }
  return tm_coarse_room_slow(t, domain, start, bid);
}

/* Appends a timer at ts to coarse bucket bid of domain, which has room:
 * its entry, for the caller to fill. */
static tm_ent *tm_coarse_push(struct sl__timers *t, int domain, uint32_t bid,
                              int64_t ts) {
  tm_bucket *b = &t->bk[bid];
  tm_heap *h = &t->q[domain];
  if (!b->live)
    h->empty--;
  uint32_t idx = b->len++;
  /* As in sl__timers_add: the following appends' lines, for writing. A
   * slot's appends come one every few records, far enough apart that
   * other misses would otherwise evict the line meanwhile. */
  __builtin_prefetch(&b->e[idx + 2], 1);
  b->off[idx] = (uint16_t)(ts - b->ts);
  b->live++;
  h->live++;
  return &b->e[idx];
}

/* sl__timers_add for a timestamp in slot c, at or after near. */
static int tm_add_coarse(struct sl__timers *t, int domain, int64_t ts,
                         uint64_t c, uint64_t key_hash, uint32_t kg,
                         const void *key, size_t klen, const void *ns,
                         size_t nslen, uint32_t tag) {
  size_t n = klen + nslen;
  unsigned char *ext = NULL;
  if (n > TM_INLINE && !(ext = tm_bytes_alloc(t, n)))
    return SL_ERR_NOMEM;
  uint32_t bid;
  int rc = tm_coarse_room(t, domain, tm_cslot_start(c), &bid);
  if (rc != SL_OK) {
    if (ext)
      tm_bytes_release(t, ext, n);
    return rc;
  }
  tm_ent_fill(tm_coarse_push(t, domain, bid, ts), key_hash, kg, key, klen, ns,
              nslen, tag, ext);
  return SL_OK;
}

/* Timers whose state sl__timers_recheck's pf requests at a time. */
#define TM_DUE_PF 8u

/* Asks the owner of domain d about each timer of coarse bucket cbid, the
 * earliest of d, before its flush; a timer it gives a timestamp in a
 * slot past cbid's and at or after near moves there (into a coarse
 * bucket, so never into cbid: the entries' array stays put). A move
 * that lacks memory keeps the timer: it fires and is registered again,
 * as without a recheck. */
static void tm_recheck(struct sl__timers *t, int d, uint32_t cbid) {
  sl__timer_due_fn due = t->due[d];
  sl__timer_pf_fn pf = t->due_pf[d];
  void *op = t->due_opaque[d];
  int64_t start = t->bk[cbid].ts;
  uint64_t lo = tm_cslot(start) + 1;
  if (lo < t->near[d])
    lo = t->near[d];
  uint32_t len = t->bk[cbid].len;
  tm_ent *e = t->bk[cbid].e;
  const uint16_t *off = t->bk[cbid].off;
  for (uint32_t r = 0; r < len; r++) {
    if (pf && r % TM_DUE_PF == 0) {
      /* The first group and the one after it, then one group ahead. */
      uint32_t a = r ? r + TM_DUE_PF : 0, z = r + 2 * TM_DUE_PF;
      if (z > len)
        z = len;
      if (a < z)
        pf(op, &e[a].hash, &e[a].kg, sizeof(tm_ent), z - a);
    }
    if (e[r].klen == TM_DEAD)
      continue;
    int64_t ts = start + off[r];
    unsigned char *p = tm_bytes(&e[r]);
    sl__timer_view v = {
        ts, p, e[r].klen, e[r].hash, e[r].kg, p + e[r].klen, e[r].nslen};
    int64_t to = due(op, &v);
    if (to <= ts || tm_cslot(to) < lo)
      continue;
    uint32_t bid;
    if (tm_coarse_room(t, d, tm_cslot_start(tm_cslot(to)), &bid) != SL_OK)
      continue;
    *tm_coarse_push(t, d, bid, to) = e[r];
    e[r].klen = TM_DEAD;
    t->bk[cbid].live--;
    t->q[d].live--;
  }
}

/* Room for n more timers in the per-timestamp bucket bid. */
static int tm_bucket_room(struct sl__timers *t, uint32_t bid, uint32_t n) {
  tm_bucket *b = &t->bk[bid];
  if ((uint64_t)b->len + n <= b->cap)
    return SL_OK;
  uint64_t need = (uint64_t)b->len + n;
  if (need >= UINT32_MAX / 8)
    return SL_ERR_NOMEM;
  uint32_t ncap = b->cap ? b->cap : TM_MIN_ENTS;
  while (ncap < need)
    ncap *= 2;
  return tm_bucket_resize(t, bid, ncap);
}

/* Moves the timers of coarse bucket cbid, in order, to the ends of their
 * timestamps' buckets (new ones but for those a failed flush left
 * empty), unchecked; the coarse bucket is left empty, in its heap until
 * it is dropped. Every step that can fail comes first. */
static int tm_flush(struct sl__timers *t, uint32_t cbid) {
  int d = (int)t->bk[cbid].domain;
  int64_t start = t->bk[cbid].ts;
  uint32_t *cnt = t->fl_cnt, *fb = t->fl_bid;
  memset(cnt, 0, sizeof t->fl_cnt);
  {
    const tm_bucket *cb = &t->bk[cbid];
    for (uint32_t r = 0; r < cb->len; r++)
      if (cb->e[r].klen != TM_DEAD)
        cnt[cb->off[r]]++;
  }
  int rc;
  for (uint32_t o = 0; o < TM_COARSE_SLOT; o++) {
    if (!cnt[o])
      continue;
    uint32_t bid = tm_find_bucket(t, d, start + o);
    if (bid == TM_NONE && (rc = tm_bucket_new(t, d, start + o, false, &bid)))
      return rc;
    if ((rc = tm_bucket_room(t, bid, cnt[o])) != SL_OK)
      return rc;
    fb[o] = bid;
  }
  tm_heap *h = &t->q[d];
  tm_bucket *cb = &t->bk[cbid];
  for (uint32_t r = 0; r < cb->len; r++) {
    tm_ent *e = &cb->e[r];
    if (e->klen == TM_DEAD)
      continue;
    uint32_t bid = fb[cb->off[r]];
    tm_bucket *b = &t->bk[bid];
    if (!b->live)
      h->empty--;
    if (bid == t->scr_bid)
      t->scr_bid = TM_NONE;
    b->e[b->len++] = *e;
    b->live++;
  }
  cb->flushed = cb->live;
  cb->live = 0;
  cb->len = cb->checked = 0;
  h->empty++;
  tm_cb_forget(t, d, cbid);
  return SL_OK;
}

/* Flushes cbid, the earliest coarse bucket of domain d, and moves near
 * past its slot. */
static int tm_flush_first(struct sl__timers *t, int d, uint32_t cbid) {
  uint64_t c = tm_cslot(t->bk[cbid].ts);
  if (t->due[d])
    tm_recheck(t, d, cbid);
  int rc = tm_flush(t, cbid);
  if (rc != SL_OK)
    return rc;
  if (t->near[d] <= c)
    t->near[d] = c + 1;
  return SL_OK;
}

/* Flushes the root of domain d's heap, a coarse bucket with timers. */
static int tm_flush_root(struct sl__timers *t, int d) {
  return tm_flush_first(t, d, (uint32_t)t->q[d].n[0].bid);
}

/* Flushes every coarse bucket of domain d, and with off turns the level
 * off. Without off near stays: a timer registered later into a flushed
 * slot goes to the slot's emptied coarse bucket, which is flushed again
 * when the slot comes up, after the timers flushed now, as it was
 * registered after them. */
static int tm_flush_all(struct sl__timers *t, int d, bool off) {
  if (t->near[d] == UINT64_MAX) /* off: no coarse bucket has timers */
    return SL_OK;
  tm_heap *h = &t->q[d];
  /* A flush adds nodes, and sifting them up moves nodes only to higher
   * indices: a scan by index meets every coarse bucket. */
  for (size_t i = 0; i < h->len; i++) {
    uint32_t bid = (uint32_t)h->n[i].bid;
    if (!t->bk[bid].coarse || !t->bk[bid].live)
      continue;
    int rc = tm_flush(t, bid);
    if (rc != SL_OK)
      return rc;
    /* Its arrays go now, not when the slot comes due, which may be hours
     * away: a later registration into the slot starts them again. */
    tm_bucket *b = &t->bk[bid];
    free(b->e);
    free(b->off);
    b->e = NULL;
    b->off = NULL;
    b->cap = 0;
  }
  if (off)
    t->near[d] = UINT64_MAX;
  return SL_OK;
}

int sl__timers_add(struct sl__timers *t, int domain, int64_t ts,
                   uint64_t key_hash, uint32_t kg, const void *key, size_t klen,
                   const void *ns, size_t nslen) {
  if ((unsigned)domain >= SL__TIMER_DOMAINS || klen >= UINT32_MAX ||
      nslen > UINT32_MAX - klen)
    return SL_ERR_INVAL;
  uint32_t tag = tm_key_tag(key_hash, ns, nslen);
  uint64_t c = tm_cslot(ts);
  if (c >= t->near[domain])
    return tm_add_coarse(t, domain, ts, c, key_hash, kg, key, klen, ns, nslen,
                         tag);
  uint32_t bid = tm_find_bucket(t, domain, ts), ins = TM_NONE;
  tm_bucket *b = NULL;
  if (bid != TM_NONE) {
    /* Checked now only where that is cheap or already paid for; otherwise
     * appended, for the bucket's next pass. */
    b = &t->bk[bid];
    if (b->s) {
      if (tm_find_timer(b, tag, key_hash, key, klen, ns, nslen, &ins) >= 0)
        return SL_OK;
    } else if (bid == t->scr_bid) {
      if (tm_scr_find(t, b, tag, key_hash, key, klen, ns, nslen, &ins) >= 0)
        return SL_OK;
    }
  }

  /* Everything that can fail happens before the first visible change
   * (a new bucket is empty and invisible but for its slot in the heap; a
   * pass changes nothing visible). */
  size_t n = klen + nslen;
  unsigned char *ext = NULL;
  if (n > TM_INLINE && !(ext = tm_bytes_alloc(t, n)))
    return SL_ERR_NOMEM;
  int rc;
  if (!b || b->len == b->cap ||
      (b->s && (ins == TM_NONE || (b->sused + 1) * 2 > b->smask + 1))) {
    /* The slow path: a new bucket, a full array or a full table. */
    if (!b) {
      if ((rc = tm_bucket_new(t, domain, ts, false, &bid)) != SL_OK)
        goto fail;
      b = &t->bk[bid];
    }
    if ((rc = tm_bucket_reserve(t, bid)) != SL_OK)
      goto fail;
    /* A pass may have made the bucket the scratch table's. */
    ptrdiff_t found = -1;
    if (b->s)
      found = tm_find_timer(b, tag, key_hash, key, klen, ns, nslen, &ins);
    else if (bid == t->scr_bid)
      found = tm_scr_find(t, b, tag, key_hash, key, klen, ns, nslen, &ins);
    if (found >= 0) {
      if (ext)
        tm_bytes_release(t, ext, n);
      return SL_OK;
    }
  }

  tm_heap *h = &t->q[domain];
  if (!b->live)
    h->empty--;
  uint32_t idx = b->len++;
  tm_ent *e = &b->e[idx];
  /* The bucket's next appends write the following lines: fetching them
   * now, for writing, turns their misses into hits by then. A prefetch
   * past the array faults nothing. */
  __builtin_prefetch(e + 2, 1);
  tm_ent_fill(e, key_hash, kg, key, klen, ns, nslen, tag, ext);
  if (b->s) {
    tm_slot_put(b, ins, tag, idx);
    b->checked = b->len;
  } else if (bid == t->scr_bid) {
    t->scr[ins] = (uint64_t)t->scr_gen << 32 | idx;
    b->checked = b->len;
  }
  b->live++;
  h->live++;
  return SL_OK;
fail:
  if (ext)
    tm_bytes_release(t, ext, n);
  return rc;
}

/* sl__timers_del in the coarse level, which a failed flush left on: a
 * scan of the slot's bucket. */
static int tm_coarse_del(struct sl__timers *t, int domain, int64_t ts,
                         uint64_t key_hash, const void *key, size_t klen,
                         const void *ns, size_t nslen) {
  uint64_t c = tm_cslot(ts);
  uint32_t bid = tm_find_coarse(t, domain, tm_cslot_start(c));
  if (bid == TM_NONE)
    return 0;
  tm_bucket *b = &t->bk[bid];
  uint16_t o = (uint16_t)(ts - tm_cslot_start(c));
  uint32_t killed = 0;
  for (uint32_t r = 0; r < b->len; r++) {
    tm_ent *e = &b->e[r];
    if (b->off[r] == o && tm_ent_is(e, key_hash, key, klen, ns, nslen)) {
      tm_ent_release(t, e);
      killed++;
    }
  }
  tm_heap *h = &t->q[domain];
  b->live -= killed;
  h->live -= killed;
  if (killed && !b->live)
    h->empty++;
  return killed > 0;
}

/* Deletes every pending copy of the timer in bucket b, which has no table,
 * by scanning it. Returns whether there was one. */
static bool tm_scan_del(struct sl__timers *t, tm_bucket *b, uint64_t key_hash,
                        const void *key, size_t klen, const void *ns,
                        size_t nslen) {
  uint32_t killed = 0;
  for (uint32_t r = b->head; r < b->len; r++) {
    tm_ent *e = &b->e[r];
    if (tm_ent_is(e, key_hash, key, klen, ns, nslen)) {
      tm_ent_release(t, e);
      killed++;
    }
  }
  b->live -= killed;
  t->q[b->domain].live -= killed;
  return killed > 0;
}

static int tm_bucket_del(struct sl__timers *t, int domain, int64_t ts,
                         uint64_t key_hash, const void *key, size_t klen,
                         const void *ns, size_t nslen);

int sl__timers_del(struct sl__timers *t, int domain, int64_t ts,
                   uint64_t key_hash, uint32_t kg, const void *key, size_t klen,
                   const void *ns, size_t nslen) {
  (void)kg;
  if ((unsigned)domain >= SL__TIMER_DOMAINS)
    return SL_ERR_INVAL;
  if (klen >= UINT32_MAX || nslen > UINT32_MAX - klen)
    return 0;
  /* A flush that failed partway may have moved the timer to its
   * timestamp's bucket (the coarse buckets are flushed in heap order, not
   * slot order, and near stays put) or left it in its slot, where a
   * registration after the failure may have put a second copy: both are
   * looked at. */
  int coarse = 0;
  if (tm_flush_all(t, domain, true) != SL_OK && tm_cslot(ts) >= t->near[domain])
    coarse = tm_coarse_del(t, domain, ts, key_hash, key, klen, ns, nslen);
  return tm_bucket_del(t, domain, ts, key_hash, key, klen, ns, nslen) | coarse;
}

/* sl__timers_del in the timestamp's bucket: 1 when a copy was there. */
static int tm_bucket_del(struct sl__timers *t, int domain, int64_t ts,
                         uint64_t key_hash, const void *key, size_t klen,
                         const void *ns, size_t nslen) {
  uint32_t bid = tm_find_bucket(t, domain, ts);
  if (bid == TM_NONE)
    return 0;
  tm_bucket *b = &t->bk[bid];
  tm_heap *h = &t->q[domain];
  uint32_t tag = tm_key_tag(key_hash, ns, nslen), slot;
  if (!b->s && bid != t->scr_bid) {
    if (b->len - b->head <= TM_SCAN) {
      if (!tm_scan_del(t, b, key_hash, key, klen, ns, nslen))
        return 0;
      goto deleted;
    }
    /* A larger bucket that sees deletes gets its own table, so that the
     * next deletes in it are one probe each; without memory for it, the
     * pass leaves the scratch table to search. */
    tm_pass(t, bid);
    if (tm_slots_rebuild(b, b->live) == SL_OK)
      t->scr_bid = TM_NONE;
  }
  if (b->s) {
    ptrdiff_t idx =
        tm_find_timer(b, tag, key_hash, key, klen, ns, nslen, &slot);
    if (idx < 0)
      return 0;
    tm_slot_erase_at(b, slot);
    tm_ent_release(t, &b->e[idx]);
  } else {
    /* The scratch table's slot stays; it no longer matches. */
    ptrdiff_t idx =
        tm_scr_find(t, b, tag, key_hash, key, klen, ns, nslen, &slot);
    if (idx < 0)
      return 0;
    tm_ent_release(t, &b->e[idx]);
  }
  b->live--;
  h->live--;
deleted:
  /* Deleted timers at the end are simply forgotten, unless the scratch
   * table holds the bucket: its slots name array indices, which must not
   * be handed out twice. */
  if (bid != t->scr_bid) {
    while (b->len > b->head && b->e[b->len - 1].klen == TM_DEAD)
      b->len--;
    if (b->checked > b->len)
      b->checked = b->len;
  }
  if (!b->live)
    h->empty++;
  if (h->empty >= TM_COMPACT_MIN && h->empty > h->len - h->empty)
    tm_heap_compact(t, h);
  return 1;
}

bool sl__timers_peek(struct sl__timers *t, int domain, int64_t *ts) {
  if ((unsigned)domain >= SL__TIMER_DOMAINS)
    return false;
  tm_heap *h = &t->q[domain];
  while (h->len) {
    const tm_bucket *b = &t->bk[h->n[0].bid];
    if (!b->live) {
      tm_heap_drop_root(t, h);
    } else if (!b->coarse) {
      *ts = h->n[0].ts;
      return true;
    } else {
      int64_t start = b->ts;
      if (tm_flush_root(t, domain) != SL_OK) {
        *ts = start; /* its timers are no earlier */
        return true;
      }
    }
  }
  return false;
}

int sl__timers_pop(struct sl__timers *t, int domain, int64_t upto,
                   sl__timer_view *out) {
  if ((unsigned)domain >= SL__TIMER_DOMAINS)
    return SL_ERR_INVAL;
  tm_release_view(t);
  tm_heap *h = &t->q[domain];
  while (h->len) {
    tm_bucket *b = &t->bk[h->n[0].bid];
    if (!b->live) {
      tm_heap_drop_root(t, h);
      continue;
    }
    /* The node's ts: a coarse bucket's sorts before its first timestamp
     * and may tie with a due bucket's. */
    if (h->n[0].ts > upto)
      return 0;
    int64_t ts = b->ts;
    if (b->coarse) {
      int rc = tm_flush_root(t, domain);
      if (rc != SL_OK)
        return rc;
      continue;
    }
    /* Nothing of a bucket fires before it is deduplicated. */
    if (b->checked < b->len && !b->s)
      tm_check(t, (uint32_t)h->n[0].bid);
    tm_ent *e = &b->e[b->head];
    while (e->klen == TM_DEAD)
      e++;
    b->head = (uint32_t)(e - b->e) + 1;
    /* The caller usually pops again right after this timer's callback. */
    __builtin_prefetch(e + 2);
    size_t n = e->klen + (size_t)e->nslen;
    unsigned char *p;
    if (n <= TM_INLINE) {
      memcpy(t->vin, e->b.in, TM_INLINE);
      p = t->vin;
    } else {
      /* Released at the next pop: the view points at it meanwhile. */
      p = t->vext = e->b.ext;
      t->vext_len = n;
    }
    *out =
        (sl__timer_view){ts, p, e->klen, e->hash, e->kg, p + e->klen, e->nslen};
    h->live--;
    if (!--b->live) {
      h->empty++;
      tm_heap_drop_root(t, h);
    }
    return 1;
  }
  return 0;
}

/* The run of bucket b's entries [from, end). */
static inline sl__timer_run tm_run(const tm_bucket *b, uint32_t from,
                                   uint32_t end) {
  return (sl__timer_run){&b->e[from].hash, &b->e[from].kg, sizeof(tm_ent),
                         end - from};
}

size_t sl__timers_ahead(struct sl__timers *t, int domain, int64_t upto,
                        size_t dist, sl__timer_run out[2]) {
  if ((unsigned)domain >= SL__TIMER_DOMAINS)
    return 0;
  tm_heap *h = &t->q[domain];
  /* The root as the next pop finds it: empty buckets dropped, a due
   * coarse bucket flushed (a failure is the pop's to report). */
  for (;;) {
    if (!h->len || h->n[0].ts > upto)
      return 0;
    const tm_bucket *r = &t->bk[h->n[0].bid];
    if (!r->live)
      tm_heap_drop_root(t, h);
    else if (!r->coarse)
      break;
    else if (tm_flush_root(t, domain) != SL_OK)
      return 0;
  }
  uint32_t rb = (uint32_t)h->n[0].bid;
  /* The next bucket to fire is the earliest of the root's children; one
   * emptied by deletes, or one not due, ends the window. A coarse one is
   * the earliest coarse bucket: flushed, it leaves the next bucket
   * among the root's children again. */
  uint32_t nb;
  for (;;) {
    size_t ni = 0;
    for (size_t c = 1; c <= 4 && c < h->len; c++)
      if (!ni || h->n[c].ts < h->n[ni].ts)
        ni = c;
    nb = ni ? (uint32_t)h->n[ni].bid : TM_NONE;
    if (!ni || h->n[ni].ts > upto || !t->bk[nb].live) {
      nb = TM_NONE;
      break;
    }
    if (!t->bk[nb].coarse)
      break;
    if (tm_flush_first(t, domain, nb) != SL_OK) {
      nb = TM_NONE;
      break;
    }
    /* Emptied, it is still the root's earliest child (the flush's
     * buckets sort after it). */
    assert(h->n[ni].bid == nb);
    tm_heap_remove_child(t, h, ni);
  }
  const tm_bucket *b = &t->bk[rb];
  /* The window: the dist entries from the root's head on, and past the
   * root's end the next bucket's first ones. */
  uint64_t want = (uint64_t)b->head + dist;
  uint32_t end = want < b->len ? (uint32_t)want : b->len;
  bool in_next = nb != TM_NONE && t->ah_bid == nb;
  uint32_t from = in_next ? end : b->head;
  if (t->ah_bid == rb && t->ah_end > from)
    from = t->ah_end;
  size_t k = 0;
  if (from < end)
    out[k++] = tm_run(b, from, end);
  if (!in_next) {
    t->ah_bid = rb;
    t->ah_end = from > end ? from : end;
  }
  if (want <= b->len || nb == TM_NONE)
    return k;
  const tm_bucket *n = &t->bk[nb];
  uint64_t nwant = (uint64_t)n->head + (want - b->len);
  uint32_t nend = nwant < n->len ? (uint32_t)nwant : n->len;
  uint32_t nfrom = n->head;
  if (in_next && t->ah_end > nfrom)
    nfrom = t->ah_end;
  if (nfrom < nend)
    out[k++] = tm_run(n, nfrom, nend);
  t->ah_bid = nb;
  t->ah_end = nfrom > nend ? nfrom : nend;
  return k;
}

size_t sl__timers_count(struct sl__timers *t, int domain) {
  if ((unsigned)domain >= SL__TIMER_DOMAINS)
    return 0;
  tm_settle(t, domain);
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
    int rc = tm_flush_all(t, d, false);
    if (rc != SL_OK)
      return rc;
    tm_settle(t, d);
    /* A sorted copy of the heap: fn may not change t, so buckets and their
     * arrays stay put throughout. */
    tm_node *tmp = malloc(h->len * sizeof *tmp);
    if (!tmp)
      return SL_ERR_NOMEM;
    memcpy(tmp, h->n, h->len * sizeof *tmp);
    qsort(tmp, h->len, sizeof *tmp, tm_cmp_ts);
    for (size_t k = 0; k < h->len; k++) {
      tm_bucket *b = &t->bk[tmp[k].bid];
      for (uint32_t i = b->head; i < b->len; i++) {
        tm_ent *e = &b->e[i];
        if (e->klen == TM_DEAD || e->kg < kg_first || e->kg > kg_last)
          continue;
        unsigned char *p = tm_bytes(e);
        sl__timer_view v = {b->ts, p,           e->klen, e->hash,
                            e->kg, p + e->klen, e->nslen};
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
