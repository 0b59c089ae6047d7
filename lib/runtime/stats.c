/* SPDX-License-Identifier: Apache-2.0 */
/* The runtime side of metrics: reading per-instance counters, watermarks
 * and channel fill from another thread, and the worker's periodic
 * publication of state and timer sizes (the state backend may only be
 * called from its worker, so the worker copies the numbers into atomics
 * that any thread can read). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "runtime/runtime.h"
#include "runtime/stats.h"
#include "state/keyed.h"
#include "state/state.h"
#include "time/timers.h"

#define PUBLISH_EVERY_MS 1000

void sl__stats_planned(sl_job_t *job) {
  atomic_store_explicit(&job->planned, 1, memory_order_release);
}

bool sl__stats_is_planned(sl_job_t *job) {
  return atomic_load_explicit(&job->planned, memory_order_acquire) != 0;
}

static bool planned(sl_job_t *job) {
  return sl__stats_is_planned(job);
}

int sl__stats_ops(sl_job_t *job, int (*fn)(const sl__op_stat *, void *),
                  void *opaque) {
  if (!planned(job))
    return 0;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl__node *n = job->g.nodes[i];
    if (!n->uid || n->kind == SL__NODE_KEYBY)
      continue;
    for (int w = 0; w < job->par; w++) {
      sl_ctx_t *c = job->workers[w].inst[i];
      if (!c)
        continue;
      sl__op_stat s = {
          .uid = n->uid,
          .kind = c->ops->kind,
          .worker = w,
          .in = sl__counter_get(&c->in),
          .out = sl__counter_get(&c->out),
          .errors = sl__counter_get(&c->errors),
          .late = sl__counter_get(&c->late),
          .wm = atomic_load_explicit(&c->wm_pub, memory_order_relaxed),
          .keyed = atomic_load_explicit(&c->pub.keyed, memory_order_relaxed),
      };
      if (s.keyed) {
        s.state_entries =
            atomic_load_explicit(&c->pub.entries, memory_order_relaxed);
        s.state_bytes =
            atomic_load_explicit(&c->pub.bytes, memory_order_relaxed);
        s.timers_event =
            atomic_load_explicit(&c->pub.timers_event, memory_order_relaxed);
        s.timers_proc =
            atomic_load_explicit(&c->pub.timers_proc, memory_order_relaxed);
      }
      int rc = fn(&s, opaque);
      if (rc)
        return rc;
    }
  }
  return 0;
}

/* The first operator reading key_by node k. */
static const char *first_reader(sl_job_t *job, const sl__node *k) {
  for (int i = k->id + 1; i < job->g.n_nodes; i++) {
    const sl__node *n = job->g.nodes[i];
    for (int p = 0; p < n->n_inputs; p++)
      if (n->inputs[p].from == k)
        return n->uid ? n->uid : "key_by";
  }
  return "";
}

int sl__stats_channels(sl_job_t *job, int (*fn)(const sl__chan_stat *, void *),
                       void *opaque) {
  if (!planned(job))
    return 0;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl__node *n = job->g.nodes[i];
    if (n->kind != SL__NODE_KEYBY)
      continue;
    const sl__node *up = n->inputs[0].from;
    sl__chan_stat s = {.from_op = up->uid ? up->uid : "key_by",
                       .to_op = first_reader(job, n)};
    for (int f = 0; f < job->par; f++) {
      for (int t = 0; t < job->par; t++) {
        if (!sl__xchg_chan_fill(job->xchgs[n->xidx], f, t, &s.queued,
                                &s.capacity, &s.full_ns))
          continue;
        s.from = f;
        s.to = t;
        int rc = fn(&s, opaque);
        if (rc)
          return rc;
      }
    }
  }
  return 0;
}

void sl__stats_job(sl_job_t *job, sl__job_stat *out, char *errmsg,
                   size_t errlen) {
  memset(out, 0, sizeof(*out));
  out->name = job->name;
  out->parallelism = job->par;
  out->planned = planned(job);
  out->opened = atomic_load_explicit(&job->n_opened, memory_order_acquire);
  out->running = atomic_load(&job->phase) == SL__JOB_RUNNING;
  out->failed = sl__job_failing(job);
  out->now_ms = sl_clock_now(job->clock);
  if (errmsg && errlen) {
    pthread_mutex_lock(&job->err_lock);
    snprintf(errmsg, errlen, "%s", job->errmsg);
    pthread_mutex_unlock(&job->err_lock);
  }
}

/* ---- Worker side --------------------------------------------------------- */

void sl__stats_publish(sl__worker *w) {
  sl_job_t *job = w->job;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    const sl__keyed *k = c ? c->keyed : NULL;
    if (!k)
      continue;
    uint64_t entries = 0, bytes = 0, te = 0, tp = 0;
    if (k->state)
      sl__kstate_stats(k->state, &entries, &bytes);
    if (k->timers) {
      te = sl__timers_count(k->timers, SL__TIMER_EVENT);
      tp = sl__timers_count(k->timers, SL__TIMER_PROC);
    }
    atomic_store_explicit(&c->pub.entries, entries, memory_order_relaxed);
    atomic_store_explicit(&c->pub.bytes, bytes, memory_order_relaxed);
    atomic_store_explicit(&c->pub.timers_event, te, memory_order_relaxed);
    atomic_store_explicit(&c->pub.timers_proc, tp, memory_order_relaxed);
    atomic_store_explicit(&c->pub.keyed, true, memory_order_relaxed);
  }
  w->pub_next_ms = sl__mono_coarse_ms() + PUBLISH_EVERY_MS;
}

void sl__stats_tick_slow(sl__worker *w) {
  if (sl__mono_coarse_ms() >= w->pub_next_ms)
    sl__stats_publish(w);
}

void sl__stats_worker_opened(sl__worker *w) {
  sl__stats_publish(w);
  atomic_fetch_add_explicit(&w->job->n_opened, 1, memory_order_release);
}

/* ---- Reporters ----------------------------------------------------------- */

int sl__stats_add_reporter(sl_job_t *job, sl__stat_reporter fn, void *opaque) {
  pthread_mutex_lock(&job->stat_lock);
  struct sl__reporter *r =
      realloc(job->reporters, (size_t)(job->n_reporters + 1) * sizeof(*r));
  if (r) {
    job->reporters = r;
    r[job->n_reporters++] = (struct sl__reporter){fn, opaque};
  }
  pthread_mutex_unlock(&job->stat_lock);
  return r ? SL_OK : SL_ERR_NOMEM;
}

/* Under stat_lock: reporters are added from builder threads. */
void sl__stats_report(sl_job_t *job, sl__stat_out *o) {
  pthread_mutex_lock(&job->stat_lock);
  for (int i = 0; i < job->n_reporters; i++)
    job->reporters[i].fn(o, job->reporters[i].opaque);
  pthread_mutex_unlock(&job->stat_lock);
}
