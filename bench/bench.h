/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers for benchmarks: a monotonic clock, a job built from a few conf
 * settings, and the one-line result format `bench=<name> key=value ...`. */
#ifndef SL_BENCH_H
#define SL_BENCH_H

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

#endif
