/* SPDX-License-Identifier: Apache-2.0 */
/* Private to the coordinator (coord.c): its fields, guarded by its mutex
 * where other threads reach them (acks from workers, public calls). */
#ifndef SL_CHECKPOINT_INTERNAL_H
#define SL_CHECKPOINT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "checkpoint/coord.h"

/* A file of a native state directory in the previous checkpoint. */
typedef struct sl__prev_file {
  char *path;
  uint64_t ino, size;
  uint32_t crc;
} sl__prev_file;

struct sl__ckpt {
  sl__ckpt_env env;
  sl_ckpt_participant_t *parts; /* sl__ckpt_add_participant */
  int n_parts;
  bool on;   /* checkpoint.dir or restore.from is set */
  char *dir;
  int lock_fd; /* flock on <dir>/.lock while the job runs; -1: none */
  int64_t interval_ms, min_pause_ms, timeout_ms;
  int tolerable, retained;
  bool final;

  pthread_mutex_t mu;
  /* Guarded by mu. */
  uint64_t cur;     /* in progress (0: none) */
  sl__wsnap **acks; /* per worker, for cur */
  int n_acks;
  _Atomic uint64_t demand; /* sl_job_checkpoint() asked for one */
  _Atomic uint64_t trigger, complete; /* newest triggered / completed */
  bool final_taken;
  int64_t last_trigger; /* monotonic ms */
  int64_t last_done_job_ms; /* job clock at the last completion */
  int64_t durations[SL__CKPT_DURATIONS]; /* of the newest completions */
  uint64_t last_id;   /* newest id used (triggered or found on disk) */
  uint64_t last_done; /* newest completed */
  int64_t last_done_ms, last_duration_ms, last_bytes, last_bytes_new;
  uint64_t completed, failed;
  int fails_in_row;

  int64_t cur_start; /* monotonic ms */
  int64_t last_end;  /* monotonic ms of the last completion or failure */
  uint64_t prev_id;  /* previous complete checkpoint, for incremental reuse */

  sl__prev_file *prev; /* for checksums of shared (hard-linked) files */
  size_t n_prev;

  sl__restore *rs;      /* NULL when not restoring; freed once restored */
  uint64_t restored_id; /* the checkpoint the job started from */
  uint64_t restarts;    /* restores over the job's life, kept in metadata */
  int restored;         /* workers done restoring (mu) */
};

#endif
