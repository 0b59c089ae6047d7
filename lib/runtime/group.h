/* SPDX-License-Identifier: Apache-2.0 */
/* What the runtime knows of group mode (docs/scaling.md) for serving and
 * monitoring: the process's instance id and query endpoint, the function
 * the Kafka layer hands in to say which process owns a task, and the
 * figures of rebalances that the Kafka layer's membership reports and the
 * metrics layer reads. The runtime keeps these here, below both, so that
 * neither of them calls the other. Every function is safe from any
 * thread. */
#ifndef SL_RUNTIME_GROUP_H
#define SL_RUNTIME_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/query.h"

/* The process's instance id: instance.id, else "<hostname>-<pid>". */
const char *sl__job_instance(const sl_job_t *job);

/* The query endpoint other processes are told to use: the
 * query.advertised.endpoint setting, else the one the metrics endpoint
 * set once it listened (http://host:port), else "". */
void sl__job_set_endpoint(sl_job_t *job, const char *endpoint);
void sl__job_endpoint(sl_job_t *job, char *out, size_t len);

/* The task (key group) of a key (kh: its sl__hash64): its murmur2
 * partition in group mode, else its hash's key group. */
uint32_t sl__job_task_of(const sl_job_t *job, const void *key, size_t len,
                         uint64_t kh);

/* The keyed stage of operator uid (graph.h: sl__node.stage), 0 when the
 * job has one or has no such operator. After the job was prepared. */
int sl__job_stage_of(const sl_job_t *job, const char *uid);

/* Who owns a task: fills out->where and, for another process, its
 * instance and endpoint (out->task is set by the caller). Called from any
 * thread, the caller's own. */
typedef void (*sl__owner_fn)(void *opaque, uint32_t task,
                             sl_query_owner_t *out);
/* Group mode: the Kafka layer's membership says who owns which task (at
 * graph-build time, before sl_job_run). Without one, this process owns
 * every task. */
void sl__job_set_owner_fn(sl_job_t *job, sl__owner_fn fn, void *opaque);
/* out->task and out->where (and owner) of task. */
void sl__job_owner(sl_job_t *job, uint32_t task, sl_query_owner_t *out);

/* ---- Fences and revivals --------------------------------------------------
 * A member of this process that lost its partitions (its session timed
 * out, the coordinator no longer knows it) may see them processed by
 * another member already: with exactly-once, nothing it read since its
 * last commit may be committed. The process is fenced: the run fails, and
 * the runtime starts it over (a revival, docs/scaling.md) within
 * group.revive.max per group.revive.interval.ms. */

/* Fails the job as sl__job_fail() does (runtime.h) and marks the failure
 * a fence, which the process survives by a revival when it is the job's
 * first error. Any thread. Returns the job's first error. */
int sl__job_fail_fenced(sl_job_t *job, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The checkpoint id that separates the current run from the runs before
 * it: no checkpoint takes it, checkpoints of the runs before are below it
 * and those of this run above. An exactly-once sink's output continues
 * that epoch (sluice.epoch). 0 in the first run. Any thread. */
uint64_t sl__job_revived_from(const sl_job_t *job);

/* ---- Rebalances ------------------------------------------------------------
 * A member of the consumer group (one per Kafka source subtask) rebalances
 * from joining the group, or from a revocation of partitions, to its next
 * assignment. */

/* Rebalance pause buckets (seconds), as the metrics layer registers
 * sluice_group_rebalance_pause_seconds. */
#define SL__GROUP_PAUSE_BOUNDS                                                 \
  { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 }
#define SL__GROUP_PAUSE_N 13

/* A member starts a rebalance (it joins, or loses partitions). */
void sl__group_rebalance_begin(sl_job_t *job);
/* n partitions were revoked from a member. */
void sl__group_revoked(sl_job_t *job, int n);
/* A member was assigned n partitions (maybe none); pause_s >= 0 ends the
 * rebalance it had begun that long ago, < 0 when it had begun none. */
void sl__group_assigned(sl_job_t *job, int n, double pause_s);
/* The tasks (distinct partitions) this process reads now. */
void sl__group_set_tasks(sl_job_t *job, int n);

typedef struct sl__group_stat {
  int tasks;        /* assigned tasks */
  int rebalancing;  /* members between a begin and its end */
  uint64_t revoked; /* revocation events, assignment events */
  uint64_t assigned;
  uint64_t tasks_revoked, tasks_assigned;        /* partitions */
  uint64_t pause_buckets[SL__GROUP_PAUSE_N + 1]; /* per bucket */
  double pause_sum;
  uint64_t revivals; /* runs started over after a fence */
} sl__group_stat;
void sl__group_stats(sl_job_t *job, sl__group_stat *out);

#endif
