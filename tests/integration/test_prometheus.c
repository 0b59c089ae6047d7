/* SPDX-License-Identifier: Apache-2.0 */
/* End to end with a real Prometheus server (Debian package `prometheus`):
 * it scrapes a running job's endpoint on loopback and loads the shipped
 * alert rules; the test reads a job metric back through Prometheus's HTTP
 * query API. Skipped (exit 77) when the prometheus binary is missing. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "check_main.h"
#include "httpget.h"
#include "sluice.h"
#include "testutil.h"

#ifndef SLUICE_SOURCE_ROOT
#error "the test build defines SLUICE_SOURCE_ROOT"
#endif

#define RECORDS 1000

typedef struct feed {
  _Atomic int stop;
  uint64_t next;
  char key[16];
} feed;

/* RECORDS records over 10 keys, then nothing until stopped: a job that
 * keeps running with known totals. */
static int feed_poll(sl_source_ctx_t *ctx, void *opaque) {
  feed *f = opaque;
  if (f->next >= RECORDS)
    return atomic_load(&f->stop) ? SL_POLL_END : SL_POLL_EMPTY;
  for (; f->next < RECORDS; f->next++) {
    int kl = snprintf(f->key, sizeof(f->key), "k%d", (int)(f->next % 10));
    sl_record_t r = {f->key, (size_t)kl, "v", 1, (int64_t)f->next};
    int rc = sl_source_emit(ctx, &r);
    if (rc)
      return rc;
  }
  return SL_POLL_MORE;
}

typedef struct running {
  sl_job_t *job;
  feed f;
  pthread_t thread;
  int rc;
} running;

static void *run_job(void *arg) {
  running *r = arg;
  r->rc = sl_job_run(r->job);
  return NULL;
}

/* Starts prometheus with its output in dir/prometheus.log; the child dies
 * with this process even if an assertion ends the test early. */
static pid_t start_prometheus(const char *dir, int web_port) {
  char config[512], data[512], listen[64], log[512], cfg_arg[600],
      data_arg[600];
  snprintf(config, sizeof(config), "%s/prometheus.yml", dir);
  snprintf(data, sizeof(data), "%s/data", dir);
  snprintf(log, sizeof(log), "%s/prometheus.log", dir);
  snprintf(listen, sizeof(listen), "--web.listen-address=127.0.0.1:%d",
           web_port);
  snprintf(cfg_arg, sizeof(cfg_arg), "--config.file=%s", config);
  snprintf(data_arg, sizeof(data_arg), "--storage.tsdb.path=%s", data);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execlp("prometheus", "prometheus", cfg_arg, data_arg, listen,
           "--log.level=warn", (char *)NULL);
    _exit(127);
  }
  return pid;
}

static void stop_prometheus(pid_t pid) {
  kill(pid, SIGTERM);
  double deadline = hg_now() + 10;
  int st;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    if (hg_now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return;
    }
    hg_nap();
  }
}

/* Sum of the values of a Prometheus instant-query answer, or -1 while it
 * has no result. */
static double query_sum(int port, const char *encoded_query) {
  char path[1024], *body = NULL;
  snprintf(path, sizeof(path), "/api/v1/query?query=%s", encoded_query);
  if (hg_get(port, path, &body) != 200) {
    free(body);
    return -1;
  }
  json_t *root = json_loads(body, 0, NULL);
  free(body);
  json_t *result = json_object_get(json_object_get(root, "data"), "result");
  double sum = -1;
  size_t i;
  json_t *s;
  json_array_foreach(result, i, s) {
    const char *v =
        json_string_value(json_array_get(json_object_get(s, "value"), 1));
    sum = (sum < 0 ? 0 : sum) + (v ? strtod(v, NULL) : 0);
  }
  json_decref(root);
  return sum;
}

static int rule_groups(int port) {
  char *body = NULL;
  if (hg_get(port, "/api/v1/rules", &body) != 200) {
    free(body);
    return -1;
  }
  json_t *root = json_loads(body, 0, NULL);
  free(body);
  int n = (int)json_array_size(
      json_object_get(json_object_get(root, "data"), "groups"));
  json_decref(root);
  return n;
}

START_TEST(test_prometheus_scrapes_a_running_job) {
  running r;
  memset(&r, 0, sizeof(r));
  const char *kv[] = {"metrics.listen", "127.0.0.1:0", NULL};
  r.job = tu_job_kv(1, kv);
  static const sl_source_ops_t so = {.poll = feed_poll};
  sl_stream_t *k = sl_key_by(sl_source(r.job, "events", &so, &r.f), NULL, NULL);
  ck_assert_int_eq(sl_sink(k, "count", tu_discard, NULL), SL_OK);
  ck_assert_int_eq(pthread_create(&r.thread, NULL, run_job, &r), 0);
  double deadline = hg_now() + 10;
  while (sl_job_metrics_port(r.job) < 0 && hg_now() < deadline)
    hg_nap();
  int job_port = sl_job_metrics_port(r.job);
  ck_assert_int_gt(job_port, 0);

  char dir[] = "/tmp/sluice-prom-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char config[600];
  snprintf(config, sizeof(config), "%s/prometheus.yml", dir);
  FILE *f = fopen(config, "w");
  ck_assert_ptr_nonnull(f);
  fprintf(f,
          "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
          "rule_files:\n  - %s/docs/monitoring/alerts.yml\n"
          "scrape_configs:\n  - job_name: sluice\n    static_configs:\n"
          "      - targets: ['127.0.0.1:%d']\n",
          SLUICE_SOURCE_ROOT, job_port);
  fclose(f);
  int web = hg_free_port();
  ck_assert_int_gt(web, 0);
  pid_t pid = start_prometheus(dir, web);
  ck_assert_int_gt(pid, 0);

  /* Records into the sink, as Prometheus stored them from its scrapes. */
  double got = -1, up = -1;
  int groups = -1;
  deadline = hg_now() + 60;
  while (hg_now() < deadline) {
    got = query_sum(web, "sluice_operator_records_in_total%7Boperator%3D%22"
                         "count%22%7D");
    if (got == RECORDS)
      break;
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  up = query_sum(web, "up%7Bjob%3D%22sluice%22%7D");
  groups = rule_groups(web);
  stop_prometheus(pid);
  atomic_store(&r.f.stop, 1);
  pthread_join(r.thread, NULL);

  char log[700], cmd[800];
  snprintf(log, sizeof(log), "%s/prometheus.log", dir);
  if (got != RECORDS) {
    snprintf(cmd, sizeof(cmd), "cat %s >&2", log);
    (void)system(cmd);
  }
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  (void)system(cmd);
  ck_assert_msg(got == RECORDS,
                "Prometheus returned %g for the sink's records_in_total, "
                "expected %d",
                got, RECORDS);
  ck_assert_double_eq(up, 1);
  ck_assert_int_gt(groups, 0); /* the shipped alert rules loaded */
  ck_assert_int_eq(r.rc, SL_OK);
  sl_job_destroy(r.job);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("prometheus");
  TCase *tc = tcase_create("scrape");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_prometheus_scrapes_a_running_job);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (system("command -v prometheus >/dev/null 2>&1") != 0) {
    printf("SKIP: the prometheus binary is not installed; `make deps` (or "
           "apt-get install prometheus) installs it\n");
    return 77; /* meson: skipped */
  }
  return tu_run(suite());
}
