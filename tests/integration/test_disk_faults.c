/* SPDX-License-Identifier: Apache-2.0 */
/* Disk faults around checkpoints, injected at the fault points of
 * core/fault.h: no space and I/O errors while a checkpoint's files are
 * written, while RocksDB flushes for a snapshot and while a checkpoint is
 * read for restore; a checkpoint directory that cannot be created or
 * disappears mid-run; a crash while _metadata is written. Each time: the
 * checkpoint is declined (within checkpoint.tolerable.failures) and the
 * job goes on, or it fails with a clear error; no partial checkpoint is
 * ever restored; and a restored run's result equals an uninterrupted
 * one's (the keyed sums of test_checkpoint.c). */
#include <dirent.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "core/fault.h"
#include "testutil.h"

#define KEYS 31
#define N 60000

typedef struct run {
  const char *backend;
  const char *dir;
  const char *restore;   /* restore.from, or NULL */
  const char *tolerable; /* checkpoint.tolerable.failures, or NULL */
  const char *interval;  /* checkpoint.interval.ms, or NULL: none */
  uint64_t stop_after;   /* sl_job_stop() after this many records */
  uint64_t ckpt_at;      /* sl_job_checkpoint() after this many records */
  uint64_t rmdir_at;     /* remove checkpoint.dir after this many */
  bool slow;             /* throttle the source */
  bool stopped;
  int64_t sum[KEYS], cnt[KEYS];
  int outputs;
  sl_job_t *job;
  _Atomic uint64_t seen;
  sl_checkpoint_info_t info;
  char errmsg[1024];
} run;

static int gen_fn(uint64_t i, sl_record_t *out, void *opaque) {
  run *r = opaque;
  static __thread char key[8];
  static __thread uint64_t val;
  if (r->slow && i % 20 == 0) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  snprintf(key, sizeof(key), "k%02d", (int)(i % KEYS));
  val = i;
  *out = (sl_record_t){.key = key,
                       .key_len = strlen(key),
                       .value = &val,
                       .value_len = sizeof(val),
                       .ts = (int64_t)i};
  return 0;
}

typedef struct acc {
  int64_t sum, cnt;
} acc;

static int sum_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_desc_t d = {.name = "acc", .kind = SL_STATE_VALUE};
  sl_state_t *st = sl_state_register(ctx, &d);
  if (!st)
    return SL_ERR_STATE;
  sl_ctx_set_local(ctx, st);
  return 0;
}

static void rmrf(const char *d) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
  ck_assert_int_eq(system(cmd), 0);
}

static int sum_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  run *r = opaque;
  bool created;
  acc *a = sl_value_ptr(ctx, sl_ctx_local(ctx), sizeof(acc), &created);
  if (!a)
    return SL_ERR_NOMEM;
  uint64_t v;
  memcpy(&v, rec->value, sizeof(v));
  a->sum += (int64_t)v;
  a->cnt++;
  if (created)
    sl_timer_set(ctx, SL_EVENT_TIME, SL_TS_MAX - 1);
  uint64_t seen = atomic_fetch_add(&r->seen, 1) + 1;
  if (r->ckpt_at && seen == r->ckpt_at)
    sl_job_checkpoint(r->job);
  if (r->rmdir_at && seen == r->rmdir_at) {
    sl_checkpoint_info_t i;
    while (sl_job_checkpoint_info(r->job, &i) == SL_OK && i.id < 1)
      usleep(1000); /* checkpoint 1 is written by the coordinator */
    rmrf(r->dir);
  }
  /* The stop waits for the checkpoint asked for at ckpt_at to end, so the
   * fault meets that one, not the final checkpoint. */
  sl_checkpoint_info_t i;
  if (r->stop_after && seen >= r->stop_after && !r->stopped &&
      (!r->ckpt_at || (sl_job_checkpoint_info(r->job, &i) == SL_OK &&
                       i.completed + i.failed))) {
    r->stopped = true;
    sl_job_stop(r->job);
  }
  return 0;
}

static int sum_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts,
                     void *opaque) {
  (void)d, (void)ts;
  run *r = opaque;
  const void *key, *v;
  size_t kl, len;
  sl_ctx_key(ctx, &key, &kl);
  if (sl_value_get(ctx, sl_ctx_local(ctx), &v, &len) != 1 || len != sizeof(acc))
    return SL_ERR_STATE;
  const acc *a = v;
  int k = (int)tu_num((const char *)key + 1, kl - 1);
  if (k < 0 || k >= KEYS)
    return SL_ERR_STATE;
  r->sum[k] += a->sum; /* P = 1: one thread */
  r->cnt[k] += a->cnt;
  r->outputs++;
  return 0;
}

static int run_job(run *r) {
  char state_dir[512];
  snprintf(state_dir, sizeof(state_dir), "%s.state", r->dir);
  const char *kv[24];
  int n = 0;
  kv[n++] = "checkpoint.dir";
  kv[n++] = r->dir;
  kv[n++] = "checkpoint.interval.ms";
  kv[n++] = r->interval ? r->interval : "0";
  kv[n++] = "checkpoint.min.pause.ms";
  kv[n++] = "0";
  kv[n++] = "state.backend";
  kv[n++] = r->backend;
  kv[n++] = "state.dir";
  kv[n++] = state_dir;
  kv[n++] = "log.level";
  kv[n++] = getenv("TEST_LOG") ? getenv("TEST_LOG") : "error";
  if (r->restore) {
    kv[n++] = "restore.from";
    kv[n++] = r->restore;
  }
  if (r->tolerable) {
    kv[n++] = "checkpoint.tolerable.failures";
    kv[n++] = r->tolerable;
  }
  kv[n] = NULL;
  sl_job_t *job = tu_job_kv(1, kv);
  r->job = job;
  sl_generator_opts_t go = {.count = N, .gen = gen_fn, .opaque = r};
  sl_stream_t *s = sl_source_generator(job, "gen", &go);
  s = sl_key_by(s, NULL, NULL);
  sl_process_ops_t ops = {
      .open = sum_open, .on_element = sum_element, .on_timer = sum_timer};
  s = sl_process(s, "sum", &ops, r);
  sl_sink(s, "sink", tu_discard, NULL);
  int rc = sl_job_run(job);
  sl_job_checkpoint_info(job, &r->info);
  snprintf(r->errmsg, sizeof(r->errmsg), "%s", sl_job_errmsg(job));
  sl_job_destroy(job);
  r->job = NULL;
  return rc;
}

static void expect_complete(const run *r) {
  ck_assert_int_eq(r->outputs, KEYS);
  for (int k = 0; k < KEYS; k++) {
    int64_t sum = 0, cnt = 0;
    for (uint64_t i = (uint64_t)k; i < N; i += KEYS) {
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
  char *d = strdup("/tmp/sluice-diskfault-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(d));
  return d;
}

static void cleanup(char *dir) {
  char state[512];
  snprintf(state, sizeof(state), "%s.state", dir);
  rmrf(dir);
  rmrf(state);
  free(dir);
  ck_assert_int_eq(sl__fault_set(NULL), 0);
}

/* The chk-<id> directories of dir, as "1,2," (ascending), with a '*' after
 * the id of one that has _metadata. */
static void list_chk(const char *dir, char *out, size_t cap) {
  out[0] = 0;
  for (int id = 1; id < 64; id++) {
    char p[600];
    struct stat st;
    snprintf(p, sizeof(p), "%s/chk-%d", dir, id);
    if (stat(p, &st))
      continue;
    strncat(p, "/_metadata", sizeof(p) - strlen(p) - 1);
    size_t l = strlen(out);
    snprintf(out + l, cap - l, "%d%s,", id, stat(p, &st) ? "" : "*");
  }
}

/* Run 1 takes checkpoint 1 on demand (under fault), then stops (final
 * checkpoint 2); run 2 restores the newest checkpoint and finishes. */
static void declined_then_restored(const char *backend, const char *fault,
                                   uint64_t want_failed, const char *want_chk,
                                   uint64_t want_restored) {
  char *dir = tmpdir(), chk[256];
  ck_assert_int_eq(sl__fault_set(fault), 0);
  run a = {.backend = backend,
           .dir = dir,
           .tolerable = "1",
           .ckpt_at = N / 4,
           .stop_after = N / 2,
           .slow = true};
  ck_assert_msg(run_job(&a) == SL_OK, "%s", a.errmsg);
  ck_assert_int_eq(sl__fault_set(NULL), 0);
  ck_assert_uint_eq(a.info.failed, want_failed);
  ck_assert_uint_eq(a.info.id, 2);
  list_chk(dir, chk, sizeof(chk));
  ck_assert_str_eq(chk, want_chk); /* the declined one left nothing */
  run b = {.backend = backend, .dir = dir, .restore = "latest"};
  ck_assert_msg(run_job(&b) == SL_OK, "%s", b.errmsg);
  ck_assert_uint_eq(b.info.restored_from, want_restored);
  expect_complete(&b);
  cleanup(dir);
}

/* No space while the worker file is written (half of it reached the
 * disk): checkpoint 1 is declined and removed, the job goes on, the final
 * checkpoint restores. */
START_TEST(no_space_writing_a_snapshot_declines_it) {
  declined_then_restored("hashmap", "checkpoint.write:ENOSPC", 1, "2*,", 2);
}
END_TEST

/* An I/O error on _metadata's temporary file, then on its rename. */
START_TEST(io_error_writing_metadata_declines_it) {
  declined_then_restored("hashmap", "checkpoint.write:EIO:2", 1, "2*,", 2);
  declined_then_restored("rocksdb", "checkpoint.metadata:EIO", 1, "2*,", 2);
}
END_TEST

/* RocksDB cannot flush its memtables for the snapshot: the checkpoint is
 * declined, and since RocksDB takes no more writes after a failed flush
 * (its background error), the job fails at the next state access, naming
 * the worker, state.dir and the flush. The restart starts over cleanly
 * (no checkpoint was completed) and finishes exactly. */
START_TEST(rocksdb_flush_error_fails_the_job_clearly) {
  char *dir = tmpdir(), chk[256];
  ck_assert_int_eq(sl__fault_set("rocksdb.flush:EIO"), 0);
  run a = {.backend = "rocksdb",
           .dir = dir,
           .tolerable = "1",
           .ckpt_at = N / 4,
           .slow = true};
  ck_assert_int_eq(run_job(&a), SL_ERR_IO);
  ck_assert_msg(strstr(a.errmsg, "RocksDB state of worker 0") &&
                    strstr(a.errmsg, "flush failed: Input/output error"),
                "%s", a.errmsg);
  ck_assert_uint_eq(a.info.failed, 1);
  ck_assert_int_eq(sl__fault_set(NULL), 0);
  list_chk(dir, chk, sizeof(chk));
  ck_assert_str_eq(chk, "");
  run b = {.backend = "rocksdb", .dir = dir, .restore = "latest"};
  ck_assert_msg(run_job(&b) == SL_OK, "%s", b.errmsg);
  ck_assert_uint_eq(b.info.restored_from, 0);
  expect_complete(&b);
  cleanup(dir);
}
END_TEST

/* _COMMITTED cannot be written: the checkpoint is complete all the same
 * (without an exactly-once sink the mark is not needed to restore it).
 * Checkpoint 1 writes w0.snap, its keyed-state segment, _metadata, then
 * _COMMITTED: the fourth write. */
START_TEST(committed_mark_write_error_is_a_warning) {
  declined_then_restored("hashmap", "checkpoint.write:ENOSPC:4", 0, "1*,2*,",
                         2);
}
END_TEST

/* Every write fails and no failure is tolerated: the job fails at its
 * first checkpoint, saying which file and why, and leaves no checkpoint. */
START_TEST(failures_beyond_tolerable_fail_the_job_clearly) {
  char *dir = tmpdir(), chk[256];
  ck_assert_int_eq(sl__fault_set("checkpoint.write:ENOSPC:1:*"), 0);
  run a = {.backend = "hashmap", .dir = dir, .ckpt_at = N / 4};
  ck_assert_int_eq(run_job(&a), SL_ERR_IO);
  ck_assert_msg(strstr(a.errmsg, "w0.snap: No space left on device") &&
                    strstr(a.errmsg, "checkpoint.tolerable.failures=0"),
                "%s", a.errmsg);
  ck_assert_int_eq(sl__fault_set(NULL), 0);
  list_chk(dir, chk, sizeof(chk));
  ck_assert_str_eq(chk, "");
  cleanup(dir);
}
END_TEST

/* A checkpoint directory that cannot be created (read-only file system,
 * permissions) counts as a failed checkpoint like any other: within
 * checkpoint.tolerable.failures the job goes on, one more fails it. */
START_TEST(uncreatable_checkpoint_dir_counts_as_a_failure) {
  char *dir = tmpdir();
  ck_assert_int_eq(sl__fault_set("checkpoint.mkdir:EROFS:1:*"), 0);
  run a = {.backend = "hashmap",
           .dir = dir,
           .interval = "5",
           .tolerable = "3",
           .slow = true};
  ck_assert_int_eq(run_job(&a), SL_ERR_IO);
  ck_assert_msg(strstr(a.errmsg, "cannot create") &&
                    strstr(a.errmsg, "Read-only file system") &&
                    strstr(a.errmsg, "4 consecutive failures exceed "
                                     "checkpoint.tolerable.failures=3"),
                "%s", a.errmsg);
  ck_assert_uint_eq(a.info.failed, 4);
  ck_assert_uint_lt(atomic_load(&a.seen), N);
  cleanup(dir);
}
END_TEST

/* Two failures, then the directory is writable again: the job goes on,
 * its final checkpoint restores. */
START_TEST(checkpoint_dir_writable_again_goes_on) {
  declined_then_restored("hashmap", "checkpoint.mkdir:EACCES:1:1", 1, "2*,", 2);
}
END_TEST

/* The checkpoint directory is removed while the job runs (after
 * checkpoint 1): the next checkpoints create it again, and the final one
 * restores. */
START_TEST(checkpoint_dir_removed_mid_run) {
  char *dir = tmpdir(), chk[256];
  run a = {.backend = "rocksdb",
           .dir = dir,
           .ckpt_at = N / 8,
           .rmdir_at = N / 4,
           .stop_after = N / 2,
           .slow = true};
  ck_assert_msg(run_job(&a) == SL_OK, "%s", a.errmsg);
  ck_assert_uint_eq(a.info.failed, 0);
  list_chk(dir, chk, sizeof(chk));
  ck_assert_str_eq(chk, "2*,");
  run b = {.backend = "rocksdb", .dir = dir, .restore = "latest"};
  ck_assert_msg(run_job(&b) == SL_OK, "%s", b.errmsg);
  ck_assert_uint_eq(b.info.restored_from, 2);
  expect_complete(&b);
  cleanup(dir);
}
END_TEST

/* Reading the newest checkpoint fails: it is skipped for the previous
 * one; when no checkpoint can be read the job fails rather than start
 * empty. */
START_TEST(io_error_while_restoring) {
  for (int b = 0; b < 2; b++) {
    const char *backend = b ? "rocksdb" : "hashmap";
    char *dir = tmpdir();
    run a = {.backend = backend,
             .dir = dir,
             .ckpt_at = N / 4,
             .stop_after = N / 2,
             .slow = true};
    ck_assert_msg(run_job(&a) == SL_OK, "%s", a.errmsg);
    ck_assert_uint_eq(a.info.id, 2);
    ck_assert_int_eq(sl__fault_set("restore.read:EIO:1:*"), 0);
    run none = {.backend = backend, .dir = dir, .restore = "latest"};
    ck_assert_int_eq(run_job(&none), SL_ERR_CORRUPT);
    ck_assert_msg(strstr(none.errmsg, "none of the 2 complete checkpoints"),
                  "%s", none.errmsg);
    ck_assert_int_eq(none.outputs, 0);
    ck_assert_int_eq(sl__fault_set("restore.read:EIO"), 0);
    run older = {.backend = backend, .dir = dir, .restore = "latest"};
    ck_assert_msg(run_job(&older) == SL_OK, "%s", older.errmsg);
    ck_assert_uint_eq(older.info.restored_from, 1);
    expect_complete(&older);
    cleanup(dir);
  }
}
END_TEST

/* A crash while _metadata is written (its temporary file is there, the
 * rename is not done), and a crash while restoring: the partial
 * checkpoint is never restored, the run after it finishes exactly. */
START_TEST(crash_writing_metadata_or_restoring) {
  char *dir = tmpdir(), chk[256];
  const char *faults[] = {"checkpoint.metadata:kill:2", "restore:kill"};
  for (int i = 0; i < 2; i++) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      sl__fault_set(faults[i]);
      run r = {.backend = "hashmap",
               .dir = dir,
               .restore = "latest",
               .ckpt_at = N / 4,
               .stop_after = N / 2,
               .slow = true};
      run_job(&r);
      _exit(3); /* not killed: the fault point was not reached */
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "run %d: status %d", i, status);
    list_chk(dir, chk, sizeof(chk));
    ck_assert_str_eq(chk, "1*,2,"); /* 2: w0.snap, _metadata.tmp */
  }
  run b = {.backend = "hashmap", .dir = dir, .restore = "latest"};
  ck_assert_msg(run_job(&b) == SL_OK, "%s", b.errmsg);
  ck_assert_uint_eq(b.info.restored_from, 1);
  expect_complete(&b);
  cleanup(dir);
}
END_TEST

/* TEST_ONLY=name runs one test. */
#define ADD(tc, t)                                                             \
  do {                                                                         \
    const char *only = getenv("TEST_ONLY");                                    \
    if (!only || strcmp(only, #t) == 0)                                        \
      tcase_add_test(tc, t);                                                   \
  } while (0)

static Suite *suite(void) {
  Suite *s = suite_create("disk_faults");
  TCase *tc = tcase_create("disk");
  tcase_set_timeout(tc, 300);
  /* First: it forks, and a fork of a process whose RocksDB already runs
   * background threads inherits a pool without threads. */
  ADD(tc, crash_writing_metadata_or_restoring);
  ADD(tc, no_space_writing_a_snapshot_declines_it);
  ADD(tc, io_error_writing_metadata_declines_it);
  ADD(tc, rocksdb_flush_error_fails_the_job_clearly);
  ADD(tc, committed_mark_write_error_is_a_warning);
  ADD(tc, failures_beyond_tolerable_fail_the_job_clearly);
  ADD(tc, uncreatable_checkpoint_dir_counts_as_a_failure);
  ADD(tc, checkpoint_dir_writable_again_goes_on);
  ADD(tc, checkpoint_dir_removed_mid_run);
  ADD(tc, io_error_while_restoring);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
