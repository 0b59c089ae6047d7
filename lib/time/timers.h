/* SPDX-License-Identifier: Apache-2.0 */
/* The timer service of one keyed operator instance: at most one timer per
 * (domain, key, namespace, timestamp), fired in timestamp order, as Flink's
 * InternalTimerService. Single-threaded: only the operator's worker thread
 * calls these functions, so there are no locks. */
#ifndef SL_TIME_TIMERS_H
#define SL_TIME_TIMERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Time domains; each has its own queue, and they never interact. */
#define SL__TIMER_EVENT 0
#define SL__TIMER_PROC 1
#define SL__TIMER_DOMAINS 2

struct sl__timers;

/* A timer as handed out by sl__timers_pop() and sl__timers_foreach(). The
 * pointers are never NULL (key and ns point at zero bytes when the length
 * is 0) and are owned by the service; see each function for how long they
 * stay valid. */
typedef struct sl__timer_view {
  int64_t ts;
  const void *key;
  size_t key_len;
  uint64_t hash; /* the key hash given to sl__timers_add() */
  uint32_t kg;   /* the key group given to sl__timers_add() */
  const void *ns;
  size_t ns_len;
} sl__timer_view;

/* Creates an empty service in *out, owned by the caller.
 * Returns SL_OK or SL_ERR_NOMEM (then *out is untouched). */
int sl__timers_new(struct sl__timers **out);

/* Frees the service, its timers and any view it handed out. NULL is a
 * harmless no-op. */
void sl__timers_free(struct sl__timers *t);

/* Registers a timer in domain (SL__TIMER_EVENT or SL__TIMER_PROC) at ts for
 * the key (its bytes, the precomputed key hash and key group, never
 * recomputed here) and the namespace (empty: nslen 0, ns may be NULL).
 * Key and ns bytes are copied; they may point into a view of this service
 * (the usual case: on_timer registers a timer for the current key).
 * Registering a timer that is already pending is a no-op, as in Flink.
 * Returns SL_OK (added or already present), SL_ERR_INVAL (bad domain, or
 * klen >= 2^32 - 1, or klen + nslen >= 2^32) or SL_ERR_NOMEM (nothing changed).
 */
int sl__timers_add(struct sl__timers *t, int domain, int64_t ts,
                   uint64_t key_hash, uint32_t kg, const void *key, size_t klen,
                   const void *ns, size_t nslen);

/* Removes the pending timer equal to (domain, key, ns, ts); kg is accepted
 * for symmetry with add and not needed. Deleting a timer that is not
 * pending (never added, deleted, or already popped) is a no-op. The first
 * delete of a domain turns its coarse level off (see sl__timers_peek):
 * timers that get deleted are mostly deleted often.
 * Returns 1 if a timer was removed, 0 if none matched, SL_ERR_INVAL for a
 * bad domain. Never fails for lack of memory (it may allocate an index for
 * the timestamp's timers, and does without one if that fails). */
int sl__timers_del(struct sl__timers *t, int domain, int64_t ts,
                   uint64_t key_hash, uint32_t kg, const void *key, size_t klen,
                   const void *ns, size_t nslen);

/* Sets *ts to the earliest pending timestamp of domain and returns true,
 * or returns false when the domain has no timers (or domain is bad).
 * Does not invalidate the last popped view. Timers registered well ahead
 * wait in a coarse level (slots of 256 ms) until their slot comes first,
 * and are then moved to their timestamps' buckets; should that move lack
 * memory, *ts is the slot's start, at or before the earliest timestamp,
 * and the next pop reports the error. */
bool sl__timers_peek(struct sl__timers *t, int domain, int64_t *ts);

/* Removes the earliest timer of domain with ts <= upto and describes it in
 * *out. Returns 1 when a timer was popped, 0 when the earliest remaining
 * timer is later than upto (or none is left), SL_ERR_INVAL for a bad
 * domain, SL_ERR_NOMEM when moving timers out of the coarse level (see
 * sl__timers_peek) lacked memory (nothing is lost; a later pop retries).
 *
 * Order: increasing ts; timers with equal ts fire in the order they were
 * added (restoring through sl__timers_foreach() keeps that order). Fire
 * timers by calling pop in a loop until it returns 0: timers added in
 * between (by on_timer) with ts <= upto fire in the same loop, in order.
 *
 * Lifetime: *out and the bytes it points to stay valid until the next
 * sl__timers_pop() or sl__timers_free() on t. add, del, peek, count and
 * foreach leave it valid, so the caller can use out->key as the current key
 * while on_timer registers or deletes timers. */
int sl__timers_pop(struct sl__timers *t, int domain, int64_t upto,
                   sl__timer_view *out);

/* Where the key hashes and key groups of consecutive timers lie: timer i
 * has its hash at (const char *)hash + i * stride and its key group at
 * (const char *)kg + i * stride, the shape a state backend's prefetch
 * takes (state/backend.h), so that nothing is copied. */
typedef struct sl__timer_run {
  const uint64_t *hash;
  const uint32_t *kg;
  size_t stride;
  size_t n;
} sl__timer_run;

/* A hint for prefetching the state of timers before they fire: describes
 * in out[0 .. returned) the timers of domain among the next dist to pop
 * with ts <= upto that no earlier call described, in at most two runs
 * (the rest of the earliest timestamp's timers, the start of the next
 * timestamp's). Called before every pop, the window slides by one
 * timer a call; called every k pops with dist 2k (as the keyed runtime
 * does), each call describes about the k timers that entered the window
 * since the last. Only a hint: a run may include
 * deleted or repeated timers, and timers may be left out (a timestamp
 * past the next one, timers added meanwhile). The runs stay valid until
 * the next add, del, pop, count or foreach on t. Changes nothing that
 * the other functions report (it may do work the next pop would do);
 * returns 0 for a bad domain. */
size_t sl__timers_ahead(struct sl__timers *t, int domain, int64_t upto,
                        size_t dist, sl__timer_run out[2]);

/* Turns the coarse level on for domain, while the domain holds nothing
 * (a no-op otherwise; off for a new service): a timer in a slot of 256
 * ms ahead of those about to fire waits in the slot's shared array and
 * moves to its timestamp's bucket in one pass when the slot comes up.
 * It pays where timers lie far ahead and few share a timestamp (a
 * session window's chain, each about a gap ahead: their buckets would
 * miss the cache at every registration); where many share timestamps
 * close ahead it costs a second copy of each (bench_timers: 237 -> 384
 * instructions per timer). The first delete in the domain turns it off
 * again. */
void sl__timers_coarse(struct sl__timers *t, int domain);

/* What a domain's owner says of a timer whose coarse slot comes up
 * (sl__timers_recheck): the timestamp it should have, ts to keep it, or
 * a later one to which it moves. */
typedef int64_t (*sl__timer_due_fn)(void *opaque, const sl__timer_view *v);
/* Requests from memory what due will read for n timers, as the runs of
 * sl__timers_ahead describe them. */
typedef void (*sl__timer_pf_fn)(void *opaque, const uint64_t *hash,
                                const uint32_t *kg, size_t stride, size_t n);

/* Lets the owner of domain move timers ahead before they fire: when a
 * coarse slot becomes the earliest of the domain and its timers go to
 * their timestamps' buckets, due (with pf, which may be NULL, ahead of
 * it) is asked about each; a timer it gives a later timestamp in a later
 * slot is appended to that slot instead, as a registration made then
 * (the timer at its old timestamp is gone). Any other answer keeps it.
 * A moved timer is what firing it would have done: the owner must only
 * move a timer whose firing at its timestamp would do nothing but
 * register it again at the later one, whatever else happens meanwhile
 * (a session's timer that became early: its deadlines only move later).
 * due sees the timer's view during the call only and must not call into
 * t. Only flushes that the order of firing brings about ask (peek, pop
 * and ahead); count and foreach move nothing. NULL due turns it off. */
void sl__timers_recheck(struct sl__timers *t, int domain, sl__timer_due_fn due,
                        sl__timer_pf_fn pf, void *opaque);

/* Number of pending timers in domain (0 for a bad domain). Not a pure
 * read: registrations are deduplicated lazily, and this completes that
 * work for the domain (in time linear in its unchecked registrations, work
 * that firing would otherwise do). Leaves the last popped view valid. */
size_t sl__timers_count(struct sl__timers *t, int domain);

/* Calls fn(view, domain, opaque) once per pending timer: first the event-
 * time timers, then the processing-time ones, each in firing order, so that
 * re-adding them in visiting order into an empty service restores the same
 * firing order (that is how a checkpoint is restored). The view is valid
 * during the call only, and fn must not add, delete or pop timers of t.
 * A non-zero return from fn stops the iteration and is returned.
 * Returns SL_OK, fn's non-zero value, or SL_ERR_NOMEM (the iteration
 * sorts a copy of each queue). */
int sl__timers_foreach(struct sl__timers *t,
                       int (*fn)(const sl__timer_view *v, int domain,
                                 void *opaque),
                       void *opaque);

/* As sl__timers_foreach(), restricted to timers whose key group lies in
 * [kg_first, kg_last] (inclusive, like Flink's KeyGroupRange): what one
 * key-group range of a rescaled snapshot needs. */
int sl__timers_foreach_kg(
    struct sl__timers *t, uint32_t kg_first, uint32_t kg_last,
    int (*fn)(const sl__timer_view *v, int domain, void *opaque), void *opaque);

#endif
