/* SPDX-License-Identifier: Apache-2.0 */
/* The Nexmark benchmark: runs each query over generated events, in
 * process, for every parallelism and state backend asked for, each run in
 * its own child process (so peak RSS is the run's own), and prints one
 * line per run:
 *   bench=nexmark query=q5 backend=hashmap P=1 events=... events_per_s=...
 *   events_per_s_per_core=... peak_rss_mb=...
 * events_per_s_per_core divides by the CPU seconds (user + system, from
 * getrusage) the run used. Settings come from the environment:
 *   NEXMARK_EVENTS (10^7), NEXMARK_QUERIES (all), NEXMARK_P ("1,2"),
 *   NEXMARK_BACKENDS ("hashmap,rocksdb"), NEXMARK_DELAY_US (10),
 *   NEXMARK_OOO_GROUP (1), NEXMARK_WM_BOUND_MS (4000),
 *   NEXMARK_Q12_WINDOW_MS (100).
 * A run that produced no output fails (exit 1, with the reason): its
 * figure would measure ingest only. q12's line also says how many
 * processing-time windows fired.
 * `nexmark --kafka [queries]` runs end to end instead: it starts the dev
 * broker, produces NEXMARK_KAFKA_EVENTS (10^6) events as JSON to
 * NEXMARK_KAFKA_PARTITIONS (16) partitions, and every run reads them
 * with the Kafka source (lines with source=kafka). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nx_driver.h"
#include "nx_kafka.h"

/* Output per worker (cache-line apart): the count, and for q12 the
 * distinct processing-time windows that fired. A worker fires its windows
 * in order, so a new start is one that differs from its last. */
#define MAX_WINDOWS 4096
typedef struct counter {
  uint64_t n;
  int64_t last_start;
  size_t n_starts;
  int64_t *starts;
  char pad[32];
} counter;
static counter outputs[256];

static int count_out(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  const nx_query *q = opaque;
  counter *c = &outputs[sl_ctx_worker(ctx) & 255];
  c->n++;
  if (q->proc_time && rec->value_len == sizeof(nx_count_out)) {
    const nx_count_out *o = rec->value;
    if ((c->n_starts == 0 || o->start != c->last_start) &&
        c->n_starts < MAX_WINDOWS && c->starts)
      c->starts[c->n_starts++] = o->start;
    c->last_start = o->start;
  }
  return 0;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* Distinct windows over every worker. */
static size_t windows_fired(void) {
  int64_t *all = malloc(sizeof(int64_t) * MAX_WINDOWS * 256);
  size_t n = 0, distinct = 0;
  if (!all)
    return 0;
  for (int w = 0; w < 256; w++)
    for (size_t i = 0; i < outputs[w].n_starts; i++)
      all[n++] = outputs[w].starts[i];
  qsort(all, n, sizeof(*all), cmp_i64);
  for (size_t i = 0; i < n; i++)
    distinct += i == 0 || all[i] != all[i - 1];
  free(all);
  return distinct;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(const struct rusage *u) {
  return (double)u->ru_utime.tv_sec + (double)u->ru_utime.tv_usec / 1e6 +
         (double)u->ru_stime.tv_sec + (double)u->ru_stime.tv_usec / 1e6;
}

static const char *env_or(const char *name, const char *dflt) {
  const char *v = getenv(name);
  return v && *v ? v : dflt;
}

static int run_one(nx_run_opts *o) {
  char dir[128], err[512];
  snprintf(dir, sizeof(dir), "/tmp/sluice-nexmark-%d", (int)getpid());
  o->state_dir = dir;
  o->sink = count_out;
  o->sink_opaque = (void *)o->query;
  int par = o->parallelism;
  for (int w = 0; w < par && w < 256 && o->query->proc_time; w++)
    if (!(outputs[w].starts = calloc(MAX_WINDOWS, sizeof(int64_t))))
      return 1;
  struct rusage u0, u1;
  getrusage(RUSAGE_SELF, &u0);
  double t0 = now_s();
  int rc = nx_run(o, err, sizeof(err));
  double secs = now_s() - t0;
  getrusage(RUSAGE_SELF, &u1);
  if (rc) {
    fprintf(stderr, "nexmark %s: %s\n", o->query->name, err);
    return 1;
  }
  uint64_t outs = 0;
  for (int i = 0; i < 256; i++)
    outs += outputs[i].n;
  /* q12's windows are processing-time ones: the query is measured only
   * if some fired during the run (the end of input fires none). */
  char windows[64] = "";
  size_t fired = o->query->proc_time ? windows_fired() : 0;
  if (o->query->proc_time)
    snprintf(windows, sizeof(windows),
             " proc_window_ms=%" PRId64 " windows=%zu", o->qc.proc_window_ms,
             fired);
  double cpu = cpu_s(&u1) - cpu_s(&u0);
  printf("bench=nexmark query=%s source=%s backend=%s P=%d events=%" PRIu64
         " outputs=%" PRIu64 "%s secs=%.2f cpu_s=%.2f events_per_s=%.0f "
         "events_per_s_per_core=%.0f peak_rss_mb=%.0f\n",
         o->query->name, o->kafka_bootstrap ? "kafka" : "generator", o->backend,
         o->parallelism, o->events, outs, windows, secs, cpu,
         (double)o->events / secs, (double)o->events / cpu,
         (double)u1.ru_maxrss / 1024.0);
  fflush(stdout);
  /* The figure is the query's only if the query produced something. */
  if (outs == 0) {
    fprintf(stderr,
            "nexmark %s P=%d %s: no output, so the figure measures ingest "
            "only%s\n",
            o->query->name, o->parallelism, o->backend,
            o->query->proc_time
                ? " (no processing-time window fired during the run: lower "
                  "NEXMARK_Q12_WINDOW_MS or raise NEXMARK_EVENTS)"
                : "");
    return 1;
  }
  return 0;
}

/* Calls fn on each comma-separated item of list. */
static int each(const char *list, int (*fn)(const char *item, void *arg),
                void *arg) {
  char buf[256];
  snprintf(buf, sizeof(buf), "%s", list);
  int rc = 0;
  for (char *save, *t = strtok_r(buf, ",", &save); t;
       t = strtok_r(NULL, ",", &save))
    rc |= fn(t, arg);
  return rc;
}

static int run_backend(const char *backend, void *arg) {
  nx_run_opts *o = arg;
  o->backend = backend;
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0)
    _exit(run_one(o));
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
      WEXITSTATUS(status)) {
    fprintf(stderr, "nexmark %s P=%d %s: run failed\n", o->query->name,
            o->parallelism, backend);
    return 1;
  }
  return 0;
}

static int run_par(const char *p, void *arg) {
  nx_run_opts *o = arg;
  o->parallelism = atoi(p);
  return each(env_or("NEXMARK_BACKENDS", "hashmap,rocksdb"), run_backend, o);
}

static int run_query(const char *name, void *arg) {
  nx_run_opts *o = arg;
  if (!(o->query = nx_query_find(name))) {
    fprintf(stderr, "nexmark: no query %s\n", name);
    return 1;
  }
  return each(env_or("NEXMARK_P", "1,2"), run_par, o);
}

/* The dev broker beside this program in the build tree:
 * <build>/examples/nexmark/nexmark -> <build>/tools/sluice-kafka-dev. */
static void dev_tool(char *path, size_t n) {
  const char *env = getenv("NEXMARK_KAFKA_DEV");
  if (env && *env) {
    snprintf(path, n, "%s", env);
    return;
  }
  char exe[4096];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  exe[len > 0 ? len : 0] = '\0';
  for (int up = 0; up < 3; up++) {
    char *slash = strrchr(exe, '/');
    if (slash)
      *slash = '\0';
  }
  snprintf(path, n, "%s/tools/sluice-kafka-dev", exe);
}

/* End to end: the dev broker, the events produced to it once, then every
 * run reads them from the start. */
static int run_kafka(nx_run_opts *o, const char *queries) {
  static const char topic[] = "nexmark.events";
  char tool[4200], err[512];
  dev_tool(tool, sizeof(tool));
  o->events = strtoull(env_or("NEXMARK_KAFKA_EVENTS", "1000000"), NULL, 10);
  o->kafka_partitions = atoi(env_or("NEXMARK_KAFKA_PARTITIONS", "16"));
  o->kafka_topic = topic;
  nx_kafka_dev dev;
  if (o->kafka_partitions < 1 ||
      nx_kafka_dev_start(tool, topic, o->kafka_partitions, &dev, err,
                         sizeof(err))) {
    fprintf(stderr, "nexmark: the dev broker: %s\n",
            o->kafka_partitions < 1 ? "bad NEXMARK_KAFKA_PARTITIONS" : err);
    return 1;
  }
  o->kafka_bootstrap = dev.bootstrap;
  double t0 = now_s();
  int rc = nx_kafka_produce(dev.bootstrap, topic, o->kafka_partitions, &o->gen,
                            o->events, err, sizeof(err));
  if (rc)
    fprintf(stderr, "nexmark: producing the events: %s\n", err);
  else
    fprintf(stderr,
            "nexmark: %" PRIu64 " events as JSON in %s (%d partitions) at %s, "
            "produced in %.1f s\n",
            o->events, topic, o->kafka_partitions, dev.bootstrap, now_s() - t0);
  rc = rc || each(queries, run_query, o);
  nx_kafka_dev_stop(&dev);
  return rc;
}

int main(int argc, char **argv) {
  nx_run_opts o;
  nx_run_opts_default(&o);
  o.events = strtoull(env_or("NEXMARK_EVENTS", "10000000"), NULL, 10);
  o.gen.inter_event_delay_us = atoll(env_or("NEXMARK_DELAY_US", "10"));
  o.gen.out_of_order_group = (uint32_t)atoi(env_or("NEXMARK_OOO_GROUP", "1"));
  o.watermark_bound_ms = atoll(env_or("NEXMARK_WM_BOUND_MS", "4000"));
  o.qc.proc_window_ms = atoll(env_or("NEXMARK_Q12_WINDOW_MS", "100"));
  char all[128] = "";
  for (size_t i = 0; i < nx_n_queries; i++)
    snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s%s", i ? "," : "",
             nx_queries[i].name);
  bool kafka = argc > 1 && !strcmp(argv[1], "--kafka");
  if (kafka)
    argc--, argv++;
  const char *queries = argc > 1 ? argv[1] : env_or("NEXMARK_QUERIES", all);
  if (kafka)
    return run_kafka(&o, queries) ? 1 : 0;
  return each(queries, run_query, &o) ? 1 : 0;
}
