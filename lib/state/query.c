/* SPDX-License-Identifier: Apache-2.0 */
/* Queries from outside the job (sluice/query.h): a read-only copy of one
 * key's entry of a state, built on the owning worker. Unlike the state
 * functions it changes nothing — no TTL refresh, no cleanup on read, no
 * incremental cleanup — so a query never alters what the job computes;
 * expired items are skipped whatever the visibility. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "state/kstate_int.h"

#define TS sizeof(int64_t)

bool sl__state_queryable(const sl_state_t *st) {
  return st->d.queryable;
}

/* Items collected before the result is laid out in one block: the bytes
 * go to buf (each piece 8-byte aligned), items hold offsets into it. */
typedef struct qitem {
  size_t mk_off, mk_len, v_off, v_len;
  bool has_mk;
} qitem;

typedef struct qbuild {
  qitem *it;
  size_t n, cap;
  unsigned char *buf;
  size_t len, buf_cap;
} qbuild;

static int qb_bytes(qbuild *b, const void *p, size_t n, size_t *off) {
  size_t at = (b->len + 7) & ~(size_t)7;
  if (at + n + 1 > b->buf_cap) {
    size_t cap = b->buf_cap ? b->buf_cap : 256;
    while (cap < at + n + 1)
      cap *= 2;
    unsigned char *nb = realloc(b->buf, cap);
    if (!nb)
      return SL_ERR_NOMEM;
    b->buf = nb;
    b->buf_cap = cap;
  }
  if (n)
    memcpy(b->buf + at, p, n);
  b->buf[at + n] = 0; /* text values read as C strings too */
  b->len = at + n + 1;
  *off = at;
  return 0;
}

static int qb_add(qbuild *b, const void *mk, size_t mk_len, bool has_mk,
                  const void *v, size_t v_len) {
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 8;
    qitem *ni = realloc(b->it, cap * sizeof(*ni));
    if (!ni)
      return SL_ERR_NOMEM;
    b->it = ni;
    b->cap = cap;
  }
  qitem *q = &b->it[b->n];
  memset(q, 0, sizeof(*q));
  int rc;
  if (has_mk && (rc = qb_bytes(b, mk, mk_len, &q->mk_off)) < 0)
    return rc;
  if ((rc = qb_bytes(b, v, v_len, &q->v_off)) < 0)
    return rc;
  q->has_mk = has_mk;
  q->mk_len = mk_len;
  q->v_len = v_len;
  b->n++;
  return 0;
}

static void qb_free(qbuild *b) {
  free(b->it);
  free(b->buf);
}

/* Map entries in the order of their keys' bytes (a shorter key first
 * when it is a prefix), whatever order the backend keeps. */
static int mk_cmp(const void *a, const void *b) {
  const sl_query_item_t *x = a, *y = b;
  size_t n = x->map_key_len < y->map_key_len ? x->map_key_len : y->map_key_len;
  int c = n ? memcmp(x->map_key, y->map_key, n) : 0;
  if (c)
    return c;
  return (x->map_key_len > y->map_key_len) - (x->map_key_len < y->map_key_len);
}

/* One block: the result, the items, then the bytes (8-byte aligned). */
static int qb_finish(qbuild *b, sl_state_kind kind, sl_query_result_t **out) {
  size_t head = sizeof(sl_query_result_t) + b->n * sizeof(sl_query_item_t);
  head = (head + 7) & ~(size_t)7;
  unsigned char *m = malloc(head + b->len + 1);
  if (!m)
    return SL_ERR_NOMEM;
  sl_query_result_t *r = (sl_query_result_t *)m;
  r->kind = kind;
  r->n = b->n;
  r->items = (sl_query_item_t *)(m + sizeof(*r));
  unsigned char *bytes = m + head;
  if (b->len)
    memcpy(bytes, b->buf, b->len);
  for (size_t i = 0; i < b->n; i++) {
    const qitem *q = &b->it[i];
    r->items[i] = (sl_query_item_t){
        .map_key = q->has_mk ? bytes + q->mk_off : NULL,
        .map_key_len = q->mk_len,
        .value = bytes + q->v_off,
        .value_len = q->v_len,
    };
  }
  if (kind == SL_STATE_MAP)
    qsort(r->items, r->n, sizeof(*r->items), mk_cmp);
  *out = r;
  return 1;
}

static bool live(const sl_state_t *st, const void *p, size_t l, int64_t now) {
  return !st->ttl ||
         (l >= TS && !sl__ttl_expired(sl__ts_load(p), st->d.ttl.ttl_ms, now));
}

static int query_value(sl_state_t *st, const sl__skey *sk, int64_t now,
                       qbuild *b) {
  sl__backend *be = st->ks->be;
  void *p;
  size_t l;
  int rc = be->ops->get(be, sk, &p, &l, false);
  if (rc != 1)
    return rc;
  if (st->ttl && l < TS)
    return SL_ERR_CORRUPT;
  if (!live(st, p, l, now))
    return 0;
  const unsigned char *v = (const unsigned char *)p + st->hdr;
  size_t vl = l - st->hdr;
  if (st->d.kind == SL_STATE_AGGREGATING && st->d.result) {
    if (vl != st->d.acc_size)
      return SL_ERR_CORRUPT;
    /* result() writes to the state's own buffer: this is the owning
     * worker, between records, so nothing else uses it now. */
    st->d.result(v, st->result, st->d.opaque);
    v = st->result;
    vl = st->d.result_size;
  }
  return qb_add(b, NULL, 0, false, v, vl);
}

static int query_list(sl_state_t *st, const sl__skey *sk, int64_t now,
                      qbuild *b) {
  sl__backend *be = st->ks->be;
  void *p;
  size_t l;
  int rc = be->ops->get(be, sk, &p, &l, false);
  if (rc != 1)
    return rc;
  /* No backend call until the walk ends: the frames stay where they are. */
  const unsigned char *f = p, *end = f + l;
  while (f + SL__LIST_HDR <= end) {
    size_t el = sl__list_elem_len(f);
    if (el < st->hdr || f + sl__list_frame(el) > end)
      return SL_ERR_CORRUPT;
    const unsigned char *e = f + SL__LIST_HDR;
    if (live(st, e, el, now) &&
        (rc = qb_add(b, NULL, 0, false, e + st->hdr, el - st->hdr)) < 0)
      return rc;
    f += sl__list_frame(el);
  }
  return 0;
}

static int query_map(sl_state_t *st, const sl__skey *sk, const void *mk,
                     size_t mk_len, int64_t now, qbuild *b) {
  sl__backend *be = st->ks->be;
  void *p;
  size_t l;
  int rc;
  if (mk) {
    uint64_t mh = sl__hash64(mk, mk_len);
    if ((rc = be->ops->map_get(be, sk, mk, mk_len, mh, &p, &l, false)) != 1)
      return rc;
    if (st->ttl && l < TS)
      return SL_ERR_CORRUPT;
    if (!live(st, p, l, now))
      return 0;
    return qb_add(b, mk, mk_len, true, (unsigned char *)p + st->hdr,
                  l - st->hdr);
  }
  sl__map_cursor c;
  memset(&c, 0, sizeof(c));
  c.k = *sk;
  if ((rc = be->ops->map_iter(be, &c)) < 0)
    return rc;
  const void *k;
  size_t kl;
  while ((rc = be->ops->map_next(be, &c, &k, &kl, &p, &l, false)) == 1) {
    if (st->ttl && l < TS)
      return SL_ERR_CORRUPT;
    if (live(st, p, l, now) &&
        (rc = qb_add(b, k, kl, true, (unsigned char *)p + st->hdr,
                     l - st->hdr)) < 0)
      return rc;
  }
  return rc;
}

int sl__state_query(sl_state_t *st, const void *key, size_t key_len,
                    uint64_t hash, uint32_t kg, const void *mk, size_t mk_len,
                    int64_t proc_now, int64_t event_now,
                    sl_query_result_t **out) {
  *out = NULL;
  sl__skey sk = {
      .state = st->id, .kg = kg, .hash = hash, .key = key, .key_len = key_len};
  int64_t now = st->d.ttl.time == SL_TTL_EVENT_TIME ? event_now : proc_now;
  qbuild b;
  memset(&b, 0, sizeof(b));
  int rc;
  switch (st->d.kind) {
  case SL_STATE_LIST:
    rc = query_list(st, &sk, now, &b);
    break;
  case SL_STATE_MAP:
    rc = query_map(st, &sk, mk, mk_len, now, &b);
    break;
  default:
    rc = query_value(st, &sk, now, &b);
    break;
  }
  if (rc >= 0)
    rc = b.n ? qb_finish(&b, st->d.kind, out) : 0;
  qb_free(&b);
  return rc;
}
