/* SPDX-License-Identifier: Apache-2.0 */
/* Private to lib/state: the registry of one operator instance's states
 * (struct sl__kstate, struct sl_state) and the TTL primitives shared by
 * state.c (values, reducing, aggregating) and collections.c (lists, maps). */
#ifndef SL_STATE_KSTATE_INT_H
#define SL_STATE_KSTATE_INT_H

#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "core/util.h"
#include "state/hashmap.h"
#include "state/state.h"

struct sl_state {
  struct sl__kstate *ks;
  char *name;
  sl_state_desc_t d; /* copy of the descriptor; d.name == name */
  char *layout;      /* what an operator adds to the layout, or NULL */
  char *adapts;      /* layout keys a restore may change, or NULL */
  char *restored;    /* the layout a restore recorded, or NULL */
  uint32_t id;       /* in the backend */
  bool ttl;
  size_t hdr;       /* bytes before the user's: 8 (timestamp) with TTL */
  size_t cleanup_n; /* incremental cleanup budget per access */
  /* A VALUE, REDUCING or AGGREGATING state without TTL on a backend with
   * direct probes (backend.h, ops->direct): its tables, resolved once at
   * registration, for key groups [dt_lo, dt_lo + dt_n), and dt_base, the
   * address key group 0's table would have, so that a key group's table
   * is one multiply-add away. NULL (0) otherwise: every access goes
   * through the backend's functions. */
  const struct hm_table *dt;
  uintptr_t dt_base;
  uintptr_t vdt_base; /* dt_base for a VALUE state, else 0 */
  /* ks for a VALUE state with direct tables, else the address of a
   * private byte, never a kstate (nor NULL): comparing it with the keyed
   * context's state checks owner, kind and tables at once. */
  const struct sl__kstate *vks;
  uint32_t dt_lo, dt_n;
  bool pf_direct;        /* its dt_base is in ks->pf_base */
  unsigned char *result; /* AGGREGATING with a result fn */
  /* A list iteration that returns expired elements once iterates this
   * copy while the stored list is cleaned. */
  unsigned char *list_copy;
  size_t list_copy_cap;
};

struct sl__kstate {
  sl__backend *be;
  bool own_be;
  char *uid;
  sl__now_fn now;
  void *now_opaque;
  sl_state_t **states;
  size_t n_states, cap_states;
  /* For the keyed prefetch, once per group of records: the dt_base of
   * the first SL__KS_PF states with direct tables, and whether any other
   * state is left (prefetched out of line). */
#define SL__KS_PF 4
  uintptr_t pf_base[SL__KS_PF];
  size_t n_pf;
  bool pf_others;
  /* Copies of expired values returned once (valid until the next call). */
  unsigned char *scratch;
  size_t scratch_cap;
};

/* Expired iff last + ttl <= now, written so that nothing overflows: with
 * ttl > 0, now - ttl is only computed when it is representable. */
static inline bool sl__ttl_expired(int64_t last, int64_t ttl, int64_t now) {
  if (ttl <= 0 || now < INT64_MIN + ttl)
    return false;
  return last <= now - ttl;
}

static inline int64_t sl__ts_load(const void *p) {
  int64_t t;
  memcpy(&t, p, sizeof(t));
  return t;
}
static inline void sl__ts_store(void *p, int64_t t) {
  memcpy(p, &t, sizeof(t));
}

/* The time a TTL state's access compares the current key's entries with:
 * processing time, or for event-time TTL the current element's event time
 * (sl__keyed_event_now). */
static inline int64_t sl__ttl_now(const sl__keyed *k, const sl_state_t *st) {
  if (st->d.ttl.time == SL_TTL_EVENT_TIME)
    return sl__keyed_event_now(k);
  return st->ks->now(st->ks->now_opaque);
}

static inline void sl__skey_of(sl__skey *sk, const sl__keyed *k,
                               const sl_state_t *st) {
  sk->state = st->id;
  sk->kg = k->kg;
  sk->hash = sl__state_hash(k->hash, k->ns, k->ns_len);
  sk->key = k->key;
  sk->key_len = k->key_len;
  sk->ns = k->ns;
  sk->ns_len = k->ns_len;
}

/* The handle must belong to the keyed context's state and be of kind. */
static inline int sl__state_check(const sl__keyed *k, const sl_state_t *st,
                                  sl_state_kind kind) {
  if (!k || !st || st->ks != k->state)
    return SL_ERR_STATE;
  return st->d.kind == kind ? 0 : SL_ERR_INVAL;
}

/* Starts an access of a TTL state: runs its incremental cleanup (at the
 * start, so it cannot free what the access returns), publishes the clock
 * of cleanup that runs elsewhere (the RocksDB compaction filter) and
 * returns sl__ttl_now(k, st), the time the access itself compares with.
 *
 * Cleanup removes other keys' entries, so for event-time TTL it must not
 * use the current element's time: the partitions a worker reads can be
 * far apart in event time, and an element of the leading one would expire
 * entries that elements of a lagging one still read as live, so results
 * would depend on how the partitions interleave. It uses the sweep clock
 * min(event_now, watermark) instead: every element still to come that is
 * not late has ts >= watermark, and event-time timers fire in timestamp
 * order, so an entry expired at the sweep clock is expired for every such
 * access too, and removing it early changes no result. */
int64_t sl__ttl_access(const sl__keyed *k, sl_state_t *st);

/* A write of the current key's entry, in two steps around the backend call
 * that finds or makes room for it: begin addresses the entry and, with
 * TTL, takes the time (running incremental cleanup); fill stamps the time
 * and copies the user's bytes after the header. */
static inline int64_t sl__write_begin(sl__skey *sk, const sl__keyed *k,
                                      sl_state_t *st) {
  sl__skey_of(sk, k, st);
  if (!st->ttl)
    return 0;
  return sl__ttl_access(k, st);
}
static inline void sl__write_fill(const sl_state_t *st, void *slot, int64_t now,
                                  const void *val, size_t len) {
  if (st->ttl)
    sl__ts_store(slot, now);
  if (len)
    memcpy((unsigned char *)slot + st->hdr, val, len);
}
/* The table of key group kg among st's direct tables at base
 * (st->dt_base, or st->vdt_base for a value state). kg is one the
 * backend owns, as for every state access (sl__skey's kg). */
static inline const struct hm_table *
sl__kg_tab_of(const sl_state_t *st, uintptr_t base, uint32_t kg) {
  assert(kg - st->dt_lo < st->dt_n);
  (void)st;
  return (const struct hm_table *)(base + (uintptr_t)kg * sizeof(hm_table));
}
/* The same for the current key's key group. */
static inline const struct hm_table *
sl__kg_tab(const sl__keyed *k, const sl_state_t *st, uintptr_t base) {
  return sl__kg_tab_of(st, base, k->kg);
}
/* The table for a direct probe of st by the current key, or NULL when
 * the access must go through the backend: no direct tables, a key other
 * than 8 bytes, a namespace (windows: sl__ns_slot). */
static inline const struct hm_table *sl__direct_tab(const sl__keyed *k,
                                                    const sl_state_t *st) {
  if (SL__LIKELY(st->dt_base != 0) && k->key_len == 8 && !k->ns_len)
    return sl__kg_tab(k, st, st->dt_base);
  return NULL;
}

/* sl__vmodify through the backend's slot: any state, any key. */
void *sl__vmodify_any(sl__keyed *k, sl_state_t *st, size_t size, bool *fresh,
                      int *err);

/* The slot of a read-modify-write of size user bytes (value_ptr, reducing
 * and aggregating add). *fresh: there was no live value (created, another
 * length, or expired). The timestamp is refreshed: it is a write. The
 * per-record case (an existing entry of that size, found by a direct
 * probe) is inlined, with no call at all; the rest is one call. */
static inline __attribute__((always_inline)) void *
sl__vmodify(sl__keyed *k, sl_state_t *st, size_t size, bool *fresh, int *err) {
  const struct hm_table *t;
  if (size <= HM_INL_BYTES - 8 && (t = sl__direct_tab(k, st)) != NULL) {
    void *p = sl__hm_direct_slot(t, k->key, k->hash, size);
    if (SL__LIKELY(p != NULL)) {
      *fresh = false;
      return p;
    }
  }
  return sl__vmodify_any(k, st, size, fresh, err);
}

/* Scratch of at least n bytes (8-byte aligned), NULL when out of memory. */
void *sl__kstate_scratch(struct sl__kstate *ks, size_t n);

#endif
