/* SPDX-License-Identifier: Apache-2.0 */
/* exchange: generator -> key_by -> blackhole at P=2, the cost of moving
 * records between workers. The same job at P=1 (no exchange, direct
 * delivery) runs in the same process as the baseline. */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "bench.h"

#define N 20000000ULL
#define KEYS 100000ULL
static _Thread_local unsigned char val[32];
static _Thread_local char key[16];

static int gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  uint64_t k = (i * 0x9e3779b97f4a7c15ULL) % KEYS;
  memcpy(key, &k, 8);
  memcpy(val, &i, 8);
  out->key = key;
  out->key_len = 8;
  out->value = val;
  out->value_len = sizeof(val);
  out->ts = (int64_t)i;
  return 0;
}

typedef struct per_worker {
  _Alignas(64) uint64_t n;
} per_worker;
static per_worker counts[8];

static int sink_fn(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  counts[sl_ctx_worker(ctx)].n += rec->key_len == 8;
  return 0;
}

static double run(int par) {
  memset(counts, 0, sizeof(counts));
  sl_job_t *job = bench_job("exchange", par, NULL);
  sl_generator_opts_t go = {.count = N, .gen = gen, .parallel = true};
  sl_stream_t *s = sl_key_by(sl_source_generator(job, "gen", &go), NULL, NULL);
  sl_sink(s, "sink", sink_fn, NULL);
  double t0 = bench_now();
  bench_run(job);
  double secs = bench_now() - t0;
  sl_job_destroy(job);
  uint64_t sum = 0;
  for (int i = 0; i < 8; i++)
    sum += counts[i].n;
  if (sum != N) {
    fprintf(stderr, "lost records: %llu of %llu\n", (unsigned long long)sum, N);
    exit(1);
  }
  return secs;
}

int main(void) {
  double p1 = run(1);
  double p2 = run(2);
  printf("bench=exchange records=%llu keys=%llu par=2 seconds=%.3f "
         "events_per_sec=%.0f p1_events_per_sec=%.0f speedup_over_p1=%.2f\n",
         N, KEYS, p2, N / p2, N / p1, p1 / p2);
  return 0;
}
