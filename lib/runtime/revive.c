/* SPDX-License-Identifier: Apache-2.0 */
/* Revival of a fenced process (docs/scaling.md): in group mode a process
 * whose members lost their partitions fails its run, and instead of
 * ending, it starts the run over, as Kafka Streams closes its tasks dirty
 * and rejoins after a TaskMigratedException. Everything of the run that
 * ended is dropped: each task's state, the records in flight between
 * workers, the open transaction (already aborted). The services restart
 * (the checkpoint coordinator in a new instance directory, the Kafka
 * layer with a new transactional producer), the plan goes back to what
 * it was before the first run, and the workers start again: their
 * sources join the group as new members, and every task the group
 * assigns is restored from its pointer, as for any newly assigned task.
 * Bounded by group.revive.max per group.revive.interval.ms. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/coord.h"
#include "core/clock.h"
#include "core/conf.h"
#include "core/log.h"
#include "runtime/runtime.h"

/* The job's error becomes err with message why (the revival itself
 * failed): it ends with that, not the fence. */
static bool fail_revival(sl_job_t *job, int err, const char *why) {
  pthread_mutex_lock(&job->err_lock);
  job->err = err;
  job->fenced = false;
  snprintf(job->errmsg, sizeof(job->errmsg), "job \"%s\": cannot revive: %.*s",
           job->name, 512, why);
  pthread_mutex_unlock(&job->err_lock);
  return false;
}

/* The run's fence is forgotten: the job is no longer failing. */
static void clear_fence(sl_job_t *job) {
  pthread_mutex_lock(&job->err_lock);
  job->err = 0;
  job->fenced = false;
  job->errmsg[0] = '\0';
  pthread_mutex_unlock(&job->err_lock);
  atomic_store(&job->failed, 0);
}

/* A stop asked for while the run ended in a fence: the user asked for
 * the end of the job, and gets a stop's result (SL_OK from sl_job_run,
 * no error message) instead of the fence, which only said that this
 * process may no longer commit for its tasks. Nothing was committed
 * after the fence (no final checkpoint either); the group's other
 * members go on from the tasks' pointers, as after any stop. */
static bool end_as_stop(sl_job_t *job, const char *fence) {
  clear_fence(job);
  sl__log(job->conf, job->name, SL__LOG_WARN, "job",
          "stop asked for as the run ended in a fence: stopping, not "
          "reviving (nothing committed after the fence: %s)",
          fence);
  return false;
}

bool sl__job_revive(sl_job_t *job) {
  char fence[1024];
  pthread_mutex_lock(&job->err_lock);
  bool fenced = job->err && job->fenced;
  snprintf(fence, sizeof(fence), "%s", job->errmsg);
  pthread_mutex_unlock(&job->err_lock);
  if (!fenced)
    return false;
  /* A stop asked for meanwhile ends the job: nothing to revive for. */
  if (atomic_load(&job->stop))
    return end_as_stop(job, fence);
  int max = (int)sl__conf_int(job->conf, "group.revive.max");
  int64_t interval = sl__conf_int(job->conf, "group.revive.interval.ms");
  int64_t now = sl__mono_ms();
  int n = 0;
  for (int i = 0; i < job->n_revived; i++)
    if (now - job->revived_at[i] < interval)
      job->revived_at[n++] = job->revived_at[i];
  job->n_revived = n;
  if (n >= max) {
    sl__log(job->conf, job->name, SL__LOG_ERROR, "job",
            "fenced, not reviving: %d revival(s) in the last %" PRId64
            " ms (group.revive.max=%d, group.revive.interval.ms)",
            n, interval, max);
    return false;
  }
  if (!job->revived_at &&
      !(job->revived_at = calloc((size_t)max, sizeof(*job->revived_at))))
    return fail_revival(job, SL_ERR_NOMEM, "out of memory");
  int64_t t0 = sl__mono_ms();
  for (int i = 0; i < job->n_svcs; i++) {
    const sl__service_ops *o = job->svcs[i].ops;
    char err[1024] = "";
    int rc = o->restart ? o->restart(job->svcs[i].svc, err, sizeof(err)) : 0;
    if (rc) {
      char why[1200];
      snprintf(why, sizeof(why), "%s: %s", o->name,
               err[0] ? err : sl_strerror(rc));
      return fail_revival(job, rc, why);
    }
  }
  /* A stop that came while the services restarted: no run starts after
   * it (a later one is the new run's, which it stops). */
  if (atomic_load(&job->stop))
    return end_as_stop(job, fence);
  if (sl__plan_reset(job))
    return fail_revival(job, SL_ERR_NOMEM, "out of memory");
  job->revived_at[job->n_revived++] = now;
  /* The coordinator published the run boundary as its newest trigger. */
  uint64_t boundary = sl__ckpt_triggered(job->ckpt);
  atomic_store(&job->revived_from, boundary);
  atomic_fetch_add(&job->grp.revivals, 1);
  /* The members of the run that ended are gone, with their tasks and
   * their rebalances; the new ones count from nothing. */
  atomic_store(&job->grp.tasks, 0);
  atomic_store(&job->grp.rebalancing, 0);
  clear_fence(job);
  sl__log(job->conf, job->name, SL__LOG_WARN, "job",
          "revived (%d of group.revive.max=%d within %" PRId64
          " ms) after %s: the state, in-flight records and open transaction "
          "of every task were dropped; rejoining the group as a new member, "
          "each task assigned is restored from its pointer (run restarted "
          "in %" PRId64 " ms; checkpoints continue after id %" PRIu64 ")",
          job->n_revived, max, interval, fence, sl__mono_ms() - t0, boundary);
  return true;
}
