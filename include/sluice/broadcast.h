/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/broadcast.h — the broadcast state pattern (Flink's
 * KeyedStream.connect(BroadcastStream).process(KeyedBroadcastProcessFunction)):
 * a low-volume stream (rules, configuration) whose every record reaches
 * every instance of a keyed operator, kept in broadcast map state that the
 * keyed side reads. */
#ifndef SLUICE_BROADCAST_H
#define SLUICE_BROADCAST_H

#include "sluice/process.h"
#include "sluice/state.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A broadcast stream of in: every record goes to every worker, in the
 * order it left its upstream worker (records of different upstream
 * workers interleave arbitrarily). It can only be read by
 * sl_broadcast_process(). Returns NULL on error (recorded in the job). */
SL_API sl_stream_t *sl_broadcast(sl_stream_t *in);

/* Callbacks of a keyed broadcast process function. All run on the worker
 * thread that owns the instance; none concurrently for one instance.
 * on_element and on_broadcast are required.
 * - open / close: as in sl_process_ops_t; register keyed state with
 *   sl_state_register() and broadcast state with sl_bstate_register().
 * - on_element: a record of the keyed input; the current key is its key.
 *   Keyed state and timers as in a keyed process function; broadcast
 *   state is read-only (a write returns SL_ERR_STATE).
 * - on_broadcast: a record of the broadcast input, on every instance.
 *   Broadcast state is writable. There is no current key: keyed state,
 *   timers and sl_ctx_key() give SL_ERR_STATE, except inside
 *   sl_bstate_apply_keyed(). Every instance must change its broadcast
 *   state the same way (depend only on the record and the broadcast
 *   state), since restore at another parallelism keeps one copy.
 * - on_timer: a timer of the keyed side fired; broadcast state is
 *   read-only.
 * Output timestamps follow sl_process_ops_t: the input record's (both
 * inputs), the timer's for event-time timers. */
typedef struct sl_broadcast_process_ops {
  int (*open)(sl_ctx_t *ctx, void *opaque);
  int (*on_element)(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque);
  int (*on_broadcast)(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque);
  int (*on_timer)(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts,
                  void *opaque);
  void (*close)(sl_ctx_t *ctx, void *opaque);
} sl_broadcast_process_ops_t;

/* Connects keyed (a stream from sl_key_by()) with bcast (from
 * sl_broadcast()). The operator's watermark is the minimum of both
 * inputs' (a broadcast input that is idle does not hold it back). ops is
 * copied; opaque is not owned. Returns the output stream, or NULL on
 * error (recorded in the job; SL_ERR_GRAPH when keyed is not keyed or
 * bcast not broadcast). */
SL_API sl_stream_t *sl_broadcast_process(sl_stream_t *keyed, sl_stream_t *bcast,
                                         const char *uid,
                                         const sl_broadcast_process_ops_t *ops,
                                         void *opaque);

/* ---- Broadcast state ---------------------------------------------------- */

/* A byte-string map of one broadcast process instance (Flink's
 * BroadcastState from a MapStateDescriptor), named so that checkpoints
 * can find it again. Each instance keeps its own copy in memory; they stay
 * equal because every instance sees the same broadcast records. Meant for
 * small state (rules, configuration): entries are kept sorted by map key,
 * so a put is linear in the number of entries. */
typedef struct sl_bstate sl_bstate_t;

/* Registers (or finds, by name) a broadcast state of the calling
 * instance; normally in open(). The handle is owned by the instance and
 * valid until it closes. Returns NULL and fails the job outside a
 * broadcast process function (SL_ERR_STATE) or on an empty name
 * (SL_ERR_INVAL). */
SL_API sl_bstate_t *sl_bstate_register(sl_ctx_t *ctx, const char *name);

/* Looks up mk: 1 with *val / *len (valid until the state is next written),
 * 0 when absent, negative on error. Any callback. */
SL_API int sl_bstate_get(sl_ctx_t *ctx, sl_bstate_t *st, const void *mk,
                         size_t mk_len, const void **val, size_t *len);
/* Stores copies of mk and val (replacing mk's value). SL_OK, SL_ERR_STATE
 * outside on_broadcast (read-only side), SL_ERR_NOMEM. */
SL_API int sl_bstate_put(sl_ctx_t *ctx, sl_bstate_t *st, const void *mk,
                         size_t mk_len, const void *val, size_t len);
/* Removes mk: 1 when removed, 0 when absent, SL_ERR_STATE outside
 * on_broadcast. */
SL_API int sl_bstate_remove(sl_ctx_t *ctx, sl_bstate_t *st, const void *mk,
                            size_t mk_len);
/* Removes every entry. SL_OK or SL_ERR_STATE outside on_broadcast. */
SL_API int sl_bstate_clear(sl_ctx_t *ctx, sl_bstate_t *st);
/* Number of entries. */
SL_API size_t sl_bstate_size(sl_ctx_t *ctx, sl_bstate_t *st);

/* Iteration in increasing map-key order (bytewise, shorter first on a
 * common prefix). The state must not be written during the iteration. */
typedef struct sl_bstate_iter {
  const sl_bstate_t *st;
  size_t i;
} sl_bstate_iter_t;
SL_API int sl_bstate_iter(sl_ctx_t *ctx, sl_bstate_t *st, sl_bstate_iter_t *it);
/* 1 with the next entry, 0 at the end. */
SL_API int sl_bstate_next(sl_bstate_iter_t *it, const void **mk, size_t *mk_len,
                          const void **val, size_t *len);

/* Flink's applyToKeyedState: from on_broadcast, calls fn once for every
 * key of this instance (the key groups its worker owns) that has an entry
 * in the keyed state st, with that key current: fn reads and writes st
 * (and other keyed state) of the key as on_element would, timers aside.
 * Keys are visited in key-group order, then bytewise; keys whose state
 * fn creates during the visit are not visited. A non-zero return of fn
 * stops the visit and is returned. SL_ERR_STATE outside on_broadcast. */
typedef int (*sl_keyed_visit_fn)(sl_ctx_t *ctx, const void *key, size_t len,
                                 void *opaque);
SL_API int sl_bstate_apply_keyed(sl_ctx_t *ctx, sl_state_t *st,
                                 sl_keyed_visit_fn fn, void *opaque);

#ifdef __cplusplus
}
#endif
#endif
