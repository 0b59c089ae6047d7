/* SPDX-License-Identifier: Apache-2.0 */
/* Private to the hashmap backend (hashmap.c, hashmap_map.c): the memory
 * layout of entries, tables and per-(key, ns) maps, and the functions the
 * two files share. See docs/state.md. */
#ifndef SL_STATE_HASHMAP_H
#define SL_STATE_HASHMAP_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "core/buf.h"
#include "core/util.h"
#include "state/backend.h"

#define HM_MIN_BITS 3
/* Tables up to 2^10 slots move to their doubled array at once; larger ones
 * move HM_MIGRATE old slots per access, so no access pays for a whole
 * rehash (Redis' incremental rehashing, on open addressing). */
#define HM_SMALL_BITS 10
#define HM_MIGRATE 64
/* Cleanup looks at no more than this many slots per entry it may visit,
 * so a sparse table cannot make one access slow (as Redis' dictScan caps
 * empty buckets). */
#define HM_SCAN_FACTOR 16

/* An out-of-line (key, ns) entry, for what does not fit in a slot: a
 * single allocation with the key, namespace and value, the value 8-byte
 * aligned. */
typedef struct hm_entry {
  uint32_t key_len, ns_len;
  uint32_t val_len, val_cap;
  unsigned char data[]; /* key | ns | pad to 8 | value (val_cap bytes) */
} hm_entry;

/* Slot tags. Empty is 0 so that a zeroed array is an empty table; tombstones
 * only occur in the old array of a growing table (moved or removed). */
enum { HM_EMPTY = 0, HM_INL = 1, HM_EXT = 2, HM_TOMB = 3 };

/* Bytes of key | ns | pad | value a slot holds inline: an 8-byte key with
 * an 8-byte value and its 8-byte TTL timestamp fit, so the usual lookup
 * reads one 32-byte slot and nothing else (one cache miss, not two). */
#define HM_INL_BYTES 24

/* meta packs, from the top: the hash's top 32 bits | val_len | ns_len |
 * key_len | tag (lengths for HM_INL only). One load and one compare then
 * decide a probe step; the top bits double as the home index
 * (hm_idx(meta, bits) == hm_idx(hash, bits) while bits <= 32). */
typedef struct hm_slot {
  uint64_t meta;
  union {
    unsigned char data[HM_INL_BYTES]; /* HM_INL: key | ns | pad | value */
    hm_entry *e;                      /* HM_EXT */
  } u;
} hm_slot;
_Static_assert(sizeof(hm_slot) == 32, "two slots per cache line");

#define HM_HASH_BITS 0xffffffff00000000ULL
#define HM_VLEN_BITS 0x00000000ff000000ULL
#define HM_MAX_BITS 32
#define HM_SLOT_ALIGN 64

/* Bit 7 of the tag byte: the entry is as the last incremental snapshot
 * recorded it (see hm_touch). Only the general paths look at it: the
 * per-record lookup compares meta's low half whole, so a clean entry
 * simply misses it once and the general path marks it changed. */
#define HM_CLEAN 0x80u
static inline unsigned hm_tag(const hm_slot *s) {
  return (unsigned)(s->meta & 0x7f);
}
static inline bool hm_live(const hm_slot *s) {
  unsigned t = hm_tag(s);
  return t == HM_INL || t == HM_EXT;
}

/* Control bytes, one per slot in an array after the slots (Swiss tables'
 * layout): 0 empty, HM_CTRL_TOMB a tombstone, 0x80 | 7 bits of the hash
 * (hm_h7) a live entry. A probe compares 16 of them with the wanted byte
 * at once and reads a slot only where they match (1 in 128 for another
 * key), instead of loading every slot of the probe sequence. Probing
 * stays linear slot by slot, a group just covers 16 slots per step, so
 * backward-shift deletion and incremental migration work unchanged. The
 * array has HM_GROUP more bytes mirroring its first ones, so a group
 * starting near the end is one unaligned load (abseil's cloned bytes). */
#define HM_GROUP 16
#define HM_CTRL_TOMB 1

/* Bits 16..22: independent of the home index (the top bits) and of the
 * key group (the low bits for a power-of-two max.parallelism). */
static inline uint8_t hm_h7(uint64_t hash) {
  return (uint8_t)(0x80 | (uint8_t)(hash >> 16));
}

/* Bit j of the result: ctrl[j] == tag. */
static inline uint32_t hm_group_match(const uint8_t *ctrl, uint8_t tag) {
#if defined(__SSE2__)
  __m128i g = _mm_loadu_si128((const __m128i *)(const void *)ctrl);
  return (uint32_t)_mm_movemask_epi8(
      _mm_cmpeq_epi8(g, _mm_set1_epi8((char)tag)));
#else
  uint32_t m = 0;
  for (unsigned j = 0; j < HM_GROUP; j++)
    m |= (uint32_t)(ctrl[j] == tag) << j;
  return m;
#endif
}

/* Bit j of the result: ctrl[j] == 0, an empty slot. */
static inline uint32_t hm_group_empty(const uint8_t *ctrl) {
  return hm_group_match(ctrl, 0);
}

/* Whether every slot of the group is live: in an array without
 * tombstones (the live one), whether a probe goes on past the group. The
 * live bit of each control byte, all 16 in one instruction, with no
 * vector to compare with. */
static inline bool hm_group_full(const uint8_t *ctrl) {
#if defined(__SSE2__)
  return _mm_movemask_epi8(
             _mm_loadu_si128((const __m128i *)(const void *)ctrl)) == 0xffff;
#else
  for (unsigned j = 0; j < HM_GROUP; j++)
    if (!(ctrl[j] & 0x80))
      return false;
  return true;
#endif
}

/* The candidates of a group that lie before its first empty slot, where
 * a linear probe stops (all of them when the group has none). */
static inline uint32_t hm_before_empty(uint32_t match, uint32_t empty) {
  return match & ((empty & (0u - empty)) - 1u);
}

/* Sets the control byte of slot i of an n-slot array, and its mirrors. */
static inline void hm_ctrl_set(uint8_t *ctrl, size_t n, size_t i, uint8_t v) {
  ctrl[i] = v;
  for (size_t p = n + i; p < n + HM_GROUP; p += n)
    ctrl[p] = v;
}

/* A table: shift and mask are derived from bits once, when the array is
 * made, so a lookup loads them instead of computing them. 64 bytes on a
 * 64-bit platform, so a table is found with a shift. */
typedef struct hm_table {
  hm_slot *slots;
  uint8_t *ctrl; /* control bytes of slots (inside its allocation) */
  size_t mask;   /* slots - 1 */
  size_t count;  /* live entries in slots */
  hm_slot *old;  /* previous array while growing, being migrated */
  size_t old_count;
  size_t mig; /* next old slot to migrate */
  uint8_t shift, bits, old_bits;
  /* Part of a frozen key group (hashmap_snap.c) that the worker has not
   * taken back yet: hm_tab takes it back before handing the table out.
   * Meanwhile ctrl points at zeros (hm_tab_fast). */
  uint8_t frozen;
} hm_table;
_Static_assert(sizeof(void *) != 8 || sizeof(hm_table) == 64,
               "a table is found with a shift");

static inline uint8_t *hm_ctrl_of(hm_slot *slots, uint8_t bits) {
  return (uint8_t *)(slots + ((size_t)1 << bits));
}

/* A table without slots (none yet, or its key group dropped) probes
 * control bytes that say "empty" from a home index of 0 or 1 (shift 63),
 * so that the per-record probe finds nothing in it without testing for
 * it. Never written: every write of control bytes is of a table with
 * slots. */
extern uint8_t sl__hm_no_ctrl[2 * HM_GROUP];
static inline void hm_table_init(hm_table *t) {
  memset(t, 0, sizeof(*t));
  t->ctrl = sl__hm_no_ctrl;
  t->shift = 63;
}

/* A map entry: map key and value inline, the value 8-byte aligned. */
typedef struct hm_mentry {
  uint32_t mk_len, val_len, val_cap, pad_;
  unsigned char data[];
} hm_mentry;

typedef struct hm_mslot {
  uint64_t hash;
  hm_mentry *e; /* NULL: empty; HM_MTOMB: removed */
} hm_mslot;

extern hm_mentry sl__hm_mtomb;
#define HM_MTOMB (&sl__hm_mtomb)

/* Maps delete with tombstones, not backward shifting, so removing entries
 * (by the user or TTL cleanup) during an iteration never moves others. */
typedef struct hm_map {
  hm_mslot *slots;
  uint32_t count, used; /* used = count + tombstones */
  uint8_t bits;
} hm_map;

/* The keys (key | ns) of one (state, key group) changed since its last
 * incremental snapshot, each as u32 key_len, u32 ns_len, key, ns. A key
 * is logged when a clean entry is first written (or removed) and when an
 * entry is created, so the log is as long as what changed, not as the
 * table. */
typedef struct hm_dlog {
  sl_buf_t b;
  size_t n; /* keys logged */
} hm_dlog;

typedef struct hm_state {
  char *name;
  sl__btype type;
  hm_table *tables; /* one per owned key group */
  hm_dlog *dlog;    /* one per owned key group; NULL until tracked */
  sl__state_stats stats;
  uint32_t cur_kg; /* incremental cleanup cursor */
  size_t cur_slot;
} hm_state;

typedef struct hm {
  sl__backend base;
  hm_state *states;
  uint32_t n_states, cap_states;
  uint32_t n_kg;
  /* Per owned key group (one allocation, NULL until the first kg_clean
   * or freeze; sl__hm_kg_init): kg_known, whether its changes since the
   * last kg_clean are all logged; kg_heat, how many tracked intervals in
   * a row it outgrew its log; kg_rest, how many more snapshots write it
   * whole before its changes are tracked again (hashmap.c, "A key group
   * that outgrew its log"). */
  uint8_t *kg_known, *kg_heat, *kg_rest;
  /* The key groups the last freeze took (hashmap_snap.c), or NULL. */
  struct sl__frozen *frozen;
} hm;

static inline size_t hm_voff(uint32_t kl, uint32_t nl) {
  return ((size_t)kl + nl + 7) & ~(size_t)7;
}
static inline unsigned char *hm_val(hm_entry *e) {
  return e->data + hm_voff(e->key_len, e->ns_len);
}
static inline unsigned char *hm_mval(hm_mentry *e) {
  return e->data + (((size_t)e->mk_len + 7) & ~(size_t)7);
}

/* Slot accessors, whether the entry is inline or not (cold paths; the
 * lookup reads meta directly). */
static inline uint32_t hm_klen(const hm_slot *s) {
  return hm_tag(s) == HM_INL ? (uint32_t)(s->meta >> 8) & 0xff
                             : s->u.e->key_len;
}
static inline uint32_t hm_nlen(const hm_slot *s) {
  return hm_tag(s) == HM_INL ? (uint32_t)(s->meta >> 16) & 0xff
                             : s->u.e->ns_len;
}
static inline uint32_t hm_vlen(const hm_slot *s) {
  return hm_tag(s) == HM_INL ? (uint32_t)(s->meta >> 24) & 0xff
                             : s->u.e->val_len;
}
static inline unsigned char *hm_key(hm_slot *s) {
  return hm_tag(s) == HM_INL ? s->u.data : s->u.e->data;
}
static inline unsigned char *hm_sval(hm_slot *s) {
  return hm_tag(s) == HM_INL ? s->u.data + hm_voff(hm_klen(s), hm_nlen(s))
                             : hm_val(s->u.e);
}
static inline void hm_set_vlen(hm_slot *s, size_t len) {
  if (hm_tag(s) == HM_INL)
    s->meta = (s->meta & ~HM_VLEN_BITS) | ((uint64_t)len << 24);
  else
    s->u.e->val_len = (uint32_t)len;
}
static inline hm_map *hm_map_of(hm_slot *s) {
  hm_map *m;
  memcpy(&m, hm_sval(s), sizeof m);
  return m;
}
/* Top bits: every key of a key group has the same hash % K, so the low
 * bits are useless to spread one key group's table. */
static inline size_t hm_idx(uint64_t h, uint8_t bits) {
  return (size_t)(h >> (64 - bits));
}
static inline size_t hm_mask(uint8_t bits) {
  return ((size_t)1 << bits) - 1;
}

static inline bool hm_eq(const hm_entry *e, const sl__skey *k) {
  /* key_len and ns_len in one compare. */
  uint64_t lens;
  memcpy(&lens, e, sizeof(lens));
  uint64_t want =
      (uint64_t)(uint32_t)k->key_len | ((uint64_t)(uint32_t)k->ns_len << 32);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
  want = ((uint64_t)(uint32_t)k->key_len << 32) | (uint32_t)k->ns_len;
#endif
  return lens == want && sl__bytes_eq(e->data, k->key, k->key_len) &&
         (!k->ns_len || sl__bytes_eq(e->data + k->key_len, k->ns, k->ns_len));
}

static inline hm_state *hm_st(hm *b, uint32_t id) {
  assert(id < b->n_states);
  return &b->states[id];
}
/* hashmap_snap.c: takes key group g (relative) back from a frozen view,
 * copying it unless its scan already has it. */
void sl__hm_thaw(hm *b, uint32_t g);
static inline hm_table *hm_tab(hm *b, hm_state *st, uint32_t kg) {
  assert(kg >= b->base.kg_lo && kg < b->base.kg_hi);
  hm_table *t = &st->tables[kg - b->base.kg_lo];
  if (__builtin_expect(t->frozen, 0))
    sl__hm_thaw(b, kg - b->base.kg_lo);
  return t;
}
/* The table as the per-record lookup (hm_probe8) reads it, without the
 * test of hm_tab: a frozen table's ctrl points at zeros (every slot
 * empty), so that lookup misses it and the general path, which calls
 * hm_tab, takes it back first; so does a table without slots
 * (hm_table_init). */
static inline const hm_table *hm_tab_fast(hm *b, hm_state *st, uint32_t kg) {
  assert(kg >= b->base.kg_lo && kg < b->base.kg_hi);
  return &st->tables[kg - b->base.kg_lo];
}

/* ---- The per-record probe ------------------------------------------------
 * Shared by the backend's get and slot and by the direct probes of the
 * state layer (backend.h, ops->direct): an inline entry of an 8-byte key
 * with no namespace (nl 0) or an 8-byte one (nl 8), found by one group
 * compare of control bytes and one compare of the candidate's meta (its
 * low 32 bits masked by want_mask: lengths and tag, with or without the
 * value length) and key words. Equal key and namespace bytes imply an
 * equal hash, so meta's hash half is not compared. NULL when not found
 * this way (absent, out of line, other lengths, or marked clean since the
 * last incremental snapshot: its tag byte differs): the caller takes the
 * general path. nl is a constant at each call, so each case compiles to
 * its own loop with no namespace word to keep when there is none.
 *
 * Any table may be probed so, with no test: a table without slots, and
 * a frozen one, have control bytes that say "empty" (hm_table_init,
 * hashmap_snap.c). In a growing table it probes the new array only: an
 * entry found there is the key's only one (migration moves an entry and
 * leaves a tombstone, creation looks in both arrays first), and one
 * still in the old array is not found, so the general path finds it
 * (and migrates a step, as every access that misses does; the inserts
 * alone finish a migration long before the next growth). */
static inline __attribute__((always_inline)) hm_slot *
sl__hm_probe8(const hm_table *t, const void *key, const void *ns, uint64_t hash,
              size_t nl, uint32_t want, uint32_t want_mask) {
  uint64_t kw, nw = 0, sw, snw;
  memcpy(&kw, key, 8);
  if (nl)
    memcpy(&nw, ns, 8);
  hm_slot *slots = t->slots;
  size_t mask = t->mask;
  uint8_t tag = hm_h7(hash);
  for (size_t i = (size_t)(hash >> t->shift);; i = (i + HM_GROUP) & mask) {
    uint32_t m = hm_group_match(t->ctrl + i, tag);
    /* Candidates after the group's first empty slot are not dropped
     * (hm_before_empty): the live array has no tombstones, so the key
     * cannot lie past an empty slot of its probe sequence, and comparing
     * such a candidate costs less than masking them on every probe. */
    for (; m; m &= m - 1) {
      /* A 64-bit count: no sign extension of an int. */
      hm_slot *s = &slots[(i + (size_t)__builtin_ctzll(m)) & mask];
      memcpy(&sw, s->u.data, 8);
      if (nl)
        memcpy(&snw, s->u.data + 8, 8);
      /* Without a namespace the second word is the value: not compared.
       * The words by XOR, one branch for both. */
      if (((uint32_t)s->meta & want_mask) == want &&
          ((sw ^ kw) | (nl ? snw ^ nw : 0)) == 0)
        return s;
    }
    if (!hm_group_full(t->ctrl + i))
      return NULL;
  }
}

/* Direct probes: what the state layer inlines for the current key of a
 * record (an 8-byte key, no namespace) in the table of its state and key
 * group, handed out by ops->direct, without a call into the backend.
 * They find only entries that the backend's get and slot would return as
 * they are, unchanged: anything else (an empty or frozen table, an entry
 * not yet migrated, an absent entry, another value length, an entry to
 * be logged for the incremental snapshot) answers NULL, and the caller
 * takes the backend's get or slot, which creates, resizes, migrates and
 * logs.
 *
 * The value bytes of key's entry when it holds exactly len bytes (len a
 * constant <= HM_INL_BYTES - 8 at the call), for writing in place. */
static inline __attribute__((always_inline)) void *
sl__hm_direct_slot(const hm_table *t, const void *key, uint64_t hash,
                   size_t len) {
  hm_slot *s =
      sl__hm_probe8(t, key, NULL, hash, 0,
                    (uint32_t)len << 24 | 8u << 8 | HM_INL, 0xffffffff);
  return s ? s->u.data + 8 : NULL;
}

/* The same for key's entry in the 8-byte namespace ns (a window's
 * accumulator under its window's start), hash being the entry's hash
 * (sl__state_hash), len a constant <= HM_INL_BYTES - 16. */
static inline __attribute__((always_inline)) void *
sl__hm_direct_slot_ns8(const hm_table *t, const void *key, const void *ns,
                       uint64_t hash, size_t len) {
  hm_slot *s = sl__hm_probe8(t, key, ns, hash, 8,
                             (uint32_t)len << 24 | 8u << 16 | 8u << 8 | HM_INL,
                             0xffffffff);
  return s ? s->u.data + 16 : NULL;
}

/* The value bytes of key's entry and their length, for reading. */
static inline __attribute__((always_inline)) void *
sl__hm_direct_get(const hm_table *t, const void *key, uint64_t hash,
                  size_t *len) {
  hm_slot *s = sl__hm_probe8(t, key, NULL, hash, 0, 8u << 8 | HM_INL, 0xffffff);
  if (!s)
    return NULL;
  *len = (uint32_t)(s->meta >> 24) & 0xff;
  return s->u.data + 8;
}

/* Requests from memory what a probe of hash in t reads first: its home
 * group of control bytes and its home slot, and the slots of the next
 * line. At the load a table runs at (about 800 keys in 1024 slots), a
 * linear probe finds 70% of the keys in their home slot's line and 16%
 * in the next one. Never faults: an empty table (no slots) requests an
 * address near 0, which a prefetch ignores. */
static inline void sl__hm_direct_prefetch(const hm_table *t, uint64_t hash) {
  size_t i = (size_t)(hash >> t->shift);
  __builtin_prefetch((const void *)((uintptr_t)t->ctrl + i));
  const char *s = (const char *)((uintptr_t)t->slots + i * sizeof(hm_slot));
  __builtin_prefetch(s);
  __builtin_prefetch(s + SL__CACHELINE);
}

/* sl__hm_direct_prefetch for n keys, key j with its hash (XORed with
 * ns_hash: sl__state_hash_ns, 0 for none) at (char *)hash + j * stride
 * and its key group g at (char *)kg + j * stride, in the table at base +
 * g * sizeof(hm_table) (base: where key group 0's table would be). checked (a
 * constant at each call): only key groups in [lo, lo + n_kg) are requested,
 * others skipped; unchecked, every g must have a table. The backend's prefetch
 * (checked: its contract takes any key group) and the state layer's direct one
 * (unchecked: the keyed batch's key groups are the worker's) are both
 * this loop. */
static inline __attribute__((always_inline)) void
sl__hm_direct_prefetch_n(uintptr_t base, bool checked, uint32_t lo,
                         uint32_t n_kg, uint64_t ns_hash, const uint64_t *hash,
                         const uint32_t *kg, size_t stride, size_t n) {
  const unsigned char *hp = (const unsigned char *)hash;
  const unsigned char *end = hp + n * stride;
  /* One induction variable: the key group lies at a fixed distance. */
  ptrdiff_t gd = (const unsigned char *)kg - hp;
  for (; hp != end; hp += stride) {
    uint64_t h;
    uint32_t g;
    memcpy(&h, hp, sizeof(h));
    memcpy(&g, hp + gd, sizeof(g));
    /* A key group below the range wraps and fails the check. */
    if (!checked || g - lo < n_kg)
      sl__hm_direct_prefetch(
          (const hm_table *)(base + (uintptr_t)g * sizeof(hm_table)),
          sl__state_hash_ns(h, ns_hash));
  }
}

/* Change tracking for incremental snapshots (hashmap.c). */
void sl__hm_dirty(hm *b, hm_state *st, uint32_t kg, hm_slot *s);
void sl__hm_log(hm *b, hm_state *st, uint32_t kg, const void *key,
                size_t key_len, const void *ns, size_t ns_len);
/* Before a write through, or the removal of, the entry in s: a clean
 * entry becomes changed and its key is logged. */
static inline void hm_touch(hm *b, hm_state *st, uint32_t kg, hm_slot *s) {
  if (__builtin_expect((s->meta & HM_CLEAN) != 0, 0))
    sl__hm_dirty(b, st, kg, s);
}

/* hashmap.c. find and create may move inline entries (bumping the
 * epoch), so a slot pointer is only good until the next of these calls. */
hm_slot *sl__hm_find(hm *b, hm_table *t, const sl__skey *k, bool *in_old);
hm_slot *sl__hm_create(hm *b, hm_state *st, hm_table *t, const sl__skey *k,
                       size_t len, size_t cap, int *rc);
void sl__hm_remove(hm *b, hm_state *st, hm_table *t, hm_slot *s, bool in_old);
bool sl__hm_key_ok(const sl__skey *k, size_t len);
int sl__hm_del(sl__backend *be, const sl__skey *k);

/* Shared with hashmap_snap.c (hashmap.c). */
int sl__hm_scan_entry(uint32_t id, sl__btype type, hm_slot *s, sl__entry_fn fn,
                      void *opaque);
int sl__hm_scan_table(uint32_t id, sl__btype type, const hm_table *t,
                      sl__entry_fn fn, void *opaque);
/* What kg_clean does to one state's table of a key group (NULL: not the
 * table) and its log of changes (NULL: none); the caller sets kg_known. */
void sl__hm_mark_clean(hm_table *t, hm_dlog *l);
/* Allocates kg_known, kg_heat and kg_rest if not yet there; 0 or
 * SL_ERR_NOMEM. */
int sl__hm_kg_init(hm *b);
/* hashmap_snap.c: frozen views. thaw_all takes every key group back and
 * drops the backend's reference (before close). */
void sl__hm_thaw_all(hm *b);
struct sl__frozen *sl__hm_freeze(sl__backend *be, const uint32_t *kgs,
                                 size_t n);
int sl__hm_frozen_scan(struct sl__frozen *f, uint32_t kg, sl__entry_fn fn,
                       void *opaque);
void sl__hm_frozen_release(struct sl__frozen *f);

/* hashmap_map.c: the MAP part of the contract. */
void sl__hm_map_free(hm_state *st, hm_slot *s);
int sl__hm_map_get(sl__backend *be, const sl__skey *k, const void *mk,
                   size_t mk_len, uint64_t mh, void **val, size_t *len,
                   bool for_write);
int sl__hm_map_slot(sl__backend *be, const sl__skey *k, const void *mk,
                    size_t mk_len, uint64_t mh, size_t len, void **out);
int sl__hm_map_remove(sl__backend *be, const sl__skey *k, const void *mk,
                      size_t mk_len, uint64_t mh);
int sl__hm_map_iter(sl__backend *be, sl__map_cursor *c);
int sl__hm_map_next(sl__backend *be, sl__map_cursor *c, const void **mk,
                    size_t *mk_len, void **val, size_t *len, bool for_write);

#endif
