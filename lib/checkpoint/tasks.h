/* SPDX-License-Identifier: Apache-2.0 */
/* The shared task store of group mode (docs/scaling.md): under one
 * checkpoint.dir that every process of the job sees, each process writes
 * ordinary checkpoints into its own instances/<instance>/ directory, and
 * the owner of a task (a partition of a keyed stage's input) points
 * tasks/<task>.json at the newest checkpoint holding the task's state,
 * with the source offset stored beside it. A task is named by its
 * partition ("3") when the job has one keyed stage over co-partitioned
 * input, and by topic and partition ("job-count-repartition-3", version
 * 2) with repartition topics, one per keyed stage; a store written when
 * a job had one repartition topic named its tasks by partition, and such
 * a pointer still serves the task of its topic (read_named). A pointer
 * is never overwritten: each write creates the task's next generation,
 * tasks/<task>/<generation>.json, with link(), which fails if another
 * process created that generation first, and readers take the newest.
 * That is a compare-and-swap without a lock: a process that lost the
 * task without knowing it yet cannot point it back at its own
 * checkpoints over the new owner's, and one stopped in the middle of a
 * write keeps nobody waiting. A store written before generations has one
 * file per task, tasks/<task>.json, read as generation 0 and turned into
 * a marker at the task's first generation. */
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
  /* Version 1: tasks/<task>.json, task the partition. Version 2 (named):
   * tasks/<topic>-<partition>.json; task is then the runtime's index of
   * the task (not written). */
  uint32_t task;
  bool named;
  /* Named, but read from the version 1 pointer of its partition (a store
   * of one repartition topic): the first write under the name removes
   * that file. */
  bool legacy;
  /* chk-<id> directory, relative to the root; "" (offset -1) only with a
   * pending one: the task had no snapshot before it. */
  char checkpoint[512];
  char source[256]; /* uid of the source that reads the partition */
  char topic[256];
  int32_t partition;
  int64_t offset;    /* next offset to read */
  char pending[512]; /* "" or a checkpoint whose commit is not known */
  int64_t pending_offset;
  /* The generation read or written last: 0 for none, or the single file
   * of a store written before generations. */
  uint64_t gen;
  /* Its stamp, 62 random bits drawn at each write (0: none); a
   * generation records the stamp of the one it follows. */
  uint64_t stamp;
} sl__task_ptr;

/* Writes the pointer of task p->task (named: <p->topic>-<p->partition>)
 * as its generation p->gen + 1, if no process wrote that generation
 * before (a compare-and-swap among the processes of the store; p->gen is
 * the generation this process last read or wrote). The first generation
 * of a named task read from the version 1 pointer of its partition
 * (p->legacy) removes that file. 0 (p->gen and p->stamp are then the new
 * generation's, and generations below the one before that are 10 s
 * older are removed), SL__TASK_PTR_MOVED when another process wrote that
 * generation first (nothing written), or -1 with errno. */
enum { SL__TASK_PTR_MOVED = 1 };
int sl__task_ptr_write(const char *root, sl__task_ptr *p, mode_t fmode,
                       mode_t dmode);
/* Reads the pointer of task task (version 1) into *p: 1 when there is one,
 * 0 when the task has none yet, SL_ERR_CORRUPT or SL_ERR_IO (reason in
 * err). */
int sl__task_ptr_read(const char *root, uint32_t task, sl__task_ptr *p,
                      char *err, size_t errlen);
/* The same for the task named by topic and partition (version 2); when
 * it has no pointer yet, the version 1 pointer of the partition if it
 * names that topic (p->legacy set). p->task is 0: the caller's index. */
int sl__task_ptr_read_named(const char *root, const char *topic,
                            int32_t partition, sl__task_ptr *p, char *err,
                            size_t errlen);
/* The same for the task named name (digits only: version 1): its newest
 * generation, or without one its single file. */
int sl__task_ptr_read_file(const char *root, const char *name, sl__task_ptr *p,
                           char *err, size_t errlen);
/* Where the pointer of the task named name is when it has generation gen
 * (0: the single file), relative to the store's root:
 * "tasks/<name>/<gen>.json" or "tasks/<name>.json". */
void sl__task_ptr_file(const char *name, uint64_t gen, char *out, size_t cap);
/* The names of root's tasks with a pointer, sorted: version 1
 * ones by number first, then the others by name. 0 with *names (free
 * each and the array; NULL and 0 without tasks/) or -1 with errno. */
int sl__task_ptr_list(const char *root, char ***names, size_t *n);
/* Whether some pointer of root names the checkpoint rel (relative to
 * root), also as its pending one: retention must keep it. A pointer
 * that cannot be read, or a directory that cannot be listed, counts as
 * naming it. */
bool sl__task_ptr_refs(const char *root, const char *rel);

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
void sl__task_gc(const char *root, const char *self, bool dry_run,
                 void (*removed)(const char *name, void *opaque), void *opaque);

#endif
