/* SPDX-License-Identifier: Apache-2.0 */
/* Revivals in one process, without a broker: a group-mode job whose run
 * is failed as fenced (sl__job_fail_fenced, as the Kafka layer does when
 * the group took its partitions) starts over in a new instance directory
 * (docs/scaling.md). What the user sees across that: the last completed
 * checkpoint's path, sl_job_checkpoint() while the coordinator moves, and
 * a stop that arrives as a fence ends the run. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "runtime/group.h"
#include "runtime/runtime.h"
#include "testutil.h"

#define WAIT_MS 60000

typedef struct rv {
  sl_job_t *job;
  _Atomic int fence;    /* the next record fails the run as fenced */
  _Atomic int stop_too; /* and sl_job_stop() follows the fence at once */
  _Atomic int run_rc;
  _Atomic int done;
  pthread_t thread;
  char dir[256];
} rv;

static void nap_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* An endless input, throttled (the machine is shared); a record asked to
 * fence the run fails it as the Kafka source does. */
static int gen(uint64_t i, sl_record_t *out, void *opaque) {
  rv *r = opaque;
  static __thread uint64_t val;
  if (i % 32 == 0)
    nap_ms(1);
  if (atomic_exchange(&r->fence, 0)) {
    int rc = sl__job_fail_fenced(r->job, SL_ERR_KAFKA,
                                 "job \"test\": fenced: the group moved "
                                 "this process's partitions");
    if (atomic_load(&r->stop_too))
      sl_job_stop(r->job);
    return rc;
  }
  val = i;
  out->key = "k";
  out->key_len = 1;
  out->value = &val;
  out->value_len = sizeof(val);
  out->ts = (int64_t)i;
  return 0;
}

static void *run_thread(void *arg) {
  rv *r = arg;
  atomic_store(&r->run_rc, sl_job_run(r->job));
  atomic_store(&r->done, 1);
  return NULL;
}

/* Starts generator -> sink in group mode with checkpoints only on demand
 * (the interval is an hour), revive_max revivals allowed. */
static void start(rv *r, const char *revive_max) {
  memset(r, 0, sizeof(*r));
  snprintf(r->dir, sizeof(r->dir), "/tmp/sl-revive-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(r->dir));
  const char *kv[] = {"group.mode",
                      "copartitioned",
                      "group.partitions",
                      "2",
                      "group.revive.max",
                      revive_max,
                      "checkpoint.dir",
                      r->dir,
                      "checkpoint.interval.ms",
                      "3600000",
                      "checkpoint.min.pause.ms",
                      "0",
                      "log.level",
                      "error",
                      NULL};
  r->job = tu_job_kv(1, kv);
  sl_generator_opts_t go = {.count = 0, .gen = gen, .opaque = r};
  sl_stream_t *s = sl_source_generator(r->job, "gen", &go);
  ck_assert_int_eq(sl_sink(s, "sink", tu_discard, NULL), SL_OK);
  ck_assert_int_eq(pthread_create(&r->thread, NULL, run_thread, r), 0);
}

static int finish(rv *r) {
  sl_job_stop(r->job);
  pthread_join(r->thread, NULL);
  int rc = atomic_load(&r->run_rc);
  sl_job_destroy(r->job);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
  ck_assert_int_eq(system(cmd), 0);
  return rc;
}

static uint64_t revivals(rv *r) {
  return atomic_load(&r->job->grp.revivals);
}

/* Waits until cond(r) holds; fails the test after WAIT_MS. */
#define WAIT_FOR(cond, what)                                                   \
  do {                                                                         \
    int waited_ = 0;                                                           \
    while (!(cond)) {                                                          \
      ck_assert_msg(waited_ < WAIT_MS, "timed out waiting for %s", what);      \
      nap_ms(5);                                                               \
      waited_ += 5;                                                            \
    }                                                                          \
  } while (0)

static uint64_t completed(rv *r) {
  sl_checkpoint_info_t ci;
  sl_job_checkpoint_info(r->job, &ci);
  return ci.completed;
}

/* Asks for a checkpoint and waits until one more completed. */
static void checkpoint(rv *r) {
  uint64_t before = completed(r);
  WAIT_FOR(atomic_load(&r->done) || sl_job_checkpoint(r->job) == SL_OK,
           "the job to run");
  WAIT_FOR(atomic_load(&r->done) || completed(r) > before,
           "a checkpoint to complete");
  ck_assert_msg(!atomic_load(&r->done), "job ended: %s", sl_job_errmsg(r->job));
}

static bool is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* After a revival, sl_job_checkpoint_info() names the last completed
 * checkpoint where it is: in the instance directory of the run that
 * ended, until the new run completes one in its own. */
START_TEST(info_names_the_last_checkpoint_after_a_revival) {
  rv r;
  start(&r, "3");
  checkpoint(&r);
  sl_checkpoint_info_t before;
  sl_job_checkpoint_info(r.job, &before);
  ck_assert_msg(is_dir(before.path), "%s", before.path);

  atomic_store(&r.fence, 1);
  WAIT_FOR(revivals(&r) == 1 || atomic_load(&r.done), "a revival");
  ck_assert_uint_eq(revivals(&r), 1);
  sl_checkpoint_info_t after;
  sl_job_checkpoint_info(r.job, &after);
  ck_assert_uint_eq(after.id, before.id);
  ck_assert_str_eq(after.path, before.path);
  ck_assert_msg(is_dir(after.path), "%s", after.path);

  /* The new run's first checkpoint is in its own instance directory. */
  checkpoint(&r);
  sl_checkpoint_info_t next;
  sl_job_checkpoint_info(r.job, &next);
  ck_assert_uint_gt(next.id, before.id);
  ck_assert_msg(is_dir(next.path), "%s", next.path);
  const char *slash = strrchr(before.path, '/');
  ck_assert_ptr_nonnull(slash);
  ck_assert_msg(
      strncmp(next.path, before.path, (size_t)(slash - before.path) + 1) != 0,
      "%s is in the directory of %s", next.path, before.path);
  ck_assert_int_eq(finish(&r), SL_OK);
}
END_TEST

typedef struct hammer {
  rv *r;
  _Atomic int quit;
  uint64_t calls, refused;
  int last_rc;
} hammer;

static void *hammer_main(void *arg) {
  hammer *h = arg;
  while (!atomic_load(&h->quit)) {
    int rc = sl_job_checkpoint(h->r->job);
    h->calls++;
    if (rc != SL_OK) {
      h->refused++;
      h->last_rc = rc;
    }
    nap_ms(1);
  }
  return NULL;
}

/* sl_job_checkpoint() from another thread while revivals move the
 * coordinator to new instance directories: every call is accepted (the
 * job runs throughout), and under ThreadSanitizer without a race. */
START_TEST(checkpoint_calls_during_revivals) {
  rv r;
  start(&r, "20");
  checkpoint(&r);
  hammer h = {.r = &r};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, hammer_main, &h), 0);
  for (uint64_t n = 1; n <= 8; n++) {
    atomic_store(&r.fence, 1);
    WAIT_FOR(revivals(&r) == n || atomic_load(&r.done), "a revival");
    ck_assert_uint_eq(revivals(&r), n);
    nap_ms(10);
  }
  atomic_store(&h.quit, 1);
  pthread_join(t, NULL);
  ck_assert_uint_gt(h.calls, 0);
  ck_assert_msg(h.refused == 0, "%llu of %llu calls refused (last: %s)",
                (unsigned long long)h.refused, (unsigned long long)h.calls,
                sl_strerror(h.last_rc));
  ck_assert_int_eq(finish(&r), SL_OK);
}
END_TEST

/* A stop that arrives while a fence ends the run ends the job as a stop:
 * sl_job_run() returns what it returns for a stop, with no error
 * message, and no revival starts; after a checkpoint (_i 0) or before
 * any (_i 1). */
START_TEST(stop_during_a_fence_is_a_stop) {
  rv r;
  start(&r, "3");
  if (_i == 0)
    checkpoint(&r);
  atomic_store(&r.stop_too, 1);
  atomic_store(&r.fence, 1);
  WAIT_FOR(atomic_load(&r.done), "the job to end");
  ck_assert_uint_eq(revivals(&r), 0);
  ck_assert_str_eq(sl_job_errmsg(r.job), "");
  ck_assert_int_eq(finish(&r), SL_OK);
}
END_TEST

/* Without a stop the same fence is survived (the test's own check that
 * it fences as the Kafka layer does), and beyond group.revive.max it
 * fails the job with the fence. */
START_TEST(fence_without_stop_revives_then_fails) {
  rv r;
  start(&r, "1");
  atomic_store(&r.fence, 1);
  WAIT_FOR(revivals(&r) == 1 || atomic_load(&r.done), "a revival");
  ck_assert_uint_eq(revivals(&r), 1);
  atomic_store(&r.fence, 1);
  WAIT_FOR(atomic_load(&r.done), "the job to end");
  ck_assert_uint_eq(revivals(&r), 1);
  ck_assert_msg(strstr(sl_job_errmsg(r.job), "fenced: "), "%s",
                sl_job_errmsg(r.job));
  ck_assert_int_eq(finish(&r), SL_ERR_KAFKA);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("revive");
  TCase *tc = tcase_create("revive");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, info_names_the_last_checkpoint_after_a_revival);
  tcase_add_test(tc, checkpoint_calls_during_revivals);
  tcase_add_loop_test(tc, stop_during_a_fence_is_a_stop, 0, 2);
  tcase_add_test(tc, fence_without_stop_revives_then_fails);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
