/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers for keyed operators: make a record's key current, and fire due
 * timers with each timer's key made current. */
#ifndef SL_RUNTIME_KEYED_H
#define SL_RUNTIME_KEYED_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "operator.h"
#include "sluice/process.h"
#include "state/keyed.h"
#include "state/state.h"

/* Sets k's current key from a record delivered by key_by (bytes, hash
 * and key group) and the record's timestamp, and, when reset_ns, an empty
 * namespace (an operator that never sets one, a process function, keeps
 * the empty one it starts with: calloc'd, and its timers have none). */
static inline __attribute__((always_inline)) void
sl__keyed_set_key_ns(sl__keyed *k, const sl_keyed_rec_t *r, bool reset_ns) {
  /* Per record: where both structures lay them out alike (64-bit
   * platforms: state/keyed.h), key and length, timestamp and hash, then
   * hash and key group with the padding after it (the hash written
   * twice) are each one 16-byte copy, and the empty namespace one 16-byte
   * store. The conditions are constants. */
  if (offsetof(sl__keyed, key_len) == offsetof(sl__keyed, key) + 8 &&
      offsetof(sl__keyed, ts) == offsetof(sl__keyed, key) + 16 &&
      offsetof(sl__keyed, hash) == offsetof(sl__keyed, key) + 24 &&
      offsetof(sl__keyed, ns) == offsetof(sl__keyed, key) + 40 &&
      offsetof(sl__keyed, ns_len) == offsetof(sl__keyed, key) + 48 &&
      offsetof(sl_keyed_rec_t, rec.key_len) ==
          offsetof(sl_keyed_rec_t, rec.key) + 8 &&
      offsetof(sl_keyed_rec_t, hash) == offsetof(sl_keyed_rec_t, rec.ts) + 8 &&
      sizeof(sl_keyed_rec_t) - offsetof(sl_keyed_rec_t, hash) == 16) {
    char *d = (char *)k + offsetof(sl__keyed, key);
    memcpy(d, (const char *)r + offsetof(sl_keyed_rec_t, rec.key), 16);
    memcpy(d + 16, (const char *)r + offsetof(sl_keyed_rec_t, rec.ts), 16);
    memcpy(d + 24, (const char *)r + offsetof(sl_keyed_rec_t, hash), 16);
    if (reset_ns)
      memset(d + 40, 0, 16);
  } else {
    k->key = r->rec.key;
    k->key_len = r->rec.key_len;
    k->ts = r->rec.ts;
    k->hash = r->hash;
    k->kg = r->kg;
    if (reset_ns) {
      k->ns = NULL;
      k->ns_len = 0;
    }
  }
}

/* The same with an empty namespace. */
static inline void sl__keyed_set_key(sl__keyed *k, const sl_keyed_rec_t *r) {
  sl__keyed_set_key_ns(k, r, true);
}

/* How many records ahead of processing state is requested: far enough for
 * a memory access to complete while the records in between are
 * processed, near enough that the lines are still cached when used.
 * Requested in groups of this many, so a record's state
 * is requested between SL__PREFETCH_AHEAD and 2 * SL__PREFETCH_AHEAD - 1
 * records before it is processed. A group's requests are issued at once
 * (two lines a key for the hashmap); with 16 they outnumbered the misses
 * a core keeps in flight and the probes still waited (docs/benchmarks.md,
 * "Prefetch groups of 8"). */
#define SL__PREFETCH_AHEAD 8

/* How many timers ahead of firing their state is requested
 * (sl__keyed.timer_prefetch), in groups of this many as records' is: a
 * timer's callback does more than a record's (a state read, usually a
 * timer registration), so fewer are needed to cover a miss. */
#define SL__TIMER_PREFETCH_AHEAD 8

/* sl__keyed_batch() for group mode's keyed stage (k->tw set): each
 * record of a task that lags (time/taskwm.h) is processed with the
 * task's watermark as the instance's, and moves it on; then the task's
 * timers that became due fire. Never inlined (not even by LTO) and
 * marked cold: group mode only, and otherwise it changes the code the
 * compiler makes of the ordinary loop (+1 instruction per record). */
__attribute__((noinline, cold)) int sl__keyed_batch_tasks(
    sl__keyed *k, int port, const sl_keyed_rec_t *r, size_t n,
    void (*prefetch)(sl__keyed *k, const sl_keyed_rec_t *r, size_t n),
    int (*process)(sl__keyed *k, int port, const sl_keyed_rec_t *r));

/* The loop of every keyed operator's process_keyed: for each record in
 * order, make its key current in k and call process(k, port, record),
 * stopping at the first non-zero return; meanwhile prefetch(k, recs, m)
 * requests the state of the next group of SL__PREFETCH_AHEAD records
 * once per group, so the backend is entered once per group rather than
 * per record. Always inlined, so that process inlines into the loop.
 * Scratch memory (sl_ctx_alloc) is released once per batch (at most
 * batch.size records), not per record: the marks would cost
 * more than the lookup. reset_ns: as for sl__keyed_set_key_ns (a
 * constant at each call).
 *
 * hit (NULL, or an operator's usual case): tried first for each record,
 * from the record alone, with k's current key left as it was; true when
 * it processed the record (then a non-zero *rc, for which it made the
 * record's key current, stops the loop), false to take the general way
 * (key made current, process). Not in group mode, whose records each
 * carry their task's watermark. */
static inline __attribute__((always_inline)) int sl__keyed_loop(
    sl__keyed *k, int port, const sl_keyed_rec_t *r, size_t n,
    void (*prefetch)(sl__keyed *k, const sl_keyed_rec_t *r, size_t n),
    bool (*hit)(sl__keyed *k, const sl_keyed_rec_t *r, int *rc),
    int (*process)(sl__keyed *k, int port, const sl_keyed_rec_t *r),
    bool reset_ns) {
  if (__builtin_expect(k->tw != NULL, 0))
    return sl__keyed_batch_tasks(k, port, r, n, prefetch, process);
  sl_ctx_t *op = k->op;
  const sl_keyed_rec_t *p = r, *e = r + n;
  if (n)
    prefetch(k, r, n < SL__PREFETCH_AHEAD ? n : SL__PREFETCH_AHEAD);
  sl_arena_mark_t m = sl_op_arena_mark(op);
  int rc = 0;
  /* Group by group: the next group's state is requested, then the
   * records of this one are processed (one induction variable each). */
  while (p != e) {
    size_t left = (size_t)(e - p);
    const sl_keyed_rec_t *ge =
        left > SL__PREFETCH_AHEAD ? p + SL__PREFETCH_AHEAD : e;
    if (ge != e) {
      /* The records of the group after: at parallelism > 1 a batch from
       * another worker is read from that worker's core, line by line. */
      size_t after = (size_t)(e - ge);
      if (__builtin_expect(after >= 2 * SL__PREFETCH_AHEAD, 1)) {
        /* A whole group: a constant count, unrolled, with no test. */
        for (size_t j = SL__PREFETCH_AHEAD; j < 2 * SL__PREFETCH_AHEAD; j++)
          __builtin_prefetch(ge + j);
      } else {
        for (size_t j = SL__PREFETCH_AHEAD; j < after; j++)
          __builtin_prefetch(ge + j);
      }
      prefetch(k, ge,
               left - SL__PREFETCH_AHEAD < SL__PREFETCH_AHEAD
                   ? left - SL__PREFETCH_AHEAD
                   : SL__PREFETCH_AHEAD);
    }
    for (; p != ge; p++) {
      if (hit && __builtin_expect(hit(k, p, &rc), 1)) {
        if (__builtin_expect(rc != 0, 0))
          goto out;
        continue;
      }
      sl__keyed_set_key_ns(k, p, reset_ns);
      if (__builtin_expect((rc = process(k, port, p)) != 0, 0))
        goto out;
    }
  }
out:
  sl_op_arena_release(op, m);
  return rc;
}

/* sl__keyed_loop without a usual case. */
static inline __attribute__((always_inline)) int sl__keyed_batch_ns(
    sl__keyed *k, int port, const sl_keyed_rec_t *r, size_t n,
    void (*prefetch)(sl__keyed *k, const sl_keyed_rec_t *r, size_t n),
    int (*process)(sl__keyed *k, int port, const sl_keyed_rec_t *r),
    bool reset_ns) {
  return sl__keyed_loop(k, port, r, n, prefetch, NULL, process, reset_ns);
}

/* sl__keyed_batch_ns for operators that set namespaces: every record
 * starts with the empty one. */
static inline __attribute__((always_inline)) int sl__keyed_batch(
    sl__keyed *k, int port, const sl_keyed_rec_t *r, size_t n,
    void (*prefetch)(sl__keyed *k, const sl_keyed_rec_t *r, size_t n),
    int (*process)(sl__keyed *k, int port, const sl_keyed_rec_t *r)) {
  return sl__keyed_batch_ns(k, port, r, n, prefetch, process, true);
}

/* For keyed operators, in open(): creates k->state for the instance k->op
 * (k->op must be set) over the worker's backend (state.backend, owning
 * the worker's key groups), with TTL processing time from sl_ctx_now(k->op).
 * On failure the job is failed with a message and the error returned.
 * sl__kstate_close() (state/state.h) frees it. */
int sl__kstate_open(sl__keyed *k);

/* A prefetch for sl__keyed_batch: every state of k for the n records. */
static inline void sl__keyed_prefetch(sl__keyed *k, const sl_keyed_rec_t *r,
                                      size_t n) {
  sl__kstate_prefetch(k->state, &r->hash, &r->kg, sizeof(*r), n);
}

/* Group mode's keyed stage: the keyed operator upstream of port sent
 * task kg's watermark w (SL_TS_MAX: the task follows that operator's);
 * the task's timers that became due fire, and what changed is sent on
 * downstream (docs/scaling.md). */
int sl__keyed_task_wm(sl__keyed *k, int port, uint32_t kg, int64_t w);
/* After task kg was loaded on every operator of its stage: sends the
 * operators downstream its watermark if it lags. */
int sl__keyed_task_announce(sl__keyed *k, uint32_t kg);

typedef int (*sl__keyed_timer_fn)(sl__keyed *k, sl_time_domain domain,
                                  int64_t ts);

/* Pops every timer of domain with ts <= upto in timestamp order (including
 * timers registered meanwhile), makes its key, namespace and timestamp
 * current in k, and calls fn. Stops at fn's first non-zero return. Cheap when
 * nothing is due (every watermark and clock tick calls it). With per-task
 * watermarks (k->tw) an event-time upto is the operator's new watermark:
 * the tasks follow it, and a timer of a task that lags stays pending
 * until the task's own watermark reaches it. */
int sl__keyed_fire(sl__keyed *k, sl_time_domain domain, int64_t upto,
                   sl__keyed_timer_fn fn);

/* A user function's on_timer, as process functions call it for the timer
 * current in k: output timestamped as in Flink (an event-time timer's
 * output carries its timestamp), scratch memory released after, and an
 * error handed to the operator's error policy with the timer's key. fn
 * NULL: nothing to call. */
typedef int (*sl__user_timer_fn)(sl_ctx_t *ctx, sl_time_domain domain,
                                 int64_t ts, void *opaque);
int sl__keyed_user_timer(sl__keyed *k, sl_time_domain domain, int64_t ts,
                         sl__user_timer_fn fn, void *opaque);

#endif
