/* SPDX-License-Identifier: Apache-2.0 */
/* What a job's metrics pull from other modules: the checkpoint
 * coordinator's figures (completions, failures, restarts), what modules
 * beside metrics keep and report through the runtime (the Kafka source,
 * sink and dead-letter queue), and the user metrics of operators. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/util.h"
#include "metrics/metrics_int.h"
#include "checkpoint/coord.h"
#include "runtime/runtime.h"
#include "runtime/stats.h"

/* Without a completed checkpoint, the age counts from the job's start, so
 * a job that never completes one looks stale too. */
double sl__jm_ckpt_age(void *opaque) {
  sl__jmetrics *jm = opaque;
  int64_t ref = atomic_load(&jm->ckpt_done_ms);
  if (ref == INT64_MIN) {
    if (!atomic_load(&jm->started))
      return NAN;
    ref = atomic_load(&jm->start_job_ms);
  }
  return (double)(sl_clock_now(jm->job->clock) - ref) / 1000.0;
}

/* ---- Checkpoint coordinator ---------------------------------------------- *
 * Pulled: the coordinator keeps its figures (sl__ckpt_stats_get) and the
 * metrics layer reads them before every scrape and on every tick, so the
 * coordinator never calls up into metrics. */

static void ckpt_enable(sl__jmetrics *jm) {
  jm->ckpt_enabled = true;
  sl__mseries **s[7] = {&jm->ck_done, &jm->ck_failed, &jm->ck_dur, &jm->ck_size,
                        &jm->ck_ts,   &jm->ck_age,    &jm->ck_id};
  for (int i = 0; i < 7; i++)
    *s[i] = sl__mfamily_series(jm->f_ck[i], NULL);
  jm->ck_hist = sl__mfamily_series(jm->f_ck_hist, NULL);
  sl__mseries_set_fn(jm->ck_age, sl__jm_ckpt_age, jm);
  /* Before the first completion, "last" has no value yet. */
  sl__mseries_set(jm->ck_dur, NAN);
  sl__mseries_set(jm->ck_size, NAN);
  sl__mseries_set(jm->ck_ts, NAN);
  sl__mseries_set(jm->ck_id, NAN);
}

static void sync_checkpoints(sl__jmetrics *jm) {
  struct sl__ckpt *ck = jm->job->ckpt;
  if (!ck)
    return;
  sl__ckpt_stats st;
  sl__ckpt_stats_get(ck, &st);
  /* Locked: scrapes and ticks run on different threads. */
  pthread_mutex_lock(&jm->ck_lock);
  if (st.restarts > jm->ck_seen_restarts) {
    sl__mseries_inc(jm->restarts, st.restarts - jm->ck_seen_restarts);
    jm->ck_seen_restarts = st.restarts;
  }
  if (st.enabled && !jm->ckpt_enabled)
    ckpt_enable(jm);
  if (jm->ckpt_enabled) {
    if (st.failed > jm->ck_seen_failed)
      sl__mseries_inc(jm->ck_failed, (double)(st.failed - jm->ck_seen_failed));
    jm->ck_seen_failed = st.failed;
    /* Each completion once in the histogram; the ring holds the newest. */
    for (uint64_t n = jm->ck_seen_done; n < st.completed; n++) {
      if (st.completed - n <= SL__CKPT_DURATIONS)
        sl__mseries_observe(
            jm->ck_hist, (double)st.durations[n % SL__CKPT_DURATIONS] / 1000.0);
      sl__mseries_inc(jm->ck_done, 1);
    }
    if (st.completed > jm->ck_seen_done) {
      jm->ck_seen_done = st.completed;
      sl__mseries_set(jm->ck_dur, (double)st.last_duration_ms / 1000.0);
      sl__mseries_set(jm->ck_size, (double)st.last_bytes);
      sl__mseries_set(jm->ck_ts, (double)st.last_done_job_ms / 1000.0);
      sl__mseries_set(jm->ck_id, (double)st.last_id);
      atomic_store(&jm->ckpt_done_ms, st.last_done_job_ms);
    }
  }
  pthread_mutex_unlock(&jm->ck_lock);
}

/* ---- Figures other modules keep ------------------------------------------ */

static void out_value(sl__stat_out *o, const char *const *lv, double v) {
  sl__mcollect_value(o->opaque, lv, v);
}

static void out_histogram(sl__stat_out *o, const char *const *lv,
                          const double *bounds, size_t n_bounds,
                          const uint64_t *buckets, double sum) {
  sl__mcollect_histogram(o->opaque, lv, bounds, n_bounds, buckets, sum);
}

void sl__jm_collect_reported(sl__mcollect *c, void *opaque) {
  sl__jmetrics *jm = opaque;
  sl__stat_out o = {sl__mcollect_family(c), out_value, out_histogram, c};
  sl__stats_report(jm->job, &o);
}

/* ---- User metrics -------------------------------------------------------- */

static void collect_user(sl__mcollect *c, void *opaque) {
  sl__jmetrics *jm = opaque;
  sl__stat_out o = {sl__mcollect_family(c), out_value, out_histogram, c};
  sl__stats_user_series(jm->job, o.family, &o);
}

typedef struct user_walk {
  size_t seen, skip;
  const sl__ufamily *fresh[16];
  size_t n;
} user_walk;

/* Families are only added, in order (and never freed before the job): the
 * ones past those registered here already are new. */
static void note_user(const sl__ufamily *f, void *opaque) {
  user_walk *uw = opaque;
  if (uw->seen++ >= uw->skip && uw->n < SL__ARRAY_LEN(uw->fresh))
    uw->fresh[uw->n++] = f;
}

/* Registers the user families operators added since the last call. The
 * runtime's list is read under its lock and the registry is changed after
 * it is released: a scrape holds the registry's lock while the collectors
 * take the runtime's. A family the registry refuses (it checks names
 * again) is skipped. */
static void sync_user(sl__jmetrics *jm) {
  for (;;) {
    pthread_mutex_lock(&jm->ck_lock);
    user_walk uw = {.skip = jm->n_user};
    sl__stats_user_families(jm->job, note_user, &uw);
    for (size_t i = 0; i < uw.n; i++) {
      const sl__ufamily *f = uw.fresh[i];
      char err[256];
      sl__mfamily *fam = sl__metrics_family(
          jm->reg, (sl_metric_type)f->type, f->name, f->help, "operator,worker",
          f->bounds, f->n_bounds, err, sizeof(err));
      if (fam)
        sl__mfamily_set_collector(fam, collect_user, jm);
    }
    jm->n_user += uw.n;
    pthread_mutex_unlock(&jm->ck_lock);
    if (uw.n < SL__ARRAY_LEN(uw.fresh))
      return;
  }
}

void sl__jm_sync(sl__jmetrics *jm) {
  sync_checkpoints(jm);
  sync_user(jm);
}
