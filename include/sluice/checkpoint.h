/* SPDX-License-Identifier: Apache-2.0 */
/* sluice/checkpoint.h — checkpoints on demand and their status. Periodic
 * checkpoints, retention and restore are configured with the checkpoint.*
 * and restore.* keys (docs/checkpoints.md). */
#ifndef SLUICE_CHECKPOINT_H
#define SLUICE_CHECKPOINT_H

#include <stdint.h>

#include "sluice/common.h"
#include "sluice/job.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_checkpoint_info {
  uint64_t id;             /* newest completed checkpoint; 0: none yet */
  char path[1024];         /* its chk-<id> directory, where it was
                              written (in group mode, after a revival,
                              the previous run's instance directory
                              until the next completes) */
  int64_t completed_at_ms; /* wall-clock time it completed */
  int64_t duration_ms;     /* trigger to metadata written */
  uint64_t bytes;          /* size of its files */
  uint64_t bytes_new;      /* of which not shared with the previous one */
  uint64_t completed;      /* checkpoints completed by this run */
  uint64_t failed;         /* checkpoints failed or given up */
  uint64_t restored_from;  /* checkpoint the run started from; 0: none */
  /* The longest a worker's processing paused for its snapshot of the
   * newest checkpoint (from alignment to handing it over), in us. */
  int64_t pause_us;
} sl_checkpoint_info_t;

/* Asks for a checkpoint as soon as none is in progress and the minimum
 * pause allows (like Flink's triggerCheckpoint). Any thread, also while
 * sl_job_run() runs; not from a signal handler. Returns SL_OK, or
 * SL_ERR_STATE when checkpoint.dir is unset or the job is not running.
 * Watch sl_job_checkpoint_info() for its completion. */
SL_API int sl_job_checkpoint(sl_job_t *job);

/* Fills *out with the newest completed checkpoint and counters (all zero
 * when checkpoints are off). Any thread. SL_OK or SL_ERR_INVAL. */
SL_API int sl_job_checkpoint_info(sl_job_t *job, sl_checkpoint_info_t *out);

#ifdef __cplusplus
}
#endif
#endif
