/* SPDX-License-Identifier: Apache-2.0 */
/* keyed_count: 10^7 pre-generated binary events over 10^5 keys; a keyed
 * process function increments a per-key value state. Runs at P=1 and P=2,
 * and, in the same process, a hand-written loop counting the same events
 * in a plain open-addressing hash table (the baseline). Then the state
 * backends side by side: 10^7 events over 10^6 keys at P=1 on the hashmap
 * and on RocksDB, in the same run, with their ratio.
 *
 * Usage: bench_keyed_count [hashmap|rocksdb|both [keys]]: only the
 * backend comparison ("both" by default) with that many keys.
 * bench_keyed_count scaling [rounds]: only P=1 and P=2 on the hashmap,
 * alternately, rounds times (default 5), each round's speed-up printed
 * next to what two threads gave a hand-written count in that round
 * (bench_two_cores); with BENCH_PAR=1 or 2 only that parallelism, once
 * (callgrind).
 * BENCH_EVENTS=n runs n events instead of 10^7 (e.g. under callgrind);
 * BENCH_EMIT=record makes the source emit record by record instead of
 * handing on arrays of records. */
#include <ftw.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

static uint64_t N = 10000000ULL; /* BENCH_EVENTS overrides (profiling) */

static uint64_t KEYS = 100000ULL;
static uint64_t *events; /* the key of each event */
static const char *backend = "hashmap";
static char state_dir[64]; /* state.dir of the rocksdb runs */

/* Subtask w of P emits the events [w·N/P, (w+1)·N/P), as a Kafka
 * consumer reads its own partition's log: each worker reads its share of
 * the events' memory and no more. (An interleaved split, events w, w+P,
 * ..., made each worker read every cache line of the array at P=2: twice
 * P=1's memory traffic per event.) */
typedef struct src {
  uint64_t next[8], end[8];
} src;

static int src_open(sl_source_ctx_t *ctx, void *opaque) {
  src *s = opaque;
  uint64_t w = (uint64_t)sl_source_ctx_subtask(ctx);
  uint64_t p = (uint64_t)sl_source_ctx_subtasks(ctx);
  s->next[w] = N * w / p;
  s->end[w] = N * (w + 1) / p;
  return 0;
}

/* How the source hands its events on: as arrays of records
 * (sl_source_emit_batch, the default: the events are held in memory), or
 * one by one (BENCH_EMIT=record: sl_source_emit). */
static bool emit_records;

static int src_poll(sl_source_ctx_t *ctx, void *opaque) {
  src *s = opaque;
  int sub = sl_source_ctx_subtask(ctx);
  uint64_t i = s->next[sub], end = s->end[sub];
  size_t budget = sl_source_ctx_budget(ctx);
  if (emit_records) {
    for (size_t k = 0; k < budget && i < end; k++, i++) {
      sl_record_t r = {&events[i], 8, NULL, 0, (int64_t)i};
      int rc = sl_source_emit(ctx, &r);
      if (rc)
        return rc;
    }
  } else {
    int rc = bench_emit_keys(ctx, events, &i, end, 1);
    if (rc)
      return rc;
  }
  s->next[sub] = i;
  return i >= end ? SL_POLL_END : SL_POLL_MORE;
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
  bool created;
  uint64_t *c =
      sl_value_ptr(ctx, sl_ctx_local(ctx), sizeof(uint64_t), &created);
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

static double run(int par) {
  const char *kv[] = {"state.backend", backend, "state.dir", state_dir, NULL};
  sl_job_t *job = bench_job("keyed_count", par, kv);
  static src s;
  memset(&s, 0, sizeof(s));
  sl_source_ops_t so = {.open = src_open, .poll = src_poll, .parallel = true};
  sl_process_ops_t po = {.open = count_open, .on_element = count_element};
  sl_stream_t *k = sl_key_by(sl_source(job, "events", &so, &s), NULL, NULL);
  sl_sink(sl_process(k, "count", &po, NULL), "sink", discard, NULL);
  double t0 = bench_now();
  bench_run(job);
  double secs = bench_now() - t0;
  sl_op_stats_t stats;
  sl_job_op_stats(job, "count", &stats);
  sl_job_destroy(job);
  if (stats.records_in != N) {
    fprintf(stderr, "processed %llu of %llu\n",
            (unsigned long long)stats.records_in, (unsigned long long)N);
    exit(1);
  }
  return secs;
}

/* The baseline: what a C programmer writes by hand (bench.h). */
static double baseline(void) {
  bench_table t;
  bench_table_init(&t, KEYS, false);
  double t0 = bench_now();
  uint64_t total = bench_count_keys(&t, events, N);
  double secs = bench_now() - t0;
  bench_table_free(&t);
  if (total != N)
    exit(1);
  return secs;
}

static void make_events(void) {
  free(events);
  events = bench_make_keys(N, KEYS);
}

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

/* hashmap and RocksDB on the same events, interleaved (the machine is
 * shared and noisy: a ratio from one run is worth more than two numbers
 * from two). The write-back cache holds the 10^6 hot keys (the default
 * budget's share is 128 MiB); every first touch is a RocksDB miss. */
static void compare(const char *which) {
  double hm = 0, rk = 0;
  int rounds = 2;
  for (int r = 0; r < rounds; r++) {
    if (strcmp(which, "rocksdb")) {
      backend = "hashmap";
      double t = run(1);
      hm = hm == 0 || t < hm ? t : hm;
    }
    if (strcmp(which, "hashmap")) {
      backend = "rocksdb";
      double t = run(1);
      rk = rk == 0 || t < rk ? t : rk;
    }
  }
  printf("bench=keyed_count_backends events=%llu keys=%llu emit=%s",
         (unsigned long long)N, (unsigned long long)KEYS,
         emit_records ? "record" : "batch");
  if (hm)
    printf(" hashmap_p1_events_per_sec=%.0f", N / hm);
  if (rk)
    printf(" rocksdb_p1_events_per_sec=%.0f", N / rk);
  if (hm && rk)
    printf(" hashmap_to_rocksdb=%.2f", rk / hm);
  printf(" best_of=%d\n", rounds);
}

int main(int argc, char **argv) {
  if (getenv("BENCH_EVENTS"))
    N = strtoull(getenv("BENCH_EVENTS"), NULL, 10);
  emit_records =
      getenv("BENCH_EMIT") && !strcmp(getenv("BENCH_EMIT"), "record");
  snprintf(state_dir, sizeof(state_dir), "/tmp/sluice-bench-XXXXXX");
  if (!mkdtemp(state_dir)) {
    perror("keyed_count");
    return 1;
  }
  if (argc > 1 && !strcmp(argv[1], "scaling")) {
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    rounds = rounds < 1 ? 1 : rounds > 64 ? 64 : rounds;
    double p1[64], p2[64], two[64];
    make_events();
    if (getenv("BENCH_PAR")) { /* one parallelism once (callgrind) */
      int par = atoi(getenv("BENCH_PAR"));
      double t = run(par);
      printf("bench=keyed_count_scaling events=%llu keys=%llu par=%d "
             "events_per_sec=%.0f\n",
             (unsigned long long)N, (unsigned long long)KEYS, par, N / t);
      rmdir(state_dir);
      free(events);
      return 0;
    }
    for (int r = 0; r < rounds; r++) {
      p1[r] = run(1);
      p2[r] = run(2);
      two[r] = bench_two_cores(events, N, KEYS);
    }
    printf("bench=keyed_count_scaling events=%llu keys=%llu rounds=%d",
           (unsigned long long)N, (unsigned long long)KEYS, rounds);
    bench_print_rounds(N, p1, p2, two, rounds);
    rmdir(state_dir);
    free(events);
    return 0;
  }
  if (argc == 1) {
    make_events();
    double base = baseline();
    double p1 = run(1);
    double p2 = run(2);
    double two = bench_two_cores(events, N, KEYS);
    printf("bench=keyed_count events=%llu keys=%llu backend=hashmap emit=%s "
           "p1_events_per_sec=%.0f p2_events_per_sec=%.0f speedup_p2=%.2f "
           "two_cores=%.2f baseline_events_per_sec=%.0f "
           "ratio_to_baseline=%.2f\n",
           (unsigned long long)N, (unsigned long long)KEYS,
           emit_records ? "record" : "batch", N / p1, N / p2, p1 / p2, two,
           N / base, base / p1);
  }
  KEYS = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000ULL;
  make_events();
  compare(argc > 1 ? argv[1] : "both");
  nftw(state_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  free(events);
  return 0;
}
