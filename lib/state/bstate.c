/* SPDX-License-Identifier: Apache-2.0 */
/* Broadcast state (sluice/broadcast.h): the named byte-string maps of one
 * broadcast process instance, kept in memory whatever state.backend says
 * (as Flink keeps broadcast state on the heap). Entries are sorted by map
 * key: lookups are a binary search, iteration and snapshots come out in
 * one order on every instance, and the state is small by contract. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "state/state.h"

typedef struct bent {
  unsigned char *p; /* map key, then the value at voff(klen) */
  size_t klen, vlen;
} bent;

struct sl_bstate {
  sl__bstates *owner;
  char *name;
  bent *e;
  size_t n, cap;
};

struct sl__bstates {
  sl_bstate_t **st;
  size_t n, cap;
  bool writable;
};

/* Values start 8-byte aligned, as keyed state values do. */
static size_t voff(size_t klen) {
  return (klen + 7) & ~(size_t)7;
}

sl__bstates *sl__bstates_new(void) {
  return calloc(1, sizeof(sl__bstates));
}

static void bstate_clear(sl_bstate_t *st) {
  for (size_t i = 0; i < st->n; i++)
    free(st->e[i].p);
  st->n = 0;
}

void sl__bstates_free(sl__bstates *bs) {
  if (!bs)
    return;
  for (size_t i = 0; i < bs->n; i++) {
    bstate_clear(bs->st[i]);
    free(bs->st[i]->e);
    free(bs->st[i]->name);
    free(bs->st[i]);
  }
  free(bs->st);
  free(bs);
}

void sl__bstates_set_writable(sl__bstates *bs, bool writable) {
  bs->writable = writable;
}

int sl__bstates_find(sl__bstates *bs, const char *name, size_t name_len,
                     bool create, sl_bstate_t **out) {
  for (size_t i = 0; i < bs->n; i++) {
    if (strlen(bs->st[i]->name) == name_len &&
        memcmp(bs->st[i]->name, name, name_len) == 0) {
      *out = bs->st[i];
      return SL_OK;
    }
  }
  if (!create)
    return SL_ERR_NOTFOUND;
  if (bs->n == bs->cap) {
    size_t cap = bs->cap ? bs->cap * 2 : 4;
    sl_bstate_t **a = realloc(bs->st, cap * sizeof(*a));
    if (!a)
      return SL_ERR_NOMEM;
    bs->st = a;
    bs->cap = cap;
  }
  sl_bstate_t *st = calloc(1, sizeof(*st));
  if (!st || !(st->name = strndup(name, name_len))) {
    free(st);
    return SL_ERR_NOMEM;
  }
  st->owner = bs;
  bs->st[bs->n++] = st;
  *out = st;
  return SL_OK;
}

size_t sl__bstates_count(const sl__bstates *bs) {
  return bs->n;
}
sl_bstate_t *sl__bstates_at(const sl__bstates *bs, size_t i) {
  return i < bs->n ? bs->st[i] : NULL;
}
const char *sl__bstate_name(const sl_bstate_t *st) {
  return st->name;
}

void sl__bstates_clear(sl__bstates *bs) {
  for (size_t i = 0; i < bs->n; i++)
    bstate_clear(bs->st[i]);
}

static int kcmp(const void *a, size_t al, const void *b, size_t bl) {
  int c = memcmp(a, b, al < bl ? al : bl);
  if (c)
    return c;
  return al < bl ? -1 : al > bl;
}

/* Index of mk, or of where it would go; *found says which. */
static size_t find(const sl_bstate_t *st, const void *mk, size_t mk_len,
                   bool *found) {
  size_t lo = 0, hi = st->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = kcmp(st->e[mid].p, st->e[mid].klen, mk, mk_len);
    if (c == 0) {
      *found = true;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = false;
  return lo;
}

int sl__bstate_put(sl_bstate_t *st, const void *mk, size_t mk_len,
                   const void *val, size_t len) {
  unsigned char *p = malloc(voff(mk_len) + len + 1);
  if (!p)
    return SL_ERR_NOMEM;
  if (mk_len)
    memcpy(p, mk, mk_len);
  if (len)
    memcpy(p + voff(mk_len), val, len);
  bool found;
  size_t i = find(st, p, mk_len, &found);
  if (found) {
    free(st->e[i].p);
  } else {
    if (st->n == st->cap) {
      size_t cap = st->cap ? st->cap * 2 : 8;
      bent *e = realloc(st->e, cap * sizeof(*e));
      if (!e) {
        free(p);
        return SL_ERR_NOMEM;
      }
      st->e = e;
      st->cap = cap;
    }
    memmove(&st->e[i + 1], &st->e[i], (st->n - i) * sizeof(*st->e));
    st->n++;
  }
  st->e[i] = (bent){p, mk_len, len};
  return SL_OK;
}

/* ---- Public functions (sluice/broadcast.h) ------------------------------ */

/* The broadcast side alone writes: every instance sees the same broadcast
 * records, so states written only there stay equal on every instance. */
static int writable(const sl_bstate_t *st) {
  if (!st)
    return SL_ERR_INVAL;
  return st->owner->writable ? 0 : SL_ERR_STATE;
}

int sl_bstate_get(sl_ctx_t *ctx, sl_bstate_t *st, const void *mk, size_t mk_len,
                  const void **val, size_t *len) {
  (void)ctx;
  if (!st || (!mk && mk_len))
    return SL_ERR_INVAL;
  bool found;
  size_t i = find(st, mk, mk_len, &found);
  if (!found)
    return 0;
  *val = st->e[i].p + voff(st->e[i].klen);
  *len = st->e[i].vlen;
  return 1;
}

int sl_bstate_put(sl_ctx_t *ctx, sl_bstate_t *st, const void *mk, size_t mk_len,
                  const void *val, size_t len) {
  (void)ctx;
  int rc = writable(st);
  if (rc)
    return rc;
  if ((!mk && mk_len) || (!val && len))
    return SL_ERR_INVAL;
  return sl__bstate_put(st, mk, mk_len, val, len);
}

int sl_bstate_remove(sl_ctx_t *ctx, sl_bstate_t *st, const void *mk,
                     size_t mk_len) {
  (void)ctx;
  int rc = writable(st);
  if (rc)
    return rc;
  if (!mk && mk_len)
    return SL_ERR_INVAL;
  bool found;
  size_t i = find(st, mk, mk_len, &found);
  if (!found)
    return 0;
  free(st->e[i].p);
  memmove(&st->e[i], &st->e[i + 1], (st->n - i - 1) * sizeof(*st->e));
  st->n--;
  return 1;
}

int sl_bstate_clear(sl_ctx_t *ctx, sl_bstate_t *st) {
  (void)ctx;
  int rc = writable(st);
  if (!rc)
    bstate_clear(st);
  return rc;
}

size_t sl_bstate_size(sl_ctx_t *ctx, sl_bstate_t *st) {
  (void)ctx;
  return st ? st->n : 0;
}

int sl_bstate_iter(sl_ctx_t *ctx, sl_bstate_t *st, sl_bstate_iter_t *it) {
  (void)ctx;
  if (!st || !it)
    return SL_ERR_INVAL;
  it->st = st;
  it->i = 0;
  return SL_OK;
}

int sl_bstate_next(sl_bstate_iter_t *it, const void **mk, size_t *mk_len,
                   const void **val, size_t *len) {
  if (!it || !it->st || it->i >= it->st->n)
    return 0;
  const bent *e = &it->st->e[it->i++];
  *mk = e->p;
  *mk_len = e->klen;
  *val = e->p + voff(e->klen);
  *len = e->vlen;
  return 1;
}
