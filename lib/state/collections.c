/* SPDX-License-Identifier: Apache-2.0 */
/* List and map state over the backend contract, with per-element (list)
 * and per-entry (map) TTL timestamps as in Flink, and iterators that
 * survive other state calls by revalidating against the backend's epoch
 * instead of looking their entry up on every step. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "state/kstate_int.h"

#define TS sizeof(int64_t)

/* ---- List state --------------------------------------------------------- */

/* The private layout of sl_list_iter_t. */
typedef struct list_it {
  sl__backend *be; /* NULL: nothing to iterate */
  sl__skey k;
  const unsigned char *base;
  size_t off, len;
  uint64_t epoch;
  uint32_t hdr;
  bool live; /* base is the stored list (else a private copy) */
} list_it;
_Static_assert(sizeof(list_it) <= sizeof(sl_list_iter_t),
               "sl_list_iter_t too small");

static void frame_write(unsigned char *p, int64_t ts, size_t hdr,
                        const void *val, size_t len) {
  uint32_t l = (uint32_t)(len + hdr);
  size_t fl = sl__list_frame(len + hdr);
  memcpy(p, &l, 4);
  memset(p + 4, 0, 4);
  if (hdr)
    sl__ts_store(p + SL__LIST_HDR, ts);
  if (len)
    memcpy(p + SL__LIST_HDR + hdr, val, len);
  memset(p + SL__LIST_HDR + hdr + len, 0, fl - SL__LIST_HDR - hdr - len);
}

int sl__list_add(sl__keyed *k, sl_state_t *st, const void *val, size_t len) {
  int rc = sl__state_check(k, st, SL_STATE_LIST);
  if (rc)
    return rc;
  if (len > UINT32_MAX - 16)
    return SL_ERR_RANGE;
  sl__backend *be = st->ks->be;
  sl__skey sk;
  void *slot;
  int64_t now = sl__write_begin(&sk, k, st);
  if ((rc = be->ops->list_append(be, &sk, len + st->hdr, &slot)) < 0)
    return rc;
  sl__write_fill(st, slot, now, val, len);
  return 0;
}

int sl__list_update(sl__keyed *k, sl_state_t *st, const void *const *vals,
                    const size_t *lens, size_t n) {
  int rc = sl__state_check(k, st, SL_STATE_LIST);
  if (rc)
    return rc;
  sl__backend *be = st->ks->be;
  sl__skey sk;
  int64_t now = 0;
  sl__skey_of(&sk, k, st);
  if (st->ttl) {
    now = sl__ttl_access(k, st);
  }
  if (!n)
    return (rc = be->ops->del(be, &sk)) < 0 ? rc : 0;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (lens[i] > UINT32_MAX - 16)
      return SL_ERR_RANGE;
    total += sl__list_frame(lens[i] + st->hdr);
  }
  void *p;
  if ((rc = be->ops->slot(be, &sk, total, &p)) < 0)
    return rc;
  unsigned char *w = p;
  for (size_t i = 0; i < n; i++) {
    frame_write(w, now, st->hdr, vals[i], lens[i]);
    w += sl__list_frame(lens[i] + st->hdr);
  }
  return 0;
}

/* TTL on read for a stored list at *p (writable): drops expired elements
 * (cleanup on read) and, with update-on-read, refreshes the others. With
 * RETURN_EXPIRED_IF_NOT_CLEANED_UP the elements as they were are first
 * copied for this one iteration. Updates the iterator's view. */
static int list_ttl(sl_state_t *st, list_it *li, void *p, size_t l,
                    int64_t now) {
  sl__backend *be = st->ks->be;
  int64_t ttl = st->d.ttl.ttl_ms;
  bool touch = st->d.ttl.update == SL_TTL_ON_READ_AND_WRITE;
  unsigned char *b = p, *end = b + l;
  size_t expired = 0;
  for (unsigned char *f = b; f + SL__LIST_HDR <= end;) {
    size_t el = sl__list_elem_len(f);
    if (el < TS || f + sl__list_frame(el) > end)
      return SL_ERR_CORRUPT;
    expired += sl__ttl_expired(sl__ts_load(f + SL__LIST_HDR), ttl, now);
    f += sl__list_frame(el);
  }
  li->base = b;
  li->len = l;
  if (!expired && !touch)
    return 0;
  if (expired &&
      st->d.ttl.visibility == SL_TTL_RETURN_EXPIRED_IF_NOT_CLEANED_UP) {
    if (l > st->list_copy_cap) {
      unsigned char *c = realloc(st->list_copy, l);
      if (!c)
        return SL_ERR_NOMEM;
      st->list_copy = c;
      st->list_copy_cap = l;
    }
    memcpy(st->list_copy, b, l);
    li->base = st->list_copy;
    li->live = false;
  }
  unsigned char *w = b;
  for (unsigned char *f = b; f + SL__LIST_HDR <= end;) {
    size_t fl = sl__list_frame(sl__list_elem_len(f));
    if (!sl__ttl_expired(sl__ts_load(f + SL__LIST_HDR), ttl, now)) {
      if (touch)
        sl__ts_store(f + SL__LIST_HDR, now);
      if (w != f)
        memmove(w, f, fl);
      w += fl;
    }
    f += fl;
  }
  if (!expired)
    return 0;
  size_t nl = (size_t)(w - b);
  int rc;
  if (!nl) {
    rc = be->ops->del(be, &li->k);
    p = NULL;
  } else {
    rc = be->ops->slot(be, &li->k, nl, &p); /* truncates, bytes kept */
  }
  if (rc < 0)
    return rc;
  if (li->live) {
    li->base = p;
    li->len = nl;
  }
  return 0;
}

int sl__list_get(sl__keyed *k, sl_state_t *st, sl_list_iter_t *it) {
  list_it li;
  memset(&li, 0, sizeof(li));
  memset(it, 0, sizeof(*it));
  int rc = sl__state_check(k, st, SL_STATE_LIST);
  if (rc)
    return rc;
  sl__backend *be = st->ks->be;
  int64_t now = 0;
  li.be = be;
  li.hdr = (uint32_t)st->hdr;
  li.live = true;
  sl__skey_of(&li.k, k, st);
  if (st->ttl) {
    now = sl__ttl_access(k, st);
  }
  void *p;
  size_t l;
  rc = be->ops->get(be, &li.k, &p, &l, st->ttl);
  if (rc < 0)
    return rc;
  if (rc == 1 && st->ttl) {
    if ((rc = list_ttl(st, &li, p, l, now)) < 0)
      return rc;
  } else if (rc == 1) {
    li.base = p;
    li.len = l;
  }
  li.epoch = be->epoch;
  memcpy(it, &li, sizeof(li));
  return li.len > 0;
}

int sl_list_next(sl_list_iter_t *it, const void **val, size_t *len) {
  list_it li;
  memcpy(&li, it, sizeof(li));
  if (!li.be)
    return 0;
  if (li.live && li.epoch != li.be->epoch) {
    /* The list may have moved (grown, another entry freed...): find it
     * again and carry on at the same offset. */
    void *p;
    size_t l;
    int rc = li.be->ops->get(li.be, &li.k, &p, &l, false);
    li.base = rc == 1 ? p : NULL;
    li.len = rc == 1 ? l : 0;
    li.epoch = li.be->epoch;
  }
  int found = 0;
  if (li.off + SL__LIST_HDR <= li.len) {
    const unsigned char *f = li.base + li.off;
    size_t el = sl__list_elem_len(f);
    /* Bounds checked: a list replaced during the iteration must not make
     * us read outside it. */
    if (el >= li.hdr && li.off + sl__list_frame(el) <= li.len) {
      *val = f + SL__LIST_HDR + li.hdr;
      *len = el - li.hdr;
      li.off += sl__list_frame(el);
      found = 1;
    }
  }
  if (!found)
    li.off = li.len = 0, li.be = NULL;
  memcpy(it, &li, sizeof(li));
  return found;
}

/* ---- Map state ---------------------------------------------------------- */

/* The private layout of sl_map_iter_t. */
typedef struct map_it {
  sl__backend *be; /* NULL: nothing to iterate */
  sl_state_t *st;
  sl__map_cursor c;
  int64_t now;
} map_it;
_Static_assert(sizeof(map_it) <= sizeof(sl_map_iter_t),
               "sl_map_iter_t too small");

/* Starts a TTL-state access; returns now (0 without TTL). */
static int64_t map_access(sl__keyed *k, sl_state_t *st) {
  if (!st->ttl)
    return 0;
  int64_t now = sl__ttl_access(k, st);
  return now;
}

/* Copies an expired entry returned once (RETURN_EXPIRED_IF_NOT_CLEANED_UP)
 * out of the backend before it is removed. */
static int copy_out(sl_state_t *st, const void **mk, size_t mk_len,
                    const void **val, size_t len) {
  size_t mo = (mk_len + 7) & ~(size_t)7;
  unsigned char *c = sl__kstate_scratch(st->ks, mo + len);
  if (!c)
    return SL_ERR_NOMEM;
  if (mk && mk_len)
    memcpy(c, *mk, mk_len);
  if (len)
    memcpy(c + mo, *val, len);
  if (mk)
    *mk = c;
  *val = c + mo;
  return 0;
}

int sl__map_get(sl__keyed *k, sl_state_t *st, const void *mk, size_t mk_len,
                const void **val, size_t *len) {
  int rc = sl__state_check(k, st, SL_STATE_MAP);
  if (rc)
    return rc;
  sl__backend *be = st->ks->be;
  sl__skey sk;
  void *p;
  size_t l;
  uint64_t mh = sl__hash64(mk, mk_len);
  sl__skey_of(&sk, k, st);
  int64_t now = map_access(k, st);
  bool touch = st->ttl && st->d.ttl.update == SL_TTL_ON_READ_AND_WRITE;
  if ((rc = be->ops->map_get(be, &sk, mk, mk_len, mh, &p, &l, touch)) != 1)
    return rc;
  if (!st->ttl) {
    *val = p;
    *len = l;
    return 1;
  }
  if (l < TS)
    return SL_ERR_CORRUPT;
  *val = (unsigned char *)p + TS;
  *len = l - TS;
  if (!sl__ttl_expired(sl__ts_load(p), st->d.ttl.ttl_ms, now)) {
    if (touch)
      sl__ts_store(p, now);
    return 1;
  }
  bool once = st->d.ttl.visibility == SL_TTL_RETURN_EXPIRED_IF_NOT_CLEANED_UP;
  if (once && (rc = copy_out(st, NULL, 0, val, *len)) < 0)
    return rc;
  if ((rc = be->ops->map_remove(be, &sk, mk, mk_len, mh)) < 0)
    return rc;
  return once;
}

int sl__map_put(sl__keyed *k, sl_state_t *st, const void *mk, size_t mk_len,
                const void *val, size_t len) {
  int rc = sl__state_check(k, st, SL_STATE_MAP);
  if (rc)
    return rc;
  sl__backend *be = st->ks->be;
  sl__skey sk;
  void *p;
  sl__skey_of(&sk, k, st);
  int64_t now = map_access(k, st);
  rc = be->ops->map_slot(be, &sk, mk, mk_len, sl__hash64(mk, mk_len),
                         len + st->hdr, &p);
  if (rc < 0)
    return rc;
  if (st->ttl)
    sl__ts_store(p, now);
  if (len)
    memcpy((unsigned char *)p + st->hdr, val, len);
  return 0;
}

int sl__map_remove(sl__keyed *k, sl_state_t *st, const void *mk,
                   size_t mk_len) {
  int rc = sl__state_check(k, st, SL_STATE_MAP);
  if (rc)
    return rc;
  sl__backend *be = st->ks->be;
  sl__skey sk;
  uint64_t mh = sl__hash64(mk, mk_len);
  sl__skey_of(&sk, k, st);
  int64_t now = map_access(k, st);
  if (!st->ttl || st->d.ttl.visibility != SL_TTL_NEVER_RETURN_EXPIRED)
    return be->ops->map_remove(be, &sk, mk, mk_len, mh);
  /* An expired entry is invisible: removing it is not removing an entry,
   * whether or not cleanup came first (which depends on other keys). */
  void *p;
  size_t l;
  if ((rc = be->ops->map_get(be, &sk, mk, mk_len, mh, &p, &l, false)) != 1)
    return rc;
  bool live =
      l >= TS && !sl__ttl_expired(sl__ts_load(p), st->d.ttl.ttl_ms, now);
  if ((rc = be->ops->map_remove(be, &sk, mk, mk_len, mh)) < 0)
    return rc;
  return live;
}

int sl__map_contains(sl__keyed *k, sl_state_t *st, const void *mk,
                     size_t mk_len) {
  const void *v;
  size_t l;
  return sl__map_get(k, st, mk, mk_len, &v, &l);
}

int sl__map_iter(sl__keyed *k, sl_state_t *st, sl_map_iter_t *it) {
  map_it mi;
  memset(&mi, 0, sizeof(mi));
  memset(it, 0, sizeof(*it));
  int rc = sl__state_check(k, st, SL_STATE_MAP);
  if (rc)
    return rc;
  mi.be = st->ks->be;
  mi.st = st;
  sl__skey_of(&mi.c.k, k, st);
  mi.now = map_access(k, st);
  if ((rc = mi.be->ops->map_iter(mi.be, &mi.c)) < 0)
    return rc;
  memcpy(it, &mi, sizeof(mi));
  return 0;
}

int sl_map_next(sl_map_iter_t *it, const void **mk, size_t *mk_len,
                const void **val, size_t *len) {
  map_it mi;
  memcpy(&mi, it, sizeof(mi));
  if (!mi.be)
    return 0;
  sl_state_t *st = mi.st;
  bool touch = st->ttl && st->d.ttl.update == SL_TTL_ON_READ_AND_WRITE;
  int rc;
  for (;;) {
    void *p;
    size_t l;
    rc = mi.be->ops->map_next(mi.be, &mi.c, mk, mk_len, &p, &l, st->ttl);
    if (rc != 1)
      break;
    if (!st->ttl) {
      *val = p;
      *len = l;
      break;
    }
    if (l < TS) {
      rc = SL_ERR_CORRUPT;
      break;
    }
    *val = (unsigned char *)p + TS;
    *len = l - TS;
    if (!sl__ttl_expired(sl__ts_load(p), st->d.ttl.ttl_ms, mi.now)) {
      if (touch)
        sl__ts_store(p, mi.now);
      break;
    }
    /* Expired: removed now (the cursor tolerates removing the entry it
     * just returned), and returned this once if visibility allows. */
    bool once = st->d.ttl.visibility == SL_TTL_RETURN_EXPIRED_IF_NOT_CLEANED_UP;
    if (once && (rc = copy_out(st, mk, *mk_len, val, *len)) < 0)
      break;
    const void *rk = *mk;
    if ((rc = mi.be->ops->map_remove(mi.be, &mi.c.k, rk, *mk_len,
                                     sl__hash64(rk, *mk_len))) < 0)
      break;
    if (once) {
      rc = 1;
      break;
    }
  }
  if (rc != 1)
    mi.be = NULL; /* finished (or failed): later calls return 0 */
  memcpy(it, &mi, sizeof(mi));
  return rc;
}

int sl__map_is_empty(sl__keyed *k, sl_state_t *st) {
  sl_map_iter_t it;
  const void *mk, *v;
  size_t mkl, l;
  int rc = sl__map_iter(k, st, &it);
  if (rc < 0)
    return rc;
  rc = sl_map_next(&it, &mk, &mkl, &v, &l);
  return rc < 0 ? rc : !rc;
}
