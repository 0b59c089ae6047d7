/* SPDX-License-Identifier: Apache-2.0 */
/* Keyed state as the runtime and operators see it: creating the state of
 * a keyed operator instance, and the state functions on an sl__keyed (the
 * public sl_* functions of sluice/state.h are thin wrappers over these,
 * which tests and window operators call directly). */
#ifndef SL_STATE_STATE_H
#define SL_STATE_STATE_H

#include <stdbool.h>

#include "sluice/broadcast.h"
#include "sluice/query.h"
#include "sluice/state.h"
#include "state/backend.h"
#include "state/keyed.h"

struct sl__kstate;

/* Processing time for TTL: the operator's clock (sl_ctx_now, given by the
 * runtime), or a manual one in tests. */
typedef int64_t (*sl__now_fn)(void *opaque);

/* Frees k->state (made by the runtime's sl__kstate_open, runtime/keyed.h)
 * and sets it to NULL; a no-op when k->state is NULL. */
void sl__kstate_close(sl__keyed *k);

/* Lower level: a keyed state over an existing backend be (taking
 * ownership when own_be), with states named "<uid>/<name>" in it, so
 * several operators can share one backend per worker. NULL when out of
 * memory (an owned be is then closed). */
struct sl__kstate *sl__kstate_new(sl__backend *be, bool own_be, const char *uid,
                                  sl__now_fn now, void *now_opaque);
void sl__kstate_destroy(struct sl__kstate *ks);
sl__backend *sl__kstate_backend(const struct sl__kstate *ks);

/* Asks the backend to start loading the entries that n records will
 * touch (empty namespace), key i with its hash at (char *)hash + i * stride
 * and its key group at (char *)kg + i * stride: see the backend's
 * prefetch. At most one backend call per state for all n, none for a
 * state with direct probes (its tables are known). The key groups are
 * owned by the backend, as for every state access (the records of a
 * keyed batch). */
void sl__kstate_prefetch(struct sl__kstate *ks, const uint64_t *hash,
                         const uint32_t *kg, size_t stride, size_t n);

/* Cleanup on snapshot: removes every expired item of the TTL states of ks
 * (event-time TTL compares with event_now, e.g. the operator's watermark,
 * which no later element can be older than). */
void sl__kstate_cleanup_full(struct sl__kstate *ks, int64_t event_now);

/* Entries and bytes of every state of ks, summed (for metrics). Owning
 * worker only, like every backend call. */
void sl__kstate_stats(const struct sl__kstate *ks, uint64_t *entries,
                      uint64_t *bytes);

/* sl_state_register() without a job: SL_ERR_INVAL / SL_ERR_NOMEM with a
 * message in err. */
int sl__state_register(struct sl__kstate *ks, const sl_state_desc_t *desc,
                       sl_state_t **out, char *err, size_t errlen);
/* Whether a state opted in to queries (sl_state_desc_t.queryable). */
bool sl__state_queryable(const sl_state_t *st);

/* A query from outside the job (sluice/query.h), on the owning worker:
 * copies the live items of key's entry (empty namespace; hash and kg as
 * key_by computes them) into a new result. For a map, mk non-NULL asks
 * for that map key only. Nothing is changed (no TTL refresh, no cleanup);
 * an item is live unless its TTL expired at proc_now (processing-time
 * TTL) or event_now (event-time TTL), whatever the visibility. Returns 1
 * with *out, 0 when nothing is live (*out NULL), or a negative error. */
int sl__state_query(sl_state_t *st, const void *key, size_t key_len,
                    uint64_t hash, uint32_t kg, const void *mk, size_t mk_len,
                    int64_t proc_now, int64_t event_now,
                    sl_query_result_t **out);

/* The layout of a state as a checkpoint records it (checkpoint/layout.h):
 * kind, version, TTL on or off, sizes, then what the operator added with
 * sl__state_set_layout() (e.g. a window's path and function). */
void sl__state_layout(const sl_state_t *st, char *buf, size_t len);
/* Adds operator-specific text (key=value pairs) to the state's layout;
 * call it right after registering. SL_OK or SL_ERR_NOMEM. */
int sl__state_set_layout(sl_state_t *st, const char *layout);
/* Names keys of that text (space-separated) whose value a restore may
 * change: it does not compare them, and the operator adapts the restored
 * bytes to the value it registers now, reading the recorded value from
 * sl__state_restored() (e.g. a session window's gap). SL_OK or
 * SL_ERR_NOMEM. */
int sl__state_set_layout_adapts(sl_state_t *st, const char *keys);
const char *sl__state_layout_adapts(const sl_state_t *st); /* NULL: none */
/* The layout the checkpoint being restored recorded for the state (set
 * by the restore before it calls the operators' restored hook, layout
 * NULL: none), or NULL when none was restored. SL_OK or SL_ERR_NOMEM. */
int sl__state_set_restored(sl_state_t *st, const char *layout, size_t len);
const char *sl__state_restored(const sl_state_t *st);
/* The i-th state registered (NULL past the last), and the state of a name
 * (NULL when none is registered under it). */
sl_state_t *sl__kstate_state(const struct sl__kstate *ks, size_t i);
sl_state_t *sl__kstate_find(const struct sl__kstate *ks, const char *name,
                            size_t len);
/* The backend id and the name of a state (for stats and messages). */
uint32_t sl__state_id(const sl_state_t *st);
const char *sl__state_name(const sl_state_t *st);

/* The state functions, on the current key and namespace of k (k->state
 * must be the kstate st was registered in). Same contracts as the public
 * functions of the same name; sl__value_ptr sets *err on NULL. */
int sl__value_get(sl__keyed *k, sl_state_t *st, const void **val, size_t *len);
int sl__value_put(sl__keyed *k, sl_state_t *st, const void *val, size_t len);
void *sl__value_ptr(sl__keyed *k, sl_state_t *st, size_t size, bool *created,
                    int *err);
int sl__state_clear(sl__keyed *k, sl_state_t *st);
/* The slot of size bytes of st's entry for the current key in the
 * current namespace, its state hash (sl__state_hash) given by the caller,
 * which keeps the namespace's own hash: 1 with *out when the entry
 * existed with that size, 0 when it was created (its bytes to be
 * initialised), or a negative error. For a state without TTL, whose
 * stored bytes are the value (a window's accumulator). An existing entry
 * of an 8-byte key and namespace is found by a direct probe; anything
 * else goes to the backend's slot. */
int sl__ns_slot(sl__keyed *k, sl_state_t *st, uint64_t hash, size_t size,
                void **out);
/* sl__ns_slot's direct probe alone, for the 8-byte namespace *ns (not
 * necessarily k's): the existing entry's size bytes, or NULL when the
 * probe does not find it (then nothing was changed). A hash that is not
 * the entry's only makes it miss: the probe compares key and namespace. */
void *sl__ns_slot_hit(const sl__keyed *k, const sl_state_t *st,
                      const int64_t *ns, uint64_t hash, size_t size);
/* The same for the key key (key_len bytes, key group kg, one of k's
 * worker's) rather than the current one: for a record's usual case
 * before its key is made current. */
void *sl__ns_slot_hit_key(const sl_state_t *st, uint32_t kg, const void *key,
                          size_t key_len, const int64_t *ns, uint64_t hash,
                          size_t size);
/* Requests from memory st's entries of n keys (key hash j at (char *)hash
 * + j * stride, its key group at (char *)kg + j * stride, a key group of
 * k's worker) under the namespace whose hash is ns_hash (0: under the
 * key alone), as the keyed prefetch does for the entries of the key
 * alone: for state under a namespace whose hash the caller knows. */
void sl__state_prefetch(sl__keyed *k, const sl_state_t *st, uint64_t ns_hash,
                        const uint64_t *hash, const uint32_t *kg, size_t stride,
                        size_t n);
/* sl__value_ptr's per-record case alone: the value of the current key
 * when it exists with exactly size bytes and a direct probe finds it,
 * else NULL (then nothing was changed, and sl__value_ptr decides). */
void *sl__value_ptr_hit(const sl__keyed *k, const sl_state_t *st, size_t size);
/* The same for the key key (key_len bytes, key group kg, key hash hash;
 * the empty namespace) rather than the current one: for a record's
 * usual case before its key is made current. */
void *sl__value_ptr_hit_key(const sl__keyed *k, const sl_state_t *st,
                            uint32_t kg, const void *key, size_t key_len,
                            uint64_t hash, size_t size);

/* The bytes of key's value in the value state st (key_len bytes, key
 * group kg, key hash hash; the empty namespace), for reading, with their
 * length in *len, when st's direct probe finds them, without a current
 * key: for code outside a record or timer (a timer's recheck). NULL when
 * the probe does not find them, whether absent or not (then nothing was
 * read; a key group not st's own is not probed). Valid until the next
 * write to the state. */
const void *sl__value_peek_key(const sl_state_t *st, uint32_t kg,
                               const void *key, size_t key_len, uint64_t hash,
                               size_t *len);

int sl__list_add(sl__keyed *k, sl_state_t *st, const void *val, size_t len);
int sl__list_get(sl__keyed *k, sl_state_t *st, sl_list_iter_t *it);
int sl__list_update(sl__keyed *k, sl_state_t *st, const void *const *vals,
                    const size_t *lens, size_t n);

int sl__map_get(sl__keyed *k, sl_state_t *st, const void *mk, size_t mk_len,
                const void **val, size_t *len);
int sl__map_put(sl__keyed *k, sl_state_t *st, const void *mk, size_t mk_len,
                const void *val, size_t len);
int sl__map_remove(sl__keyed *k, sl_state_t *st, const void *mk, size_t mk_len);
int sl__map_contains(sl__keyed *k, sl_state_t *st, const void *mk,
                     size_t mk_len);
int sl__map_is_empty(sl__keyed *k, sl_state_t *st);
int sl__map_iter(sl__keyed *k, sl_state_t *st, sl_map_iter_t *it);

int sl__reducing_add(sl__keyed *k, sl_state_t *st, const void *val, size_t len);
int sl__reducing_get(sl__keyed *k, sl_state_t *st, const void **val,
                     size_t *len);
int sl__aggregating_add(sl__keyed *k, sl_state_t *st, const void *in,
                        size_t len);
int sl__aggregating_get(sl__keyed *k, sl_state_t *st, const void **out,
                        size_t *len);

/* For merging (session) windows, Flink's mergeNamespaces: folds the
 * entries of namespaces src_ns[0..n) of the current key into the current
 * namespace k->ns and removes them. LIST (concatenation), REDUCING
 * (reduce) and AGGREGATING (desc->merge) states only, else SL_ERR_INVAL.
 * The merged entry's TTL timestamp is refreshed (it is a write). */
int sl__state_merge_ns(sl__keyed *k, sl_state_t *st, const void *const *src_ns,
                       const size_t *src_ns_len, size_t n);

/* ---- Broadcast state (sluice/broadcast.h, bstate.c) --------------------
 * The broadcast states of one broadcast process instance: named maps in
 * memory, written by the broadcast side only (writable is set around
 * on_broadcast), snapshotted and restored by the checkpoint layer. */
typedef struct sl__bstates sl__bstates;
sl__bstates *sl__bstates_new(void);
void sl__bstates_free(sl__bstates *bs); /* NULL is a no-op */
void sl__bstates_set_writable(sl__bstates *bs, bool writable);
/* The state called name: SL_OK with *out, SL_ERR_NOTFOUND when there is
 * none and !create, SL_ERR_NOMEM. */
int sl__bstates_find(sl__bstates *bs, const char *name, size_t name_len,
                     bool create, sl_bstate_t **out);
size_t sl__bstates_count(const sl__bstates *bs);
sl_bstate_t *sl__bstates_at(const sl__bstates *bs, size_t i);
const char *sl__bstate_name(const sl_bstate_t *st);
/* Empties every state (restore replaces what open() may have put). */
void sl__bstates_clear(sl__bstates *bs);
/* sl_bstate_put() whatever the side (restore). */
int sl__bstate_put(sl_bstate_t *st, const void *mk, size_t mk_len,
                   const void *val, size_t len);

#endif
