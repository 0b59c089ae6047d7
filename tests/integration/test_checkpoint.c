/* SPDX-License-Identifier: Apache-2.0 */
/* Checkpoints end to end: a keyed sum over a deterministic input, stopped
 * and restored (also with another parallelism), killed with SIGKILL at
 * random points many times, and restored from damaged checkpoints; the
 * final result must equal an uninterrupted run's (state exactly-once). */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "testutil.h"

#define KEYS 97

/* Every suite runs on every state backend (tcase_add_loop_test). */
static const char *const backends[] = {"hashmap", "rocksdb"};
#define N_BACKENDS ((int)(sizeof(backends) / sizeof(backends[0])))

/* ---- The job ------------------------------------------------------------ */

typedef struct run {
  const char *backend;
  int par;
  const char *dir;
  const char *restore; /* restore.from, or NULL */
  int64_t interval_ms;
  uint64_t n;          /* records */
  uint64_t stop_after; /* sl_job_stop() after this many sums (0: never) */
  uint64_t ckpt_at;    /* sl_job_checkpoint() after this many sums */
  int ckpt_rc;
  bool slow;       /* throttle the source (crash test children) */
  const char *uid; /* of the keyed operator */
  const char *max_par;
  const char *allow_drop;
  bool long_keys; /* keys of 8 and 16 bytes instead of 3 */
  /* Results: the final sum and count per key, from the end-of-input
   * timer. */
  pthread_mutex_t lock;
  int64_t sum[KEYS], cnt[KEYS];
  int outputs;
  const char *out_file; /* also append results here (crash test) */
  sl_job_t *job;
  _Atomic uint64_t seen;
  sl_checkpoint_info_t info;
} run;

static int gen_fn(uint64_t i, sl_record_t *out, void *opaque) {
  run *r = opaque;
  static __thread char key[8];
  static __thread uint64_t val;
  if (r->slow && i % 40 == 0) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  static __thread char lkey[17];
  snprintf(key, sizeof(key), "k%02d", (int)(i % KEYS));
  val = i;
  out->key = key;
  if (r->long_keys) { /* even keys 8 bytes, odd ones 16 */
    int k = (int)(i % KEYS);
    snprintf(lkey, sizeof(lkey), k % 2 ? "k%015d" : "k%07d", k);
    out->key = lkey;
  }
  out->key_len = strlen(out->key);
  out->value = &val;
  out->value_len = sizeof(val);
  out->ts = (int64_t)i;
  return 0;
}

typedef struct acc {
  int64_t sum, cnt;
} acc;

static sl_state_t *state_of(sl_ctx_t *ctx) {
  return sl_ctx_local(ctx);
}

static int sum_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_desc_t d = {.name = "acc", .kind = SL_STATE_VALUE};
  sl_state_t *st = sl_state_register(ctx, &d);
  if (!st)
    return SL_ERR_STATE;
  sl_ctx_set_local(ctx, st);
  return 0;
}

static int sum_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  run *r = opaque;
  bool created;
  acc *a = sl_value_ptr(ctx, state_of(ctx), sizeof(acc), &created);
  if (!a)
    return SL_ERR_NOMEM;
  uint64_t v;
  memcpy(&v, rec->value, sizeof(v));
  a->sum += (int64_t)v;
  a->cnt++;
  if (created)
    sl_timer_set(ctx, SL_EVENT_TIME, SL_TS_MAX - 1);
  uint64_t seen = atomic_fetch_add(&r->seen, 1) + 1;
  if (r->stop_after && seen == r->stop_after)
    sl_job_stop(r->job);
  if (r->ckpt_at && seen == r->ckpt_at)
    r->ckpt_rc = sl_job_checkpoint(r->job);
  return 0;
}

static int sum_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts,
                     void *opaque) {
  (void)d;
  (void)ts;
  run *r = opaque;
  const void *key;
  size_t kl;
  sl_ctx_key(ctx, &key, &kl);
  const void *v;
  size_t len;
  if (sl_value_get(ctx, state_of(ctx), &v, &len) != 1 || len != sizeof(acc))
    return SL_ERR_STATE;
  const acc *a = v;
  int k = (int)tu_num((const char *)key + 1, kl - 1);
  if (k < 0 || k >= KEYS)
    return SL_ERR_STATE;
  pthread_mutex_lock(&r->lock);
  r->sum[k] += a->sum;
  r->cnt[k] += a->cnt;
  r->outputs++;
  if (r->out_file) {
    FILE *f = fopen(r->out_file, "a");
    if (f) {
      fprintf(f, "%d %lld %lld\n", k, (long long)a->sum, (long long)a->cnt);
      fclose(f);
    }
  }
  pthread_mutex_unlock(&r->lock);
  return 0;
}

static int run_job(run *r) {
  char p[16], iv[32];
  snprintf(p, sizeof(p), "%d", r->par);
  snprintf(iv, sizeof(iv), "%lld", (long long)r->interval_ms);
  const char *kv[20];
  int n = 0;
  kv[n++] = "checkpoint.dir";
  kv[n++] = r->dir;
  kv[n++] = "checkpoint.interval.ms";
  kv[n++] = iv;
  kv[n++] = "log.level";
  kv[n++] = "warn";
  char state_dir[512];
  snprintf(state_dir, sizeof(state_dir), "%s/state", r->dir);
  if (r->backend) {
    kv[n++] = "state.backend";
    kv[n++] = r->backend;
    kv[n++] = "state.dir";
    kv[n++] = state_dir;
  }
  if (r->restore) {
    kv[n++] = "restore.from";
    kv[n++] = r->restore;
  }
  if (r->max_par) {
    kv[n++] = "max.parallelism";
    kv[n++] = r->max_par;
  }
  if (r->allow_drop) {
    kv[n++] = "restore.allow.dropped.state";
    kv[n++] = r->allow_drop;
  }
  kv[n] = NULL;
  sl_job_t *job = tu_job_kv(r->par, kv);
  r->job = job;
  pthread_mutex_init(&r->lock, NULL);
  sl_generator_opts_t go = {.count = r->n, .gen = gen_fn, .opaque = r};
  sl_stream_t *s = sl_source_generator(job, "gen", &go);
  s = sl_key_by(s, NULL, NULL);
  sl_process_ops_t ops = {
      .open = sum_open, .on_element = sum_element, .on_timer = sum_timer};
  s = sl_process(s, r->uid ? r->uid : "sum", &ops, r);
  sl_sink(s, "sink", tu_discard, NULL);
  int rc = sl_job_run(job);
  sl_job_checkpoint_info(job, &r->info);
  if (rc)
    fprintf(stderr, "job: %s\n", sl_job_errmsg(job));
  sl_job_destroy(job);
  r->job = NULL;
  return rc;
}

static void expect_complete(const run *r, uint64_t n) {
  for (int k = 0; k < KEYS; k++) {
    int64_t sum = 0, cnt = 0;
    for (uint64_t i = (uint64_t)k; i < n; i += KEYS) {
      sum += (int64_t)i;
      cnt++;
    }
    ck_assert_msg(r->sum[k] == sum && r->cnt[k] == cnt,
                  "key %d: sum %lld count %lld, expected %lld / %lld", k,
                  (long long)r->sum[k], (long long)r->cnt[k], (long long)sum,
                  (long long)cnt);
  }
}

static char *tmpdir(void) {
  char *d = strdup("/tmp/sluice-ckpt-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(d));
  return d;
}

static void rmrf(const char *d) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
  ck_assert_int_eq(system(cmd), 0);
}

static int count_chk(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)))
    n += strncmp(e->d_name, "chk-", 4) == 0;
  if (d)
    closedir(d);
  return n;
}

/* ---- Tests -------------------------------------------------------------- */

/* Stop half-way (final checkpoint), restore with parallelism from -> to,
 * finish: the sums are those of one uninterrupted run. */
static void stop_restore(const char *backend, int from, int to) {
  char *dir = tmpdir();
  run a = {.backend = backend,
           .par = from,
           .dir = dir,
           .n = 100000,
           .stop_after = 40000};
  ck_assert_int_eq(run_job(&a), SL_OK);
  ck_assert_int_eq(a.outputs, 0); /* a stop fires no end-of-input timer */
  ck_assert_uint_gt(a.info.id, 0);
  run b = {.backend = backend,
           .par = to,
           .dir = dir,
           .restore = "latest",
           .n = 100000};
  ck_assert_int_eq(run_job(&b), SL_OK);
  ck_assert_uint_eq(b.info.restored_from, a.info.id);
  /* Every key's timer came back with its state. */
  ck_assert_int_eq(b.outputs, KEYS);
  expect_complete(&b, 100000);
  /* Only records after the checkpoint were read again. */
  ck_assert_uint_lt(atomic_load(&b.seen), 100000 - 40000 + 1);
  rmrf(dir);
  free(dir);
}

/* Two hashmap runs leave a checkpoint whose keyed state is a chain of
 * segments (a base, then changes, the base shared with the checkpoint
 * before); a run on either backend, at another parallelism, restores it
 * and finishes as one uninterrupted run would. */
START_TEST(chain_restores_into_either_backend) {
  char *dir = tmpdir();
  run a = {.backend = "hashmap",
           .par = 2,
           .dir = dir,
           .n = 100000,
           .stop_after = 30000};
  ck_assert_int_eq(run_job(&a), SL_OK);
  run a2 = {.backend = "hashmap",
            .par = 2,
            .dir = dir,
            .restore = "latest",
            .n = 100000,
            .stop_after = 30000};
  ck_assert_int_eq(run_job(&a2), SL_OK);
  ck_assert_uint_eq(a2.info.restored_from, a.info.id);
  ck_assert_uint_lt(a2.info.bytes_new, a2.info.bytes);
  run b = {.backend = backends[_i],
           .par = 1,
           .dir = dir,
           .restore = "latest",
           .n = 100000};
  ck_assert_int_eq(run_job(&b), SL_OK);
  ck_assert_uint_eq(b.info.restored_from, a2.info.id);
  expect_complete(&b, 100000);
  rmrf(dir);
  free(dir);
}
END_TEST

START_TEST(stop_and_restore_same_parallelism) {
  stop_restore(backends[_i], 2, 2);
}
END_TEST

START_TEST(restore_with_parallelism_1_to_2) {
  stop_restore(backends[_i], 1, 2);
}
END_TEST

START_TEST(restore_with_parallelism_2_to_1) {
  stop_restore(backends[_i], 2, 1);
}
END_TEST

/* A checkpoint asked for while the job runs is taken (besides the final
 * one), without periodic checkpoints. */
START_TEST(checkpoint_on_demand) {
  char *dir = tmpdir();
  run a = {.par = 2, .dir = dir, .n = 20000, .slow = true, .ckpt_at = 2000};
  ck_assert_int_eq(run_job(&a), SL_OK);
  ck_assert_int_eq(a.ckpt_rc, SL_OK);
  ck_assert_uint_eq(a.info.completed, 2);
  expect_complete(&a, 20000);
  /* Off: refused. */
  sl_job_t *job = tu_job(1, NULL);
  ck_assert_int_eq(sl_job_checkpoint(job), SL_ERR_STATE);
  sl_job_destroy(job);
  rmrf(dir);
  free(dir);
}
END_TEST

/* Periodic checkpoints happen while the job runs; only the newest
 * checkpoint.retained (3) are kept. */
START_TEST(periodic_checkpoints_and_retention) {
  char *dir = tmpdir();
  run a = {.backend = backends[_i],
           .par = 2,
           .dir = dir,
           .n = 30000,
           .slow = true,
           .interval_ms = 20};
  ck_assert_int_eq(run_job(&a), SL_OK);
  expect_complete(&a, 30000);
  ck_assert_uint_ge(a.info.completed, 4);
  ck_assert_int_eq(count_chk(dir), 3);
  rmrf(dir);
  free(dir);
}
END_TEST

static void damage(const char *dir, uint64_t id, const char *file, int how) {
  char p[512];
  snprintf(p, sizeof(p), "%s/chk-%llu/%s", dir, (unsigned long long)id, file);
  if (how == 0) { /* flip a byte in the middle */
    int fd = open(p, O_RDWR);
    ck_assert_int_ge(fd, 0);
    struct stat st;
    fstat(fd, &st);
    unsigned char c;
    ck_assert_int_eq(pread(fd, &c, 1, st.st_size / 2), 1);
    c ^= 0x40;
    ck_assert_int_eq(pwrite(fd, &c, 1, st.st_size / 2), 1);
    close(fd);
  } else if (how == 1) { /* truncate */
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_int_eq(truncate(p, st.st_size - 7), 0);
  } else { /* remove */
    ck_assert_int_eq(unlink(p), 0);
  }
}

/* Two checkpoints; the newest is damaged in one way: restore uses the
 * previous one and the result is still exact. */
static void damaged_newest(const char *file, int how) {
  char *dir = tmpdir();
  run a = {.par = 2, .dir = dir, .n = 90000, .stop_after = 30000};
  ck_assert_int_eq(run_job(&a), SL_OK);
  run b = {.par = 2,
           .dir = dir,
           .restore = "latest",
           .n = 90000,
           .stop_after = 20000};
  ck_assert_int_eq(run_job(&b), SL_OK);
  ck_assert_uint_gt(b.info.id, a.info.id);
  damage(dir, b.info.id, file, how);
  run c = {.par = 2, .dir = dir, .restore = "latest", .n = 90000};
  ck_assert_int_eq(run_job(&c), SL_OK);
  ck_assert_uint_eq(c.info.restored_from, a.info.id);
  expect_complete(&c, 90000);
  rmrf(dir);
  free(dir);
}

START_TEST(flipped_byte_falls_back_to_previous) {
  damaged_newest("w1.snap", 0);
}
END_TEST

START_TEST(truncated_file_falls_back_to_previous) {
  damaged_newest("w0.snap", 1);
}
END_TEST

START_TEST(missing_metadata_falls_back_to_previous) {
  damaged_newest("_metadata", 2);
}
END_TEST

START_TEST(max_parallelism_mismatch_is_a_clear_error) {
  char *dir = tmpdir();
  run a = {.par = 1, .dir = dir, .n = 1000, .stop_after = 500};
  ck_assert_int_eq(run_job(&a), SL_OK);
  run b = {
      .par = 1, .dir = dir, .restore = "latest", .n = 1000, .max_par = "64"};
  ck_assert_int_eq(run_job(&b), SL_ERR_CONF);
  rmrf(dir);
  free(dir);
}
END_TEST

/* ---- One job per checkpoint.dir ---------------------------------------- */

/* A source that has nothing to read until its job is stopped, and says
 * when it first polled (the job is then past its checkpoint setup). */
typedef struct idle_src {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool polled;
} idle_src;

static int idle_poll(sl_source_ctx_t *ctx, void *opaque) {
  (void)ctx;
  idle_src *s = opaque;
  pthread_mutex_lock(&s->mu);
  s->polled = true;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return SL_POLL_EMPTY;
}

static sl_job_t *idle_job(const char *dir, idle_src *src) {
  const char *kv[] = {"checkpoint.dir", dir, "log.level", "error", NULL};
  sl_job_t *job = tu_job_kv(1, kv);
  sl_source_ops_t ops = {.poll = idle_poll};
  sl_stream_t *s = sl_source(job, "idle", &ops, src);
  ck_assert_int_eq(sl_sink(s, "sink", tu_discard, NULL), SL_OK);
  return job;
}

static void *run_thread(void *job) {
  return (void *)(intptr_t)sl_job_run(job);
}

/* Starts an idle job on dir in thread *t and returns once it runs (its
 * source polled): it then holds dir. */
static sl_job_t *start_idle_job(const char *dir, idle_src *src, pthread_t *t) {
  sl_job_t *job = idle_job(dir, src);
  ck_assert_int_eq(pthread_create(t, NULL, run_thread, job), 0);
  pthread_mutex_lock(&src->mu);
  while (!src->polled)
    pthread_cond_wait(&src->cv, &src->mu);
  pthread_mutex_unlock(&src->mu);
  return job;
}

/* A second job on a checkpoint.dir in use fails at start with a clear
 * error and writes nothing there; once the first job ended, the directory
 * is free again. Both jobs are in this process: flock conflicts between
 * separate open files of one process as between processes. */
START_TEST(checkpoint_dir_is_one_jobs_at_a_time) {
  char *dir = tmpdir();
  idle_src src = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
  pthread_t t;
  sl_job_t *a = start_idle_job(dir, &src, &t);

  run b = {.par = 2, .dir = dir, .n = 1000};
  ck_assert_int_eq(run_job(&b), SL_ERR_STATE);
  ck_assert_int_eq(b.outputs, 0);
  ck_assert_uint_eq(b.info.id, 0);

  sl_job_stop(a);
  void *rc;
  ck_assert_int_eq(pthread_join(t, &rc), 0);
  ck_assert_int_eq((int)(intptr_t)rc, SL_OK);
  sl_checkpoint_info_t ia;
  ck_assert_int_eq(sl_job_checkpoint_info(a, &ia), SL_OK);
  ck_assert_uint_eq(ia.id, 1); /* its final checkpoint, untouched by b */

  /* a has ended (not yet destroyed): the directory is free. */
  run c = {.par = 2, .dir = dir, .n = 1000};
  ck_assert_int_eq(run_job(&c), SL_OK);
  expect_complete(&c, 1000);
  ck_assert_uint_eq(c.info.id, 2);
  sl_job_destroy(a);
  rmrf(dir);
  free(dir);
}
END_TEST

/* The message names the directory and the reason. */
START_TEST(checkpoint_dir_in_use_message) {
  char *dir = tmpdir();
  idle_src src = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
  pthread_t t;
  sl_job_t *a = start_idle_job(dir, &src, &t);
  idle_src src2 = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
  sl_job_t *b = idle_job(dir, &src2);
  ck_assert_int_eq(sl_job_run(b), SL_ERR_STATE);
  char want[1024];
  snprintf(want, sizeof(want), "checkpoint.dir \"%s\" is in use", dir);
  ck_assert_msg(strstr(sl_job_errmsg(b), want), "%s", sl_job_errmsg(b));
  ck_assert_msg(!src2.polled, "the refused job ran");
  sl_job_destroy(b);
  sl_job_stop(a);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  sl_job_destroy(a);
  rmrf(dir);
  free(dir);
}
END_TEST

START_TEST(state_of_a_removed_uid_needs_permission) {
  char *dir = tmpdir();
  run a = {.par = 1, .dir = dir, .n = 100000, .stop_after = 500};
  ck_assert_int_eq(run_job(&a), SL_OK);
  run b = {
      .par = 1, .dir = dir, .restore = "latest", .n = 100000, .uid = "sum2"};
  ck_assert_int_eq(run_job(&b), SL_ERR_STATE);
  run c = {.par = 1,
           .dir = dir,
           .restore = "latest",
           .n = 100000,
           .uid = "sum2",
           .allow_drop = "true"};
  ck_assert_int_eq(run_job(&c), SL_OK);
  /* The old state was dropped: sum2 saw only the records after it. */
  ck_assert_int_eq(c.outputs, KEYS);
  rmrf(dir);
  free(dir);
}
END_TEST

/* The newest complete checkpoint's id in dir (0: none). */
static unsigned long long newest_complete(const char *dir) {
  DIR *d = opendir(dir);
  unsigned long long best = 0;
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char meta[600];
    unsigned long long id;
    if (sscanf(e->d_name, "chk-%llu", &id) != 1 || id <= best)
      continue;
    snprintf(meta, sizeof(meta), "%s/%s/_metadata", dir, e->d_name);
    if (access(meta, F_OK) == 0)
      best = id;
  }
  if (d)
    closedir(d);
  return best;
}

/* A child runs the job with checkpoints every 30 ms and is killed with
 * SIGKILL at a random point after it completed a checkpoint of its own
 * (so every round makes progress, however slow the build), 20 times,
 * alternating parallelism 1 and 2; then one run finishes the input. State
 * is exactly-once: the sums equal an uninterrupted run's. */
START_TEST(sigkill_and_restore_twenty_times) {
  char *dir = tmpdir();
  const uint64_t n = 1000000;
  srand((unsigned)time(NULL));
  for (int round = 0; round < 20; round++) {
    unsigned long long before = newest_complete(dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      run r = {.backend = backends[_i],
               .par = 1 + round % 2,
               .dir = dir,
               .restore = "latest",
               .n = n,
               .slow = true,
               .interval_ms = 30};
      int rc = run_job(&r);
      _exit(rc == SL_OK ? 3 : 4); /* reaching the end is a test failure */
    }
    int status;
    for (int waited = 0; newest_complete(dir) <= before; waited++) {
      ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0,
                    "round %d: the child ended (status %d)", round, status);
      ck_assert_msg(waited < 60000, "round %d: no checkpoint in 60 s", round);
      struct timespec ms = {0, 1000000L};
      nanosleep(&ms, NULL);
    }
    /* Anywhere from right after that checkpoint to well into the next. */
    struct timespec ts = {0, (rand() % 150) * 1000000L};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status),
                  "round %d: the child ended by itself (status %d)", round,
                  status);
  }
  run last = {.backend = backends[_i],
              .par = 2,
              .dir = dir,
              .restore = "latest",
              .n = n};
  ck_assert_int_eq(run_job(&last), SL_OK);
  ck_assert_uint_gt(last.info.restored_from, 0);
  expect_complete(&last, n);
  rmrf(dir);
  free(dir);
}
END_TEST

/* A checkpoint of format 1 (tests/integration/fixtures/ckpt_format1,
 * written at P=2 by the key hash of that format) restores at P=1 and
 * P=2 with exact state: its entries and timers are read with the old
 * hash's key groups and re-partitioned by today's, so every key's sum,
 * count and timer continue as in one uninterrupted run. */
static void restore_format_1(const char *backend, int par) {
  char *dir = tmpdir();
  char cmd[1024];
  snprintf(cmd, sizeof(cmd),
           "cp -r '%s/tests/integration/fixtures/ckpt_format1/%s/chk-1' '%s/'",
           SLUICE_SOURCE_ROOT, backend, dir);
  ck_assert_int_eq(system(cmd), 0);
  run b = {.backend = backend,
           .par = par,
           .dir = dir,
           .restore = "latest",
           .n = 100000,
           .long_keys = true};
  ck_assert_int_eq(run_job(&b), SL_OK);
  ck_assert_uint_eq(b.info.restored_from, 1);
  ck_assert_int_eq(b.outputs, KEYS);
  expect_complete(&b, 100000);
  ck_assert_uint_lt(atomic_load(&b.seen), 100000 - 40000 + 1);
  rmrf(dir);
  free(dir);
}

START_TEST(restore_format_1_p1) {
  restore_format_1(backends[_i], 1);
}
END_TEST
START_TEST(restore_format_1_p2) {
  restore_format_1(backends[_i], 2);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("checkpoint");
  TCase *tc = tcase_create("restore");
  tcase_set_timeout(tc, 300);
  /* First: its children are forked from this process, and a fork of a
   * process whose RocksDB already runs background threads (an earlier
   * test, when Check does not fork, e.g. under the sanitizers) inherits a
   * thread pool without threads, so the child's flushes never run. */
  tcase_add_loop_test(tc, sigkill_and_restore_twenty_times, 0, N_BACKENDS);
  tcase_add_loop_test(tc, stop_and_restore_same_parallelism, 0, N_BACKENDS);
  tcase_add_loop_test(tc, chain_restores_into_either_backend, 0, N_BACKENDS);
  tcase_add_loop_test(tc, restore_with_parallelism_1_to_2, 0, N_BACKENDS);
  tcase_add_loop_test(tc, restore_with_parallelism_2_to_1, 0, N_BACKENDS);
  tcase_add_loop_test(tc, periodic_checkpoints_and_retention, 0, N_BACKENDS);
  tcase_add_test(tc, checkpoint_on_demand);
  tcase_add_test(tc, flipped_byte_falls_back_to_previous);
  tcase_add_test(tc, truncated_file_falls_back_to_previous);
  tcase_add_test(tc, missing_metadata_falls_back_to_previous);
  tcase_add_test(tc, max_parallelism_mismatch_is_a_clear_error);
  tcase_add_test(tc, state_of_a_removed_uid_needs_permission);
  tcase_add_test(tc, checkpoint_dir_is_one_jobs_at_a_time);
  tcase_add_test(tc, checkpoint_dir_in_use_message);
  suite_add_tcase(s, tc);
  /* After "restore", whose first test must run before any RocksDB. */
  TCase *f1 = tcase_create("format_1");
  tcase_add_loop_test(f1, restore_format_1_p1, 0, N_BACKENDS);
  tcase_add_loop_test(f1, restore_format_1_p2, 0, N_BACKENDS);
  suite_add_tcase(s, f1);
  return s;
}

int main(void) {
  return tu_run(suite());
}
