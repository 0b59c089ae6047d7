/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/state.h — keyed state for keyed operators (process functions,
 * windows): value, list, map, reducing and aggregating state scoped to the
 * current key (and namespace), with Flink's state TTL. State lives in the
 * job's state backend (state.backend) and is part of checkpoints. */
#ifndef SLUICE_STATE_H
#define SLUICE_STATE_H

#include <stdbool.h>

#include "sluice/common.h"
#include "sluice/job.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Threads and lifetimes, for every function below:
 * - They are called from a keyed operator's callbacks (open, on_element,
 *   on_timer...) on the worker thread that runs the operator instance, with
 *   the sl_ctx_t that callback received. Each instance and its state belong
 *   to one worker thread: no locking, and no use from other threads.
 * - Reads and writes address the current key (the record's key, or the
 *   timer's key in on_timer) and the current namespace (empty in process
 *   functions, the window in window functions).
 * - A pointer handed out by a state function (value bytes, list elements,
 *   map keys and values, aggregation results) stays valid until the next
 *   state call on the same worker; copy what you need to keep. Values are
 *   8-byte aligned.
 * - Errors are negative sl_err codes; a callback should return them. A
 *   state handle used outside a keyed operator gives SL_ERR_STATE. */

typedef struct sl_state sl_state_t;

typedef enum sl_state_kind {
  SL_STATE_VALUE = 0,   /* one byte string per key */
  SL_STATE_LIST,        /* ordered byte strings per key */
  SL_STATE_MAP,         /* byte-string map per key */
  SL_STATE_REDUCING,    /* fixed-size value folded by desc->reduce */
  SL_STATE_AGGREGATING, /* fixed-size accumulator: init / add / result */
} sl_state_kind;

/* ---- Time-to-live (Flink's StateTtlConfig) ------------------------------ */

/* When an entry's timestamp is refreshed. */
typedef enum sl_ttl_update {
  SL_TTL_ON_CREATE_AND_WRITE = 0, /* on every write (Flink's default) */
  SL_TTL_ON_READ_AND_WRITE,       /* on every write and every read */
} sl_ttl_update;

/* Whether an expired entry that is still stored may be read. */
typedef enum sl_ttl_visibility {
  SL_TTL_NEVER_RETURN_EXPIRED = 0,
  /* The read that finds an expired entry returns it (and removes it), so
   * the next read finds nothing. */
  SL_TTL_RETURN_EXPIRED_IF_NOT_CLEANED_UP,
} sl_ttl_visibility;

/* The clock of the TTL. */
typedef enum sl_ttl_time {
  SL_TTL_PROCESSING_TIME = 0, /* sl_ctx_now(): the job's clock (Flink) */
  /* The event time of the element being processed (the record's
   * timestamp, an event-time timer's in on_timer, the watermark in a
   * processing-time on_timer): expiry is reproducible when a job replays
   * its input. Other keys' entries are removed (incremental cleanup,
   * compaction) only once min(that time, the operator's watermark) has
   * expired them, so the output does not depend on how the partitions of
   * the input interleave (docs/state.md, "Which clock expires what"). */
  SL_TTL_EVENT_TIME,
} sl_ttl_time;

/* An entry (a value, each list element, each map entry) carries the time
 * `last` of its last refresh and is expired iff last + ttl_ms <= now; the
 * sum never overflows, so ttl_ms = INT64_MAX means "never". Expired entries
 * are removed when a read finds them, and a few more on every access of the
 * state (incremental cleanup). */
typedef struct sl_state_ttl {
  int64_t ttl_ms; /* 0: no TTL (no timestamp is stored); must be >= 0 */
  sl_ttl_update update;
  sl_ttl_visibility visibility;
  sl_ttl_time time;
  /* Incremental cleanup: stored entries of this state checked for expiry
   * on every access of it. 0 = default (5); negative = off, so expired
   * entries are removed only when read. */
  int cleanup_per_access;
} sl_state_ttl_t;

/* ---- Descriptors -------------------------------------------------------- */

/* Describes one state. Only the fields of the chosen kind are read; the
 * descriptor and name are copied by sl_state_register(). */
typedef struct sl_state_desc {
  const char *name; /* unique within the operator; names the state in
                       checkpoints, so keep it stable like the uid */
  sl_state_kind kind;
  sl_state_ttl_t ttl;
  /* Schema version of the values, chosen by the user (0 by default):
   * change it when the bytes a state stores change meaning, and a restore
   * from a checkpoint taken with another version fails with the operator,
   * the state and both versions named (unless
   * restore.allow.dropped.state, which then drops the state). The kind,
   * TTL on or off and the sizes of reducing and aggregating states are
   * compared the same way without a version. See docs/state.md. */
  uint32_t version;

  /* SL_STATE_REDUCING: values are exactly value_size bytes. The first
   * value added is stored as is; each later one is folded in with
   * reduce(acc, in, value_size, opaque), which updates acc in place and
   * returns 0 (non-zero fails the add with SL_ERR_USER). */
  size_t value_size;
  int (*reduce)(void *acc, const void *in, size_t len, void *opaque);

  /* SL_STATE_AGGREGATING (Flink's AggregateFunction on a fixed-size
   * accumulator of acc_size bytes, 8-byte aligned):
   * init(acc)          new accumulator; optional (NULL: all zero bytes);
   * add(acc, in, len)  folds one input of any length; required; non-zero
   *                    fails the add with SL_ERR_USER;
   * merge(acc, other)  folds another accumulator in; needed only by
   *                    merging (session) windows;
   * result(acc, out)   writes result_size bytes to out; optional (NULL:
   *                    sl_aggregating_get returns the accumulator). */
  size_t acc_size;
  void (*init)(void *acc, void *opaque);
  int (*add)(void *acc, const void *in, size_t len, void *opaque);
  void (*merge)(void *acc, const void *other, void *opaque);
  size_t result_size;
  void (*result)(const void *acc, void *out, void *opaque);

  void *opaque; /* passed to reduce/init/add/merge/result; not owned */

  /* Opt in to queries from outside the job (sl_job_query, sluice/query.h,
   * and GET /state/<uid>/<name> on the metrics endpoint). A state that
   * does not set it is refused. */
  bool queryable;
} sl_state_desc_t;

/* Registers a state of the operator and returns its handle, owned by the
 * operator instance (valid until it closes; never freed by the caller).
 * Call it in open(). Registering a name again with the same descriptor
 * (kind, TTL, sizes) returns the same handle, so both inputs of a
 * co-process can share a state.
 * Returns NULL and fails the job (see sl_job_errmsg()) when called outside
 * a keyed operator (SL_ERR_STATE), on a bad descriptor (SL_ERR_INVAL: no
 * name, unknown kind, negative ttl, missing reduce/add or zero sizes), on a
 * name registered with a different descriptor (SL_ERR_INVAL), or when out
 * of memory. */
SL_API sl_state_t *sl_state_register(sl_ctx_t *ctx,
                                     const sl_state_desc_t *desc);

/* Removes the current key's (and namespace's) entry of a state of any
 * kind. Returns SL_OK or a negative error. */
SL_API int sl_state_clear(sl_ctx_t *ctx, sl_state_t *st);

/* ---- Value state -------------------------------------------------------- */

/* Reads the value: returns 1 and sets *val / *len (borrowed, see above),
 * 0 when there is none (or it expired), or a negative error (SL_ERR_INVAL
 * when st is not a value state); *val is NULL unless 1 is returned. */
SL_API int sl_value_get(sl_ctx_t *ctx, sl_state_t *st, const void **val,
                        size_t *len);

/* Stores a copy of len bytes at val (val may be NULL when len is 0).
 * Returns SL_OK or a negative error (SL_ERR_NOMEM...). */
SL_API int sl_value_put(sl_ctx_t *ctx, sl_state_t *st, const void *val,
                        size_t len);

/* The fast path for counters and small structs: returns the value's slot
 * of exactly size bytes to read and modify in place (8-byte aligned),
 * creating it zero-filled when there is none and setting *created (which
 * may be NULL) accordingly. It is one read-modify-write: with TTL it
 * refreshes the timestamp, and an expired value counts as absent (a fresh
 * zeroed slot), whatever the visibility. A stored value of another length
 * is replaced by a zeroed slot too (*created = true). The slot is valid
 * until the next state call. Returns NULL when out of memory or st is not
 * a value state (the job is failed with a message). */
SL_API void *sl_value_ptr(sl_ctx_t *ctx, sl_state_t *st, size_t size,
                          bool *created);

/* ---- List state --------------------------------------------------------- */

/* Iterator over the current key's list. Fields are private. The iterator
 * stays usable across other state calls (it revalidates itself), but the
 * bytes it returned are valid only until the next state call; elements
 * added to the list during the iteration may or may not be visited. */
typedef struct sl_list_iter {
  uint64_t priv_[12];
} sl_list_iter_t;

/* Appends a copy of an element. Returns SL_OK or a negative error. */
SL_API int sl_list_add(sl_ctx_t *ctx, sl_state_t *st, const void *val,
                       size_t len);

/* Starts iterating the list in insertion order. Returns 1 when it has
 * elements, 0 when it is empty, negative on error; in every non-error case
 * *it can be passed to sl_list_next(). Expired elements are dropped (and
 * removed) unless the visibility returns them once. */
SL_API int sl_list_get(sl_ctx_t *ctx, sl_state_t *st, sl_list_iter_t *it);

/* Next element: returns 1 and sets *val / *len, or 0 at the end. */
SL_API int sl_list_next(sl_list_iter_t *it, const void **val, size_t *len);

/* Replaces the whole list with n elements (vals[i], lens[i]); n = 0 clears
 * it. Returns SL_OK or a negative error. */
SL_API int sl_list_update(sl_ctx_t *ctx, sl_state_t *st,
                          const void *const *vals, const size_t *lens,
                          size_t n);

/* ---- Map state ---------------------------------------------------------- */

/* Iterator over the current key's map, in unspecified order. Same rules as
 * sl_list_iter_t; entries removed meanwhile are not visited, entries put
 * meanwhile may or may not be. */
typedef struct sl_map_iter {
  uint64_t priv_[14];
} sl_map_iter_t;

/* Looks up map key mk: returns 1 and sets *val / *len, 0 when absent or
 * expired, negative on error. */
SL_API int sl_map_get(sl_ctx_t *ctx, sl_state_t *st, const void *mk,
                      size_t mk_len, const void **val, size_t *len);
/* Stores a copy of val under a copy of mk. SL_OK or a negative error. */
SL_API int sl_map_put(sl_ctx_t *ctx, sl_state_t *st, const void *mk,
                      size_t mk_len, const void *val, size_t len);
/* Removes mk: returns 1 when a visible entry was removed, 0 when there was
 * none (with SL_TTL_NEVER_RETURN_EXPIRED an expired entry is removed and
 * counts as none), negative on error. */
SL_API int sl_map_remove(sl_ctx_t *ctx, sl_state_t *st, const void *mk,
                         size_t mk_len);
/* Returns 1 when mk has a (visible) entry, 0 when not, negative on error. */
SL_API int sl_map_contains(sl_ctx_t *ctx, sl_state_t *st, const void *mk,
                           size_t mk_len);
/* Returns 1 when the map has no visible entry, 0 when it has, negative on
 * error. */
SL_API int sl_map_is_empty(sl_ctx_t *ctx, sl_state_t *st);
/* Starts an iteration. Returns SL_OK or a negative error. */
SL_API int sl_map_iter(sl_ctx_t *ctx, sl_state_t *st, sl_map_iter_t *it);
/* Next entry: returns 1 and sets the map key and value, 0 at the end,
 * negative on error. */
SL_API int sl_map_next(sl_map_iter_t *it, const void **mk, size_t *mk_len,
                       const void **val, size_t *len);

/* ---- Reducing and aggregating state ------------------------------------- */

/* Folds val (exactly desc->value_size bytes, else SL_ERR_INVAL) into the
 * value. SL_OK, SL_ERR_USER when reduce failed, or a negative error. */
SL_API int sl_reducing_add(sl_ctx_t *ctx, sl_state_t *st, const void *val,
                           size_t len);
/* Reads the reduced value: 1 and *val / *len (value_size bytes), 0 when
 * none, negative on error. */
SL_API int sl_reducing_get(sl_ctx_t *ctx, sl_state_t *st, const void **val,
                           size_t *len);

/* Folds one input into the accumulator (created with init first). SL_OK,
 * SL_ERR_USER when add failed, or a negative error. */
SL_API int sl_aggregating_add(sl_ctx_t *ctx, sl_state_t *st, const void *in,
                              size_t len);
/* The result: 1 and *out / *len (result_size bytes from desc->result, or
 * the accumulator itself when result is NULL), 0 when nothing was added,
 * negative on error. */
SL_API int sl_aggregating_get(sl_ctx_t *ctx, sl_state_t *st, const void **out,
                              size_t *len);

#ifdef __cplusplus
}
#endif
#endif
