/* SPDX-License-Identifier: Apache-2.0 */
/* Tasks of group mode with checkpoints (docs/scaling.md): a task is an
 * input partition of a keyed stage and the key group of the same number
 * in the operators of that stage. A job has one keyed stage, or one per
 * repartition topic; the task of partition p of stage s is numbered
 * s * max_par + p here. The Kafka source that was assigned or revoked a
 * partition asks here for the task's state to be loaded or dropped; the
 * worker that owns the key group does it between two of its batches
 * (sl__tasks_serve), so no record of the task meets the worker's state
 * before it is complete. Pointers to each task's newest snapshot
 * (checkpoint/tasks.h) are written through here too, so the Kafka layer
 * needs nothing of the checkpoint store. */
#ifndef SL_RUNTIME_TASKS_H
#define SL_RUNTIME_TASKS_H

#include <stdbool.h>
#include <stdint.h>

#include "checkpoint/tasks.h"
#include "operator.h"

struct sl__worker;

/* What became of a task's last request. */
enum {
  SL__TASK_IDLE = 0,  /* nothing asked, or dropped */
  SL__TASK_LOAD = 1,  /* asked: clear, then load the snapshot */
  SL__TASK_DROP = 2,  /* asked: clear */
  SL__TASK_READY = 3, /* loaded: records of the task may flow */
};

/* Whether the job of op keeps per-task state (group mode with
 * checkpoint.dir). Every call below needs it. */
bool sl__tasks_on(sl_ctx_t *op);
/* The task's pointer (the task of partition of topic), if it has one: 1
 * with *p, 0 when it has none yet, or an error (reason in err). p->task
 * and p->named are set for this job: pointers of a job with repartition
 * topics are named by topic and partition. */
int sl__task_read(sl_ctx_t *op, uint32_t task, const char *topic,
                  int32_t partition, sl__task_ptr *p, char *err, size_t errlen);
/* How far the checkpoint p names pending got: SL__TASK_CKPT_*. */
int sl__task_pending_state(sl_ctx_t *op, const sl__task_ptr *p);
/* Asks the owning worker to drop the task's state and timers and to
 * load them from p's checkpoint (none when p->checkpoint is ""); from
 * now on this process holds the task, p its pointer. Any thread. */
void sl__task_load(sl_ctx_t *op, uint32_t task, const sl__task_ptr *p);
void sl__task_drop(sl_ctx_t *op, uint32_t task);
/* SL__TASK_*: READY once the load asked for is done. */
int sl__task_state(sl_ctx_t *op, uint32_t task);
/* Once READY: the watermark the task's snapshot recorded for the keyed
 * operators that take the task's watermark from its source (a user
 * watermark generator, docs/scaling.md), SL_TS_MIN when none does or
 * the task had no snapshot. Their task is held there until the source
 * sends the task's watermark (sl__task_send_wm). */
int64_t sl__task_watermark(sl_ctx_t *op, uint32_t task);
/* From the source op that reads the task's partition, in its poll: the
 * watermark wm of the task (its partition's; SL_TS_MAX: the task follows
 * the operators' own watermark) to the keyed operators of its stage, in
 * order with the records emitted before. 0 or an error. */
int sl__task_send_wm(sl_ctx_t *op, uint32_t task, int64_t wm);
/* Every pointer write below is a compare-and-swap on the store
 * (checkpoint/tasks.h): it happens only if the pointer is still the one
 * this process last read (at the task's assignment) or wrote. Otherwise
 * nothing is written and it returns SL__TASK_PTR_MOVED, with a "fenced: ..."
 * reason in err: another process owns the task, this one lost it
 * without having heard (stopped, or cut off, for a session timeout), and
 * the caller fences the process (runtime/group.h). */

/* Points the task at this process's checkpoint id (p->checkpoint is
 * filled in; a pending checkpoint later than id stays named). 0,
 * SL__TASK_PTR_MOVED or an sl_err, with the reason in err. */
int sl__task_publish(sl_ctx_t *op, uint64_t id, sl__task_ptr *p, char *err,
                     size_t errlen);
/* Writes the pointer of a task just assigned as p says (the pending
 * checkpoint of its previous owner resolved one way or the other), p as
 * read from the store; p->gen is then the written one's. 0,
 * SL__TASK_PTR_MOVED or an sl_err. */
int sl__task_settle(sl_ctx_t *op, sl__task_ptr *p, char *err, size_t errlen);
/* Exactly-once, on the coordinator's thread once checkpoint id's
 * metadata is durable and before its transaction commits: names id
 * pending in the pointer of the task, which the transaction carries the
 * partition's offset of, if this process still holds it. 0,
 * SL__TASK_PTR_MOVED or SL_ERR_IO (reason in err): the transaction must not
 * commit. */
int sl__task_prepare(sl_job_t *job, uint64_t id, uint32_t task, int64_t offset,
                     char *err, size_t errlen);
/* The name a task pointer gives checkpoint id of this process
 * (instances/<instance>/chk-<id>, what sl__task_prepare names pending);
 * "" outside group mode with checkpoints. An exactly-once transaction
 * commits it as its offsets' metadata, so a restart can tell whether it
 * committed without comparing offsets. */
void sl__task_ckpt_name(sl_job_t *job, uint64_t id, char *buf, size_t len);
/* Asks for a checkpoint as soon as possible; returns the newest
 * triggered one: a checkpoint with a larger id starts after this call. */
uint64_t sl__task_checkpoint(sl_ctx_t *op);
/* The newest completed checkpoint. */
uint64_t sl__task_completed(sl_ctx_t *op);

/* The runtime's side: made with the job (NULL when not on), freed with
 * it; served by every worker once per round. */
struct sl__tasks *sl__tasks_new(uint32_t n);
/* Once the graph is cut (before any worker or source starts): stages
 * keyed stages of n tasks each; named, whether pointers are named by
 * topic (repartition topics). SL_OK or SL_ERR_NOMEM. */
int sl__tasks_stages(struct sl__tasks *t, int stages, bool named);
void sl__tasks_free(struct sl__tasks *t);
/* A revival (runtime.h: sl__plan_reset), while no worker runs: this
 * process holds no task, and no request is outstanding. NULL: a no-op. */
void sl__tasks_reset(struct sl__tasks *t);
int sl__tasks_serve(struct sl__worker *w);

#endif
