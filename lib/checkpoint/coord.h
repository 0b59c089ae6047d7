/* SPDX-License-Identifier: Apache-2.0 */
/* The checkpoint coordinator, as the runtime and the assembly of a job see
 * it: a state machine (trigger on interval, min pause, demand or at the
 * end; collect the workers' snapshots; write chk-<id>/ with _metadata
 * atomically, participants' commit, then _COMMITTED; retain the newest N;
 * pick and load the checkpoint to restore at start) made from an
 * environment, never from the job. It runs as a service of the runtime
 * (core/service.h): started before the workers, ticked by the supervisor,
 * and it returns errors instead of failing the job. */
#ifndef SL_CHECKPOINT_COORD_H
#define SL_CHECKPOINT_COORD_H

#include <stdbool.h>
#include <stdint.h>

#include "checkpoint/format.h"
#include "checkpoint/incr.h"
#include "core/buf.h"
#include "core/service.h"
#include "graph/graph.h"
#include "sluice/checkpoint.h"

struct sl__ckpt;

/* What the coordinator knows of its job; every pointer outlives it. */
typedef struct sl__ckpt_env {
  const char *name;      /* for logs and _metadata */
  const sl_conf_t *conf; /* checkpoint.*, restore.*, state.backend */
  /* The job's processing-time clock (it may be replaced until the job
   * runs): completion times. */
  sl_clock_t *const *clock;
  int par; /* workers: acks per checkpoint */
  uint32_t max_par;
  const sl__graph *graph; /* operator uids (_metadata, restore checks) */
} sl__ckpt_env;

/* A coordinator (idle until started); NULL when out of memory. */
struct sl__ckpt *sl__ckpt_new(const sl__ckpt_env *env);
/* The service table of a coordinator (svc = the struct sl__ckpt *):
 * start reads the settings, creates and locks checkpoint.dir and picks
 * the checkpoint to restore; tick triggers, completes and times out
 * checkpoints and takes the final one once the workers finished cleanly;
 * stop gives up a checkpoint in progress; destroy frees it. */
extern const sl__service_ops sl__ckpt_service;

/* Before the job runs: an exactly-once participant (sinks). */
int sl__ckpt_add_participant(struct sl__ckpt *ck,
                             const sl_ckpt_participant_t *p);
/* Whether checkpoints are taken (checkpoint.dir is set), after start:
 * on the supervisor thread, or a worker's while it runs (a revival
 * changes it between runs). */
bool sl__ckpt_enabled(const struct sl__ckpt *ck);
/* Any thread: the newest checkpoint triggered (the workers take it) and
 * the newest completed (passed on to checkpoint_complete hooks). */
uint64_t sl__ckpt_triggered(const struct sl__ckpt *ck);
uint64_t sl__ckpt_completed(const struct sl__ckpt *ck);
/* Any thread: asks for a checkpoint as soon as the min pause allows
 * (sl_job_checkpoint). The caller then wakes the supervisor. SL_OK, or
 * SL_ERR_STATE when checkpoints are not taken. Unlike
 * sl__ckpt_enabled(), safe while a revival moves the coordinator to a
 * new instance directory. */
int sl__ckpt_demand(struct sl__ckpt *ck);
/* Any thread: the figures of sl_job_checkpoint_info(). */
void sl__ckpt_info(struct sl__ckpt *ck, sl_checkpoint_info_t *out);

/* Any thread: what metrics read at scrape or tick time. durations[i] is
 * the duration of completion number completed - i (i < the ring's size
 * and i < completed). */
#define SL__CKPT_DURATIONS 16
typedef struct sl__ckpt_stats {
  bool enabled;
  uint64_t completed, failed, restarts, last_id;
  int64_t last_duration_ms, last_bytes, last_done_job_ms;
  int64_t durations[SL__CKPT_DURATIONS];
} sl__ckpt_stats;
void sl__ckpt_stats_get(struct sl__ckpt *ck, sl__ckpt_stats *out);
/* Records what the state machine records of a checkpoint: completion id
 * (id > 0) after duration_ms with bytes written, else a failure; and,
 * when restarts > 0, the restart count. The metrics tests drive the
 * figures through it. */
void sl__ckpt_note(struct sl__ckpt *ck, uint64_t id, int64_t duration_ms,
                   uint64_t bytes, uint64_t restarts);

/* ---- The worker side (runtime/barrier.c, runtime/restore.c) ------------- */

/* One worker's part of a checkpoint, built on the worker and written to
 * disk by the coordinator. */
typedef struct sl__wsnap {
  uint64_t id;
  int worker;
  uint32_t kg_lo, kg_hi;
  sl_buf_t file; /* w<i>.snap image, trailer included */
  bool native;   /* keyed state is in the native directory w<i>.state */
  /* The backend's part of that directory still being written on its own
   * thread (state/backend.h snapshot_begin); sl__wsnap_finish waits. */
  struct sl__snap_task *native_task;
  /* Incremental keyed state: the new segment file (incr.seg, written as
   * incr.seg_name) and the earlier ones the checkpoint links from the
   * previous complete (or the restored) checkpoint. */
  sl__incr_out incr;
  /* Incremental keyed state still to write (checkpoint/incr.h): key
   * groups the backend froze for writing whole. Then file holds what
   * precedes the chain sections, tail what follows them (timers,
   * layouts), and sl__wsnap_finish completes both files off the worker. */
  sl__incr_job *pending;
  sl_buf_t tail;
  uint64_t state_entries, timers;
  int64_t pause_us; /* the worker's time building it */
  int rc;
  char err[256];
} sl__wsnap;

/* A worker file of the checkpoint being restored: in memory, the sections
 * restore reads whole (body: names, blobs, layouts, broadcast state, chains,
 * each timer section's uid); keyed-state entries and timers are read from the
 * file (snap) as a stream, item by item (codec.h), so memory does not grow
 * with the state. The harness's image (snap NULL) is all in data. */
typedef struct sl__rfile {
  unsigned char *data;
  size_t len;
  sl__snap_head head;
  sl__rd body;
  char *snap;       /* absolute path of w<i>.snap; NULL: data is the file */
  char *native_dir; /* absolute; NULL when state is in the file */
} sl__rfile;

typedef struct sl__restore {
  uint64_t id;
  /* _metadata's format: below SL__HASH_FORMAT its key groups came from
   * another key hash (sl__hash64_of), so keyed state and timers are
   * re-partitioned and native state is read entry by entry. */
  int format;
  uint64_t restarts; /* "restarts" of its metadata (0 when absent) */
  char *path;        /* chk-<id> directory */
  char *backend;
  sl__rfile *files;
  int n_files;
  /* Segment files of incremental keyed state: where their sections are
   * (absolute paths); each chain is read from the files (incr.h). */
  sl__seg *segs;
  size_t n_segs;
} sl__restore;

/* Hands over a worker's snapshot (taking ownership); the caller then
 * wakes the supervisor. */
void sl__ckpt_ack(struct sl__ckpt *ck, sl__wsnap *s);
void sl__wsnap_free(sl__wsnap *s);
/* Writes what a snapshot still has pending (any thread; the coordinator's
 * before it writes the checkpoint), setting s->rc and s->err on failure.
 * No-op without. */
void sl__wsnap_finish(sl__wsnap *s);
/* Path of chk-<id> (no trailing slash) into buf. */
void sl__ckpt_path(const struct sl__ckpt *ck, uint64_t id, char *buf,
                   size_t len);
/* Group mode (checkpoint/tasks.h): the shared store's root
 * (checkpoint.dir), NULL when the job is not in group mode or takes no
 * checkpoints; and chk-<id> of this process relative to that root, as
 * task pointers name it. */
const char *sl__ckpt_root(const struct sl__ckpt *ck);
void sl__ckpt_rel(const struct sl__ckpt *ck, uint64_t id, char *buf,
                  size_t len);
/* Loads and checks the complete checkpoint at path, as the restore at
 * start does (max_par must match): a task taken over in group mode is
 * read from it. Free with sl__ckpt_restore_free. SL_OK or an error with
 * the reason in err. */
int sl__ckpt_load_path(const char *path, uint32_t max_par, sl__restore **out,
                       char *err, size_t errlen);
void sl__ckpt_restore_free(sl__restore *rs);
/* The checkpoint being restored, NULL when none; valid until every
 * worker called sl__ckpt_restored(). */
const sl__restore *sl__ckpt_restoring(const struct sl__ckpt *ck);
/* A worker finished restoring (the last one frees the restore data). */
void sl__ckpt_restored(struct sl__ckpt *ck);

/* The harness: restore from a snapshot file image instead of a
 * directory (before the worker opens). */
int sl__ckpt_setup_image(struct sl__ckpt *ck, const void *data, size_t len,
                         char *err, size_t errlen);

#endif
