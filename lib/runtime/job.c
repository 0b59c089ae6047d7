/* SPDX-License-Identifier: Apache-2.0 */
/* Job lifecycle: creation from a conf, validation, the physical plan (one
 * instance of each node per worker that runs it, wired by direct edges or
 * exchanges), worker threads, stop, failure and statistics. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/hash.h"
#include "core/log.h"
#include "checkpoint/coord.h"
#include "core/clock.h"
#include "graph/plan.h"
#include "runtime/group.h"
#include "runtime/tasks.h"
#include "runtime/runtime.h"
#include "runtime/stats.h"
#include "time/taskwm.h"

void *sl__worker_main(void *arg);
extern const sl_operator_ops_t sl__source_ops;

/* The graph's build errors (sl__graph.report): while the job is built the
 * first one fails the coming run; once running, a refused change only
 * explains itself in the message and must not fail the running job. */
static void report_build_error(sl_job_t *job, int err, bool building,
                               const char *msg) {
  pthread_mutex_lock(&job->err_lock);
  if (!job->err && !job->g.build_err) {
    if (building)
      job->g.build_err = job->err = err;
    snprintf(job->errmsg, sizeof(job->errmsg), "%s", msg);
  }
  pthread_mutex_unlock(&job->err_lock);
}

sl_job_t *sl__job_create(const char *name, sl_conf_t *conf, char *err,
                         size_t errlen) {
  sl_conf_t *own = NULL;
  if (!conf && !(conf = own = sl_conf_new())) {
    sl__errf(err, errlen, "out of memory");
    return NULL;
  }
  int par = (int)sl__conf_int(conf, "parallelism");
  int64_t max_par = sl__conf_int(conf, "max.parallelism");
  /* Group mode: a key group is a partition of the keyed stage's input
   * topic (docs/scaling.md), so there are as many as it has partitions. */
  bool group = sl__conf_enum(conf, "group.mode") != 0;
  if (group) {
    max_par = sl__conf_int(conf, "group.partitions");
    if (max_par == 0) {
      sl__errf(err, errlen,
               "group.mode=%s needs group.partitions: the partition "
               "count of the topics the keyed stage reads",
               sl__conf_str(conf, "group.mode"));
      sl_conf_destroy(own);
      return NULL;
    }
    if (*sl__conf_str(conf, "restore.from")) {
      sl__errf(err, errlen,
               "group.mode=%s restores each task from the shared "
               "checkpoint.dir when it is assigned (docs/scaling.md); "
               "unset restore.from",
               sl__conf_str(conf, "group.mode"));
      sl_conf_destroy(own);
      return NULL;
    }
  }
  if (par > max_par) {
    sl__errf(err, errlen,
             "parallelism (%d) must not exceed %s (%lld): each "
             "worker needs at least one key group",
             par, group ? "group.partitions" : "max.parallelism",
             (long long)max_par);
    sl_conf_destroy(own);
    return NULL;
  }
  sl_job_t *job = calloc(1, sizeof(*job));
  if (!job || !(job->name = sl__strdup(name ? name : "job")) ||
      !(job->own_clock = sl_clock_new_system())) {
    if (job) {
      free(job->name);
      free(job->instance);
      free(job);
    }
    sl_conf_destroy(own);
    sl__errf(err, errlen, "out of memory");
    return NULL;
  }
  job->conf = conf;
  pthread_mutex_init(&job->stat_lock, NULL);
  job->g.report = report_build_error;
  sl__backend_shared_init(&job->backend_shared);
  job->clock = job->own_clock;
  job->par = par;
  job->max_par = (uint32_t)max_par;
  job->kg_div = sl__divisor_of((uint32_t)max_par);
  job->kg_murmur2 = group;
  job->kg_worker = malloc((size_t)max_par * sizeof(*job->kg_worker));
  if (group && *sl__conf_str(conf, "checkpoint.dir") &&
      !(job->tasks = sl__tasks_new((uint32_t)max_par)))
    free(job->kg_worker), job->kg_worker = NULL;
  if (!job->kg_worker) {
    job->conf = NULL;
    sl_job_destroy(job);
    sl_conf_destroy(own);
    sl__errf(err, errlen, "out of memory");
    return NULL;
  }
  for (uint32_t kg = 0; kg < (uint32_t)max_par; kg++)
    job->kg_worker[kg] = (uint16_t)sl__kg_worker(kg, par, (uint32_t)max_par);
  job->skip_errors = strcmp(sl__conf_str(conf, "error.policy"), "skip") == 0;
  job->dlq_errors = strcmp(sl__conf_str(conf, "error.policy"), "dlq") == 0;
  job->batch_size = (size_t)sl__conf_int(conf, "batch.size");
  job->chan_cap = (size_t)sl__conf_int(conf, "channel.capacity");
  job->source_budget = (size_t)sl__conf_int(conf, "source.batch.size");
  pthread_mutex_init(&job->err_lock, NULL);
  pthread_mutex_init(&job->mu, NULL);
  sl__query_init(job);

  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&job->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (sl__group_init(job)) {
    job->conf = NULL;
    sl_job_destroy(job);
    sl_conf_destroy(own);
    sl__errf(err, errlen, "out of memory");
    return NULL;
  }
  return job;
}

int sl__job_add_service(sl_job_t *job, const sl__service_ops *ops, void *svc) {
  struct sl__svc *a =
      realloc(job->svcs, (size_t)(job->n_svcs + 1) * sizeof(*a));
  if (!a)
    return SL_ERR_NOMEM;
  job->svcs = a;
  job->svcs[job->n_svcs++] = (struct sl__svc){ops, svc};
  return SL_OK;
}

void sl__job_wake(sl_job_t *job) {
  pthread_mutex_lock(&job->mu);
  job->woken = true;
  pthread_cond_broadcast(&job->cv);
  pthread_mutex_unlock(&job->mu);
}

static void plan_free(sl_job_t *job) {
  if (job->workers) {
    for (int w = 0; w < job->par; w++) {
      sl__worker *wk = &job->workers[w];
      if (!wk->inst)
        continue;
      for (int i = job->g.n_nodes - 1; i >= 0; i--) {
        sl_ctx_t *c = wk->inst[i];
        sl__node *n = job->g.nodes[i];
        sl_ctx_t *all[2] = {c, n->kind == SL__NODE_KEYBY
                                   ? wk->inst[job->g.n_nodes + n->xidx]
                                   : NULL};
        for (int k = 0; k < 2; k++) {
          if (!all[k])
            continue;
          free(all[k]->main.e);
          for (int s = 0; s < all[k]->n_side; s++)
            free(all[k]->side[s].outs.e);
          free(all[k]->side);
          free(all[k]->ports);
          free(all[k]);
        }
      }
      free(wk->inst);
      free(wk->proc_time);
      sl__arena_free(&wk->arena);
    }
    free(job->workers);
    job->workers = NULL;
  }
  if (job->xchgs) {
    for (int i = 0; i < job->g.n_xchg; i++)
      sl__xchg_destroy(job->xchgs[i]);
    free(job->xchgs);
    job->xchgs = NULL;
  }
}

void sl_job_destroy(sl_job_t *job) {
  if (!job)
    return;
  /* Services first: the metrics endpoint stops before the plan goes. */
  for (int i = job->n_svcs - 1; i >= 0; i--)
    if (job->svcs[i].ops->destroy)
      job->svcs[i].ops->destroy(job->svcs[i].svc);
  free(job->svcs);
  plan_free(job);
  sl__graph_free(&job->g);
  sl_conf_destroy(job->conf);
  sl_clock_destroy(job->own_clock);
  sl__umetrics_free(job);
  free(job->reporters);
  pthread_mutex_destroy(&job->err_lock);
  pthread_mutex_destroy(&job->mu);
  pthread_mutex_destroy(&job->stat_lock);
  pthread_cond_destroy(&job->cv);
  sl__query_fini(job);
  sl__backend_shared_fini(&job->backend_shared);
  sl__tasks_free(job->tasks);
  free(job->revived_at);
  free(job->kg_worker);
  free(job->name);
  free(job->instance);
  free(job);
}

int sl_job_add_ckpt_participant(sl_job_t *job, const sl_ckpt_participant_t *p) {
  if (!job || !p)
    return SL_ERR_INVAL;
  if (atomic_load(&job->phase) != SL__JOB_NEW)
    return SL_ERR_STATE;
  return sl__ckpt_add_participant(job->ckpt, p);
}

/* The coordinator for a public call from any thread: NULL until every
 * service started (start writes the coordinator's settings). */
static struct sl__ckpt *started_ckpt(sl_job_t *job) {
  return atomic_load_explicit(&job->svcs_started, memory_order_acquire)
             ? job->ckpt
             : NULL;
}

int sl_job_checkpoint(sl_job_t *job) {
  if (!job)
    return SL_ERR_INVAL;
  struct sl__ckpt *ck = started_ckpt(job);
  if (atomic_load(&job->phase) != SL__JOB_RUNNING)
    return SL_ERR_STATE;
  int rc = sl__ckpt_demand(ck);
  if (!rc)
    sl__job_wake(job);
  return rc;
}

int sl_job_checkpoint_info(sl_job_t *job, sl_checkpoint_info_t *out) {
  if (!job || !out)
    return SL_ERR_INVAL;
  memset(out, 0, sizeof(*out));
  struct sl__ckpt *ck = started_ckpt(job);
  if (ck)
    sl__ckpt_info(ck, out);
  return SL_OK;
}

int sl_job_set_clock(sl_job_t *job, sl_clock_t *clock) {
  if (!job || !clock)
    return SL_ERR_INVAL;
  if (atomic_load(&job->phase) != SL__JOB_NEW)
    return SL_ERR_STATE;
  job->clock = clock;
  return SL_OK;
}

void sl_job_stop(sl_job_t *job) {
  /* A drain asked for earlier stays a drain. */
  int none = SL__STOP_NONE;
  if (job)
    atomic_compare_exchange_strong(&job->stop, &none, SL__STOP_PLAIN);
}

void sl_job_stop_drain(sl_job_t *job) {
  if (job)
    atomic_store(&job->stop, SL__STOP_DRAIN);
}

const char *sl_job_errmsg(const sl_job_t *job) {
  return job ? job->errmsg : "";
}

static int job_vfail(sl_job_t *job, int err, bool fenced, const char *fmt,
                     va_list ap) {
  pthread_mutex_lock(&job->err_lock);
  if (!job->err) {
    job->err = err;
    job->fenced = fenced;
    vsnprintf(job->errmsg, sizeof(job->errmsg), fmt, ap);
  }
  err = job->err;
  pthread_mutex_unlock(&job->err_lock);
  atomic_store(&job->failed, 1);
  return err;
}

int sl__job_fail(sl_job_t *job, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  err = job_vfail(job, err, false, fmt, ap);
  va_end(ap);
  return err;
}

int sl__job_fail_fenced(sl_job_t *job, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  err = job_vfail(job, err, true, fmt, ap);
  va_end(ap);
  return err;
}

/* ---- Physical plan ------------------------------------------------------ */

static int outs_add(sl__outs *o, sl_ctx_t *to, int port) {
  sl__edge *e = realloc(o->e, (size_t)(o->n + 1) * sizeof(*e));
  if (!e)
    return SL_ERR_NOMEM;
  o->e = e;
  o->e[o->n].to = to;
  o->e[o->n].port = port;
  o->n++;
  return 0;
}

static int connect(sl_ctx_t *from, const char *tag, sl_ctx_t *to, int port) {
  if (!tag)
    return outs_add(&from->main, to, port);
  for (int s = 0; s < from->n_side; s++)
    if (strcmp(from->side[s].tag, tag) == 0)
      return outs_add(&from->side[s].outs, to, port);
  sl__side *side =
      realloc(from->side, (size_t)(from->n_side + 1) * sizeof(*side));
  if (!side)
    return SL_ERR_NOMEM;
  from->side = side;
  memset(&side[from->n_side], 0, sizeof(*side));
  side[from->n_side].tag = tag;
  from->n_side++;
  return outs_add(&side[from->n_side - 1].outs, to, port);
}

static sl_ctx_t *inst_new(sl__worker *w, sl__node *n,
                          const sl_operator_ops_t *ops, int n_ports,
                          size_t size) {
  sl_ctx_t *c = calloc(1, size);
  if (!c)
    return NULL;
  c->ops = ops;
  c->node = n;
  c->w = w;
  c->wm = SL_TS_MIN;
  atomic_init(&c->wm_pub, SL_TS_MIN);
  if (n_ports) {
    c->ports = calloc((size_t)n_ports, sizeof(*c->ports));
    if (!c->ports) {
      free(c);
      return NULL;
    }
    for (int i = 0; i < n_ports; i++)
      c->ports[i].wm = SL_TS_MIN;
    c->n_ports = n_ports;
  }
  return c;
}

/* A port whose upstream has no instance on this worker is born ended at
 * the maximum watermark, so it never holds the minimum back. */
static void port_absent(sl_ctx_t *c, int port) {
  c->ports[port].ended = true;
  c->ports[port].wm = SL_TS_MAX;
  c->n_ended++;
}

/* Creates worker w's instances and connects them as the graph's plan for
 * the worker says (graph/plan.h). */
static int plan_worker(sl_job_t *job, sl__worker *w) {
  sl__plan p;
  int rc = sl__plan_worker(&job->g, w->index, job->par, &p);
  if (rc)
    return rc;
  w->inst = calloc((size_t)p.n_slots, sizeof(*w->inst));
  if (!w->inst)
    rc = SL_ERR_NOMEM;
  for (int i = 0; !rc && i < p.n_inst; i++) {
    const sl__plan_inst *in = &p.inst[i];
    sl__node *n = in->node;
    const sl_operator_ops_t *ops = n->ops;
    size_t size = sizeof(struct sl_ctx);
    if (in->kind == SL__INST_SOURCE) {
      ops = &sl__source_ops;
      size = sizeof(struct sl_source_ctx);
    } else if (in->kind == SL__INST_KEYBY_PROD) {
      ops = &sl__keyby_prod_ops;
    } else if (in->kind == SL__INST_KEYBY_CONS) {
      ops = &sl__keyby_cons_ops;
    }
    sl_ctx_t *c = inst_new(w, n, ops, in->n_ports, size);
    if (!c) {
      rc = SL_ERR_NOMEM;
      break;
    }
    w->inst[in->slot] = c;
    if (in->kind == SL__INST_KEYBY_PROD)
      c->xchg = job->xchgs[n->xidx];
    for (int port = 0; !rc && port < in->n_ports; port++) {
      const sl__plan_port *pp = &in->ports[port];
      if (pp->from == SL__PORT_ABSENT)
        port_absent(c, port);
      else if (pp->from >= 0)
        rc = connect(w->inst[pp->from], pp->tag, c, port);
    }
  }
  sl__plan_free(&p);
  return rc;
}

static int plan(sl_job_t *job) {
  job->workers =
      aligned_alloc(SL__CACHELINE, (size_t)job->par * sizeof(*job->workers));
  if (job->workers)
    memset(job->workers, 0, (size_t)job->par * sizeof(*job->workers));
  job->xchgs = calloc((size_t)job->g.n_xchg + 1, sizeof(*job->xchgs));
  if (!job->workers || !job->xchgs)
    return SL_ERR_NOMEM;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl__node *n = job->g.nodes[i];
    if (n->kind == SL__NODE_KEYBY) {
      int rc = sl__xchg_create(job, n, &job->xchgs[n->xidx]);
      if (rc)
        return rc;
    }
  }
  for (int w = 0; w < job->par; w++) {
    job->workers[w].job = job;
    job->workers[w].index = w;
    int rc = plan_worker(job, &job->workers[w]);
    if (rc)
      return rc;
  }
  return 0;
}

/* An instance back to what inst_new() made of it, as if the job had not
 * run, keeping its wiring and its counters (they count over the job's
 * life, and the metrics read them meanwhile, as they read wm_pub and
 * pub: atomic stores). Its close has run: what open set is gone. */
static void inst_reset(sl_ctx_t *c, bool source) {
  c->data = NULL;
  c->n_ended = 0;
  c->opened = c->ended = c->idle_out = false;
  c->wm = SL_TS_MIN;
  atomic_store_explicit(&c->wm_pub, SL_TS_MIN, memory_order_relaxed);
  for (int i = 0; i < c->n_ports; i++)
    c->ports[i] = (sl__wmport){.wm = SL_TS_MIN};
  c->keyed = NULL;
  /* Freed by the close of a built-in keyed operator; one of the operator
   * SDK that never cleared its keyed context must not carry its tasks'
   * watermarks into the new run. */
  sl__taskwm_free(c->tw);
  c->tw = NULL;
  c->tw_checked = false;
  c->bcast = NULL;
  c->local = NULL;
  c->out_ts_at = NULL;
  c->out_ts = 0;
  c->keyed_outs = false;
  c->bar_done = 0;
  atomic_store_explicit(&c->pub.keyed, false, memory_order_relaxed);
  atomic_store_explicit(&c->pub.entries, 0, memory_order_relaxed);
  atomic_store_explicit(&c->pub.bytes, 0, memory_order_relaxed);
  atomic_store_explicit(&c->pub.timers_event, 0, memory_order_relaxed);
  atomic_store_explicit(&c->pub.timers_proc, 0, memory_order_relaxed);
  if (source) {
    /* Everything after the operator instance is the subtask's run. */
    size_t at = offsetof(struct sl_source_ctx, wmgen);
    memset((char *)c + at, 0, sizeof(struct sl_source_ctx) - at);
  }
}

/* A worker back to where a run starts: no checkpoint of the run that
 * ended is taken or passed on (the coordinator's newest triggered and
 * completed ids, trig and done, count as seen), queries are taken again. */
static void worker_reset(sl__worker *w, uint64_t trig, uint64_t done) {
  w->n_proc_time = 0;
  w->ckpt_id = 0;
  w->ckpt_done = w->ckpt_injected = trig;
  w->ckpt_notified = done;
  w->restore_dir = NULL;
  w->rc = 0;
  w->pub_rounds = 0;
  w->pub_next_ms = 0;
  w->reject_op = NULL;
  w->reject[0] = '\0';
  pthread_mutex_lock(&w->job->q_mu);
  w->q_closed = false;
  pthread_mutex_unlock(&w->job->q_mu);
}

int sl__plan_reset(sl_job_t *job) {
  uint64_t trig = sl__ckpt_triggered(job->ckpt);
  uint64_t done = sl__ckpt_completed(job->ckpt);
  for (int w = 0; w < job->par; w++) {
    sl__worker *wk = &job->workers[w];
    sl__plan p;
    int rc = sl__plan_worker(&job->g, w, job->par, &p);
    if (rc)
      return rc;
    for (int i = 0; i < p.n_inst; i++) {
      const sl__plan_inst *in = &p.inst[i];
      sl_ctx_t *c = wk->inst[in->slot];
      inst_reset(c, in->kind == SL__INST_SOURCE);
      for (int port = 0; port < in->n_ports; port++)
        if (in->ports[port].from == SL__PORT_ABSENT)
          port_absent(c, port);
    }
    sl__plan_free(&p);
    worker_reset(wk, trig, done);
  }
  for (int i = 0; i < job->g.n_xchg; i++)
    sl__xchg_reset(job->xchgs[i]);
  sl__tasks_reset(job->tasks);
  atomic_store(&job->n_opened, 0);
  pthread_mutex_lock(&job->mu);
  job->n_finished = job->n_unclean = 0;
  job->release = false;
  pthread_mutex_unlock(&job->mu);
  return 0;
}

int sl__job_prepare(sl_job_t *job) {
  int expect = SL__JOB_NEW;
  if (!atomic_compare_exchange_strong(&job->phase, &expect, SL__JOB_RUNNING)) {
    return sl__job_fail(job, SL_ERR_STATE,
                        "job \"%s\": sl_job_run() can be called only once",
                        job->name);
  }
  char why[512];
  /* Group mode with repartition topics: the graph is cut at each key_by
   * while it can still change (docs/scaling.md). */
  int rc = sl__graph_split(&job->g, job, why, sizeof(why));
  if (rc)
    return job->g.build_err ? rc : sl__job_fail(job, rc, "%s", why);
  sl__graph_seal(&job->g);
  /* A task per partition of each keyed stage, named by topic when the
   * stages read repartition topics. */
  if (job->tasks &&
      sl__tasks_stages(job->tasks, job->g.n_stages, job->g.split != NULL))
    return sl__job_fail(job, SL_ERR_NOMEM, "job \"%s\": out of memory",
                        job->name);
  rc = sl__graph_validate(&job->g, job->name, why, sizeof(why));
  if (rc)
    return job->g.build_err ? rc : sl__job_fail(job, rc, "%s", why);
  if ((rc = plan(job)))
    return sl__job_fail(job, rc, "job \"%s\": cannot build the plan: %s",
                        job->name, sl_strerror(rc));
  /* From here on other threads may read job->workers and the instances
   * (sl_job_op_stats, metrics); the release pairs with their acquire. */
  sl__stats_planned(job);
  return 0;
}

/* Starts the services in order; on a failure stops those started. */
static int start_services(sl_job_t *job) {
  for (int i = 0; i < job->n_svcs; i++) {
    const sl__service_ops *o = job->svcs[i].ops;
    char err[1024] = "";
    int rc = o->start ? o->start(job->svcs[i].svc, err, sizeof(err)) : 0;
    if (!rc)
      continue;
    for (int j = i - 1; j >= 0; j--)
      if (job->svcs[j].ops->stop)
        job->svcs[j].ops->stop(job->svcs[j].svc);
    return sl__job_fail(job, rc, "job \"%s\": %s", job->name,
                        err[0] ? err : sl_strerror(rc));
  }
  return 0;
}

/* The supervisor loop, on the thread of sl_job_run() (libuv's uv_run):
 * tick every service when it is due or something woke the loop, until
 * the job fails or every worker finished and no service is busy. */
static void supervise(sl_job_t *job, int started) {
  pthread_mutex_lock(&job->mu);
  for (;;) {
    sl__tick t = {.now = sl__mono_ms(),
                  .workers_done = job->n_finished >= started,
                  .workers_clean = job->n_unclean == 0 && started == job->par};
    job->woken = false;
    pthread_mutex_unlock(&job->mu);
    int64_t due = t.now + 100; /* stop and failure are seen without a wake */
    bool busy = false, failing = sl__job_failing(job) || started < job->par;
    for (int i = 0; i < job->n_svcs && !failing; i++) {
      const sl__service_ops *o = job->svcs[i].ops;
      if (!o->tick)
        continue;
      char err[1024] = "";
      int rc = o->tick(job->svcs[i].svc, &t, &due, err, sizeof(err));
      if (rc < 0) {
        sl__job_fail(job, rc, "%s: %s", o->name,
                     err[0] ? err : sl_strerror(rc));
        failing = true;
      }
      busy |= rc == SL__SVC_BUSY;
    }
    pthread_mutex_lock(&job->mu);
    /* Workers parked after their loop take what the ticks triggered. */
    pthread_cond_broadcast(&job->cv);
    if (failing || (t.workers_done && !busy))
      break;
    if (job->woken)
      continue;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t wait = due - sl__mono_ms();
    if (wait <= 0)
      continue;
    ts.tv_sec += wait / 1000;
    ts.tv_nsec += (wait % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&job->cv, &job->mu, &ts);
  }
  /* Workers parked after their loop may close now. */
  job->release = true;
  pthread_cond_broadcast(&job->cv);
  pthread_mutex_unlock(&job->mu);
}

void sl__worker_finished(sl__worker *w, bool clean) {
  sl_job_t *job = w->job;
  pthread_mutex_lock(&job->mu);
  job->n_finished++;
  job->n_unclean += !clean;
  job->woken = true;
  pthread_cond_broadcast(&job->cv);
  pthread_mutex_unlock(&job->mu);
}

int sl_job_run(sl_job_t *job) {
  if (!job)
    return SL_ERR_INVAL;
  int rc = sl__job_prepare(job);
  if (!rc)
    rc = start_services(job);
  atomic_store_explicit(&job->svcs_started, !rc, memory_order_release);
  if (rc) {
    atomic_store(&job->phase, SL__JOB_DONE);
    return rc;
  }
  sl_checkpoint_info_t ci;
  sl_job_checkpoint_info(job, &ci);
  if (ci.restored_from)
    sl__log(job->conf, job->name, SL__LOG_INFO, "job",
            "starting from checkpoint %" PRIu64 ", parallelism %d",
            ci.restored_from, job->par);
  else
    sl__log(job->conf, job->name, SL__LOG_INFO, "job",
            "starting fresh (no checkpoint restored), parallelism %d",
            job->par);
  /* A fenced run starts over (revive.c) until one ends otherwise. */
  do {
    int started = 0;
    for (; started < job->par; started++) {
      sl__worker *w = &job->workers[started];
      if (pthread_create(&w->thread, NULL, sl__worker_main, w)) {
        sl__job_fail(job, SL_ERR_NOMEM, "job \"%s\": cannot start worker %d",
                     job->name, started);
        break;
      }
    }
    supervise(job, started);
    for (int i = 0; i < started; i++)
      pthread_join(job->workers[i].thread, NULL);
    for (int i = started; i < job->par; i++)
      sl__query_close(&job->workers[i]);
  } while (sl__job_revive(job));
  for (int i = job->n_svcs - 1; i >= 0; i--)
    if (job->svcs[i].ops->stop)
      job->svcs[i].ops->stop(job->svcs[i].svc);
  atomic_store(&job->phase, SL__JOB_DONE);
  if (job->err) {
    pthread_mutex_lock(&job->err_lock);
    sl__log(job->conf, job->name, SL__LOG_ERROR, "job", "failed: %s",
            job->errmsg);
    pthread_mutex_unlock(&job->err_lock);
  } else {
    sl__log(job->conf, job->name, SL__LOG_INFO, "job", "%s",
            atomic_load(&job->stop) ? "stopped (sl_job_stop)"
                                    : "finished: every input ended");
  }
  return job->err;
}

int sl_job_op_stats(sl_job_t *job, const char *uid, sl_op_stats_t *out) {
  if (!job || !uid || !out)
    return SL_ERR_INVAL;
  for (int i = 0; i < job->g.n_nodes; i++) {
    sl__node *n = job->g.nodes[i];
    if (!n->uid || strcmp(n->uid, uid) != 0)
      continue;
    memset(out, 0, sizeof(*out));
    out->watermark = SL_TS_MAX;
    bool any = false;
    /* plan() writes job->workers while the job starts; before the
     * planned flag is published there is nothing to count (zeros). */
    bool ready = sl__stats_is_planned(job);
    for (int w = 0; ready && w < job->par; w++) {
      sl_ctx_t *c = job->workers[w].inst ? job->workers[w].inst[i] : NULL;
      if (!c)
        continue;
      any = true;
      out->records_in += sl__counter_get(&c->in);
      out->records_out += sl__counter_get(&c->out);
      out->errors += sl__counter_get(&c->errors);
      out->late_dropped += sl__counter_get(&c->late);
      int64_t wm = atomic_load_explicit(&c->wm_pub, memory_order_relaxed);
      if (wm < out->watermark)
        out->watermark = wm;
    }
    if (!any)
      out->watermark = SL_TS_MIN;
    return SL_OK;
  }
  return SL_ERR_NOTFOUND;
}
