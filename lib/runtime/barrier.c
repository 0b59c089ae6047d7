/* SPDX-License-Identifier: Apache-2.0 */
/* The worker side of checkpoints: barriers from the worker's sources, the
 * worker's snapshot once every instance on it is aligned (source
 * positions, operator state, keyed state of the worker's backend, timers)
 * handed to the coordinator, completion hooks, and parking after the loop
 * (a finished worker still snapshots until the job releases it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/bcast.h"
#include "checkpoint/codec.h"
#include "checkpoint/coord.h"
#include "checkpoint/incr.h"
#include "checkpoint/layout.h"
#include "core/clock.h"
#include "runtime/barrier.h"
#include "core/hash.h"
#include "state/keyed.h"
#include "state/state.h"

typedef struct sl_source_ctx src_t;

static int n_inst(const sl_job_t *job) {
  return job->g.n_nodes + job->g.n_xchg;
}

/* ---- Alignment ---------------------------------------------------------- */

static bool inst_aligned(const sl__worker *w, const sl_ctx_t *c) {
  if (sl__is_source(c))
    return ((const src_t *)c)->done || w->ckpt_injected == w->ckpt_id;
  if (c->bar_done == w->ckpt_id || c->ended)
    return true;
  for (int i = 0; i < c->n_ports; i++)
    if (!c->ports[i].ended)
      return false;
  return true;
}

static bool worker_aligned(const sl__worker *w) {
  for (int i = 0; i < n_inst(w->job); i++)
    if (w->inst[i] && !inst_aligned(w, w->inst[i]))
      return false;
  return true;
}

/* ---- Snapshot ----------------------------------------------------------- */

/* A source subtask's event time, written after its blob: for a user
 * generator (SL_WM_CUSTOM) the watermark it had emitted, else the highest
 * timestamp its generator saw. */
static sl__snap_src src_time(const src_t *src) {
  bool user = src->wmgen.kind == SL_WM_CUSTOM;
  return (sl__snap_src){
      .subtask = (uint32_t)sl_source_ctx_subtask((src_t *)src),
      .time = {.subtasks = (uint32_t)sl_source_ctx_subtasks((src_t *)src),
               .max_ts = user ? src->wmgen.wm : src->wmgen.max_ts,
               .flags = (uint8_t)((src->wmgen.idle ? SL__SRC_IDLE : 0) |
                                  (src->finished ? SL__SRC_FINISHED : 0) |
                                  (user ? SL__SRC_WM : 0))}};
}

static int snap_hooks(sl__worker *w, sl__wsnap *s) {
  sl_job_t *job = w->job;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (!c)
      continue;
    sl_buf_t blob;
    sl__buf_init(&blob);
    int rc = 0;
    if (sl__is_source(c)) {
      const sl_source_ops_t *o = c->node->src_ops;
      if (!o->snapshot)
        continue;
      rc = o->snapshot((src_t *)c, s->id, &blob, c->node->src_opaque);
      sl__snap_src src = src_time((src_t *)c);
      if (!rc)
        rc = sl__snap_put_blob(&s->file, SL__SEC_SOURCE, c->node->uid, &src,
                               blob.data, blob.len);
    } else if (c->ops->snapshot && c->node->uid) {
      rc = c->ops->snapshot(c, s->id, &blob);
      if (!rc)
        rc = sl__snap_put_blob(&s->file, SL__SEC_OPSTATE, c->node->uid, NULL,
                               blob.data, blob.len);
    }
    sl__buf_free(&blob);
    if (rc) {
      snprintf(s->err, sizeof(s->err), "operator \"%s\": snapshot failed: %s",
               c->node->uid ? c->node->uid : "?", sl_strerror(rc));
      return rc < 0 ? rc : SL_ERR_USER;
    }
  }
  return 0;
}

/* Broadcast state: each instance writes its copy (checkpoint/bcast.c). */
static int snap_bcast(sl__worker *w, sl__wsnap *s) {
  for (int i = 0; i < w->job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (!c || !c->bcast || !c->node->uid)
      continue;
    int rc = sl__snap_put_bcast(&s->file, c->node->uid, c->bcast);
    if (rc) {
      snprintf(s->err, sizeof(s->err),
               "operator \"%s\": broadcast state snapshot failed: %s",
               c->node->uid, sl_strerror(rc));
      return rc;
    }
  }
  return 0;
}

static int snap_keyed(sl__worker *w, sl__wsnap *s, bool native_ok) {
  sl__backend *be = w->be;
  /* Expired entries are not worth writing (Flink's cleanup on snapshot). */
  for (int i = 0; be && i < w->job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    sl__keyed *k = c && !sl__is_source(c) ? sl_op_keyed(c) : NULL;
    if (k && k->state)
      sl__kstate_cleanup_full(k->state, c->wm);
  }
  sl_buf_t *b = &s->file;
  int rc = 0;
  if (be) {
    if ((rc = sl__snap_put_states(b, be)))
      return rc;
    if (be->ops->snapshot && native_ok) {
      char dir[4096];
      sl__ckpt_path(w->job->ckpt, s->id, dir, sizeof(dir));
      size_t l = strlen(dir);
      snprintf(dir + l, sizeof(dir) - l, "/w%d.state", w->index);
      /* A backend that completes its directory on its own thread hands
       * the coordinator the task to wait for (sl__wsnap_finish). */
      if (be->ops->snapshot_begin)
        rc = be->ops->snapshot_begin(be, dir, &s->native_task, s->err,
                                     sizeof(s->err));
      else
        rc = be->ops->snapshot(be, dir, s->err, sizeof(s->err));
      if (rc)
        return rc;
      s->native = true;
    } else if (be->ops->kg_changes && native_ok && !w->job->tasks) {
      /* Only what changed since the previous checkpoint, in a segment
       * file; unchanged parts are linked from earlier checkpoints. Not
       * in group mode: a task's chain would name segments of another
       * process's checkpoints, which the task store's retention does not
       * follow; there every snapshot is whole. */
      sl_job_t *job = w->job;
      if (!w->incr && !(w->incr = sl__incr_new(be->kg_lo, be->kg_hi)))
        return SL_ERR_NOMEM;
      /* Key groups written whole are frozen and written by the
       * coordinator (sl__wsnap_finish) while this worker goes on; what
       * follows their chain sections in the file waits in s->tail. */
      if ((rc = sl__incr_begin(w->incr, be, b, s->id,
                               sl__ckpt_completed(job->ckpt), w->index,
                               job->max_par, &s->incr, &s->pending)))
        return rc;
      if (s->pending)
        b = &s->tail;
      else
        s->state_entries += s->incr.entries;
    } else if ((rc = sl__snap_put_entries(b, be, &s->state_entries))) {
      return rc;
    }
  }
  sl_job_t *job = w->job;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    sl__keyed *k = c && !sl__is_source(c) ? sl_op_keyed(c) : NULL;
    if (k && k->timers && c->node->uid &&
        (rc = sl__snap_put_timers(b, c->node->uid, k->timers, &s->timers)))
      return rc;
    if (k && k->tw && c->node->uid) {
      uint32_t lo, hi;
      sl__kg_range(w->index, job->par, job->max_par, &lo, &hi);
      if ((rc = sl__snap_put_taskwm(b, c->node->uid, k->tw, lo, hi)))
        return rc;
    }
  }
  return 0;
}

/* The layout record (checkpoint/layout.h) of every state the worker's
 * keyed operators registered, which restore compares with what the
 * restored job registers. */
static int snap_layout(sl__worker *w, sl__wsnap *s) {
  sl_buf_t *b = s->pending ? &s->tail : &s->file;
  size_t mark, count_at;
  uint32_t n = 0;
  int rc = sl__layout_begin(b, &mark, &count_at);
  for (int i = 0; !rc && i < w->job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    sl__keyed *k = c && !sl__is_source(c) ? sl_op_keyed(c) : NULL;
    if (!k || !k->state || !c->node->uid)
      continue;
    sl_state_t *st;
    for (size_t j = 0; !rc && (st = sl__kstate_state(k->state, j)); j++) {
      char name[1024], text[512];
      snprintf(name, sizeof(name), "%s/%s", c->node->uid, sl__state_name(st));
      sl__state_layout(st, text, sizeof(text));
      rc = sl__layout_add(b, name, text);
      n++;
    }
  }
  if (!rc)
    sl__layout_end(b, mark, count_at, n);
  return rc;
}

/* Builds the worker's snapshot of checkpoint id; NULL when out of
 * memory. Other failures are in s->rc and s->err. With native_ok, a
 * backend with native snapshots writes its state directory into the
 * checkpoint; otherwise every entry goes into the file. */
static sl__wsnap *build_snapshot(sl__worker *w, uint64_t id, bool native_ok) {
  sl_job_t *job = w->job;
  sl__wsnap *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  s->id = id;
  s->worker = w->index;
  sl__kg_range(w->index, job->par, job->max_par, &s->kg_lo, &s->kg_hi);
  sl__buf_init(&s->file);
  sl__buf_init(&s->tail);
  sl__snap_head h = {.worker = (uint32_t)w->index,
                     .id = id,
                     .kg_lo = s->kg_lo,
                     .kg_hi = s->kg_hi,
                     .max_par = job->max_par};
  int rc = sl__snap_begin_file(&s->file, &h);
  if (!rc)
    rc = snap_hooks(w, s);
  if (!rc)
    rc = snap_bcast(w, s);
  if (!rc)
    rc = snap_keyed(w, s, native_ok);
  if (!rc)
    rc = snap_layout(w, s);
  if (!rc && !s->pending)
    rc = sl__snap_finish_file(&s->file);
  if (rc && !s->err[0])
    snprintf(s->err, sizeof(s->err), "worker %d: snapshot failed: %s", w->index,
             sl_strerror(rc));
  s->rc = rc;
  return s;
}

/* Takes the worker's snapshot of checkpoint id and hands it to the
 * coordinator. Failures fail the checkpoint, not the job. */
static void take_snapshot(sl__worker *w, uint64_t id) {
  int64_t t0 = sl__mono_ns();
  sl__wsnap *s = build_snapshot(w, id, true);
  if (!s) {
    sl__job_fail(w->job, SL_ERR_NOMEM, "out of memory for a checkpoint");
    return;
  }
  /* The pause includes the worker's waits for the background part of the
   * previous snapshot (a cache that reached its limit meanwhile). */
  int64_t waited = 0;
  if (w->be) {
    waited = w->be->snap_wait_ns;
    w->be->snap_wait_ns = 0;
  }
  s->pause_us = (sl__mono_ns() - t0 + waited) / 1000;
  sl__ckpt_ack(w->job->ckpt, s);
  sl__job_wake(w->job);
}

int sl__barrier_snapshot_image(sl__worker *w, void **data, size_t *len,
                               char *err, size_t errlen) {
  sl__wsnap *s = build_snapshot(w, 1, false);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return SL_ERR_NOMEM;
  }
  int rc = s->rc;
  if (rc) {
    snprintf(err, errlen, "%s", s->err);
  } else {
    *data = s->file.data;
    *len = s->file.len;
    sl__buf_init(&s->file);
  }
  sl__wsnap_free(s);
  return rc;
}

static int notify(sl__worker *w, uint64_t done) {
  sl_job_t *job = w->job;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (!c || !c->opened)
      continue;
    if (sl__is_source(c)) {
      const sl_source_ops_t *o = c->node->src_ops;
      if (o->checkpoint_complete)
        o->checkpoint_complete((src_t *)c, done, c->node->src_opaque);
    } else if (c->ops->checkpoint_complete) {
      int rc = c->ops->checkpoint_complete(c, done);
      if (rc)
        return rc;
    }
  }
  return 0;
}

static void abandon(sl__worker *w, uint64_t id) {
  sl_job_t *job = w->job;
  w->ckpt_done = id;
  w->ckpt_id = 0;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    if (c && c->opened && !sl__is_source(c) && c->ops->checkpoint_abort)
      c->ops->checkpoint_abort(c, id);
  }
}

int sl__barrier_round(sl__worker *w) {
  sl_job_t *job = w->job;
  if (!sl__ckpt_enabled(job->ckpt))
    return 0;
  uint64_t t = sl__ckpt_triggered(job->ckpt);
  if (t > w->ckpt_done && t > w->ckpt_id)
    w->ckpt_id = t;
  if (w->ckpt_id && w->ckpt_id < t) {
    /* The coordinator gave this one up and moved on. */
    abandon(w, w->ckpt_id);
    w->ckpt_id = t;
  }
  uint64_t id = w->ckpt_id;
  if (id && w->ckpt_injected != id) {
    w->ckpt_injected = id;
    for (int i = 0; i < job->g.n_nodes; i++) {
      sl_ctx_t *c = w->inst[i];
      if (!c || !sl__is_source(c) || ((src_t *)c)->done)
        continue;
      int rc = sl__forward_barrier(c, id);
      if (rc)
        return rc;
    }
  }
  if (id && worker_aligned(w)) {
    take_snapshot(w, id);
    w->ckpt_done = id;
    w->ckpt_id = 0;
  }
  uint64_t done = sl__ckpt_completed(job->ckpt);
  if (done > w->ckpt_notified) {
    w->ckpt_notified = done;
    return notify(w, done);
  }
  return 0;
}

void sl__barrier_park(sl__worker *w, bool clean) {
  sl_job_t *job = w->job;
  sl__worker_finished(w, clean);
  if (!sl__ckpt_enabled(job->ckpt) || !clean)
    return;
  pthread_mutex_lock(&job->mu);
  while (!job->release) {
    uint64_t t = sl__ckpt_triggered(job->ckpt);
    uint64_t done = sl__ckpt_completed(job->ckpt);
    if (t > w->ckpt_done || done > w->ckpt_notified) {
      pthread_mutex_unlock(&job->mu);
      if (t > w->ckpt_done) {
        /* Nothing moves on a finished worker: its state is consistent
         * with any barrier, so it snapshots without aligning. */
        w->ckpt_id = w->ckpt_injected = t;
        take_snapshot(w, t);
        w->ckpt_done = t;
        w->ckpt_id = 0;
      }
      if (done > w->ckpt_notified) {
        w->ckpt_notified = done;
        int rc = notify(w, done);
        if (rc && !sl__job_failing(job))
          sl__job_fail(job, rc, "worker %d: checkpoint completion failed: %s",
                       w->index, sl_strerror(rc));
      }
      pthread_mutex_lock(&job->mu);
      continue;
    }
    pthread_cond_wait(&job->cv, &job->mu);
  }
  pthread_mutex_unlock(&job->mu);
}
