/* SPDX-License-Identifier: Apache-2.0 */
/* Window benchmarks, one binary per mode (WB_MODE): tumbling count against
 * a hand-written hash-table loop, sliding windows of growing size/slide
 * against tumbling, sessions against tumbling, the interval join, and
 * mini-batch aggregation off against on. The events are pre-generated (8-byte
 * keys, ascending event time at 100 events per ms, monotonous watermarks);
 * every ratio compares runs made in the same process, since the machine is
 * shared and noisy. */
#include <stdint.h>
#include <string.h>

#include "bench.h"

#define N 10000000ULL

static uint64_t *keys;
static uint64_t n_events = N;

typedef struct src {
  uint64_t next;
  int side; /* interval join: -1 all, 0 even events, 1 odd events */
} src;

/* How the source hands its events on: as arrays of records
 * (sl_source_emit_batch, the default: the events are held in memory, as
 * in bench_keyed_count), or one by one (BENCH_EMIT=record:
 * sl_source_emit, which copies each key). The interval join's two sides
 * take every other event, one by one. */
static bool emit_records;
__attribute__((unused)) static const char *emit_name(void) {
  return emit_records ? "record" : "batch";
}

static int src_poll(sl_source_ctx_t *ctx, void *opaque) {
  src *s = opaque;
  uint64_t i = s->next;
  size_t budget = sl_source_ctx_budget(ctx);
  if (emit_records || s->side >= 0) {
    for (size_t k = 0; k < budget && i < n_events; k++, i++) {
      if (s->side >= 0 && (int)(i & 1) != s->side)
        continue;
      sl_record_t r = {&keys[i], 8, NULL, 0, (int64_t)(i / 100)};
      int rc = sl_source_emit(ctx, &r);
      if (rc)
        return rc;
    }
  } else {
    int rc = bench_emit_keys(ctx, keys, &i, n_events, 100);
    if (rc)
      return rc;
  }
  s->next = i;
  return i >= n_events ? SL_POLL_END : SL_POLL_MORE;
}

static int count_out(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)rec;
  ++*(uint64_t *)opaque;
  return 0;
}

/* The event count: 10^7 by default (5·10^6 for the join), or argv[1], e.g.
 * a smaller count under valgrind. argv[2] names the one job to run
 * ("window", "process", "tumbling", "session", "none"), for instruction
 * counts of one job at a time. */
static const char *only;
static void set_events(int argc, char **argv, uint64_t dflt) {
  n_events = argc > 1 ? strtoull(argv[1], NULL, 10) : dflt;
  emit_records =
      getenv("BENCH_EMIT") && !strcmp(getenv("BENCH_EMIT"), "record");
  if (!n_events)
    n_events = dflt;
  only = argc > 2 ? argv[2] : NULL;
}
__attribute__((unused)) static bool runs(const char *job) {
  return !only || strcmp(only, job) == 0;
}

static void gen_keys(uint64_t n_keys) {
  uint64_t x = 42;
  for (uint64_t i = 0; i < n_events; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    keys[i] = x % n_keys;
  }
}

static sl_stream_t *source(sl_job_t *job, const char *uid, src *s) {
  sl_source_ops_t so = {.poll = src_poll};
  sl_watermark_spec_t ws = {.kind = SL_WM_MONOTONOUS};
  return sl_with_watermarks(sl_source(job, uid, &so, s), &ws);
}

/* Runs a count window over all events at P=1 with the extra
 * configuration kv (NULL-terminated pairs, may be NULL); returns events/s. */
__attribute__((unused)) static double
run_window_kv(const sl_window_spec_t *spec, const char *const *kv,
              uint64_t *outs) {
  sl_job_t *job = bench_job("window", 1, kv);
  src s = {0, -1};
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT};
  sl_stream_t *k = sl_key_by(source(job, "events", &s), NULL, NULL);
  *outs = 0;
  sl_sink(sl_window(k, "win", spec, &fn, NULL), "sink", count_out, outs);
  double t0 = bench_now();
  bench_run(job);
  double secs = bench_now() - t0;
  sl_op_stats_t st;
  sl_job_op_stats(job, "win", &st);
  sl_job_destroy(job);
  if (st.records_in != n_events) {
    fprintf(stderr, "processed %llu of %llu\n",
            (unsigned long long)st.records_in, (unsigned long long)n_events);
    exit(1);
  }
  /* A run in which no window fired measured the ingest alone: every
   * event's window ends before the final watermark, so some must fire. */
  if (n_events && !*outs) {
    fprintf(stderr, "no window fired over %llu events\n",
            (unsigned long long)n_events);
    exit(1);
  }
  return (double)n_events / secs;
}

__attribute__((unused)) static double run_window(const sl_window_spec_t *spec,
                                                 uint64_t *outs) {
  return run_window_kv(spec, NULL, outs);
}

#if WB_MODE == 0
/* The baseline: a tumbling count by hand, an open-addressing table of
 * (key -> count) emptied at each window end. */
static double baseline(uint64_t n_keys, int64_t size, uint64_t *outs) {
  int bits = 1;
  while (((size_t)1 << bits) < n_keys * 5 / 2)
    bits++;
  size_t cap = (size_t)1 << bits;
  uint64_t *tk = calloc(cap, sizeof(uint64_t));
  uint64_t *tc = calloc(cap, sizeof(uint64_t));
  volatile uint64_t sink = 0;
  *outs = 0;
  int64_t end = size;
  double t0 = bench_now();
  for (uint64_t i = 0; i <= n_events; i++) {
    int64_t ts = (int64_t)(i / 100);
    if (i == n_events || ts >= end) {
      for (size_t j = 0; j < cap; j++)
        if (tk[j]) {
          sink += tc[j];
          ++*outs;
          tk[j] = tc[j] = 0;
        }
      end += size;
      if (i == n_events)
        break;
    }
    uint64_t k = keys[i] + 1;
    size_t j = (size_t)((k * 0x9e3779b97f4a7c15ULL) >> (64 - bits));
    while (tk[j] && tk[j] != k)
      j = (j + 1) & (cap - 1);
    tk[j] = k;
    tc[j]++;
  }
  double secs = bench_now() - t0;
  free(tk);
  free(tc);
  return (double)n_events / secs;
}

/* The in-library reference: keyed_count's process function incrementing
 * a value state per key, over the same events. */
static int pc_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_desc_t d = {.name = "count", .kind = SL_STATE_VALUE};
  sl_state_t *st = sl_state_register(ctx, &d);
  sl_ctx_set_local(ctx, st);
  return st ? 0 : SL_ERR_STATE;
}

static int pc_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)rec;
  (void)opaque;
  uint64_t *c = sl_value_ptr(ctx, sl_ctx_local(ctx), sizeof(uint64_t), NULL);
  if (!c)
    return SL_ERR_NOMEM;
  ++*c;
  return 0;
}

static double run_process_count(void) {
  sl_job_t *job = bench_job("process_count", 1, NULL);
  src s = {0, -1};
  sl_process_ops_t po = {.open = pc_open, .on_element = pc_element};
  sl_stream_t *k = sl_key_by(source(job, "events", &s), NULL, NULL);
  uint64_t outs = 0;
  sl_sink(sl_process(k, "count", &po, NULL), "sink", count_out, &outs);
  double t0 = bench_now();
  bench_run(job);
  double secs = bench_now() - t0;
  sl_job_destroy(job);
  return (double)n_events / secs;
}

int main(int argc, char **argv) {
  set_events(argc, argv, N);
  keys = malloc(n_events * sizeof(uint64_t));
  gen_keys(100000);
  uint64_t o1 = 0, o2 = 0;
  double base = only ? 0 : baseline(100000, 60000, &o1);
  double pc = runs("process") ? run_process_count() : 0;
  sl_window_spec_t t = sl_window_tumbling(60000);
  double eps = runs("window") ? run_window(&t, &o2) : 0;
  if (!only && o1 != o2) {
    fprintf(stderr, "outputs differ: baseline %llu, window %llu\n",
            (unsigned long long)o1, (unsigned long long)o2);
    return 1;
  }
  printf("bench=window_tumbling window=60s agg=count events=%llu keys=100000 "
         "p=1 backend=hashmap emit=%s outputs=%llu events_per_sec=%.0f "
         "process_count_events_per_sec=%.0f ratio_to_process_count=%.2f "
         "baseline_events_per_sec=%.0f ratio_to_baseline=%.2f\n",
         (unsigned long long)n_events, emit_name(), (unsigned long long)o2, eps,
         pc, eps / pc, base, eps / base);
  free(keys);
  return 0;
}

#elif WB_MODE == 1
int main(int argc, char **argv) {
  set_events(argc, argv, N);
  keys = malloc(n_events * sizeof(uint64_t));
  gen_keys(1000);
  uint64_t o;
  sl_window_spec_t t = sl_window_tumbling(60000);
  double tumb = run_window(&t, &o);
  static const int64_t sz[3][2] = {
      {10000, 2000}, {60000, 1000}, {300000, 1000}};
  double eps[3];
  for (int i = 0; i < 3; i++) {
    sl_window_spec_t s = sl_window_sliding(sz[i][0], sz[i][1]);
    eps[i] = run_window(&s, &o);
  }
  printf("bench=window_sliding agg=count events=%llu keys=1000 p=1 "
         "backend=hashmap emit=%s tumbling_60s_events_per_sec=%.0f "
         "s10s_2s_events_per_sec=%.0f s60s_1s_events_per_sec=%.0f "
         "s300s_1s_events_per_sec=%.0f s300s_1s_outputs=%llu "
         "ratio_300s_1s_to_tumbling=%.2f\n",
         (unsigned long long)n_events, emit_name(), tumb, eps[0], eps[1],
         eps[2], (unsigned long long)o, eps[2] / tumb);
  free(keys);
  return 0;
}

#elif WB_MODE == 2
int main(int argc, char **argv) {
  set_events(argc, argv, N);
  keys = malloc(n_events * sizeof(uint64_t));
  gen_keys(100000);
  uint64_t o1 = 0, o2 = 0;
  sl_window_spec_t t = sl_window_tumbling(60000);
  double tumb = runs("tumbling") ? run_window(&t, &o1) : 0;
  sl_window_spec_t s = sl_window_session(10000);
  double ses = runs("session") ? run_window(&s, &o2) : 0;
  printf("bench=window_session gap=10s agg=count events=%llu keys=100000 p=1 "
         "backend=hashmap emit=%s outputs=%llu events_per_sec=%.0f "
         "tumbling_60s_events_per_sec=%.0f ratio_to_tumbling=%.2f\n",
         (unsigned long long)n_events, emit_name(), (unsigned long long)o2, ses,
         tumb, ses / tumb);
  free(keys);
  return 0;
}

#elif WB_MODE == 3
static int joined(sl_ctx_t *ctx, const sl_record_t *l, const sl_record_t *r,
                  void *opaque) {
  (void)ctx;
  (void)l;
  (void)r;
  ++*(uint64_t *)opaque;
  return 0;
}

int main(int argc, char **argv) {
  set_events(argc, argv, N / 2);
  keys = malloc(n_events * sizeof(uint64_t));
  gen_keys(10000);
  sl_job_t *job = bench_job("interval_join", 1, NULL);
  src ls = {0, 0}, rs = {0, 1};
  sl_stream_t *l = sl_key_by(source(job, "left", &ls), NULL, NULL);
  sl_stream_t *r = sl_key_by(source(job, "right", &rs), NULL, NULL);
  sl_interval_join_spec_t js = {.lower = -50, .upper = 50};
  uint64_t pairs = 0;
  sl_sink(sl_interval_join(l, r, "join", &js, joined, &pairs), "sink",
          count_out, &(uint64_t){0});
  double t0 = bench_now();
  bench_run(job);
  double secs = bench_now() - t0;
  sl_job_destroy(job);
  printf("bench=interval_join bounds=[-50ms,50ms] events=%llu keys=10000 p=1 "
         "backend=hashmap pairs=%llu events_per_sec=%.0f\n",
         (unsigned long long)n_events, (unsigned long long)pairs,
         (double)n_events / secs);
  free(keys);
  return 0;
}
#elif WB_MODE == 4
/* Mini-batch aggregation: the tumbling count over few keys (100, or
 * argv[3]), with mini.batch off and on in the same run. argv[2] "off" or
 * "on" runs one. */
int main(int argc, char **argv) {
  set_events(argc, argv, N);
  uint64_t n_keys = argc > 3 ? strtoull(argv[3], NULL, 10) : 100;
  if (!n_keys)
    n_keys = 100;
  keys = malloc(n_events * sizeof(uint64_t));
  gen_keys(n_keys);
  sl_window_spec_t t = sl_window_tumbling(60000);
  const char *off_kv[] = {"mini.batch", "false", NULL};
  const char *on_kv[] = {"mini.batch", "true", NULL};
  uint64_t o1 = 0, o2 = 0;
  double off = runs("off") ? run_window_kv(&t, off_kv, &o1) : 0;
  double on = runs("on") ? run_window_kv(&t, on_kv, &o2) : 0;
  if (!only && o1 != o2) {
    fprintf(stderr, "outputs differ: off %llu, on %llu\n",
            (unsigned long long)o1, (unsigned long long)o2);
    return 1;
  }
  printf("bench=window_minibatch window=60s agg=count events=%llu keys=%llu "
         "p=1 backend=hashmap emit=%s outputs=%llu off_events_per_sec=%.0f "
         "on_events_per_sec=%.0f ratio_on_to_off=%.2f\n",
         (unsigned long long)n_events, (unsigned long long)n_keys, emit_name(),
         (unsigned long long)(o1 ? o1 : o2), off, on, off > 0 ? on / off : 0);
  free(keys);
  return 0;
}
#endif
