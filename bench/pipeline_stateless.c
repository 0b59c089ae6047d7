/* SPDX-License-Identifier: Apache-2.0 */
/* pipeline_stateless: generator -> map -> filter -> blackhole sink over 10^7
 * records of 64 bytes at P=1, against a plain C loop calling the same
 * functions in the same run (ratio_to_baseline: 1.0 = no runtime cost). */
#include <stdint.h>
#include <string.h>

#include "bench.h"

#define N 10000000ULL
static _Thread_local unsigned char val[64];
static volatile uint64_t sink_count;

static int gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  memcpy(val, &i, sizeof(i));
  out->value = val;
  out->value_len = sizeof(val);
  out->ts = (int64_t)i;
  return 0;
}

static int map_fn(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                  void *opaque) {
  (void)ctx;
  (void)opaque;
  out->ts = in->ts + 1;
  return 0;
}

static int filter_fn(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)opaque;
  return rec->ts % 10 != 0;
}

static int sink_fn(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)opaque;
  sink_count += rec->value_len != 0;
  return 0;
}

/* The same work with no runtime: a hand-written loop calling the same
 * callbacks through function pointers, as a program with pluggable stages
 * would (direct calls would let the compiler delete the loop). */
static sl_gen_fn volatile v_gen = gen;
static sl_map_fn volatile v_map = map_fn;
static sl_filter_fn volatile v_filter = filter_fn;
static sl_record_fn volatile v_sink = sink_fn;

static double baseline(void) {
  sink_count = 0;
  double t0 = bench_now();
  for (uint64_t i = 0; i < N; i++) {
    sl_record_t in = {0}, out;
    v_gen(i, &in, NULL);
    out = in;
    v_map(NULL, &in, &out, NULL);
    if (v_filter(NULL, &out, NULL) > 0)
      v_sink(NULL, &out, NULL);
  }
  return bench_now() - t0;
}

int main(void) {
  double base = baseline();
  uint64_t base_count = sink_count;
  sink_count = 0;
  sl_job_t *job = bench_job("pipeline_stateless", 1, NULL);
  sl_generator_opts_t go = {.count = N, .gen = gen};
  sl_stream_t *s = sl_source_generator(job, "gen", &go);
  s = sl_map(s, "map", map_fn, NULL);
  s = sl_filter(s, "filter", filter_fn, NULL);
  sl_sink(s, "sink", sink_fn, NULL);
  double t0 = bench_now();
  bench_run(job);
  double secs = bench_now() - t0;
  sl_job_destroy(job);
  if (sink_count != base_count) {
    fprintf(stderr, "count mismatch: %llu vs %llu\n",
            (unsigned long long)sink_count, (unsigned long long)base_count);
    return 1;
  }
  printf("bench=pipeline_stateless records=%llu par=1 seconds=%.3f "
         "events_per_sec=%.0f baseline_events_per_sec=%.0f "
         "ratio_to_baseline=%.2f\n",
         N, secs, N / secs, N / base, base / secs);
  return 0;
}
