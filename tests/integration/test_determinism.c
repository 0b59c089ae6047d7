/* SPDX-License-Identifier: Apache-2.0 */
/* Same input, same output, every way it can run: one recorded input (the
 * fraud generator's, seeded) on the dev broker, read by the fraud job at
 * parallelism 1 and 2 on both state backends, several times each, with
 * its partitions consumed in varied interleavings. Every run's distinct
 * alerts must be exactly those of the reference run (parallelism 1). */
#include <check.h>

#include "check_main.h"
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Enough input that the partitions a worker reads drift apart by more than
 * the job's ten-minute state TTL in event time (about 220 minutes of it in
 * all), still about a second per run. */
#define EVENTS 40000
#define SEED 7
#define REPEATS 3

/* The same records twice, in big batches (produced at full speed) and in
 * batches of four (as a slowly produced topic holds them): the broker
 * hands a consumer one batch per partition and fetch, so the partitions'
 * progress interleaves differently. */
static const struct input {
  const char *topic;
  int batch;
} inputs[] = {{"txns", 0}, {"txns.small", 4}};
#define N_INPUTS ((int)(sizeof(inputs) / sizeof(inputs[0])))

static const struct config {
  const char *backend;
  int parallelism;
} configs[] = {{"rocksdb", 1}, {"hashmap", 1}, {"rocksdb", 2}, {"hashmap", 2}};

static char work[] = "/tmp/sluice-determinism.XXXXXX";
static const char *build_root;
static pid_t broker = -1;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- alert sets ---------------------------------------------------------- */

typedef struct lines {
  char **v;
  size_t n;
} lines;

static int by_text(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The distinct lines of a file, sorted: a run's distinct alerts (a job
 * writes each alert once in a failure-free run; repeats would be kept out
 * by the comparison anyway). */
static lines read_set(const char *path) {
  lines l = {0};
  size_t cap = 0;
  FILE *f = fopen(path, "r");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  char *line = NULL;
  size_t lcap = 0;
  ssize_t len;
  while ((len = getline(&line, &lcap, f)) > 0) {
    while (len && line[len - 1] == '\n')
      line[--len] = '\0';
    if (!len)
      continue;
    if (l.n == cap) {
      cap = cap ? cap * 2 : 1024;
      l.v = realloc(l.v, cap * sizeof(*l.v));
      ck_assert_ptr_nonnull(l.v);
    }
    l.v[l.n++] = strdup(line);
  }
  free(line);
  fclose(f);
  qsort(l.v, l.n, sizeof(*l.v), by_text);
  size_t w = 0;
  for (size_t r = 0; r < l.n; r++) {
    if (w && !strcmp(l.v[w - 1], l.v[r]))
      free(l.v[r]);
    else
      l.v[w++] = l.v[r];
  }
  l.n = w;
  return l;
}

static void free_set(lines *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
}

/* Whether got == want; if not, msg says by how much and shows the first
 * differences. (The caller frees before it fails: a failed check does not
 * return.) */
static bool same_set(const lines *got, const lines *want, const char *what,
                     char *msg, size_t msglen) {
  size_t i = 0, k = 0, missing = 0, extra = 0;
  char shown[1024] = "";
  size_t used = 0;
  while (i < got->n || k < want->n) {
    int c = i == got->n ? 1 : k == want->n ? -1 : strcmp(got->v[i], want->v[k]);
    const char *line = c < 0 ? got->v[i] : want->v[k];
    if (c && missing + extra < 4 && used < sizeof(shown))
      used +=
          (size_t)snprintf(shown + used, sizeof(shown) - used, "\n  %s %.160s",
                           c < 0 ? "extra" : "missing", line);
    if (c < 0)
      extra++, i++;
    else if (c > 0)
      missing++, k++;
    else
      i++, k++;
  }
  snprintf(msg, msglen,
           "%s: %zu alerts, the reference %zu: %zu missing, %zu extra%s", what,
           got->n, want->n, missing, extra, shown);
  return !missing && !extra;
}

/* ---- runs ---------------------------------------------------------------- */

/* Runs the fraud job to the end of its input and returns the path of the
 * alerts it wrote (one JSON line each). Checkpoints every 100 ms on odd
 * runs: barriers are part of the interleaving too. */
static const char *run_job(const struct config *c, const struct input *in,
                           int run) {
  static char out[512];
  char dir[400];
  snprintf(dir, sizeof(dir), "%s/%s-p%d-%s-%d", work, c->backend,
           c->parallelism, in->topic, run);
  snprintf(out, sizeof(out), "%s/alerts.jsonl", dir);
  ck_assert_int_eq(sh("rm -rf '%s' && mkdir -p '%s'", dir, dir), 0);
  /* timeout: a job that never ends fails this run, not the whole suite. */
  int rc = sh("timeout -k 5 120 '%s/examples/fraud/fraud-job' "
              "--config '%s/examples/fraud/fraud.conf' "
              "--bootstrap-file '%s/bootstrap' --in-topic %s "
              "--alerts-topic alerts --set state.backend=%s "
              "--set parallelism=%d --set checkpoint.dir='%s/ckpt' "
              "--set state.dir='%s/state' %s --exit-at-end --print "
              ">'%s' 2>'%s/job.log'",
              build_root, SLUICE_SOURCE_ROOT, work, in->topic, c->backend,
              c->parallelism, dir, dir,
              run % 2 ? "--set checkpoint.interval.ms=100" : "", out, dir);
  if (rc)
    sh("tail -n 20 '%s/job.log' >&2", dir);
  ck_assert_msg(rc == 0, "%s P=%d on %s, run %d: fraud-job exit %d", c->backend,
                c->parallelism, in->topic, run, rc);
  return out;
}

/* The reference: parallelism 1 on RocksDB over the first input, made by
 * the first test that needs it (each test runs in its own process; the
 * file outlives it), read once per process and kept. */
static const lines *reference(void) {
  static lines ref;
  static bool loaded;
  if (!loaded) {
    char path[512];
    snprintf(path, sizeof(path), "%s/reference.jsonl", work);
    if (access(path, R_OK)) {
      const char *out = run_job(&configs[0], &inputs[0], 0);
      ck_assert_int_eq(rename(out, path), 0);
    }
    ref = read_set(path);
    loaded = true;
  }
  return &ref;
}

/* The reference itself: every rule fired, so agreeing with it means
 * something. */
START_TEST(reference_has_every_rule) {
  const lines *ref = reference();
  static const char *const rules[] = {"small_then_large", "velocity",
                                      "impossible_travel"};
  for (size_t r = 0; r < sizeof(rules) / sizeof(rules[0]); r++) {
    char pat[64];
    snprintf(pat, sizeof(pat), "\"rule\":\"%s\"", rules[r]);
    size_t n = 0;
    for (size_t i = 0; i < ref->n; i++)
      n += strstr(ref->v[i], pat) != NULL;
    ck_assert_msg(n >= 50, "the reference has %zu %s alerts", n, rules[r]);
  }
}
END_TEST

START_TEST(same_alerts_every_run) {
  const struct config *c = &configs[_i];
  const lines *ref = reference();
  for (int in = 0; in < N_INPUTS; in++)
    for (int run = 0; run < REPEATS; run++) {
      lines got = read_set(run_job(c, &inputs[in], run));
      char what[128], msg[2048];
      snprintf(what, sizeof(what), "%s P=%d on %s, run %d", c->backend,
               c->parallelism, inputs[in].topic, run);
      bool same = same_set(&got, ref, what, msg, sizeof(msg));
      free_set(&got);
      ck_assert_msg(same, "%s", msg);
    }
}
END_TEST

/* ---- the broker and the recorded input, shared by every test ------------- */

static int start_broker(void) {
  char bin[512], boot[512];
  snprintf(bin, sizeof(bin), "%s/tools/sluice-kafka-dev", build_root);
  snprintf(boot, sizeof(boot), "%s/bootstrap", work);
  broker = fork();
  if (broker < 0)
    return -1;
  if (broker == 0) {
    /* Its own process group: a Ctrl-C reaches it through us, in order. */
    setpgid(0, 0);
    char log[512];
    snprintf(log, sizeof(log), "%s/broker.log", work);
    if (!freopen(log, "w", stdout) || !freopen(log, "a", stderr))
      _exit(127);
    execl(bin, bin, "--bootstrap-file", boot, "--topic", "txns:4", "--topic",
          "txns.small:4", "--topic", "alerts:4", (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 200; i++) {
    struct stat st;
    if (!stat(boot, &st) && st.st_size > 0)
      return 0;
    usleep(50000);
  }
  fprintf(stderr, "the dev broker did not start (%s/broker.log)\n", work);
  return -1;
}

static void stop_broker(void) {
  if (broker <= 0)
    return;
  kill(broker, SIGTERM);
  for (int i = 0; i < 50; i++) {
    if (waitpid(broker, NULL, WNOHANG) == broker)
      return;
    usleep(100000);
  }
  kill(broker, SIGKILL);
  waitpid(broker, NULL, 0);
}

/* The generator is seeded: each input topic gets the same records, in the
 * same order per partition. */
static int record_inputs(void) {
  for (int i = 0; i < N_INPUTS; i++)
    if (sh("'%s/examples/fraud/fraud-gen' --bootstrap-file '%s/bootstrap' "
           "--topic %s --labels '%s/labels-%d.jsonl' --events %d --seed %d "
           "--batch %d",
           build_root, work, inputs[i].topic, work, i, EVENTS, SEED,
           inputs[i].batch)) {
      fprintf(stderr, "fraud-gen failed on %s\n", inputs[i].topic);
      return -1;
    }
  return 0;
}

int main(void) {
#ifdef __SANITIZE_THREAD__
  /* As test_examples.c: the example programs cannot run under gcc 12's
   * ThreadSanitizer. */
  fprintf(stderr, "skipped under ThreadSanitizer: the example programs "
                  "cannot run instrumented\n");
  return 77; /* meson: skipped */
#endif
  build_root = getenv("SLUICE_BUILD_ROOT");
  if (!build_root)
    build_root = SLUICE_SOURCE_ROOT "/build";
  if (!mkdtemp(work)) {
    perror(work);
    return 1;
  }
  int rc = EXIT_FAILURE;
  if (!start_broker() && !record_inputs()) {
    Suite *s = suite_create("determinism");
    TCase *tc = tcase_create("fraud");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, reference_has_every_rule);
    tcase_add_loop_test(tc, same_alerts_every_run, 0,
                        (int)(sizeof(configs) / sizeof(configs[0])));
    suite_add_tcase(s, tc);
    rc = tu_run(s);
  }
  stop_broker();
  sh("rm -rf '%s'", work);
  return rc;
}
