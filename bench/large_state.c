/* SPDX-License-Identifier: Apache-2.0 */
/* large_state: keyed state far larger than memory on the RocksDB backend.
 * Events pick one of 5 * 10^7 keys uniformly at random and
 * read-modify-write its counter. The result, ratio: the peak RSS of the
 * whole process (VmHWM, from /proc/self/status) over the configured
 * state.rocksdb.memory, the budget (target: at most 1.1). Also printed:
 * events/s, and the baseline in the same run, the same pipeline over 10^5
 * keys (every key stays in the write-back cache).
 *
 * The ratio means something only when the state outgrew memory: a thread
 * samples the size of the state's files on disk, and the benchmark fails
 * (error= on stderr, exit 1) when at their largest they stayed below the
 * budget, or when not every event was processed.
 *
 * Environment: SLUICE_BENCH_KEYS, SLUICE_BENCH_EVENTS (default: as many
 * as keys), SLUICE_BENCH_MEMORY (default 256m), SLUICE_BENCH_DIR (state.dir;
 * default a new directory under /tmp, removed afterwards). */
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "core/conf.h"

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

/* The state's files on disk, sampled while the job runs. */
static off_t disk_bytes;
static int add_size(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw) {
  (void)path, (void)ftw;
  if (flag == FTW_F)
    disk_bytes += sb->st_size;
  return 0;
}

static atomic_bool sampling;
static off_t disk_max;

static void *sample_disk(void *dir) {
  while (atomic_load(&sampling)) {
    disk_bytes = 0;
    nftw(dir, add_size, 16, FTW_PHYS);
    if (disk_bytes > disk_max)
      disk_max = disk_bytes;
    usleep(200 * 1000);
  }
  return NULL;
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
    fprintf(stderr, "error=events_lost: processed %llu of %llu\n",
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
  pthread_t sampler;
  atomic_store(&sampling, true);
  if (pthread_create(&sampler, NULL, sample_disk, dir)) {
    fprintf(stderr, "large_state: cannot start the sampling thread\n");
    return 1;
  }
  double eps = run(n_keys, events, memory, dir);
  double peak = status_mb("VmHWM:");
  atomic_store(&sampling, false);
  pthread_join(sampler, NULL);
  char err[128];
  sl_conf_t *c = sl_conf_new();
  if (sl_conf_set(c, "state.rocksdb.memory", memory, err, sizeof(err))) {
    fprintf(stderr, "large_state: %s\n", err);
    return 2;
  }
  double budget_mb =
      (double)sl__conf_int(c, "state.rocksdb.memory") / (1024 * 1024);
  sl_conf_destroy(c);
  double disk_mb = (double)disk_max / (1024 * 1024);
  printf("bench=large_state keys=%llu events=%llu backend=rocksdb p=1 "
         "events_per_sec=%.0f baseline_1e5_keys_events_per_sec=%.0f "
         "budget_mb=%.0f state_disk_max_mb=%.0f rss_before_mb=%.0f "
         "peak_rss_mb=%.0f ratio=%.3f\n",
         (unsigned long long)n_keys, (unsigned long long)events, eps, base,
         budget_mb, disk_mb, rss0, peak, peak / budget_mb);
  if (!user_dir)
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  if (disk_mb < budget_mb) {
    fprintf(stderr,
            "error=state_fits_in_budget: the state's files reached %.0f MiB, "
            "less than the %.0f MiB budget: the peak RSS says nothing about "
            "state larger than memory; use more keys\n",
            disk_mb, budget_mb);
    return 1;
  }
  return 0;
}
