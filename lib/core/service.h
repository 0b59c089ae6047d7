/* SPDX-License-Identifier: Apache-2.0 */
/* Services: what runs beside the workers for the whole life of a job —
 * the checkpoint coordinator, the metrics endpoint and log line, and
 * anything later (group membership). The runtime owns the job's life and
 * knows them only through this table, in the shape of libuv's handles:
 * started before the workers, ticked by the supervisor loop of
 * sl_job_run() whenever one is due or something woke it, stopped after
 * the workers joined, destroyed with the job. A service never fails the
 * job itself: it returns an error with a message and the runtime fails
 * the job. The table lives in core so that layers below the runtime (the
 * checkpoint coordinator) and above it (metrics) can both be services;
 * the runtime's side is sl__job_add_service() (runtime/runtime.h). */
#ifndef SL_CORE_SERVICE_H
#define SL_CORE_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the supervisor knows when it ticks a service. */
typedef struct sl__tick {
  int64_t now;        /* monotonic ms */
  bool workers_done;  /* every started worker finished its loop */
  bool workers_clean; /* ... and every one finished cleanly (input ended or
                         sl_job_stop), so a final checkpoint can be taken */
} sl__tick;

/* Return values of tick besides errors (negative). */
enum {
  SL__SVC_IDLE = 0, /* nothing keeps the job from ending */
  SL__SVC_BUSY = 1, /* the job must not end yet (e.g. a final checkpoint) */
};

typedef struct sl__service_ops {
  const char *name;
  /* sl_job_run(), after the plan is built, before the workers start, in
   * registration order. Optional. */
  int (*start)(void *svc, char *err, size_t errlen);
  /* On the supervisor thread: does what is due at t->now and lowers
   * *next_due (monotonic ms) to when it wants the next tick; it is also
   * ticked when woken (sl__job_wake) and at least every 100 ms. Returns
   * SL__SVC_IDLE, SL__SVC_BUSY or a negative error. Optional. */
  int (*tick)(void *svc, const sl__tick *t, int64_t *next_due, char *err,
              size_t errlen);
  /* After the workers joined (also when the job failed), in reverse
   * order. Optional. */
  void (*stop)(void *svc);
  /* Group mode: the job's execution starts over in this process (a
   * fenced process revives its tasks, docs/scaling.md): after the
   * workers of the run that ended joined, before the next run's workers
   * start, in registration order, instead of stop and start. A service
   * drops what it keeps of the run that ended (a checkpoint in progress,
   * the tasks its members held) and goes on. SL_OK, or an error with
   * the reason in err: the job then fails with it. Optional. */
  int (*restart)(void *svc, char *err, size_t errlen);
  /* sl_job_destroy(), first, in reverse order. Optional. */
  void (*destroy)(void *svc);
} sl__service_ops;

#endif
