/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers for benchmarks: a monotonic clock, a job built from a few conf
 * settings, and the one-line result format `bench=<name> key=value ...`. */
#ifndef SL_BENCH_H
#define SL_BENCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice.h"

static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A job with parallelism par and optional extra key/value pairs (NULL-
 * terminated); exits the benchmark program on a bad setting. */
static inline sl_job_t *bench_job(const char *name, int par,
                                  const char *const *kv) {
  char err[256], p[16];
  sl_conf_t *c = sl_conf_new();
  snprintf(p, sizeof(p), "%d", par);
  if (sl_conf_set(c, "parallelism", p, err, sizeof(err)))
    goto bad;
  for (; kv && kv[0]; kv += 2)
    if (sl_conf_set(c, kv[0], kv[1], err, sizeof(err)))
      goto bad;
  /* BENCH_CONF="key=value,key=value": settings for every job of the run
   * (e.g. channel.capacity), to measure their effect. */
  const char *env = getenv("BENCH_CONF");
  char buf[512];
  snprintf(buf, sizeof(buf), "%s", env ? env : "");
  for (char *save = NULL, *kvs = strtok_r(buf, ",", &save); kvs;
       kvs = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(kvs, '=');
    if (!eq) {
      snprintf(err, sizeof(err), "BENCH_CONF: no '=' in \"%s\"", kvs);
      goto bad;
    }
    *eq = '\0';
    if (sl_conf_set(c, kvs, eq + 1, err, sizeof(err)))
      goto bad;
  }
  sl_job_t *job = sl_job_new(name, c, err, sizeof(err));
  if (job)
    return job;
bad:
  fprintf(stderr, "%s: %s\n", name, err);
  exit(2);
}

static inline void bench_run(sl_job_t *job) {
  int rc = sl_job_run(job);
  if (rc) {
    fprintf(stderr, "job failed: %s: %s\n", sl_strerror(rc),
            sl_job_errmsg(job));
    exit(1);
  }
}

/* A source's poll over pre-generated 8-byte keys: hands on events [*i,
 * end), at most the poll's budget, as arrays of up to 256 records
 * (sl_source_emit_batch: the keys are lent, not copied), event j with
 * key &keys[j] and timestamp j / ts_div; advances *i past them. 0, or the
 * emit's error. */
static inline int bench_emit_keys(sl_source_ctx_t *ctx, const uint64_t *keys,
                                  uint64_t *i, uint64_t end, uint64_t ts_div) {
  sl_record_t r[256];
  size_t budget = sl_source_ctx_budget(ctx);
  uint64_t j = *i;
  for (size_t k = 0; k < budget && j < end;) {
    size_t m = (size_t)(end - j);
    m = m < budget - k ? m : budget - k;
    m = m < 256 ? m : 256;
    for (size_t x = 0; x < m; x++, j++)
      r[x] = (sl_record_t){&keys[j], 8, NULL, 0, (int64_t)(j / ts_div)};
    k += m;
    int rc = sl_source_emit_batch(ctx, r, m);
    if (rc) {
      *i = j;
      return rc;
    }
  }
  *i = j;
  return 0;
}

/* n keys in [0, range) from a fixed xorshift sequence: the same events
 * in every run. Exits the benchmark when out of memory. */
static inline uint64_t *bench_make_keys(uint64_t n, uint64_t range) {
  uint64_t *keys = malloc(n * sizeof(uint64_t)), x = 42;
  if (!keys) {
    perror("bench_make_keys");
    exit(1);
  }
  for (uint64_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    keys[i] = x % range;
  }
  return keys;
}

/* A table for bench_count_keys: keys below range at a load factor of at
 * most 0.4. touch: its pages are written now, so that counting takes no
 * page fault; else they fault in while it counts, as the state of a job
 * does (keyed_count's baseline). */
typedef struct bench_table {
  int bits;
  uint64_t *keys, *counts;
} bench_table;

static inline void bench_table_init(bench_table *t, uint64_t range,
                                    bool touch) {
  t->bits = 1;
  while (((uint64_t)1 << t->bits) < range * 5 / 2)
    t->bits++;
  size_t cap = (size_t)1 << t->bits;
  t->keys = calloc(cap, sizeof(uint64_t));
  t->counts = calloc(cap, sizeof(uint64_t));
  if (!t->keys || !t->counts) {
    perror("bench_table_init");
    exit(1);
  }
  if (touch) {
    memset(t->keys, 0, cap * sizeof(uint64_t));
    memset(t->counts, 0, cap * sizeof(uint64_t));
  }
}

static inline void bench_table_free(bench_table *t) {
  free(t->keys);
  free(t->counts);
}

/* What a C programmer writes by hand to count keys[0, n): an
 * open-addressing table on the raw keys. Returns the total in the table
 * (n for an empty one), so that the work is not optimised away. */
static inline uint64_t bench_count_keys(bench_table *t, const uint64_t *keys,
                                        uint64_t n) {
  const int bits = t->bits;
  const size_t cap = (size_t)1 << bits;
  uint64_t *tk = t->keys, *counts = t->counts;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t k = keys[i] + 1; /* 0 marks an empty slot */
    uint64_t h = k * 0x9e3779b97f4a7c15ULL;
    size_t j = (size_t)(h >> (64 - bits));
    while (tk[j] && tk[j] != k)
      j = (j + 1) & (cap - 1);
    tk[j] = k;
    counts[j]++;
  }
  uint64_t total = 0;
  for (size_t j = 0; j < cap; j++)
    total += counts[j];
  return total;
}

typedef struct bench_half {
  bench_table t;
  const uint64_t *keys;
  uint64_t n, total;
} bench_half;

static inline void *bench_count_half(void *arg) {
  bench_half *h = arg;
  h->total = bench_count_keys(&h->t, h->keys, h->n);
  return NULL;
}

/* What two cores of this machine give work that needs no exchange at
 * all, measured next to a P=2 figure: the hand-written count of keys[0,
 * n) on one thread, then on two threads, each counting its half in a
 * table of its own. Returns one thread's time over two threads' (2.0 on
 * two free cores). Context for a P=2 speed-up, not a ceiling: each
 * thread's table holds every key (a job's worker holds only its key
 * groups'), and the figure moves with the machine's load from run to
 * run, by up to 1.3x between two processes measuring at the same time. */
static inline double bench_two_cores(const uint64_t *keys, uint64_t n,
                                     uint64_t range) {
  bench_half one = {.keys = keys, .n = n};
  bench_half half[2] = {{.keys = keys, .n = n / 2},
                        {.keys = keys + n / 2, .n = n - n / 2}};
  /* Pages touched first: the two threads' first-touch faults at the same
   * time would measure the kernel, not the cores. */
  bench_table_init(&one.t, range, true);
  bench_table_init(&half[0].t, range, true);
  bench_table_init(&half[1].t, range, true);
  double t0 = bench_now();
  bench_count_half(&one);
  double t1 = bench_now() - t0;
  pthread_t th;
  t0 = bench_now();
  if (pthread_create(&th, NULL, bench_count_half, &half[1])) {
    perror("bench_two_cores");
    exit(1);
  }
  bench_count_half(&half[0]);
  pthread_join(th, NULL);
  double t2 = bench_now() - t0;
  bench_table_free(&one.t);
  bench_table_free(&half[0].t);
  bench_table_free(&half[1].t);
  if (one.total != n || half[0].total + half[1].total != n) {
    fprintf(stderr, "bench_two_cores: counted %llu and %llu of %llu\n",
            (unsigned long long)one.total,
            (unsigned long long)(half[0].total + half[1].total),
            (unsigned long long)n);
    exit(1);
  }
  return t1 / t2;
}

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static inline double bench_median(const double *v, int n) {
  double s[64];
  n = n > 64 ? 64 : n;
  memcpy(s, v, (size_t)n * sizeof(double));
  qsort(s, (size_t)n, sizeof(double), bench_cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Ends the result line of P=1 and P=2 run alternately over n records,
 * rounds times (seconds p1[r], p2[r]), each round next to its two-core
 * figure two[r] (bench_two_cores, measured right after that round's
 * runs): both rates and the speed-up per round, the speed-ups' range, and
 * the medians of the two-core figures and of the speed-ups, what two
 * threads of this machine gave a loop that needs no exchange next to
 * what they gave the job. */
static inline void bench_print_rounds(uint64_t n, const double *p1,
                                      const double *p2, const double *two,
                                      int rounds) {
  double sp[64], lo = 0, hi = 0;
  rounds = rounds > 64 ? 64 : rounds;
  printf(" p1_events_per_sec=");
  for (int r = 0; r < rounds; r++)
    printf("%s%.0f", r ? "," : "", (double)n / p1[r]);
  printf(" p2_events_per_sec=");
  for (int r = 0; r < rounds; r++)
    printf("%s%.0f", r ? "," : "", (double)n / p2[r]);
  printf(" speedups=");
  for (int r = 0; r < rounds; r++) {
    double x = sp[r] = p1[r] / p2[r];
    lo = r == 0 || x < lo ? x : lo;
    hi = r == 0 || x > hi ? x : hi;
    printf("%s%.2f", r ? "," : "", x);
  }
  printf(" speedup_min=%.2f speedup_max=%.2f two_cores=", lo, hi);
  for (int r = 0; r < rounds; r++)
    printf("%s%.2f", r ? "," : "", two[r]);
  printf(" two_cores_median=%.2f speedup_median=%.2f\n",
         bench_median(two, rounds), bench_median(sp, rounds));
}

#endif
