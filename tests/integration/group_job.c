/* SPDX-License-Identifier: Apache-2.0 */
/* The job the group-mode tests run as several processes: Kafka topic "in"
 * (message keys and timestamps) -> key_by -> tumbling 1 s count -> the
 * count as text -> Kafka topic "out". It runs until SIGTERM; its log
 * (stderr, level info) says how many partitions it reads after each
 * rebalance. With CHECKPOINT_DIR it checkpoints every 200 ms into that
 * shared store with state backend BACKEND (hashmap or rocksdb; its
 * RocksDB files under CHECKPOINT_DIR/../state-<pid>), and PARALLELISM
 * worker threads (default 1). With GROUP_JOB_KEY_BY_VALUE set, key_by
 * keys by the value instead of the message key, with a watermark bound
 * of 10 s (records read back from a repartition topic come from several
 * input partitions, out of order). With GROUP_JOB_EXACTLY_ONCE=<name>
 * the sink is exactly_once, with a transactional id of its own per name,
 * and every record carries the header gj.proc=<name>, so a test can tell
 * whose transaction a record belongs to. With exactly_once and a store,
 * each committed transaction is logged (stderr and CHECKPOINT_DIR/../
 * commits), and that log stands in for the group's committed offsets,
 * which the dev broker drops, when the process resolves a task's pending
 * checkpoint; with GROUP_JOB_KILL_ARM=<file> too, once the file exists
 * the process waits in a commit for its next output and dies at the
 * next commit, between the transaction's commit and _COMMITTED (the
 * fault point checkpoint.commit), so the output of that transaction is
 * committed and no pointer names its checkpoint yet.
 * usage: group-job BOOTSTRAP GROUP_MODE PARTITIONS
 *        [CHECKPOINT_DIR BACKEND [PARALLELISM]] */
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/fault.h"
#include "operator.h"
#include "sluice.h"

static sl_job_t *job;

static void on_term(int sig) {
  (void)sig;
  sl_job_stop(job);
}

static const char *proc_name;
static _Atomic uint64_t emitted; /* records handed to the sink */

static int proc_header(sl_ctx_t *ctx, const sl_record_t *rec,
                       sl_kafka_headers_t *h, void *opaque) {
  (void)ctx;
  (void)rec;
  (void)opaque;
  atomic_fetch_add(&emitted, 1);
  return sl_kafka_headers_add(h, "gj.proc", proc_name, strlen(proc_name));
}

/* ---- Exactly-once on the dev broker ----------------------------------- */

static char store[1024], commit_log[1100];
static const char *kill_arm;
static int kill_state; /* 0: not armed, 1: output seen, kill at next */

static void sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

/* After the sink's participant: its transaction committed. */
static int log_commit(uint64_t id, void *opaque) {
  (void)opaque;
  fprintf(stderr,
          "group-job: transaction of checkpoint %" PRIu64 " committed\n", id);
  FILE *f = fopen(commit_log, "a");
  if (!f)
    return SL_ERR_IO;
  fprintf(f, "%ld %" PRIu64 "\n", (long)getpid(), id);
  fflush(f);
  int rc = fsync(fileno(f));
  fclose(f);
  if (rc)
    return SL_ERR_IO;
  if (kill_state == 1) {
    fprintf(stderr,
            "group-job: dying before checkpoint %" PRIu64 "'s _COMMITTED\n",
            id);
    sl__fault_set("checkpoint.commit:kill");
  } else if (kill_arm && access(kill_arm, F_OK) == 0) {
    /* Output from now on is in the next transaction. */
    uint64_t was = atomic_load(&emitted);
    fprintf(stderr, "group-job: armed at checkpoint %" PRIu64 "\n", id);
    for (int i = 0; i < 60000 / 10 && atomic_load(&emitted) == was; i++)
      sleep_ms(10);
    kill_state = atomic_load(&emitted) > was;
    fprintf(stderr, "group-job: %s\n",
            kill_state ? "output after the armed commit"
                       : "no output after the armed commit");
    kill_arm = NULL;
  }
  return 0;
}

/* Whether the log holds the commit of checkpoint id by process pid. */
static bool logged(long pid, uint64_t id) {
  FILE *f = fopen(commit_log, "r");
  long p;
  uint64_t n;
  bool found = false;
  while (f && fscanf(f, "%ld %" SCNu64, &p, &n) == 2)
    found = found || (p == pid && n == id);
  if (f)
    fclose(f);
  return found;
}

/* What the group would have committed for a task's partition, had the
 * broker kept the offsets of the transactions: the offset the task's
 * pending checkpoint recorded if the transaction of that checkpoint
 * (instances/<host>-<pid>-<start>/chk-<id>) committed, else the one of
 * the pointer's checkpoint, committed before. */
static int lookup_logged(const char *group, const char *topic,
                         int32_t partition, int64_t *offset, void *opaque) {
  (void)group, (void)topic, (void)opaque;
  char path[1200];
  snprintf(path, sizeof(path), "%s/tasks/%d.json", store, (int)partition);
  *offset = -1;
  json_t *o = json_load_file(path, 0, NULL);
  if (!o)
    return 0;
  const char *pend = NULL;
  json_int_t off = -1, pend_off = -1;
  json_unpack(o, "{s:I,s?s,s?I}", "offset", &off, "pending", &pend,
              "pending_offset", &pend_off);
  *offset = off;
  const char *slash = pend ? strrchr(pend, '/') : NULL;
  if (slash && strncmp(slash, "/chk-", 5) == 0) {
    /* pid: between the last two dashes of the instance name. */
    const char *end = slash;
    while (end > pend && *end != '-')
      end--;
    const char *beg = end - 1;
    while (beg > pend && *beg != '-')
      beg--;
    if (logged(strtol(beg + 1, NULL, 10), strtoull(slash + 5, NULL, 10)))
      *offset = pend_off;
  }
  json_decref(o);
  return 0;
}

static int fmt_count(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                     void *opaque) {
  (void)opaque;
  int64_t n;
  memcpy(&n, in->value, sizeof(n));
  char *s = sl_ctx_alloc(ctx, 32);
  if (!s)
    return -1;
  out->value = s;
  out->value_len = (size_t)snprintf(s, 32, "%" PRId64, n);
  return 0;
}

static int value_key(const sl_record_t *rec, const void **key, size_t *len,
                     void *opaque) {
  (void)opaque;
  *key = rec->value;
  *len = rec->value_len;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4 || argc == 5 || argc > 7) {
    fprintf(stderr, "usage: group-job BOOTSTRAP GROUP_MODE PARTITIONS "
                    "[CHECKPOINT_DIR BACKEND [PARALLELISM]]\n");
    return 2;
  }
  const char *kv[] = {"kafka.bootstrap.servers",
                      argv[1],
                      "group.mode",
                      argv[2],
                      "group.partitions",
                      argv[3],
                      "kafka.log_level",
                      "2",
                      "log.level",
                      "info",
                      "broker.timeout.ms",
                      "20000",
                      "kafka.session.timeout.ms",
                      "6000",
                      "kafka.heartbeat.interval.ms",
                      "500",
                      NULL};
  char err[512];
  sl_conf_t *conf = sl_conf_new();
  for (int i = 0; kv[i]; i += 2)
    if (sl_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err))) {
      fprintf(stderr, "group-job: %s\n", err);
      return 2;
    }
  if (argc >= 6) {
    char state[1024];
    snprintf(state, sizeof(state), "%s/../state-%ld", argv[4], (long)getpid());
    const char *ck[] = {"parallelism",
                        argc == 7 ? argv[6] : "1",
                        "checkpoint.dir",
                        argv[4],
                        "checkpoint.interval.ms",
                        "200",
                        "state.backend",
                        argv[5],
                        "state.dir",
                        state,
                        NULL};
    for (int i = 0; ck[i]; i += 2)
      if (sl_conf_set(conf, ck[i], ck[i + 1], err, sizeof(err))) {
        fprintf(stderr, "group-job: %s\n", err);
        return 2;
      }
  }
  proc_name = getenv("GROUP_JOB_EXACTLY_ONCE");
  if (proc_name) {
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "group-job-%s", proc_name);
    if (sl_conf_set(conf, "sink.delivery.guarantee", "exactly_once", err,
                    sizeof(err)) ||
        sl_conf_set(conf, "sink.transactional.id.prefix", prefix, err,
                    sizeof(err))) {
      fprintf(stderr, "group-job: %s\n", err);
      return 2;
    }
  }
  /* Debugging a test: librdkafka's debug contexts, e.g. "cgrp". */
  const char *dbg = getenv("GROUP_JOB_KAFKA_DEBUG");
  if (dbg && sl_conf_set(conf, "kafka.debug", dbg, err, sizeof(err))) {
    fprintf(stderr, "group-job: %s\n", err);
    return 2;
  }
  if (!(job = sl_job_new("group-job", conf, err, sizeof(err)))) {
    fprintf(stderr, "group-job: %s\n", err);
    return 2;
  }
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "in", "in", &so);
  bool by_value = getenv("GROUP_JOB_KEY_BY_VALUE") != NULL;
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED,
                            .bound_ms = by_value ? 10000 : 0};
  sl_with_watermarks(src, &wm);
  sl_window_spec_t spec = sl_window_tumbling(1000);
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT};
  sl_stream_t *w = sl_window(sl_key_by(src, by_value ? value_key : NULL, NULL),
                             "count", &spec, &fn, NULL);
  sl_kafka_sink_opts_t ko = {.headers = proc_name ? proc_header : NULL};
  sl_sink_kafka(sl_map(w, "fmt", fmt_count, NULL), "out", "out", &ko);
  if (proc_name && argc >= 6) {
    snprintf(store, sizeof(store), "%s", argv[4]);
    snprintf(commit_log, sizeof(commit_log), "%s/../commits", argv[4]);
    kill_arm = getenv("GROUP_JOB_KILL_ARM");
    /* After the sink's participant, so a line means a committed
     * transaction. */
    sl_ckpt_participant_t part = {.commit = log_commit};
    sl_kafka_set_committed_lookup(job, lookup_logged, NULL);
    sl_job_add_ckpt_participant(job, &part);
  }
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  int rc = sl_job_run(job);
  if (rc)
    fprintf(stderr, "group-job: %s: %s\n", sl_strerror(rc), sl_job_errmsg(job));
  sl_job_destroy(job);
  return rc ? 1 : 0;
}
