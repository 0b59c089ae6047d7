/* SPDX-License-Identifier: Apache-2.0 */
/* The RocksDB backend's data operations: values, lists and map entries
 * through the write-back cache; map iteration and key-group scans over
 * RocksDB iterators with the cache laid over them; restore inserts,
 * key-group loads from a snapshot and key-group drops. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/common.h"
#include "state/rocksdb_int.h"

/* Map cursors keep their position in sl__map_cursor's two words. */
_Static_assert(sizeof(size_t) == 8 && sizeof(uintptr_t) == 8,
               "map cursors hold a 64-bit hash in size_t and in a pointer");

/* ---- Keys --------------------------------------------------------------- */

int sl__rk_decode(const unsigned char *k, size_t len, bool map, rk_dkey *o) {
  if (len < 2)
    return -1;
  size_t off = 2, n;
  uint32_t kl, nl;
  o->kg = (uint32_t)k[0] << 8 | k[1];
  if (!(n = rk_varint_get(k + off, len - off, &kl)) || len - off - n < kl)
    return -1;
  off += n;
  o->key = k + off;
  o->key_len = kl;
  off += kl;
  if (!(n = rk_varint_get(k + off, len - off, &nl)) || len - off - n < nl)
    return -1;
  off += n;
  o->ns = k + off;
  o->ns_len = nl;
  off += nl;
  if (!map) {
    o->mk = NULL;
    o->mk_len = 0;
    o->mh = 0;
    return off == len ? 0 : -1;
  }
  if (len - off < 8)
    return -1;
  o->mh = rk_get_be64(k + off);
  o->mk = k + off + 8;
  o->mk_len = len - off - 8;
  return 0;
}

size_t sl__rk_encode_into(unsigned char *p, uint32_t kg, const void *key,
                          size_t kl, const void *ns, size_t nl, bool map,
                          uint64_t mh, const void *mk, size_t ml) {
  p[0] = (unsigned char)(kg >> 8);
  p[1] = (unsigned char)kg;
  size_t o = 2 + rk_varint_put(p + 2, (uint32_t)kl);
  if (kl)
    memcpy(p + o, key, kl);
  o += kl;
  o += rk_varint_put(p + o, (uint32_t)nl);
  if (nl)
    memcpy(p + o, ns, nl);
  o += nl;
  if (map) {
    rk_be64(p + o, mh);
    o += 8;
    if (ml)
      memcpy(p + o, mk, ml);
    o += ml;
  }
  return o;
}

size_t sl__rk_encode(rk *b, uint32_t kg, const void *key, size_t kl,
                     const void *ns, size_t nl, bool map, uint64_t mh,
                     const void *mk, size_t ml) {
  size_t need = RK_KEY_MAX(kl, nl, map ? ml : 0);
  if (need > b->kcap) {
    size_t cap = need < 256 ? 256 : need * 2;
    unsigned char *p = realloc(b->kbuf, cap);
    if (!p)
      return 0;
    b->kbuf = p;
    b->kcap = cap;
  }
  return sl__rk_encode_into(b->kbuf, kg, key, kl, ns, nl, map, mh, mk, ml);
}

/* The smallest key after every key that starts with p: p with trailing
 * 0xff bytes dropped and the last byte incremented (length 0: none). */
static size_t successor(const unsigned char *p, size_t n, unsigned char *out) {
  while (n && p[n - 1] == 0xff)
    n--;
  if (!n)
    return 0;
  memcpy(out, p, n);
  out[n - 1]++;
  return n;
}

/* ---- Values and lists --------------------------------------------------- */

int sl__rk_get(sl__backend *be, const sl__skey *k, void **val, size_t *len,
               bool for_write) {
  rk *b = (rk *)be;
  rk_entry *e;
  size_t slot;
  int rc = sl__rk_fetch(b, k, false, 0, NULL, 0, true, 0, &e, &slot);
  if (rc)
    return rc;
  if (!(e->flags & RK_PRESENT))
    return 0;
  if (for_write && (rc = sl__rk_dirty(b, slot, &e)))
    return rc;
  *val = rk_val(e, 0);
  *len = e->val_len;
  return 1;
}

/* slot() beyond the hit of the same length: load, create or resize. */
static __attribute__((noinline)) int slot_slow(rk *b, const sl__skey *k,
                                               size_t len, void **out) {
  if (len > UINT32_MAX - 64)
    return SL_ERR_RANGE;
  rk_entry *e;
  size_t slot;
  int rc = sl__rk_fetch(b, k, false, 0, NULL, 0, true, len, &e, &slot);
  if (!rc)
    rc = sl__rk_own(b, slot, &e);
  if (rc)
    return rc;
  rk_state *st = rk_st(b, k->state);
  int ret = 1;
  size_t vl = e->val_len;
  if (!(e->flags & RK_PRESENT)) {
    if ((rc = sl__rk_reserve(b, slot, &e, len)))
      return rc;
    if (len)
      memset(rk_val(e, 0), 0, len);
    e->flags |= RK_PRESENT;
    e->val_len = (uint32_t)len;
    st->stats.entries++;
    st->stats.bytes += k->key_len + k->ns_len + len;
    ret = 0;
  } else if (len != vl) {
    if ((rc = sl__rk_reserve(b, slot, &e, len)))
      return rc;
    if (len > vl)
      memset(rk_val(e, 0) + vl, 0, len - vl);
    e->val_len = (uint32_t)len;
    st->stats.bytes = st->stats.bytes + len - vl;
    ret = 2;
  }
  if ((rc = sl__rk_dirty(b, SIZE_MAX, &e)))
    return rc;
  *out = rk_val(e, 0);
  return ret;
}

int sl__rk_slot(sl__backend *be, const sl__skey *k, size_t len, void **out) {
  rk *b = (rk *)be;
  /* A backend that has failed fails every access: nothing may pass for
   * success after a lost write. While a snapshot's background part runs,
   * its outcome is taken here as soon as it is known (rk_failed). */
  int rc = rk_failed(b);
  if (rc)
    return rc;
  rk_entry *e;
  size_t i = rk_probe(&b->cache, rk_hash(k), k, false, NULL, 0, &e);
  /* The per-record case: a cached value of the same length, made the
   * worker's (a frozen entry the snapshot's thread has not copied yet is
   * copied first, sl__rk_dirty) unless it is already. */
  if (SL__LIKELY(e && (e->flags & (RK_PRESENT | RK_APPEND)) == RK_PRESENT &&
                 e->val_len == len)) {
    e->wflags |= RK_REF;
    if (!rk_dirty_now(&b->cache, e) && (rc = sl__rk_dirty(b, i, &e)))
      return rc;
    *out = rk_val(e, 0);
    return 1;
  }
  return slot_slow(b, k, len, out);
}

static int map_del(rk *b, const sl__skey *k);

int sl__rk_del(sl__backend *be, const sl__skey *k) {
  rk *b = (rk *)be;
  rk_state *st = rk_st(b, k->state);
  if (st->type == SL__BT_MAP)
    return map_del(b, k);
  rk_entry *e;
  size_t slot;
  int rc = sl__rk_fetch(b, k, false, 0, NULL, 0, false, 0, &e, &slot);
  if (rc)
    return rc;
  if (!(e->flags & RK_PRESENT))
    return 0;
  if ((rc = sl__rk_dirty(b, slot, &e)))
    return rc;
  size_t vl = e->val_len;
  if (e->flags & RK_APPEND)
    vl += e->u.base_len;
  st->stats.entries--;
  st->stats.bytes -= k->key_len + k->ns_len + vl;
  e->flags &= (uint8_t) ~(RK_PRESENT | RK_APPEND);
  e->val_len = 0;
  e->u.base_len = 0;
  b->base.epoch++;
  return 1;
}

static void frame_hdr(unsigned char *p, size_t len) {
  uint32_t l = (uint32_t)len;
  memcpy(p, &l, 4);
  memset(p + 4, 0, 4);
}

int sl__rk_list_append(sl__backend *be, const sl__skey *k, size_t len,
                       void **out) {
  rk *b = (rk *)be;
  if (len > UINT32_MAX - 64)
    return SL_ERR_RANGE;
  size_t fl = sl__list_frame(len);
  rk_entry *e;
  size_t slot;
  /* Reads the list on a miss, to know whether it exists (the return code
   * and the stats say so); a long one stays in RocksDB and the append is
   * a merge operand. */
  int rc = sl__rk_fetch(b, k, false, 0, NULL, 0, false, sl__list_frame(len), &e,
                        &slot);
  if (!rc)
    rc = sl__rk_own(b, slot, &e);
  if (rc)
    return rc;
  rk_state *st = rk_st(b, k->state);
  int ret = 1;
  if (!(e->flags & RK_PRESENT)) {
    e->val_len = 0;
    e->flags |= RK_PRESENT;
    st->stats.entries++;
    st->stats.bytes += k->key_len + k->ns_len;
    ret = 0;
  } else if (!(e->flags & RK_APPEND) && e->val_len + fl > b->cache.limit / 64 &&
             e->val_len >= 4096) {
    /* Too long to keep whole: write it out, keep appending to it. */
    e->wflags |= RK_PIN;
    rc = rk_dirty_now(&b->cache, e) ? sl__rk_flush(b) : 0;
    e->wflags &= (uint8_t)~RK_PIN;
    if (rc)
      return rc;
    e->u.base_len = e->val_len;
    e->val_len = 0;
    e->flags |= RK_APPEND;
  }
  size_t vl = e->val_len, need = vl + fl;
  if (need > UINT32_MAX - 64 ||
      ((e->flags & RK_APPEND) && need + e->u.base_len > UINT32_MAX - 64))
    return SL_ERR_RANGE;
  if (need > e->val_cap) {
    /* Doubling keeps appends amortized O(1). */
    size_t cap = (size_t)e->val_cap * 2;
    if (cap < need)
      cap = need;
    if (cap < 64)
      cap = 64;
    if (cap > UINT32_MAX - 64)
      cap = need;
    if ((rc = sl__rk_reserve(b, slot, &e, cap)))
      return rc;
  }
  if ((rc = sl__rk_dirty(b, SIZE_MAX, &e)))
    return rc;
  unsigned char *p = rk_val(e, 0) + vl;
  frame_hdr(p, len);
  memset(p + SL__LIST_HDR, 0, fl - SL__LIST_HDR);
  e->val_len = (uint32_t)need;
  st->stats.bytes += fl;
  *out = p + SL__LIST_HDR;
  return ret;
}

/* ---- Map entries -------------------------------------------------------- */

int sl__rk_map_get(sl__backend *be, const sl__skey *k, const void *mk,
                   size_t mk_len, uint64_t mh, void **val, size_t *len,
                   bool for_write) {
  rk *b = (rk *)be;
  rk_entry *e;
  size_t slot;
  int rc = sl__rk_fetch(b, k, true, mh, mk, mk_len, true, 0, &e, &slot);
  if (rc)
    return rc;
  if (!(e->flags & RK_PRESENT))
    return 0;
  if (for_write && (rc = sl__rk_dirty(b, slot, &e)))
    return rc;
  *val = rk_val(e, (uint32_t)mk_len + 8);
  *len = e->val_len;
  return 1;
}

int sl__rk_map_slot(sl__backend *be, const sl__skey *k, const void *mk,
                    size_t mk_len, uint64_t mh, size_t len, void **out) {
  rk *b = (rk *)be;
  if (len > UINT32_MAX - 64)
    return SL_ERR_RANGE;
  rk_entry *e;
  size_t slot;
  int rc = sl__rk_fetch(b, k, true, mh, mk, mk_len, true, len, &e, &slot);
  if (!rc)
    rc = sl__rk_own(b, slot, &e);
  if (rc)
    return rc;
  rk_state *st = rk_st(b, k->state);
  uint32_t xl = (uint32_t)mk_len + 8;
  size_t vl = e->val_len;
  int ret = 1;
  if (!(e->flags & RK_PRESENT) || len != vl) {
    if ((rc = sl__rk_reserve(b, slot, &e, len)))
      return rc;
    if (!(e->flags & RK_PRESENT)) {
      vl = 0;
      e->flags |= RK_PRESENT;
      st->stats.entries++;
      st->stats.bytes += k->key_len + k->ns_len + mk_len + len;
      ret = 0;
    } else {
      st->stats.bytes = st->stats.bytes + len - vl;
      ret = 2;
    }
    if (len > vl)
      memset(rk_val(e, xl) + vl, 0, len - vl);
    e->val_len = (uint32_t)len;
  }
  if ((rc = sl__rk_dirty(b, SIZE_MAX, &e)))
    return rc;
  *out = rk_val(e, xl);
  return ret;
}

int sl__rk_map_remove(sl__backend *be, const sl__skey *k, const void *mk,
                      size_t mk_len, uint64_t mh) {
  rk *b = (rk *)be;
  rk_entry *e;
  size_t slot;
  int rc = sl__rk_fetch(b, k, true, mh, mk, mk_len, true, 0, &e, &slot);
  if (rc)
    return rc;
  if (!(e->flags & RK_PRESENT))
    return 0;
  if ((rc = sl__rk_dirty(b, slot, &e)))
    return rc;
  rk_state *st = rk_st(b, k->state);
  st->stats.entries--;
  st->stats.bytes -= k->key_len + k->ns_len + mk_len + e->val_len;
  e->flags &= (uint8_t)~RK_PRESENT;
  e->val_len = 0;
  b->base.epoch++;
  return 1;
}

/* An iterator over [lo, successor(lo)) of one column family, with its own
 * read options (they hold the bound). */
typedef struct range_it {
  rocksdb_readoptions_t *ro;
  rocksdb_iterator_t *it;
  unsigned char upper[64];
} range_it;

static int range_open(rk *b, range_it *r, rk_state *st, const unsigned char *lo,
                      size_t lo_len) {
  /* Iterators read past the cache: the snapshot's batches first. */
  int rc = sl__rk_settle(b);
  if (rc)
    return rc;
  size_t ul = lo_len <= sizeof(r->upper) ? successor(lo, lo_len, r->upper) : 0;
  r->ro = rocksdb_readoptions_create();
  if (!r->ro)
    return SL_ERR_NOMEM;
  rocksdb_readoptions_set_fill_cache(r->ro, 0); /* scans must not flush the
                                                   block cache */
  if (ul)
    rocksdb_readoptions_set_iterate_upper_bound(r->ro, (const char *)r->upper,
                                                ul);
  r->it = rocksdb_create_iterator_cf(b->db, r->ro, st->cf);
  rocksdb_iter_seek(r->it, (const char *)lo, lo_len);
  return 0;
}

static int range_close(rk *b, range_it *r) {
  char *err = NULL;
  rocksdb_iter_get_error(r->it, &err);
  rocksdb_iter_destroy(r->it);
  rocksdb_readoptions_destroy(r->ro);
  return err ? sl__rk_fail(b, "iteration", err) : 0;
}

static bool has_prefix(rocksdb_iterator_t *it, const unsigned char *p, size_t n,
                       const unsigned char **key, size_t *len) {
  if (!rocksdb_iter_valid(it))
    return false;
  *key = (const unsigned char *)rocksdb_iter_key(it, len);
  return *len >= n && memcmp(*key, p, n) == 0;
}

/* del() of a map: every entry of the (key, ns). Cached entries of the map
 * are all clean after the flush, so marking them absent and deleting in
 * RocksDB is the whole story. */
static int map_del(rk *b, const sl__skey *k) {
  rk_state *st = rk_st(b, k->state);
  int rc = rk_failed(b);
  if (rc || (st->n_dirty && (rc = sl__rk_flush(b))))
    return rc;
  size_t pl = sl__rk_encode(b, k->kg, k->key, k->key_len, k->ns, k->ns_len,
                            false, 0, NULL, 0);
  unsigned char *prefix = pl ? malloc(pl) : NULL;
  if (!prefix)
    return SL_ERR_NOMEM;
  memcpy(prefix, b->kbuf, pl);
  range_it r;
  if ((rc = range_open(b, &r, st, prefix, pl))) {
    free(prefix);
    return rc;
  }
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
  const unsigned char *key;
  size_t kl;
  uint64_t n = 0;
  while (has_prefix(r.it, prefix, pl, &key, &kl)) {
    rk_dkey dk;
    size_t vl;
    rocksdb_iter_value(r.it, &vl);
    if (sl__rk_decode(key, kl, true, &dk) == 0) {
      st->stats.entries--;
      st->stats.bytes -= k->key_len + k->ns_len + dk.mk_len + vl;
      rk_entry *e;
      rk_probe(&b->cache, rk_mhash(k, dk.mh), k, true, dk.mk, dk.mk_len, &e);
      if (e) {
        e->flags &= (uint8_t)~RK_PRESENT;
        e->val_len = 0;
      }
      n++;
    }
    rocksdb_writebatch_delete_cf(wb, st->cf, (const char *)key, kl);
    rocksdb_iter_next(r.it);
  }
  free(prefix);
  rc = range_close(b, &r);
  if (!rc && n) {
    char *err = NULL;
    rocksdb_write(b->db, b->wo, wb, &err);
    b->wseq++;
    if (err)
      rc = sl__rk_fail(b, "write", err);
  }
  rocksdb_writebatch_destroy(wb);
  if (rc)
    return rc;
  b->base.epoch++;
  return n > 0;
}

/* ---- Map iteration ------------------------------------------------------ *
 * Entries of a map are ordered by (mh, mk) in RocksDB and visited in (mh,
 * h2) order, h2 being a second hash of the map key: a cursor's position is
 * then the (mh, h2) of the entry it returned last, which fits in the
 * cursor and needs no state that would have to be freed. Entries sharing
 * an mh (rare) are ranked by h2 among themselves. The cache is laid over
 * the iterator: an entry removed meanwhile is skipped, a modified one
 * returned as it is now.                                                   */

enum { CUR_NONE = 0, CUR_START, CUR_AFTER, CUR_DONE };

static uintptr_t h2_of(const unsigned char *mk, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL ^ n;
  for (size_t i = 0; i < n; i++)
    h = (h ^ mk[i]) * 0x100000001b3ULL;
  return (uintptr_t)sl__mix64(h);
}

void sl__rk_mapit_reset(rk *b) {
  rk_mapit *m = &b->mit;
  if (m->it)
    rocksdb_iter_destroy(m->it);
  m->it = NULL;
  m->positioned = false;
}

/* Positions b->mit at the first entry of c's map with mh >= from (all of
 * them when !after), reusing the iterator when it is fresh enough. */
static int mapit_seek(rk *b, const sl__map_cursor *c, bool after,
                      uint64_t from) {
  rk_mapit *m = &b->mit;
  const sl__skey *k = &c->k;
  int rc = sl__rk_settle(b); /* iterators read past the cache */
  if (rc)
    return rc;
  size_t pl = sl__rk_encode(b, k->kg, k->key, k->key_len, k->ns, k->ns_len,
                            true, from, NULL, 0);
  if (!pl)
    return SL_ERR_NOMEM;
  pl -= 8; /* the prefix; the 8 bytes after it are the seek target's mh */
  bool same = m->it && m->wseq == b->wseq && m->state == k->state &&
              m->prefix_len == pl && memcmp(m->prefix, b->kbuf, pl) == 0;
  if (!same) {
    sl__rk_mapit_reset(b);
    if (pl + 8 > m->prefix_cap) {
      unsigned char *p = realloc(m->prefix, pl + 8);
      unsigned char *u = p ? realloc(m->upper, pl + 8) : NULL;
      if (p)
        m->prefix = p;
      if (u)
        m->upper = u;
      if (!p || !u)
        return SL_ERR_NOMEM;
      m->prefix_cap = pl + 8;
    }
    memcpy(m->prefix, b->kbuf, pl);
    m->prefix_len = pl;
    m->state = k->state;
    m->wseq = b->wseq;
    if (!m->ro && !(m->ro = rocksdb_readoptions_create()))
      return SL_ERR_NOMEM;
    size_t ul = successor(m->prefix, pl, m->upper);
    rocksdb_readoptions_set_iterate_upper_bound(
        m->ro, ul ? (const char *)m->upper : NULL, ul);
    m->it = rocksdb_create_iterator_cf(b->db, m->ro, rk_st(b, k->state)->cf);
  }
  rocksdb_iter_seek(m->it, (const char *)b->kbuf, after ? pl + 8 : pl);
  m->positioned = false;
  return 0;
}

typedef struct cand {
  const unsigned char *key; /* encoded, in cand_buf */
  size_t key_len, val_len;
  uint64_t mh;
  uintptr_t h2;
} cand;

/* Whether the map entry mk is removed in the cache (then not visited). */
static bool removed(rk *b, const sl__skey *k, uint64_t mh,
                    const unsigned char *mk, size_t ml) {
  rk_entry *e;
  rk_probe(&b->cache, rk_mhash(k, mh), k, true, mk, ml, &e);
  return e && !(e->flags & RK_PRESENT);
}

/* Copies the iterator's current entry into the backend's scratch. */
static int copy_cur(rk *b, rocksdb_iterator_t *it, unsigned char **buf,
                    size_t *cap, cand *c) {
  size_t kl, vl;
  const char *key = rocksdb_iter_key(it, &kl);
  const char *val = rocksdb_iter_value(it, &vl);
  if (kl + vl > *cap) {
    size_t n = (kl + vl) * 2;
    unsigned char *p = realloc(*buf, n);
    if (!p)
      return SL_ERR_NOMEM;
    *buf = p;
    *cap = n;
  }
  memcpy(*buf, key, kl);
  if (vl)
    memcpy(*buf + kl, val, vl);
  c->key = *buf;
  c->key_len = kl;
  c->val_len = vl;
  (void)b;
  return 0;
}

/* Finds the next entry to return, from the iterator's position: the first
 * group of equal mh with a candidate, the candidate of least h2. */
static int next_candidate(rk *b, sl__map_cursor *c, unsigned char **buf,
                          size_t *cap, cand *out, bool *tie) {
  rk_mapit *m = &b->mit;
  bool started = c->epoch == CUR_AFTER;
  uint64_t last_mh = c->i;
  uintptr_t last_h2 = (uintptr_t)c->p;
  const unsigned char *key;
  size_t kl;
  *tie = false;
  while (has_prefix(m->it, m->prefix, m->prefix_len, &key, &kl)) {
    rk_dkey dk;
    if (sl__rk_decode(key, kl, true, &dk))
      return sl__rk_fail(b, "map iteration", NULL); /* a key we did not write */
    uint64_t mh = dk.mh;
    /* The common case: this entry alone has its mh. Look at the next
     * entry to know (copying this one first: next invalidates it). */
    int rc = copy_cur(b, m->it, buf, cap, out);
    if (rc)
      return rc;
    rocksdb_iter_next(m->it);
    const unsigned char *nk;
    size_t nkl;
    rk_dkey nd;
    bool alone = !has_prefix(m->it, m->prefix, m->prefix_len, &nk, &nkl) ||
                 sl__rk_decode(nk, nkl, true, &nd) || nd.mh != mh;
    if (alone) {
      rk_dkey cd;
      sl__rk_decode(out->key, out->key_len, true, &cd);
      out->mh = mh;
      out->h2 = h2_of(cd.mk, cd.mk_len);
      bool after = !started || mh > last_mh || out->h2 > last_h2;
      if (after && !removed(b, &c->k, mh, cd.mk, cd.mk_len))
        return 1;
      continue;
    }
    /* A group sharing mh: rank it by h2 from its start. */
    *tie = true;
    unsigned char seek[8];
    rk_be64(seek, mh);
    size_t pl = m->prefix_len;
    unsigned char *target = malloc(pl + 8);
    if (!target)
      return SL_ERR_NOMEM;
    memcpy(target, m->prefix, pl);
    memcpy(target + pl, seek, 8);
    rocksdb_iter_seek(m->it, (const char *)target, pl + 8);
    free(target);
    bool found = false;
    unsigned char *best = NULL;
    size_t best_cap = 0;
    while (has_prefix(m->it, m->prefix, m->prefix_len, &key, &kl) &&
           sl__rk_decode(key, kl, true, &dk) == 0 && dk.mh == mh) {
      uintptr_t h2 = h2_of(dk.mk, dk.mk_len);
      bool after = !started || mh > last_mh || h2 > last_h2;
      if (after && (!found || h2 < out->h2) &&
          !removed(b, &c->k, mh, dk.mk, dk.mk_len)) {
        if ((rc = copy_cur(b, m->it, &best, &best_cap, out))) {
          free(best);
          return rc;
        }
        out->mh = mh;
        out->h2 = h2;
        found = true;
      }
      rocksdb_iter_next(m->it);
    }
    if (found) {
      /* Move the copy into the scratch buffer the caller reads. */
      if (out->key_len + out->val_len > *cap) {
        free(*buf);
        *buf = best;
        *cap = best_cap;
      } else {
        memcpy(*buf, best, out->key_len + out->val_len);
        free(best);
      }
      out->key = *buf;
      return 1;
    }
    free(best);
  }
  char *err = NULL;
  rocksdb_iter_get_error(m->it, &err);
  return err ? sl__rk_fail(b, "map iteration", err) : 0;
}

int sl__rk_map_iter(sl__backend *be, sl__map_cursor *c) {
  rk *b = (rk *)be;
  rk_state *st = rk_st(b, c->k.state);
  int rc = sl__rk_settle(b);
  /* RocksDB must hold every entry that exists now: iteration reads it,
   * with the cache laid over for what changes later. */
  if (rc || (st->n_dirty && (rc = sl__rk_flush(b))))
    return rc;
  c->epoch = CUR_START;
  c->i = 0;
  c->p = NULL;
  c->epoch = CUR_START;
  if ((rc = mapit_seek(b, c, false, 0)))
    return rc;
  const unsigned char *key;
  size_t kl;
  rk_mapit *m = &b->mit;
  /* Exists: some entry not removed in the cache. */
  while (has_prefix(m->it, m->prefix, m->prefix_len, &key, &kl)) {
    rk_dkey dk;
    if (sl__rk_decode(key, kl, true, &dk) == 0 &&
        !removed(b, &c->k, dk.mh, dk.mk, dk.mk_len)) {
      rocksdb_iter_seek(m->it, (const char *)m->prefix, m->prefix_len);
      m->positioned = true;
      m->mh = 0;
      m->h2 = 0;
      m->started = false;
      return 1;
    }
    rocksdb_iter_next(m->it);
  }
  char *err = NULL;
  rocksdb_iter_get_error(m->it, &err);
  if (err)
    return sl__rk_fail(b, "map iteration", err);
  c->epoch = CUR_DONE;
  return 0;
}

int sl__rk_map_next(sl__backend *be, sl__map_cursor *c, const void **mk,
                    size_t *mk_len, void **val, size_t *len, bool for_write) {
  rk *b = (rk *)be;
  if (c->epoch != CUR_START && c->epoch != CUR_AFTER)
    return 0;
  int rc = rk_failed(b);
  if (rc)
    return rc;
  rk_mapit *m = &b->mit;
  bool started = c->epoch == CUR_AFTER;
  bool cont = m->it && m->positioned && m->wseq == b->wseq &&
              m->state == c->k.state && m->started == started &&
              (!started || (m->mh == c->i && m->h2 == (uintptr_t)c->p));
  if (cont) {
    /* The iterator of the previous call still stands where this cursor
     * goes on; check that it is this map. */
    size_t pl = sl__rk_encode(b, c->k.kg, c->k.key, c->k.key_len, c->k.ns,
                              c->k.ns_len, false, 0, NULL, 0);
    cont = pl == m->prefix_len && memcmp(b->kbuf, m->prefix, pl) == 0;
  }
  if (!cont && (rc = mapit_seek(b, c, started, c->i)))
    return rc;
  cand cd;
  bool tie;
  rc = next_candidate(b, c, &b->mit_buf, &b->mit_buf_cap, &cd, &tie);
  if (rc <= 0) {
    m->positioned = false;
    c->epoch = CUR_DONE;
    return rc;
  }
  /* The returned entry lives in the cache (it may already). */
  rk_dkey dk;
  sl__rk_decode(cd.key, cd.key_len, true, &dk);
  rk_entry *e;
  size_t slot;
  rc = sl__rk_adopt(b, &c->k, dk.mh, dk.mk, dk.mk_len, cd.key + cd.key_len,
                    cd.val_len, &e, &slot);
  if (rc) {
    m->positioned = false;
    return rc;
  }
  if (for_write && (rc = sl__rk_dirty(b, slot, &e)))
    return rc;
  c->epoch = CUR_AFTER;
  c->i = cd.mh;
  c->p = (void *)cd.h2;
  m->positioned = !tie;
  m->started = true;
  m->mh = cd.mh;
  m->h2 = cd.h2;
  *mk = e->data + e->key_len + e->ns_len;
  *mk_len = e->u.mk_len;
  *val = rk_val(e, e->u.mk_len + 8);
  *len = e->val_len;
  return 1;
}

/* ---- Key groups --------------------------------------------------------- */

static void kg_bytes(uint32_t kg, unsigned char *p) {
  p[0] = (unsigned char)(kg >> 8);
  p[1] = (unsigned char)kg;
}

int sl__rk_kg_scan(sl__backend *be, uint32_t kg, sl__entry_fn fn,
                   void *opaque) {
  rk *b = (rk *)be;
  if (kg < be->kg_lo || kg >= be->kg_hi)
    return SL_ERR_RANGE;
  int rc = rk_failed(b);
  if (rc || (rc = sl__rk_flush(b)))
    return rc;
  unsigned char lo[2];
  kg_bytes(kg, lo);
  for (uint32_t id = 0; id < b->n_states && !rc; id++) {
    rk_state *st = rk_st(b, id);
    bool map = st->type == SL__BT_MAP;
    range_it r;
    if ((rc = range_open(b, &r, st, lo, 2)))
      return rc;
    const unsigned char *key;
    size_t kl;
    while (!rc && has_prefix(r.it, lo, 2, &key, &kl)) {
      size_t vl;
      const char *v = rocksdb_iter_value(r.it, &vl);
      rk_dkey dk;
      if (sl__rk_decode(key, kl, map, &dk)) {
        rc = SL_ERR_CORRUPT;
        break;
      }
      rc = fn(id, dk.key, dk.key_len, dk.ns, dk.ns_len, map ? dk.mk : NULL,
              dk.mk_len, v, vl, opaque);
      rocksdb_iter_next(r.it);
    }
    int rc2 = range_close(b, &r);
    if (!rc)
      rc = rc2;
  }
  return rc;
}

int sl__rk_insert(sl__backend *be, uint32_t state, uint32_t kg, const void *key,
                  size_t key_len, const void *ns, size_t ns_len, const void *mk,
                  size_t mk_len, const void *val, size_t len) {
  rk *b = (rk *)be;
  if (kg < be->kg_lo || kg >= be->kg_hi)
    return SL_ERR_RANGE;
  if (state >= b->n_states || (rk_st(b, state)->type == SL__BT_MAP) != !!mk)
    return SL_ERR_INVAL;
  uint64_t kh = sl__hash64(key, key_len);
  /* Data from a checkpoint: an entry in the wrong key group would never be
   * found again. */
  if (sl__backend_key_group(be, key, key_len, kh) != kg)
    return SL_ERR_CORRUPT;
  sl__skey k = {state, kg,    sl__state_hash(kh, ns, ns_len), key, key_len,
                ns,    ns_len};
  void *slot;
  int rc = mk ? sl__rk_map_slot(be, &k, mk, mk_len, sl__hash64(mk, mk_len), len,
                                &slot)
              : sl__rk_slot(be, &k, len, &slot);
  if (rc < 0)
    return rc;
  if (len)
    memcpy(slot, val, len);
  return 0;
}

void sl__rk_kg_drop(sl__backend *be, uint32_t kg, const bool *states) {
  rk *b = (rk *)be;
  if (kg < be->kg_lo || kg >= be->kg_hi || rk_failed(b) || sl__rk_flush(b))
    return;
  unsigned char lo[2], hi[2];
  kg_bytes(kg, lo);
  kg_bytes(kg + 1, hi);
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
  int rc = 0;
  /* The stats lose exactly what RocksDB holds: count it first. */
  for (uint32_t id = 0; id < b->n_states && !rc; id++) {
    if (states && !states[id])
      continue;
    rk_state *st = rk_st(b, id);
    range_it r;
    if ((rc = range_open(b, &r, st, lo, 2)))
      break;
    const unsigned char *key;
    size_t kl;
    while (has_prefix(r.it, lo, 2, &key, &kl)) {
      size_t vl;
      rocksdb_iter_value(r.it, &vl);
      rk_dkey dk;
      if (sl__rk_decode(key, kl, st->type == SL__BT_MAP, &dk) == 0) {
        st->stats.entries--;
        st->stats.bytes -= dk.key_len + dk.ns_len + dk.mk_len + vl;
      }
      rocksdb_iter_next(r.it);
    }
    rc = range_close(b, &r);
    rocksdb_writebatch_delete_range_cf(wb, st->cf, (const char *)lo, 2,
                                       (const char *)hi, 2);
  }
  if (!rc) {
    char *err = NULL;
    rocksdb_write(b->db, b->wo, wb, &err);
    if (err)
      sl__rk_fail(b, "key-group drop", err);
  }
  rocksdb_writebatch_destroy(wb);
  b->wseq++;
  sl__rk_cache_drop_kg(b, kg);
  sl__rk_mapit_reset(b);
  be->epoch++;
}

/* ---- Loading a key group from a snapshot --------------------------------- *
 * A task's load in group mode reads its key group from another process's
 * snapshot, opened read-only. Both are RocksDB databases of the same
 * layout, so a state's entries of the key group are one range of its
 * column family in either, in the order RocksDB keeps them: they are
 * copied as they are, into a table file that the database takes in whole
 * (from sl__rk_ingest_min entries on; fewer in one write batch), instead
 * of one cache insert and memtable write each. */

/* Whether b holds no entry of key group kg in the states of mask. */
static int kg_empty(rk *b, uint32_t kg, const bool *mask, bool *empty) {
  unsigned char lo[2];
  kg_bytes(kg, lo);
  *empty = true;
  for (uint32_t id = 0; id < b->n_states && *empty; id++) {
    if (!mask[id])
      continue;
    range_it r;
    int rc = range_open(b, &r, rk_st(b, id), lo, 2);
    if (rc)
      return rc;
    const unsigned char *key;
    size_t kl;
    *empty = !has_prefix(r.it, lo, 2, &key, &kl);
    if ((rc = range_close(b, &r)))
      return rc;
  }
  return 0;
}

/* Copies the first n entries of state ss of s under prefix lo (the key
 * group's: read once already, into a write batch) into w. */
static int replay(rk *s, rk_state *ss, const unsigned char *lo, size_t n,
                  rocksdb_sstfilewriter_t *w, char **err) {
  range_it r;
  int rc = range_open(s, &r, ss, lo, 2);
  if (rc)
    return rc;
  const unsigned char *key;
  size_t kl, vl;
  for (size_t i = 0; i < n && !*err && has_prefix(r.it, lo, 2, &key, &kl);
       i++) {
    const char *v = rocksdb_iter_value(r.it, &vl);
    rocksdb_sstfilewriter_put(w, (const char *)key, kl, v, vl, err);
    rocksdb_iter_next(r.it);
  }
  return range_close(s, &r);
}

/* State ss of snapshot s, key group kg, into state ds of b (which holds
 * nothing of kg there). */
static int load_state(rk *b, rk_state *ds, rk *s, rk_state *ss, uint32_t kg) {
  unsigned char lo[2];
  kg_bytes(kg, lo);
  bool map = ss->type == SL__BT_MAP;
  range_it r;
  int rc = range_open(s, &r, ss, lo, 2);
  if (rc)
    return rc;
  size_t pl = strlen(b->dir) + 32;
  char *path = malloc(pl);
  rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
  if (!path || !wb) {
    free(path);
    rocksdb_writebatch_destroy(wb);
    range_close(s, &r);
    return SL_ERR_NOMEM;
  }
  snprintf(path, pl, "%s/sluice-load.tmp", b->dir);
  rocksdb_envoptions_t *eo = NULL;
  rocksdb_sstfilewriter_t *w = NULL;
  char *err = NULL;
  size_t n = 0;
  uint64_t bytes = 0;
  const unsigned char *key;
  size_t kl, vl;
  while (!rc && !err && has_prefix(r.it, lo, 2, &key, &kl)) {
    const char *v = rocksdb_iter_value(r.it, &vl);
    rk_dkey dk;
    /* Data from a checkpoint: an entry in the wrong key group would never
     * be found again. */
    if (sl__rk_decode(key, kl, map, &dk) ||
        sl__backend_key_group(&b->base, dk.key, dk.key_len,
                              sl__hash64(dk.key, dk.key_len)) != kg) {
      rc = SL_ERR_CORRUPT;
      break;
    }
    if (w)
      rocksdb_sstfilewriter_put(w, (const char *)key, kl, v, vl, &err);
    else
      rocksdb_writebatch_put_cf(wb, ds->cf, (const char *)key, kl, v, vl);
    n++;
    bytes += dk.key_len + dk.ns_len + dk.mk_len + vl;
    if (!w && n == sl__rk_ingest_min) {
      /* Enough for a table file: the batch's entries go into it first. */
      eo = rocksdb_envoptions_create();
      w = rocksdb_sstfilewriter_create(eo, ds->opts);
      unlink(path); /* left by a process that died here */
      rocksdb_sstfilewriter_open(w, path, &err);
      if (!err)
        rc = replay(s, ss, lo, n, w, &err);
      rocksdb_writebatch_clear(wb);
    }
    rocksdb_iter_next(r.it);
  }
  int rc2 = range_close(s, &r);
  if (!rc)
    rc = rc2;
  if (!rc && !err && w)
    rocksdb_sstfilewriter_finish(w, &err);
  else if (!rc && !err && n)
    rocksdb_write(b->db, b->wo, wb, &err);
  if (w)
    rocksdb_sstfilewriter_destroy(w);
  if (eo)
    rocksdb_envoptions_destroy(eo);
  if (!rc && !err && w) {
    rocksdb_ingestexternalfileoptions_t *io =
        rocksdb_ingestexternalfileoptions_create();
    rocksdb_ingestexternalfileoptions_set_move_files(io, 1);
    const char *files[] = {path};
    rocksdb_ingest_external_file_cf(b->db, ds->cf, files, 1, io, &err);
    rocksdb_ingestexternalfileoptions_destroy(io);
  }
  if (w)
    unlink(path); /* a move leaves nothing; a failure its file */
  free(path);
  rocksdb_writebatch_destroy(wb);
  if (err)
    rc = sl__rk_fail(b, "key-group load", err);
  if (!rc) {
    ds->stats.entries += n;
    ds->stats.bytes += bytes;
  }
  return rc;
}

int sl__rk_kg_load(sl__backend *be, sl__backend *from, uint32_t kg,
                   const uint32_t *ids, uint32_t n_ids) {
  if (strcmp(from->ops->name, be->ops->name) != 0)
    return 1;
  rk *b = (rk *)be, *s = (rk *)from;
  if (kg < be->kg_lo || kg >= be->kg_hi || kg < from->kg_lo ||
      kg >= from->kg_hi)
    return SL_ERR_RANGE;
  if (n_ids > s->n_states)
    return SL_ERR_INVAL;
  bool *mask = calloc(b->n_states + 1, sizeof(*mask));
  if (!mask)
    return SL_ERR_NOMEM;
  int rc = 0;
  for (uint32_t i = 0; i < n_ids && !rc; i++)
    if (ids[i] != UINT32_MAX) {
      if (ids[i] >= b->n_states || rk_st(b, ids[i])->type != rk_st(s, i)->type)
        rc = SL_ERR_INVAL;
      else
        mask[ids[i]] = true;
    }
  /* Nothing reaches RocksDB before the snapshot in flight; what this
   * process holds of kg in those states (a task it owned before) goes
   * first, and the cache's entries of kg (absent ones too) with it. */
  bool empty = true;
  if (!rc && !(rc = rk_failed(b)) && !(rc = sl__rk_flush(b)) &&
      !(rc = sl__rk_settle(b)) && !(rc = kg_empty(b, kg, mask, &empty)) &&
      !empty) {
    sl__rk_kg_drop(be, kg, mask);
    rc = rk_failed(b);
  }
  if (!rc)
    sl__rk_cache_drop_kg(b, kg);
  for (uint32_t i = 0; i < n_ids && !rc; i++)
    if (ids[i] != UINT32_MAX)
      rc = load_state(b, rk_st(b, ids[i]), s, rk_st(s, i), kg);
  free(mask);
  b->wseq++;
  sl__rk_mapit_reset(b);
  be->epoch++;
  return rc;
}

void sl__rk_prefetch(sl__backend *be, uint32_t state, const uint64_t *hash,
                     const uint32_t *kg, size_t stride, size_t n) {
  (void)kg;
  rk *b = (rk *)be;
  uint64_t salt = (uint64_t)(state + 1) * 0x9e3779b97f4a7c15ULL;
  const unsigned char *hp = (const unsigned char *)hash;
  for (size_t i = 0; i < n; i++, hp += stride) {
    uint64_t h;
    memcpy(&h, hp, sizeof(h));
    __builtin_prefetch(&b->cache.slots[rk_idx(h ^ salt, b->cache.bits)]);
  }
}
