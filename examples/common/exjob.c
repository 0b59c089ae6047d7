/* SPDX-License-Identifier: Apache-2.0 */
/* The skeleton the example jobs share (see exjob.h): flags and config,
 * Kafka in and out, stopping on a signal or, bounded, at the end of what
 * the input topic held when the job started. */
#include "exjob.h"

#include <inttypes.h>
#include <sluice/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exutil.h"

/* The signal handler needs the job; sl_job_stop() and sl_job_stop_drain()
 * are async-signal-safe. */
static sl_job_t *volatile running_job;

static void on_signal(int sig) {
  if (running_job && sig == SIGUSR1)
    sl_job_stop_drain(running_job);
  else if (running_job)
    sl_job_stop(running_job);
}

static void usage(FILE *f, const char *prog, const char *conf, const char *in,
                  const char *out, const char *extra) {
  fprintf(f,
          "usage: %s [--config FILE] [--brokers host:port | --bootstrap-file "
          "F] [--set key=value ...]\n"
          "       [--in-topic T] [--alerts-topic T] [--print] "
          "[--exit-at-end]%s\n"
          "Reads %s, writes alerts to %s. Config defaults to %s; --set "
          "overrides it\n"
          "(e.g. --set parallelism=2 --set restore.from=latest). Without "
          "--brokers it uses the\n"
          "local dev broker (sluice-kafka-dev) through its bootstrap file. "
          "--exit-at-end reads\n"
          "what the input topic holds when the job starts, writes every "
          "alert and ends.\n",
          prog, extra ? extra : "", in, out, conf);
}

struct apply {
  sl_conf_t *conf;
  char *err;
  size_t errlen;
};

static int apply_set(const char *key, const char *value, void *opaque) {
  struct apply *ap = opaque;
  return sl_conf_set(ap->conf, key, value, ap->err, ap->errlen);
}

int ex_job_init(ex_job *ej, int argc, char **argv, const char *prog,
                const char *name, const char *default_conf,
                const char *in_topic, const char *alerts_topic) {
  return ex_job_init_ext(ej, argc, argv, prog, name, default_conf, in_topic,
                         alerts_topic, NULL, NULL, NULL);
}

int ex_job_init_ext(ex_job *ej, int argc, char **argv, const char *prog,
                    const char *name, const char *default_conf,
                    const char *in_topic, const char *alerts_topic,
                    const char *extra_usage, ex_job_flag_fn flag,
                    void *opaque) {
  memset(ej, 0, sizeof(*ej));
  ej->prog = prog;
  ej->in_topic = in_topic;
  ej->alerts_topic = alerts_topic;
  const char *config = default_conf, *brokers = NULL, *bootstrap = NULL;
  char err[512];
  sl_conf_t *sets = sl_conf_new();
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--print")) {
      ej->print = true;
      continue;
    }
    if (!strcmp(a, "--exit-at-end")) {
      ej->exit_at_end = true;
      continue;
    }
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout, prog, default_conf, in_topic, alerts_topic, extra_usage);
      exit(0);
    }
    int took = flag ? flag(a, v, opaque) : 0;
    if (took > 0) {
      i += took - 1;
      continue;
    }
    if (!v) {
      usage(stderr, prog, default_conf, in_topic, alerts_topic, extra_usage);
      exit(2);
    }
    i++;
    if (!strcmp(a, "--config"))
      config = v;
    else if (!strcmp(a, "--brokers"))
      brokers = v;
    else if (!strcmp(a, "--bootstrap-file"))
      bootstrap = v;
    else if (!strcmp(a, "--in-topic"))
      ej->in_topic = v;
    else if (!strcmp(a, "--alerts-topic"))
      ej->alerts_topic = v;
    else if (!strcmp(a, "--set")) {
      char *kv = strdup(v), *eq = kv ? strchr(kv, '=') : NULL;
      if (!eq) {
        fprintf(stderr, "%s: --set needs key=value, got \"%s\"\n", prog, v);
        exit(2);
      }
      *eq = '\0';
      if (sl_conf_set(sets, kv, eq + 1, err, sizeof(err))) {
        fprintf(stderr, "%s: --set %s\n", prog, err);
        exit(2);
      }
      free(kv);
    } else {
      usage(stderr, prog, default_conf, in_topic, alerts_topic, extra_usage);
      exit(2);
    }
  }
  sl_conf_t *conf = sl_conf_new();
  char addr[512];
  struct apply ap = {conf, err, sizeof(err)};
  err[0] = '\0';
  if (sl_conf_load_file(conf, config, err, sizeof(err)) ||
      ex_resolve_brokers(brokers, bootstrap, 10000, addr, sizeof(addr)) ||
      sl_conf_set(conf, "kafka.bootstrap.servers", addr, err, sizeof(err)) ||
      /* --set wins over the file: apply the overrides last. */
      sl_conf_foreach(sets, apply_set, &ap))
    goto fail;
  ej->bound_ms = EX_WATERMARK_BOUND_MS;
  ej->job = sl_job_new(name, conf, err, sizeof(err));
  if (!ej->job)
    goto fail;
  sl_conf_destroy(sets);
  return 0;
fail:
  /* ex_resolve_brokers printed its own reason and left err empty. */
  if (err[0])
    fprintf(stderr, "%s: %s\n", prog, err);
  sl_conf_destroy(conf);
  sl_conf_destroy(sets);
  return 1;
}

sl_stream_t *ex_job_source(ex_job *ej) {
  return ex_job_kafka_source(ej, "input", ej->in_topic, 0);
}

sl_stream_t *ex_job_kafka_source(ex_job *ej, const char *uid, const char *topic,
                                 int64_t idle_ms) {
  /* --exit-at-end: the input is bounded by the offsets that were latest
   * when the job first started (kept in checkpoints, so a restarted job
   * stops at the same place). A partition that reaches its stop offset is
   * finished (and recorded so in checkpoints); once all have, the source
   * ends, the maximum watermark fires every window and timer, and the job
   * ends with a final checkpoint, also when a restore finds every
   * partition already finished. */
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST,
                               .codec = SL_KAFKA_JSON,
                               .ts_pointer = "/ts",
                               .stop = ej->exit_at_end ? SL_KAFKA_STOP_LATEST
                                                       : SL_KAFKA_STOP_NONE};
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED,
                            .bound_ms = ej->bound_ms,
                            .idle_timeout_ms = ej->exit_at_end ? 0 : idle_ms};
  return sl_with_watermarks(sl_source_kafka(ej->job, uid, topic, &so), &wm);
}

sl_stream_t *ex_job_parse(ex_job *ej, sl_record_fn parse) {
  return sl_flat_map(ex_job_source(ej), "parse", parse, ej);
}

static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

static int print_alert(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                       void *opaque) {
  (void)ctx;
  (void)out;
  (void)opaque;
  /* Workers print concurrently; whole lines only. */
  pthread_mutex_lock(&print_lock);
  fwrite(in->value, 1, in->value_len, stdout);
  fputc('\n', stdout);
  fflush(stdout);
  pthread_mutex_unlock(&print_lock);
  return 0;
}

int ex_job_sink_alerts(ex_job *ej, sl_stream_t **alerts, size_t n) {
  sl_stream_t *all = n > 1 ? sl_union(alerts, n, "alerts.union") : alerts[0];
  if (ej->print)
    all = sl_map(all, "print", print_alert, NULL);
  return sl_sink_kafka(all, "alerts", ej->alerts_topic, NULL);
}

int ex_alert_emit(sl_ctx_t *ctx, const char *rule, const void *entity,
                  size_t entity_len, int64_t start, int64_t end,
                  const char *evidence) {
  size_t cap = 256 + 2 * entity_len + strlen(rule) + strlen(evidence);
  char *out = sl_ctx_alloc(ctx, cap);
  if (!out)
    return SL_ERR_NOMEM;
  int e = (int)entity_len;
  const char *ent = entity;
  int n =
      snprintf(out, cap,
               "{\"id\":\"%s/%.*s/%" PRId64 "-%" PRId64
               "\",\"rule\":\"%s\",\"entity\":\"%.*s\",\"start\":%" PRId64
               ",\"end\":%" PRId64 ",\"evidence\":{%s}}",
               rule, e, ent, start, end, rule, e, ent, start, end, evidence);
  sl_record_t r = {entity, entity_len, out, (size_t)n, end};
  return sl_emit(ctx, &r);
}

int ex_job_run(ex_job *ej) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  running_job = ej->job;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  int rc = sl_job_run(ej->job);
  if (rc)
    fprintf(stderr, "%s: %s: %s\n", ej->prog, sl_strerror(rc),
            sl_job_errmsg(ej->job));
  sl_op_stats_t in = {0}, parsed = {0}, out = {0};
  sl_job_op_stats(ej->job, "input", &in);
  sl_job_op_stats(ej->job, "parse", &parsed);
  sl_job_op_stats(ej->job, "alerts", &out);
  /* Bad records are both what the source could not decode (not JSON) and
   * what the parse step rejected (JSON, but not a valid event). */
  fprintf(stderr,
          "%s: read %" PRIu64 " records, wrote %" PRIu64 " alerts, %" PRIu64
          " bad records skipped\n",
          ej->prog, in.records_out, out.records_in, in.errors + parsed.errors);
  running_job = NULL;
  sl_job_destroy(ej->job);
  return rc ? 1 : 0;
}
