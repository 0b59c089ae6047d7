/* SPDX-License-Identifier: Apache-2.0 */
/* Metrics of a running job, as a user reads them: per-operator counters,
 * watermark and event-time lag (manual clock), keyed state and timers,
 * channels, the HTTP endpoint (/metrics passes promtool, /healthz
 * transitions from starting to ready to finished or unhealthy), checkpoint
 * staleness, a port in use, the JSON log line, and the Kafka and
 * dead-letter series other modules feed. */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check_main.h"
#include "checkpoint/coord.h"
#include "runtime/runtime.h"
#include "httpget.h"
#include "kafka/kafka_int.h"
#include "metrics/metrics.h"
#include "sluice.h"
#include "testutil.h"

#define START_MS 1000000

/* ---- A job fed on demand ------------------------------------------------- */

typedef struct feed {
  _Atomic uint64_t limit; /* emit records while next < limit */
  _Atomic int end;        /* then end the input */
  uint64_t next;          /* worker 0 only */
  int keys;
  char key[16];
  char value[16];
  uint64_t boom_at; /* value "boom" at this index (0 = never) */
} feed;

static int feed_poll(sl_source_ctx_t *ctx, void *opaque) {
  feed *f = opaque;
  uint64_t limit = atomic_load(&f->limit);
  if (f->next >= limit)
    return atomic_load(&f->end) ? SL_POLL_END : SL_POLL_EMPTY;
  size_t budget = sl_source_ctx_budget(ctx);
  for (size_t k = 0; k < budget && f->next < limit; k++, f->next++) {
    int kl = snprintf(f->key, sizeof(f->key), "k%d", (int)(f->next % f->keys));
    int vl = snprintf(f->value, sizeof(f->value), "%s",
                      f->boom_at && f->next == f->boom_at ? "boom" : "v");
    sl_record_t r = {f->key, (size_t)kl, f->value, (size_t)vl,
                     (int64_t)(1000 + f->next)};
    int rc = sl_source_emit(ctx, &r);
    if (rc)
      return rc;
  }
  return SL_POLL_MORE;
}

/* When set, open() waits until *gate becomes 0: a slow restore. */
static _Atomic int *open_gate;
static _Atomic int open_entered;

static int count_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  atomic_store(&open_entered, 1);
  while (open_gate && atomic_load(open_gate)) {
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  sl_state_desc_t d = {.name = "count", .kind = SL_STATE_VALUE};
  sl_state_t *st = sl_state_register(ctx, &d);
  sl_ctx_set_local(ctx, st);
  return st ? 0 : SL_ERR_STATE;
}

/* Counts per key and keeps one event-time timer per key far ahead, so that
 * pending timers equal the number of keys while the job runs. */
static int count_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  if (rec->value_len == 4 && memcmp(rec->value, "boom", 4) == 0)
    return 1;
  bool created;
  uint64_t *c = sl_value_ptr(ctx, sl_ctx_local(ctx), sizeof(*c), &created);
  if (!c)
    return SL_ERR_NOMEM;
  ++*c;
  return sl_timer_set(ctx, SL_EVENT_TIME, (int64_t)1 << 40);
}

static int count_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts,
                       void *opaque) {
  (void)ctx;
  (void)d;
  (void)ts;
  (void)opaque;
  return 0;
}

typedef struct fixture {
  sl_job_t *job;
  sl_clock_t *clock;
  feed f;
  pthread_t thread;
  int rc;
} fixture;

static void fx_build(fixture *fx, int par, const char *const *kv) {
  memset(fx, 0, sizeof(*fx));
  fx->f.keys = 10;
  fx->job = tu_job_kv(par, kv);
  fx->clock = sl_clock_new_manual(START_MS);
  ck_assert_int_eq(sl_job_set_clock(fx->job, fx->clock), SL_OK);
  static const sl_source_ops_t so = {.poll = feed_poll};
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED, .bound_ms = 0};
  sl_stream_t *src =
      sl_with_watermarks(sl_source(fx->job, "events", &so, &fx->f), &wm);
  static const sl_process_ops_t po = {
      .open = count_open, .on_element = count_element, .on_timer = count_timer};
  sl_stream_t *k = sl_key_by(src, NULL, NULL);
  ck_assert_int_eq(
      sl_sink(sl_process(k, "count", &po, NULL), "sink", tu_discard, NULL),
      SL_OK);
}

static void *fx_run(void *arg) {
  fixture *fx = arg;
  fx->rc = sl_job_run(fx->job);
  return NULL;
}

static void fx_start(fixture *fx) {
  ck_assert_int_eq(pthread_create(&fx->thread, NULL, fx_run, fx), 0);
}

static void fx_finish(fixture *fx) {
  atomic_store(&fx->f.end, 1);
  pthread_join(fx->thread, NULL);
}

static void fx_free(fixture *fx) {
  sl_job_destroy(fx->job);
  sl_clock_destroy(fx->clock);
}

static double value(sl_job_t *job, const char *name, const char *labels) {
  double v = -1;
  int rc = sl_job_metric_value(job, name, labels, &v);
  ck_assert_msg(rc == SL_OK, "%s{%s}: %s", name, labels ? labels : "",
                sl_strerror(rc));
  return v;
}

/* Polls until name{labels} == want (10 s deadline); returns the last
 * value read. */
static double await_value(sl_job_t *job, const char *name, const char *labels,
                          double want) {
  double deadline = hg_now() + 10, v = -1;
  while (hg_now() < deadline) {
    if (sl_job_metric_value(job, name, labels, &v) == SL_OK && v == want)
      return v;
    hg_nap();
  }
  return v;
}

static sl_health await_health(sl_job_t *job, sl_health want) {
  double deadline = hg_now() + 10;
  sl_health h;
  while ((h = sl_job_health(job, NULL, 0)) != want && hg_now() < deadline)
    hg_nap();
  return h;
}

/* promtool check metrics on text; 0 when it passes, -1 when promtool is
 * not installed. */
static int promtool_check(const char *text, char *out, size_t outlen) {
  if (system("command -v promtool >/dev/null 2>&1") != 0)
    return -1;
  char path[] = "/tmp/sluice-metrics-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
  FILE *p = popen(cmd, "r");
  size_t n = fread(out, 1, outlen - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  unlink(path);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

/* ---- Tests -----------------------------------------------------------------
 */

START_TEST(test_running_job_metrics_and_endpoint) {
  const char *kv[] = {"metrics.listen", "127.0.0.1:0", NULL};
  fixture fx;
  fx_build(&fx, 2, kv);
  char reason[512];
  ck_assert_int_eq(sl_job_health(fx.job, reason, sizeof(reason)),
                   SL_HEALTH_STARTING);
  ck_assert_int_eq(sl_job_metrics_port(fx.job), SL_ERR_STATE);
  atomic_store(&fx.f.limit, 1000);
  fx_start(&fx);
  ck_assert_int_eq(await_health(fx.job, SL_HEALTH_READY), SL_HEALTH_READY);
  int port = sl_job_metrics_port(fx.job);
  ck_assert_int_gt(port, 0);

  ck_assert_double_eq(await_value(fx.job, "sluice_operator_records_in_total",
                                  "operator=count", 1000),
                      1000);
  ck_assert_double_eq(value(fx.job, "sluice_operator_records_out_total",
                            "operator=events,kind=source"),
                      1000);
  /* Published by the workers about once a second. */
  ck_assert_double_eq(await_value(fx.job, "sluice_operator_state_entries",
                                  "operator=count", 10),
                      10);
  ck_assert_double_eq(await_value(fx.job, "sluice_operator_timers_pending",
                                  "operator=count,domain=event_time", 10),
                      10);
  ck_assert_double_eq(value(fx.job, "sluice_operator_timers_pending",
                            "operator=count,domain=processing_time"),
                      0);
  ck_assert_double_gt(
      value(fx.job, "sluice_operator_state_bytes", "operator=count"), 10 * 8);
  /* Bounded(0) watermark after ts 1000..1999: 1998 ms; the clock is at
   * START_MS, so event time trails it by (START_MS - 1998) ms. */
  ck_assert_double_eq(await_value(fx.job,
                                  "sluice_operator_watermark_timestamp_seconds",
                                  "operator=count,worker=1", 1.998),
                      1.998);
  ck_assert_double_eq(value(fx.job, "sluice_operator_event_time_lag_seconds",
                            "operator=count,worker=1"),
                      (START_MS - 1998) / 1000.0);
  ck_assert_double_eq(
      value(fx.job, "sluice_channel_capacity_batches",
            "from_operator=events,to_operator=count,from_worker=0,to_worker=1"),
      32);
  ck_assert_double_eq(value(fx.job, "sluice_job_parallelism", NULL), 2);
  ck_assert_double_eq(value(fx.job, "sluice_job_ready", NULL), 1);

  char *body = NULL;
  ck_assert_int_eq(hg_get(port, "/healthz", &body), 200);
  ck_assert_msg(strstr(body, "\"status\":\"ready\"") != NULL, "%s", body);
  free(body);
  ck_assert_int_eq(hg_get(port, "/metrics", &body), 200);
  ck_assert_msg(strstr(body,
                       "sluice_operator_records_in_total{operator="
                       "\"count\",kind=\"process\",worker=\"0\"}") != NULL,
                "%s", body);
  ck_assert_ptr_nonnull(strstr(body, "# TYPE sluice_operator_records_in_total "
                                     "counter\n"));
  char out[4096];
  int pc = promtool_check(body, out, sizeof(out));
  if (pc < 0)
    fprintf(stderr, "SKIP promtool check metrics: promtool is not installed "
                    "(apt-get install prometheus)\n");
  else
    ck_assert_msg(pc == 0, "promtool check metrics failed:\n%s\n---\n%s", out,
                  body);
  free(body);
  ck_assert_int_eq(hg_get(port, "/nope", NULL), 404);

  fx_finish(&fx);
  ck_assert_int_eq(fx.rc, SL_OK);
  /* Final sizes were published when the workers ended: the end of input
   * fired every timer. */
  ck_assert_double_eq(value(fx.job, "sluice_operator_timers_pending",
                            "operator=count,domain=event_time"),
                      0);
  ck_assert_int_eq(sl_job_health(fx.job, reason, sizeof(reason)),
                   SL_HEALTH_FINISHED);
  /* The endpoint serves until the job is destroyed. */
  ck_assert_int_eq(hg_get(port, "/healthz", &body), 503);
  ck_assert_msg(strstr(body, "finished") != NULL, "%s", body);
  free(body);
  fx_free(&fx);
  ck_assert_int_eq(hg_get(port, "/healthz", NULL), -1);
}
END_TEST

START_TEST(test_not_ready_until_operators_opened) {
  const char *kv[] = {"metrics.listen", "127.0.0.1:0", NULL};
  fixture fx;
  fx_build(&fx, 1, kv);
  static _Atomic int gate;
  atomic_store(&gate, 1);
  atomic_store(&open_entered, 0);
  open_gate = &gate;
  fx_start(&fx);
  double deadline = hg_now() + 10;
  while (!atomic_load(&open_entered) && hg_now() < deadline)
    hg_nap();
  ck_assert_int_eq(atomic_load(&open_entered), 1);
  /* The operator is still opening (as while restoring state). */
  char reason[512], *body = NULL;
  ck_assert_int_eq(sl_job_health(fx.job, reason, sizeof(reason)),
                   SL_HEALTH_STARTING);
  ck_assert_msg(strstr(reason, "0 of 1 workers") != NULL, "%s", reason);
  ck_assert_int_eq(hg_get(sl_job_metrics_port(fx.job), "/healthz", &body), 503);
  ck_assert_msg(strstr(body, "\"status\":\"starting\"") != NULL, "%s", body);
  free(body);
  ck_assert_double_eq(value(fx.job, "sluice_job_ready", NULL), 0);
  atomic_store(&gate, 0);
  ck_assert_int_eq(await_health(fx.job, SL_HEALTH_READY), SL_HEALTH_READY);
  ck_assert_int_eq(hg_get(sl_job_metrics_port(fx.job), "/healthz", NULL), 200);
  fx_finish(&fx);
  open_gate = NULL;
  fx_free(&fx);
}
END_TEST

START_TEST(test_checkpoint_staleness_and_metrics) {
  const char *kv[] = {"health.checkpoint.max.age.ms", "5000", NULL};
  fixture fx;
  fx_build(&fx, 1, kv);
  double v;
  ck_assert_int_eq(sl_job_metric_value(
                       fx.job, "sluice_checkpoint_completed_total", NULL, &v),
                   SL_ERR_NOTFOUND);
  fx_start(&fx);
  ck_assert_int_eq(await_health(fx.job, SL_HEALTH_READY), SL_HEALTH_READY);
  char reason[512];
  sl_clock_advance(fx.clock, 5000);
  ck_assert_int_eq(sl_job_health(fx.job, reason, sizeof(reason)),
                   SL_HEALTH_READY);
  sl_clock_advance(fx.clock, 1);
  ck_assert_int_eq(sl_job_health(fx.job, reason, sizeof(reason)),
                   SL_HEALTH_UNHEALTHY);
  ck_assert_msg(strstr(reason, "no checkpoint completed") != NULL, "%s",
                reason);

  sl__ckpt_note(fx.job->ckpt, 7, 250, 4096, 0);
  ck_assert_int_eq(sl_job_health(fx.job, reason, sizeof(reason)),
                   SL_HEALTH_READY);
  ck_assert_double_eq(value(fx.job, "sluice_checkpoint_completed_total", NULL),
                      1);
  ck_assert_double_eq(
      value(fx.job, "sluice_checkpoint_last_duration_seconds", NULL), 0.25);
  ck_assert_double_eq(value(fx.job, "sluice_checkpoint_last_size_bytes", NULL),
                      4096);
  ck_assert_double_eq(
      value(fx.job, "sluice_checkpoint_last_completed_id", NULL), 7);
  ck_assert_double_eq(
      value(fx.job, "sluice_checkpoint_last_completed_timestamp_seconds", NULL),
      (START_MS + 5001) / 1000.0);
  ck_assert_double_eq(value(fx.job, "sluice_checkpoint_duration_seconds", NULL),
                      1); /* a histogram reads as its count */
  ck_assert_double_eq(value(fx.job, "sluice_checkpoint_failures_total", NULL),
                      0);
  sl_clock_advance(fx.clock, 3000);
  ck_assert_double_eq(
      value(fx.job, "sluice_checkpoint_last_completed_age_seconds", NULL), 3);
  sl_clock_advance(fx.clock, 2001);
  ck_assert_int_eq(sl_job_health(fx.job, reason, sizeof(reason)),
                   SL_HEALTH_UNHEALTHY);
  ck_assert_msg(strstr(reason, "5001 ms old") != NULL, "%s", reason);
  ck_assert_double_eq(value(fx.job, "sluice_job_ready", NULL), 0);
  sl__ckpt_note(fx.job->ckpt, 0, 0, 0, 0);
  ck_assert_double_eq(value(fx.job, "sluice_checkpoint_failures_total", NULL),
                      1);
  fx_finish(&fx);
  fx_free(&fx);
}
END_TEST

/* The checkpoint coordinator reports real checkpoints. */
START_TEST(test_checkpoints_of_a_running_job) {
  char dir[] = "/tmp/sluice-ckpt-metrics-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  const char *kv[] = {"checkpoint.dir",
                      dir,
                      "checkpoint.interval.ms",
                      "20",
                      "health.checkpoint.max.age.ms",
                      "60000",
                      NULL};
  fixture fx;
  fx_build(&fx, 2, kv);
  atomic_store(&fx.f.limit, 500);
  fx_start(&fx);
  double deadline = hg_now() + 10, done = 0;
  while (hg_now() < deadline &&
         (sl_job_metric_value(fx.job, "sluice_checkpoint_completed_total", NULL,
                              &done) != SL_OK ||
          done < 3))
    hg_nap();
  ck_assert_double_ge(done, 3);
  ck_assert_int_eq(await_health(fx.job, SL_HEALTH_READY), SL_HEALTH_READY);
  /* Keyed state of 10 keys and the timers are in every checkpoint. */
  ck_assert_double_gt(value(fx.job, "sluice_checkpoint_last_size_bytes", NULL),
                      10 * 8);
  ck_assert_double_ge(
      value(fx.job, "sluice_checkpoint_last_completed_id", NULL), 3);
  ck_assert_double_ge(value(fx.job, "sluice_checkpoint_duration_seconds", NULL),
                      3);
  ck_assert_double_eq(value(fx.job, "sluice_checkpoint_failures_total", NULL),
                      0);
  /* The job clock is manual and did not move: the age is 0. */
  ck_assert_double_eq(
      value(fx.job, "sluice_checkpoint_last_completed_age_seconds", NULL), 0);
  fx_finish(&fx);
  ck_assert_int_eq(fx.rc, SL_OK);
  fx_free(&fx);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Each restore from a checkpoint counts one restart over the job's life. */
START_TEST(test_restarts_counted_across_restores) {
  char dir[] = "/tmp/sluice-restarts-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  for (int run = 0; run < 3; run++) {
    const char *kv[] = {"checkpoint.dir", dir, "restore.from", "latest", NULL};
    fixture fx;
    fx_build(&fx, 1, kv);
    atomic_store(&fx.f.limit, 50);
    atomic_store(&fx.f.end, 1);
    ck_assert_int_eq(sl_job_run(fx.job), SL_OK);
    /* The first run finds no checkpoint: a fresh start. */
    ck_assert_double_eq(value(fx.job, "sluice_job_restarts_total", NULL), run);
    ck_assert_double_ge(
        value(fx.job, "sluice_checkpoint_completed_total", NULL), 1);
    fx_free(&fx);
  }
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static int slow_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)rec;
  (void)opaque;
  if (sl_ctx_worker(ctx) == 1) { /* a slow consumer on worker 1 */
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return 0;
}

/* A slow consumer fills its channel: the producer's wait shows up as
 * backpressure time, and only on the channel into the slow worker. */
START_TEST(test_backpressure_time) {
  const char *kv[] = {"channel.capacity", "2", "batch.size", "1", NULL};
  sl_job_t *job = tu_job_kv(2, kv);
  static const sl_source_ops_t so = {.poll = feed_poll};
  feed f = {.keys = 64};
  atomic_store(&f.limit, 200);
  atomic_store(&f.end, 1);
  sl_stream_t *k = sl_key_by(sl_source(job, "events", &so, &f), NULL, NULL);
  ck_assert_int_eq(sl_sink(k, "slow", slow_sink, NULL), SL_OK);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  double into_slow =
      value(job, "sluice_channel_backpressure_seconds_total",
            "from_operator=events,to_operator=slow,from_worker=0,to_worker=1");
  double into_fast =
      value(job, "sluice_channel_backpressure_seconds_total",
            "from_operator=events,to_operator=slow,from_worker=1,to_worker=0");
  /* About 100 records x 2 ms behind a 2-batch channel. */
  ck_assert_double_gt(into_slow, 0.05);
  ck_assert_double_eq(into_fast, 0);
  sl_job_destroy(job);
}
END_TEST

/* sl_job_op_stats() from another thread while the job starts: zeros until
 * the plan is published, then the counts (run under ThreadSanitizer to
 * see that the plan is never read while plan() writes it). */
typedef struct runner {
  sl_job_t *job;
  _Atomic int done;
  int rc;
} runner;

static void *run_job(void *arg) {
  runner *r = arg;
  r->rc = sl_job_run(r->job);
  atomic_store(&r->done, 1);
  return NULL;
}

START_TEST(test_op_stats_while_starting) {
  sl_job_t *job = tu_job_kv(2, NULL);
  static const sl_source_ops_t so = {.poll = feed_poll};
  feed f = {.keys = 8};
  atomic_store(&f.limit, 5000);
  atomic_store(&f.end, 1);
  sl_stream_t *k = sl_key_by(sl_source(job, "events", &so, &f), NULL, NULL);
  ck_assert_int_eq(sl_sink(k, "out", tu_discard, NULL), SL_OK);
  sl_op_stats_t st;
  ck_assert_int_eq(sl_job_op_stats(job, "events", &st), SL_OK);
  ck_assert_uint_eq(st.records_out, 0);
  ck_assert_int_eq(st.watermark, SL_TS_MIN);
  runner r = {.job = job};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, run_job, &r), 0);
  uint64_t prev = 0;
  while (!atomic_load(&r.done)) {
    ck_assert_int_eq(sl_job_op_stats(job, "out", &st), SL_OK);
    ck_assert_uint_ge(st.records_in, prev);
    prev = st.records_in;
  }
  pthread_join(t, NULL);
  ck_assert_int_eq(r.rc, SL_OK);
  ck_assert_int_eq(sl_job_op_stats(job, "out", &st), SL_OK);
  ck_assert_uint_eq(st.records_in, 5000);
  sl_job_destroy(job);
}
END_TEST

START_TEST(test_failed_job_is_unhealthy) {
  const char *kv[] = {"metrics.listen", "127.0.0.1:0", NULL};
  fixture fx;
  fx_build(&fx, 1, kv);
  fx.f.boom_at = 5;
  atomic_store(&fx.f.limit, 10);
  atomic_store(&fx.f.end, 1);
  ck_assert_int_eq(sl_job_run(fx.job), SL_ERR_USER);
  char reason[1024];
  ck_assert_int_eq(sl_job_health(fx.job, reason, sizeof(reason)),
                   SL_HEALTH_UNHEALTHY);
  ck_assert_msg(strstr(reason, "failed: ") && strstr(reason, "\"count\""), "%s",
                reason);
  ck_assert_double_eq(value(fx.job, "sluice_job_failed", NULL), 1);
  char *body = NULL;
  ck_assert_int_eq(hg_get(sl_job_metrics_port(fx.job), "/healthz", &body), 503);
  ck_assert_msg(strstr(body, "\"status\":\"unhealthy\"") != NULL, "%s", body);
  free(body);
  fx_free(&fx);
}
END_TEST

START_TEST(test_job_failing_before_start_is_unhealthy) {
  sl_job_t *job = tu_job(1, NULL);
  static const sl_source_ops_t so = {.poll = feed_poll};
  feed f = {.keys = 1};
  ck_assert_ptr_nonnull(sl_source(job, "events", &so, &f)); /* no sink */
  ck_assert_int_eq(sl_job_run(job), SL_ERR_GRAPH);
  char reason[512];
  ck_assert_int_eq(sl_job_health(job, reason, sizeof(reason)),
                   SL_HEALTH_UNHEALTHY);
  ck_assert_msg(strstr(reason, "no sink") != NULL, "%s", reason);
  sl_job_destroy(job);
}
END_TEST

START_TEST(test_port_in_use_is_a_clear_error) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  ck_assert_int_eq(listen(fd, 1), 0);
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  char addr[64];
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(a.sin_port));
  const char *kv[] = {"metrics.listen", addr, NULL};
  fixture fx;
  fx_build(&fx, 1, kv);
  atomic_store(&fx.f.end, 1);
  ck_assert_int_eq(sl_job_run(fx.job), SL_ERR_IO);
  const char *msg = sl_job_errmsg(fx.job);
  ck_assert_msg(strstr(msg, "metrics.listen") && strstr(msg, addr) &&
                    strstr(msg, "in use"),
                "%s", msg);
  ck_assert_int_eq(sl_job_health(fx.job, NULL, 0), SL_HEALTH_UNHEALTHY);
  fx_free(&fx);
  close(fd);
}
END_TEST

typedef struct lines {
  pthread_mutex_t lock;
  char *last;
  int n;
} lines;

static void collect_line(const char *line, void *opaque) {
  lines *l = opaque;
  pthread_mutex_lock(&l->lock);
  free(l->last);
  l->last = strdup(line);
  l->n++;
  pthread_mutex_unlock(&l->lock);
}

static int line_count(lines *l) {
  pthread_mutex_lock(&l->lock);
  int n = l->n;
  pthread_mutex_unlock(&l->lock);
  return n;
}

START_TEST(test_json_log_line) {
  const char *kv[] = {"metrics.log.interval.ms", "10", NULL};
  fixture fx;
  fx_build(&fx, 1, kv);
  lines l = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};
  ck_assert_int_eq(sl_job_set_metrics_log(fx.job, collect_line, &l), SL_OK);
  atomic_store(&fx.f.limit, 100);
  fx_start(&fx);
  double deadline = hg_now() + 10;
  while (line_count(&l) < 2 && hg_now() < deadline)
    hg_nap();
  ck_assert_int_ge(line_count(&l), 2);
  ck_assert_int_eq(sl_job_set_metrics_log(fx.job, NULL, NULL), SL_ERR_STATE);
  fx_finish(&fx);
  int n = line_count(&l);
  ck_assert_int_ge(n, 3); /* and a last one when the job ended */
  json_error_t je;
  json_t *root = json_loads(l.last, 0, &je);
  ck_assert_msg(root != NULL, "%s: %s", je.text, l.last);
  ck_assert_str_eq(json_string_value(json_object_get(root, "job")), "test");
  json_t *in = json_object_get(json_object_get(root, "metrics"),
                               "sluice_operator_records_in_total");
  double total = 0;
  size_t i;
  json_t *s;
  json_array_foreach(in, i, s) {
    json_t *lab = json_object_get(s, "labels");
    if (strcmp(json_string_value(json_object_get(lab, "operator")), "count") ==
        0)
      total += json_number_value(json_object_get(s, "value"));
  }
  ck_assert_double_eq(total, 100);
  json_decref(root);
  free(l.last);
  pthread_mutex_destroy(&l.lock);
  /* Nothing more is written once the job has ended. */
  fx_free(&fx);
}
END_TEST

START_TEST(test_kafka_dead_letter_and_restart_series) {
  fixture fx;
  fx_build(&fx, 1, NULL);
  sl_job_t *job = fx.job;
  /* Kafka keeps the figures; metrics read them when scraped. */
  sl__kjob *kj = sl__kjob_get(job);
  ck_assert_ptr_nonnull(kj);
  sl__kpart_stat *p = sl__kstats_partition(kj, "in", "orders", 3);
  ck_assert_ptr_nonnull(p);
  double v;
  /* No value before the source reports one. */
  ck_assert_int_eq(
      sl_job_metric_value(job, "sluice_kafka_consumer_lag", "topic=orders", &v),
      SL_ERR_NOTFOUND);
  const char *lab = "source=in,topic=orders,partition=3";
  sl__kstats_partition_update(p, 100, 150);
  ck_assert_double_eq(value(job, "sluice_kafka_partition_offset", lab), 100);
  ck_assert_double_eq(value(job, "sluice_kafka_partition_high_watermark", lab),
                      150);
  ck_assert_double_eq(value(job, "sluice_kafka_consumer_lag", lab), 50);
  sl__kstats_partition_update(p, 160, -1); /* stale high watermark */
  ck_assert_double_eq(value(job, "sluice_kafka_consumer_lag", lab), 0);
  sl__kstats_partition_update(p, -1, 200);
  ck_assert_double_eq(value(job, "sluice_kafka_consumer_lag", lab), 40);
  sl__kstats_partition_remove(kj, p);
  ck_assert_int_eq(
      sl_job_metric_value(job, "sluice_kafka_partition_offset", lab, &v),
      SL_ERR_NOTFOUND);
  for (int i = 0; i < 5; i++)
    sl__kstats_dead_letter(kj, "parse", "decode");
  sl__kstats_dead_letter(kj, "parse", "user");
  ck_assert_double_eq(value(job, "sluice_dead_letter_records_total",
                            "operator=parse,reason=decode"),
                      5);
  ck_assert_double_eq(
      value(job, "sluice_dead_letter_records_total", "operator=parse"), 6);
  ck_assert_double_eq(value(job, "sluice_job_restarts_total", NULL), 0);
  sl__ckpt_note(job->ckpt, 0, 0, 0, 3);
  ck_assert_double_eq(value(job, "sluice_job_restarts_total", NULL), 3);
  fx_free(&fx);
}
END_TEST

/* ---- User metrics ---------------------------------------------------------
 * A process function registers a counter, a gauge and a histogram in open
 * and updates them per record: each instance's counter and gauge equal
 * the records it received (the runtime's own count is the reference) and
 * every key ("k0".."k9", 2 bytes) lands in the le=2.5 bucket. */

typedef struct umetrics {
  sl_metric_t *records, *last, *key_len;
  uint64_t n;
} umetrics;

static const double key_len_le[] = {1.5, 2.5};

static int user_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  umetrics *u = calloc(1, sizeof(*u));
  ck_assert_ptr_nonnull(u);
  sl_ctx_set_local(ctx, u);
  u->records = sl_ctx_counter(ctx, "score_records_total", "Records scored.");
  u->last = sl_ctx_gauge(ctx, "score_seen", "Records seen by the instance.");
  u->key_len =
      sl_ctx_histogram(ctx, "score_key_bytes", "Key sizes.", key_len_le, 2);
  /* Registering again returns the same metric. */
  ck_assert_ptr_eq(sl_ctx_counter(ctx, "score_records_total", NULL),
                   u->records);
  return u->records && u->last && u->key_len ? 0 : SL_ERR_INVAL;
}

static int user_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  umetrics *u = sl_ctx_local(ctx);
  sl_metric_inc(u->records, 1);
  sl_metric_set(u->last, (double)++u->n);
  sl_metric_observe(u->key_len, (double)rec->key_len);
  return 0;
}

static void user_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static char *line_of(const char *body, const char *prefix) {
  const char *p = strstr(body, prefix);
  ck_assert_msg(p != NULL, "no line %s in:\n%s", prefix, body);
  const char *e = strchr(p, '\n');
  return strndup(p, e ? (size_t)(e - p) : strlen(p));
}

START_TEST(test_user_metrics_on_endpoint_and_value) {
  const char *kv[] = {"metrics.listen", "127.0.0.1:0", NULL};
  feed f = {.keys = 10};
  atomic_store(&f.limit, 1000);
  atomic_store(&f.end, 1);
  sl_job_t *job = tu_job_kv(2, kv);
  static const sl_source_ops_t so = {.poll = feed_poll};
  static const sl_process_ops_t po = {
      .open = user_open, .on_element = user_element, .close = user_close};
  sl_stream_t *k = sl_key_by(sl_source(job, "events", &so, &f), NULL, NULL);
  ck_assert_int_eq(
      sl_sink(sl_process(k, "score", &po, NULL), "sink", tu_discard, NULL),
      SL_OK);
  ck_assert_int_eq(sl_job_run(job), SL_OK);

  ck_assert_double_eq(value(job, "score_records_total", "operator=score"),
                      1000);
  ck_assert_double_eq(value(job, "score_key_bytes", NULL), 1000);
  int port = sl_job_metrics_port(job);
  ck_assert_int_gt(port, 0);
  char *body = NULL;
  ck_assert_int_eq(hg_get(port, "/metrics", &body), 200);
  char out[4096];
  int pt = promtool_check(body, out, sizeof(out));
  ck_assert_msg(pt <= 0, "promtool: %s", out);
  ck_assert_ptr_nonnull(strstr(body,
                               "# HELP score_records_total Records scored.\n"
                               "# TYPE score_records_total counter\n"));
  ck_assert_ptr_nonnull(strstr(body, "# TYPE score_seen gauge\n"));
  ck_assert_ptr_nonnull(strstr(body, "# TYPE score_key_bytes histogram\n"));
  double total = 0;
  for (int w = 0; w < 2; w++) {
    char lab[64], pre[128], want[160];
    snprintf(lab, sizeof(lab), "operator=score,kind=process,worker=%d", w);
    double n = value(job, "sluice_operator_records_in_total", lab);
    total += n;
    snprintf(lab, sizeof(lab), "operator=score,worker=%d", w);
    ck_assert_double_eq(value(job, "score_records_total", lab), n);
    ck_assert_double_eq(value(job, "score_seen", lab), n);
    ck_assert_double_eq(value(job, "score_key_bytes", lab), n);
    struct {
      const char *name, *extra;
      double v;
    } want_lines[] = {
        {"score_records_total", "", n},
        {"score_seen", "", n},
        {"score_key_bytes_bucket", ",le=\"1.5\"", 0},
        {"score_key_bytes_bucket", ",le=\"2.5\"", n},
        {"score_key_bytes_bucket", ",le=\"+Inf\"", n},
        {"score_key_bytes_sum", "", 2 * n},
        {"score_key_bytes_count", "", n},
    };
    for (size_t i = 0; i < sizeof(want_lines) / sizeof(want_lines[0]); i++) {
      snprintf(pre, sizeof(pre), "%s{operator=\"score\",worker=\"%d\"%s} ",
               want_lines[i].name, w, want_lines[i].extra);
      snprintf(want, sizeof(want), "%s%.0f", pre, want_lines[i].v);
      char *got = line_of(body, pre);
      ck_assert_str_eq(got, want);
      free(got);
    }
  }
  ck_assert_double_eq(total, 1000);
  free(body);
  /* The JSON line carries them too. */
  char *json = NULL;
  ck_assert_int_eq(sl_job_metrics_format(job, SL_METRICS_JSON, &json, NULL),
                   SL_OK);
  ck_assert_ptr_nonnull(strstr(json, "\"score_records_total\":[{\"labels\":"
                                     "{\"operator\":\"score\",\"worker\":"));
  free(json);
  sl_job_destroy(job);
}
END_TEST

/* Bad names and clashes fail the job with a message naming the operator
 * and the metric. */
static const char *bad_kind;
static int bad_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  static const double le[] = {2, 1};
  if (strcmp(bad_kind, "prefix") == 0)
    return sl_ctx_counter(ctx, "sluice_mine_total", "") ? 0 : -1;
  if (strcmp(bad_kind, "suffix") == 0)
    return sl_ctx_counter(ctx, "mine", "") ? 0 : -1;
  if (strcmp(bad_kind, "bounds") == 0)
    return sl_ctx_histogram(ctx, "mine", "", le, 2) ? 0 : -1;
  ck_assert_ptr_nonnull(sl_ctx_gauge(ctx, "mine", ""));
  sl_metric_t *m = sl_ctx_histogram(ctx, "mine", "", le + 1, 1);
  sl_metric_inc(m, 1); /* NULL: nothing */
  return m ? 0 : -1;
}

START_TEST(test_user_metric_mistakes_fail_clearly) {
  static const struct {
    const char *kind, *msg;
  } cases[] = {
      {"prefix", "metric \"sluice_mine_total\": the prefix sluice_ is "
                 "reserved for the library's metrics"},
      {"suffix", "metric \"mine\": a counter's name ends in _total"},
      {"bounds", "metric \"mine\": bucket bounds must be finite and strictly "
                 "increasing"},
      {"clash", "metric \"mine\": registered before as a gauge: one name has "
                "one type and one bucket layout"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    bad_kind = cases[i].kind;
    feed f = {.keys = 1};
    atomic_store(&f.end, 1);
    sl_job_t *job = tu_job_kv(1, NULL);
    static const sl_source_ops_t so = {.poll = feed_poll};
    static const sl_process_ops_t po = {.open = bad_open,
                                        .on_element = user_element};
    sl_stream_t *k = sl_key_by(sl_source(job, "events", &so, &f), NULL, NULL);
    ck_assert_int_eq(
        sl_sink(sl_process(k, "bad", &po, NULL), "sink", tu_discard, NULL),
        SL_OK);
    ck_assert_int_eq(sl_job_run(job), SL_ERR_INVAL);
    char want[512];
    snprintf(want, sizeof(want), "operator \"bad\" (process) on worker 0: %s",
             cases[i].msg);
    ck_assert_str_eq(sl_job_errmsg(job), want);
    sl_job_destroy(job);
  }
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("metrics_job");
  TCase *tc = tcase_create("job");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_running_job_metrics_and_endpoint);
  tcase_add_test(tc, test_not_ready_until_operators_opened);
  tcase_add_test(tc, test_checkpoint_staleness_and_metrics);
  tcase_add_test(tc, test_checkpoints_of_a_running_job);
  tcase_add_test(tc, test_restarts_counted_across_restores);
  tcase_add_test(tc, test_backpressure_time);
  tcase_add_test(tc, test_op_stats_while_starting);
  tcase_add_test(tc, test_failed_job_is_unhealthy);
  tcase_add_test(tc, test_job_failing_before_start_is_unhealthy);
  tcase_add_test(tc, test_port_in_use_is_a_clear_error);
  tcase_add_test(tc, test_json_log_line);
  tcase_add_test(tc, test_kafka_dead_letter_and_restart_series);
  tcase_add_test(tc, test_user_metrics_on_endpoint_and_value);
  tcase_add_test(tc, test_user_metric_mistakes_fail_clearly);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
