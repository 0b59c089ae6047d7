/* SPDX-License-Identifier: Apache-2.0 */
/* checkpoint: per state backend, the final checkpoint of 10^6 and 10^7
 * keys (duration, size, the worker's pause), the next one after 1% of the
 * keys changed (its new bytes and pause: both backends write only what
 * changed and link the rest), the next one after every key changed (its
 * pause), restore time; and keyed counting over 10^5 and
 * 10^6 keys with a checkpoint every second against the same job without
 * checkpoints, each run for at least BENCH_CKPT_SECS (default 6) and, with
 * checkpoints, until 5 completed (at most 4 times as long) — fewer fails the
 * benchmark, as the ratio would measure nothing. One line per measurement.
 * The throughput runs also record the worker's pause of every checkpoint
 * (sl_checkpoint_info_t.pause_us, sampled every millisecond by a thread of
 * its own, so that a worker busy for a while misses none) and print its
 * maximum and 99th percentile (bench=checkpoint_pause), failing when fewer
 * than 5 were sampled or none of them wrote the state whole.
 * BENCH_CKPT_KEYS overrides the key counts of the size runs (e.g. "1000000");
 * BENCH_CKPT_SIZES_ONLY skips the throughput runs; BENCH_CKPT_PAUSE_ONLY
 * runs only the throughput runs at 10^6 keys; BENCH_CKPT_BACKEND (hashmap
 * or rocksdb) runs one backend only. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define MIN_CHECKPOINTS 5
#define MAX_PAUSES 256

/* Each completed checkpoint's pause, duration and share of new bytes, as
 * the source saw them appear. */
typedef struct pauses {
  int64_t us[MAX_PAUSES], dur_ms[MAX_PAUSES];
  double new_frac[MAX_PAUSES];
  size_t n;
  uint64_t seen, missed;
} pauses;

typedef struct src {
  uint64_t n, keys, stride, next[8];
  /* Timed runs (until not 0): input ends at until, or, when ckpts is
   * set, once that many checkpoints completed after until (but not after
   * limit, so a run whose checkpoints stall still ends, and fails). */
  double until, limit;
  uint64_t ckpts;
  sl_job_t *job;
  pauses *pz; /* NULL: not recorded */
} src;

static _Atomic bool sampling;

static void sample_pause(src *s) {
  sl_checkpoint_info_t info;
  sl_job_checkpoint_info(s->job, &info);
  pauses *p = s->pz;
  if (info.completed == p->seen)
    return;
  /* More than one completed since the last poll: one was not seen. */
  p->missed += info.completed - p->seen - 1;
  p->seen = info.completed;
  if (p->n < MAX_PAUSES) {
    p->us[p->n] = info.pause_us;
    p->dur_ms[p->n] = info.duration_ms;
    p->new_frac[p->n] =
        info.bytes ? (double)info.bytes_new / (double)info.bytes : 0;
    p->n++;
  }
}

static bool timed_out(src *s) {
  double now = bench_now();
  if (now < s->until)
    return false;
  if (!s->ckpts || now >= s->limit)
    return true;
  sl_checkpoint_info_t info;
  sl_job_checkpoint_info(s->job, &info);
  return info.completed >= s->ckpts;
}

static void *sampler(void *opaque) {
  src *s = opaque;
  struct timespec ms = {0, 1000000};
  while (atomic_load(&sampling)) {
    sample_pause(s);
    nanosleep(&ms, NULL);
  }
  sample_pause(s); /* one that completed at the end */
  return NULL;
}

static int src_open(sl_source_ctx_t *ctx, void *opaque) {
  src *s = opaque;
  s->next[sl_source_ctx_subtask(ctx)] = (uint64_t)sl_source_ctx_subtask(ctx);
  return 0;
}

/* Event i has key (i * stride) % keys as 8 binary bytes. */
static int src_poll(sl_source_ctx_t *ctx, void *opaque) {
  src *s = opaque;
  int sub = sl_source_ctx_subtask(ctx);
  uint64_t step = (uint64_t)sl_source_ctx_subtasks(ctx);
  uint64_t i = s->next[sub];
  size_t budget = sl_source_ctx_budget(ctx);
  for (size_t k = 0; k < budget && i < s->n; k++, i += step) {
    uint64_t key = (i * s->stride) % s->keys;
    sl_record_t r = {&key, 8, NULL, 0, (int64_t)i};
    int rc = sl_source_emit(ctx, &r);
    if (rc)
      return rc;
  }
  s->next[sub] = i;
  if (s->until && timed_out(s))
    return SL_POLL_END;
  return i >= s->n ? SL_POLL_END : SL_POLL_MORE;
}

static int count_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_desc_t d = {.name = "count", .kind = SL_STATE_VALUE};
  sl_state_t *st = sl_state_register(ctx, &d);
  sl_ctx_set_local(ctx, st);
  return st ? 0 : SL_ERR_STATE;
}

static int count_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)rec;
  (void)opaque;
  uint64_t *c = sl_value_ptr(ctx, sl_ctx_local(ctx), sizeof(uint64_t), NULL);
  if (!c)
    return SL_ERR_NOMEM;
  ++*c;
  return 0;
}

static int discard(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)rec;
  (void)opaque;
  return 0;
}

/* Runs keyed counting over the events of s; returns seconds. */
static double run(const char *backend, const char *const *extra, src *s,
                  sl_checkpoint_info_t *info) {
  const char *kv[24] = {"state.backend", backend, "log.level", "warn"};
  int n = 4;
  for (; extra && extra[0]; extra += 2) {
    kv[n++] = extra[0];
    kv[n++] = extra[1];
  }
  kv[n] = NULL;
  sl_job_t *job = bench_job("checkpoint", 1, kv);
  s->job = job;
  sl_source_ops_t so = {.open = src_open, .poll = src_poll, .parallel = true};
  sl_process_ops_t po = {.open = count_open, .on_element = count_element};
  sl_stream_t *k = sl_key_by(sl_source(job, "events", &so, s), NULL, NULL);
  sl_sink(sl_process(k, "count", &po, NULL), "sink", discard, NULL);
  pthread_t th;
  atomic_store(&sampling, true);
  if (s->pz && pthread_create(&th, NULL, sampler, s))
    exit(2);
  double t0 = bench_now();
  bench_run(job);
  double secs = bench_now() - t0;
  atomic_store(&sampling, false);
  if (s->pz)
    pthread_join(th, NULL);
  if (info)
    sl_job_checkpoint_info(job, info);
  sl_job_destroy(job);
  return secs;
}

static bool backend_exists(const char *name) {
  sl_conf_t *c = sl_conf_new();
  char err[256];
  bool ok = sl_conf_set(c, "state.backend", name, err, sizeof(err)) == SL_OK;
  sl_conf_destroy(c);
  return ok;
}

static void fail(const char *what, const char *backend, uint64_t keys) {
  fprintf(stderr, "bench=checkpoint backend=%s keys=%llu error=%s\n", backend,
          (unsigned long long)keys, what);
  exit(1);
}

static void sizes(const char *backend, uint64_t keys) {
  char dir[] = "/tmp/sluice-bench-ckpt-XXXXXX";
  if (!mkdtemp(dir))
    exit(2);
  const char *first[] = {"checkpoint.dir", dir, NULL};
  src s = {.n = keys, .keys = keys, .stride = 1};
  sl_checkpoint_info_t full, incr, all, rest_info;
  run(backend, first, &s, &full);
  /* 1% of the keys change; the restored state carries the rest. */
  const char *again[] = {"checkpoint.dir", dir, "restore.from", "latest", NULL};
  src s1 = {.n = keys / 100, .keys = keys, .stride = 97};
  run(backend, again, &s1, &incr);
  /* Then every key changes once: the checkpoint's pause when all of the
   * state changed since the previous one. */
  src s2 = {.n = keys, .keys = keys, .stride = 1};
  run(backend, again, &s2, &all);
  /* Restore alone: no input, no final checkpoint. */
  const char *rest[] = {
      "checkpoint.dir", dir, "restore.from", "latest", "checkpoint.final",
      "false",          NULL};
  src s0 = {.n = 0, .keys = 1};
  double restore = run(backend, rest, &s0, &rest_info);
  /* What the figures stand for: a final checkpoint of the loaded state,
   * one of the changed state restored from it, one of the wholly changed
   * state restored from that, and a restore of the last. */
  if (full.completed != 1 || !full.bytes)
    fail("no_full_checkpoint", backend, keys);
  if (incr.completed != 1 || incr.restored_from != full.id)
    fail("incremental_not_restored_from_full", backend, keys);
  if (all.completed != 1 || all.restored_from != incr.id)
    fail("all_changed_not_restored_from_incremental", backend, keys);
  /* Every key changed: it wrote at least half of a full checkpoint's
   * bytes anew, or the pause below is not that of a checkpoint of a
   * wholly changed state. (Not half of its own size: RocksDB's holds the
   * old table files too until they are compacted.) */
  if (all.bytes_new * 2 < full.bytes)
    fail("all_changed_checkpoint_wrote_little", backend, keys);
  if (rest_info.restored_from != all.id)
    fail("restore_not_from_all_changed", backend, keys);
  /* Both backends share unchanged state between checkpoints (RocksDB's
   * table files, the hashmap's segments): the second one must link some
   * of the first one's bytes, or its new bytes measure nothing. */
  if (incr.bytes_new >= incr.bytes)
    fail("incremental_shares_nothing", backend, keys);
  printf("bench=checkpoint backend=%s keys=%llu changed=%llu duration_ms=%lld "
         "bytes=%llu pause_ms=%.2f incr_duration_ms=%lld incr_bytes=%llu "
         "incr_bytes_new=%llu incr_pause_ms=%.2f incr_new_fraction=%.4f "
         "all_changed=%llu all_duration_ms=%lld all_bytes_new=%llu "
         "all_pause_ms=%.2f restore_ms=%.0f restored_from=%llu\n",
         backend, (unsigned long long)keys, (unsigned long long)s1.n,
         (long long)full.duration_ms, (unsigned long long)full.bytes,
         (double)full.pause_us / 1000, (long long)incr.duration_ms,
         (unsigned long long)incr.bytes, (unsigned long long)incr.bytes_new,
         (double)incr.pause_us / 1000,
         full.bytes ? (double)incr.bytes_new / (double)full.bytes : 0.0,
         (unsigned long long)s2.n, (long long)all.duration_ms,
         (unsigned long long)all.bytes_new, (double)all.pause_us / 1000,
         restore * 1000, (unsigned long long)rest_info.restored_from);
  fflush(stdout);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd))
    exit(2);
}

/* Runs keyed counting over keys for secs seconds — with checkpoints on,
 * longer if fewer than MIN_CHECKPOINTS completed by then (up to 4 secs):
 * a slow checkpoint makes the run longer rather than the figure empty.
 * Returns events/s. */
static double timed(const char *backend, const char *const *extra,
                    uint64_t keys, double secs, sl_checkpoint_info_t *info,
                    pauses *pz) {
  src s = {.n = UINT64_MAX, .keys = keys, .stride = 7919, .pz = pz};
  if (pz)
    pz->seen = 0;
  s.until = bench_now() + secs;
  s.limit = s.until + 3 * secs;
  s.ckpts = info ? MIN_CHECKPOINTS : 0;
  double took = run(backend, extra, &s, info);
  return (double)s.next[0] / took;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* The pause line: max and 99th percentile (nearest rank) of the workers'
 * pause over the checkpoints of the throughput runs, against the longest
 * checkpoint's duration (trigger to complete) in the same runs: the share
 * of a checkpoint's work the worker stops for. */
static void pause_line(const char *backend, uint64_t keys, pauses *p) {
  if (p->missed)
    fail("pause_of_a_checkpoint_not_sampled", backend, keys);
  if (p->n < MIN_CHECKPOINTS)
    fail("too_few_pauses_sampled", backend, keys);
  size_t whole = 0;
  int64_t dur_max = 0;
  for (size_t i = 0; i < p->n; i++) {
    whole += p->new_frac[i] >= 0.9;
    if (p->dur_ms[i] > dur_max)
      dur_max = p->dur_ms[i];
  }
  /* The pause that matters is that of a checkpoint writing the state
   * whole (the first of each run, and one after most keys changed). */
  if (!whole)
    fail("no_whole_checkpoint_sampled", backend, keys);
  int64_t v[MAX_PAUSES];
  memcpy(v, p->us, p->n * sizeof(*v));
  qsort(v, p->n, sizeof(*v), cmp_i64);
  size_t r99 = (p->n * 99 + 99) / 100; /* nearest rank, 1-based */
  double max_ms = (double)v[p->n - 1] / 1000,
         p99_ms = (double)v[r99 - 1] / 1000;
  printf("bench=checkpoint_pause backend=%s keys=%llu checkpoints=%zu "
         "whole_checkpoints=%zu pause_max_ms=%.2f pause_p99_ms=%.2f "
         "pause_p50_ms=%.2f checkpoint_max_ms=%lld target_ms=10 "
         "ratio=%.4f\n",
         backend, (unsigned long long)keys, p->n, whole, max_ms, p99_ms,
         (double)v[(p->n - 1) / 2] / 1000, (long long)dur_max,
         dur_max ? max_ms / (double)dur_max : 0.0);
  fflush(stdout);
}

static void throughput(const char *backend, uint64_t keys, double secs) {
  static pauses pz_store;
  pauses *pz = &pz_store;
  memset(pz, 0, sizeof(*pz));
  char dir[] = "/tmp/sluice-bench-ckpt-XXXXXX";
  if (!mkdtemp(dir))
    exit(2);
  const char *on[] = {"checkpoint.dir",
                      dir,
                      "checkpoint.interval.ms",
                      "1000",
                      "checkpoint.final",
                      "false",
                      NULL};
  double off_eps = 0, on_eps = 0;
  uint64_t ckpts = 0, min_ckpts = UINT64_MAX;
  int64_t last_pause_us = 0;
  /* Alternate the two so drift on a shared machine hits both. */
  for (int r = 0; r < 2; r++) {
    sl_checkpoint_info_t info = {0};
    off_eps += timed(backend, NULL, keys, secs, NULL, NULL) / 2;
    on_eps += timed(backend, on, keys, secs, &info, pz) / 2;
    ckpts += info.completed;
    last_pause_us = info.pause_us;
    if (info.completed < min_ckpts)
      min_ckpts = info.completed;
    if (info.failed)
      fail("checkpoint_failed", backend, keys);
  }
  printf(
      "bench=checkpoint_throughput backend=%s keys=%llu seconds_per_run=%.1f "
      "no_ckpt_events_per_sec=%.0f ckpt_1s_events_per_sec=%.0f "
      "checkpoints=%llu min_checkpoints_per_run=%llu last_pause_ms=%.2f "
      "ratio=%.3f\n",
      backend, (unsigned long long)keys, secs, off_eps, on_eps,
      (unsigned long long)ckpts, (unsigned long long)min_ckpts,
      (double)last_pause_us / 1000, on_eps / off_eps);
  fflush(stdout);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd))
    exit(2);
  if (min_ckpts < MIN_CHECKPOINTS) /* the ratio above measured too little */
    fail("too_few_checkpoints", backend, keys);
  pause_line(backend, keys, pz);
}

int main(void) {
  const char *backends[] = {"hashmap", "rocksdb"};
  uint64_t keys[2] = {1000000, 10000000};
  int nk = 2;
  const char *env = getenv("BENCH_CKPT_KEYS");
  if (env) {
    keys[0] = strtoull(env, NULL, 10);
    nk = 1;
  }
  const char *secs_env = getenv("BENCH_CKPT_SECS");
  double secs = secs_env ? strtod(secs_env, NULL) : 6.0;
  bool pause_only = getenv("BENCH_CKPT_PAUSE_ONLY") != NULL;
  const char *only = getenv("BENCH_CKPT_BACKEND");
  for (size_t b = 0; b < 2; b++) {
    if (!backend_exists(backends[b]) || (only && strcmp(only, backends[b])))
      continue;
    for (int k = 0; k < nk && !pause_only; k++)
      sizes(backends[b], keys[k]);
    if (!getenv("BENCH_CKPT_SIZES_ONLY")) {
      if (!pause_only)
        throughput(backends[b], 100000, secs);
      throughput(backends[b], 1000000, secs);
    }
  }
  return 0;
}
