/* SPDX-License-Identifier: Apache-2.0 */
/* The state backend contract: a table of functions (Redis dictType style)
 * that the keyed-state layer (state.c) calls, implemented by the in-memory
 * hashmap backend and by RocksDB. Backends store opaque bytes; TTL
 * timestamps, reduce and aggregate logic live above this line. */
#ifndef SL_STATE_BACKEND_H
#define SL_STATE_BACKEND_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/hash.h"
#include "sluice/conf.h"

/* How a backend stores a state's entries:
 * VALUE  one byte string per (key, ns): value, reducing and aggregating;
 * LIST   one byte string per (key, ns) made of framed elements (below),
 *        appended to without reading (a RocksDB merge operator);
 * MAP    any number of (map key -> bytes) per (key, ns). */
typedef enum sl__btype {
  SL__BT_VALUE = 0,
  SL__BT_LIST,
  SL__BT_MAP,
} sl__btype;

/* Common head of every backend instance (backends embed it first). */
struct sl__snap_task; /* snapshot_begin: state/snap_task.h */

typedef struct sl__backend {
  const struct sl__backend_ops *ops;
  /* Bumped whenever bytes handed out by an earlier call may have moved or
   * been freed (an entry grew, was deleted...). Iterators in state.c keep
   * the epoch they saw and look their entry up again when it changed, so
   * they survive other state calls without an extra lookup per element. */
  uint64_t epoch;
  /* Key groups owned: [kg_lo, kg_hi) of max_par. */
  uint32_t kg_lo, kg_hi, max_par;
  /* The TTL layer's latest clock reading per time domain (index 0:
   * processing time, 1: event time), published on every access to a TTL
   * state (sl__backend_ttl_clock), for expiry that runs on other threads
   * (the RocksDB compaction filter). INT64_MIN until published. */
  _Atomic int64_t ttl_now[2];
  /* NULL, or why the backend failed beyond the arguments of one call (an
   * I/O error, a full disk, corruption): a message naming the directory
   * and the cause, for the job's error. Once set, every later call that
   * touches storage fails too, so nothing after a lost write passes for
   * success. */
  const char *errmsg;
  /* Group mode: a key's key group is its Kafka partition (murmur2 of the
   * key modulo max_par), not its hash modulo max_par. */
  bool kg_murmur2;
  /* Nanoseconds the owning worker waited for the background part of
   * earlier snapshots (snapshot_begin) outside snapshot calls: part of the
   * checkpoint pause. The worker's barrier code reads and resets it. */
  int64_t snap_wait_ns;
} sl__backend;

/* The key group of a key (kh: its sl__hash64) in be: what an entry
 * inserted from a checkpoint must agree with. */
static inline uint32_t sl__backend_key_group(const sl__backend *be,
                                             const void *key, size_t len,
                                             uint64_t kh) {
  return be->kg_murmur2 ? sl__murmur2_partition(key, len, be->max_par)
                        : sl__key_group(kh, be->max_par);
}

static inline void sl__backend_ttl_clock(sl__backend *be, int domain,
                                         int64_t now) {
  atomic_store_explicit(&be->ttl_now[domain != 0], now, memory_order_relaxed);
}

/* Address of an entry. hash is sl__state_hash(key hash, ns): computed by
 * the caller (the key hash once per record by key_by), never by the
 * backend. key and ns lengths are kept apart, so the logical key of
 * DESIGN §6, kg (2B BE) | state id | key | ns | map key, is derivable by
 * length-prefixing the variable parts. */
typedef struct sl__skey {
  uint32_t state; /* id from register_state */
  uint32_t kg;    /* key group, kg_lo <= kg < kg_hi */
  uint64_t hash;
  const void *key;
  size_t key_len;
  const void *ns;
  size_t ns_len;
} sl__skey;

/* The entry hash of a key under a non-empty namespace, from the key's
 * hash and the namespace's (sl__hash64 of its bytes): for callers that
 * keep the namespace's hash (windows) instead of hashing it per record.
 * Both are uniform already, so their XOR is: under one namespace it is
 * the key hashes moved by one constant (as evenly spread as the keys'
 * own), and no mixing is needed per record. Only a probe's start and tag
 * come from it (every probe compares key and namespace), and it is never
 * stored: tables and caches are filled from the bytes at restore. */
static inline uint64_t sl__state_hash_ns(uint64_t key_hash, uint64_t ns_hash) {
  return key_hash ^ ns_hash;
}

/* Entry hash: the key's hash alone for the empty namespace (the process
 * function fast path hashes nothing), else combined with the namespace's
 * (sl__state_hash_ns). */
static inline uint64_t sl__state_hash(uint64_t key_hash, const void *ns,
                                      size_t ns_len) {
  if (!ns_len)
    return key_hash;
  return sl__state_hash_ns(key_hash, sl__hash64(ns, ns_len));
}

/* List framing: each element is a 4-byte native length, 4 zero bytes, the
 * bytes, then zero padding to a multiple of 8, so elements stay 8-byte
 * aligned within an 8-byte aligned list. */
#define SL__LIST_HDR 8
static inline size_t sl__list_frame(size_t len) {
  return SL__LIST_HDR + ((len + 7) & ~(size_t)7);
}
static inline size_t sl__list_elem_len(const unsigned char *frame) {
  uint32_t l;
  memcpy(&l, frame, 4);
  return l;
}

/* A position in one (key, ns) map; the backend owns p and i. k's key and
 * ns pointers must stay valid while the cursor is used. */
typedef struct sl__map_cursor {
  sl__skey k;
  uint64_t epoch;
  void *p;
  size_t i;
} sl__map_cursor;

/* Called for each entry by kg_scan: mk is NULL (and mk_len 0) for VALUE
 * and LIST states, whose val is the whole value / framed list. A non-zero
 * return stops the scan and is returned by it. */
typedef int (*sl__entry_fn)(uint32_t state, const void *key, size_t key_len,
                            const void *ns, size_t ns_len, const void *mk,
                            size_t mk_len, const void *val, size_t len,
                            void *opaque);

/* TTL predicate for cleanup: whether an item (a value, one list element,
 * one map value; bytes as stored) is expired. */
typedef bool (*sl__expired_fn)(const void *val, size_t len, void *opaque);

typedef struct sl__state_stats {
  uint64_t entries; /* values + lists + map entries (rows of §6's layout) */
  uint64_t bytes;   /* key + ns + map key + value bytes of those rows */
} sl__state_stats;

/* Job-wide resources that the backends of one job's workers share (the
 * RocksDB backend: one block cache for every worker's DB, the job's
 * directory and its lock). The runtime embeds one in each job, calls
 * sl__backend_shared_init when the job is made and sl__backend_shared_fini
 * when it is destroyed (after every backend closed); the first backend to
 * open sets p and free_fn under the lock. */
typedef struct sl__backend_shared {
  pthread_mutex_t lock;
  void *p;
  void (*free_fn)(void *p);
} sl__backend_shared;

static inline void sl__backend_shared_init(sl__backend_shared *s) {
  pthread_mutex_init(&s->lock, NULL);
  s->p = NULL;
  s->free_fn = NULL;
}
static inline void sl__backend_shared_fini(sl__backend_shared *s) {
  if (s->p && s->free_fn)
    s->free_fn(s->p);
  s->p = NULL;
  pthread_mutex_destroy(&s->lock);
}

/* What a backend is opened with. */
typedef struct sl__backend_conf {
  const sl_conf_t *conf; /* job configuration (may be NULL) */
  uint32_t kg_lo, kg_hi, max_par;
  int worker;
  /* The job: its name (names the RocksDB directory), its parallelism (the
   * memory budget is split between that many workers) and its shared
   * resources. All may be 0/NULL (tests, tools): the backend then uses
   * private resources, sized as for a job of one worker. */
  const char *job;
  int par;
  sl__backend_shared *shared;
  /* Restore: a native snapshot (see ops->snapshot) of a backend of the same
   * kind that owned exactly [kg_lo, kg_hi), to start from instead of an
   * empty state. NULL: start empty. Backends without native snapshots
   * ignore it (the checkpoint layer then inserts entries instead). */
  const char *restore_dir;
} sl__backend_conf;

/* The contract. All calls come from the owning worker thread. Return
 * conventions: negative sl_err on failure; "found" calls return 1 / 0.
 * Pointers returned (val, slots, map keys) are valid until the next call
 * on the backend; writes through a slot (or through val after a get with
 * for_write) are what gets stored: the hashmap hands out its entries
 * in place, a RocksDB backend its write-back cache slot, marked dirty. */
typedef struct sl__backend_ops {
  const char *name;
  sl__backend *(*open)(const sl__backend_conf *bc, char *err, size_t errlen);
  void (*close)(sl__backend *be);

  /* Registers (or finds, by name) a state; ids are dense from 0 in
   * registration order. SL_ERR_INVAL when name exists with another type.
   * Restore registers the names of a checkpoint before operators open. */
  int (*register_state)(sl__backend *be, const char *name, sl__btype type,
                        uint32_t *id);
  uint32_t (*state_count)(const sl__backend *be);
  /* Name and type of state id; SL_ERR_NOTFOUND for an unknown id. */
  int (*state_info)(const sl__backend *be, uint32_t id, const char **name,
                    sl__btype *type);

  /* VALUE and LIST: the stored bytes. for_write: the caller may modify
   * the *len bytes in place. */
  int (*get)(sl__backend *be, const sl__skey *k, void **val, size_t *len,
             bool for_write);
  /* VALUE and LIST: a writable slot of exactly len bytes. Returns 0 when
   * it was created (zero-filled), 1 when it existed with that length
   * (bytes kept), 2 when it existed with another length (resized, first
   * min(old, len) bytes kept). */
  int (*slot)(sl__backend *be, const sl__skey *k, size_t len, void **slot);
  /* Removes the (key, ns) entry of any type, a map with all its entries.
   * Returns 1 when something was removed, 0 when nothing was there. */
  int (*del)(sl__backend *be, const sl__skey *k);

  /* LIST: appends one framed element of len bytes (len < 2^32) and
   * returns its zero-filled bytes to fill in *slot. 0 when the list was
   * created, 1 when appended to an existing one. A backend may append
   * without reading the list (RocksDB: a merge operand) as long as a later
   * get returns the whole list. */
  int (*list_append)(sl__backend *be, const sl__skey *k, size_t len,
                     void **slot);

  /* MAP, addressed by (key, ns) + map key (mh = sl__hash64(mk)). Same
   * conventions as get / slot / del. */
  int (*map_get)(sl__backend *be, const sl__skey *k, const void *mk,
                 size_t mk_len, uint64_t mh, void **val, size_t *len,
                 bool for_write);
  int (*map_slot)(sl__backend *be, const sl__skey *k, const void *mk,
                  size_t mk_len, uint64_t mh, size_t len, void **slot);
  int (*map_remove)(sl__backend *be, const sl__skey *k, const void *mk,
                    size_t mk_len, uint64_t mh);
  /* Iterates the entries of one (key, ns), a prefix of §6's key. c->k is
   * set by the caller. Removing the entry just returned (map_remove) is
   * allowed during the iteration and does not disturb it; the cursor also
   * survives any other call (it finds its map again when the epoch
   * changed). map_next returns 1 with the entry, 0 at the end. */
  int (*map_iter)(sl__backend *be, sl__map_cursor *c);
  int (*map_next)(sl__backend *be, sl__map_cursor *c, const void **mk,
                  size_t *mk_len, void **val, size_t *len, bool for_write);

  /* Snapshots and rescaling: every entry of key group kg, all states. */
  int (*kg_scan)(sl__backend *be, uint32_t kg, sl__entry_fn fn, void *opaque);
  /* Restore: inserts one entry as kg_scan reported it (mk NULL for VALUE
   * and LIST). Overwrites an existing entry. SL_ERR_RANGE for a key group
   * not owned, SL_ERR_INVAL for an unknown state or a map key on the wrong
   * type. */
  int (*insert)(sl__backend *be, uint32_t state, uint32_t kg, const void *key,
                size_t key_len, const void *ns, size_t ns_len, const void *mk,
                size_t mk_len, const void *val, size_t len);
  /* Restore: every entry of key group kg of from, a snapshot opened
   * read-only (open_snapshot), into this backend, the entries of from's
   * state i into state ids[i] (i < n_ids; UINT32_MAX: not loaded),
   * replacing what this backend holds of kg in those states. 1 when it
   * cannot (from is another backend): the caller inserts the entries.
   * Optional (NULL). */
  int (*kg_load)(sl__backend *be, sl__backend *from, uint32_t kg,
                 const uint32_t *ids, uint32_t n_ids);
  /* Restore hint: about n entries of state are about to be inserted into
   * key group kg. Entries come in the order another table scanned them,
   * i.e. sorted by hash; an open-addressing table that grows while such a
   * run is inserted piles them into one probe cluster (quadratic time), so
   * the hashmap sizes the table for all of them first. Optional (NULL). */
  void (*reserve)(sl__backend *be, uint32_t state, uint32_t kg, size_t n);
  /* Drops every entry of key group kg (handed to another worker), or
   * with states non-NULL those of the states id with states[id] true
   * (ids below state_count; group mode's keyed stages share key group
   * numbers, and one stage's task moves alone). */
  void (*kg_drop)(sl__backend *be, uint32_t kg, const bool *states);

  void (*stats)(const sl__backend *be, uint32_t state, sl__state_stats *out);

  /* Incremental TTL cleanup: visits up to budget stored (key, ns) entries
   * of the state, continuing where the previous call stopped, and removes
   * every item for which expired() is true (a list or map left empty is
   * removed). Returns the number of items removed. NULL for a backend
   * that cleans up by other means (RocksDB: a compaction filter, set_ttl):
   * the TTL layer then skips it. */
  size_t (*cleanup)(sl__backend *be, uint32_t state, size_t budget,
                    sl__expired_fn expired, void *opaque);

  /* TTL of a state, for a backend that expires items itself on other
   * threads (the RocksDB compaction filter): every item of the state (a
   * value, one list element, one map value) starts with the 8-byte
   * timestamp of its last access and is expired iff last + ttl_ms <= now,
   * now being ttl_now[domain] (0: processing time, 1: event time). Called
   * by the TTL layer when it registers a state with a TTL. Optional. */
  void (*set_ttl)(sl__backend *be, uint32_t state, int64_t ttl_ms, int domain);

  /* A hint: the entries of state for n keys will be accessed soon, so
   * start loading them into the cache. Key i has its hash at
   * (char *)hash + i * stride and its key group at (char *)kg + i * stride,
   * so an array of records carrying both is passed as it is. The runtime
   * calls it once per few records, for records a few places ahead of
   * delivery, so a lookup that would miss the cache overlaps with the work
   * on the records before it, and the call costs one dispatch per group of
   * records rather than per record. Never fails; optional (NULL). */
  void (*prefetch)(sl__backend *be, uint32_t state, const uint64_t *hash,
                   const uint32_t *kg, size_t stride, size_t n);

  /* Direct probes (optional; NULL: none, as for RocksDB). The array of
   * state's tables, one per owned key group (kg_hi - kg_lo of them, key
   * group kg at kg - kg_lo), in the hashmap's layout (struct hm_table,
   * state/hashmap.h), valid for the backend's life. The state layer
   * resolves it once, when a state is registered, and for the current
   * key of a record probes the key group's table inline with the hash
   * key_by computed (sl__hm_direct_slot, sl__hm_direct_get): no state
   * key is built and no function of this table is called per access.
   * What a direct probe does not find as it is (absent, another length,
   * not yet moved by a table's growth, an entry to be logged) goes to
   * get and slot, which stay the one definition of every access. */
  const struct hm_table *(*direct)(sl__backend *be, uint32_t state);

  /* Checkpoints. A backend either has native snapshots (RocksDB: flush,
   * then a checkpoint of hard-linked immutable files) or is serialized
   * entry by entry through kg_scan (the hashmap; snapshot is NULL).
   *
   * snapshot: writes a self-contained, consistent copy of every state into
   * dir (which it creates; it must not exist, its parent must), on the
   * owning worker. Files
   * that are immutable once written should be hard links, so snapshots
   * share them and one costs what changed since the last. The backend must
   * stay usable afterwards. SL_OK, or a negative error with err set and
   * nothing left half-written in dir that could pass for a snapshot.
   *
   * open_snapshot: opens such a directory read-only, for kg_scan over the
   * key groups a worker restores when the parallelism changed (or to dump
   * it from a tool). The handle owns the key groups the snapshot holds
   * (its kg_lo/kg_hi; bc's range is not used, bc's max_par, when set,
   * must match). register_state finds the snapshot's states by name;
   * writes fail. NULL with err set. */
  int (*snapshot)(sl__backend *be, const char *dir, char *err, size_t errlen);
  /* snapshot_begin (optional): snapshot's first part, on the owning
   * worker; the rest runs on a thread of the backend while the worker
   * goes on, and dir holds the state as it was at this call once
   * sl__snap_task_wait says so. *task is NULL when nothing is left. */
  int (*snapshot_begin)(sl__backend *be, const char *dir,
                        struct sl__snap_task **task, char *err, size_t errlen);
  sl__backend *(*open_snapshot)(const char *dir, const sl__backend_conf *bc,
                                char *err, size_t errlen);

  /* Incremental snapshots of a backend without native ones (optional,
   * both or neither; NULL: every snapshot writes every entry).
   *
   * kg_clean: from now on, record what changes in key group kg: every
   * entry of kg is as the caller has just recorded it (written whole, or
   * restored). Called after a snapshot wrote kg whole and after a
   * restore loaded it.
   *
   * A frozen_scan (below) counts a key group recorded as kg_clean does,
   * except that the backend may keep its changes untracked for a few
   * snapshots after it changed too much to log (kg_changes then says
   * "not known").
   *
   * kg_changes: the (key, ns) of key group kg changed since its last
   * kg_clean or kg_changes, each once, through fn as kg_scan reports
   * entries, except that a call with val NULL (and mk NULL) means "the
   * (key, ns) holds nothing": it was removed, or, for a map, precedes
   * every entry the map holds now (a map is reported whole). A
   * reported (key, ns) counts as recorded again. Returns 0; 1 when the
   * changes of kg are not known (no kg_clean since it was opened or
   * dropped, or too many to keep): the caller writes kg whole and calls
   * kg_clean; or fn's non-zero return. */
  int (*kg_clean)(sl__backend *be, uint32_t kg);
  int (*kg_changes)(sl__backend *be, uint32_t kg, sl__entry_fn fn,
                    void *opaque);

  /* Copy-on-write snapshots of whole key groups (optional, all three or
   * none; only with kg_clean and kg_changes), so that writing a key group
   * whole costs its worker a copy at most, not its serialization.
   *
   * freeze: on the owning worker, takes key groups kgs[0, n) (ascending)
   * as they are now and returns at once. The worker goes on: its first
   * call that touches a frozen key group (any call naming it, or TTL
   * cleanup reaching it) copies that key group's tables, unless
   * frozen_scan already has it (then the call waits for the scan of that
   * one key group to end). Replaces the backend's previous frozen view,
   * if any. NULL when out of memory (nothing is frozen).
   *
   * frozen_scan: any one thread, each frozen key group at most once, in
   * any order: reports its entries as kg_scan did when freeze was called,
   * and then counts them recorded, as kg_clean does (changes made after
   * freeze are reported by the next kg_changes). Returns fn's non-zero
   * return or a negative error, after which the view's remaining key
   * groups may still be scanned or released.
   *
   * frozen_release: the thread that scans, once, when done (or, for a
   * view nobody scans, the worker): key groups not scanned go back to
   * the worker, and the view's copies are freed. Whether those count as
   * recorded is not defined (a copy may have recorded them): the next
   * snapshot must write them whole. The backend may have been closed
   * meanwhile: what frozen_scan needs of it was copied first. */
  struct sl__frozen *(*freeze)(sl__backend *be, const uint32_t *kgs, size_t n);
  int (*frozen_scan)(struct sl__frozen *f, uint32_t kg, sl__entry_fn fn,
                     void *opaque);
  void (*frozen_release)(struct sl__frozen *f);
} sl__backend_ops;

/* Waits (any thread, once) for the background part of a snapshot and
 * frees the caller's hold on it: SL_OK when its directory is complete,
 * else a negative error with err set. Safe after the backend was closed
 * (closing waits for it). NULL: SL_OK. */
int sl__snap_task_wait(struct sl__snap_task *t, char *err, size_t errlen);

extern const sl__backend_ops sl__hashmap_ops;
extern const sl__backend_ops sl__rocksdb_ops;

/* Key groups [*lo, *hi) that worker w of par owns out of max_par: the
 * inverse of sl__kg_worker (kg * par / max_par == w). */
static inline void sl__kg_range(int w, int par, uint32_t max_par, uint32_t *lo,
                                uint32_t *hi) {
  *lo = (uint32_t)(((uint64_t)w * max_par + (uint64_t)par - 1) / (uint64_t)par);
  *hi = (uint32_t)(((uint64_t)(w + 1) * max_par + (uint64_t)par - 1) /
                   (uint64_t)par);
}

/* The backend called name (its ops->name, a value of state.backend), or
 * NULL. */
const sl__backend_ops *sl__backend_find(const char *name);

/* Opens the backend named by state.backend in bc->conf. NULL with a
 * message in err on failure. sl__backend_close(NULL) is a no-op. */
sl__backend *sl__backend_open(const sl__backend_conf *bc, char *err,
                              size_t errlen);
static inline void sl__backend_close(sl__backend *be) {
  if (be)
    be->ops->close(be);
}

#endif
