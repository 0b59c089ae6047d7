/* SPDX-License-Identifier: Apache-2.0 */
/* The log lines a host program takes through sl_conf_set_log_cb(): a
 * fresh start, checkpoints completed (id, duration, size), a stop; then a
 * restart that restores the last checkpoint and ends with its input. Every
 * line is compared whole, with the checkpoint's figures taken from
 * sl_job_checkpoint_info(). */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check_main.h"
#include "sluice.h"
#include "testutil.h"

typedef struct logbook {
  pthread_mutex_t lock;
  char lines[64][512];
  int n;
} logbook;

static void on_log(sl_log_level level, const char *component,
                   const char *message, void *opaque) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  logbook *b = opaque;
  pthread_mutex_lock(&b->lock);
  if (b->n < 64)
    snprintf(b->lines[b->n++], 512, "%s %s: %s", names[level], component,
             message);
  pthread_mutex_unlock(&b->lock);
}

/* Emits n records (keys k0..k3), then waits (more = true) or ends. */
typedef struct feed {
  int next, n;
  bool more;
} feed;

static int feed_poll(sl_source_ctx_t *ctx, void *opaque) {
  feed *f = opaque;
  if (f->next >= f->n)
    return f->more ? SL_POLL_EMPTY : SL_POLL_END;
  char key[8];
  int kl = snprintf(key, sizeof(key), "k%d", f->next % 4);
  sl_record_t r = {key, (size_t)kl, "v", 1, f->next};
  f->next++;
  int rc = sl_source_emit(ctx, &r);
  return rc ? rc : SL_POLL_MORE;
}

static int count_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_state_desc_t d = {.name = "count", .kind = SL_STATE_VALUE};
  sl_state_t *st = sl_state_register(ctx, &d);
  sl_ctx_set_local(ctx, st);
  return st ? 0 : SL_ERR_STATE;
}

static int count_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)rec;
  (void)opaque;
  bool created;
  uint64_t *c = sl_value_ptr(ctx, sl_ctx_local(ctx), sizeof(*c), &created);
  if (!c)
    return SL_ERR_NOMEM;
  ++*c;
  return 0;
}

static sl_job_t *make_job(const char *dir, logbook *b, feed *f,
                          const char *restore, sl_clock_t *clock) {
  char err[256];
  sl_conf_t *c = sl_conf_new();
  ck_assert_ptr_nonnull(c);
  ck_assert_int_eq(sl_conf_set(c, "checkpoint.dir", dir, err, sizeof(err)),
                   SL_OK);
  ck_assert_int_eq(
      sl_conf_set(c, "checkpoint.interval.ms", "86400000", err, sizeof(err)),
      SL_OK);
  if (restore)
    ck_assert_int_eq(sl_conf_set(c, "restore.from", restore, err, sizeof(err)),
                     SL_OK);
  sl_conf_set_log_cb(c, on_log, b);
  sl_job_t *job = sl_job_new("logs", c, err, sizeof(err));
  ck_assert_msg(job != NULL, "%s", err);
  ck_assert_int_eq(sl_job_set_clock(job, clock), SL_OK);
  static const sl_source_ops_t so = {.poll = feed_poll};
  static const sl_process_ops_t po = {.open = count_open,
                                      .on_element = count_element};
  sl_stream_t *k = sl_key_by(sl_source(job, "events", &so, f), NULL, NULL);
  ck_assert_int_eq(
      sl_sink(sl_process(k, "count", &po, NULL), "sink", tu_discard, NULL),
      SL_OK);
  return job;
}

typedef struct runner {
  sl_job_t *job;
  int rc;
} runner;

static void *run(void *arg) {
  runner *r = arg;
  r->rc = sl_job_run(r->job);
  return NULL;
}

static void nap(void) {
  struct timespec ts = {0, 2 * 1000 * 1000};
  nanosleep(&ts, NULL);
}

/* Copies the lines logged so far and clears the book. */
static int take(logbook *b, char out[][512]) {
  pthread_mutex_lock(&b->lock);
  int n = b->n;
  memcpy(out, b->lines, sizeof(b->lines[0]) * (size_t)n);
  b->n = 0;
  pthread_mutex_unlock(&b->lock);
  return n;
}

static void expect(logbook *b, const char *const *want, int n_want) {
  char got[64][512];
  int n = take(b, got);
  for (int i = 0; i < n && i < n_want; i++)
    ck_assert_str_eq(got[i], want[i]);
  ck_assert_msg(n == n_want, "%d lines, want %d (last: %s)", n, n_want,
                n ? got[n - 1] : "");
}

START_TEST(test_log_lines_of_start_checkpoint_restore_and_stop) {
  char dir[] = "/tmp/sluice-logs-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  logbook b = {.n = 0};
  pthread_mutex_init(&b.lock, NULL);
  sl_clock_t *clock = sl_clock_new_manual(1000);

  /* Run 1: fresh, one checkpoint, stopped. */
  feed f1 = {.n = 100, .more = true};
  runner r = {make_job(dir, &b, &f1, NULL, clock), -1};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, run, &r), 0);
  sl_checkpoint_info_t c1, ci;
  while (sl_job_checkpoint(r.job) != SL_OK)
    nap();
  while (sl_job_checkpoint_info(r.job, &c1) != SL_OK || c1.completed < 1)
    nap();
  /* A stop takes a final checkpoint (2) before the job ends. */
  sl_job_stop(r.job);
  pthread_join(t, NULL);
  ck_assert_int_eq(r.rc, SL_OK);
  ck_assert_int_eq(sl_job_checkpoint_info(r.job, &ci), SL_OK);
  ck_assert_uint_eq(c1.id, 1);
  ck_assert_uint_eq(ci.id, 2);
  char done1[256], done2[256];
  snprintf(done1, sizeof(done1),
           "info checkpoint: checkpoint 1 completed in %lld ms, %llu bytes",
           (long long)c1.duration_ms, (unsigned long long)c1.bytes);
  snprintf(done2, sizeof(done2),
           "info checkpoint: checkpoint 2 completed in %lld ms, %llu bytes",
           (long long)ci.duration_ms, (unsigned long long)ci.bytes);
  const char *want1[] = {
      "info job: starting fresh (no checkpoint restored), parallelism 1",
      done1,
      done2,
      "info job: stopped (sl_job_stop)",
  };
  expect(&b, want1, 4);
  sl_job_destroy(r.job);

  /* Run 2: restores checkpoint 2, reads to the end of its input. */
  feed f2 = {.n = 100, .more = false};
  r = (runner){make_job(dir, &b, &f2, "latest", clock), -1};
  ck_assert_int_eq(sl_job_run(r.job), SL_OK);
  char restoring[1200], done3[256];
  snprintf(restoring, sizeof(restoring), "info checkpoint: restoring from %s",
           ci.path);
  /* The end of the input takes a final checkpoint too. */
  ck_assert_int_eq(sl_job_checkpoint_info(r.job, &ci), SL_OK);
  ck_assert_uint_eq(ci.id, 3);
  snprintf(done3, sizeof(done3),
           "info checkpoint: checkpoint 3 completed in %lld ms, %llu bytes",
           (long long)ci.duration_ms, (unsigned long long)ci.bytes);
  const char *want2[] = {
      restoring,
      "info job: starting from checkpoint 2, parallelism 1",
      done3,
      "info job: finished: every input ended",
  };
  expect(&b, want2, 4);
  sl_job_destroy(r.job);

  sl_clock_destroy(clock);
  pthread_mutex_destroy(&b.lock);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Without a callback, lines go to stderr; log.level filters both. */
START_TEST(test_log_level_filters_the_callback) {
  logbook b = {.n = 0};
  pthread_mutex_init(&b.lock, NULL);
  char err[256];
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(sl_conf_set(c, "log.level", "warn", err, sizeof(err)),
                   SL_OK);
  sl_conf_set_log_cb(c, on_log, &b);
  sl_job_t *job = sl_job_new("quiet", c, err, sizeof(err));
  feed f = {.n = 10, .more = false};
  static const sl_source_ops_t so = {.poll = feed_poll};
  ck_assert_int_eq(
      sl_sink(sl_source(job, "events", &so, &f), "sink", tu_discard, NULL),
      SL_OK);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  expect(&b, NULL, 0);
  sl_job_destroy(job);
  pthread_mutex_destroy(&b.lock);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("logs");
  TCase *tc = tcase_create("logs");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_log_lines_of_start_checkpoint_restore_and_stop);
  tcase_add_test(tc, test_log_level_filters_the_callback);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
