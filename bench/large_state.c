/* SPDX-License-Identifier: Apache-2.0 */
/* large_state: keyed state far larger than memory on the RocksDB backend.
 * Events pick one of 5 * 10^7 keys uniformly at random and
 * read-modify-write its counter; prints events/s and the peak RSS against
 * the configured state.rocksdb.memory. The baseline, in the same run: the
 * same pipeline over 10^5 keys (every key stays in the write-back cache).
 *
 * Environment: SLUICE_BENCH_KEYS, SLUICE_BENCH_EVENTS (default: as many
 * as keys), SLUICE_BENCH_MEMORY (default 256m), SLUICE_BENCH_DIR (state.dir;
 * default a new directory under /tmp, removed afterwards). */
#include <ftw.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

static uint64_t keys;
static _Thread_local uint64_t key_buf;

/* The key of event i: a hash of i, so any subtask can make any event. */
static int gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ULL;
  x ^= x >> 31, x *= 0xbf58476d1ce4e5b9ULL, x ^= x >> 29;
  key_buf = x % keys;
  *out = (sl_record_t){&key_buf, 8, NULL, 0, (int64_t)i};
  return 0;
}

static int count_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_desc_t d = {.name = "count", .kind = SL_STATE_VALUE};
  sl_state_t *st = sl_state_register(ctx, &d);
  sl_ctx_set_local(ctx, st);
  return st ? 0 : SL_ERR_STATE;
}

static int count_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)rec, (void)opaque;
  uint64_t *c = sl_value_ptr(ctx, sl_ctx_local(ctx), sizeof(uint64_t), NULL);
  if (!c)
    return SL_ERR_NOMEM;
  ++*c;
  return 0;
}

static int discard(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx, (void)rec, (void)opaque;
  return 0;
}

/* From /proc/self/status, in MiB. */
static double status_mb(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  double kb = 0;
  size_t n = strlen(field);
  while (f && fgets(line, sizeof(line), f))
    if (!strncmp(line, field, n))
      kb = atof(line + n + 1);
  if (f)
    fclose(f);
  return kb / 1024;
}

static double run(uint64_t n_keys, uint64_t events, const char *memory,
                  const char *dir) {
  keys = n_keys;
  const char *kv[] = {"state.backend",        "rocksdb", "state.dir", dir,
                      "state.rocksdb.memory", memory,    NULL};
  sl_job_t *job = bench_job("large_state", 1, kv);
  sl_generator_opts_t go = {.count = events, .gen = gen};
  sl_process_ops_t po = {.open = count_open, .on_element = count_element};
  sl_stream_t *s =
      sl_key_by(sl_source_generator(job, "events", &go), NULL, NULL);
  sl_sink(sl_process(s, "count", &po, NULL), "sink", discard, NULL);
  double t0 = bench_now();
  bench_run(job);
  double secs = bench_now() - t0;
  sl_op_stats_t st;
  sl_job_op_stats(job, "count", &st);
  sl_job_destroy(job);
  if (st.records_in != events) {
    fprintf(stderr, "processed %llu of %llu\n",
            (unsigned long long)st.records_in, (unsigned long long)events);
    exit(1);
  }
  return events / secs;
}

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static uint64_t env_u64(const char *name, uint64_t def) {
  const char *v = getenv(name);
  return v && *v ? strtoull(v, NULL, 10) : def;
}

int main(void) {
  uint64_t n_keys = env_u64("SLUICE_BENCH_KEYS", 50000000ULL);
  uint64_t events = env_u64("SLUICE_BENCH_EVENTS", n_keys);
  const char *memory = getenv("SLUICE_BENCH_MEMORY");
  if (!memory)
    memory = "256m";
  char dir[256];
  const char *user_dir = getenv("SLUICE_BENCH_DIR");
  if (user_dir) {
    snprintf(dir, sizeof(dir), "%s", user_dir);
  } else {
    snprintf(dir, sizeof(dir), "/tmp/sluice-bench-large-XXXXXX");
    if (!mkdtemp(dir)) {
      perror("large_state");
      return 1;
    }
  }
  double base = run(100000, events < 5000000 ? events : 5000000, memory, dir);
  double rss0 = status_mb("VmRSS:");
  double eps = run(n_keys, events, memory, dir);
  double peak = status_mb("VmHWM:");
  char err[128];
  sl_conf_t *c = sl_conf_new();
  sl_conf_set(c, "state.rocksdb.memory", memory, err, sizeof(err));
  char *end;
  double budget_mb = 0;
  const char *m = sl_conf_get(c, "state.rocksdb.memory");
  budget_mb = strtod(m, &end);
  if (*end == 'g' || *end == 'G')
    budget_mb *= 1024;
  else if (*end == 'k' || *end == 'K')
    budget_mb /= 1024;
  else if (!*end)
    budget_mb /= 1024 * 1024;
  sl_conf_destroy(c);
  printf("bench=large_state keys=%llu events=%llu backend=rocksdb p=1 "
         "events_per_sec=%.0f baseline_1e5_keys_events_per_sec=%.0f "
         "budget_mb=%.0f peak_rss_mb=%.0f rss_before_mb=%.0f "
         "peak_rss_to_budget=%.2f\n",
         (unsigned long long)n_keys, (unsigned long long)events, eps, base,
         budget_mb, peak, rss0, peak / budget_mb);
  if (!user_dir)
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}
