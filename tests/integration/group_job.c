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
 * whose transaction a record belongs to. With GROUP_JOB_BROADCAST set,
 * the counts pass through a keyed broadcast process function that
 * multiplies each by the factor in force at its window's end: the
 * latest record of topic "rules" (value: the factor as text, message
 * timestamp: from when) at or before it, 1 before the first; each count
 * waits in keyed state for an event-time timer at its window's end, so
 * the rules' watermark decides when it is judged. With exactly_once and
 * a store, each committed transaction is logged (stderr and, by its
 * checkpoint's name, CHECKPOINT_DIR/../commits), and that log stands in
 * for the group's committed offsets and their metadata (the checkpoint's
 * name), which the dev broker drops, when the process resolves a task's
 * pending checkpoint; with GROUP_JOB_KILL_ARM=<file> too, once the file
 * exists the process waits in a commit for its next output and dies at
 * the next commit, between the transaction's commit and _COMMITTED (the
 * fault point checkpoint.commit), so the output of that transaction is
 * committed and no pointer names its checkpoint yet. GROUP_JOB_REVIVE_MAX
 * sets group.revive.max.
 * In repartition mode the log also holds, per committed transaction, the
 * offsets of the input partitions it carried (read from the checkpoint's
 * snapshot files), and the lookup answers the input's partitions from
 * it: where a new owner of an upstream partition starts. On a real broker
 * (GROUP_JOB_REAL_BROKER set) there is no lookup (the broker keeps the
 * offsets of transactions), the job's name and its topics come from
 * GROUP_JOB_NAME, GROUP_JOB_IN and GROUP_JOB_OUT (default group-job, in,
 * out), and a dead process's open transaction is aborted after 20 s.
 *
 * With GROUP_JOB_TWO_STAGES set too (with GROUP_JOB_KEY_BY_VALUE), the
 * counts go through a second key_by, by group ("user-<i>" -> "g-<i/2>"),
 * to a tumbling 1 s sum of the counts per group ("total"): in
 * group.mode=repartition a second repartition topic.
 * With GROUP_JOB_SHAPE=window2 the counts go through a second key_by by
 * the same key (the records' own) to a tumbling 1 s sum of the counts
 * ("recount"): two keyed event-time operators in one keyed stage. With
 * GROUP_JOB_SHAPE=join the input goes, as left, into a tumbling 1 s
 * window join ("pairs") with its events at a whole second (ts % 1000 ==
 * 0, one per key and window, and the flush records) as right, each pair
 * one record, and a key_by by the same key counts the pairs per window
 * ("count"): a keyed operator of two inputs, then another. Both write
 * the counts of the plain job. With GROUP_JOB_SHAPE=process a process
 * function ("pass") hands each record on as it is, and a key_by by the
 * same key counts them ("count").
 * With GROUP_JOB_WM=custom the input's event time comes from a user
 * watermark generator (SL_WM_CUSTOM) instead of the bound 0 strategy:
 * per partition it keeps the highest timestamp seen and emits it minus
 * the bound minus 1 every watermark.interval.ms (a periodic generator
 * with state); with GROUP_JOB_WM=punctuated it emits each record's
 * timestamp minus the bound minus 1 after the record. Both give the
 * plain job's counts. GROUP_JOB_IDLE_MS sets the input's idle timeout.
 * usage: group-job BOOTSTRAP GROUP_MODE PARTITIONS
 *        [CHECKPOINT_DIR BACKEND [PARALLELISM]] */
#include <dirent.h>
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

#include "checkpoint/format.h"
#include "checkpoint/tasks.h"
#include "core/fault.h"
#include "core/fs.h"
#include "kafka/kafka_int.h"
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

static char store[1024], commit_log[1100], offsets_log[1100];
static bool repartition; /* group.mode=repartition */
static const char *in_topic = "in";
static const char *kill_arm;
static int kill_state; /* 0: not armed, 1: output seen, kill at next */

static void sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

/* The input positions of one snapshot file, appended to f. */
typedef struct offs_out {
  FILE *f;
  uint64_t id;
} offs_out;

static int log_position(const char *group, const char *topic, int32_t partition,
                        int64_t offset, void *arg) {
  (void)group;
  offs_out *o = arg;
  if (offset >= 0)
    fprintf(o->f, "%ld %" PRIu64 " %s %" PRId32 " %" PRId64 "\n",
            (long)getpid(), o->id, topic, partition, offset);
  return 0;
}

/* This process's instance directory (instances/<host>-<pid>-<start>)
 * in the store, "" when there is none: the newest, after a revival
 * (which writes into a new one). */
static void own_instance(char *inst, size_t len) {
  char insts[1100], pat[64];
  snprintf(insts, sizeof(insts), "%s/instances", store);
  snprintf(pat, sizeof(pat), "-%ld-", (long)getpid());
  inst[0] = '\0';
  long long newest = -1;
  DIR *d = opendir(insts);
  for (struct dirent *e; d && (e = readdir(d));) {
    const char *at = strstr(e->d_name, pat);
    long long start = at ? strtoll(at + strlen(pat), NULL, 10) : -1;
    if (at && start > newest) {
      newest = start;
      snprintf(inst, len, "instances/%s", e->d_name);
    }
  }
  if (d)
    closedir(d);
}

/* The offsets of source "in" that the transaction of checkpoint id
 * carried: the positions in this process's chk-<id>/w<i>.snap. */
static int log_offsets(uint64_t id) {
  char inst[300], path[1500];
  own_instance(inst, sizeof(inst));
  if (!inst[0])
    return SL_ERR_IO;
  FILE *f = fopen(offsets_log, "a");
  if (!f)
    return SL_ERR_IO;
  offs_out o = {f, id};
  int rc = 0;
  for (int w = 0; !rc; w++) {
    snprintf(path, sizeof(path), "%s/%s/chk-%" PRIu64 "/w%d.snap", store, inst,
             id, w);
    unsigned char *data;
    size_t len;
    if (sl__read_file(path, &data, &len))
      break; /* past the last worker */
    sl__snap_head h;
    sl__rd body, pl;
    uint32_t type, kg;
    char err[256];
    rc = sl__snap_check(data, len, &h, &body, err, sizeof(err));
    while (!rc && sl__snap_next(&body, &type, &kg, &pl) == 1) {
      const void *uid, *blob;
      size_t uid_len, blob_len;
      uint32_t sub;
      if (type != SL__SEC_SOURCE ||
          sl__snap_blob(pl, type, &uid, &uid_len, &sub, &blob, &blob_len) ||
          uid_len != 2 || memcmp(uid, "in", 2))
        continue;
      sl_blob_t b = {blob, blob_len};
      rc = sl__kpos_decode(&b, log_position, &o);
    }
    free(data);
  }
  fflush(f);
  if (!rc && fsync(fileno(f)))
    rc = SL_ERR_IO;
  fclose(f);
  return rc;
}

/* After the sink's participant: its transaction committed. */
static int log_commit(uint64_t id, void *opaque) {
  (void)opaque;
  if (repartition && log_offsets(id))
    return SL_ERR_IO;
  fprintf(stderr,
          "group-job: transaction of checkpoint %" PRIu64 " committed\n", id);
  char inst[300];
  own_instance(inst, sizeof(inst));
  FILE *f = inst[0] ? fopen(commit_log, "a") : NULL;
  if (!f)
    return SL_ERR_IO;
  /* The name the transaction's offsets carry as their metadata. */
  fprintf(f, "%s/chk-%" PRIu64 "\n", inst, id);
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

/* Whether the log holds the commit of checkpoint name. */
static bool logged(const char *name) {
  FILE *f = fopen(commit_log, "r");
  char n[512];
  bool found = false;
  while (f && fscanf(f, "%511s", n) == 1)
    found = found || strcmp(n, name) == 0;
  if (f)
    fclose(f);
  return found;
}

/* The offset of topic[partition] in the last committed transaction that
 * carried it (log_offsets), -1 when none did. */
static int64_t logged_offset(const char *topic, int32_t partition) {
  FILE *f = fopen(offsets_log, "r");
  long pid;
  uint64_t id;
  char t[256];
  int32_t p;
  int64_t off, last = -1;
  while (f && fscanf(f, "%ld %" SCNu64 " %255s %" SCNd32 " %" SCNd64, &pid, &id,
                     t, &p, &off) == 5)
    if (p == partition && strcmp(t, topic) == 0)
      last = off;
  if (f)
    fclose(f);
  return last;
}

/* What the group would have committed for a task's partition, had the
 * broker kept the offsets of the transactions, and the metadata with it
 * (the name of the checkpoint whose transaction carried it): the task's
 * pending checkpoint and the offset it recorded if its transaction
 * committed, else the pointer's checkpoint and offset, committed before
 * (no metadata when the pointer names none). */
static int lookup_logged(const char *group, const char *topic,
                         int32_t partition, int64_t *offset, char *metadata,
                         size_t metadata_size, void *opaque) {
  (void)group, (void)opaque;
  /* Upstream of the repartition topic: no task, no pointer. */
  if (repartition && strcmp(topic, in_topic) == 0) {
    *offset = logged_offset(topic, partition);
    return 0;
  }
  /* A repartition stage's pointer is named by its topic (version 2), a
   * co-partitioned task's by its partition alone. */
  char name[600], err[1024];
  sl__task_ptr p;
  snprintf(name, sizeof(name), "%s-%d", topic, (int)partition);
  *offset = -1;
  int r = sl__task_ptr_read_file(store, name, &p, err, sizeof(err));
  if (r == 0) {
    snprintf(name, sizeof(name), "%d", (int)partition);
    r = sl__task_ptr_read_file(store, name, &p, err, sizeof(err));
  }
  if (r != 1)
    return 0;
  *offset = p.offset;
  const char *chk = p.checkpoint;
  if (p.pending[0] && logged(p.pending)) {
    *offset = p.pending_offset;
    chk = p.pending;
  }
  snprintf(metadata, metadata_size, "%s", chk);
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

/* ---- GROUP_JOB_BROADCAST: counts times the factor in force ------------ */

typedef struct scale_states {
  sl_bstate_t *factors; /* big-endian from-time -> factor (int64) */
  sl_state_t *pending;  /* per key: window end -> count (int64) */
} scale_states;

static void be64(int64_t v, unsigned char out[8]) {
  uint64_t u = (uint64_t)v ^ (UINT64_C(1) << 63); /* sorts signed */
  for (int i = 7; i >= 0; i--, u >>= 8)
    out[i] = (unsigned char)u;
}

static int scale_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  scale_states *s = calloc(1, sizeof(*s));
  if (!s)
    return SL_ERR_NOMEM;
  sl_ctx_set_local(ctx, s);
  sl_state_desc_t d = {.name = "pending", .kind = SL_STATE_MAP};
  s->factors = sl_bstate_register(ctx, "factors");
  s->pending = sl_state_register(ctx, &d);
  return s->factors && s->pending ? 0 : SL_ERR_STATE;
}

static void scale_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static int scale_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  scale_states *s = sl_ctx_local(ctx);
  unsigned char mk[8];
  be64(rec->ts, mk);
  int rc =
      sl_map_put(ctx, s->pending, mk, sizeof(mk), rec->value, rec->value_len);
  return rc ? rc : sl_timer_set(ctx, SL_EVENT_TIME, rec->ts);
}

static int scale_rule(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  scale_states *s = sl_ctx_local(ctx);
  char text[32];
  snprintf(text, sizeof(text), "%.*s", (int)rec->value_len,
           (const char *)rec->value);
  int64_t factor = strtoll(text, NULL, 10);
  unsigned char mk[8];
  be64(rec->ts, mk);
  return sl_bstate_put(ctx, s->factors, mk, sizeof(mk), &factor,
                       sizeof(factor));
}

static int scale_timer(sl_ctx_t *ctx, sl_time_domain domain, int64_t ts,
                       void *opaque) {
  (void)domain;
  (void)opaque;
  scale_states *s = sl_ctx_local(ctx);
  unsigned char at[8];
  be64(ts, at);
  const void *v;
  size_t len;
  int rc = sl_map_get(ctx, s->pending, at, sizeof(at), &v, &len);
  if (rc != 1 || len != sizeof(int64_t))
    return rc < 0 ? rc : SL_ERR_STATE;
  int64_t count, factor = 1;
  memcpy(&count, v, sizeof(count));
  sl_bstate_iter_t it;
  const void *k, *f;
  size_t kl, fl;
  if ((rc = sl_bstate_iter(ctx, s->factors, &it)))
    return rc;
  while (sl_bstate_next(&it, &k, &kl, &f, &fl) == 1 && memcmp(k, at, 8) <= 0)
    memcpy(&factor, f, sizeof(factor));
  count *= factor;
  const void *key;
  size_t key_len;
  if ((rc = sl_ctx_key(ctx, &key, &key_len)))
    return rc;
  if ((rc = sl_map_remove(ctx, s->pending, at, sizeof(at))) < 0)
    return rc;
  sl_record_t out = {.key = key,
                     .key_len = key_len,
                     .value = &count,
                     .value_len = sizeof(count),
                     .ts = ts};
  return sl_emit(ctx, &out);
}

/* "user-<i>" -> "g-<i/2>". */
static int group_key(const sl_record_t *rec, const void **key, size_t *len,
                     void *opaque) {
  (void)opaque;
  static _Thread_local char buf[32];
  char k[32];
  snprintf(k, sizeof(k), "%.*s", (int)(rec->key_len < 31 ? rec->key_len : 31),
           (const char *)rec->key);
  int i = 0;
  if (sscanf(k, "user-%d", &i) != 1)
    return -1;
  *len = (size_t)snprintf(buf, sizeof(buf), "g-%d", i / 2);
  *key = buf;
  return 0;
}

static int count_of(const sl_record_t *rec, int64_t *out, void *opaque) {
  (void)opaque;
  if (rec->value_len != sizeof(*out))
    return -1;
  memcpy(out, rec->value, sizeof(*out));
  return 0;
}

static int value_key(const sl_record_t *rec, const void **key, size_t *len,
                     void *opaque) {
  (void)opaque;
  *key = rec->value;
  *len = rec->value_len;
  return 0;
}

static int at_whole_second(sl_ctx_t *ctx, const sl_record_t *rec,
                           void *opaque) {
  (void)ctx;
  (void)opaque;
  return rec->ts % 1000 == 0;
}

/* GROUP_JOB_WM=custom and punctuated: user watermark generators. */
static int gen_create(void **state, void *opaque) {
  (void)opaque;
  int64_t *max = malloc(sizeof(*max));
  if (!max)
    return -1;
  *max = INT64_MIN;
  *state = max;
  return 0;
}

static void gen_destroy(void *state, void *opaque) {
  (void)opaque;
  free(state);
}

static void gen_event(sl_wm_output_t *out, const sl_record_t *rec, void *state,
                      void *opaque) {
  (void)out;
  (void)opaque;
  int64_t *max = state;
  if (rec->ts > *max)
    *max = rec->ts;
}

static void gen_periodic(sl_wm_output_t *out, void *state, void *opaque) {
  const int64_t *max = state, *bound = opaque;
  if (*max != INT64_MIN)
    sl_wm_emit(out, *max - *bound - 1);
}

static void gen_punctuated(sl_wm_output_t *out, const sl_record_t *rec,
                           void *state, void *opaque) {
  (void)state;
  const int64_t *bound = opaque;
  sl_wm_emit(out, rec->ts - *bound - 1);
}

static const sl_watermark_gen_t periodic_gen = {.create = gen_create,
                                                .destroy = gen_destroy,
                                                .on_event = gen_event,
                                                .on_periodic = gen_periodic};
static const sl_watermark_gen_t punctuated_gen = {.on_event = gen_punctuated};

static int pass_on(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  return sl_emit(ctx, rec);
}

static int one_pair(sl_ctx_t *ctx, const sl_record_t *left,
                    const sl_record_t *right, void *opaque) {
  (void)right;
  (void)opaque;
  sl_record_t out = {left->key, left->key_len, "1", 1, left->ts};
  return sl_emit(ctx, &out);
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
  /* How often a fenced process revives (the library's default else). */
  const char *revive = getenv("GROUP_JOB_REVIVE_MAX");
  if (revive &&
      sl_conf_set(conf, "group.revive.max", revive, err, sizeof(err))) {
    fprintf(stderr, "group-job: %s\n", err);
    return 2;
  }
  /* Debugging a test: librdkafka's debug contexts, e.g. "cgrp". */
  const char *dbg = getenv("GROUP_JOB_KAFKA_DEBUG");
  if (dbg && sl_conf_set(conf, "kafka.debug", dbg, err, sizeof(err))) {
    fprintf(stderr, "group-job: %s\n", err);
    return 2;
  }
  bool real = getenv("GROUP_JOB_REAL_BROKER") != NULL;
  const char *name =
      real && getenv("GROUP_JOB_NAME") ? getenv("GROUP_JOB_NAME") : "group-job";
  const char *out_topic = "out";
  if (real && getenv("GROUP_JOB_IN"))
    in_topic = getenv("GROUP_JOB_IN");
  if (real && getenv("GROUP_JOB_OUT"))
    out_topic = getenv("GROUP_JOB_OUT");
  /* The broker aborts a dead process's transaction after this long; until
   * then it holds back read_committed readers of what it wrote. */
  if (real && sl_conf_set(conf, "kafka.transaction.timeout.ms", "20000", err,
                          sizeof(err))) {
    fprintf(stderr, "group-job: %s\n", err);
    return 2;
  }
  if (!(job = sl_job_new(name, conf, err, sizeof(err)))) {
    fprintf(stderr, "group-job: %s\n", err);
    return 2;
  }
  sl_kafka_source_opts_t so = {.start = SL_KAFKA_START_EARLIEST};
  sl_stream_t *src = sl_source_kafka(job, "in", in_topic, &so);
  bool by_value = getenv("GROUP_JOB_KEY_BY_VALUE") != NULL;
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED,
                            .bound_ms = by_value ? 10000 : 0};
  const char *idle = getenv("GROUP_JOB_IDLE_MS");
  if (idle)
    wm.idle_timeout_ms = strtoll(idle, NULL, 10);
  const char *gen = getenv("GROUP_JOB_WM");
  if (gen) {
    wm.kind = SL_WM_CUSTOM;
    wm.gen = strcmp(gen, "punctuated") == 0 ? &punctuated_gen : &periodic_gen;
    wm.gen_opaque = &wm.bound_ms;
  }
  sl_with_watermarks(src, &wm);
  sl_window_spec_t spec = sl_window_tumbling(1000);
  sl_window_fn_t fn = {.builtin = SL_AGG_COUNT};
  const char *shape = getenv("GROUP_JOB_SHAPE");
  sl_stream_t *w;
  if (shape && strcmp(shape, "join") == 0) {
    sl_stream_t *right = sl_filter(src, "whole", at_whole_second, NULL);
    w = sl_window_join(sl_key_by(src, NULL, NULL), sl_key_by(right, NULL, NULL),
                       "pairs", &spec, one_pair, NULL);
    w = sl_window(sl_key_by(w, NULL, NULL), "count", &spec, &fn, NULL);
  } else if (shape && strcmp(shape, "process") == 0) {
    sl_process_ops_t po = {.on_element = pass_on};
    w = sl_process(sl_key_by(src, NULL, NULL), "pass", &po, NULL);
    w = sl_window(sl_key_by(w, NULL, NULL), "count", &spec, &fn, NULL);
  } else {
    w = sl_window(sl_key_by(src, by_value ? value_key : NULL, NULL), "count",
                  &spec, &fn, NULL);
  }
  if (shape && strcmp(shape, "window2") == 0) {
    sl_window_fn_t sum = {.builtin = SL_AGG_SUM_INT, .num_int = count_of};
    w = sl_window(sl_key_by(w, NULL, NULL), "recount", &spec, &sum, NULL);
  }
  if (getenv("GROUP_JOB_TWO_STAGES")) {
    sl_window_fn_t sum = {.builtin = SL_AGG_SUM_INT, .num_int = count_of};
    w = sl_window(sl_key_by(w, group_key, NULL), "total", &spec, &sum, NULL);
  }
  if (getenv("GROUP_JOB_BROADCAST")) {
    sl_kafka_source_opts_t ro = {.start = SL_KAFKA_START_EARLIEST};
    sl_watermark_spec_t rwm = {.kind = SL_WM_BOUNDED};
    sl_stream_t *rules =
        sl_with_watermarks(sl_source_kafka(job, "rules", "rules", &ro), &rwm);
    sl_broadcast_process_ops_t bo = {.open = scale_open,
                                     .on_element = scale_element,
                                     .on_broadcast = scale_rule,
                                     .on_timer = scale_timer,
                                     .close = scale_close};
    w = sl_broadcast_process(sl_key_by(w, NULL, NULL), sl_broadcast(rules),
                             "scale", &bo, NULL);
  }
  sl_kafka_sink_opts_t ko = {.headers = proc_name ? proc_header : NULL};
  sl_sink_kafka(sl_map(w, "fmt", fmt_count, NULL), "out", out_topic, &ko);
  if (proc_name && argc >= 6) {
    snprintf(store, sizeof(store), "%s", argv[4]);
    snprintf(commit_log, sizeof(commit_log), "%s/../commits", argv[4]);
    snprintf(offsets_log, sizeof(offsets_log), "%s/../offsets", argv[4]);
    repartition = strcmp(argv[2], "repartition") == 0;
    kill_arm = getenv("GROUP_JOB_KILL_ARM");
    /* After the sink's participant, so a line means a committed
     * transaction. */
    sl_ckpt_participant_t part = {.commit = log_commit};
    if (!real)
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
