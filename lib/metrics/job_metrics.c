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

#include "core/clock.h"
#include "core/conf.h"
#include "core/util.h"
#include "sluice.h"
#include "metrics/jmetrics.h"
#include "runtime/runtime.h"
#include "runtime/stats.h"

sl__metrics *sl__metrics_of(sl_job_t *job) {
  return job && job->metrics ? job->metrics->reg : NULL;
}

/* ---- Lifecycle ----------------------------------------------------------- */

static void jm_free(sl__jmetrics *jm) {
  if (!jm)
    return;
  sl__metrics_free(jm->reg);
  pthread_mutex_destroy(&jm->log_lock);
  pthread_mutex_destroy(&jm->ck_lock);
  pthread_cond_destroy(&jm->log_cond);
  free(jm);
}

int sl__metrics_job_new(sl_job_t *job, char *err, size_t errlen) {
  sl__jmetrics *jm = calloc(1, sizeof(*jm));
  if (!jm) {
    sl__errf(err, errlen, "out of memory");
    return SL_ERR_NOMEM;
  }
  jm->job = job;
  pthread_mutex_init(&jm->log_lock, NULL);
  pthread_mutex_init(&jm->ck_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&jm->log_cond, &ca);
  pthread_condattr_destroy(&ca);
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
  jm->log_interval_ms = sl__conf_int(job->conf, "metrics.log.interval.ms");
  jm->ckpt_max_age_ms = sl__conf_int(job->conf, "health.checkpoint.max.age.ms");
  if (!(jm->reg = sl__metrics_new()) ||
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

static void *log_main(void *arg) {
  sl__jmetrics *jm = arg;
  pthread_mutex_lock(&jm->log_lock);
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  while (!jm->log_stop) {
    int64_t ns = next.tv_nsec + (jm->log_interval_ms % 1000) * 1000000;
    next.tv_sec += jm->log_interval_ms / 1000 + ns / 1000000000;
    next.tv_nsec = ns % 1000000000;
    while (!jm->log_stop &&
           pthread_cond_timedwait(&jm->log_cond, &jm->log_lock, &next) == 0) {
    }
    /* Render without the lock, so stopping never waits for a slow sink. */
    pthread_mutex_unlock(&jm->log_lock);
    emit_log_line(jm);
    pthread_mutex_lock(&jm->log_lock);
  }
  pthread_mutex_unlock(&jm->log_lock);
  return NULL;
}

static void http_handler(const char *path, sl__http_reply *r, void *opaque);

int sl__metrics_job_start(sl_job_t *job) {
  sl__jmetrics *jm = job->metrics;
  sl__stats_planned(job);
  atomic_store(&jm->start_unix_ms, sl__wall_ms());
  atomic_store(&jm->start_mono_ms, sl__mono_ms());
  atomic_store(&jm->start_job_ms, sl_clock_now(job->clock));
  atomic_store(&jm->started, 1);
  if (jm->listen) {
    char err[512];
    int rc = sl__http_start(&jm->addr, http_handler, jm, &jm->http, err,
                            sizeof(err));
    if (rc)
      return sl__job_fail(job, rc, "job \"%s\": %s", job->name, err);
    atomic_store(&jm->port, sl__http_port(jm->http));
  }
  if (jm->log_interval_ms > 0) {
    if (pthread_create(&jm->log_thread, NULL, log_main, jm))
      return sl__job_fail(job, SL_ERR_NOMEM,
                          "job \"%s\": cannot start the metrics log thread",
                          job->name);
    jm->log_running = true;
  }
  return SL_OK;
}

void sl__metrics_job_end(sl_job_t *job) {
  sl__jmetrics *jm = job->metrics;
  if (!atomic_load(&jm->started))
    return;
  atomic_store(&jm->end_mono_ms, sl__mono_ms());
  atomic_store(&jm->ended, 1);
  if (jm->log_running) {
    pthread_mutex_lock(&jm->log_lock);
    jm->log_stop = true;
    pthread_cond_signal(&jm->log_cond);
    pthread_mutex_unlock(&jm->log_lock);
    pthread_join(jm->log_thread, NULL);
    jm->log_running = false;
  }
}

void sl__metrics_job_destroy(sl_job_t *job) {
  sl__jmetrics *jm = job->metrics;
  if (!jm)
    return;
  sl__metrics_job_end(job);
  atomic_store(&jm->port, 0);
  sl__http_stop(jm->http);
  jm->http = NULL;
  job->metrics = NULL;
  jm_free(jm);
}

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
  }
  return "unknown";
}

sl_health sl_job_health(sl_job_t *job, char *reason, size_t len) {
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
  snprintf(reason, len, "running on %d workers", st.parallelism);
  return SL_HEALTH_READY;
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

static void http_handler(const char *path, sl__http_reply *r, void *opaque) {
  sl__jmetrics *jm = opaque;
  if (strcmp(path, "/metrics") == 0) {
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
    r->status = h == SL_HEALTH_READY ? 200 : 503;
    r->content_type = "application/json";
    return;
  }
  if (strcmp(path, "/") == 0) {
    r->body =
        sl__strdup("sluice job metrics: /metrics (Prometheus), /healthz\n");
    return;
  }
  r->status = 404;
  r->body = sl__strdup("not found: try /metrics or /healthz\n");
}

/* ---- Public reading API -------------------------------------------------- */

int sl_job_metrics_foreach(sl_job_t *job, sl_metric_fn fn, void *opaque) {
  if (!job || !fn || !job->metrics)
    return SL_ERR_INVAL;
  return sl__metrics_visit(job->metrics->reg, fn, opaque);
}

int sl_job_metric_value(sl_job_t *job, const char *name, const char *labels,
                        double *value) {
  if (!job || !job->metrics)
    return SL_ERR_INVAL;
  return sl__metrics_value(job->metrics->reg, name, labels, value);
}

int sl_job_metrics_format(sl_job_t *job, sl_metrics_format fmt, char **out,
                          size_t *len) {
  if (!job || !job->metrics || !out)
    return SL_ERR_INVAL;
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
