/* SPDX-License-Identifier: Apache-2.0 */
/* The worker side of checkpoints (barrier.c) and of restore (restore.c):
 * the runtime's half of the asynchronous barrier snapshots whose other
 * half, the coordinator, is in lib/checkpoint. */
#ifndef SL_RUNTIME_BARRIER_H
#define SL_RUNTIME_BARRIER_H

#include <stdbool.h>

#include "runtime/runtime.h"

/* Once per worker round: starts a triggered checkpoint (barriers from
 * the worker's sources), snapshots the worker once it is aligned and
 * hands the snapshot to the coordinator, and passes completions on to
 * the instances. */
int sl__barrier_round(sl__worker *w);
/* Whether the worker is aligning a checkpoint: its sources and
 * processing-time callbacks wait. */
static inline bool sl__barrier_aligning(const sl__worker *w) {
  return w->ckpt_id != 0;
}
/* After the worker's loop: counts the worker as finished and, when it
 * finished cleanly and checkpoints are on, waits taking the snapshots it
 * is asked for (its state no longer changes) until the supervisor
 * releases it. */
void sl__barrier_park(sl__worker *w, bool clean);
/* The harness's snapshot: the worker's snapshot file image (every entry
 * in the file, whatever the backend) in *data (malloc'd). */
int sl__barrier_snapshot_image(sl__worker *w, void **data, size_t *len,
                               char *err, size_t errlen);

/* Restore (restore.c). early runs before the worker's instances open
 * (sources' and operators' restore hooks), late after (keyed state and
 * timers of the key groups the worker owns). */
int sl__restore_early(sl__worker *w);
int sl__restore_late(sl__worker *w);
/* Group mode (tasks.c): the keyed state and timers of key group kg from
 * rs into the running worker that owns it (the caller cleared them); of
 * the operators of keyed stage `stage` only, or of all (-1). */
struct sl__restore;
int sl__restore_task(sl__worker *w, const struct sl__restore *rs, int stage,
                     uint32_t kg);

#endif
