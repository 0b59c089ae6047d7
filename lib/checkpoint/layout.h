/* SPDX-License-Identifier: Apache-2.0 */
/* The layout record of a checkpoint (section SL__SEC_LAYOUT of a worker
 * file): for each keyed state, what the layout of its stored bytes
 * depends on, so a restore can tell a state it can read from one that
 * changed under the same name (as Flink's serializer snapshots do). A
 * layout is text of space-separated key=value pairs, e.g.
 * "kind=aggregating version=0 ttl=off acc=16"; window operators add what
 * their state layout depends on ("window=sliding fn=aggregate acc=8
 * path=per-slice"). Checkpoints written before the record existed have no
 * such section: they restore without the comparison. */
#ifndef SL_CHECKPOINT_LAYOUT_H
#define SL_CHECKPOINT_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/format.h"
#include "core/buf.h"

#define SL__SEC_LAYOUT 7     /* u32 version, u32 n, n x (bytes, bytes) */
#define SL__LAYOUT_VERSION 1 /* of the section's payload */

/* Writing: begin, one add per state ("<uid>/<name>" and its layout),
 * end. */
int sl__layout_begin(sl_buf_t *b, size_t *mark, size_t *count_at);
int sl__layout_add(sl_buf_t *b, const char *state, const char *layout);
void sl__layout_end(sl_buf_t *b, size_t mark, size_t count_at, uint32_t n);

/* Reading a SL__SEC_LAYOUT payload: count (bounded by what the payload
 * can hold; SL_ERR_CORRUPT for another payload version or damage), then
 * next: 1 with the next record (pointers into the image), 0 at the end,
 * SL_ERR_CORRUPT when malformed. */
typedef struct sl__layout_rec {
  const char *state, *layout;
  size_t state_len, layout_len;
} sl__layout_rec;
int sl__layout_count(sl__rd *p, uint32_t *n);
int sl__layout_next(sl__rd *p, sl__layout_rec *r);

/* Compares the layout a checkpoint recorded (old) with the one the job
 * registers now, except the keys named in adapts (space-separated, or
 * NULL), whose change the operator adapts to: false when they agree;
 * true with what changed in why, e.g. "kind changed from value to list,
 * ttl changed from off to on". */
bool sl__layout_diff(const char *old, size_t old_len, const char *now,
                     const char *adapts, char *why, size_t whylen);

#endif
