/* SPDX-License-Identifier: Apache-2.0 */
/* Private to the RocksDB backend (rocksdb*.c): the backend and its states,
 * the write-back cache in front of RocksDB, the key encoding of DESIGN §6
 * and the functions the files share. See docs/state.md. */
#ifndef SL_STATE_ROCKSDB_INT_H
#define SL_STATE_ROCKSDB_INT_H

#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "core/fs.h"
#include "core/util.h"
#include "state/backend.h"

/* ---- Job-wide resources ------------------------------------------------- */

/* One per job (in sl__backend_shared), or private to a backend opened
 * without a job. Sizes are the job's; a worker gets 1/par of the write
 * buffers and of the write-back cache, and shares the block cache. */
typedef struct rk_env {
  sl__fmode fmode; /* files.access */
  char *state_dir; /* state.dir as configured, for messages */
  char *dir;       /* <state.dir>/<job>, or a private temporary directory */
  int lock_fd;     /* flock(2) on dir/.lock; -1 for a private directory */
  bool private_dir;
  rocksdb_cache_t *cache;
  size_t budget, block_cache, write_buffer, write_back;
  int par, wb_count;
  bool malloc_trim; /* state.rocksdb.malloc.tune, on glibc */
} rk_env;

/* ---- States ------------------------------------------------------------- */

/* One registered state: a column family. Allocated alone and never moved,
 * since the compaction filter (on RocksDB's threads) points at it. */
typedef struct rk_state {
  struct rk *b;
  char *name;
  sl__btype type;
  uint32_t id;
  rocksdb_column_family_handle_t *cf;
  rocksdb_options_t *opts;            /* the column family's options */
  rocksdb_compactionfilter_t *filter; /* owned; freed after the DB closes */
  /* TTL for the compaction filter (set_ttl): 0 for none. Written before
   * the filter can see it (release), read by the filter (acquire). */
  _Atomic int64_t ttl_ms;
  _Atomic int ttl_domain;
  /* What the worker wrote and removed (exact: every write knows whether
   * the entry existed), minus what the compaction filter dropped. */
  sl__state_stats stats;
  _Atomic uint64_t dropped_entries, dropped_bytes;
  uint32_t n_dirty; /* dirty cache entries of this state */
} rk_state;

/* ---- Write-back cache --------------------------------------------------- */

/* Entry flags (flags: read by a snapshot's thread while the entry is
 * frozen, so the worker changes them only on entries it owns, see
 * sl__rk_own). */
enum {
  RK_PRESENT = 1, /* holds a value (else known absent: a negative entry) */
  /* LIST only: val holds just the frames appended since the last flush (a
   * merge operand); the first base_len bytes of the list are in RocksDB. */
  RK_APPEND = 8,
};
/* Worker-only flags (wflags: a byte of their own, which a snapshot's
 * thread never reads, so marking a frozen entry used races with nothing). */
enum {
  RK_REF = 4,  /* used since the clock hand last passed */
  RK_PIN = 16, /* in use by the current call: not evictable */
};

/* Dirty generations. An entry is dirty (differs from RocksDB, listed in
 * cache.dirty at dirty_idx) when its dgen is the cache's gen; 0 when it
 * was written by a flush. A snapshot takes the dirty list as it is and
 * moves gen on (O(1)): the entries of the old generation are then its
 * frozen set, written by the snapshot's thread, and read as clean by the
 * worker without being touched. gen runs 1..RK_GEN_MAX and wraps, with a
 * sweep of the table (sl__rk_thaw) so that no old entry carries a
 * generation that comes round again. */
#define RK_GEN_MAX 0xffffu
/* fgen when nothing is frozen: no dgen equals it. */
#define RK_NO_GEN 0x10000u

/* A cached (key, ns) entry, or map entry: one allocation. Entries move only
 * when they grow (realloc) or are copied before a write while frozen, and
 * the table slot and dirty list follow. */
typedef struct rk_entry {
  uint16_t state; /* at most RK_MAX_STATES states */
  uint16_t dgen;  /* dirty generation (see above) */
  uint32_t key_len, ns_len;
  union {
    uint32_t mk_len;   /* MAP states */
    uint32_t base_len; /* LIST states with RK_APPEND */
  } u;
  uint32_t val_len, val_cap;
  uint32_t dirty_idx; /* index in the dirty list of its generation */
  uint16_t kg;
  uint8_t flags;        /* RK_PRESENT, RK_APPEND */
  uint8_t wflags;       /* RK_REF, RK_PIN */
  unsigned char data[]; /* key | ns | [map key | mh] | pad to 8 | value */
} rk_entry;
_Static_assert(sizeof(rk_entry) == 32, "entry header size");
#define RK_MAX_STATES 0xffffu

static inline uint32_t rk_mklen(const rk_entry *e, const rk_state *st) {
  return st->type == SL__BT_MAP ? e->u.mk_len : 0;
}
/* Bytes of an entry's name after key | ns: for a map entry the map key and
 * the map key's hash as the caller gave it (8 bytes, unaligned), which the
 * RocksDB key holds too. */
static inline uint32_t rk_xlen(const rk_entry *e, const rk_state *st) {
  return st->type == SL__BT_MAP ? e->u.mk_len + 8 : 0;
}
static inline uint64_t rk_entry_mh(const rk_entry *e) {
  uint64_t mh;
  memcpy(&mh, e->data + e->key_len + e->ns_len + e->u.mk_len, 8);
  return mh;
}
static inline size_t rk_voff(size_t kl, size_t nl, size_t xl) {
  return (sizeof(rk_entry) + kl + nl + xl + 7) & ~(size_t)7;
}
static inline unsigned char *rk_val(rk_entry *e, uint32_t xl) {
  return (unsigned char *)e + rk_voff(e->key_len, e->ns_len, xl);
}

typedef struct rk_slot {
  uint64_t h;
  rk_entry *e; /* NULL: empty */
} rk_slot;

/* Slabs of cache entries (rocksdb_cache.c): per size class a free list
 * and the rest of the slab being carved. */
#define RK_CLASSES 32
typedef struct rk_slabs {
  void *free[RK_CLASSES];
  unsigned char *bump[RK_CLASSES], *end[RK_CLASSES];
  void **maps; /* every slab, unmapped at close */
  size_t n, cap;
} rk_slabs;

/* A snapshot's frozen set: the dirty list of the generation it took.
 * The snapshot's thread copies the entries into records (in list order,
 * publishing how far it got in done), frees the list, then sorts the
 * records and writes them into RocksDB; the worker copies an entry it is
 * about to change only while the thread has not copied it yet
 * (sl__rk_own). Types, column families and the states' options are the
 * snapshot's own copy (the options objects change only when a state is
 * registered, which waits for the thread), so the thread reads nothing
 * else of the backend. */
typedef struct rk_frozen {
  rk_entry **v; /* the frozen list (freed by the thread once copied) */
  size_t n, list_bytes;
  _Atomic size_t done; /* entries copied: v[0, done) (release) */
  uint8_t *is_map;     /* per state id */
  rocksdb_column_family_handle_t **cfs; /* per state id */
  rocksdb_options_t **opts;             /* per state id: its table files' */
  char *ingest; /* where a state's table file is built (in the DB's dir) */
  unsigned char *buf; /* the records */
  size_t len, cap;
  struct rk_sortkey *keys; /* per record: where it sorts, where it is */
  size_t bytes;            /* buf and keys, set before done reaches n */
  /* Set by the thread (release) once the records are sorted, which makes
   * them searchable by the worker, and once RocksDB holds them: the
   * thread then reads buf and keys no more, and the worker frees them
   * (sl__rk_poll). On a cache line of their own, wherever the struct
   * lies: the worker reads them at every state access while the snapshot
   * is in flight (rk_failed), and the thread writes len for every record
   * it copies (done every 256). */
  char pad0[SL__CACHELINE];
  _Atomic bool sorted, written;
  char pad1[SL__CACHELINE - 2 * sizeof(_Atomic bool)];
} rk_frozen;

typedef struct rk_cache {
  rk_slot *slots;
  uint8_t bits;
  size_t count;
  size_t bytes; /* entries (with allocator overhead), slots, dirty list */
  size_t limit;
  uint64_t hand; /* the clock hand: random state of the slot order */
  rk_entry **dirty;
  size_t n_dirty, cap_dirty;
  uint16_t gen;  /* the dirty generation (1..RK_GEN_MAX) */
  uint32_t fgen; /* the frozen one, or RK_NO_GEN */
  rk_frozen *fz; /* the frozen set while fgen is set (the snapshot's) */
  /* The same set from the freeze until RocksDB holds its records: once
   * copied and sorted (fz NULL), the records answer the misses of
   * entries evicted meanwhile. */
  rk_frozen *snap;
  /* Frozen entries replaced by their copies: freed once the thread has
   * copied the frozen set and sorted it (sl__rk_thaw). */
  rk_entry **retired;
  size_t n_retired, cap_retired;
  uint64_t cows; /* entries copied before a write while frozen (tests) */
  /* While a snapshot was in flight (tests): entries evicted without
   * waiting for it, and misses its records answered. */
  uint64_t early_evicted, early_read;
  /* An eviction round while a snapshot is in flight found too little to
   * drop: the next ones do not try again before the frozen set is copied
   * or the snapshot's records are in RocksDB. */
  bool early_spent;
  rk_entry **victims;       /* eviction's scratch (RK_VICTIMS) */
  rocksdb_writebatch_t *wb; /* reused by every write of the cache */
  rk_slabs slabs;
} rk_cache;

/* ---- The backend -------------------------------------------------------- */

/* Position of the one RocksDB iterator kept between map_next calls: it
 * serves the cursor whose position (state, prefix, last mh/h2) matches, as
 * long as nothing was written to RocksDB since it was made (wseq). */
typedef struct rk_mapit {
  rocksdb_iterator_t *it;
  rocksdb_readoptions_t *ro;
  uint64_t wseq;
  uint32_t state;
  unsigned char *prefix; /* owned, grown as needed */
  size_t prefix_len, prefix_cap;
  unsigned char *upper; /* the iterator's upper bound (prefix successor) */
  size_t upper_cap;
  uint64_t mh; /* position: the last returned entry's (mh, h2) */
  uintptr_t h2;
  bool started;    /* else the position is the start of the map */
  bool positioned; /* the iterator stands just after that position */
} rk_mapit;

typedef struct rk {
  sl__backend base;
  rk_env *env;
  bool own_env;
  bool readonly; /* open_snapshot */
  int worker;
  char *dir;    /* the DB directory */
  char *logdir; /* read-only handles: where RocksDB's LOG goes instead */
  rocksdb_t *db;
  rocksdb_options_t *opts; /* DB options, and the base of every CF's */
  rocksdb_block_based_table_options_t *topts;
  rocksdb_mergeoperator_t *merge; /* owned by the options once set */
  rocksdb_readoptions_t *ro;
  rocksdb_writeoptions_t *wo;
  rocksdb_column_family_handle_t *cf_meta; /* "default": our metadata */
  rk_state **states;
  uint32_t n_states, cap_states;
  rk_cache cache;
  uint64_t wseq; /* bumped by every write to RocksDB */
  /* The background part of the last snapshot (rocksdb.c), or NULL. While
   * it runs the worker writes nothing into RocksDB: the entries that were
   * dirty at the barrier (the frozen set) are clean in the cache but not
   * yet in RocksDB. Eviction drops clean entries only, the frozen ones
   * once the thread has copied them into its records and sorted those,
   * and a point read that misses the cache looks in those records
   * (cache.snap) before RocksDB; everything else waits (sl__rk_settle).
   * bg_bytes (the snapshot's records, once sorted) counts in cache.bytes
   * until RocksDB holds them (sl__rk_release). */
  struct sl__snap_task *bg;
  size_t bg_bytes;
  struct rk_job *bg_job; /* what bg runs (owned by bg) */
  /* Bytes written to RocksDB since the heap was last trimmed, and how
   * many between trims (0: never; see sl__rk_written). */
  size_t written, trim_every;
  rk_mapit mit;
  unsigned char *mit_buf; /* the entry map_next is about to return */
  size_t mit_buf_cap;
  /* Scratch for encoded keys. */
  unsigned char *kbuf;
  size_t kcap;
  int failed; /* the sticky error (base.errmsg says why), 0, or
                RK_BG_RUNNING (see rk_failed) */
  char errbuf[768];
} rk;

static inline rk_state *rk_st(rk *b, uint32_t id) {
  return b->states[id];
}

/* ---- Keys (DESIGN §6) --------------------------------------------------- *
 * In the state's column family: key group (2 bytes, big-endian) | varint
 * key length | key | varint ns length | ns, and for map entries then the
 * map key's hash (8 bytes, big-endian: map iteration order) | map key. The
 * lengths make every (key, ns) prefix unambiguous, so a map is a prefix
 * range and a key group a 2-byte prefix range.                             */

#define RK_VARINT_MAX 5

static inline size_t rk_varint_put(unsigned char *p, uint32_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (unsigned char)v;
  return n;
}

/* Bytes consumed, 0 when malformed. */
static inline size_t rk_varint_get(const unsigned char *p, size_t len,
                                   uint32_t *v) {
  uint32_t r = 0;
  for (size_t i = 0; i < len && i < RK_VARINT_MAX; i++) {
    r |= (uint32_t)(p[i] & 0x7f) << (7 * i);
    if (!(p[i] & 0x80)) {
      *v = r;
      return i + 1;
    }
  }
  return 0;
}

static inline void rk_be64(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8)
    p[i] = (unsigned char)v;
}
static inline uint64_t rk_get_be64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

/* A decoded key. */
typedef struct rk_dkey {
  uint32_t kg;
  const unsigned char *key, *ns, *mk;
  size_t key_len, ns_len, mk_len;
  uint64_t mh;
} rk_dkey;

/* Decodes k (map: with mh and map key). 0, or -1 when malformed. */
int sl__rk_decode(const unsigned char *k, size_t len, bool map, rk_dkey *out);

/* Encodes into b->kbuf (grown): the (key, ns) prefix, plus mh and mk when
 * map. Returns the length, or 0 when out of memory. */
size_t sl__rk_encode(rk *b, uint32_t kg, const void *key, size_t kl,
                     const void *ns, size_t nl, bool map, uint64_t mh,
                     const void *mk, size_t ml);
/* The same into p, which has room for RK_KEY_MAX(kl, nl, ml) bytes. */
#define RK_KEY_MAX(kl, nl, ml) (2 + 2 * RK_VARINT_MAX + (kl) + (nl) + 8 + (ml))
size_t sl__rk_encode_into(unsigned char *p, uint32_t kg, const void *key,
                          size_t kl, const void *ns, size_t nl, bool map,
                          uint64_t mh, const void *mk, size_t ml);

/* ---- Cache lookups (inlined on the per-record path) --------------------- */

static inline uint64_t rk_hash(const sl__skey *k) {
  return k->hash ^ ((uint64_t)(k->state + 1) * 0x9e3779b97f4a7c15ULL);
}
static inline uint64_t rk_mhash(const sl__skey *k, uint64_t mh) {
  return sl__mix64(rk_hash(k) ^ (mh * 0xc2b2ae3d27d4eb4fULL));
}
static inline size_t rk_idx(uint64_t h, uint8_t bits) {
  return (size_t)(h >> (64 - bits));
}

static inline bool rk_eq(const rk_entry *e, const sl__skey *k, bool map,
                         const void *mk, size_t ml) {
  if (e->state != k->state || e->key_len != k->key_len ||
      e->ns_len != k->ns_len || (map && e->u.mk_len != ml))
    return false;
  const unsigned char *d = e->data;
  return sl__bytes_eq(d, k->key, k->key_len) &&
         sl__bytes_eq(d + k->key_len, k->ns, k->ns_len) &&
         (!ml || memcmp(d + k->key_len + k->ns_len, mk, ml) == 0);
}

/* The slot holding the entry, or the empty slot where it would go; *e is
 * the entry or NULL. */
static inline __attribute__((always_inline)) size_t
rk_probe(const rk_cache *c, uint64_t h, const sl__skey *k, bool map,
         const void *mk, size_t ml, rk_entry **e) {
  size_t mask = ((size_t)1 << c->bits) - 1;
  for (size_t i = rk_idx(h, c->bits);; i = (i + 1) & mask) {
    const rk_slot *s = &c->slots[i];
    if (!s->e) {
      *e = NULL;
      return i;
    }
    if (s->h == h && SL__LIKELY(rk_eq(s->e, k, map, mk, ml))) {
      *e = s->e;
      return i;
    }
  }
}

/* rocksdb_cache.c: the write-back cache. */
int sl__rk_cache_init(rk *b, size_t limit);
void sl__rk_cache_free(rk *b);
/* Makes the entry at slot (as sl__rk_fetch gave it, the table unchanged
 * since) the worker's to change: a frozen entry the snapshot's thread has
 * not copied yet is replaced by a copy first (*e then points at it and the
 * backend's epoch moves on), and one a snapshot wrote takes what it wrote
 * as RocksDB's (a list's appended frames). Every change to an entry is
 * preceded by this, or by sl__rk_dirty. */
int sl__rk_own(rk *b, size_t slot, rk_entry **e);
/* sl__rk_own, then marks *e dirty (listing it for the next flush). slot
 * may be SIZE_MAX when *e is owned already. */
int sl__rk_dirty(rk *b, size_t slot, rk_entry **e);
static inline bool rk_dirty_now(const rk_cache *c, const rk_entry *e) {
  return e->dgen == c->gen;
}

/* Snapshots (rocksdb_cache.c). On the worker: sl__rk_freeze hands the
 * dirty list to f as it is, in O(1) (plus one step per state: each
 * state's dirty count restarts), and the cache goes on with an empty one
 * of the next generation; sl__rk_thaw, once the thread has copied the
 * frozen set and sorted the records (sorted), frees the entries copied
 * before a write and forgets the frozen set; sl__rk_unfreeze undoes a
 * freeze whose thread never started. On the snapshot's thread:
 * sl__rk_frozen_copy copies the frozen entries into records and frees the
 * list, sl__rk_frozen_sort sorts the records, sl__rk_frozen_write writes
 * them into RocksDB. */
int sl__rk_freeze(rk *b, rk_frozen *f);
void sl__rk_thaw(rk *b);
/* Frees the records of cache.snap once the thread has written them
 * (written): RocksDB answers the misses from then on. */
void sl__rk_release(rk *b);
void sl__rk_unfreeze(rk *b, rk_frozen *f);
/* Copies v[done, to); the call with to == n frees the list. */
int sl__rk_frozen_copy(rk_frozen *f, size_t to);
/* Sorts the copied records (RocksDB's order) and says so (sorted). */
void sl__rk_frozen_sort(rk_frozen *f);
/* Writes the sorted records: a state's as a table file that RocksDB
 * ingests when it has at least sl__rk_ingest_min of them, else through
 * write batches. */
int sl__rk_frozen_write(rk_frozen *f, rocksdb_t *db, rocksdb_writeoptions_t *wo,
                        char **rerr);
extern size_t sl__rk_ingest_min;
void sl__rk_frozen_free(rk_frozen *f);
/* Finds the entry of (k, map key), loading it from RocksDB on a miss (a
 * negative entry when absent there, with room for cap value bytes). *slot
 * is its table slot. For LIST
 * states a list in RocksDB larger than the cache keeps for lists comes
 * back as an RK_APPEND entry unless full is set. */
int sl__rk_fetch(rk *b, const sl__skey *k, bool map, uint64_t mh,
                 const void *mk, size_t ml, bool full, size_t cap, rk_entry **e,
                 size_t *slot);
/* The cached entry of map key mk, made from val (as read from RocksDB by
 * an iteration) when not cached. */
int sl__rk_adopt(rk *b, const sl__skey *k, uint64_t mh, const void *mk,
                 size_t ml, const void *val, size_t vl, rk_entry **e,
                 size_t *slot);
/* Makes room for cap value bytes in the entry at slot: it may move, and
 * other entries may be evicted (slot is stale afterwards). */
int sl__rk_reserve(rk *b, size_t slot, rk_entry **e, size_t cap);
/* Loads the RocksDB part of an RK_APPEND list, so the entry holds all of
 * it. */
int sl__rk_list_full(rk *b, size_t slot, rk_entry **e);
/* Writes every dirty entry to RocksDB in write batches (no WAL). */
int sl__rk_flush(rk *b);
/* Evicts down to 3/4 of the limit when above it, writing the dirty
 * victims; while a snapshot is in flight, clean entries only, waiting
 * for the snapshot only when they are not enough (see rk.bg); entries
 * with RK_PIN stay. */
int sl__rk_evict(rk *b);
/* Removes every clean cached entry of key group kg (UINT32_MAX: of all). */
void sl__rk_cache_drop_kg(rk *b, uint32_t kg);

/* rocksdb.c: waits for the background part of the last snapshot (the
 * worker may then write into RocksDB again) and takes its outcome. Returns
 * the sticky error, or 0. rk_poll does so only when it has ended. */
int sl__rk_settle(rk *b);
void sl__rk_poll(rk *b);
/* Waits until the snapshot's thread has copied and sorted the frozen set
 * (written false) or written its records into RocksDB (true), or has
 * ended, and takes what it finished (sl__rk_poll). */
void sl__rk_wait_bg(rk *b, bool written);

/* rocksdb.c: counts n bytes written to RocksDB; after about a memtable's
 * worth (trim_every), returns the heap's free pages to the system. */
void sl__rk_written(rk *b, size_t n);

/* rocksdb.c: errors. Records a RocksDB failure (sticky), frees rerr (NULL:
 * a malformed key), and returns SL_ERR_IO or SL_ERR_CORRUPT. */
int sl__rk_fail(rk *b, const char *what, char *rerr);
/* The sticky error, or 0. */
/* b->failed while a snapshot's background part runs and nothing failed:
 * every call then takes the background part's outcome as soon as it is
 * known (rk_failed polls: a few loads), so that a failed write or flush
 * fails the worker's next state access as it would have when the worker
 * flushed itself. The per-record path tests b->failed once otherwise. */
#define RK_BG_RUNNING 1
static inline int rk_failed(rk *b) {
  if (SL__LIKELY(!b->failed))
    return 0;
  if (b->failed == RK_BG_RUNNING) {
    sl__rk_poll(b);
    return b->failed == RK_BG_RUNNING ? 0 : b->failed;
  }
  return b->failed;
}

/* Flushes the cache and the memtables and compacts every column family
 * fully, so the compaction filter drops what has expired now (tests and
 * tools; a running job leaves compaction to RocksDB). */
void sl__rocksdb_compact(sl__backend *be);

/* rocksdb_filter.c: the list merge operator and the TTL compaction filter
 * (both run on RocksDB's threads). */
rocksdb_mergeoperator_t *sl__rk_merge_operator(void);
rocksdb_compactionfilter_t *sl__rk_filter(rk_state *st);

/* rocksdb_ops.c: the data half of the ops table. */
int sl__rk_get(sl__backend *be, const sl__skey *k, void **val, size_t *len,
               bool for_write);
int sl__rk_slot(sl__backend *be, const sl__skey *k, size_t len, void **out);
int sl__rk_del(sl__backend *be, const sl__skey *k);
int sl__rk_list_append(sl__backend *be, const sl__skey *k, size_t len,
                       void **out);
int sl__rk_map_get(sl__backend *be, const sl__skey *k, const void *mk,
                   size_t mk_len, uint64_t mh, void **val, size_t *len,
                   bool for_write);
int sl__rk_map_slot(sl__backend *be, const sl__skey *k, const void *mk,
                    size_t mk_len, uint64_t mh, size_t len, void **out);
int sl__rk_map_remove(sl__backend *be, const sl__skey *k, const void *mk,
                      size_t mk_len, uint64_t mh);
int sl__rk_map_iter(sl__backend *be, sl__map_cursor *c);
int sl__rk_map_next(sl__backend *be, sl__map_cursor *c, const void **mk,
                    size_t *mk_len, void **val, size_t *len, bool for_write);
int sl__rk_kg_scan(sl__backend *be, uint32_t kg, sl__entry_fn fn, void *opaque);
int sl__rk_insert(sl__backend *be, uint32_t state, uint32_t kg, const void *key,
                  size_t key_len, const void *ns, size_t ns_len, const void *mk,
                  size_t mk_len, const void *val, size_t len);
void sl__rk_kg_drop(sl__backend *be, uint32_t kg, const bool *states);
int sl__rk_kg_load(sl__backend *be, sl__backend *from, uint32_t kg,
                   const uint32_t *ids, uint32_t n_ids);
void sl__rk_prefetch(sl__backend *be, uint32_t state, const uint64_t *hash,
                     const uint32_t *kg, size_t stride, size_t n);
void sl__rk_mapit_reset(rk *b);

#endif
