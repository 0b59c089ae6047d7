/* SPDX-License-Identifier: Apache-2.0 */
/* The hashmap backend's map state: each (key, ns) entry owns an
 * open-addressing table of map entries that deletes with tombstones, so
 * removals during an iteration never move the entries not yet visited. */
#include <stdlib.h>
#include <string.h>

#include "sluice/common.h"
#include "state/hashmap.h"

void sl__hm_map_free(hm_state *st, hm_slot *s) {
  hm_map *m = hm_map_of(s);
  if (!m)
    return;
  uint64_t kn = (uint64_t)hm_klen(s) + hm_nlen(s);
  size_t cap = m->slots ? (size_t)1 << m->bits : 0;
  for (size_t i = 0; i < cap; i++) {
    hm_mentry *me = m->slots[i].e;
    if (me && me != HM_MTOMB) {
      st->stats.entries--;
      st->stats.bytes -= kn + me->mk_len + me->val_len;
      free(me);
    }
  }
  free(m->slots);
  free(m);
}

static hm_mslot *hm_mfind(hm_map *m, const void *mk, size_t mk_len,
                          uint64_t mh) {
  if (!m->slots)
    return NULL;
  size_t mask = hm_mask(m->bits);
  for (size_t i = hm_idx(mh, m->bits);; i = (i + 1) & mask) {
    hm_mslot *s = &m->slots[i];
    if (!s->e)
      return NULL;
    if (s->hash == mh && s->e != HM_MTOMB && s->e->mk_len == mk_len &&
        (!mk_len || memcmp(s->e->data, mk, mk_len) == 0))
      return s;
  }
}

/* Rebuilds the slot array for at least `need` entries, dropping
 * tombstones (it may shrink). */
static int hm_mrehash(hm_map *m, size_t need) {
  uint8_t nb = HM_MIN_BITS;
  while (need * 2 > ((size_t)1 << nb))
    nb++;
  hm_mslot *ns = calloc((size_t)1 << nb, sizeof(*ns));
  if (!ns)
    return SL_ERR_NOMEM;
  size_t cap = m->slots ? (size_t)1 << m->bits : 0, mask = hm_mask(nb);
  for (size_t i = 0; i < cap; i++) {
    hm_mslot *s = &m->slots[i];
    if (!s->e || s->e == HM_MTOMB)
      continue;
    size_t j = hm_idx(s->hash, nb);
    while (ns[j].e)
      j = (j + 1) & mask;
    ns[j] = *s;
  }
  free(m->slots);
  m->slots = ns;
  m->bits = nb;
  m->used = m->count;
  return 0;
}

static hm_mslot *hm_minsert(hm_map *m, uint64_t mh, hm_mentry *e) {
  if (!m->slots || ((size_t)m->used + 1) * 4 > ((size_t)3 << m->bits)) {
    if (hm_mrehash(m, (size_t)m->count + 1))
      return NULL;
  }
  size_t mask = hm_mask(m->bits), i = hm_idx(mh, m->bits);
  while (m->slots[i].e && m->slots[i].e != HM_MTOMB)
    i = (i + 1) & mask;
  if (!m->slots[i].e)
    m->used++;
  m->slots[i].hash = mh;
  m->slots[i].e = e;
  m->count++;
  return &m->slots[i];
}

int sl__hm_map_get(sl__backend *be, const sl__skey *k, const void *mk,
                   size_t mk_len, uint64_t mh, void **val, size_t *len,
                   bool for_write) {
  hm *b = (hm *)be;
  hm_state *st = hm_st(b, k->state);
  bool old;
  hm_slot *s = sl__hm_find(b, hm_tab(b, st, k->kg), k, &old);
  if (!s)
    return 0;
  hm_mslot *ms = hm_mfind(hm_map_of(s), mk, mk_len, mh);
  if (!ms)
    return 0;
  if (for_write)
    hm_touch(b, st, k->kg, s);
  *val = hm_mval(ms->e);
  *len = ms->e->val_len;
  return 1;
}

int sl__hm_map_slot(sl__backend *be, const sl__skey *k, const void *mk,
                    size_t mk_len, uint64_t mh, size_t len, void **out) {
  hm *b = (hm *)be;
  if (!sl__hm_key_ok(k, len) || mk_len > UINT32_MAX)
    return SL_ERR_RANGE;
  hm_state *st = hm_st(b, k->state);
  hm_table *t = hm_tab(b, st, k->kg);
  bool old;
  hm_slot *top = sl__hm_find(b, t, k, &old);
  if (!top) {
    int rc;
    hm_map *m = calloc(1, sizeof(*m));
    if (!m)
      return SL_ERR_NOMEM;
    /* The top entry's value is the map's address (inline when key and ns
     * fit); the hm_map itself never moves, which cursors rely on. */
    if (!(top = sl__hm_create(b, st, t, k, sizeof(m), sizeof(m), &rc))) {
      free(m);
      return rc;
    }
    memcpy(hm_sval(top), &m, sizeof(m));
  } else {
    hm_touch(b, st, k->kg, top);
  }
  hm_map *m = hm_map_of(top);
  uint64_t kn = (uint64_t)hm_klen(top) + hm_nlen(top);
  hm_mslot *ms = hm_mfind(m, mk, mk_len, mh);
  if (ms) {
    hm_mentry *e = ms->e;
    if (len == e->val_len) {
      *out = hm_mval(e);
      return 1;
    }
    if (len > e->val_cap) {
      size_t cap = (len + 7) & ~(size_t)7;
      hm_mentry *n = realloc(e, sizeof(*e) + ((mk_len + 7) & ~(size_t)7) + cap);
      if (!n)
        return SL_ERR_NOMEM;
      n->val_cap = (uint32_t)cap;
      ms->e = e = n;
      b->base.epoch++;
    }
    st->stats.bytes = st->stats.bytes - e->val_len + len;
    e->val_len = (uint32_t)len;
    *out = hm_mval(e);
    return 2;
  }
  size_t mo = (mk_len + 7) & ~(size_t)7;
  hm_mentry *e = malloc(sizeof(*e) + mo + len);
  if (!e)
    goto nomem;
  e->mk_len = (uint32_t)mk_len;
  e->val_len = e->val_cap = (uint32_t)len;
  e->pad_ = 0;
  if (mk_len)
    memcpy(e->data, mk, mk_len);
  memset(e->data + mk_len, 0, mo - mk_len + len);
  if (!hm_minsert(m, mh, e)) {
    free(e);
    goto nomem;
  }
  st->stats.entries++;
  st->stats.bytes += kn + mk_len + len;
  *out = hm_mval(e);
  return 0;
nomem:
  if (!m->count) /* do not leave an empty map behind */
    sl__hm_del(be, k);
  return SL_ERR_NOMEM;
}

int sl__hm_map_remove(sl__backend *be, const sl__skey *k, const void *mk,
                      size_t mk_len, uint64_t mh) {
  hm *b = (hm *)be;
  hm_state *st = hm_st(b, k->state);
  hm_table *t = hm_tab(b, st, k->kg);
  bool old;
  hm_slot *s = sl__hm_find(b, t, k, &old);
  if (!s)
    return 0;
  hm_map *m = hm_map_of(s);
  hm_mslot *ms = hm_mfind(m, mk, mk_len, mh);
  if (!ms)
    return 0;
  hm_touch(b, st, k->kg, s);
  st->stats.entries--;
  st->stats.bytes -=
      (uint64_t)hm_klen(s) + hm_nlen(s) + ms->e->mk_len + ms->e->val_len;
  free(ms->e);
  ms->e = HM_MTOMB;
  m->count--;
  b->base.epoch++;
  if (!m->count) /* an empty map is no entry at all */
    sl__hm_remove(b, st, t, s, old);
  return 1;
}

int sl__hm_map_iter(sl__backend *be, sl__map_cursor *c) {
  hm *b = (hm *)be;
  bool old;
  hm_slot *s =
      sl__hm_find(b, hm_tab(b, hm_st(b, c->k.state), c->k.kg), &c->k, &old);
  c->p = s ? hm_map_of(s) : NULL;
  c->i = 0;
  c->epoch = be->epoch;
  return s != NULL;
}

int sl__hm_map_next(sl__backend *be, sl__map_cursor *c, const void **mk,
                    size_t *mk_len, void **val, size_t *len, bool for_write) {
  hm *b = (hm *)be;
  if (for_write && b->kg_known && b->kg_known[c->k.kg - be->kg_lo]) {
    /* Writes through the entries returned change the (key, ns). */
    hm_state *st = hm_st(b, c->k.state);
    bool old;
    hm_slot *s = sl__hm_find(b, hm_tab(b, st, c->k.kg), &c->k, &old);
    if (s)
      hm_touch(b, st, c->k.kg, s);
  }
  if (c->epoch != be->epoch) {
    /* Something was freed or moved: find the map again (it may be gone;
     * then the iteration is over). The hm_map itself never moves. */
    size_t i = c->i;
    sl__hm_map_iter(be, c);
    c->i = i;
  }
  hm_map *m = c->p;
  if (!m || !m->slots)
    return 0;
  size_t cap = (size_t)1 << m->bits;
  for (size_t i = c->i; i < cap; i++) {
    hm_mentry *e = m->slots[i].e;
    if (e && e != HM_MTOMB) {
      c->i = i + 1;
      *mk = e->data;
      *mk_len = e->mk_len;
      *val = hm_mval(e);
      *len = e->val_len;
      return 1;
    }
  }
  c->i = cap;
  return 0;
}
