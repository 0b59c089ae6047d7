/* SPDX-License-Identifier: Apache-2.0 */
/* Group mode's task state on the runtime's side (tasks.h): one slot per
 * task, written by the source that is assigned or revoked the task's
 * partition, served by the worker that owns the task's key group.
 *
 * A slot's request is one atomic word. The source stores the request
 * (after the checkpoint path, under mu) and counts it in pending only
 * when the slot had none outstanding; the worker serves a request and
 * then moves the slot on with a compare-and-swap from the request it
 * served, so a newer request that arrived meanwhile (a drop overtaking a
 * load) is never lost: the swap fails and the next round serves it. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/coord.h"
#include "core/fault.h"
#include "core/fs.h"
#include "runtime/barrier.h"
#include "runtime/keyed.h"
#include "runtime/runtime.h"
#include "runtime/tasks.h"
#include "state/keyed.h"
#include "time/taskwm.h"
#include "time/timers.h"

typedef struct task_slot {
  _Atomic int st;
  char path[4600]; /* checkpoint to load (absolute), under mu */
  bool has_path;
  /* Under mu: whether this process holds the task (from its load to its
   * drop), its pointer as last written or restored here, and the
   * checkpoint named pending in it (0: none). Pointers are written from
   * the source's thread (after a completion) and from the coordinator's
   * (before a commit), so each write starts from this copy, never from
   * a read of the file another thread may be replacing. */
  bool owned;
  sl__task_ptr ptr;
  uint64_t pending_id;
  /* Written by the worker before the swap to READY, read by the source
   * after it saw READY (sl__task_watermark). */
  int64_t wm;
} task_slot;

struct sl__tasks {
  uint32_t n;          /* slots: stages * kgs */
  uint32_t kgs;        /* tasks per stage: the key groups */
  bool named;          /* pointers named by topic (repartition topics) */
  _Atomic int pending; /* requests not yet served */
  pthread_mutex_t mu;
  task_slot *slot;
};

struct sl__tasks *sl__tasks_new(uint32_t n) {
  struct sl__tasks *t = calloc(1, sizeof(*t));
  if (!t || !(t->slot = calloc(n, sizeof(*t->slot)))) {
    free(t);
    return NULL;
  }
  t->n = t->kgs = n;
  pthread_mutex_init(&t->mu, NULL);
  return t;
}

int sl__tasks_stages(struct sl__tasks *t, int stages, bool named) {
  uint32_t n = (uint32_t)stages * t->kgs;
  t->named = named;
  if (n <= t->n)
    return SL_OK;
  task_slot *a = realloc(t->slot, n * sizeof(*a));
  if (!a)
    return SL_ERR_NOMEM;
  memset(a + t->n, 0, (n - t->n) * sizeof(*a));
  t->slot = a;
  t->n = n;
  return SL_OK;
}

void sl__tasks_reset(struct sl__tasks *t) {
  if (!t)
    return;
  pthread_mutex_lock(&t->mu);
  for (uint32_t i = 0; i < t->n; i++) {
    task_slot *s = &t->slot[i];
    atomic_store(&s->st, SL__TASK_IDLE);
    s->has_path = s->owned = false;
    s->pending_id = 0;
  }
  atomic_store(&t->pending, 0);
  pthread_mutex_unlock(&t->mu);
}

void sl__tasks_free(struct sl__tasks *t) {
  if (!t)
    return;
  pthread_mutex_destroy(&t->mu);
  free(t->slot);
  free(t);
}

static sl_job_t *job_of(sl_ctx_t *op) {
  return op->w->job;
}

bool sl__tasks_on(sl_ctx_t *op) {
  return job_of(op)->tasks != NULL;
}

int sl__task_read(sl_ctx_t *op, uint32_t task, const char *topic,
                  int32_t partition, sl__task_ptr *p, char *err,
                  size_t errlen) {
  sl_job_t *job = job_of(op);
  const char *root = sl__ckpt_root(job->ckpt);
  int r = job->tasks->named
              ? sl__task_ptr_read_named(root, topic, partition, p, err, errlen)
              : sl__task_ptr_read(root, task, p, err, errlen);
  if (r == 1) {
    p->task = task;
    p->named = job->tasks->named;
  }
  return r;
}

int sl__task_pending_state(sl_ctx_t *op, const sl__task_ptr *p) {
  return sl__task_ckpt_state(sl__ckpt_root(job_of(op)->ckpt), p->pending);
}

static void request(struct sl__tasks *t, uint32_t task, int what) {
  int old = atomic_exchange(&t->slot[task].st, what);
  if (old != SL__TASK_LOAD && old != SL__TASK_DROP)
    atomic_fetch_add(&t->pending, 1);
}

void sl__task_load(sl_ctx_t *op, uint32_t task, const sl__task_ptr *p) {
  sl_job_t *job = job_of(op);
  struct sl__tasks *t = job->tasks;
  task_slot *s = &t->slot[task];
  pthread_mutex_lock(&t->mu);
  s->has_path = p->checkpoint[0] != '\0';
  if (s->has_path)
    snprintf(s->path, sizeof(s->path), "%s/%s", sl__ckpt_root(job->ckpt),
             p->checkpoint);
  s->owned = true;
  s->ptr = *p;
  s->ptr.pending[0] = '\0';
  s->pending_id = 0;
  pthread_mutex_unlock(&t->mu);
  request(t, task, SL__TASK_LOAD);
  sl__job_wake(job);
}

void sl__task_drop(sl_ctx_t *op, uint32_t task) {
  struct sl__tasks *t = job_of(op)->tasks;
  pthread_mutex_lock(&t->mu);
  t->slot[task].owned = false;
  pthread_mutex_unlock(&t->mu);
  request(t, task, SL__TASK_DROP);
}

int sl__task_state(sl_ctx_t *op, uint32_t task) {
  return atomic_load(&job_of(op)->tasks->slot[task].st);
}

int64_t sl__task_watermark(sl_ctx_t *op, uint32_t task) {
  return job_of(op)->tasks->slot[task].wm;
}

int sl__task_send_wm(sl_ctx_t *op, uint32_t task, int64_t wm) {
  return sl__forward_task_wm(op, task % job_of(op)->tasks->kgs, wm);
}

/* mu held. Named as the job names its tasks; written only if no other
 * process wrote a generation after the one p->gen says this process last
 * read or wrote (p->gen is then the new one). SL__TASK_PTR_MOVED (another
 * process wrote it since: this one lost the task) or SL_ERR_IO, with the reason
 * in err. */
static int write_ptr(sl_job_t *job, sl__task_ptr *p, char *err, size_t errlen) {
  sl__fmode m = sl__fs_mode(job->conf);
  sl__task_ptr w = *p;
  w.named = job->tasks->named;
  w.legacy = w.legacy && w.named;
  char name[600];
  if (w.named)
    snprintf(name, sizeof(name), "%s-%" PRId32, w.topic, w.partition);
  else
    snprintf(name, sizeof(name), "%" PRIu32, w.task);
  int r = sl__task_ptr_write(sl__ckpt_root(job->ckpt), &w, m.file, m.dir);
  if (r == SL__TASK_PTR_MOVED) {
    snprintf(err, errlen,
             "fenced: task %s: its pointer was rewritten by another process "
             "since this one last read or wrote it, so the task has another "
             "owner: nothing more is pointed at or committed for it here",
             name);
    return SL__TASK_PTR_MOVED;
  }
  if (r) {
    snprintf(err, errlen, "task %s: cannot write its pointer: %s", name,
             strerror(errno));
    return SL_ERR_IO;
  }
  p->gen = w.gen;
  p->stamp = w.stamp;
  p->legacy = w.legacy;
  return 0;
}

int sl__task_publish(sl_ctx_t *op, uint64_t id, sl__task_ptr *p, char *err,
                     size_t errlen) {
  sl_job_t *job = job_of(op);
  struct sl__tasks *t = job->tasks;
  task_slot *s = &t->slot[p->task];
  sl__ckpt_rel(job->ckpt, id, p->checkpoint, sizeof(p->checkpoint));
  pthread_mutex_lock(&t->mu);
  /* Between the caller's question to the group and the write; under mu,
   * so no other thread of the process is inside a write. */
  sl__fault_hit("task.publish");
  /* A later checkpoint's commit may have named itself pending already
   * (the coordinator moves on while this thread publishes): it stays. */
  p->pending[0] = '\0';
  p->pending_offset = -1;
  p->legacy = s->ptr.legacy;
  p->gen = s->ptr.gen;
  p->stamp = s->ptr.stamp;
  if (s->pending_id > id) {
    snprintf(p->pending, sizeof(p->pending), "%s", s->ptr.pending);
    p->pending_offset = s->ptr.pending_offset;
  } else {
    s->pending_id = 0;
  }
  int rc = write_ptr(job, p, err, errlen);
  if (!rc)
    s->ptr = *p;
  pthread_mutex_unlock(&t->mu);
  return rc;
}

int sl__task_settle(sl_ctx_t *op, sl__task_ptr *p, char *err, size_t errlen) {
  sl_job_t *job = job_of(op);
  struct sl__tasks *t = job->tasks;
  pthread_mutex_lock(&t->mu);
  int rc = write_ptr(job, p, err, errlen);
  pthread_mutex_unlock(&t->mu);
  return rc;
}

int sl__task_prepare(sl_job_t *job, uint64_t id, uint32_t task, int64_t offset,
                     char *err, size_t errlen) {
  struct sl__tasks *t = job->tasks;
  if (!t || task >= t->n)
    return 0;
  task_slot *s = &t->slot[task];
  int rc = 0;
  pthread_mutex_lock(&t->mu);
  if (s->owned) {
    sl__fault_hit("task.prepare"); /* after the commit's group check */
    sl__task_ptr p = s->ptr;
    sl__ckpt_rel(job->ckpt, id, p.pending, sizeof(p.pending));
    p.pending_offset = offset;
    if (!(rc = write_ptr(job, &p, err, errlen))) {
      s->ptr = p;
      s->pending_id = id;
    }
  }
  pthread_mutex_unlock(&t->mu);
  return rc;
}

void sl__task_ckpt_name(sl_job_t *job, uint64_t id, char *buf, size_t len) {
  if (!job->ckpt || !sl__ckpt_root(job->ckpt)) {
    if (len)
      buf[0] = '\0';
    return;
  }
  sl__ckpt_rel(job->ckpt, id, buf, len);
}

uint64_t sl__task_checkpoint(sl_ctx_t *op) {
  sl_job_t *job = job_of(op);
  uint64_t t = sl__ckpt_triggered(job->ckpt);
  sl__ckpt_demand(job->ckpt);
  sl__job_wake(job);
  return t;
}

uint64_t sl__task_completed(sl_ctx_t *op) {
  return sl__ckpt_completed(job_of(op)->ckpt);
}

/* ---- The owning worker -------------------------------------------------- */

typedef struct timer_ref {
  int domain;
  int64_t ts;
  uint64_t hash;
  void *key, *ns;
  size_t key_len, ns_len;
} timer_ref;

typedef struct timer_refs {
  timer_ref *a;
  size_t n, cap;
} timer_refs;

static int collect_timer(const sl__timer_view *v, int domain, void *opaque) {
  timer_refs *r = opaque;
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    timer_ref *a = realloc(r->a, cap * sizeof(*a));
    if (!a)
      return SL_ERR_NOMEM;
    r->a = a;
    r->cap = cap;
  }
  timer_ref *t = &r->a[r->n];
  *t = (timer_ref){domain,
                   v->ts,
                   v->hash,
                   malloc(v->key_len + 1),
                   malloc(v->ns_len + 1),
                   v->key_len,
                   v->ns_len};
  if (!t->key || !t->ns) {
    free(t->key);
    free(t->ns);
    return SL_ERR_NOMEM;
  }
  memcpy(t->key, v->key, v->key_len);
  if (v->ns_len)
    memcpy(t->ns, v->ns, v->ns_len);
  r->n++;
  return 0;
}

/* Whether node n's keyed state belongs to stage (every node's does when
 * the job has one keyed stage). */
static bool of_stage(const sl_job_t *job, const sl__node *n, int stage) {
  return job->g.n_stages <= 1 || n->stage == stage;
}

/* The backend states of stage's operators ("<uid>/<name>"), for a drop
 * of one stage's key group; NULL (all of them) with one stage. */
static int stage_states(sl__worker *w, sl__backend *be, int stage, bool **out) {
  sl_job_t *job = w->job;
  *out = NULL;
  if (job->g.n_stages <= 1)
    return 0;
  uint32_t n = be->ops->state_count(be);
  bool *a = calloc(n ? n : 1, sizeof(*a));
  if (!a)
    return SL_ERR_NOMEM;
  for (uint32_t id = 0; id < n; id++) {
    const char *name;
    sl__btype type;
    if (be->ops->state_info(be, id, &name, &type))
      continue;
    /* The operator whose uid is the longest prefix before a '/'. */
    size_t best = 0;
    for (int i = 0; i < job->g.n_nodes; i++) {
      const sl__node *nd = job->g.nodes[i];
      size_t ul = nd->uid ? strlen(nd->uid) : 0;
      if (ul > best && strncmp(name, nd->uid, ul) == 0 && name[ul] == '/') {
        best = ul;
        a[id] = nd->stage == stage;
      }
    }
  }
  *out = a;
  return 0;
}

/* The task's keyed state and timers leave the worker: after a revocation
 * (its snapshot is written) and before a load (nothing stale may stay).
 * Only the operators of the task's stage: key group kg of another stage
 * is another task, which this process may hold. */
static int clear_task(sl__worker *w, int stage, uint32_t kg) {
  char err[256];
  sl__backend *be = sl__worker_backend(w, err, sizeof(err));
  if (!be)
    return sl__job_fail(w->job, SL_ERR_STATE, "task %" PRIu32 ": %s", kg, err);
  bool *states;
  if (stage_states(w, be, stage, &states))
    return sl__job_fail(w->job, SL_ERR_NOMEM,
                        "task %" PRIu32 ": out of memory dropping state", kg);
  be->ops->kg_drop(be, kg, states);
  free(states);
  for (int i = 0; i < w->job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    sl__keyed *k = c && !sl__is_source(c) ? sl_op_keyed(c) : NULL;
    if (!k || !of_stage(w->job, c->node, stage))
      continue;
    if (k->tw)
      sl__taskwm_drop(k->tw, kg);
    if (!k->timers)
      continue;
    timer_refs r = {0};
    int rc = sl__timers_foreach_kg(k->timers, kg, kg, collect_timer, &r);
    for (size_t j = 0; j < r.n; j++) {
      timer_ref *t = &r.a[j];
      if (!rc)
        sl__timers_del(k->timers, t->domain, t->ts, t->hash, kg, t->key,
                       t->key_len, t->ns, t->ns_len);
      free(t->key);
      free(t->ns);
    }
    free(r.a);
    if (rc)
      return sl__job_fail(w->job, SL_ERR_NOMEM,
                          "task %" PRIu32 ": out of memory dropping timers",
                          kg);
  }
  return 0;
}

/* *wm: where the task's snapshot holds it on ports that follow its
 * source (sl__task_watermark). */
static int load_task(sl__worker *w, int stage, uint32_t kg, const char *path,
                     int64_t *wm) {
  sl_job_t *job = w->job;
  int rc = clear_task(w, stage, kg);
  if (rc)
    return rc;
  /* The task is held from now on, at the watermark its snapshot recorded
   * (restore_taskwm), else from the minimum. */
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    sl__keyed *k = c && !sl__is_source(c) ? sl_op_keyed(c) : NULL;
    if (k && k->tw && of_stage(job, c->node, stage))
      sl__taskwm_load(k->tw, kg, SL_TS_MIN);
  }
  if (path) {
    char err[1024] = "";
    sl__restore *rs = NULL;
    rc = sl__ckpt_load_path(path, job->max_par, &rs, err, sizeof(err));
    if (!rc)
      rc = sl__restore_task(w, rs, job->g.n_stages > 1 ? stage : -1, kg);
    sl__ckpt_restore_free(rs);
    if (rc && !sl__job_failing(job))
      sl__job_fail(job, rc, "task %" PRIu32 ": cannot restore it from %s: %s",
                   kg, path, err[0] ? err : sl_strerror(rc));
    if (rc)
      return job->err;
  }
  /* Operators further down the stage take the task's watermark from the
   * one upstream (time/taskwm.h): each tells the next where the task
   * stands, in topological order. */
  int64_t m = SL_TS_MAX;
  for (int i = 0; !rc && i < job->g.n_nodes; i++) {
    sl_ctx_t *c = w->inst[i];
    sl__keyed *k = c && !sl__is_source(c) ? sl_op_keyed(c) : NULL;
    if (k && k->tw && of_stage(job, c->node, stage)) {
      int64_t v = sl__taskwm_source(k->tw, kg);
      m = v < m ? v : m;
      rc = sl__keyed_task_announce(k, kg);
    }
  }
  *wm = m == SL_TS_MAX ? SL_TS_MIN : m;
  return rc;
}

int sl__tasks_serve(sl__worker *w) {
  struct sl__tasks *t = w->job->tasks;
  if (!t || !atomic_load_explicit(&t->pending, memory_order_acquire))
    return 0;
  uint32_t lo, hi;
  sl__kg_range(w->index, w->job->par, w->job->max_par, &lo, &hi);
  for (uint32_t base = 0; base < t->n; base += t->kgs) {
    int stage = (int)(base / t->kgs);
    for (uint32_t kg = lo; kg < hi; kg++) {
      task_slot *s = &t->slot[base + kg];
      int st = atomic_load(&s->st), rc;
      if (st == SL__TASK_LOAD) {
        char path[sizeof(s->path)];
        pthread_mutex_lock(&t->mu);
        bool has = s->has_path;
        memcpy(path, s->path, sizeof(path));
        pthread_mutex_unlock(&t->mu);
        rc = load_task(w, stage, kg, has ? path : NULL, &s->wm);
      } else if (st == SL__TASK_DROP) {
        rc = clear_task(w, stage, kg);
      } else {
        continue;
      }
      if (rc)
        return rc;
      int done = st == SL__TASK_LOAD ? SL__TASK_READY : SL__TASK_IDLE;
      if (atomic_compare_exchange_strong(&s->st, &st, done))
        atomic_fetch_sub(&t->pending, 1);
    }
  }
  return 0;
}
