/* SPDX-License-Identifier: Apache-2.0 */
/* Keyed state of one operator instance: the registry of its states over a
 * backend, the TTL layer (an 8-byte timestamp before the user's bytes,
 * update type, visibility, cleanup on read and incremental cleanup), and
 * value, reducing and aggregating state. Lists and maps: collections.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/util.h"
#include "state/kstate_int.h"

#define TTL_CLEANUP_DEFAULT 5 /* Flink's cleanupIncrementally(5, false) */

/* ---- Keyed-state lifecycle ----------------------------------------------- */

struct sl__kstate *sl__kstate_new(sl__backend *be, bool own_be, const char *uid,
                                  sl__now_fn now, void *now_opaque) {
  struct sl__kstate *ks = calloc(1, sizeof(*ks));
  if (ks)
    ks->uid = sl__strdup(uid ? uid : "");
  if (!ks || !ks->uid) {
    free(ks);
    if (own_be)
      sl__backend_close(be);
    return NULL;
  }
  ks->be = be;
  ks->own_be = own_be;
  ks->now = now;
  ks->now_opaque = now_opaque;
  return ks;
}

void sl__kstate_destroy(struct sl__kstate *ks) {
  if (!ks)
    return;
  for (size_t i = 0; i < ks->n_states; i++) {
    sl_state_t *st = ks->states[i];
    free(st->name);
    free(st->layout);
    free(st->adapts);
    free(st->restored);
    free(st->result);
    free(st->list_copy);
    free(st);
  }
  free(ks->states);
  free(ks->scratch);
  free(ks->uid);
  if (ks->own_be)
    sl__backend_close(ks->be);
  free(ks);
}

sl__backend *sl__kstate_backend(const struct sl__kstate *ks) {
  return ks->be;
}

void sl__kstate_close(sl__keyed *k) {
  sl__kstate_destroy(k->state);
  k->state = NULL;
}

/* One state's entries of the given hashes, each XORed with ns_hash
 * (sl__state_hash_ns; 0 for state under the key alone), in the worker's
 * own key groups: directly in its tables when it has them, else through
 * the backend. */
static inline void prefetch_one(sl__backend *be, const sl_state_t *st,
                                uint64_t ns_hash, const uint64_t *hash,
                                const uint32_t *kg, size_t stride, size_t n) {
  if (st->dt) {
    sl__hm_direct_prefetch_n(st->dt_base, false, 0, 0, ns_hash, hash, kg,
                             stride, n);
  } else if (be->ops->prefetch && !ns_hash) {
    be->ops->prefetch(be, st->id, hash, kg, stride, n);
  } else if (be->ops->prefetch) {
    /* The backend takes the entries' own hashes: made here, a few at a
     * time, beside their key groups. */
    struct {
      uint64_t hash;
      uint32_t kg;
    } q[16];
    const unsigned char *h = (const unsigned char *)hash;
    ptrdiff_t gd = (const unsigned char *)kg - h;
    while (n) {
      size_t m = n < 16 ? n : 16;
      for (size_t i = 0; i < m; i++, h += stride) {
        memcpy(&q[i].hash, h, sizeof(q[i].hash));
        memcpy(&q[i].kg, h + gd, sizeof(q[i].kg));
        q[i].hash = sl__state_hash_ns(q[i].hash, ns_hash);
      }
      be->ops->prefetch(be, st->id, &q[0].hash, &q[0].kg, sizeof(q[0]), m);
      n -= m;
    }
  }
}

void sl__state_prefetch(sl__keyed *k, const sl_state_t *st, uint64_t ns_hash,
                        const uint64_t *hash, const uint32_t *kg, size_t stride,
                        size_t n) {
  prefetch_one(k->state->be, st, ns_hash, hash, kg, stride, n);
}

/* The states not in ks->pf_base: direct ones past the first
 * SL__KS_PF, and through the backend those without direct tables. */
static __attribute__((noinline)) void prefetch_others(struct sl__kstate *ks,
                                                      const uint64_t *hash,
                                                      const uint32_t *kg,
                                                      size_t stride, size_t n) {
  sl__backend *be = ks->be;
  for (size_t i = 0; i < ks->n_states; i++) {
    const sl_state_t *st = ks->states[i];
    if (!st->pf_direct)
      prefetch_one(be, st, 0, hash, kg, stride, n);
  }
}

void sl__kstate_prefetch(struct sl__kstate *ks, const uint64_t *hash,
                         const uint32_t *kg, size_t stride, size_t n) {
  if (!ks)
    return;
  /* The states with direct tables without a call (their tables are
   * known), so that the usual case, every state direct, is a leaf. */
  for (size_t i = 0; i < ks->n_pf; i++)
    sl__hm_direct_prefetch_n(ks->pf_base[i], false, 0, 0, 0, hash, kg, stride,
                             n);
  if (ks->pf_others)
    prefetch_others(ks, hash, kg, stride, n);
}

void *sl__kstate_scratch(struct sl__kstate *ks, size_t n) {
  if (n > ks->scratch_cap || !ks->scratch) {
    size_t cap = n < 256 ? 256 : n;
    void *p = realloc(ks->scratch, cap);
    if (!p)
      return NULL;
    ks->scratch = p;
    ks->scratch_cap = cap;
  }
  return ks->scratch;
}

/* ---- Registry ----------------------------------------------------------- */

static int desc_check(const sl_state_desc_t *d, char *err, size_t errlen) {
  if (!d || !d->name || !*d->name) {
    sl__errf(err, errlen, "state descriptor without a name");
    return SL_ERR_INVAL;
  }
  const char *why = NULL;
  const sl_state_ttl_t *t = &d->ttl;
  if ((unsigned)d->kind > SL_STATE_AGGREGATING)
    why = "unknown kind";
  else if (t->ttl_ms < 0)
    why = "negative ttl_ms";
  else if ((unsigned)t->update > SL_TTL_ON_READ_AND_WRITE ||
           (unsigned)t->visibility > SL_TTL_RETURN_EXPIRED_IF_NOT_CLEANED_UP ||
           (unsigned)t->time > SL_TTL_EVENT_TIME)
    why = "unknown TTL update type, visibility or time domain";
  else if (d->kind == SL_STATE_REDUCING && (!d->reduce || !d->value_size))
    why = "a reducing state needs reduce and value_size > 0";
  else if (d->kind == SL_STATE_AGGREGATING && (!d->add || !d->acc_size))
    why = "an aggregating state needs add and acc_size > 0";
  else if (d->kind == SL_STATE_AGGREGATING && d->result && !d->result_size)
    why = "an aggregating state with result needs result_size > 0";
  else if (d->value_size > UINT32_MAX / 2 || d->acc_size > UINT32_MAX / 2)
    why = "value_size / acc_size too large";
  if (why) {
    sl__errf(err, errlen, "state \"%s\": %s", d->name, why);
    return SL_ERR_INVAL;
  }
  return 0;
}

/* What must match for a second registration to share the first's handle
 * (the stored layout depends on all of it). */
static const char *const kind_names[] = {"value", "list", "map", "reducing",
                                         "aggregating"};

static bool desc_same(const sl_state_desc_t *a, const sl_state_desc_t *b) {
  bool ttl_a = a->ttl.ttl_ms > 0, ttl_b = b->ttl.ttl_ms > 0;
  if (a->kind != b->kind || ttl_a != ttl_b || a->version != b->version)
    return false;
  if (ttl_a &&
      (a->ttl.ttl_ms != b->ttl.ttl_ms || a->ttl.update != b->ttl.update ||
       a->ttl.visibility != b->ttl.visibility || a->ttl.time != b->ttl.time))
    return false;
  switch (a->kind) {
  case SL_STATE_REDUCING:
    return a->value_size == b->value_size;
  case SL_STATE_AGGREGATING:
    return a->acc_size == b->acc_size &&
           (a->result ? a->result_size : 0) == (b->result ? b->result_size : 0);
  default:
    return true;
  }
}

static sl__btype btype_of(sl_state_kind kind) {
  return kind == SL_STATE_LIST  ? SL__BT_LIST
         : kind == SL_STATE_MAP ? SL__BT_MAP
                                : SL__BT_VALUE;
}

/* What sl_state_t.vks is for every state but a VALUE state with direct
 * tables. */
static const char no_vks;

int sl__state_register(struct sl__kstate *ks, const sl_state_desc_t *desc,
                       sl_state_t **out, char *err, size_t errlen) {
  *out = NULL;
  int rc = desc_check(desc, err, errlen);
  if (rc)
    return rc;
  for (size_t i = 0; i < ks->n_states; i++) {
    sl_state_t *st = ks->states[i];
    if (strcmp(st->name, desc->name) != 0)
      continue;
    if (!desc_same(&st->d, desc)) {
      sl__errf(err, errlen,
               "state \"%s\" is already registered with another descriptor",
               desc->name);
      return SL_ERR_INVAL;
    }
    *out = st;
    return 0;
  }
  if (ks->n_states == ks->cap_states) {
    size_t cap = ks->cap_states ? ks->cap_states * 2 : 4;
    sl_state_t **n = realloc(ks->states, cap * sizeof(*n));
    if (!n)
      goto nomem;
    ks->states = n;
    ks->cap_states = cap;
  }
  sl_state_t *st = calloc(1, sizeof(*st));
  if (st)
    st->vks = (const struct sl__kstate *)(const void *)&no_vks;
  if (!st)
    goto nomem;
  st->ks = ks;
  st->d = *desc;
  st->name = sl__strdup(desc->name);
  st->d.name = st->name;
  st->ttl = desc->ttl.ttl_ms > 0;
  st->hdr = st->ttl ? sizeof(int64_t) : 0;
  int per = desc->ttl.cleanup_per_access;
  st->cleanup_n = !st->ttl || per < 0 ? 0
                  : per == 0          ? TTL_CLEANUP_DEFAULT
                                      : (size_t)per;
  if (desc->kind == SL_STATE_AGGREGATING && desc->result)
    st->result = malloc(desc->result_size);
  /* Backend names carry the operator uid, so operators may share a
   * backend and a checkpoint maps each state to its operator. */
  size_t n = strlen(ks->uid) + strlen(desc->name) + 2;
  char *full = malloc(n);
  if (!st->name || !full ||
      (desc->kind == SL_STATE_AGGREGATING && desc->result && !st->result)) {
    free(full);
    free(st->name);
    free(st->result);
    free(st);
    goto nomem;
  }
  snprintf(full, n, "%s/%s", ks->uid, desc->name);
  rc = ks->be->ops->register_state(ks->be, full, btype_of(desc->kind), &st->id);
  if (rc) {
    if (rc == SL_ERR_INVAL)
      sl__errf(err, errlen,
               "state \"%s\" is stored as another kind than %s (its kind "
               "changed since the checkpoint the state was restored from)",
               full,
               kind_names[desc->kind <= SL_STATE_AGGREGATING ? desc->kind : 0]);
    else
      sl__errf(err, errlen, "cannot register state \"%s\": %s", full,
               ks->be->errmsg ? ks->be->errmsg : sl_strerror(rc));
    free(full);
    free(st->name);
    free(st->result);
    free(st);
    return rc;
  }
  free(full);
  /* Direct probes for the per-record accesses of value-typed states; TTL
   * states keep the general path (timestamps, cleanup). */
  if (!st->ttl && desc->kind != SL_STATE_LIST && desc->kind != SL_STATE_MAP &&
      ks->be->ops->direct && (st->dt = ks->be->ops->direct(ks->be, st->id))) {
    st->dt_lo = ks->be->kg_lo;
    st->dt_n = ks->be->kg_hi - ks->be->kg_lo;
    /* Not 0: the tables are on the heap, far above kg_lo tables. */
    st->dt_base = (uintptr_t)st->dt - (uintptr_t)st->dt_lo * sizeof(hm_table);
    if (desc->kind == SL_STATE_VALUE) {
      st->vdt_base = st->dt_base;
      st->vks = ks;
    }
    if (ks->n_pf < SL__KS_PF) {
      ks->pf_base[ks->n_pf++] = st->dt_base;
      st->pf_direct = true;
    }
  }
  if (!st->pf_direct)
    ks->pf_others = true;
  /* A backend that expires entries itself (the RocksDB compaction filter)
   * needs the TTL. */
  if (st->ttl && ks->be->ops->set_ttl)
    ks->be->ops->set_ttl(ks->be, st->id, desc->ttl.ttl_ms,
                         desc->ttl.time == SL_TTL_EVENT_TIME);
  ks->states[ks->n_states++] = st;
  *out = st;
  return 0;
nomem:
  sl__errf(err, errlen, "state \"%s\": out of memory", desc->name);
  return SL_ERR_NOMEM;
}

uint32_t sl__state_id(const sl_state_t *st) {
  return st->id;
}

const char *sl__state_name(const sl_state_t *st) {
  return st->name;
}

/* ---- Layout (checkpoint/layout.h) --------------------------------------- */

void sl__state_layout(const sl_state_t *st, char *buf, size_t len) {
  const sl_state_desc_t *d = &st->d;
  int n = snprintf(buf, len, "kind=%s version=%u ttl=%s",
                   kind_names[d->kind <= SL_STATE_AGGREGATING ? d->kind : 0],
                   d->version, st->ttl ? "on" : "off");
  size_t l = n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
  if (d->kind == SL_STATE_REDUCING)
    n = snprintf(buf + l, len - l, " size=%zu", d->value_size);
  else if (d->kind == SL_STATE_AGGREGATING)
    n = snprintf(buf + l, len - l, " acc=%zu result=%zu", d->acc_size,
                 d->result ? d->result_size : 0);
  else
    n = 0;
  l += n < 0 ? 0 : (size_t)n < len - l ? (size_t)n : len - l - 1;
  if (st->layout)
    snprintf(buf + l, len - l, " %s", st->layout);
}

int sl__state_set_layout(sl_state_t *st, const char *layout) {
  char *c = sl__strdup(layout);
  if (!c)
    return SL_ERR_NOMEM;
  free(st->layout);
  st->layout = c;
  return 0;
}

int sl__state_set_layout_adapts(sl_state_t *st, const char *keys) {
  char *c = sl__strdup(keys);
  if (!c)
    return SL_ERR_NOMEM;
  free(st->adapts);
  st->adapts = c;
  return 0;
}

const char *sl__state_layout_adapts(const sl_state_t *st) {
  return st->adapts;
}

int sl__state_set_restored(sl_state_t *st, const char *layout, size_t len) {
  char *c = NULL;
  if (layout && !(c = strndup(layout, len)))
    return SL_ERR_NOMEM;
  free(st->restored);
  st->restored = c;
  return 0;
}

const char *sl__state_restored(const sl_state_t *st) {
  return st->restored;
}

sl_state_t *sl__kstate_state(const struct sl__kstate *ks, size_t i) {
  return ks && i < ks->n_states ? ks->states[i] : NULL;
}

sl_state_t *sl__kstate_find(const struct sl__kstate *ks, const char *name,
                            size_t len) {
  for (size_t i = 0; ks && i < ks->n_states; i++)
    if (strlen(ks->states[i]->name) == len &&
        memcmp(ks->states[i]->name, name, len) == 0)
      return ks->states[i];
  return NULL;
}

/* ---- TTL ---------------------------------------------------------------- */

typedef struct ttl_pred_arg {
  int64_t ttl, now;
} ttl_pred_arg;

static bool ttl_pred(const void *val, size_t len, void *opaque) {
  const ttl_pred_arg *a = opaque;
  /* Shorter than a timestamp cannot be a TTL item: drop it. */
  return len < sizeof(int64_t) ||
         sl__ttl_expired(sl__ts_load(val), a->ttl, a->now);
}

int64_t sl__ttl_access(const sl__keyed *k, sl_state_t *st) {
  sl__backend *be = st->ks->be;
  int64_t now = sl__ttl_now(k, st), sweep = now;
  bool event = st->d.ttl.time == SL_TTL_EVENT_TIME;
  if (event) {
    int64_t wm = k->wm ? *k->wm : SL_TS_MIN;
    sweep = wm < now ? wm : now;
  }
  sl__backend_ttl_clock(be, event, sweep);
  if (st->cleanup_n && be->ops->cleanup) {
    ttl_pred_arg a = {st->d.ttl.ttl_ms, sweep};
    be->ops->cleanup(be, st->id, st->cleanup_n, ttl_pred, &a);
  }
  return now;
}

void sl__kstate_cleanup_full(struct sl__kstate *ks, int64_t event_now) {
  if (!ks || !ks->be->ops->cleanup)
    return; /* e.g. RocksDB: its compaction filter drops expired entries */
  for (size_t i = 0; i < ks->n_states; i++) {
    sl_state_t *st = ks->states[i];
    if (!st->ttl)
      continue;
    int64_t now = st->d.ttl.time == SL_TTL_EVENT_TIME ? event_now
                                                      : ks->now(ks->now_opaque);
    ttl_pred_arg a = {st->d.ttl.ttl_ms, now};
    ks->be->ops->cleanup(ks->be, st->id, SIZE_MAX, ttl_pred, &a);
  }
}

/* Reads a VALUE-typed entry through the TTL layer: 1 with the user's
 * bytes, 0 when absent or expired. An expired entry is removed by this
 * read; with RETURN_EXPIRED_IF_NOT_CLEANED_UP a copy is returned once. */
static int vread(sl__keyed *k, sl_state_t *st, void **val, size_t *len) {
  sl__backend *be = st->ks->be;
  sl__skey sk;
  void *p;
  size_t l;
  const struct hm_table *t = sl__direct_tab(k, st);
  if (t && (p = sl__hm_direct_get(t, k->key, k->hash, &l)) != NULL) {
    *val = p;
    *len = l;
    return 1;
  }
  sl__skey_of(&sk, k, st);
  if (!st->ttl) {
    int rc = be->ops->get(be, &sk, &p, &l, false);
    if (rc == 1) {
      *val = p;
      *len = l;
    }
    return rc;
  }
  int64_t now = sl__ttl_access(k, st);
  bool touch = st->d.ttl.update == SL_TTL_ON_READ_AND_WRITE;
  int rc = be->ops->get(be, &sk, &p, &l, touch);
  if (rc != 1)
    return rc;
  if (l < sizeof(int64_t))
    return SL_ERR_CORRUPT;
  if (!sl__ttl_expired(sl__ts_load(p), st->d.ttl.ttl_ms, now)) {
    if (touch)
      sl__ts_store(p, now);
    *val = (unsigned char *)p + sizeof(int64_t);
    *len = l - sizeof(int64_t);
    return 1;
  }
  if (st->d.ttl.visibility == SL_TTL_RETURN_EXPIRED_IF_NOT_CLEANED_UP) {
    unsigned char *c = sl__kstate_scratch(st->ks, l);
    if (!c)
      return SL_ERR_NOMEM;
    memcpy(c, (unsigned char *)p + sizeof(int64_t), l - sizeof(int64_t));
    be->ops->del(be, &sk);
    *val = c;
    *len = l - sizeof(int64_t);
    return 1;
  }
  be->ops->del(be, &sk);
  return 0;
}

/* ---- Value state -------------------------------------------------------- */

/* Out of line, so that the per-record callers keep their registers for
 * the direct probe. */
__attribute__((noinline)) void *sl__vmodify_any(sl__keyed *k, sl_state_t *st,
                                                size_t size, bool *fresh,
                                                int *err) {
  sl__backend *be = st->ks->be;
  sl__skey sk;
  void *p;
  sl__skey_of(&sk, k, st);
  if (SL__LIKELY(!st->ttl)) {
    int rc = be->ops->slot(be, &sk, size, &p);
    if (SL__UNLIKELY(rc < 0)) {
      *err = rc;
      return NULL;
    }
    *fresh = rc != 1;
    return p;
  }
  int64_t now = sl__ttl_access(k, st);
  int rc = be->ops->slot(be, &sk, size + sizeof(int64_t), &p);
  if (rc < 0) {
    *err = rc;
    return NULL;
  }
  *fresh = rc != 1 || sl__ttl_expired(sl__ts_load(p), st->d.ttl.ttl_ms, now);
  sl__ts_store(p, now);
  return (unsigned char *)p + sizeof(int64_t);
}

/* Reading a value or a reducing state's value: the same stored bytes. */
static int vget(sl__keyed *k, sl_state_t *st, sl_state_kind kind,
                const void **val, size_t *len) {
  /* Set on every path: inlined into a caller by link-time optimization,
   * the read's paths are too many for the compiler to see *val set
   * wherever the caller goes on to use it, and a caller built with
   * -Werror would not build. */
  *val = NULL;
  int rc = sl__state_check(k, st, kind);
  if (rc)
    return rc;
  void *p;
  rc = vread(k, st, &p, len);
  if (rc == 1)
    *val = p;
  return rc;
}

int sl__value_get(sl__keyed *k, sl_state_t *st, const void **val, size_t *len) {
  return vget(k, st, SL_STATE_VALUE, val, len);
}

int sl__value_put(sl__keyed *k, sl_state_t *st, const void *val, size_t len) {
  int rc = sl__state_check(k, st, SL_STATE_VALUE);
  if (rc)
    return rc;
  sl__backend *be = st->ks->be;
  sl__skey sk;
  void *p;
  const struct hm_table *t;
  if (len <= HM_INL_BYTES - 8 && (t = sl__direct_tab(k, st)) != NULL &&
      (p = sl__hm_direct_slot(t, k->key, k->hash, len)) != NULL) {
    if (len)
      memcpy(p, val, len);
    return 0;
  }
  int64_t now = sl__write_begin(&sk, k, st);
  if ((rc = be->ops->slot(be, &sk, len + st->hdr, &p)) < 0)
    return rc;
  sl__write_fill(st, p, now, val, len);
  return 0;
}

/* sl__value_ptr's general case: any state, any key, through the
 * backend's slot. */
static __attribute__((noinline)) void *value_ptr_any(sl__keyed *k,
                                                     sl_state_t *st,
                                                     size_t size, bool *created,
                                                     int *err) {
  int rc = sl__state_check(k, st, SL_STATE_VALUE);
  if (SL__UNLIKELY(rc)) {
    *err = rc;
    return NULL;
  }
  bool fresh;
  void *p = sl__vmodify_any(k, st, size, &fresh, err);
  if (SL__LIKELY(p != NULL)) {
    if (SL__UNLIKELY(fresh) && size)
      memset(p, 0, size);
    if (created)
      *created = fresh;
  }
  return p;
}

/* The per-record case of sl__value_ptr, on its own so that a caller
 * (the public sl_value_ptr) can keep everything else out of line: an
 * existing value of that size found by a direct probe, decided with as
 * few tests as it needs (vks is the owner for a value state with direct
 * tables only, so one compare stands for the owner, kind and tables
 * checks). NULL for anything else, with nothing changed. The release
 * build's link-time optimization inlines it (always: left to itself, gcc
 * may split the probe off into a call). */
inline __attribute__((always_inline)) void *
sl__value_ptr_hit_key(const sl__keyed *k, const sl_state_t *st, uint32_t kg,
                      const void *key, size_t key_len, uint64_t hash,
                      size_t size) {
  if (SL__LIKELY(k && st && st->vks == k->state) && size <= HM_INL_BYTES - 8 &&
      key_len == 8) {
    return sl__hm_direct_slot(sl__kg_tab_of(st, st->vdt_base, kg), key, hash,
                              size);
  }
  return NULL;
}

inline __attribute__((always_inline)) void *
sl__value_ptr_hit(const sl__keyed *k, const sl_state_t *st, size_t size) {
  if (SL__LIKELY(k != NULL) && !k->ns_len)
    return sl__value_ptr_hit_key(k, st, k->kg, k->key, k->key_len, k->hash,
                                 size);
  return NULL;
}

const void *sl__value_peek_key(const sl_state_t *st, uint32_t kg,
                               const void *key, size_t key_len, uint64_t hash,
                               size_t *len) {
  if (st->vdt_base != 0 && key_len == 8 && kg - st->dt_lo < st->dt_n)
    return sl__hm_direct_get(sl__kg_tab_of(st, st->vdt_base, kg), key, hash,
                             len);
  return NULL;
}

/* Inlined by the release build's link-time optimization, as
 * sl__value_ptr_hit is (left to itself, gcc makes it a call). */
inline __attribute__((always_inline)) void *
sl__ns_slot_hit_key(const sl_state_t *st, uint32_t kg, const void *key,
                    size_t key_len, const int64_t *ns, uint64_t hash,
                    size_t size) {
  if (SL__LIKELY(st->dt_base != 0) && size <= HM_INL_BYTES - 16 &&
      key_len == 8) {
    return sl__hm_direct_slot_ns8(sl__kg_tab_of(st, st->dt_base, kg), key, ns,
                                  hash, size);
  }
  return NULL;
}

inline __attribute__((always_inline)) void *
sl__ns_slot_hit(const sl__keyed *k, const sl_state_t *st, const int64_t *ns,
                uint64_t hash, size_t size) {
  return sl__ns_slot_hit_key(st, k->kg, k->key, k->key_len, ns, hash, size);
}

int sl__ns_slot(sl__keyed *k, sl_state_t *st, uint64_t hash, size_t size,
                void **out) {
  if (k->ns_len == 8) {
    void *p = sl__ns_slot_hit(k, st, k->ns, hash, size);
    if (SL__LIKELY(p != NULL)) {
      *out = p;
      return 1;
    }
  }
  sl__backend *be = k->state->be;
  sl__skey sk = {st->id, k->kg, hash, k->key, k->key_len, k->ns, k->ns_len};
  return be->ops->slot(be, &sk, size, out);
}

void *sl__value_ptr(sl__keyed *k, sl_state_t *st, size_t size, bool *created,
                    int *err) {
  void *p = sl__value_ptr_hit(k, st, size);
  if (SL__LIKELY(p != NULL)) {
    if (created)
      *created = false;
    return p;
  }
  return value_ptr_any(k, st, size, created, err);
}

int sl__state_clear(sl__keyed *k, sl_state_t *st) {
  if (!k || !st || st->ks != k->state)
    return SL_ERR_STATE;
  sl__backend *be = st->ks->be;
  sl__skey sk;
  sl__skey_of(&sk, k, st);
  if (st->ttl)
    sl__ttl_access(k, st);
  int rc = be->ops->del(be, &sk);
  return rc < 0 ? rc : 0;
}

/* ---- Reducing and aggregating state ------------------------------------- */

int sl__reducing_add(sl__keyed *k, sl_state_t *st, const void *val,
                     size_t len) {
  int rc = sl__state_check(k, st, SL_STATE_REDUCING);
  if (rc)
    return rc;
  if (len != st->d.value_size)
    return SL_ERR_INVAL;
  bool fresh;
  void *acc = sl__vmodify(k, st, len, &fresh, &rc);
  if (!acc)
    return rc;
  if (fresh) /* Flink: the first value is the accumulator */
    memcpy(acc, val, len);
  else if (st->d.reduce(acc, val, len, st->d.opaque))
    return SL_ERR_USER;
  return 0;
}

int sl__reducing_get(sl__keyed *k, sl_state_t *st, const void **val,
                     size_t *len) {
  return vget(k, st, SL_STATE_REDUCING, val, len);
}

static void acc_init(sl_state_t *st, void *acc) {
  memset(acc, 0, st->d.acc_size);
  if (st->d.init)
    st->d.init(acc, st->d.opaque);
}

int sl__aggregating_add(sl__keyed *k, sl_state_t *st, const void *in,
                        size_t len) {
  int rc = sl__state_check(k, st, SL_STATE_AGGREGATING);
  if (rc)
    return rc;
  bool fresh;
  void *acc = sl__vmodify(k, st, st->d.acc_size, &fresh, &rc);
  if (!acc)
    return rc;
  if (fresh)
    acc_init(st, acc);
  return st->d.add(acc, in, len, st->d.opaque) ? SL_ERR_USER : 0;
}

int sl__aggregating_get(sl__keyed *k, sl_state_t *st, const void **out,
                        size_t *len) {
  int rc = sl__state_check(k, st, SL_STATE_AGGREGATING);
  if (rc)
    return rc;
  void *acc;
  size_t l;
  if ((rc = vread(k, st, &acc, &l)) != 1)
    return rc;
  if (l != st->d.acc_size)
    return SL_ERR_CORRUPT;
  if (!st->d.result) {
    *out = acc;
    *len = l;
    return 1;
  }
  st->d.result(acc, st->result, st->d.opaque);
  *out = st->result;
  *len = st->d.result_size;
  return 1;
}

/* ---- Merging namespaces (session windows) ------------------------------- */

/* Folds one source entry (a private copy: the backend calls below may
 * move the stored bytes) into the target (key, ns). */
static int merge_one(sl__keyed *k, sl_state_t *st, const sl__skey *tk,
                     const unsigned char *src, size_t len, int64_t now) {
  sl__backend *be = st->ks->be;
  int64_t ttl = st->d.ttl.ttl_ms;
  if (st->d.kind == SL_STATE_LIST) {
    /* Elements keep their own timestamps, as they would in one list. */
    for (size_t off = 0; off + SL__LIST_HDR <= len;) {
      size_t el = sl__list_elem_len(src + off);
      const unsigned char *e = src + off + SL__LIST_HDR;
      off += sl__list_frame(el);
      if (off > len)
        return SL_ERR_CORRUPT;
      if (st->ttl &&
          (el < st->hdr || sl__ttl_expired(sl__ts_load(e), ttl, now)))
        continue;
      void *slot;
      int rc = be->ops->list_append(be, tk, el, &slot);
      if (rc < 0)
        return rc;
      if (el)
        memcpy(slot, e, el);
    }
    return 0;
  }
  size_t size =
      st->d.kind == SL_STATE_REDUCING ? st->d.value_size : st->d.acc_size;
  if (len != size + st->hdr)
    return SL_ERR_CORRUPT;
  if (st->ttl && sl__ttl_expired(sl__ts_load(src), ttl, now))
    return 0;
  src += st->hdr;
  bool fresh;
  int rc;
  void *acc = sl__vmodify(k, st, size, &fresh, &rc);
  if (!acc)
    return rc;
  if (fresh)
    memcpy(acc, src, size);
  else if (st->d.kind == SL_STATE_AGGREGATING)
    st->d.merge(acc, src, st->d.opaque);
  else if (st->d.reduce(acc, src, size, st->d.opaque))
    return SL_ERR_USER;
  return 0;
}

int sl__state_merge_ns(sl__keyed *k, sl_state_t *st, const void *const *src_ns,
                       const size_t *src_ns_len, size_t n) {
  if (!k || !st || st->ks != k->state)
    return SL_ERR_STATE;
  sl_state_kind kind = st->d.kind;
  if (kind != SL_STATE_LIST && kind != SL_STATE_REDUCING &&
      (kind != SL_STATE_AGGREGATING || !st->d.merge))
    return SL_ERR_INVAL;
  sl__backend *be = st->ks->be;
  int64_t now = 0;
  if (st->ttl) {
    now = sl__ttl_access(k, st);
  }
  sl__skey tk;
  sl__skey_of(&tk, k, st);
  for (size_t i = 0; i < n; i++) {
    if (src_ns_len[i] == k->ns_len &&
        (!k->ns_len || memcmp(src_ns[i], k->ns, k->ns_len) == 0))
      continue; /* merging the target into itself */
    sl__keyed src = *k;
    src.ns = src_ns[i];
    src.ns_len = src_ns_len[i];
    sl__skey sk;
    void *p;
    size_t l;
    sl__skey_of(&sk, &src, st);
    int rc = be->ops->get(be, &sk, &p, &l, false);
    if (rc < 0)
      return rc;
    if (rc == 0)
      continue;
    unsigned char *copy = sl__kstate_scratch(st->ks, l);
    if (!copy)
      return SL_ERR_NOMEM;
    memcpy(copy, p, l);
    if ((rc = be->ops->del(be, &sk)) < 0 ||
        (rc = merge_one(k, st, &tk, copy, l, now)) < 0)
      return rc;
  }
  return 0;
}

void sl__kstate_stats(const struct sl__kstate *ks, uint64_t *entries,
                      uint64_t *bytes) {
  *entries = *bytes = 0;
  if (!ks || !ks->be->ops->stats)
    return;
  for (size_t i = 0; i < ks->n_states; i++) {
    sl__state_stats st = {0, 0};
    ks->be->ops->stats(ks->be, ks->states[i]->id, &st);
    *entries += st.entries;
    *bytes += st.bytes;
  }
}
