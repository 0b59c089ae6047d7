/* SPDX-License-Identifier: Apache-2.0 */
/* State shared by the coordinator (coord.c) and the worker side
 * (worker.c) of checkpoints: the coordinator's fields, guarded by its
 * mutex where workers touch them, the snapshot a worker hands over, and
 * the checkpoint being restored. */
#ifndef SL_CHECKPOINT_INTERNAL_H
#define SL_CHECKPOINT_INTERNAL_H

#include <pthread.h>

#include "core/buf.h"
#include "checkpoint/ckpt.h"
#include "checkpoint/format.h"
#include "state/backend.h"

/* One worker's part of a checkpoint, built on the worker and written to
 * disk by the coordinator. */
typedef struct sl__wsnap {
  uint64_t id;
  int worker;
  uint32_t kg_lo, kg_hi;
  sl_buf_t file; /* w<i>.snap image, trailer included */
  bool native;   /* keyed state is in the native directory w<i>.state */
  uint64_t state_entries, timers;
  int rc;
  char err[256];
} sl__wsnap;

/* A worker file of the checkpoint being restored, checked and in memory. */
typedef struct sl__rfile {
  unsigned char *data;
  size_t len;
  sl__snap_head head;
  sl__rd body;
  char *native_dir; /* absolute; NULL when state is in the file */
} sl__rfile;

typedef struct sl__restore {
  uint64_t id;
  uint64_t restarts; /* "restarts" of its metadata (0 when absent) */
  char *path;        /* chk-<id> directory */
  char *backend;
  sl__rfile *files;
  int n_files;
} sl__restore;

/* A file of a native state directory in the previous checkpoint. */
typedef struct sl__prev_file {
  char *path;
  uint64_t ino, size;
  uint32_t crc;
} sl__prev_file;

struct sl__ckpt {
  sl_job_t *job;
  char *dir;
  int lock_fd; /* flock on <dir>/.lock while the job runs; -1: none */
  int64_t interval_ms, min_pause_ms, timeout_ms;
  int tolerable, retained;
  bool final;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* Guarded by mu. */
  uint64_t cur;     /* in progress (0: none) */
  sl__wsnap **acks; /* per worker, for cur */
  int n_acks;
  int parked, exited; /* workers done with their loop */
  bool release;       /* parked workers may close */
  uint64_t demand;    /* sl_job_checkpoint() asked for one */
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

/* Worker w finished restoring (frees the restore data after the last). */
void sl__ckpt_restored(struct sl__ckpt *ck);

/* The coordinator side a worker calls: hands over its snapshot (taking
 * ownership). */
void sl__ckpt_ack(struct sl__ckpt *ck, sl__wsnap *s);
/* Path of chk-<id> (no trailing slash) into buf. */
void sl__ckpt_path(const struct sl__ckpt *ck, uint64_t id, char *buf,
                   size_t len);

void sl__wsnap_free(sl__wsnap *s);

#endif
