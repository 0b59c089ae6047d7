/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/query.h — queryable state: a host program reads a key's current
 * keyed state while the job runs (Kafka Streams' interactive queries).
 * A state is queryable when its descriptor sets `queryable`
 * (sluice/state.h). The query is answered by the worker thread that owns
 * the key, between two batches of records, so the answer is the key's
 * state at one point of the stream: consistent per key. The same lookup
 * serves GET /state/<uid>/<state> on the metrics endpoint
 * (docs/serving.md). */
#ifndef SLUICE_QUERY_H
#define SLUICE_QUERY_H

#include <stdbool.h>

#include "sluice/common.h"
#include "sluice/job.h"
#include "sluice/state.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One item of an answer: the value (value, reducing and aggregating
 * states), one list element, or one map entry (map_key set). Bytes are
 * owned by the result; values are 8-byte aligned. */
typedef struct sl_query_item {
  const void *map_key; /* map states only; else NULL */
  size_t map_key_len;
  const void *value;
  size_t value_len;
} sl_query_item_t;

/* A copy of a key's state, independent of the job (valid until
 * sl_query_result_free, also after the job ended). */
typedef struct sl_query_result {
  sl_state_kind kind;     /* the state's kind */
  size_t n;               /* items: 1 for a value; elements; entries */
  sl_query_item_t *items; /* list: insertion order; map: by map key */
} sl_query_result_t;

/* Where a key's state lives (Kafka Streams' queryMetadataForKey). In
 * group mode (docs/scaling.md) every key belongs to one task, the input
 * partition murmur2 gives it, and a task to the process of the group that
 * is assigned that partition; a job of one process owns every key. */
typedef enum sl_query_where {
  SL_QUERY_LOCAL = 0,  /* this process owns the key: sl_job_query answers */
  SL_QUERY_REMOTE = 1, /* another process owns it: instance and endpoint */
  SL_QUERY_MOVING = 2  /* no process owns it right now: its task moves in a
                          rebalance; ask again shortly */
} sl_query_where;

typedef struct sl_query_owner {
  sl_query_where where;
  /* The key's task: its partition in group mode, else its key group.
   * With several keyed stages (group.mode=repartition and several
   * key_by), stage * group.partitions + partition, stage the index of
   * the operator's keyed stage (docs/scaling.md). */
  uint32_t task;
  /* The owning process: its instance.id and query.advertised.endpoint
   * ("" when it advertises none); both "" unless where is REMOTE. */
  char instance[128];
  char endpoint[256];
} sl_query_owner_t;

typedef struct sl_query_opts {
  /* Map states: non-NULL asks for one map key (map_key_len bytes; "" with
   * 0 for the empty map key); NULL for every entry. Ignored otherwise. */
  const void *map_key;
  size_t map_key_len;
  /* How long to wait for the owning worker, in ms; 0 = query.timeout.ms
   * (negative: SL_ERR_INVAL). */
  int64_t timeout_ms;
  /* Optional: filled when sl_job_query returns SL_ERR_NOT_OWNER, so a
   * caller learns where to ask without a second call. */
  sl_query_owner_t *owner;
} sl_query_opts_t;

/* Reads the current state of key (key_len bytes, as the job's key_by
 * function returns it) in state `state` of the keyed operator `uid`, from
 * any thread while the job runs (sl_job_run has not returned; the caller
 * must not race sl_job_destroy). opts may be NULL (defaults).
 *
 * Returns 1 with *out (free it with sl_query_result_free), or 0 with *out
 * NULL when the key has no live entry (never written, cleared, or every
 * item expired: an expired entry is never returned, whatever the state's
 * TTL visibility), or a negative error with a message in err (which may be
 * NULL):
 *   SL_ERR_INVAL     NULL arguments, or the state did not opt in
 *                    (sl_state_desc_t.queryable)
 *   SL_ERR_NOTFOUND  no operator `uid` with keyed state, or no state
 *                    `state` registered by it
 *   SL_ERR_STATE     the job is not running (not started, or finished)
 *   SL_ERR_TIMEOUT   the owning worker did not answer in time (it is
 *                    blocked, e.g. waiting on a full channel or in a
 *                    user callback)
 *   SL_ERR_NOT_OWNER group mode: another process owns the key, or its
 *                    task is moving (err names the owner; opts->owner,
 *                    when set, receives it as sl_job_query_owner does)
 *   SL_ERR_NOMEM
 * A query changes nothing: no TTL refresh, no cleanup, so it never alters
 * the job's results. Namespaced state (windows) is not queryable: a query
 * reads the key's entry of a process function's state. */
SL_API int sl_job_query(sl_job_t *job, const char *uid, const char *state,
                        const void *key, size_t key_len,
                        const sl_query_opts_t *opts, sl_query_result_t **out,
                        char *err, size_t errlen);

/* Which process owns key (key_len bytes, as the job's key_by function
 * returns it), from any thread while the job runs; *out is filled. With
 * several keyed stages this answers for the first one (stage 0); a
 * query of another stage's operator (sl_job_query, opts->owner) names
 * the owner of the key in that stage. In
 * group mode the process learns the other members' assignments and
 * endpoints from the owners topic (group.owners.topic), within about a
 * second of a rebalance; until then a moved key may read MOVING, or the
 * previous owner. Returns SL_OK, or SL_ERR_INVAL (NULL arguments) or
 * SL_ERR_STATE (the job is not running) with a message in err (which may
 * be NULL). */
SL_API int sl_job_query_owner(sl_job_t *job, const void *key, size_t key_len,
                              sl_query_owner_t *out, char *err, size_t errlen);

/* Frees a result; NULL is a no-op. */
SL_API void sl_query_result_free(sl_query_result_t *r);

#ifdef __cplusplus
}
#endif
#endif
