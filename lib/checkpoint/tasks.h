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

/* Where a task's state and input position are. With an exactly_once
 * sink the owner also names, before a transaction commits, the
 * checkpoint that transaction belongs to (pending): if the owner dies
 * between the commit and the next pointer, the next owner finds out
 * whether it committed (docs/scaling.md) and restores from the one that
 * matches the output. */
typedef struct sl__task_ptr {
  uint32_t task;
  /* chk-<id> directory, relative to the root; "" (offset -1) only with a
   * pending one: the task had no snapshot before it. */
  char checkpoint[512];
  char source[256]; /* uid of the source that reads the partition */
  char topic[256];
  int32_t partition;
  int64_t offset;    /* next offset to read */
  char pending[512]; /* "" or a checkpoint whose commit is not known */
  int64_t pending_offset;
} sl__task_ptr;

/* Writes root/tasks/<p->task>.json atomically. 0 or -1 with errno. */
int sl__task_ptr_write(const char *root, const sl__task_ptr *p, mode_t fmode,
                       mode_t dmode);
/* Reads root/tasks/<task>.json into *p: 1 when there is one, 0 when the
 * task has none yet, SL_ERR_CORRUPT or SL_ERR_IO (reason in err). */
int sl__task_ptr_read(const char *root, uint32_t task, sl__task_ptr *p,
                      char *err, size_t errlen);
/* Whether some pointer of root (tasks 0..n-1) names the checkpoint rel
 * (relative to root), also as its pending one: retention must keep it.
 * A pointer that cannot be read counts as naming it. */
bool sl__task_ptr_refs(const char *root, uint32_t n, const char *rel);

/* How far checkpoint rel (relative to root) got: SL__TASK_CKPT_COMMITTED
 * (its _COMMITTED mark is there), SL__TASK_CKPT_DURABLE (its _metadata
 * is: the transaction may or may not have committed), or
 * SL__TASK_CKPT_NONE (neither, or gone: its transaction never began to
 * commit, which follows the metadata). */
enum {
  SL__TASK_CKPT_NONE = 0,
  SL__TASK_CKPT_DURABLE = 1,
  SL__TASK_CKPT_COMMITTED = 2,
};
int sl__task_ckpt_state(const char *root, const char *rel);

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
