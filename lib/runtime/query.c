/* SPDX-License-Identifier: Apache-2.0 */
/* Queryable state (sluice/query.h): a query from any thread becomes a
 * request on the queue of the worker that owns the key; the worker loop
 * answers its queue between two batches of records (sl__query_serve),
 * through the same backend it processes records with, so every backend
 * call stays on the owning thread (state/backend.h) and the answer is the
 * key's state between two records. The caller waits on a condition
 * variable, at most its timeout; a request abandoned while the worker
 * answers it is freed by the worker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/conf.h"
#include "core/hash.h"
#include "runtime/group.h"
#include "runtime/runtime.h"
#include "state/state.h"

enum { Q_QUEUED, Q_TAKEN, Q_DONE, Q_ABANDONED };

struct sl__qreq {
  struct sl__qreq *next;
  int status; /* under job->q_mu */
  /* The question: copies, so an abandoned request owes the caller
   * nothing. */
  const char *uid, *state;
  const void *key, *mk;
  size_t key_len, mk_len;
  uint64_t hash;
  uint32_t kg;
  /* The answer. */
  int rc;
  sl_query_result_t *res;
  char err[256];
};

void sl__query_init(sl_job_t *job) {
  pthread_mutex_init(&job->q_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&job->q_cv, &ca);
  pthread_condattr_destroy(&ca);
  job->q_timeout_ms = sl__conf_int(job->conf, "query.timeout.ms");
}

void sl__query_fini(sl_job_t *job) {
  pthread_mutex_destroy(&job->q_mu);
  pthread_cond_destroy(&job->q_cv);
}

void sl_query_result_free(sl_query_result_t *r) {
  free(r); /* one block: see lib/state/query.c */
}

/* ---- Worker side --------------------------------------------------------- */

static void answer(sl__worker *w, struct sl__qreq *r) {
  sl_job_t *job = w->job;
  r->rc = SL_ERR_NOTFOUND;
  sl_ctx_t *c = NULL;
  for (int i = 0; i < job->g.n_nodes && !c; i++) {
    const char *uid = job->g.nodes[i]->uid;
    if (uid && strcmp(uid, r->uid) == 0)
      c = w->inst[i];
  }
  struct sl__keyed *k = c ? c->keyed : NULL;
  if (!k || !k->state) {
    snprintf(r->err, sizeof(r->err), "operator \"%s\" has no keyed state",
             r->uid);
    return;
  }
  sl_state_t *st = sl__kstate_find(k->state, r->state, strlen(r->state));
  if (!st) {
    snprintf(r->err, sizeof(r->err), "operator \"%s\" has no state \"%s\"",
             r->uid, r->state);
    return;
  }
  if (!sl__state_queryable(st)) {
    r->rc = SL_ERR_INVAL;
    snprintf(r->err, sizeof(r->err),
             "state \"%s\" of operator \"%s\" is not queryable (its "
             "descriptor does not set queryable)",
             r->state, r->uid);
    return;
  }
  /* Event-time TTL reads the operator's watermark: every element still
   * to come that is not late is at least that old. */
  int64_t event_now = k->wm ? *k->wm : c->wm;
  r->rc = sl__state_query(st, r->key, r->key_len, r->hash, r->kg, r->mk,
                          r->mk_len, sl_ctx_now(c), event_now, &r->res);
  if (r->rc < 0) {
    sl__backend *be = sl__kstate_backend(k->state);
    snprintf(r->err, sizeof(r->err), "query of state \"%s\" of \"%s\": %s",
             r->state, r->uid, be->errmsg ? be->errmsg : sl_strerror(r->rc));
  }
}

void sl__query_serve(sl__worker *w) {
  sl_job_t *job = w->job;
  pthread_mutex_lock(&job->q_mu);
  struct sl__qreq *list = w->q_head;
  w->q_head = NULL;
  atomic_store_explicit(&w->q_pending, 0, memory_order_relaxed);
  for (struct sl__qreq *r = list; r; r = r->next)
    r->status = Q_TAKEN;
  pthread_mutex_unlock(&job->q_mu);
  if (!list)
    return;
  uint64_t n = 0;
  for (struct sl__qreq *r = list; r; r = r->next, n++)
    answer(w, r);
  pthread_mutex_lock(&job->q_mu);
  for (struct sl__qreq *r = list, *next; r; r = next) {
    next = r->next;
    if (r->status == Q_ABANDONED) {
      sl_query_result_free(r->res);
      free(r);
    } else {
      r->status = Q_DONE;
    }
  }
  pthread_cond_broadcast(&job->q_cv);
  pthread_mutex_unlock(&job->q_mu);
  atomic_fetch_add_explicit(&job->q_served, n, memory_order_relaxed);
}

void sl__query_close(sl__worker *w) {
  sl_job_t *job = w->job;
  pthread_mutex_lock(&job->q_mu);
  w->q_closed = true;
  for (struct sl__qreq *r = w->q_head, *next; r; r = next) {
    next = r->next;
    r->rc = SL_ERR_STATE;
    snprintf(r->err, sizeof(r->err), "job \"%s\" is not running", job->name);
    r->status = Q_DONE;
  }
  w->q_head = NULL;
  pthread_cond_broadcast(&job->q_cv);
  pthread_mutex_unlock(&job->q_mu);
}

/* ---- Caller side ----------------------------------------------------------
 */

/* A key of a task another process owns (group mode): SL_ERR_NOT_OWNER
 * naming the owner, which *owner receives too when asked for. */
static int not_owner(const sl_query_owner_t *o, sl_query_owner_t *owner,
                     char *err, size_t errlen) {
  if (owner)
    *owner = *o;
  if (err && errlen) {
    if (o->where == SL_QUERY_REMOTE)
      snprintf(err, errlen,
               "the key's task %u is owned by instance \"%s\" (endpoint "
               "\"%s\")",
               o->task, o->instance, o->endpoint);
    else
      snprintf(err, errlen,
               "the key's task %u is moving to another process (a "
               "rebalance); ask again shortly",
               o->task);
  }
  return SL_ERR_NOT_OWNER;
}

static struct sl__qreq *req_new(const char *uid, const char *state,
                                const void *key, size_t key_len, const void *mk,
                                size_t mk_len) {
  size_t ul = strlen(uid) + 1, sl = strlen(state) + 1;
  struct sl__qreq *r = calloc(1, sizeof(*r) + ul + sl + key_len + mk_len);
  if (!r)
    return NULL;
  char *p = (char *)(r + 1);
  memcpy(p, uid, ul);
  r->uid = p;
  memcpy(p += ul, state, sl);
  r->state = p;
  if (key_len)
    memcpy(p += sl, key, key_len);
  else
    p += sl;
  r->key = p;
  r->key_len = key_len;
  if (mk) {
    if (mk_len)
      memcpy(p += key_len, mk, mk_len);
    else
      p += key_len;
    r->mk = p;
    r->mk_len = mk_len;
  }
  return r;
}

static void deadline_of(struct timespec *ts, int64_t ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

static int fail(int rc, char *err, size_t errlen, const char *msg) {
  if (err && errlen)
    snprintf(err, errlen, "%s", msg);
  return rc;
}

int sl_job_query(sl_job_t *job, const char *uid, const char *state,
                 const void *key, size_t key_len, const sl_query_opts_t *opts,
                 sl_query_result_t **out, char *err, size_t errlen) {
  if (out)
    *out = NULL;
  if (!job || !uid || !state || !out || (!key && key_len) ||
      (opts && opts->timeout_ms < 0))
    return fail(SL_ERR_INVAL, err, errlen,
                "sl_job_query: job, uid, state, out and key (unless key_len "
                "is 0) are required; timeout_ms must not be negative");
  char msg[256];
  /* planned: job->workers and the graph may be read (release in
   * sl__job_prepare). */
  if (atomic_load(&job->phase) != SL__JOB_RUNNING ||
      !sl__stats_is_planned(job)) {
    snprintf(msg, sizeof(msg), "job \"%s\" is not running", job->name);
    return fail(SL_ERR_STATE, err, errlen, msg);
  }
  const void *mk = opts ? opts->map_key : NULL;
  size_t mk_len = mk ? opts->map_key_len : 0;
  int64_t timeout =
      opts && opts->timeout_ms ? opts->timeout_ms : job->q_timeout_ms;
  /* The key group is the task: the same rule as key_by's (in group mode
   * the key's Kafka partition), so the query finds the worker and the
   * entry the records went to. */
  uint64_t hash = sl__hash64(key, key_len);
  uint32_t kg = sl__job_task_of(job, key, key_len, hash);
  /* With several keyed stages (repartition topics) the task is the
   * key's partition in the stage of uid. */
  uint32_t task = (uint32_t)sl__job_stage_of(job, uid) * job->max_par + kg;
  sl_query_owner_t o;
  sl__job_owner(job, task, &o);
  if (o.where != SL_QUERY_LOCAL)
    return not_owner(&o, opts ? opts->owner : NULL, err, errlen);
  struct sl__qreq *r = req_new(uid, state, key, key_len, mk, mk_len);
  if (!r)
    return fail(SL_ERR_NOMEM, err, errlen, "out of memory");
  r->hash = hash;
  r->kg = kg;
  sl__worker *w = &job->workers[job->kg_worker[r->kg]];
  struct timespec dl;
  deadline_of(&dl, timeout);
  int rc;
  pthread_mutex_lock(&job->q_mu);
  if (w->q_closed) {
    pthread_mutex_unlock(&job->q_mu);
    free(r);
    snprintf(msg, sizeof(msg), "job \"%s\" is not running", job->name);
    return fail(SL_ERR_STATE, err, errlen, msg);
  }
  struct sl__qreq **tail = &w->q_head;
  while (*tail)
    tail = &(*tail)->next;
  *tail = r;
  atomic_store_explicit(&w->q_pending, 1, memory_order_relaxed);
  while (r->status != Q_DONE) {
    if (pthread_cond_timedwait(&job->q_cv, &job->q_mu, &dl) == 0 ||
        r->status == Q_DONE)
      continue;
    /* Timed out: a queued request leaves the queue, one being answered
     * is left to the worker to free. */
    if (r->status == Q_QUEUED) {
      for (tail = &w->q_head; *tail != r; tail = &(*tail)->next)
        ;
      *tail = r->next;
      free(r);
    } else {
      r->status = Q_ABANDONED;
    }
    pthread_mutex_unlock(&job->q_mu);
    atomic_fetch_add_explicit(&job->q_timeouts, 1, memory_order_relaxed);
    snprintf(msg, sizeof(msg),
             "query of state \"%s\" of \"%s\": worker %d did not answer "
             "within %lld ms",
             state, uid, w->index, (long long)timeout);
    return fail(SL_ERR_TIMEOUT, err, errlen, msg);
  }
  pthread_mutex_unlock(&job->q_mu);
  rc = r->rc;
  if (rc < 0)
    fail(rc, err, errlen, r->err);
  else
    *out = r->res;
  free(r);
  return rc;
}

int sl_job_query_owner(sl_job_t *job, const void *key, size_t key_len,
                       sl_query_owner_t *out, char *err, size_t errlen) {
  if (!job || !out || (!key && key_len))
    return fail(SL_ERR_INVAL, err, errlen,
                "sl_job_query_owner: job, out and key (unless key_len is 0) "
                "are required");
  if (atomic_load(&job->phase) != SL__JOB_RUNNING) {
    char msg[256];
    snprintf(msg, sizeof(msg), "job \"%s\" is not running", job->name);
    return fail(SL_ERR_STATE, err, errlen, msg);
  }
  sl__job_owner(
      job, sl__job_task_of(job, key, key_len, sl__hash64(key, key_len)), out);
  return SL_OK;
}

void sl__query_counts(sl_job_t *job, uint64_t *served, uint64_t *timeouts) {
  *served = atomic_load_explicit(&job->q_served, memory_order_relaxed);
  *timeouts = atomic_load_explicit(&job->q_timeouts, memory_order_relaxed);
}
