/* SPDX-License-Identifier: Apache-2.0 */
/* Checkpoints as the runtime sees them: the coordinator that runs on the
 * thread of sl_job_run() (trigger, acks, files, metadata, retention,
 * final checkpoint, restore), and the worker side (barrier injection at
 * sources, the snapshot once a worker is aligned, restore at start). */
#ifndef SL_CHECKPOINT_CKPT_H
#define SL_CHECKPOINT_CKPT_H

#include <stdbool.h>

#include "runtime/runtime.h"

/* Coordinator: reads the checkpoint.* and restore.* settings; when
 * checkpoints are on, creates checkpoint.dir and, with restore.from,
 * picks and loads the checkpoint to start from (a damaged newest one is
 * skipped with a log line) and hands each worker its part. Called after
 * the plan is built, before workers start. Fails the job on error. */
int sl__ckpt_setup(sl_job_t *job);
/* Runs the coordinator until every worker is done, then joins them; with
 * checkpoints off it only joins. Returns the job's error. */
int sl__ckpt_run(sl_job_t *job, int started);
void sl__ckpt_free(sl_job_t *job);

/* Worker side. restore_early runs before the worker's instances open
 * (sources' and operators' restore hooks), restore_late after (keyed
 * state and timers). */
int sl__ckpt_restore_early(sl__worker *w);
int sl__ckpt_restore_late(sl__worker *w);
/* Once per worker round: starts a triggered checkpoint (barriers from
 * the worker's sources), snapshots the worker once it is aligned, and
 * passes completions on to the instances. */
int sl__ckpt_round(sl__worker *w);
/* Whether the worker is aligning a checkpoint: its sources and
 * processing-time callbacks wait. */
static inline bool sl__ckpt_aligning(const sl__worker *w) {
  return w->ckpt_id != 0;
}
/* After the worker's loop: a worker that finished cleanly waits here,
 * taking the snapshots it is asked for (its state no longer changes),
 * until the coordinator took the final checkpoint. */
void sl__ckpt_park(sl__worker *w, bool clean);

/* The harness's snapshot and restore: the worker's snapshot file image
 * (every entry in the file, whatever the backend) in *data (malloc'd),
 * and a restore from such an image (before the worker opens). */
int sl__ckpt_snapshot_image(sl__worker *w, void **data, size_t *len, char *err,
                            size_t errlen);
int sl__ckpt_setup_image(sl_job_t *job, const void *data, size_t len, char *err,
                         size_t errlen);

#endif
