/* SPDX-License-Identifier: Apache-2.0 */
/* Group mode's figures and serving hooks kept by the runtime
 * (runtime/group.h): the instance id, the advertised query endpoint, who
 * owns a task, and rebalance counters. Written by the Kafka layer's
 * rebalance callbacks and the metrics service, read by queries and
 * scrapes: atomics, and stat_lock for the endpoint string. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/conf.h"
#include "core/hash.h"
#include "core/util.h"
#include "runtime/group.h"
#include "runtime/runtime.h"

static const double pause_bounds[] = SL__GROUP_PAUSE_BOUNDS;
_Static_assert(sizeof(pause_bounds) / sizeof(pause_bounds[0]) ==
                   SL__GROUP_PAUSE_N,
               "SL__GROUP_PAUSE_N counts SL__GROUP_PAUSE_BOUNDS");
_Static_assert(sizeof(((sl_job_t *)0)->grp.pause_buckets) /
                       sizeof(((sl_job_t *)0)->grp.pause_buckets[0]) ==
                   SL__GROUP_PAUSE_N + 1,
               "a bucket per bound and one above them");

int sl__group_init(sl_job_t *job) {
  const char *id = sl__conf_str(job->conf, "instance.id");
  char buf[300];
  if (!*id) {
    char host[256];
    if (gethostname(host, sizeof(host)) != 0)
      snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(buf, sizeof(buf), "%s-%ld", host, (long)getpid());
    id = buf;
  }
  job->instance = sl__strdup(id);
  return job->instance ? SL_OK : SL_ERR_NOMEM;
}

const char *sl__job_instance(const sl_job_t *job) {
  return job->instance;
}

void sl__job_set_endpoint(sl_job_t *job, const char *endpoint) {
  pthread_mutex_lock(&job->stat_lock);
  snprintf(job->endpoint, sizeof(job->endpoint), "%s", endpoint);
  pthread_mutex_unlock(&job->stat_lock);
}

void sl__job_endpoint(sl_job_t *job, char *out, size_t len) {
  const char *adv = sl__conf_str(job->conf, "query.advertised.endpoint");
  if (*adv) {
    snprintf(out, len, "%s", adv);
    return;
  }
  pthread_mutex_lock(&job->stat_lock);
  snprintf(out, len, "%s", job->endpoint);
  pthread_mutex_unlock(&job->stat_lock);
}

uint32_t sl__job_task_of(const sl_job_t *job, const void *key, size_t len,
                         uint64_t kh) {
  return job->kg_murmur2 ? sl__murmur2_partition(key, len, job->max_par)
                         : sl__key_group(kh, job->max_par);
}

int sl__job_stage_of(const sl_job_t *job, const char *uid) {
  for (int i = 0; uid && i < job->g.n_nodes; i++)
    if (job->g.nodes[i]->uid && strcmp(job->g.nodes[i]->uid, uid) == 0)
      return job->g.nodes[i]->stage;
  return 0;
}

void sl__job_set_owner_fn(sl_job_t *job, sl__owner_fn fn, void *opaque) {
  job->owner_fn = fn;
  job->owner_opaque = opaque;
}

void sl__job_owner(sl_job_t *job, uint32_t task, sl_query_owner_t *out) {
  memset(out, 0, sizeof(*out));
  out->task = task;
  out->where = SL_QUERY_LOCAL;
  if (job->owner_fn)
    job->owner_fn(job->owner_opaque, task, out);
}

/* ---- Rebalances ---------------------------------------------------------- */

void sl__group_rebalance_begin(sl_job_t *job) {
  atomic_fetch_add(&job->grp.rebalancing, 1);
}

void sl__group_revoked(sl_job_t *job, int n) {
  atomic_fetch_add(&job->grp.revoked, 1);
  atomic_fetch_add(&job->grp.tasks_revoked, (uint64_t)n);
}

void sl__group_assigned(sl_job_t *job, int n, double pause_s) {
  atomic_fetch_add(&job->grp.assigned, 1);
  atomic_fetch_add(&job->grp.tasks_assigned, (uint64_t)n);
  if (pause_s < 0)
    return;
  size_t b = 0;
  while (b < SL__GROUP_PAUSE_N && pause_s > pause_bounds[b])
    b++;
  atomic_fetch_add(&job->grp.pause_buckets[b], 1);
  /* The sum as integer microseconds: an atomic add, no CAS loop. */
  atomic_fetch_add(&job->grp.pause_us, (uint64_t)(pause_s * 1e6));
  atomic_fetch_sub(&job->grp.rebalancing, 1);
}

void sl__group_set_tasks(sl_job_t *job, int n) {
  atomic_store(&job->grp.tasks, n);
}

void sl__group_stats(sl_job_t *job, sl__group_stat *out) {
  memset(out, 0, sizeof(*out));
  out->tasks = atomic_load(&job->grp.tasks);
  out->rebalancing = atomic_load(&job->grp.rebalancing);
  out->revoked = atomic_load(&job->grp.revoked);
  out->assigned = atomic_load(&job->grp.assigned);
  out->tasks_revoked = atomic_load(&job->grp.tasks_revoked);
  out->tasks_assigned = atomic_load(&job->grp.tasks_assigned);
  for (size_t b = 0; b <= SL__GROUP_PAUSE_N; b++)
    out->pause_buckets[b] = atomic_load(&job->grp.pause_buckets[b]);
  out->pause_sum = (double)atomic_load(&job->grp.pause_us) / 1e6;
  out->revivals = atomic_load(&job->grp.revivals);
}

uint64_t sl__job_revived_from(const sl_job_t *job) {
  return atomic_load(&((sl_job_t *)job)->revived_from);
}
