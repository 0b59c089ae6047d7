/* SPDX-License-Identifier: Apache-2.0 */
/* The shared task store of group mode (docs/scaling.md): under one
 * checkpoint.dir that every process of the job sees, each process writes
 * ordinary checkpoints into its own instances/<instance>/ directory, and
 * the owner of a task (an input partition, which is a key group) points
 * tasks/<task>.json at the newest checkpoint holding the task's state,
 * with the source offset stored beside it. A pointer is replaced
 * atomically (temp name, fsync, rename) and only by the task's owner, so
 * processes never write the same file. */
#ifndef SL_CHECKPOINT_TASKS_H
#define SL_CHECKPOINT_TASKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Where a task's state and input position are. */
typedef struct sl__task_ptr {
  uint32_t task;
  char checkpoint[512]; /* chk-<id> directory, relative to the root */
  char source[256];     /* uid of the source that reads the partition */
  char topic[256];
  int32_t partition;
  int64_t offset; /* next offset to read */
} sl__task_ptr;

/* Writes root/tasks/<p->task>.json atomically. 0 or -1 with errno. */
int sl__task_ptr_write(const char *root, const sl__task_ptr *p, mode_t fmode,
                       mode_t dmode);
/* Reads root/tasks/<task>.json into *p: 1 when there is one, 0 when the
 * task has none yet, SL_ERR_CORRUPT or SL_ERR_IO (reason in err). */
int sl__task_ptr_read(const char *root, uint32_t task, sl__task_ptr *p,
                      char *err, size_t errlen);
/* Whether some pointer of root (tasks 0..n-1) names the checkpoint rel
 * (relative to root): retention must keep it. A pointer that cannot be
 * read counts as naming it. */
bool sl__task_ptr_refs(const char *root, uint32_t n, const char *rel);

/* Whether the process of an instance directory runs: it holds the
 * directory's .lock. A probe with a shared lock, released at once, so a
 * reader never keeps a running process's directory from being removed
 * for longer than the probe. */
bool sl__task_inst_alive(const char *inst_dir);

/* Removes the directories of instances that are gone: an instance
 * directory under root/instances other than self (may be NULL) whose
 * .lock nobody holds, that has checkpoints, and none of whose
 * checkpoints a pointer names. Best effort. With dry_run nothing is
 * removed. removed (may be NULL) is told each directory name removed,
 * or that would be. */
void sl__task_gc(const char *root, uint32_t n, const char *self, bool dry_run,
                 void (*removed)(const char *name, void *opaque), void *opaque);

#endif
