/* SPDX-License-Identifier: Apache-2.0 */
/* Private to lib/metrics: a job's metrics state (struct sl__jmetrics), shared
 * by the built-in families (builtin.c), the lifecycle, health and endpoint
 * (job_metrics.c) and what is pulled from other modules (report.c). */
#ifndef SL_METRICS_METRICS_INT_H
#define SL_METRICS_METRICS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/clock.h"
#include "metrics/http.h"
#include "metrics/metrics.h"

/* Which field an operator or channel family reports. */
typedef enum sl__opf {
  SL__OPF_IN,
  SL__OPF_OUT,
  SL__OPF_ERRORS,
  SL__OPF_LATE,
  SL__OPF_WM,
  SL__OPF_LAG,
  SL__OPF_ENTRIES,
  SL__OPF_BYTES,
  SL__OPF_TIMERS,
  SL__OPF_CH_QUEUED,
  SL__OPF_CH_CAP,
  SL__OPF_CH_FULL,
  SL__OPF_COUNT
} sl__opf;

typedef struct sl__jmetrics sl__jmetrics;
typedef struct sl__opf_arg {
  sl__jmetrics *jm;
  sl__opf field;
} sl__opf_arg;

struct sl__jmetrics {
  sl_job_t *job;
  sl__metrics *reg;
  sl__opf_arg args[SL__OPF_COUNT];
  /* Settings. */
  sl__listen_addr addr;
  bool listen;
  char *query_token; /* query.http.token; NULL: none */
  int64_t log_interval_ms;
  int64_t ckpt_max_age_ms;
  /* Endpoint. */
  sl__http *http;
  _Atomic int port; /* 0 = not listening */
  /* Log line. */
  sl_metrics_log_fn log_fn;
  void *log_opaque;
  int64_t log_next; /* monotonic ms of the next line */
  /* Run. */
  _Atomic int started, ended;
  _Atomic int64_t start_unix_ms, start_mono_ms, start_job_ms, end_mono_ms;
  /* Checkpoints. */
  pthread_mutex_t ck_lock; /* guards enabling, the series and seen counts */
  bool ckpt_enabled;
  uint64_t ck_seen_done, ck_seen_failed, ck_seen_restarts;
  _Atomic int64_t ckpt_done_ms; /* job clock; INT64_MIN = none yet */
  sl__mfamily *f_ck[7], *f_ck_hist;
  sl__mseries *ck_done, *ck_failed, *ck_dur, *ck_size, *ck_ts, *ck_age, *ck_id,
      *ck_hist;
  sl__mseries *restarts;
  /* User metrics: how many of the runtime's user families are
   * registered here (under ck_lock). */
  size_t n_user;
};

/* Brings the checkpoint families up to the coordinator's figures and
 * registers the user families operators added (report.c): before every
 * scrape and on every tick. */
void sl__jm_sync(sl__jmetrics *jm);
/* Collector of a family whose figures another module keeps: asks the
 * runtime's reporters for it (report.c); opaque is the sl__jmetrics. */
void sl__jm_collect_reported(sl__mcollect *c, void *opaque);
/* sl_job_health without that update (for the ready gauge, during a
 * scrape, which updated them first). */
sl_health sl__jm_health(sl_job_t *job, char *reason, size_t len);

/* GET /state/<uid>/<state>: a state query answered as JSON
 * (state_http.c). */
void sl__jm_state_http(sl__jmetrics *jm, const sl__http_req *req,
                       sl__http_reply *r);

/* Registers every built-in family in jm->reg (builtin.c). */
int sl__jm_register_builtins(sl__jmetrics *jm, char *err, size_t errlen);

/* Scrape-time value of sluice_checkpoint_last_completed_age_seconds
 * (report.c). */
double sl__jm_ckpt_age(void *jm);

#endif
