/* SPDX-License-Identifier: Apache-2.0 */
/* A job assembled: the runtime's part of a job (sl__job_create) and the
 * services it runs beside its workers — the checkpoint coordinator and
 * the metrics. This is the one place that names them all; the runtime
 * knows them only through the service table (core/service.h). */
#include <stdio.h>

#include "checkpoint/coord.h"
#include "core/util.h"
#include "metrics/metrics.h"
#include "runtime/runtime.h"

/* Registers a service with the job, or destroys it (and returns
 * SL_ERR_NOMEM) when it could not be made or registered: either way the
 * caller no longer owns svc. */
static int adopt(sl_job_t *job, const sl__service_ops *ops, void *svc) {
  if (svc && !sl__job_add_service(job, ops, svc))
    return SL_OK;
  if (svc)
    ops->destroy(svc);
  return SL_ERR_NOMEM;
}

sl_job_t *sl_job_new(const char *name, sl_conf_t *conf, char *err,
                     size_t errlen) {
  sl_job_t *job = sl__job_create(name, conf, err, errlen);
  if (!job)
    return NULL;
  sl__ckpt_env env = {.name = job->name,
                      .conf = job->conf,
                      .clock = &job->clock,
                      .par = job->par,
                      .max_par = job->max_par,
                      .graph = &job->g};
  job->ckpt = sl__ckpt_new(&env);
  int rc = adopt(job, &sl__ckpt_service, job->ckpt);
  if (!rc && !(rc = sl__metrics_job_new(job, err, errlen)))
    rc = adopt(job, &sl__metrics_service, job->metrics);
  if (rc == SL_ERR_NOMEM)
    sl__errf(err, errlen, "out of memory");
  if (rc) {
    job->ckpt = NULL; /* destroyed with the services, or never made */
    if (conf)
      job->conf = NULL; /* the caller keeps its conf on failure */
    sl_job_destroy(job);
    return NULL;
  }
  return job;
}
