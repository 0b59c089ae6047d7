/* SPDX-License-Identifier: Apache-2.0 */
/* exchange: generator -> key_by -> blackhole at P=2, the cost of moving
 * records between workers. The same job at P=1 (no exchange, direct
 * delivery) runs in the same process as the baseline.
 *
 * Usage: bench_exchange [rounds]: P=1 and P=2 alternately, rounds times
 * (default 1), printing each round's speed-up and their range.
 * BENCH_EVENTS=n runs n records instead of 2*10^7; BENCH_PAR=1 or 2 runs
 * only that parallelism once (e.g. under callgrind). Each round also
 * measures what two threads of this machine give a hand-written loop
 * that needs no exchange (bench_two_cores), next to the job's speed-up. */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "bench.h"

static unsigned long long N = 20000000ULL; /* BENCH_EVENTS overrides */
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

int main(int argc, char **argv) {
  if (getenv("BENCH_EVENTS"))
    N = strtoull(getenv("BENCH_EVENTS"), NULL, 10);
  if (getenv("BENCH_PAR")) {
    int par = atoi(getenv("BENCH_PAR"));
    double t = run(par);
    printf("bench=exchange records=%llu keys=%llu par=%d seconds=%.3f "
           "events_per_sec=%.0f\n",
           N, KEYS, par, t, N / t);
    return 0;
  }
  int rounds = argc > 1 ? atoi(argv[1]) : 1;
  rounds = rounds < 1 ? 1 : rounds > 64 ? 64 : rounds;
  double p1[64], p2[64], two[64];
  const uint64_t two_n = 10000000ULL;
  uint64_t *keys = bench_make_keys(two_n, KEYS);
  for (int r = 0; r < rounds; r++) {
    p1[r] = run(1);
    p2[r] = run(2);
    two[r] = bench_two_cores(keys, two_n, KEYS);
  }
  if (rounds == 1) {
    printf("bench=exchange records=%llu keys=%llu par=2 seconds=%.3f "
           "events_per_sec=%.0f p1_events_per_sec=%.0f speedup_over_p1=%.2f "
           "two_cores=%.2f\n",
           N, KEYS, p2[0], N / p2[0], N / p1[0], p1[0] / p2[0], two[0]);
    free(keys);
    return 0;
  }
  printf("bench=exchange records=%llu keys=%llu rounds=%d", N, KEYS, rounds);
  bench_print_rounds(N, p1, p2, two, rounds);
  free(keys);
  return 0;
}
