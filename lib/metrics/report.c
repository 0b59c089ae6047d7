/* SPDX-License-Identifier: Apache-2.0 */
/* What other modules report into a job's metrics: the checkpoint
 * coordinator (completions, failures, restarts) and the Kafka source and
 * DLQ path (per-partition offsets and lag, dead-letter counts). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "metrics/metrics_int.h"
#include "checkpoint/coord.h"
#include "runtime/runtime.h"

struct sl__kafka_pmetrics {
  sl__mseries *offset, *hw, *lag;
  _Atomic int64_t off_v, hw_v;
};

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

void sl__jm_sync_checkpoints(sl__jmetrics *jm) {
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

/* ---- Kafka --------------------------------------------------------------- */

sl__kafka_pmetrics *sl__metrics_kafka_partition(sl_job_t *job,
                                                const char *source_uid,
                                                const char *topic,
                                                int32_t partition) {
  sl__jmetrics *jm = job ? job->metrics : NULL;
  if (!jm)
    return NULL;
  char part[16];
  snprintf(part, sizeof(part), "%" PRId32, partition);
  const char *lv[3] = {source_uid, topic, part};
  sl__kafka_pmetrics *p = calloc(1, sizeof(*p));
  if (!p)
    return NULL;
  atomic_init(&p->off_v, -1);
  atomic_init(&p->hw_v, -1);
  p->offset = sl__mfamily_series(jm->f_offset, lv);
  p->hw = sl__mfamily_series(jm->f_hw, lv);
  p->lag = sl__mfamily_series(jm->f_lag, lv);
  if (!p->offset || !p->hw || !p->lag) {
    sl__metrics_kafka_partition_remove(p);
    return NULL;
  }
  /* Unknown until the first update. */
  sl__mseries_set(p->offset, NAN);
  sl__mseries_set(p->hw, NAN);
  sl__mseries_set(p->lag, NAN);
  return p;
}

void sl__metrics_kafka_partition_update(sl__kafka_pmetrics *p, int64_t offset,
                                        int64_t high_watermark) {
  if (!p)
    return;
  if (offset >= 0) {
    atomic_store(&p->off_v, offset);
    sl__mseries_set(p->offset, (double)offset);
  }
  if (high_watermark >= 0) {
    atomic_store(&p->hw_v, high_watermark);
    sl__mseries_set(p->hw, (double)high_watermark);
  }
  int64_t o = atomic_load(&p->off_v), h = atomic_load(&p->hw_v);
  if (o >= 0 && h >= 0)
    sl__mseries_set(p->lag, h > o ? (double)(h - o) : 0.0);
}

void sl__metrics_kafka_partition_remove(sl__kafka_pmetrics *p) {
  if (!p)
    return;
  sl__mseries_remove(p->offset);
  sl__mseries_remove(p->hw);
  sl__mseries_remove(p->lag);
  free(p);
}

sl__mseries *sl__metrics_dead_letter_series(sl_job_t *job, const char *uid,
                                            const char *reason) {
  sl__jmetrics *jm = job ? job->metrics : NULL;
  if (!jm)
    return NULL;
  const char *lv[2] = {uid, reason};
  return sl__mfamily_series(jm->f_dlq, lv);
}

void sl__metrics_dead_letter(sl_job_t *job, const char *uid, const char *reason,
                             uint64_t n) {
  sl__mseries_inc(sl__metrics_dead_letter_series(job, uid, reason), n);
}
