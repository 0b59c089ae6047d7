/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/process.h — keyed process functions (Flink's KeyedProcessFunction
 * and KeyedCoProcessFunction): per-key state, event- and processing-time
 * timers, and the current key, on a stream from sl_key_by(). */
#ifndef SLUICE_PROCESS_H
#define SLUICE_PROCESS_H

#include "sluice/job.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sl_time_domain {
  SL_EVENT_TIME = 0,
  SL_PROC_TIME = 1,
} sl_time_domain;

/* Callbacks of a keyed process function. All run on the worker thread that
 * owns the key; none run concurrently for one operator instance. Only
 * on_element is required.
 * - open: once per instance before any record; register state here with
 *   sl_state_register().
 * - on_element: one record; the current key is the record's key.
 * - on_timer: a timer set for the current key fired at ts (event time:
 *   when the watermark reached ts; processing time: when the clock did).
 * - close: once for every instance whose open ran, also when open failed
 *   or the job fails (so it must cope with what a failed open left).
 * Records emitted from on_element carry the input record's timestamp, and
 * from an event-time on_timer the timer's timestamp (as in Flink); from a
 * processing-time on_timer the timestamp the function gives them. A
 * non-zero return is a user error handled by error.policy. */
typedef struct sl_process_ops {
  int (*open)(sl_ctx_t *ctx, void *opaque);
  int (*on_element)(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque);
  int (*on_timer)(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts,
                  void *opaque);
  void (*close)(sl_ctx_t *ctx, void *opaque);
} sl_process_ops_t;

/* Adds a keyed process function reading keyed (a stream from sl_key_by()).
 * ops is copied; opaque is passed to every callback and not owned.
 * Returns the output stream, or NULL on error (recorded in the job). */
SL_API sl_stream_t *sl_process(sl_stream_t *keyed, const char *uid,
                               const sl_process_ops_t *ops, void *opaque);

/* Two keyed inputs that share the key space, the state and the timers of
 * one operator (Flink's connect(...).keyBy(...).process(...)): a record of
 * key k from either input sees the same state for k. */
typedef struct sl_co_process_ops {
  int (*open)(sl_ctx_t *ctx, void *opaque);
  int (*on_element1)(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque);
  int (*on_element2)(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque);
  int (*on_timer)(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts,
                  void *opaque);
  void (*close)(sl_ctx_t *ctx, void *opaque);
} sl_co_process_ops_t;

SL_API sl_stream_t *sl_co_process(sl_stream_t *keyed1, sl_stream_t *keyed2,
                                  const char *uid,
                                  const sl_co_process_ops_t *ops, void *opaque);

/* ---- Inside a keyed callback ------------------------------------------- */

/* The current key's bytes, valid until the callback returns. Returns
 * SL_OK, or SL_ERR_STATE outside a keyed operator. */
SL_API int sl_ctx_key(const sl_ctx_t *ctx, const void **key, size_t *len);

/* Timestamp of the element being processed: the record's event time in
 * on_element, the timer's timestamp in on_timer. */
SL_API int64_t sl_ctx_timestamp(const sl_ctx_t *ctx);

/* Registers a timer for the current key at ts in the given domain. At most
 * one timer exists per (key, namespace, domain, ts): registering it again
 * is a no-op. An event-time timer at or below the current watermark fires
 * with the next watermark, a processing-time timer at or before now fires
 * on the worker's next round, as in Flink. Returns SL_OK, SL_ERR_STATE
 * outside a keyed operator, SL_ERR_NOMEM. */
SL_API int sl_timer_set(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts);

/* Deletes the current key's timer at ts; deleting a missing timer is a
 * no-op. Returns SL_OK or SL_ERR_STATE outside a keyed operator. */
SL_API int sl_timer_del(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts);

#ifdef __cplusplus
}
#endif
#endif
