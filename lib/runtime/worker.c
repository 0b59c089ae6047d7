/* SPDX-License-Identifier: Apache-2.0 */
/* A worker thread: opens its operator instances, then alternates between
 * draining its exchange inputs and polling its source subtasks
 * (source.c) until every input has ended, the job is stopped, or it
 * fails. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/coord.h"
#include "runtime/barrier.h"
#include "runtime/runtime.h"
#include "runtime/stats.h"
#include "runtime/tasks.h"
#include "state/backend.h"

typedef struct sl_source_ctx src_t;

void sl__worker_close(sl__worker *w) {
  sl_job_t *job = w->job;
  int total = job->g.n_nodes + job->g.n_xchg;
  for (int i = total - 1; i >= 0; i--) {
    sl_ctx_t *c = w->inst[i];
    if (c && c->opened && c->ops->close)
      c->ops->close(c);
    if (c)
      c->opened = false;
  }
  sl__backend_close(w->be);
  w->be = NULL;
  sl__incr_free(w->incr);
  w->incr = NULL;
}

sl__backend *sl_op_backend(sl_ctx_t *op, char *err, size_t errlen) {
  return sl__worker_backend(op->w, err, errlen);
}

sl__backend *sl__worker_backend(sl__worker *w, char *err, size_t errlen) {
  if (w->be)
    return w->be;
  sl_job_t *job = w->job;
  sl__backend_conf bc = {.conf = job->conf,
                         .max_par = job->max_par,
                         .worker = w->index,
                         .restore_dir = w->restore_dir,
                         .job = job->name,
                         .par = job->par,
                         .shared = &job->backend_shared};
  sl__kg_range(w->index, job->par, job->max_par, &bc.kg_lo, &bc.kg_hi);
  return w->be = sl__backend_open(&bc, err, errlen);
}

int sl__worker_open(sl__worker *w) {
  sl_job_t *job = w->job;
  int total = job->g.n_nodes + job->g.n_xchg;
  for (int i = 0; i < total; i++) {
    sl_ctx_t *c = w->inst[i];
    if (!c)
      continue;
    /* close() runs for every instance whose open() ran, even a failed
     * one, so a half-opened instance frees what it got (as in Flink). */
    c->opened = true;
    for (int e = 0; e < c->main.n; e++)
      c->keyed_outs |= c->main.e[e].to->ops->process_keyed != NULL;
    if (c->ops->open) {
      int rc = c->ops->open(c);
      if (rc)
        return sl__job_failing(job) ? job->err
                                    : sl_op_fail(c, rc, "open failed (%d)", rc);
    }
    if (c->ops->on_proc_time) {
      sl_ctx_t **pt =
          realloc(w->proc_time, (size_t)(w->n_proc_time + 1) * sizeof(*pt));
      if (!pt)
        return sl_op_fail(c, SL_ERR_NOMEM, "out of memory");
      w->proc_time = pt;
      w->proc_time[w->n_proc_time++] = c;
    }
  }
  return 0;
}

/* Lets operators act on processing time (timers). One clock read per
 * round, and only when some operator asked for it. */
int sl__worker_proc_time(sl__worker *w) {
  if (!w->n_proc_time)
    return 0;
  int64_t now = sl_clock_now(w->job->clock);
  for (int i = 0; i < w->n_proc_time; i++) {
    sl_ctx_t *c = w->proc_time[i];
    if (c->ended)
      continue;
    int rc = c->ops->on_proc_time(c, now);
    if (rc)
      return rc;
  }
  return 0;
}

void *sl__worker_main(void *arg) {
  sl__worker *w = arg;
  sl_job_t *job = w->job;
  int rc = sl__restore_early(w);
  if (!rc)
    rc = sl__worker_open(w);
  if (!rc)
    rc = sl__restore_late(w);
  if (!rc)
    sl__stats_worker_opened(w);
  unsigned spins = 0;
  while (!rc && !sl__job_failing(job)) {
    SL__STATS_TICK(w);
    int progress = 0;
    int n = sl__xchg_drain(w, 0);
    if (n < 0) {
      rc = n;
      break;
    }
    progress += n;
    sl__query_poll(w);
    if ((rc = sl__barrier_round(w)))
      break;
    /* Group mode: tasks assigned or revoked load or drop their state
     * here, between batches (never while aligning: the snapshot sees the
     * state as of the barrier). */
    if (!sl__barrier_aligning(w) && (rc = sl__tasks_serve(w)))
      break;
    /* While the worker aligns a checkpoint, its sources and timers wait:
     * nothing after the barrier may touch its state before the snapshot. */
    bool aligning = sl__barrier_aligning(w);
    bool sources_done = true;
    for (int i = 0; i < job->g.n_nodes && !rc; i++) {
      sl_ctx_t *c = w->inst[i];
      if (!c || c->node->kind != SL__NODE_SOURCE || ((src_t *)c)->done)
        continue;
      if (!aligning) {
        int p = sl__source_poll(w, (src_t *)c);
        if (p < 0)
          rc = p;
        else
          progress += p;
      }
      sources_done = sources_done && ((src_t *)c)->done;
    }
    if (rc || (!aligning && (rc = sl__worker_proc_time(w))) ||
        (rc = sl__xchg_flush(w)))
      break;
    if (sources_done && sl__xchg_inputs_ended(w))
      break;
    if (progress)
      spins = 0;
    else
      sl__backoff(&spins);
  }
  if (rc && !sl__job_failing(job))
    sl__job_fail(job, rc, "worker %d failed: %s", w->index, sl_strerror(rc));
  sl__query_close(w);
  sl__stats_publish(w); /* final sizes, readable after the job ends */
  sl__barrier_park(w, !rc && !sl__job_failing(job));
  sl__worker_close(w);
  return NULL;
}
