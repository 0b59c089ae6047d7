/* SPDX-License-Identifier: Apache-2.0 */
/* Kafka's own figures: source partitions (position, high watermark, lag),
 * sink instances (delivered, failed, held output, time blocked on it),
 * dead letters, exactly-once commit latency and the producers' queue and
 * statistics. The metrics layer reads them at scrape time through the
 * reporter registered here with the runtime: Kafka never calls metrics. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka/kafka_int.h"
#include "runtime/stats.h"

struct sl__kdlq_stat {
  sl__kdlq_stat *next;
  char *uid;
  const char *reason; /* static */
  _Atomic uint64_t n;
};

static uint64_t dbits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof(u));
  return u;
}
static double bitsd(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof(d));
  return d;
}

/* ---- Writers' side ------------------------------------------------------- */

sl__kpart_stat *sl__kstats_partition(sl__kjob *kj, const char *source,
                                     const char *topic, int32_t partition) {
  sl__kpart_stat *p = calloc(1, sizeof(*p));
  if (!p || !(p->source = strdup(source)) || !(p->topic = strdup(topic))) {
    if (p)
      free(p->source);
    free(p);
    return NULL;
  }
  p->partition = partition;
  atomic_init(&p->offset, -1);
  atomic_init(&p->hw, -1);
  pthread_mutex_lock(&kj->stat_lock);
  p->next = kj->parts;
  kj->parts = p;
  pthread_mutex_unlock(&kj->stat_lock);
  return p;
}

void sl__kstats_partition_update(sl__kpart_stat *p, int64_t offset,
                                 int64_t high_watermark) {
  if (!p)
    return;
  if (offset >= 0)
    atomic_store_explicit(&p->offset, offset, memory_order_relaxed);
  if (high_watermark >= 0)
    atomic_store_explicit(&p->hw, high_watermark, memory_order_relaxed);
}

static void part_free(sl__kpart_stat *p) {
  free(p->source);
  free(p->topic);
  free(p);
}

void sl__kstats_partition_remove(sl__kjob *kj, sl__kpart_stat *p) {
  if (!p)
    return;
  pthread_mutex_lock(&kj->stat_lock);
  for (sl__kpart_stat **q = &kj->parts; *q; q = &(*q)->next) {
    if (*q == p) {
      *q = p->next;
      break;
    }
  }
  pthread_mutex_unlock(&kj->stat_lock);
  part_free(p);
}

sl__ksink_stat *sl__kstats_sink(sl__kjob *kj, const char *sink, int worker) {
  /* The instance's figures of a run before a revival count on. */
  pthread_mutex_lock(&kj->stat_lock);
  for (sl__ksink_stat *o = kj->sinks; o; o = o->next)
    if (o->worker == worker && strcmp(o->sink, sink) == 0) {
      pthread_mutex_unlock(&kj->stat_lock);
      return o;
    }
  pthread_mutex_unlock(&kj->stat_lock);
  sl__ksink_stat *s = calloc(1, sizeof(*s));
  if (!s || !(s->sink = strdup(sink))) {
    free(s);
    return NULL;
  }
  s->worker = worker;
  pthread_mutex_lock(&kj->stat_lock);
  sl__ksink_stat **tail = &kj->sinks;
  while (*tail)
    tail = &(*tail)->next;
  *tail = s;
  pthread_mutex_unlock(&kj->stat_lock);
  return s;
}

void sl__kstats_dead_letter(sl__kjob *kj, const char *uid, const char *reason) {
  pthread_mutex_lock(&kj->stat_lock);
  sl__kdlq_stat *d = kj->dlqs, **tail = &kj->dlqs;
  for (; d; tail = &d->next, d = d->next)
    if (strcmp(d->reason, reason) == 0 && strcmp(d->uid, uid) == 0)
      break;
  if (!d && (d = calloc(1, sizeof(*d)))) {
    if ((d->uid = strdup(uid))) {
      d->reason = reason;
      *tail = d;
    } else {
      free(d);
      d = NULL;
    }
  }
  if (d)
    atomic_fetch_add_explicit(&d->n, 1, memory_order_relaxed);
  pthread_mutex_unlock(&kj->stat_lock);
}

static const double commit_bounds[] = SL__KCOMMIT_BOUNDS;
_Static_assert(sizeof(commit_bounds) / sizeof(commit_bounds[0]) ==
                   SL__KCOMMIT_N,
               "SL__KCOMMIT_N counts SL__KCOMMIT_BOUNDS");

/* One writer: the coordinator thread. */
void sl__kstats_commit(sl__kjob *kj, double seconds) {
  size_t i = 0;
  while (i < SL__KCOMMIT_N && seconds > commit_bounds[i])
    i++;
  atomic_fetch_add_explicit(&kj->commit_buckets[i], 1, memory_order_relaxed);
  atomic_store_explicit(
      &kj->commit_sum,
      dbits(bitsd(atomic_load_explicit(&kj->commit_sum, memory_order_relaxed)) +
            seconds),
      memory_order_relaxed);
}

/* ---- The reporter -------------------------------------------------------- */

static void report_parts(sl__kjob *kj, sl__stat_out *o, int field) {
  char part[16];
  const char *lv[3];
  for (sl__kpart_stat *p = kj->parts; p; p = p->next) {
    int64_t off = atomic_load_explicit(&p->offset, memory_order_relaxed);
    int64_t hw = atomic_load_explicit(&p->hw, memory_order_relaxed);
    double v = field == 0            ? (off >= 0 ? (double)off : NAN)
               : field == 1          ? (hw >= 0 ? (double)hw : NAN)
               : off >= 0 && hw >= 0 ? (hw > off ? (double)(hw - off) : 0.0)
                                     : NAN;
    snprintf(part, sizeof(part), "%" PRId32, p->partition);
    lv[0] = p->source;
    lv[1] = p->topic;
    lv[2] = part;
    o->value(o, lv, v);
  }
}

static void report_sinks(sl__kjob *kj, sl__stat_out *o, int field) {
  char worker[16];
  for (sl__ksink_stat *s = kj->sinks; s; s = s->next) {
    snprintf(worker, sizeof(worker), "%d", s->worker);
    const char *lv[2] = {s->sink, worker};
    _Atomic uint64_t *a = field == 0   ? &s->delivered
                          : field == 1 ? &s->failed
                          : field == 2 ? &s->held_bytes
                                       : &s->blocked_ns;
    double v = (double)atomic_load_explicit(a, memory_order_relaxed);
    o->value(o, lv, field == 3 ? v / 1e9 : v);
  }
}

static void report_producers(sl__kjob *kj, sl__stat_out *o, int field) {
  sl__kprod *ps[2] = {kj->plain, kj->txn};
  static const char *const names[2] = {"plain", "transactional"};
  for (int i = 0; i < 2; i++) {
    if (!ps[i])
      continue;
    sl__kprod_stat st;
    sl__kprod_stats(ps[i], &st);
    if (!st.live)
      continue;
    const char *lv[2] = {names[i], NULL};
    if (field == 0) {
      o->value(o, lv, (double)st.queue);
    } else if (field == 1) {
      if (st.have_stats)
        o->value(o, lv, (double)st.retries);
    } else {
      char id[16];
      for (size_t b = 0; b < st.n_brokers; b++) {
        snprintf(id, sizeof(id), "%" PRId32, st.brokers[b].id);
        lv[1] = id;
        o->value(o, lv,
                 field == 2 ? st.brokers[b].rtt_s : st.brokers[b].throttle_s);
      }
    }
  }
}

static void report(sl__stat_out *o, void *opaque) {
  sl__kjob *kj = opaque;
  static const char *const parts[] = {"sluice_kafka_partition_offset",
                                      "sluice_kafka_partition_high_watermark",
                                      "sluice_kafka_consumer_lag"};
  static const char *const sinks[] = {
      "sluice_kafka_sink_records_delivered_total",
      "sluice_kafka_sink_records_failed_total", "sluice_kafka_sink_held_bytes",
      "sluice_kafka_sink_backpressure_seconds_total"};
  static const char *const prods[] = {
      "sluice_kafka_producer_queue_messages",
      "sluice_kafka_producer_request_retries_total",
      "sluice_kafka_broker_rtt_seconds",
      "sluice_kafka_broker_throttle_seconds"};
  pthread_mutex_lock(&kj->stat_lock);
  for (int i = 0; i < 3; i++)
    if (strcmp(o->family, parts[i]) == 0)
      report_parts(kj, o, i);
  for (int i = 0; i < 4; i++)
    if (strcmp(o->family, sinks[i]) == 0)
      report_sinks(kj, o, i);
  if (strcmp(o->family, "sluice_dead_letter_records_total") == 0) {
    for (sl__kdlq_stat *d = kj->dlqs; d; d = d->next) {
      const char *lv[2] = {d->uid, d->reason};
      o->value(o, lv,
               (double)atomic_load_explicit(&d->n, memory_order_relaxed));
    }
  }
  pthread_mutex_unlock(&kj->stat_lock);
  /* Producers are created under kj->lock and live as long as kj. */
  for (int i = 0; i < 4; i++) {
    if (strcmp(o->family, prods[i]) == 0) {
      pthread_mutex_lock(&kj->lock);
      report_producers(kj, o, i);
      pthread_mutex_unlock(&kj->lock);
    }
  }
  if (strcmp(o->family, "sluice_kafka_transaction_commit_seconds") == 0 &&
      kj->participant) {
    uint64_t b[SL__KCOMMIT_N + 1];
    for (size_t i = 0; i <= SL__KCOMMIT_N; i++)
      b[i] = atomic_load_explicit(&kj->commit_buckets[i], memory_order_relaxed);
    o->histogram(
        o, NULL, commit_bounds, SL__KCOMMIT_N, b,
        bitsd(atomic_load_explicit(&kj->commit_sum, memory_order_relaxed)));
  }
}

int sl__kstats_init(sl__kjob *kj) {
  pthread_mutex_init(&kj->stat_lock, NULL);
  atomic_init(&kj->commit_sum, dbits(0.0));
  return sl__stats_add_reporter(kj->job, report, kj);
}

void sl__kstats_free(sl__kjob *kj) {
  for (sl__kpart_stat *p = kj->parts, *n; p; p = n) {
    n = p->next;
    part_free(p);
  }
  for (sl__ksink_stat *s = kj->sinks, *n; s; s = n) {
    n = s->next;
    free(s->sink);
    free(s);
  }
  for (sl__kdlq_stat *d = kj->dlqs, *n; d; d = n) {
    n = d->next;
    free(d->uid);
    free(d);
  }
  pthread_mutex_destroy(&kj->stat_lock);
}
