/* SPDX-License-Identifier: Apache-2.0 */
/* A job's metrics through its life: settings, the endpoint's start and
 * stop, the periodic JSON log line, /healthz and the public functions that
 * read metrics in-process. The families themselves are in builtin.c; what
 * other modules report, in report.c. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/conf.h"
#include "core/util.h"
#include "sluice.h"
#include "metrics/metrics_int.h"
#include "runtime/group.h"
#include "runtime/runtime.h"
#include "runtime/stats.h"
#include "core/service.h"

sl__metrics *sl__metrics_of(sl_job_t *job) {
  return job && job->metrics ? job->metrics->reg : NULL;
}

/* ---- Lifecycle ----------------------------------------------------------- */

static void jm_free(sl__jmetrics *jm) {
  if (!jm)
    return;
  sl__metrics_free(jm->reg);
  free(jm->query_token);
  pthread_mutex_destroy(&jm->ck_lock);
  free(jm);
}

int sl__metrics_job_new(sl_job_t *job, char *err, size_t errlen) {
  sl__jmetrics *jm = calloc(1, sizeof(*jm));
  if (!jm) {
    sl__errf(err, errlen, "out of memory");
    return SL_ERR_NOMEM;
  }
  jm->job = job;
  pthread_mutex_init(&jm->ck_lock, NULL);
  atomic_init(&jm->ckpt_done_ms, INT64_MIN);
  int rc = sl__http_parse_listen(
      sl__conf_str(job->conf, "metrics.listen"),
      sl__conf_bool(job->conf, "metrics.listen.allow.remote"), &jm->addr, err,
      errlen);
  if (rc < 0) {
    jm_free(jm);
    return rc;
  }
  jm->listen = rc == 1;
  const char *tok = sl__conf_str(job->conf, "query.http.token");
  if (tok && *tok && !(jm->query_token = sl__strdup(tok))) {
    jm_free(jm);
    sl__errf(err, errlen, "out of memory");
    return SL_ERR_NOMEM;
  }
  jm->log_interval_ms = sl__conf_int(job->conf, "metrics.log.interval.ms");
  jm->ckpt_max_age_ms = sl__conf_int(job->conf, "health.checkpoint.max.age.ms");
  /* Every series names its process where processes share a job (group
   * mode), or where the user named the process; a job of one process
   * keeps its series as they were, without a label that changes with
   * every restart (the default id has the pid). */
  bool instance = job->kg_murmur2 || *sl__conf_str(job->conf, "instance.id");
  if (!(jm->reg = sl__metrics_new()) ||
      (instance &&
       sl__metrics_const_label(jm->reg, "instance", sl__job_instance(job))) ||
      (rc = sl__jm_register_builtins(jm, err, errlen))) {
    jm_free(jm);
    sl__errf(err, errlen, "out of memory");
    return SL_ERR_NOMEM;
  }
  job->metrics = jm;
  return SL_OK;
}

static void emit_log_line(sl__jmetrics *jm) {
  char *line = NULL;
  if (sl__metrics_render(jm->reg, SL_METRICS_JSON, jm->job->name,
                         sl_clock_now(jm->job->clock), &line, NULL))
    return;
  if (jm->log_fn)
    jm->log_fn(line, jm->log_opaque);
  else
    fprintf(stderr, "%s\n", line);
  free(line);
}

/* ---- The metrics service (core/service.h) -------------------------------- */

static void http_handler(const sl__http_req *req, sl__http_reply *r,
                         void *opaque);

/* The query endpoint other processes of a group are told to use, unless
 * query.advertised.endpoint says otherwise: this address with the port
 * really bound, and this host's name for a wildcard address. */
static void advertise(sl__jmetrics *jm) {
  const char *t = jm->addr.text;
  size_t n = t[0] == '[' ? strcspn(t, "]") + 1 : strcspn(t, ":");
  char host[256], ep[320];
  snprintf(host, sizeof(host), "%.*s", (int)n, t);
  if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0) {
    if (gethostname(host, sizeof(host)) != 0)
      snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
  }
  snprintf(ep, sizeof(ep), "http://%s:%d", host, sl__http_port(jm->http));
  sl__job_set_endpoint(jm->job, ep);
}

static int jm_start(void *svc, char *err, size_t errlen) {
  sl__jmetrics *jm = svc;
  sl_job_t *job = jm->job;
  atomic_store(&jm->start_unix_ms, sl__wall_ms());
  atomic_store(&jm->start_mono_ms, sl__mono_ms());
  atomic_store(&jm->start_job_ms, sl_clock_now(job->clock));
  atomic_store(&jm->started, 1);
  jm->log_next = sl__mono_ms() + jm->log_interval_ms;
  if (jm->listen) {
    int rc =
        sl__http_start(&jm->addr, http_handler, jm, &jm->http, err, errlen);
    if (rc)
      return rc;
    atomic_store(&jm->port, sl__http_port(jm->http));
    advertise(jm);
  }
  return SL_OK;
}

/* The JSON log line every metrics.log.interval.ms, on the supervisor's
 * thread: no thread of its own. */
static int jm_tick(void *svc, const sl__tick *t, int64_t *next_due, char *err,
                   size_t errlen) {
  (void)err, (void)errlen;
  sl__jmetrics *jm = svc;
  sl__jm_sync(jm);
  if (jm->log_interval_ms <= 0)
    return SL__SVC_IDLE;
  if (t->now >= jm->log_next) {
    emit_log_line(jm);
    while (jm->log_next <= t->now)
      jm->log_next += jm->log_interval_ms;
  }
  if (jm->log_next < *next_due)
    *next_due = jm->log_next;
  return SL__SVC_IDLE;
}

/* After the workers joined: the run's end, and a last log line. The HTTP
 * endpoint keeps serving until the job is destroyed. */
static void jm_stop(void *svc) {
  sl__jmetrics *jm = svc;
  if (!atomic_load(&jm->started))
    return;
  atomic_store(&jm->end_mono_ms, sl__mono_ms());
  atomic_store(&jm->ended, 1);
  sl__jm_sync(jm);
  if (jm->log_interval_ms > 0)
    emit_log_line(jm);
}

static void jm_destroy(void *svc) {
  sl__jmetrics *jm = svc;
  if (!jm)
    return;
  atomic_store(&jm->port, 0);
  sl__http_stop(jm->http);
  jm->http = NULL;
  jm->job->metrics = NULL;
  jm_free(jm);
}

const sl__service_ops sl__metrics_service = {.name = "metrics",
                                             .start = jm_start,
                                             .tick = jm_tick,
                                             .stop = jm_stop,
                                             .destroy = jm_destroy};

/* ---- Health -------------------------------------------------------------- */

const char *sl_health_name(sl_health h) {
  switch (h) {
  case SL_HEALTH_STARTING:
    return "starting";
  case SL_HEALTH_READY:
    return "ready";
  case SL_HEALTH_UNHEALTHY:
    return "unhealthy";
  case SL_HEALTH_FINISHED:
    return "finished";
  case SL_HEALTH_REBALANCING:
    return "rebalancing";
  }
  return "unknown";
}

/* sl_job_health without bringing the checkpoint figures up to date: for
 * the ready gauge, read during a scrape that already did (with the
 * registry locked, which the update takes too). */
sl_health sl__jm_health(sl_job_t *job, char *reason, size_t len) {
  char dummy[1];
  if (!reason || !len) {
    reason = dummy;
    len = sizeof(dummy);
  }
  sl__jmetrics *jm = job ? job->metrics : NULL;
  if (!jm) {
    snprintf(reason, len, "not started: sl_job_run() has not been called");
    return SL_HEALTH_STARTING;
  }
  char msg[1024];
  sl__job_stat st;
  sl__stats_job(job, &st, msg, sizeof(msg));
  /* Before the start too: sl_job_run() may fail before it starts. */
  if (st.failed) {
    snprintf(reason, len, "failed: %s", msg);
    return SL_HEALTH_UNHEALTHY;
  }
  if (!atomic_load(&jm->started)) {
    snprintf(reason, len, "not started: sl_job_run() has not been called");
    return SL_HEALTH_STARTING;
  }
  if (atomic_load(&jm->ended)) {
    snprintf(reason, len, "finished: sl_job_run() returned");
    return SL_HEALTH_FINISHED;
  }
  if (st.opened < st.parallelism) {
    snprintf(reason, len,
             "starting: %d of %d workers have opened their operators "
             "(restored state) and run",
             st.opened, st.parallelism);
    return SL_HEALTH_STARTING;
  }
  if (jm->ckpt_max_age_ms > 0) {
    int64_t done = atomic_load(&jm->ckpt_done_ms);
    int64_t ref = done == INT64_MIN ? atomic_load(&jm->start_job_ms) : done;
    int64_t age = st.now_ms - ref;
    if (age > jm->ckpt_max_age_ms) {
      if (done == INT64_MIN)
        snprintf(reason, len,
                 "no checkpoint completed in the %" PRId64
                 " ms since the job started (health.checkpoint.max.age.ms = "
                 "%" PRId64 ")",
                 age, jm->ckpt_max_age_ms);
      else
        snprintf(reason, len,
                 "the last completed checkpoint is %" PRId64
                 " ms old (health.checkpoint.max.age.ms = %" PRId64 ")",
                 age, jm->ckpt_max_age_ms);
      return SL_HEALTH_UNHEALTHY;
    }
  }
  sl__group_stat g;
  sl__group_stats(job, &g);
  if (g.rebalancing > 0) {
    snprintf(reason, len,
             "rebalancing: %d group member(s) of this process wait for "
             "their assignment; it owns %d task(s) meanwhile",
             g.rebalancing, g.tasks);
    return SL_HEALTH_REBALANCING;
  }
  snprintf(reason, len, "running on %d workers", st.parallelism);
  return SL_HEALTH_READY;
}

sl_health sl_job_health(sl_job_t *job, char *reason, size_t len) {
  if (job && job->metrics)
    sl__jm_sync(job->metrics);
  return sl__jm_health(job, reason, len);
}

/* ---- HTTP ---------------------------------------------------------------- */

static char *health_json(sl__jmetrics *jm, sl_health *h) {
  char reason[1200];
  *h = sl_job_health(jm->job, reason, sizeof(reason));
  json_t *o =
      json_pack("{s:s,s:s}", "status", sl_health_name(*h), "reason", reason);
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(o);
  if (!s)
    return NULL;
  size_t n = strlen(s);
  char *nl = realloc(s, n + 2);
  if (!nl)
    return s;
  nl[n] = '\n';
  nl[n + 1] = '\0';
  return nl;
}

static void http_handler(const sl__http_req *req, sl__http_reply *r,
                         void *opaque) {
  sl__jmetrics *jm = opaque;
  const char *path = req->path;
  if (strncmp(path, "/state/", 7) == 0) {
    sl__jm_state_http(jm, req, r);
    return;
  }
  if (strcmp(path, "/metrics") == 0) {
    sl__jm_sync(jm);
    if (sl__metrics_render(jm->reg, SL_METRICS_PROMETHEUS, jm->job->name, 0,
                           &r->body, &r->len)) {
      r->status = 500;
      r->body = sl__strdup("cannot render metrics: out of memory\n");
      r->len = 0;
      return;
    }
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    return;
  }
  if (strcmp(path, "/healthz") == 0) {
    sl_health h;
    r->body = health_json(jm, &h);
    /* Rebalancing is alive and serves its other tasks: not a reason to
     * restart the process (which would move its tasks once more). */
    r->status = h == SL_HEALTH_READY || h == SL_HEALTH_REBALANCING ? 200 : 503;
    r->content_type = "application/json";
    return;
  }
  if (strcmp(path, "/") == 0) {
    r->body = sl__strdup("sluice job metrics: /metrics (Prometheus), /healthz, "
                         "/state/<uid>/<state>?key=...\n");
    return;
  }
  r->status = 404;
  r->body = sl__strdup("not found: try /metrics or /healthz\n");
}

/* ---- Public reading API -------------------------------------------------- */

int sl_job_metrics_foreach(sl_job_t *job, sl_metric_fn fn, void *opaque) {
  if (!job || !fn || !job->metrics)
    return SL_ERR_INVAL;
  sl__jm_sync(job->metrics);
  return sl__metrics_visit(job->metrics->reg, fn, opaque);
}

int sl_job_metric_value(sl_job_t *job, const char *name, const char *labels,
                        double *value) {
  if (!job || !job->metrics)
    return SL_ERR_INVAL;
  sl__jm_sync(job->metrics);
  return sl__metrics_value(job->metrics->reg, name, labels, value);
}

int sl_job_metrics_format(sl_job_t *job, sl_metrics_format fmt, char **out,
                          size_t *len) {
  if (!job || !job->metrics || !out)
    return SL_ERR_INVAL;
  sl__jm_sync(job->metrics);
  return sl__metrics_render(job->metrics->reg, fmt, job->name,
                            sl_clock_now(job->clock), out, len);
}

int sl_job_metrics_port(const sl_job_t *job) {
  if (!job || !job->metrics)
    return SL_ERR_STATE;
  int port = atomic_load(&job->metrics->port);
  return port ? port : SL_ERR_STATE;
}

int sl_job_set_metrics_log(sl_job_t *job, sl_metrics_log_fn fn, void *opaque) {
  if (!job || !job->metrics)
    return SL_ERR_INVAL;
  if (atomic_load(&job->phase) != SL__JOB_NEW)
    return SL_ERR_STATE;
  job->metrics->log_fn = fn;
  job->metrics->log_opaque = opaque;
  return SL_OK;
}
