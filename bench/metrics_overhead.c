/* SPDX-License-Identifier: Apache-2.0 */
/* metrics_overhead: keyed_count (4*10^6 events, 10^5 keys, a process function
 * incrementing a value state) with metrics off and on, alternating
 * off/on/on/off... in one process so that drift on a noisy machine hits
 * both alike. "On" is the endpoint listening, scraped every 100 ms (150x
 * Prometheus's default rate), plus the JSON log line every second. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "bench.h"
#include "tests/httpget.h"

#define KEYS 100000ULL
#define ROUNDS 6 /* of off,on,on,off */

/* Events per run; BENCH_EVENTS overrides (e.g. for callgrind). */
static unsigned long long N = 4000000ULL;
static uint64_t *events;

typedef struct src {
  uint64_t next[8];
} src;

static int src_open(sl_source_ctx_t *ctx, void *opaque) {
  src *s = opaque;
  s->next[sl_source_ctx_subtask(ctx)] = (uint64_t)sl_source_ctx_subtask(ctx);
  return 0;
}

static int src_poll(sl_source_ctx_t *ctx, void *opaque) {
  src *s = opaque;
  int sub = sl_source_ctx_subtask(ctx);
  uint64_t step = (uint64_t)sl_source_ctx_subtasks(ctx);
  uint64_t i = s->next[sub];
  size_t budget = sl_source_ctx_budget(ctx);
  for (size_t k = 0; k < budget && i < N; k++, i += step) {
    sl_record_t r = {&events[i], 8, NULL, 0, (int64_t)i};
    int rc = sl_source_emit(ctx, &r);
    if (rc)
      return rc;
  }
  s->next[sub] = i;
  return i >= N ? SL_POLL_END : SL_POLL_MORE;
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
  uint64_t *c =
      sl_value_ptr(ctx, sl_ctx_local(ctx), sizeof(uint64_t), &created);
  if (!c)
    return SL_ERR_NOMEM;
  ++*c;
  return 0;
}

static int discard(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)rec;
  (void)opaque;
  return 0;
}

static void discard_line(const char *line, void *opaque) {
  (void)line;
  (*(int *)opaque)++;
}

typedef struct scraper {
  sl_job_t *job;
  _Atomic int done;
  int scrapes;
} scraper;

static void *scrape_main(void *arg) {
  scraper *s = arg;
  int port;
  while ((port = sl_job_metrics_port(s->job)) < 0 && !atomic_load(&s->done))
    hg_nap();
  while (!atomic_load(&s->done)) {
    char *body = NULL;
    if (hg_get(port, "/metrics", &body) == 200)
      s->scrapes++;
    free(body);
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static int total_scrapes, total_lines;
static double render_us; /* rendering /metrics once, last P=2 job */

static double run(int par, bool metrics) {
  const char *on[] = {"metrics.listen", "127.0.0.1:0",
                      "metrics.log.interval.ms", "1000", NULL};
  sl_job_t *job = bench_job("metrics_overhead", par, metrics ? on : NULL);
  int lines = 0;
  if (metrics)
    sl_job_set_metrics_log(job, discard_line, &lines);
  static src s;
  memset(&s, 0, sizeof(s));
  sl_source_ops_t so = {.open = src_open, .poll = src_poll, .parallel = true};
  sl_process_ops_t po = {.open = count_open, .on_element = count_element};
  sl_stream_t *k = sl_key_by(sl_source(job, "events", &so, &s), NULL, NULL);
  sl_sink(sl_process(k, "count", &po, NULL), "sink", discard, NULL);
  scraper sc = {job, 0, 0};
  pthread_t t;
  if (metrics)
    pthread_create(&t, NULL, scrape_main, &sc);
  double t0 = bench_now();
  bench_run(job);
  double secs = bench_now() - t0;
  if (metrics) {
    atomic_store(&sc.done, 1);
    pthread_join(t, NULL);
    total_scrapes += sc.scrapes;
    total_lines += lines;
  }
  double in = 0;
  sl_job_metric_value(job, "sluice_operator_records_in_total", "operator=count",
                      &in);
  if (metrics) { /* what one scrape costs the endpoint's thread */
    double r0 = bench_now();
    for (int i = 0; i < 200; i++) {
      char *text = NULL;
      sl_job_metrics_format(job, SL_METRICS_PROMETHEUS, &text, NULL);
      free(text);
    }
    render_us = (bench_now() - r0) / 200 * 1e6;
  }
  sl_job_destroy(job);
  if (in != (double)N) {
    fprintf(stderr, "processed %.0f of %llu\n", in, N);
    exit(1);
  }
  return (double)N / secs;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Alternates off,on,on,off per round; each round gives one ratio of the
 * on runs' throughput to the off runs' next to them, so slow drift of the
 * machine cancels. Returns the median of the round ratios and the median
 * throughputs. */
static double measure(int par, double *off, double *on) {
  double a[2 * ROUNDS], b[2 * ROUNDS], ratio[ROUNDS];
  int na = 0, nb = 0;
  for (int r = 0; r < ROUNDS; r++) {
    a[na++] = run(par, false);
    b[nb++] = run(par, true);
    b[nb++] = run(par, true);
    a[na++] = run(par, false);
    ratio[r] = (b[nb - 2] + b[nb - 1]) / (a[na - 2] + a[na - 1]);
    if (getenv("BENCH_VERBOSE"))
      fprintf(stderr, "p%d off %.2fM on %.2fM on %.2fM off %.2fM ratio %.3f\n",
              par, a[na - 2] / 1e6, b[nb - 2] / 1e6, b[nb - 1] / 1e6,
              a[na - 1] / 1e6, ratio[r]);
  }
  *off = median(a, na);
  *on = median(b, nb);
  return median(ratio, ROUNDS);
}

int main(void) {
  if (getenv("BENCH_EVENTS"))
    N = strtoull(getenv("BENCH_EVENTS"), NULL, 10);
  events = malloc(N * sizeof(uint64_t));
  uint64_t x = 42;
  for (uint64_t i = 0; i < N; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    events[i] = x % KEYS;
  }
  /* BENCH_ONE=off|on: one P=1 run, for instruction counts under
   * valgrind --tool=callgrind --toggle-collect=sl__worker_main. */
  const char *one = getenv("BENCH_ONE");
  if (one) {
    printf("bench=metrics_overhead_one metrics=%s events_per_sec=%.0f\n", one,
           run(1, strcmp(one, "on") == 0));
    free(events);
    return 0;
  }
  double off1, on1, off2, on2;
  double r1 = measure(1, &off1, &on1);
  double r2 = measure(2, &off2, &on2);
  printf("bench=metrics_overhead events=%llu keys=%llu runs_each=%d "
         "p1_off_events_per_sec=%.0f p1_on_events_per_sec=%.0f "
         "p1_ratio_on_off=%.3f p2_off_events_per_sec=%.0f "
         "p2_on_events_per_sec=%.0f p2_ratio_on_off=%.3f scrapes=%d "
         "log_lines=%d render_us=%.1f\n",
         N, KEYS, 2 * ROUNDS, off1, on1, r1, off2, on2, r2, total_scrapes,
         total_lines, render_us);
  free(events);
  return 0;
}
