/* SPDX-License-Identifier: Apache-2.0 */
/* The in-memory state backend: one open-addressing table per (state, key
 * group), so a key group can be snapshotted, dropped or moved alone and a
 * table grows by 1/K of the state at a time (and incrementally beyond a
 * small size). See docs/state.md for the memory layout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "sluice/common.h"
#include "state/hashmap.h"

hm_mentry sl__hm_mtomb;
uint8_t sl__hm_no_ctrl[2 * HM_GROUP];

/* Inline key equality: key and ns are at most HM_INL_BYTES, and the
 * common 8-byte key with no namespace is one word compare. */
static inline bool hm_inl_eq(const hm_slot *s, const sl__skey *k) {
  return sl__bytes_eq(s->u.data, k->key, k->key_len) &&
         (!k->ns_len || sl__bytes_eq(s->u.data + k->key_len, k->ns, k->ns_len));
}

static inline bool hm_fits_inline(size_t kl, size_t nl, size_t cap) {
  return hm_voff((uint32_t)kl, (uint32_t)nl) + cap <= HM_INL_BYTES;
}

/* Inlined into each caller: on the per-record path the call and its
 * register saves cost as much as the probe itself. */
static inline __attribute__((always_inline)) hm_slot *
hm_probe(hm_slot *slots, uint8_t bits, const sl__skey *k) {
  size_t mask = hm_mask(bits);
  const uint8_t *ctrl = hm_ctrl_of(slots, bits);
  uint8_t tag = hm_h7(k->hash);
  uint64_t hh = k->hash & HM_HASH_BITS;
  /* What meta is, length of the value aside, for this key stored inline;
   * all ones (no such tag) when the key cannot be inline. */
  uint64_t want =
      k->key_len + k->ns_len <= HM_INL_BYTES
          ? hh | (uint64_t)k->ns_len << 16 | (uint64_t)k->key_len << 8 | HM_INL
          : ~(uint64_t)0;
  for (size_t i = hm_idx(k->hash, bits);; i = (i + HM_GROUP) & mask) {
    uint32_t empty = hm_group_empty(ctrl + i);
    uint32_t m = hm_before_empty(hm_group_match(ctrl + i, tag), empty);
    for (; m; m &= m - 1) {
      hm_slot *s = &slots[(i + (size_t)__builtin_ctz(m)) & mask];
      uint64_t sm = s->meta;
      if ((sm & ~(HM_VLEN_BITS | HM_CLEAN)) == want) {
        if (SL__LIKELY(hm_inl_eq(s, k)))
          return s;
      } else if ((sm & (HM_HASH_BITS | 0x7f)) == (hh | HM_EXT) &&
                 hm_eq(s->u.e, k)) {
        return s;
      }
    }
    if (empty)
      return NULL;
  }
}

/* Index of the empty slot where an entry of hash, known to be absent,
 * goes in an array without tombstones; takes it with the entry's tag. */
static size_t hm_place(hm_slot *slots, uint8_t bits, uint64_t hash,
                       uint8_t tag) {
  size_t n = (size_t)1 << bits, mask = n - 1;
  uint8_t *ctrl = hm_ctrl_of(slots, bits);
  for (size_t i = hm_idx(hash, bits);; i = (i + HM_GROUP) & mask) {
    uint32_t empty = hm_group_empty(ctrl + i);
    if (empty) {
      size_t j = (i + (size_t)__builtin_ctz(empty)) & mask;
      hm_ctrl_set(ctrl, n, j, tag);
      return j;
    }
  }
}

/* Slots and their control bytes in one allocation, zeroed (all empty). */
static hm_slot *hm_slots_new(uint8_t bits) {
  size_t n = (size_t)1 << bits;
  size_t sz = n * sizeof(hm_slot) + n + HM_GROUP;
  sz = (sz + HM_SLOT_ALIGN - 1) & ~(size_t)(HM_SLOT_ALIGN - 1);
  /* Cache-line aligned, so that no slot straddles two lines. */
  hm_slot *s = aligned_alloc(HM_SLOT_ALIGN, sz);
  if (s)
    memset(s, 0, sz);
  return s;
}

static void hm_table_set(hm_table *t, hm_slot *slots, uint8_t bits) {
  t->slots = slots;
  t->bits = bits;
  t->ctrl = hm_ctrl_of(slots, bits);
  t->mask = hm_mask(bits);
  t->shift = (uint8_t)(64 - bits);
}

static void hm_migrate(hm *b, hm_table *t, size_t n) {
  size_t cap = (size_t)1 << t->old_bits;
  uint8_t *octrl = hm_ctrl_of(t->old, t->old_bits);
  bool moved = false;
  while (n-- && t->old_count && t->mig < cap) {
    size_t i = t->mig++;
    hm_slot *s = &t->old[i];
    if (hm_live(s)) {
      t->slots[hm_place(t->slots, t->bits, s->meta, octrl[i])] = *s;
      t->count++;
      t->old_count--;
      /* A tombstone, not empty: probes for entries still in old must
       * walk past this slot. */
      s->meta = HM_TOMB;
      hm_ctrl_set(octrl, cap, i, HM_CTRL_TOMB);
      moved = true;
    }
  }
  if (moved) /* inline values handed out before now live elsewhere */
    b->base.epoch++;
  if (!t->old_count) {
    free(t->old);
    t->old = NULL;
  }
}

/* Lookup while the table grows: both arrays, after a migration step. */
static __attribute__((noinline)) hm_slot *
hm_find_growing(hm *b, hm_table *t, const sl__skey *k, bool *in_old) {
  hm_migrate(b, t, HM_MIGRATE);
  if (!t->old)
    return hm_probe(t->slots, t->bits, k);
  hm_slot *s = hm_probe(t->slots, t->bits, k);
  if (!s) {
    s = hm_probe(t->old, t->old_bits, k);
    *in_old = s != NULL;
  }
  return s;
}

static inline __attribute__((always_inline)) hm_slot *
hm_find(hm *b, hm_table *t, const sl__skey *k, bool *in_old) {
  *in_old = false;
  if (SL__UNLIKELY(t->old != NULL))
    return hm_find_growing(b, t, k, in_old);
  return t->slots ? hm_probe(t->slots, t->bits, k) : NULL;
}

hm_slot *sl__hm_find(hm *b, hm_table *t, const sl__skey *k, bool *in_old) {
  return hm_find(b, t, k, in_old);
}

static int hm_grow(hm *b, hm_table *t) {
  if (t->old)
    hm_migrate(b, t, SIZE_MAX);
  uint8_t nb = t->slots ? (uint8_t)(t->bits + 1) : HM_MIN_BITS;
  if (nb > HM_MAX_BITS) /* meta keeps 32 bits of hash for the index */
    return SL_ERR_NOMEM;
  hm_slot *ns = hm_slots_new(nb);
  if (!ns)
    return SL_ERR_NOMEM;
  if (t->slots) {
    t->old = t->slots;
    t->old_bits = t->bits;
    t->old_count = t->count;
    t->mig = 0;
  }
  hm_table_set(t, ns, nb);
  t->count = 0;
  if (t->old && t->old_bits <= HM_SMALL_BITS)
    hm_migrate(b, t, SIZE_MAX);
  return 0;
}

/* Load factor 7/8 counting entries not yet migrated, so the new array
 * has room for all of them when the migration ends. 7/8 rather than 3/4:
 * the lookup's cost is whether the slot array stays in cache, and for
 * ~800 keys per table this keeps 1024 slots (32 KiB) instead of 2048;
 * linear probing over 32-byte slots still ends within a line or two. */
static hm_slot *hm_insert(hm *b, hm_table *t, uint64_t hash, int *rc) {
  size_t total = t->count + t->old_count + 1;
  if (!t->slots || total * 8 > ((size_t)7 << t->bits)) {
    if ((*rc = hm_grow(b, t)))
      return NULL;
  }
  t->count++;
  return &t->slots[hm_place(t->slots, t->bits, hash, hm_h7(hash))];
}

/* Removes slot s. In the live array: backward-shift deletion (no
 * tombstones, so probe lengths do not decay over time). */
static void hm_unlink(hm_table *t, hm_slot *s, bool in_old) {
  if (in_old) {
    size_t i = (size_t)(s - t->old);
    s->meta = HM_TOMB;
    hm_ctrl_set(hm_ctrl_of(t->old, t->old_bits), (size_t)1 << t->old_bits, i,
                HM_CTRL_TOMB);
    if (!--t->old_count) {
      free(t->old);
      t->old = NULL;
    }
    return;
  }
  size_t n = t->mask + 1, i = (size_t)(s - t->slots), j = i;
  for (;;) {
    j = (j + 1) & t->mask;
    if (!t->ctrl[j])
      break;
    size_t h = hm_idx(t->slots[j].meta, t->bits);
    /* The entry at j may fill the hole at i unless its home h lies
     * cyclically in (i, j]. */
    bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
    if (!stays) {
      t->slots[i] = t->slots[j];
      hm_ctrl_set(t->ctrl, n, i, t->ctrl[j]);
      i = j;
    }
  }
  memset(&t->slots[i], 0, sizeof(hm_slot));
  hm_ctrl_set(t->ctrl, n, i, 0);
  t->count--;
}

/* ---- Entries ------------------------------------------------------------ */

static hm_entry *hm_entry_new(const void *key, size_t kl, const void *ns,
                              size_t nl, size_t cap) {
  size_t vo = hm_voff((uint32_t)kl, (uint32_t)nl);
  hm_entry *e = malloc(sizeof(*e) + vo + cap);
  if (!e)
    return NULL;
  e->key_len = (uint32_t)kl;
  e->ns_len = (uint32_t)nl;
  e->val_len = 0;
  e->val_cap = (uint32_t)cap;
  if (kl)
    memcpy(e->data, key, kl);
  if (nl)
    memcpy(e->data + kl, ns, nl);
  memset(e->data + kl + nl, 0, vo - kl - nl + cap);
  return e;
}

/* Makes the entry in slot s hold cap value bytes (cap larger than it
 * holds): an inline entry moves out of line, keeping its value bytes. */
static bool hm_entry_grow(hm *b, hm_slot *s, size_t cap) {
  if (hm_tag(s) == HM_INL) {
    uint32_t kl = hm_klen(s), nl = hm_nlen(s), vl = hm_vlen(s);
    hm_entry *e = hm_entry_new(s->u.data, kl, s->u.data + kl, nl, cap);
    if (!e)
      return false;
    e->val_len = vl;
    memcpy(hm_val(e), s->u.data + hm_voff(kl, nl), vl);
    s->meta = (s->meta & (HM_HASH_BITS | HM_CLEAN)) | HM_EXT;
    memset(s->u.data, 0, sizeof(s->u.data));
    s->u.e = e;
  } else {
    hm_entry *e = s->u.e;
    size_t vo = hm_voff(e->key_len, e->ns_len);
    hm_entry *n = realloc(e, sizeof(*e) + vo + cap);
    if (!n)
      return false;
    n->val_cap = (uint32_t)cap;
    s->u.e = n;
  }
  b->base.epoch++;
  return true;
}

static size_t hm_cap(const hm_slot *s) {
  if (hm_tag(s) == HM_EXT)
    return s->u.e->val_cap;
  return HM_INL_BYTES - hm_voff(hm_klen(s), hm_nlen(s));
}

bool sl__hm_key_ok(const sl__skey *k, size_t len) {
  return k->key_len <= UINT32_MAX && k->ns_len <= UINT32_MAX &&
         len <= UINT32_MAX - 64;
}

/* Frees what slot s owns, and takes it out of the stats. */
static void hm_entry_free(hm_state *st, hm_slot *s) {
  if (st->type == SL__BT_MAP) {
    sl__hm_map_free(st, s);
  } else {
    st->stats.entries--;
    st->stats.bytes -= (uint64_t)hm_klen(s) + hm_nlen(s) + hm_vlen(s);
  }
  if (hm_tag(s) == HM_EXT)
    free(s->u.e);
}

void sl__hm_remove(hm *b, hm_state *st, hm_table *t, hm_slot *s, bool in_old) {
  hm_entry_free(st, s);
  hm_unlink(t, s, in_old);
  b->base.epoch++;
}

/* Creates an entry of value length len (capacity at least cap), inline
 * when it fits, and inserts it. */
hm_slot *sl__hm_create(hm *b, hm_state *st, hm_table *t, const sl__skey *k,
                       size_t len, size_t cap, int *rc) {
  bool inl = hm_fits_inline(k->key_len, k->ns_len, cap);
  hm_entry *e = NULL;
  if (!inl && !(e = hm_entry_new(k->key, k->key_len, k->ns, k->ns_len, cap))) {
    *rc = SL_ERR_NOMEM;
    return NULL;
  }
  hm_slot *s = hm_insert(b, t, k->hash, rc);
  if (!s) {
    free(e);
    return NULL;
  }
  uint64_t hh = k->hash & HM_HASH_BITS;
  if (inl) {
    s->meta = hh | (uint64_t)len << 24 | (uint64_t)k->ns_len << 16 |
              (uint64_t)k->key_len << 8 | HM_INL;
    /* The slot is zeroed: copy the key and ns, the value stays 0. */
    if (k->key_len)
      memcpy(s->u.data, k->key, k->key_len);
    if (k->ns_len)
      memcpy(s->u.data + k->key_len, k->ns, k->ns_len);
  } else {
    e->val_len = (uint32_t)len;
    s->meta = hh | HM_EXT;
    s->u.e = e;
  }
  if (st->type != SL__BT_MAP) {
    st->stats.entries++;
    st->stats.bytes += (uint64_t)k->key_len + k->ns_len + len;
  }
  if (b->kg_known)
    sl__hm_log(b, st, k->kg, k->key, k->key_len, k->ns, k->ns_len);
  return s;
}

/* ---- Values and lists --------------------------------------------------- */

/* sl__hm_probe8 for k when its key has 8 bytes and its namespace none or
 * 8 (else NULL): an inline entry whose meta's low bits, masked by
 * want_mask, are its lengths and tag (so want_mask leaves out the value
 * length, and may leave out the clean bit). */
static inline __attribute__((always_inline)) hm_slot *
hm_probe_key8(const hm_table *t, const sl__skey *k, uint32_t want_mask) {
  if (SL__UNLIKELY(k->key_len != 8))
    return NULL;
  if (k->ns_len == 0)
    return sl__hm_probe8(t, k->key, NULL, k->hash, 0, 8u << 8 | HM_INL,
                         want_mask);
  if (k->ns_len == 8)
    return sl__hm_probe8(t, k->key, k->ns, k->hash, 8,
                         8u << 16 | 8u << 8 | HM_INL, want_mask);
  return NULL;
}

/* hm_get's general case: entries not yet migrated, keys that are not
 * inline, an entry not found by sl__hm_probe8 (absent, out of line, or
 * marked clean since the last checkpoint, which is logged here). */
static __attribute__((noinline)) int hm_get_any(sl__backend *be,
                                                const sl__skey *k, void **val,
                                                size_t *len, bool for_write) {
  hm *b = (hm *)be;
  hm_state *st = hm_st(b, k->state);
  hm_table *t = hm_tab(b, st, k->kg);
  bool old;
  hm_slot *s = hm_find(b, t, k, &old);
  if (!s)
    return 0;
  if (for_write) /* entries are modified in place */
    hm_touch(b, st, k->kg, s);
  *val = hm_sval(s);
  *len = hm_vlen(s);
  return 1;
}

/* A read, for a value of any length: sl__hm_probe8 compares lengths and tag
 * but not the value length (meta's low 24 bits), and an entry marked clean
 * misses it (its tag byte differs) and is logged by the general path.
 * Kept a leaf but for the tail call to the general path. */
static int hm_get(sl__backend *be, const sl__skey *k, void **val, size_t *len,
                  bool for_write) {
  hm *b = (hm *)be;
  const hm_table *t = hm_tab_fast(b, hm_st(b, k->state), k->kg);
  hm_slot *s = hm_probe_key8(t, k, 0xffffff);
  if (SL__LIKELY(s != NULL)) {
    *val = s->u.data + 8 + k->ns_len;
    *len = (uint32_t)(s->meta >> 24) & 0xff;
    return 1;
  }
  return hm_get_any(be, k, val, len, for_write);
}

/* hm_slot_get's general case: entries not yet migrated, keys that are not
 * inline, another value length (resize, out of line), creation. */
static __attribute__((noinline)) int
hm_slot_any(sl__backend *be, const sl__skey *k, size_t len, void **out) {
  hm *b = (hm *)be;
  hm_state *st = hm_st(b, k->state);
  hm_table *t = hm_tab(b, st, k->kg);
  bool old;
  hm_slot *s = hm_find(b, t, k, &old);
  if (!sl__hm_key_ok(k, len))
    return SL_ERR_RANGE;
  if (s) {
    hm_touch(b, st, k->kg, s); /* the caller writes through the slot */
    size_t vl = hm_vlen(s);
    if (len == vl) {
      *out = hm_sval(s);
      return 1;
    }
    if (len > hm_cap(s) && !hm_entry_grow(b, s, (len + 7) & ~(size_t)7))
      return SL_ERR_NOMEM;
    st->stats.bytes = st->stats.bytes - vl + len;
    hm_set_vlen(s, len);
    *out = hm_sval(s);
    return 2;
  }
  int rc;
  if (!(s = sl__hm_create(b, st, t, k, len, len, &rc)))
    return rc;
  *out = hm_sval(s);
  return 0;
}

/* The per-record lookup, kept a leaf (its only call is the tail call to
 * the general path): an inline entry of an 8-byte key (with no namespace
 * or an 8-byte one, a window) and the same value length is found by
 * sl__hm_probe8. Anything else (a key not found before an empty slot,
 * another value length, other key lengths, an entry not yet migrated)
 * goes the general way, which also creates. */
static int hm_slot_get(sl__backend *be, const sl__skey *k, size_t len,
                       void **out) {
  hm *b = (hm *)be;
  const hm_table *t = hm_tab_fast(b, hm_st(b, k->state), k->kg);
  if (SL__LIKELY(k->key_len == 8)) {
    hm_slot *s = NULL;
    if (k->ns_len == 0 && len <= HM_INL_BYTES - 8)
      s = sl__hm_probe8(t, k->key, NULL, k->hash, 0,
                        (uint32_t)len << 24 | 8u << 8 | HM_INL, 0xffffffff);
    else if (k->ns_len == 8 && len <= HM_INL_BYTES - 16)
      s = sl__hm_probe8(t, k->key, k->ns, k->hash, 8,
                        (uint32_t)len << 24 | 8u << 16 | 8u << 8 | HM_INL,
                        0xffffffff);
    if (SL__LIKELY(s != NULL)) {
      *out = s->u.data + 8 + k->ns_len;
      return 1;
    }
  }
  return hm_slot_any(be, k, len, out);
}

/* An entry that the per-record probe can find (an inline 8-byte key with
 * no namespace or an 8-byte one, a table not growing) is found by it,
 * whatever its value length and whether changed since the last
 * snapshot or not (want_mask leaves out both); anything else, and a
 * probe that misses, by the general find. */
int sl__hm_del(sl__backend *be, const sl__skey *k) {
  hm *b = (hm *)be;
  hm_state *st = hm_st(b, k->state);
  hm_table *t = hm_tab(b, st, k->kg);
  bool old = false;
  hm_slot *s = t->old ? NULL : hm_probe_key8(t, k, 0xffff7f);
  if (!s)
    s = sl__hm_find(b, t, k, &old);
  if (!s)
    return 0;
  hm_touch(b, st, k->kg, s);
  sl__hm_remove(b, st, t, s, old);
  return 1;
}

static void hm_frame_hdr(unsigned char *p, size_t len) {
  uint32_t l = (uint32_t)len;
  memcpy(p, &l, 4);
  memset(p + 4, 0, 4);
}

static int hm_list_append(sl__backend *be, const sl__skey *k, size_t len,
                          void **out) {
  hm *b = (hm *)be;
  if (len > UINT32_MAX || !sl__hm_key_ok(k, sl__list_frame(len)))
    return SL_ERR_RANGE;
  hm_state *st = hm_st(b, k->state);
  hm_table *t = hm_tab(b, st, k->kg);
  size_t fl = sl__list_frame(len);
  bool old;
  hm_slot *s = sl__hm_find(b, t, k, &old);
  if (!s) {
    int rc;
    /* Lists start at 64 bytes, so they always live out of line. */
    if (!(s = sl__hm_create(b, st, t, k, fl, fl < 64 ? 64 : fl, &rc)))
      return rc;
    hm_frame_hdr(hm_sval(s), len);
    *out = hm_sval(s) + SL__LIST_HDR;
    return 0;
  }
  hm_touch(b, st, k->kg, s);
  size_t vl = hm_vlen(s), need = vl + fl;
  if (need > UINT32_MAX - 64)
    return SL_ERR_RANGE;
  if (need > hm_cap(s)) {
    /* Doubling keeps appends amortized O(1). */
    size_t cap = hm_cap(s) * 2;
    if (cap < need)
      cap = need;
    if (cap > UINT32_MAX - 64)
      cap = need;
    if (!hm_entry_grow(b, s, cap))
      return SL_ERR_NOMEM;
  }
  unsigned char *p = hm_sval(s) + vl;
  hm_frame_hdr(p, len);
  memset(p + SL__LIST_HDR, 0, fl - SL__LIST_HDR);
  hm_set_vlen(s, need);
  st->stats.bytes += fl;
  *out = p + SL__LIST_HDR;
  return 1;
}

/* ---- Key groups: snapshots, restore, rescaling -------------------------- */

int sl__hm_scan_entry(uint32_t id, sl__btype type, hm_slot *s, sl__entry_fn fn,
                      void *opaque) {
  uint32_t kl = hm_klen(s), nl = hm_nlen(s);
  const unsigned char *key = hm_key(s), *ns = key + kl;
  if (type != SL__BT_MAP)
    return fn(id, key, kl, ns, nl, NULL, 0, hm_sval(s), hm_vlen(s), opaque);
  hm_map *m = hm_map_of(s);
  size_t cap = m->slots ? (size_t)1 << m->bits : 0;
  for (size_t i = 0; i < cap; i++) {
    hm_mentry *me = m->slots[i].e;
    if (!me || me == HM_MTOMB)
      continue;
    int rc = fn(id, key, kl, ns, nl, me->data, me->mk_len, hm_mval(me),
                me->val_len, opaque);
    if (rc)
      return rc;
  }
  return 0;
}

int sl__hm_scan_table(uint32_t id, sl__btype type, const hm_table *t,
                      sl__entry_fn fn, void *opaque) {
  hm_slot *arrs[2] = {t->slots, t->old};
  uint8_t bits[2] = {t->bits, t->old_bits};
  for (int a = 0; a < 2; a++) {
    size_t cap = arrs[a] ? (size_t)1 << bits[a] : 0;
    for (size_t i = 0; i < cap; i++) {
      if (!hm_live(&arrs[a][i]))
        continue;
      int rc = sl__hm_scan_entry(id, type, &arrs[a][i], fn, opaque);
      if (rc)
        return rc;
    }
  }
  return 0;
}

static int hm_kg_scan(sl__backend *be, uint32_t kg, sl__entry_fn fn,
                      void *opaque) {
  hm *b = (hm *)be;
  if (kg < be->kg_lo || kg >= be->kg_hi)
    return SL_ERR_RANGE;
  for (uint32_t id = 0; id < b->n_states; id++) {
    hm_state *st = &b->states[id];
    int rc = sl__hm_scan_table(id, st->type, hm_tab(b, st, kg), fn, opaque);
    if (rc)
      return rc;
  }
  return 0;
}

static void hm_reserve(sl__backend *be, uint32_t state, uint32_t kg, size_t n) {
  hm *b = (hm *)be;
  if (kg < be->kg_lo || kg >= be->kg_hi || state >= b->n_states)
    return;
  hm_table *t = hm_tab(b, hm_st(b, state), kg);
  /* Grow (finishing migrations) until n more entries fit at load 7/8. */
  while ((t->count + t->old_count + n) * 8 > ((size_t)7 << t->bits) ||
         !t->slots) {
    if (hm_grow(b, t))
      return; /* a hint: inserting will report the error */
  }
  if (t->old)
    hm_migrate(b, t, SIZE_MAX);
}

static int hm_insert_raw(sl__backend *be, uint32_t state, uint32_t kg,
                         const void *key, size_t key_len, const void *ns,
                         size_t ns_len, const void *mk, size_t mk_len,
                         const void *val, size_t len) {
  hm *b = (hm *)be;
  if (kg < be->kg_lo || kg >= be->kg_hi)
    return SL_ERR_RANGE;
  if (state >= b->n_states || (b->states[state].type == SL__BT_MAP) != !!mk)
    return SL_ERR_INVAL;
  uint64_t kh = sl__hash64(key, key_len);
  /* Data from a checkpoint: an entry in the wrong key group would never be
   * found again. */
  if (sl__backend_key_group(be, key, key_len, kh) != kg)
    return SL_ERR_CORRUPT;
  sl__skey k = {state, kg,    sl__state_hash(kh, ns, ns_len), key, key_len,
                ns,    ns_len};
  void *slot;
  int rc = mk ? sl__hm_map_slot(be, &k, mk, mk_len, sl__hash64(mk, mk_len), len,
                                &slot)
              : hm_slot_get(be, &k, len, &slot);
  if (rc < 0)
    return rc;
  if (len)
    memcpy(slot, val, len);
  return 0;
}

static void hm_table_free(hm_state *st, hm_table *t) {
  hm_slot *arrs[2] = {t->slots, t->old};
  uint8_t bits[2] = {t->bits, t->old_bits};
  for (int a = 0; a < 2; a++) {
    size_t cap = arrs[a] ? (size_t)1 << bits[a] : 0;
    for (size_t i = 0; i < cap; i++)
      if (hm_live(&arrs[a][i]))
        hm_entry_free(st, &arrs[a][i]);
    free(arrs[a]);
  }
  hm_table_init(t);
}

static void hm_kg_forget(hm *b, uint32_t g, bool hot);

static void hm_kg_drop(sl__backend *be, uint32_t kg, const bool *states) {
  hm *b = (hm *)be;
  if (kg < be->kg_lo || kg >= be->kg_hi)
    return;
  for (uint32_t id = 0; id < b->n_states; id++)
    if (!states || states[id])
      hm_table_free(&b->states[id], hm_tab(b, &b->states[id], kg));
  /* What the key group had is gone, not changed entry by entry. */
  if (b->kg_known)
    hm_kg_forget(b, kg - be->kg_lo, false);
  be->epoch++;
}

static void hm_stats(const sl__backend *be, uint32_t state,
                     sl__state_stats *out) {
  const hm *b = (const hm *)be;
  if (state < b->n_states)
    *out = b->states[state].stats;
  else
    memset(out, 0, sizeof(*out));
}

/* ---- Incremental TTL cleanup -------------------------------------------- */

/* Cleans one entry; returns the items removed and sets *gone when the
 * entry itself was removed (its slot may now hold a shifted entry). */
static size_t hm_clean(hm *b, hm_state *st, uint32_t kg, hm_table *t,
                       hm_slot *s, sl__expired_fn expired, void *opaque,
                       bool *gone) {
  size_t removed = 0;
  *gone = false;
  if (st->type == SL__BT_VALUE) {
    if (!expired(hm_sval(s), hm_vlen(s), opaque))
      return 0;
    hm_touch(b, st, kg, s);
    sl__hm_remove(b, st, t, s, false);
    *gone = true;
    return 1;
  }
  if (st->type == SL__BT_LIST) {
    size_t vl = hm_vlen(s);
    unsigned char *p = hm_sval(s), *w = p, *end = p + vl;
    while (p + SL__LIST_HDR <= end) {
      size_t l = sl__list_elem_len(p), fl = sl__list_frame(l);
      if (expired(p + SL__LIST_HDR, l, opaque)) {
        removed++;
      } else {
        if (w != p)
          memmove(w, p, fl);
        w += fl;
      }
      p += fl;
    }
    if (!removed)
      return 0;
    hm_touch(b, st, kg, s);
    size_t nl = (size_t)(w - hm_sval(s));
    if (!nl) {
      sl__hm_remove(b, st, t, s, false);
      *gone = true;
      return removed;
    }
    st->stats.bytes -= vl - nl;
    hm_set_vlen(s, nl);
    b->base.epoch++;
    return removed;
  }
  hm_map *m = hm_map_of(s);
  uint64_t kn = (uint64_t)hm_klen(s) + hm_nlen(s);
  size_t cap = m->slots ? (size_t)1 << m->bits : 0;
  for (size_t i = 0; i < cap; i++) {
    hm_mentry *me = m->slots[i].e;
    if (!me || me == HM_MTOMB || !expired(hm_mval(me), me->val_len, opaque))
      continue;
    hm_touch(b, st, kg, s);
    st->stats.entries--;
    st->stats.bytes -= kn + me->mk_len + me->val_len;
    free(me);
    m->slots[i].e = HM_MTOMB;
    m->count--;
    removed++;
  }
  if (removed)
    b->base.epoch++;
  if (!m->count) {
    sl__hm_remove(b, st, t, s, false);
    *gone = true;
  }
  return removed;
}

static size_t hm_cleanup(sl__backend *be, uint32_t state, size_t budget,
                         sl__expired_fn expired, void *opaque) {
  hm *b = (hm *)be;
  hm_state *st = hm_st(b, state);
  size_t removed = 0, visited = 0, scanned = 0;
  /* At most one pass over every table: a slot is scanned once, plus once
   * more after a removal shifted an entry into it, plus a step per key
   * group. A full cleanup (budget SIZE_MAX, on snapshot) ends there, and
   * budget * HM_SCAN_FACTOR must not wrap around to a short scan. */
  size_t max_scan = budget < (SIZE_MAX - b->n_kg) / HM_SCAN_FACTOR
                        ? budget * HM_SCAN_FACTOR + b->n_kg
                        : SIZE_MAX;
  if (budget >= st->stats.entries) {
    size_t pass = b->n_kg;
    for (uint32_t g = 0; g < b->n_kg; g++)
      pass += st->tables[g].slots ? (size_t)2 << st->tables[g].bits : 0;
    if (pass < max_scan)
      max_scan = pass;
  }
  /* Entries still in an old array are skipped: they are migrated soon
   * and visited on a later round. */
  while (visited < budget && scanned < max_scan) {
    hm_table *t = &st->tables[st->cur_kg];
    if (t->frozen)
      sl__hm_thaw(b, st->cur_kg);
    size_t cap = t->slots ? (size_t)1 << t->bits : 0;
    scanned++;
    if (st->cur_slot >= cap) {
      st->cur_slot = 0;
      st->cur_kg = st->cur_kg + 1 < b->n_kg ? st->cur_kg + 1 : 0;
      continue;
    }
    hm_slot *s = &t->slots[st->cur_slot];
    if (!s->meta) {
      st->cur_slot++;
      continue;
    }
    bool gone;
    visited++;
    removed += hm_clean(b, st, b->base.kg_lo + st->cur_kg, t, s, expired,
                        opaque, &gone);
    if (!gone) /* else look at what shifted into this slot */
      st->cur_slot++;
  }
  return removed;
}

/* ---- Change tracking for incremental snapshots -------------------------- */

/* Invariant, per key group whose changes are known (kg_known): an entry
 * without HM_CLEAN has its key in its state's log (or was created since
 * and logged then), and a removed entry was logged before it went. So
 * the log names every (key, ns) whose stored bytes may differ from what
 * the last snapshot recorded, and nothing else needs looking at. */

static int hm_dlog_put(hm_dlog *l, const void *key, size_t kl, const void *ns,
                       size_t nl) {
  size_t need = 8 + kl + nl;
  int rc = sl__buf_reserve(&l->b, need);
  if (rc)
    return rc;
  unsigned char *p = l->b.data + l->b.len;
  uint32_t a = (uint32_t)kl, c = (uint32_t)nl;
  memcpy(p, &a, 4);
  memcpy(p + 4, &c, 4);
  if (kl)
    memcpy(p + 8, key, kl);
  if (nl)
    memcpy(p + 8 + kl, ns, nl);
  l->b.len += need;
  l->n++;
  return 0;
}

static void hm_dlog_reset(hm_dlog *l) {
  if (l->b.cap > 65536) /* a burst of changes need not stay allocated */
    sl__buf_free(&l->b);
  l->b.len = l->n = 0;
}

static void hm_table_mark(hm_table *t, bool clean) {
  hm_slot *arrs[2] = {t->slots, t->old};
  uint8_t bits[2] = {t->bits, t->old_bits};
  for (int a = 0; a < 2; a++) {
    size_t cap = arrs[a] ? (size_t)1 << bits[a] : 0;
    for (size_t i = 0; i < cap; i++)
      if (hm_live(&arrs[a][i])) {
        if (clean)
          arrs[a][i].meta |= HM_CLEAN;
        else
          arrs[a][i].meta &= ~(uint64_t)HM_CLEAN;
      }
  }
}

/* A key group that outgrew its log (hot) in k tracked intervals in a row
 * is written whole, untracked, for the next 2^(min(k, HM_HEAT_MAX) - 1)
 * snapshots too: under updates spread over every key, as at a checkpoint
 * a second over a state that fits in memory, each interval changes most
 * entries again, and tracking them (a clean mark per entry, a log entry
 * per first write, then a pass to drop both when the log gives up) costs
 * the worker a few percent for a log that is thrown away. An interval
 * that stays under the log's limit resets the count. */
#define HM_HEAT_MAX 4 /* rests of 1, 2, 4, then 8 snapshots */

int sl__hm_kg_init(hm *b) {
  if (b->kg_known)
    return 0;
  uint8_t *p = calloc(3 * (size_t)b->n_kg, 1);
  if (!p)
    return SL_ERR_NOMEM;
  b->kg_known = p;
  b->kg_heat = p + b->n_kg;
  b->kg_rest = p + 2 * (size_t)b->n_kg;
  return 0;
}

/* Key group g (relative) is written whole next time: its logs go, and so
 * do its entries' clean marks, so that writes to them take the
 * per-record fast path again instead of being logged for nothing. hot:
 * because it changed too much (it rests, above), not because its log or
 * its entries are gone. */
static void hm_kg_forget(hm *b, uint32_t g, bool hot) {
  b->kg_known[g] = 0;
  if (hot) {
    if (b->kg_heat[g] < HM_HEAT_MAX)
      b->kg_heat[g]++;
    b->kg_rest[g] = (uint8_t)(1u << (b->kg_heat[g] - 1));
  }
  for (uint32_t id = 0; id < b->n_states; id++) {
    hm_state *st = &b->states[id];
    hm_table_mark(&st->tables[g], false);
    if (st->dlog) {
      sl__buf_free(&st->dlog[g].b);
      st->dlog[g].n = 0;
    }
  }
}

void sl__hm_log(hm *b, hm_state *st, uint32_t kg, const void *key,
                size_t key_len, const void *ns, size_t ns_len) {
  uint32_t g = kg - b->base.kg_lo;
  if (!b->kg_known || !b->kg_known[g])
    return;
  if (!st->dlog && !(st->dlog = calloc(b->n_kg, sizeof(*st->dlog)))) {
    hm_kg_forget(b, g, false); /* written whole by the next snapshot */
    return;
  }
  hm_dlog *l = &st->dlog[g];
  const hm_table *t = &st->tables[g];
  /* Once half the table changed, writing the key group whole costs about
   * the same bytes and less time (one sequential scan instead of a
   * lookup per key): stop recording it. This also bounds the log under
   * churn (keys created and removed over and over). */
  if (l->n >= 64 && 2 * l->n > t->count + t->old_count)
    hm_kg_forget(b, g, true);
  else if (hm_dlog_put(l, key, key_len, ns, ns_len))
    hm_kg_forget(b, g, false);
}

void sl__hm_dirty(hm *b, hm_state *st, uint32_t kg, hm_slot *s) {
  s->meta &= ~(uint64_t)HM_CLEAN;
  uint32_t kl = hm_klen(s);
  sl__hm_log(b, st, kg, hm_key(s), kl, hm_key(s) + kl, hm_nlen(s));
}

void sl__hm_mark_clean(hm_table *t, hm_dlog *l) {
  if (t)
    hm_table_mark(t, true);
  if (l)
    hm_dlog_reset(l);
}

static int hm_kg_clean(sl__backend *be, uint32_t kg) {
  hm *b = (hm *)be;
  if (kg < be->kg_lo || kg >= be->kg_hi)
    return SL_ERR_RANGE;
  int rc = sl__hm_kg_init(b);
  if (rc)
    return rc;
  uint32_t g = kg - be->kg_lo;
  for (uint32_t id = 0; id < b->n_states; id++) {
    hm_state *st = &b->states[id];
    sl__hm_mark_clean(hm_tab(b, st, kg), st->dlog ? &st->dlog[g] : NULL);
  }
  b->kg_known[g] = 1;
  b->kg_rest[g] = 0; /* asked to track: no rest */
  return 0;
}

static int hm_kg_changes(sl__backend *be, uint32_t kg, sl__entry_fn fn,
                         void *opaque) {
  hm *b = (hm *)be;
  if (kg < be->kg_lo || kg >= be->kg_hi)
    return SL_ERR_RANGE;
  uint32_t g = kg - be->kg_lo;
  if (b->n_states)
    hm_tab(b, &b->states[0], kg); /* takes a frozen kg back */
  if (!b->kg_known || !b->kg_known[g])
    return 1;
  b->kg_heat[g] = 0; /* an interval within the log's limit */
  for (uint32_t id = 0; id < b->n_states; id++) {
    hm_state *st = &b->states[id];
    hm_dlog *l = st->dlog ? &st->dlog[g] : NULL;
    for (size_t off = 0; l && off < l->b.len;) {
      uint32_t kl, nl;
      memcpy(&kl, l->b.data + off, 4);
      memcpy(&nl, l->b.data + off + 4, 4);
      const unsigned char *key = l->b.data + off + 8, *ns = key + kl;
      off += 8 + (size_t)kl + nl;
      sl__skey k = {
          id, kg, sl__state_hash(sl__hash64(key, kl), ns, nl), key, kl, ns, nl};
      bool old;
      hm_slot *s = sl__hm_find(b, &st->tables[g], &k, &old);
      if (s && (s->meta & HM_CLEAN))
        continue; /* logged twice (removed, created again): reported */
      int rc = 0;
      /* Absent: removed. A map is replaced whole: cleared, then each of
       * its entries. */
      if (!s || st->type == SL__BT_MAP)
        rc = fn(id, key, kl, ns, nl, NULL, 0, NULL, 0, opaque);
      if (!rc && s) {
        s->meta |= HM_CLEAN;
        rc = sl__hm_scan_entry(id, st->type, s, fn, opaque);
      }
      if (rc)
        return rc;
    }
    if (l)
      hm_dlog_reset(l);
  }
  return 0;
}

/* ---- Registry and lifecycle --------------------------------------------- */

static int hm_register(sl__backend *be, const char *name, sl__btype type,
                       uint32_t *id) {
  hm *b = (hm *)be;
  for (uint32_t i = 0; i < b->n_states; i++) {
    if (strcmp(b->states[i].name, name) == 0) {
      if (b->states[i].type != type)
        return SL_ERR_INVAL;
      *id = i;
      return 0;
    }
  }
  if (b->n_states == b->cap_states) {
    uint32_t cap = b->cap_states ? b->cap_states * 2 : 8;
    hm_state *n = realloc(b->states, cap * sizeof(*n));
    if (!n)
      return SL_ERR_NOMEM;
    b->states = n;
    b->cap_states = cap;
  }
  hm_state *st = &b->states[b->n_states];
  memset(st, 0, sizeof(*st));
  st->type = type;
  st->name = sl__strdup(name);
  st->tables = malloc((b->n_kg ? b->n_kg : 1) * sizeof(*st->tables));
  if (!st->name || !st->tables) {
    free(st->name);
    free(st->tables);
    return SL_ERR_NOMEM;
  }
  for (uint32_t g = 0; g < b->n_kg; g++)
    hm_table_init(&st->tables[g]);
  *id = b->n_states++;
  return 0;
}

static uint32_t hm_state_count(const sl__backend *be) {
  return ((const hm *)be)->n_states;
}

static int hm_state_info(const sl__backend *be, uint32_t id, const char **name,
                         sl__btype *type) {
  const hm *b = (const hm *)be;
  if (id >= b->n_states)
    return SL_ERR_NOTFOUND;
  *name = b->states[id].name;
  *type = b->states[id].type;
  return 0;
}

static sl__backend *hm_open(const sl__backend_conf *bc, char *err,
                            size_t errlen) {
  if (!bc->max_par || bc->max_par > 65536 || bc->kg_lo >= bc->kg_hi ||
      bc->kg_hi > bc->max_par) {
    sl__errf(err, errlen,
             "hashmap state backend: bad key-group range %u..%u "
             "of %u",
             bc->kg_lo, bc->kg_hi, bc->max_par);
    return NULL;
  }
  hm *b = calloc(1, sizeof(*b));
  if (!b) {
    sl__errf(err, errlen, "hashmap state backend: out of memory");
    return NULL;
  }
  b->base.ops = &sl__hashmap_ops;
  b->base.kg_lo = bc->kg_lo;
  b->base.kg_hi = bc->kg_hi;
  b->base.max_par = bc->max_par;
  b->n_kg = bc->kg_hi - bc->kg_lo;
  return &b->base;
}

static void hm_close(sl__backend *be) {
  hm *b = (hm *)be;
  if (!b)
    return;
  sl__hm_thaw_all(b);
  for (uint32_t id = 0; id < b->n_states; id++) {
    hm_state *st = &b->states[id];
    for (uint32_t g = 0; g < b->n_kg; g++) {
      hm_table_free(st, &st->tables[g]);
      if (st->dlog)
        sl__buf_free(&st->dlog[g].b);
    }
    free(st->dlog);
    free(st->tables);
    free(st->name);
  }
  free(b->states);
  free(b->kg_known);
  free(b);
}

/* For each key: its home group's control bytes and its home slot. */
static void hm_prefetch(sl__backend *be, uint32_t state, const uint64_t *hash,
                        const uint32_t *kg, size_t stride, size_t n) {
  hm *b = (hm *)be;
  if (state >= b->n_states)
    return;
  sl__hm_direct_prefetch_n((uintptr_t)b->states[state].tables -
                               (uintptr_t)be->kg_lo * sizeof(hm_table),
                           true, be->kg_lo, b->n_kg, 0, hash, kg, stride, n);
}

/* The tables of a state, one per owned key group: allocated when the
 * state is registered and freed with the backend, so the address stays
 * valid for the backend's life. */
static const hm_table *hm_direct(sl__backend *be, uint32_t state) {
  hm *b = (hm *)be;
  return state < b->n_states ? b->states[state].tables : NULL;
}

const sl__backend_ops sl__hashmap_ops = {
    .name = "hashmap",
    .open = hm_open,
    .close = hm_close,
    .register_state = hm_register,
    .state_count = hm_state_count,
    .state_info = hm_state_info,
    .get = hm_get,
    .slot = hm_slot_get,
    .del = sl__hm_del,
    .list_append = hm_list_append,
    .map_get = sl__hm_map_get,
    .map_slot = sl__hm_map_slot,
    .map_remove = sl__hm_map_remove,
    .map_iter = sl__hm_map_iter,
    .map_next = sl__hm_map_next,
    .kg_scan = hm_kg_scan,
    .reserve = hm_reserve,
    .insert = hm_insert_raw,
    .kg_drop = hm_kg_drop,
    .stats = hm_stats,
    .cleanup = hm_cleanup,
    .prefetch = hm_prefetch,
    .direct = hm_direct,
    .kg_clean = hm_kg_clean,
    .kg_changes = hm_kg_changes,
    .freeze = sl__hm_freeze,
    .frozen_scan = sl__hm_frozen_scan,
    .frozen_release = sl__hm_frozen_release,
};
