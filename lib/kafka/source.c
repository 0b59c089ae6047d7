/* SPDX-License-Identifier: Apache-2.0 */
/* The Kafka source: one consumer per subtask with partitions assigned by
 * the job (not by a group rebalance, so checkpoint positions map to
 * subtasks deterministically) or, in group mode, by the consumer group
 * (group.c), concrete start offsets, decode (raw, JSON
 * or user), per-partition watermarks and idleness, the end of bounded
 * partitions (is_end), positions in checkpoints, and offsets committed to
 * the group for lag monitoring. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/conf.h"
#include "graph/graph.h"
#include "kafka/group_int.h"
#include "kafka/kafka_int.h"
#include "kafka/owners_int.h"
#include "runtime/group.h"
#include "runtime/tasks.h"
#include "time/watermark.h"

#define MAX_SUBTASKS 1024
/* Position and high watermark are published this often, from the poll
 * loop: never per record. */
#define METRICS_EVERY_MS 1000

/* Broker timeouts are real time (sl__mono_ms) even when the job runs on a
 * manual clock (tests): a broker does not wait for a test's clock. */

typedef struct kpart {
  int topic; /* index in ksrc.topics */
  int32_t partition;
  int64_t next;      /* next offset to emit: the position in checkpoints */
  int64_t committed; /* last offset committed to the group */
  sl__wmgen wm;
  /* Its end-of-partition marker was read or its stop offset reached (now
   * or before a restore): it is not read any further and holds no
   * watermark back. */
  bool finished;
  int64_t end; /* stop offset of a bounded source; -1: none */
  size_t gidx; /* index among all partitions of the source (ksrc.ends) */
  /* Watermark alignment paused it (its watermark ran ahead): records
   * read are dropped, and it is read again from next once resumed. */
  bool paused;
  /* Group mode with checkpoints (runtime/tasks.h): the task's state is
   * being loaded on its worker, or the partition was revoked and waits
   * for the checkpoint that snapshots it; either way nothing of it is
   * emitted (records read are dropped; a loaded one is read again from
   * next). */
  bool loading, revoking;
  /* Group mode with tasks (task_wm): the task is held (tw_hold) since
   * its load at tw_loaded, until a record of the partition was read
   * (tw_seen) or, with an idle timeout, that long passed without one;
   * with a user generator also while its partition lags. A user
   * generator's watermark is sent while held, tw_sent the last; either
   * way the release is SL_TS_MAX. */
  bool tw_hold, tw_seen;
  int64_t tw_sent, tw_loaded;
  sl__kpart_stat *pm; /* published position and high watermark; NULL: none */
} kpart;

struct ksrc;

typedef struct ksub {
  struct ksrc *src;
  sl_source_ctx_t *ctx;
  rd_kafka_t *rk;
  rd_kafka_queue_t *q;
  kpart *parts;
  size_t n_parts;
  rd_kafka_message_t **msgs;
  size_t cap_msgs;
  const sl_watermark_spec_t *spec;
  int64_t limit; /* alignment: highest watermark still read (align_limit) */
  bool idle;
  bool started;         /* the first poll forwarded the restored watermark */
  size_t n_finished;    /* partitions with finished set */
  int64_t last_ok;      /* monotonic ms of the last sign of a live broker */
  int64_t last_metrics; /* monotonic ms of the last publication */
  const rd_kafka_topic_t *last_rkt;
  int last_topic;
  char keybuf[32];
  char *kbuf; /* decoded JSON string keys with escapes; reused */
  size_t kcap;
  /* Group mode: parts holds room for every partition and Kafka's group
   * decides which are in it (assigned, revoked). */
  bool group;
  sl__kgroup grp;
  /* Group mode, but the source only feeds broadcasts: not a member;
   * every process reads all of its partitions, from the earliest
   * offset, as one process would (docs/scaling.md). */
  bool bcast;
  size_t cap_parts;
  /* Group mode with checkpoints: per-task state moves with the
   * partitions. snaps keeps the positions of the last snapshots (a
   * completion may be passed on after the next snapshot was taken);
   * rev holds a revocation kept until a checkpoint triggered after it,
   * revoke_after, completed. */
  bool tasks, closing;
  /* Group mode with a task store, upstream of a repartition topic whose
   * writes are exactly once (the job has an exactly_once sink): the
   * partitions are no tasks, but their offsets go only into the
   * transactions, so a revoked one is kept like a task (rev) until a
   * checkpoint triggered after the revocation committed, and a lost one
   * fences the process. */
  bool eos_up;
  struct task_snap {
    uint64_t id;
    size_t n;
    struct task_pos {
      int topic;
      int32_t partition;
      int64_t offset;
    } * pos;
  } snaps[4];
  uint64_t published;
  rd_kafka_topic_partition_list_t *rev;
  uint64_t revoke_after;
  /* The task of partition p is task_base + p (runtime/tasks.h): its
   * keyed stage times group.partitions. */
  uint32_t task_base;
  /* Tasks with a user generator: each task's watermark is its
   * partition's generator's, sent to the keyed stage (task_wm). n_hold
   * partitions hold their tasks (with or without one). */
  bool tw;
  size_t n_hold;
  /* Exactly-once in a group: monotonic ms of the last poll, and the
   * pause between two polls after which the member asks whether it is
   * still one before it takes what it read (read_lost). */
  int64_t polled, pause_ms;
} ksub;

typedef struct rpos {
  int topic;
  int32_t partition;
  int64_t offset;
  bool timed; /* time holds the partition's event time at the checkpoint */
  sl__kpos_time time;
} rpos;

struct ksrc {
  sl_source_ops_t ops;
  sl__kjob *kj;
  char *uid;
  /* Group mode with repartition topics: this source reads one back (its
   * partitions are the tasks); the job's other sources are upstream of
   * it, stateless, and read their topics with any partitioning. */
  bool repart;
  /* Its node in the job's graph: whether it only feeds broadcasts. */
  const struct sl__node *node;
  char **topics; /* sorted */
  int n_topics;
  char *group; /* NULL: from conf at open */
  sl_kafka_source_opts_t o;
  char *key_ptr, *ts_ptr;
  /* JSON codec: key and timestamp pointers compiled for the scanner;
   * fast is false when a pointer is too deep (jansson then). */
  sl__jptr *jp;
  size_t n_jp;
  int jkey, jts; /* index in jp, or -1 */
  bool fast;
  pthread_mutex_t lock;
  rpos *restored;
  size_t n_restored;
  bool restoring;
  sl_kafka_offset_t *stop_offs; /* opts' stop_offsets, copied */
  size_t n_stop_offs;
  /* The stop offset of every partition (by gidx), resolved once for the
   * whole source by the first subtask that opens (under lock), so
   * "latest" means one moment for every partition. */
  int64_t *ends;
  size_t n_ends;
  /* Watermark alignment: each subtask's minimum watermark over its
   * active partitions (SL_TS_MAX: none), for every other subtask;
   * SL_TS_MIN until the subtask first published it, so no partition
   * runs ahead of a subtask that has not started yet. */
  _Atomic int64_t align_wm[MAX_SUBTASKS];
  /* The highest watermark each subtask forwarded (forward_wm), for
   * every other subtask: what a keyed operator fed by this source may
   * have reached (task_wm_reach). */
  _Atomic int64_t fwd_wm[MAX_SUBTASKS];
  ksub *sub[MAX_SUBTASKS];
};
typedef struct ksrc ksrc;

static void ksrc_free(void *p) {
  ksrc *s = p;
  for (int i = 0; i < s->n_topics; i++)
    free(s->topics[i]);
  free(s->topics);
  free(s->uid);
  free(s->group);
  free(s->key_ptr);
  free(s->ts_ptr);
  free(s->jp);
  free(s->restored);
  for (size_t i = 0; i < s->n_stop_offs; i++)
    free((char *)s->stop_offs[i].topic);
  free(s->stop_offs);
  free(s->ends);
  pthread_mutex_destroy(&s->lock);
  free(s);
}

static int topic_index(const ksrc *s, const char *name) {
  for (int i = 0; i < s->n_topics; i++)
    if (strcmp(s->topics[i], name) == 0)
      return i;
  return -1;
}

static const char *group_of(const ksrc *s, sl_source_ctx_t *ctx, char *buf,
                            size_t cap) {
  if (s->group)
    return s->group;
  const char *g = sl__kconf_get(sl_op_conf(sl_source_op(ctx)), "group.id");
  if (g && *g)
    return g;
  snprintf(buf, cap, "sluice-%s", s->kj->name);
  return buf;
}

static int64_t min_wm(const ksub *k, bool *all_idle);

/* ---- Restore: union of every old subtask's positions ----------------------
 */

static int restore_visit(const char *group, const char *topic,
                         int32_t partition, int64_t offset,
                         const sl__kpos_time *time, void *arg) {
  (void)group;
  ksrc *s = arg;
  int t = topic_index(s, topic);
  if (t < 0)
    return 0; /* a topic no longer read */
  rpos *r = realloc(s->restored, (s->n_restored + 1) * sizeof(*r));
  if (!r)
    return SL_ERR_NOMEM;
  s->restored = r;
  s->restored[s->n_restored++] =
      (rpos){t, partition, offset, time != NULL,
             time ? *time
                  : (sl__kpos_time){SL_TS_MIN, false, false, false, false, -1}};
  return 0;
}

static int ksrc_restore(sl_source_ctx_t *ctx, const sl_blob_t *positions,
                        size_t n, void *opaque) {
  ksrc *s = opaque;
  int rc = 0;
  pthread_mutex_lock(&s->lock);
  /* Every subtask receives the same union; decode it once. */
  if (!s->restoring) {
    s->restoring = true;
    for (size_t i = 0; i < n && !rc; i++)
      rc = sl__kpos_decode_time(&positions[i], restore_visit, s);
  }
  pthread_mutex_unlock(&s->lock);
  if (rc)
    return sl_source_fail(ctx, rc, "cannot restore Kafka positions: %s",
                          sl_strerror(rc));
  return 0;
}

static const rpos *restored_of(const ksrc *s, int topic, int32_t partition) {
  for (size_t i = 0; i < s->n_restored; i++)
    if (s->restored[i].topic == topic && s->restored[i].partition == partition)
      return &s->restored[i];
  return NULL;
}

static bool restored_offset(ksrc *s, int topic, int32_t partition,
                            int64_t *off) {
  const rpos *r = restored_of(s, topic, partition);
  if (r)
    *off = r->offset;
  return r != NULL;
}

/* ---- Open: metadata, assignment, start offsets ----------------------------
 */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Partition counts of every topic, retrying while the cluster is not
 * reachable or the topic has no leader yet, up to broker.timeout.ms. */
static int topic_partitions(sl_source_ctx_t *ctx, ksrc *s, ksub *k,
                            int *counts) {
  sl_ctx_t *op = sl_source_op(ctx);
  int64_t timeout = sl__conf_int(sl_op_conf(op), "broker.timeout.ms");
  int64_t start = sl__mono_ms();
  char why[512] = "";
  for (int attempt = 0;; attempt++) {
    bool all = true;
    for (int t = 0; t < s->n_topics; t++) {
      counts[t] = 0;
      rd_kafka_topic_t *rkt = rd_kafka_topic_new(k->rk, s->topics[t], NULL);
      const struct rd_kafka_metadata *md = NULL;
      rd_kafka_resp_err_t e = rkt ? rd_kafka_metadata(k->rk, 0, rkt, &md, 2000)
                                  : rd_kafka_last_error();
      if (!e && md->topic_cnt == 1 && !md->topics[0].err &&
          md->topics[0].partition_cnt > 0)
        counts[t] = md->topics[0].partition_cnt;
      else
        snprintf(why, sizeof(why), "topic %s: %s", s->topics[t],
                 rd_kafka_err2str(e ? e
                                  : md && md->topic_cnt
                                      ? md->topics[0].err
                                      : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
      if (md)
        rd_kafka_metadata_destroy(md);
      if (rkt)
        rd_kafka_topic_destroy(rkt);
      all = all && counts[t] > 0;
    }
    if (all)
      return 0;
    if (sl_op_job_failing(op))
      return SL_ERR_STOPPED;
    int64_t now = sl__mono_ms();
    if (now - start >= timeout)
      return sl_source_fail(ctx, SL_ERR_KAFKA,
                            "no metadata after %" PRId64
                            " ms (broker.timeout.ms): %s",
                            timeout, why);
    if (attempt == 0)
      sl__klog(s->kj, SL__LOG_WARN, "source %s: waiting for metadata: %s",
               s->uid, why);
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* Turns the start position into a concrete offset per partition, so that
 * a checkpoint taken before the first message still names a position. */
static int start_offsets(sl_source_ctx_t *ctx, ksrc *s, ksub *k,
                         const char *group) {
  sl_ctx_t *op = sl_source_op(ctx);
  const sl_conf_t *conf = sl_op_conf(op);
  int timeout = (int)sl__conf_int(conf, "broker.timeout.ms");
  sl_kafka_start mode = s->o.start;
  int64_t ts = s->o.start_ts_ms;
  if (mode == SL_KAFKA_START_DEFAULT) {
    mode = (sl_kafka_start)(SL_KAFKA_START_EARLIEST +
                            sl__conf_enum(conf, "source.startup.mode"));
    ts = sl__conf_int(conf, "source.startup.timestamp.ms");
  }
  /* Broadcast state is not restored in group mode and a process may
   * join at any time: only the whole topic gives every process the same
   * state (Kafka Streams bootstraps a global table the same way). */
  if (k->bcast)
    mode = SL_KAFKA_START_EARLIEST;
  const char *reset = sl__kconf_get(conf, "auto.offset.reset");
  bool reset_latest =
      reset && (strcmp(reset, "latest") == 0 || strcmp(reset, "largest") == 0 ||
                strcmp(reset, "end") == 0);
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)k->n_parts);
  for (size_t i = 0; i < k->n_parts; i++) {
    rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(
        l, s->topics[k->parts[i].topic], k->parts[i].partition);
    tp->offset = ts;
  }
  rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
  if (mode == SL_KAFKA_START_COMMITTED)
    e = rd_kafka_committed(k->rk, l, timeout);
  else if (mode == SL_KAFKA_START_TIMESTAMP)
    e = rd_kafka_offsets_for_times(k->rk, l, timeout);
  if (e) {
    rd_kafka_topic_partition_list_destroy(l);
    return sl_source_fail(ctx, SL_ERR_KAFKA, "start offsets (group %s): %s",
                          group, rd_kafka_err2str(e));
  }
  int rc = 0;
  for (size_t i = 0; i < k->n_parts && !rc; i++) {
    kpart *p = &k->parts[i];
    int64_t off = -1;
    if (restored_offset(s, p->topic, p->partition, &p->next))
      continue;
    if (mode == SL_KAFKA_START_COMMITTED || mode == SL_KAFKA_START_TIMESTAMP)
      off = l->elems[i].err ? -1 : l->elems[i].offset;
    if (off < 0) {
      int64_t lo, hi;
      e = rd_kafka_query_watermark_offsets(k->rk, s->topics[p->topic],
                                           p->partition, &lo, &hi, timeout);
      if (e) {
        rc = sl_source_fail(ctx, SL_ERR_KAFKA, "offsets of %s[%" PRId32 "]: %s",
                            s->topics[p->topic], p->partition,
                            rd_kafka_err2str(e));
        break;
      }
      bool latest = mode == SL_KAFKA_START_LATEST ||
                    mode == SL_KAFKA_START_TIMESTAMP ||
                    (mode == SL_KAFKA_START_COMMITTED && reset_latest);
      off = latest ? hi : lo;
    }
    p->next = off;
  }
  rd_kafka_topic_partition_list_destroy(l);
  return rc;
}

static bool bounded(const ksrc *s) {
  return s->o.is_end != NULL || s->o.stop != SL_KAFKA_STOP_NONE;
}

/* Resolves the stop offset of every partition of the source (counts:
 * partitions per topic, total of them): the one a checkpoint recorded,
 * else from opts.stop. SL_OK, SL_ERR_NOMEM, or SL_ERR_KAFKA with *ke. */
static int resolve_ends(ksrc *s, rd_kafka_t *rk, const int *counts,
                        size_t total, int timeout, rd_kafka_resp_err_t *ke) {
  if (!(s->ends = calloc(total ? total : 1, sizeof(*s->ends))))
    return SL_ERR_NOMEM;
  s->n_ends = total;
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)total);
  for (int t = 0; t < s->n_topics; t++)
    for (int32_t p = 0; p < counts[t]; p++)
      rd_kafka_topic_partition_list_add(l, s->topics[t], p)->offset =
          s->o.stop_ts_ms;
  rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
  if (s->o.stop == SL_KAFKA_STOP_TIMESTAMP)
    e = rd_kafka_offsets_for_times(rk, l, timeout);
  for (size_t i = 0; i < total && !e; i++) {
    const rd_kafka_topic_partition_t *tp = &l->elems[i];
    int t = topic_index(s, tp->topic);
    const rpos *r = restored_of(s, t, tp->partition);
    int64_t end = -1, lo, hi;
    if (r && r->timed && r->time.bounded)
      end = r->time.end;
    else if (s->o.stop == SL_KAFKA_STOP_TIMESTAMP)
      end = tp->err ? -1 : tp->offset;
    else if (s->o.stop == SL_KAFKA_STOP_OFFSETS)
      for (size_t j = 0; j < s->n_stop_offs; j++)
        if (s->stop_offs[j].partition == tp->partition &&
            !strcmp(s->stop_offs[j].topic, tp->topic))
          end = s->stop_offs[j].offset;
    if (end < 0) {
      e = rd_kafka_query_watermark_offsets(rk, tp->topic, tp->partition, &lo,
                                           &hi, timeout);
      end = hi;
    }
    s->ends[i] = end;
  }
  rd_kafka_topic_partition_list_destroy(l);
  if (e) {
    free(s->ends);
    s->ends = NULL;
    *ke = e;
    return SL_ERR_KAFKA;
  }
  return SL_OK;
}

/* The stop offset of each of the subtask's partitions, for a source
 * bounded by position. A partition whose position is already at or past
 * it is finished. */
static int stop_offsets(sl_source_ctx_t *ctx, ksrc *s, ksub *k,
                        const int *counts, size_t total) {
  if (s->o.stop == SL_KAFKA_STOP_NONE)
    return 0;
  int timeout =
      (int)sl__conf_int(sl_op_conf(sl_source_op(ctx)), "broker.timeout.ms");
  rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
  int rc = 0;
  pthread_mutex_lock(&s->lock);
  if (!s->ends)
    rc = resolve_ends(s, k->rk, counts, total, timeout, &e);
  bool same = s->ends && s->n_ends == total;
  for (size_t i = 0; i < k->n_parts && same; i++) {
    kpart *p = &k->parts[i];
    p->end = s->ends[p->gidx];
    if (!p->finished && p->next >= p->end) {
      p->finished = true;
      k->n_finished++;
    }
  }
  pthread_mutex_unlock(&s->lock);
  if (rc == SL_ERR_NOMEM)
    return rc;
  if (rc)
    return sl_source_fail(ctx, SL_ERR_KAFKA, "stop offsets of %s: %s", s->uid,
                          rd_kafka_err2str(e));
  if (!same)
    return sl_source_fail(ctx, SL_ERR_KAFKA,
                          "stop offsets of %s: the number of partitions "
                          "changed while the source opened",
                          s->uid);
  return 0;
}

/* Position and high watermark per partition. The high watermark is
 * librdkafka's cached value from the last fetch response (no request). */
static void update_metrics(ksrc *s, ksub *k, int64_t mono) {
  k->last_metrics = mono;
  for (size_t i = 0; i < k->n_parts; i++) {
    kpart *p = &k->parts[i];
    if (!p->pm || p->next < 0) /* group mode: no message yet */
      continue;
    int64_t lo, hi = -1;
    if (rd_kafka_get_watermark_offsets(k->rk, s->topics[p->topic], p->partition,
                                       &lo, &hi) ||
        hi < 0)
      hi = -1;
    sl__kstats_partition_update(p->pm, p->next, hi);
  }
}

/* ---- Group mode: partitions from the consumer group ----------------------
 */

/* Exactly-once: whether the transaction of the checkpoint p names
 * pending (its previous owner died, or was fenced, between naming it and
 * pointing the task at it) committed: 1, 0, or an error. The _COMMITTED
 * mark says yes; a checkpoint without metadata never reached its commit;
 * otherwise the transaction carried the partition's offset with the
 * group, named by the checkpoint in the offset's commit metadata, so it
 * committed iff the group's committed offset carries that name (no owner
 * of the task commits an offset for it after the one that named it
 * pending: each names its own checkpoint pending first);
 * sl__ktxn_pending_committed. */
static int pending_committed(ksub *k, const sl__task_ptr *p, char *err,
                             size_t errlen) {
  ksrc *s = k->src;
  switch (sl__task_pending_state(sl_source_op(k->ctx), p)) {
  case SL__TASK_CKPT_COMMITTED:
    return 1;
  case SL__TASK_CKPT_NONE:
    return 0;
  }
  char gbuf[256];
  const char *group = group_of(s, k->ctx, gbuf, sizeof(gbuf));
  int rc = sl__ktxn_pending_committed(s->kj, group, p->topic, p->partition,
                                      p->pending, p->pending_offset);
  if (rc < 0)
    snprintf(err, errlen,
             "cannot read the offset group %s committed for %s[%" PRId32
             "] to resolve checkpoint %s: %s",
             group, p->topic, p->partition, p->pending, sl_strerror(rc));
  return rc;
}

/* Group mode with checkpoints: the task of a new partition is loaded
 * from the snapshot its pointer names, and the partition starts at the
 * offset stored with it; a task without a pointer starts empty, at the
 * group's committed offset. Until the owning worker has the state, the
 * partition emits nothing. */
static void task_assigned(ksub *k, kpart *kp, rd_kafka_topic_partition_t *tp) {
  ksrc *s = k->src;
  sl_ctx_t *op = sl_source_op(k->ctx);
  sl__task_ptr ptr;
  char err[1024];
  uint32_t task = k->task_base + (uint32_t)tp->partition;
  /* Named as its pointer is: by partition with one keyed stage, by topic
   * and partition with repartition topics. */
  char name[300];
  if (sl__kgroup_repartition(k->grp.conf))
    snprintf(name, sizeof(name), "%s-%" PRId32, tp->topic, tp->partition);
  else
    snprintf(name, sizeof(name), "%" PRId32, tp->partition);
  int r =
      sl__task_read(op, task, tp->topic, tp->partition, &ptr, err, sizeof(err));
  if (r < 0) {
    sl__kgroup_fail(&k->grp, r, "task %s: %s", name, err);
    return;
  }
  if (r == 1 &&
      (strcmp(ptr.topic, tp->topic) || ptr.partition != tp->partition ||
       strcmp(ptr.source, s->uid))) {
    sl__kgroup_fail(&k->grp, SL_ERR_STATE,
                    "task %s: its pointer names %s[%" PRId32
                    "] of source %s, not %s[%" PRId32 "] of %s",
                    name, ptr.topic, ptr.partition, ptr.source, tp->topic,
                    tp->partition, s->uid);
    return;
  }
  if (r == 1 && ptr.pending[0]) {
    int c = pending_committed(k, &ptr, err, sizeof(err));
    if (c < 0) {
      sl__kgroup_fail(&k->grp, c, "task %s: %s", name, err);
      return;
    }
    sl__klog(s->kj, SL__LOG_INFO,
             "source %s: task %s: the transaction of checkpoint %s "
             "%s",
             s->uid, name, ptr.pending,
             c ? "committed: restoring from it"
               : "did not commit: restoring from the one before");
    if (c) {
      snprintf(ptr.checkpoint, sizeof(ptr.checkpoint), "%s", ptr.pending);
      ptr.offset = ptr.pending_offset;
    }
    ptr.pending[0] = '\0';
    ptr.pending_offset = -1;
    /* A pointer without a snapshot stays as it is: its pending one is
     * resolved the same way again, and this process's first pointer
     * replaces it. */
    if (ptr.checkpoint[0] &&
        (r = sl__task_settle(op, &ptr, err, sizeof(err)))) {
      if (r == SL__TASK_PTR_MOVED)
        sl__kgroup_fence(&k->grp, "%s", err);
      else
        sl__kgroup_fail(&k->grp, r, "%s", err);
      return;
    }
    r = 1;
  }
  bool snap = r == 1 && ptr.checkpoint[0];
  if (snap) {
    tp->offset = kp->next = ptr.offset;
  } else {
    /* The generation of what is there (a pointer without a snapshot),
     * which this process's first pointer follows. */
    ptr = (sl__task_ptr){.task = task,
                         .partition = tp->partition,
                         .offset = -1,
                         .pending_offset = -1,
                         .gen = r == 1 ? ptr.gen : 0,
                         .stamp = r == 1 ? ptr.stamp : 0,
                         .legacy = r == 1 && ptr.legacy};
    snprintf(ptr.source, sizeof(ptr.source), "%s", s->uid);
    snprintf(ptr.topic, sizeof(ptr.topic), "%s", tp->topic);
  }
  kp->loading = true;
  sl__task_load(op, task, &ptr);
  sl__klog(s->kj, SL__LOG_INFO,
           "source %s: task %s: %s%s, from offset %" PRId64, s->uid, name,
           snap ? "restoring from " : "no snapshot", snap ? ptr.checkpoint : "",
           kp->next);
}

/* Upstream of an exactly-once repartition topic: the group's committed
 * offset of a partition is the one the last committed transaction that
 * carried it holds (its previous owner let it go only after that commit).
 * The consumer fetches it from a real broker by itself; a job with a
 * committed lookup (sl_kafka_set_committed_lookup: the dev broker drops
 * offsets sent with a transaction) answers it here. */
static void upstream_assigned(ksub *k, rd_kafka_topic_partition_t *tp) {
  ksrc *s = k->src;
  if (!s->kj->committed)
    return;
  char gbuf[256];
  const char *group = group_of(s, k->ctx, gbuf, sizeof(gbuf));
  int64_t off;
  int rc =
      sl__ktxn_committed(s->kj, group, tp->topic, tp->partition, &off, NULL, 0);
  if (rc) {
    sl__kgroup_fail(&k->grp, rc,
                    "cannot read the offset group %s committed for "
                    "%s[%" PRId32 "]: %s",
                    group, tp->topic, tp->partition, sl_strerror(rc));
    return;
  }
  if (off >= 0)
    tp->offset = off;
}

/* New partitions start at the group's committed offset (else
 * auto.offset.reset), with event time from the minimum. */
static void group_assigned(void *sub, rd_kafka_topic_partition_list_t *l) {
  ksub *k = sub;
  ksrc *s = k->src;
  int64_t now = sl_ctx_now(sl_source_op(k->ctx));
  int64_t interval = sl__conf_int(k->grp.conf, "watermark.interval.ms");
  /* Every topic has the declared partition count (sl__kgroup_check). */
  size_t parts = (size_t)sl__conf_int(k->grp.conf, "group.partitions");
  for (int i = 0; i < l->cnt; i++) {
    rd_kafka_topic_partition_t *tp = &l->elems[i];
    tp->offset = RD_KAFKA_OFFSET_INVALID;
    int t = topic_index(s, tp->topic);
    if (t < 0 || k->n_parts == k->cap_parts) {
      sl__kgroup_fail(&k->grp, SL_ERR_KAFKA,
                      "assigned %s[%" PRId32 "], which the job does not read",
                      tp->topic, tp->partition);
      continue;
    }
    kpart *kp = &k->parts[k->n_parts++];
    memset(kp, 0, sizeof(*kp));
    kp->topic = t;
    kp->partition = tp->partition;
    kp->next = -1; /* known once its first message arrives */
    kp->committed = -1;
    kp->end = -1; /* bounded reads do not apply in group mode */
    kp->gidx = (size_t)t * parts + (size_t)tp->partition;
    sl__wmgen_init(&kp->wm, k->spec, now);
    if (sl__wmgen_open(&kp->wm, interval))
      sl__kgroup_fail(&k->grp, SL_ERR_NOMEM,
                      "watermark generator of %s[%" PRId32 "]: create failed",
                      tp->topic, tp->partition);
    kp->pm = sl__kstats_partition(s->kj, s->uid, s->topics[t], tp->partition);
    if (k->tasks)
      task_assigned(k, kp, tp);
    else if (k->eos_up)
      upstream_assigned(k, tp);
  }
}

/* The index in k->parts of tp's partition; n_parts when not held. */
static size_t part_of(const ksrc *s, const ksub *k,
                      const rd_kafka_topic_partition_t *tp) {
  int t = topic_index(s, tp->topic);
  size_t j = 0;
  while (j < k->n_parts &&
         (k->parts[j].topic != t || k->parts[j].partition != tp->partition))
    j++;
  return j;
}

static void forget(ksrc *s, ksub *k, size_t j) {
  kpart *p = &k->parts[j];
  k->n_finished -= p->finished;
  k->n_hold -= p->tw_hold;
  sl__kstats_partition_remove(s->kj, p->pm);
  sl__wmgen_close(&p->wm);
  k->parts[j] = k->parts[--k->n_parts];
}

/* Group mode with checkpoints: a revoked task is kept, emitting nothing
 * more, until a checkpoint triggered now has snapshotted it and its
 * pointer names that snapshot (task_complete); then its state is dropped
 * and the partition let go. An upstream partition of an exactly-once
 * repartition topic (eos_up) is kept the same way, until the transaction
 * of such a checkpoint carried its offset (release_revoked). A task
 * still loading (nothing of it was emitted here) goes at once, and so
 * does everything after a rebalance error (now) and when the consumer
 * closes (the final checkpoint has already published them). A partition
 * librdkafka calls lost is kept too (at-least-once): if another member
 * owns it already, the pointer written here is still a consistent pair
 * of state and offset, only older than that member's next one (its
 * records may be read twice). With exactly-once it fences the process. */
static bool task_revoked(ksub *k, const rd_kafka_topic_partition_list_t *l,
                         bool now) {
  ksrc *s = k->src;
  sl_ctx_t *op = sl_source_op(k->ctx);
  bool keep = false;
  /* Exactly-once: a lost assignment may already be another member's. Its
   * output since the last commit must not be committed (the commit checks
   * the lost flag and aborts), and nothing of it is snapshotted or
   * pointed at: the process fails, and its open transaction is aborted. */
  if (s->kj->txn && atomic_load(&k->grp.lost)) {
    for (int i = 0; i < l->cnt; i++) {
      size_t j = part_of(s, k, &l->elems[i]);
      if (j < k->n_parts) {
        if (k->tasks)
          sl__task_drop(op, k->task_base + (uint32_t)k->parts[j].partition);
        forget(s, k, j);
      }
    }
    if (!k->closing)
      sl__kgroup_fence(&k->grp,
                       "fenced: the group took %d partition(s) from this "
                       "member (session timed out or rebalance failed); "
                       "nothing read from them since the last committed "
                       "checkpoint is committed",
                       l->cnt);
    return false;
  }
  for (int i = 0; i < l->cnt; i++) {
    size_t j = part_of(s, k, &l->elems[i]);
    if (j == k->n_parts)
      continue;
    kpart *p = &k->parts[j];
    if (now || k->closing || p->loading || p->next < 0) {
      if (k->tasks)
        sl__task_drop(op, k->task_base + (uint32_t)p->partition);
      forget(s, k, j);
    } else {
      p->revoking = true;
      keep = true;
    }
  }
  if (!keep)
    return false;
  if (!(k->rev = rd_kafka_topic_partition_list_copy(l))) {
    sl__kgroup_fail(&k->grp, SL_ERR_NOMEM, "out of memory");
    return false;
  }
  k->revoke_after = sl__task_checkpoint(op);
  sl__klog(s->kj, SL__LOG_INFO,
           "source %s: %d partition(s) revoked: %s (after checkpoint %" PRIu64
           ")",
           s->uid, l->cnt,
           k->tasks ? "snapshotting their tasks"
                    : "committing their offsets in a transaction",
           k->revoke_after);
  return true;
}

/* Revoked partitions: what was read of them is committed before the
 * group gives them to another member, and nothing more of them is
 * emitted (messages already fetched are dropped by one()). */
static bool group_revoked(void *sub, const rd_kafka_topic_partition_list_t *l,
                          bool now) {
  ksub *k = sub;
  ksrc *s = k->src;
  if (k->tasks || k->eos_up)
    return task_revoked(k, l, now);
  rd_kafka_topic_partition_list_t *c =
      rd_kafka_topic_partition_list_new(l->cnt ? l->cnt : 1);
  for (int i = 0; i < l->cnt; i++) {
    size_t j = part_of(s, k, &l->elems[i]);
    if (j == k->n_parts)
      continue;
    kpart *p = &k->parts[j];
    if (p->next >= 0 && p->next != p->committed)
      rd_kafka_topic_partition_list_add(c, s->topics[p->topic], p->partition)
          ->offset = p->next;
    forget(s, k, j);
  }
  /* Upstream of a repartition topic: what was emitted of the partitions
   * is in the producer's queue; it must be in the topic before the
   * offsets that cover it are (at-least-once). */
  char err[512];
  if (c->cnt && !s->repart && sl__kgroup_repartition(k->grp.conf) &&
      sl__kprod_flush_plain(s->kj, err, sizeof(err))) {
    sl__klog(s->kj, SL__LOG_WARN,
             "source %s: not committing revoked partitions: %s", s->uid, err);
    c->cnt = 0;
  }
  if (c->cnt) {
    /* Synchronous: the next owner must find the offsets. A failure costs
     * duplicates, not data: log it. */
    rd_kafka_resp_err_t e = rd_kafka_commit(k->rk, c, 0);
    if (e)
      sl__klog(s->kj, SL__LOG_WARN,
               "source %s: committing revoked partitions: %s", s->uid,
               rd_kafka_err2str(e));
  }
  rd_kafka_topic_partition_list_destroy(c);
  return false;
}

static int ksrc_open(sl_source_ctx_t *ctx, void *opaque) {
  ksrc *s = opaque;
  int sub = sl_source_ctx_subtask(ctx), subs = sl_source_ctx_subtasks(ctx);
  sl_ctx_t *op = sl_source_op(ctx);
  const sl_conf_t *conf = sl_op_conf(op);
  ksub *k = calloc(1, sizeof(*k));
  if (!k)
    return SL_ERR_NOMEM;
  s->sub[sub] = k;
  k->spec = sl_source_own_watermarks(ctx);
  /* A revived run starts over (nothing forwarded yet). */
  atomic_store(&s->fwd_wm[sub], SL_TS_MIN);
  k->src = s;
  k->limit = SL_TS_MAX;
  k->last_topic = -1;
  char gbuf[256], cid[300], err[512];
  const char *group = group_of(s, ctx, gbuf, sizeof(gbuf));
  snprintf(cid, sizeof(cid), "sluice-%s-%s-%d", s->kj->name, s->uid, sub);
  /* A stop offset after the last message (behind transaction markers) is
   * seen at the partition's EOF. */
  const char *eof = s->o.stop != SL_KAFKA_STOP_NONE ? "true" : "false";
  const char *defaults[] = {"group.id",
                            group,
                            "client.id",
                            cid,
                            "enable.auto.commit",
                            "false",
                            "enable.auto.offset.store",
                            "false",
                            "enable.partition.eof",
                            eof,
                            "auto.offset.reset",
                            "earliest",
                            "queued.max.messages.kbytes",
                            "16384",
                            NULL};
  rd_kafka_conf_t *rc_conf;
  int rc = sl__kconf(conf, defaults, &rc_conf, err, sizeof(err));
  if (rc)
    return sl_source_fail(ctx, rc, "%s", err);
  k->src = s;
  k->ctx = ctx;
  k->group = sl__kgroup_on(conf);
  /* A source whose records only go to broadcasts is read whole by every
   * process (a global table, in Kafka Streams' terms): as a member it
   * would get some of the partitions, and each process other broadcast
   * state. */
  if (k->group &&
      sl__graph_only_broadcasts(sl__graph_of(s->kj->job), s->node)) {
    k->group = false;
    k->bcast = true;
    if (sub == 0)
      sl__klog(s->kj, SL__LOG_INFO,
               "source %s: only feeds broadcasts: every process reads all "
               "of its partitions from the earliest offset, outside the "
               "group",
               s->uid);
  }
  /* Whether its partitions are tasks: in repartition mode only the
   * repartition topic's. */
  bool owns = !sl__kgroup_repartition(conf) || s->repart;
  k->tasks = k->group && owns && sl__tasks_on(op);
  k->eos_up = k->group && !owns && s->kj->txn && sl__tasks_on(op);
  /* The keyed stage reads an exactly-once repartition topic committed
   * only, whatever kafka.isolation.level says for the job's other
   * consumers. */
  if (k->group && s->repart && s->kj->txn && sl__tasks_on(op) &&
      rd_kafka_conf_set(rc_conf, "isolation.level", "read_committed", err,
                        sizeof(err)) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(rc_conf);
    return sl_source_fail(ctx, SL_ERR_CONF, "%s", err);
  }
  /* A task is one partition number: with two topics two partitions
   * would be one task, which the group may give to two members. */
  if (k->tasks && s->n_topics > 1)
    return sl_source_fail(ctx, SL_ERR_CONF,
                          "kafka source %s: group mode with checkpoint.dir "
                          "reads one topic per source (it reads %d)",
                          s->uid, s->n_topics);
  if (k->tasks) {
    int64_t t0 = sl__ktask_of(s->kj, s->topics[0], 0);
    if (t0 < 0)
      return sl_source_fail(ctx, SL_ERR_STATE,
                            "kafka source %s: topic %s is no keyed stage's",
                            s->uid, s->topics[0]);
    k->task_base = (uint32_t)t0;
    k->tw = k->spec->kind == SL_WM_CUSTOM && k->spec->gen && s->node->task_wm;
  }
  if (k->group) {
    k->grp = (sl__kgroup){.assigned = group_assigned,
                          .revoked = group_revoked,
                          .sub = k,
                          .conf = conf,
                          .job = s->kj->name,
                          .uid = s->uid,
                          .owners = owns ? s->kj->owners : NULL,
                          .subtask = sub};
    if ((rc = sl__kgroup_conf(rc_conf, conf, &k->grp, err, sizeof(err)))) {
      rd_kafka_conf_destroy(rc_conf);
      return sl_source_fail(ctx, rc, "%s", err);
    }
  }
  k->rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc_conf, err, sizeof(err));
  if (!k->rk) {
    rd_kafka_conf_destroy(rc_conf);
    return sl_source_fail(ctx, SL_ERR_KAFKA, "cannot create consumer: %s", err);
  }
  rd_kafka_poll_set_consumer(k->rk);
  k->q = rd_kafka_queue_get_consumer(k->rk);
  k->grp.rk = k->rk;
  k->grp.member = -1;
  if (k->group && sl__kgroup_register(s->kj, &k->grp))
    return SL_ERR_NOMEM;

  int *counts = calloc((size_t)s->n_topics, sizeof(int));
  if (!counts)
    return SL_ERR_NOMEM;
  rc = topic_partitions(ctx, s, k, counts);
  size_t total = 0;
  for (int t = 0; t < s->n_topics && !rc; t++)
    total += (size_t)counts[t];
  if (!rc && !(k->parts = calloc(total ? total : 1, sizeof(kpart))))
    rc = SL_ERR_NOMEM;
  k->cap_parts = total;
  if (k->group) {
    for (int t = 0; t < s->n_topics && !rc && owns; t++)
      if ((rc = sl__kgroup_check(conf, s->topics[t], counts[t], err,
                                 sizeof(err))))
        rc = sl_source_fail(ctx, rc, "kafka source %s: %s", s->uid, err);
    free(counts);
    if (!rc &&
        (rc = sl__kgroup_join(k->rk, s->topics, s->n_topics, err, sizeof(err))))
      rc = sl_source_fail(ctx, rc, "kafka source %s: %s", s->uid, err);
    if (rc)
      return rc;
    /* A third of the session timeout: a pause shorter than that cannot
     * have cost the member its session while heartbeats go at least
     * that often (librdkafka's default is a tenth). */
    char v[32];
    size_t vl = sizeof(v);
    k->pause_ms = rd_kafka_conf_get(rd_kafka_conf(k->rk), "session.timeout.ms",
                                    v, &vl) == RD_KAFKA_CONF_OK
                      ? strtoll(v, NULL, 10) / 3
                      : 1000;
    /* Idle until the group assigns it partitions. */
    k->last_ok = k->polled = sl__mono_ms();
    k->idle = true;
    return sl_source_idle(ctx, true);
  }
  /* Round-robin over (topic, partition) in sorted order: partition i of
   * that list belongs to subtask i % P, at any parallelism. */
  int64_t now = sl_ctx_now(op);
  int64_t interval = sl__conf_int(conf, "watermark.interval.ms");
  size_t i = 0;
  for (int t = 0; t < s->n_topics && !rc; t++) {
    for (int32_t p = 0; p < counts[t]; p++, i++) {
      if ((int)(i % (size_t)subs) != sub)
        continue;
      kpart *kp = &k->parts[k->n_parts++];
      kp->topic = t;
      kp->partition = p;
      kp->committed = -1;
      kp->end = -1;
      kp->gidx = i;
      sl__wmgen_init(&kp->wm, k->spec, now);
      if ((rc = sl__wmgen_open(&kp->wm, interval))) {
        rc = sl_source_fail(ctx, rc, "watermark generator: create failed");
        break;
      }
      /* Event time continues where the checkpoint left it, so a restored
       * job fires what was pending and judges lateness as the run that
       * did not fail (whatever subtask read the partition then). A user
       * generator is created anew and re-derives its watermark from the
       * records it sees, starting from the watermark it had emitted. */
      const rpos *r = restored_of(s, t, p);
      if (r && r->timed) {
        if (kp->wm.kind == SL_WM_CUSTOM)
          kp->wm.wm = r->time.wm ? r->time.max_ts : SL_TS_MIN;
        else
          kp->wm.max_ts = r->time.max_ts;
        kp->wm.idle = r->time.idle;
        /* A partition that delivered its end marker stays finished, so a
         * restore after the end reads nothing and ends. */
        kp->finished = r->time.finished;
        k->n_finished += kp->finished;
      }
    }
  }
  if (!rc)
    rc = start_offsets(ctx, s, k, group);
  if (!rc)
    rc = stop_offsets(ctx, s, k, counts, total);
  free(counts);
  if (rc)
    return rc;
  /* Finished partitions are not fetched at all. */
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)k->n_parts);
  for (size_t j = 0; j < k->n_parts; j++)
    if (!k->parts[j].finished)
      rd_kafka_topic_partition_list_add(l, s->topics[k->parts[j].topic],
                                        k->parts[j].partition)
          ->offset = k->parts[j].next;
  rd_kafka_resp_err_t e = rd_kafka_assign(k->rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  if (e)
    return sl_source_fail(ctx, SL_ERR_KAFKA, "assign: %s", rd_kafka_err2str(e));
  k->last_ok = sl__mono_ms();
  /* Figures of the partitions assigned at open (in group mode the
   * rebalance callback adds and removes them). Missing metrics are not an
   * error. */
  for (size_t j = 0; j < k->n_parts; j++) {
    kpart *kp = &k->parts[j];
    kp->pm = sl__kstats_partition(s->kj, s->uid, s->topics[kp->topic],
                                  kp->partition);
  }
  update_metrics(s, k, k->last_ok);
  /* A subtask without partitions (more subtasks than partitions) is idle
   * from the start, with or without an idle timeout: it has nothing to
   * read and must never hold back the watermark downstream. */
  if (k->n_parts == 0) {
    k->idle = true;
    atomic_store(&s->align_wm[sub], SL_TS_MAX);
    return sl_source_idle(ctx, true);
  }
  return 0;
}

static void task_complete(ksub *k, uint64_t id);
static void release_revoked(ksub *k, uint64_t id);

static void ksrc_close(sl_source_ctx_t *ctx, void *opaque) {
  ksrc *s = opaque;
  int sub = sl_source_ctx_subtask(ctx);
  ksub *k = s->sub[sub];
  if (!k)
    return;
  /* Dead letters of this subtask's last records go out before the job
   * reports that it ended. */
  char err[512];
  if (sl__kdlq_flush(s->kj, err, sizeof(err)))
    sl__klog(s->kj, SL__LOG_WARN, "source %s: %s", s->uid, err);
  if (k->q)
    rd_kafka_queue_destroy(k->q);
  /* Group mode: leaving the group revokes (and commits) every partition
   * first, so the other members take them over at once. With
   * checkpoints the final one has published every task (task_complete
   * runs here too: the job may release its workers before they pass the
   * completion on), and a revocation kept until then goes first. */
  if ((k->tasks || k->eos_up) && k->rk) {
    uint64_t done = sl__task_completed(sl_source_op(ctx));
    if (k->tasks && done > k->published)
      task_complete(k, done);
    if (k->rev) {
      sl__kgroup_release(k->rk, &k->grp, k->rev);
      rd_kafka_topic_partition_list_destroy(k->rev);
      k->rev = NULL;
    }
    k->closing = true;
  }
  /* The exactly-once commit no longer asks this consumer (it is leaving
   * the group); the final checkpoint was committed before. */
  if (k->group)
    sl__kgroup_unregister(s->kj, &k->grp);
  if (k->group && k->rk) {
    sl__kgroup_leave(k->rk, &k->grp);
    rd_kafka_consumer_close(k->rk);
  }
  for (int i = 0; i < 4; i++)
    free(k->snaps[i].pos);
  for (size_t i = 0; i < k->n_parts; i++) {
    sl__kstats_partition_remove(s->kj, k->parts[i].pm);
    sl__wmgen_close(&k->parts[i].wm);
  }
  if (k->spec && k->spec->align_drift_ms > 0)
    atomic_store(&s->align_wm[sub], SL_TS_MAX);
  if (k->rk && k->group) {
    sl__kgroup_destroy(k->rk, &k->grp);
  } else if (k->rk) {
    rd_kafka_consumer_close(k->rk);
    rd_kafka_destroy(k->rk);
  }
  free(k->parts);
  free(k->msgs);
  free(k->kbuf);
  free(k);
  s->sub[sub] = NULL;
}

/* ---- Poll ------------------------------------------------------------------
 */

static kpart *find_part(ksrc *s, ksub *k, const rd_kafka_message_t *m) {
  if (m->rkt != k->last_rkt) {
    k->last_rkt = m->rkt;
    k->last_topic = topic_index(s, rd_kafka_topic_name(m->rkt));
  }
  for (size_t i = 0; i < k->n_parts; i++)
    if (k->parts[i].topic == k->last_topic &&
        k->parts[i].partition == m->partition)
      return &k->parts[i];
  return NULL;
}

static int bad(sl_source_ctx_t *ctx, ksrc *s, const rd_kafka_message_t *m,
               const char *why) {
  char where[512];
  snprintf(where, sizeof(where), "%s[%" PRId32 "]@%" PRId64,
           rd_kafka_topic_name(m->rkt), m->partition, m->offset);
  (void)s;
  return sl_source_bad_input(ctx, where, why);
}

/* The JSON codec without a document: one validating scan finds the key
 * and the timestamp; the key points into the message (or, with escapes,
 * into the subtask's buffer). The document is built only if a chained
 * function calls sl_kafka_msg_json(). */
static int decode_scan(ksrc *s, ksub *k, sl_kafka_msg_t *km, sl_record_t *rec,
                       char *err, size_t errlen) {
  const rd_kafka_message_t *m = km->m;
  sl__jval v[2];
  if (sl__jscan(m->payload ? m->payload : "", m->payload ? m->len : 0, s->jp,
                s->n_jp, v, err, errlen))
    return -1;
  km->lazy = true;
  if (s->jkey >= 0) {
    const sl__jval *kv = &v[s->jkey];
    int64_t n;
    if (kv->kind == SL__J_STRING && !kv->esc) {
      rec->key = kv->s;
      rec->key_len = kv->len;
    } else if (kv->kind == SL__J_STRING) {
      if (k->kcap < kv->len) {
        char *b = realloc(k->kbuf, kv->len);
        if (!b) {
          snprintf(err, errlen, "out of memory");
          return -1;
        }
        k->kbuf = b;
        k->kcap = kv->len;
      }
      sl__junescape(kv->s, kv->len, k->kbuf, &rec->key_len);
      rec->key = k->kbuf;
    } else if (kv->kind == SL__J_INTEGER && !sl__jint(kv->s, kv->len, &n)) {
      rec->key_len =
          (size_t)snprintf(k->keybuf, sizeof(k->keybuf), "%" PRId64, n);
      rec->key = k->keybuf;
    } else {
      snprintf(err, errlen, "key %s missing or not a string/integer",
               s->key_ptr);
      return -1;
    }
  }
  if (s->jts >= 0) {
    const sl__jval *tv = &v[s->jts];
    if (tv->kind != SL__J_INTEGER || sl__jint(tv->s, tv->len, &rec->ts)) {
      snprintf(err, errlen, "timestamp %s missing or not an integer (ms)",
               s->ts_ptr);
      return -1;
    }
  }
  return 0;
}

/* Decodes with the configured codec into rec. 0 ok, 1 drop, else the
 * reason in err and -1. */
static int decode(ksrc *s, ksub *k, sl_kafka_msg_t *km, sl_record_t *rec,
                  char *err, size_t errlen) {
  const rd_kafka_message_t *m = km->m;
  int64_t mts = rd_kafka_message_timestamp(m, NULL);
  rec->key = m->key;
  rec->key_len = m->key ? m->key_len : 0;
  rec->value = m->payload;
  rec->value_len = m->payload ? m->len : 0;
  rec->ts = mts >= 0 ? mts : SL_TS_MIN;
  if (s->o.decode) {
    int rc = s->o.decode(km, rec, err, errlen, s->o.decode_opaque);
    if (rc < 0 && !*err)
      snprintf(err, errlen, "decode returned %d", rc);
    return rc < 0 ? -1 : rc;
  }
  if (s->o.codec != SL_KAFKA_JSON)
    return 0;
  if (s->fast)
    return decode_scan(s, k, km, rec, err, errlen);
  json_error_t je;
  km->json = sl__jload(m->payload ? m->payload : "", rec->value_len, &je);
  if (!km->json) {
    snprintf(err, errlen, "invalid JSON: %s (line %d column %d)", je.text,
             je.line, je.column);
    return -1;
  }
  if (s->key_ptr) {
    json_t *kv = sl_json_pointer(km->json, s->key_ptr);
    if (json_is_string(kv)) {
      rec->key = json_string_value(kv);
      rec->key_len = json_string_length(kv);
    } else if (json_is_integer(kv)) {
      rec->key_len =
          (size_t)snprintf(k->keybuf, sizeof(k->keybuf),
                           "%" JSON_INTEGER_FORMAT, json_integer_value(kv));
      rec->key = k->keybuf;
    } else {
      snprintf(err, errlen, "key %s missing or not a string/integer",
               s->key_ptr);
      return -1;
    }
  }
  if (s->ts_ptr) {
    json_t *tv = sl_json_pointer(km->json, s->ts_ptr);
    if (!json_is_integer(tv)) {
      snprintf(err, errlen, "timestamp %s missing or not an integer (ms)",
               s->ts_ptr);
      return -1;
    }
    rec->ts = json_integer_value(tv);
  }
  return 0;
}

/* Whether the subtask has nothing left to read: every partition finished,
 * or, in a bounded source (is_end), it has none. Finished partitions
 * restored from a checkpoint end the subtask without is_end too: their
 * end was read, whichever job read it. */
static bool subtask_done(const ksrc *s, const ksub *k) {
  /* In group mode partitions come and go: the subtask runs until the job
   * stops. */
  if (k->group)
    return false;
  return k->n_parts ? k->n_finished == k->n_parts : bounded(s);
}

/* Pauses or resumes fetching p; a resumed partition is read again from
 * its position (records fetched while it was paused were dropped). A
 * failure only costs fetches: one() drops what it must not emit. */
static void pause_part(ksrc *s, ksub *k, kpart *p, bool pause) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, s->topics[p->topic], p->partition)
      ->offset = p->next;
  if (pause) {
    rd_kafka_pause_partitions(k->rk, l);
  } else {
    rd_kafka_error_t *e = rd_kafka_seek_partitions(k->rk, l, 0);
    if (e)
      rd_kafka_error_destroy(e);
    rd_kafka_resume_partitions(k->rk, l);
  }
  rd_kafka_topic_partition_list_destroy(l);
}

/* p's end marker was read (rec: its event time counts as a record's
 * would, the partition's last max_ts goes into checkpoints) or its stop
 * offset reached (rec NULL); the consumer stops fetching it. */
static void finish_part(ksrc *s, ksub *k, kpart *p, const sl_record_t *rec,
                        int64_t now) {
  if (rec) {
    sl__wmgen_touch(&p->wm, now);
    sl__wmgen_on_record(&p->wm, rec);
  }
  p->finished = true;
  k->n_finished++;
  pause_part(s, k, p, true);
}

/* Watermark alignment: the highest watermark a partition may have and
 * still be read, from the slowest active partition of every subtask
 * (published in align_wm); SL_TS_MAX without alignment. */
static int64_t align_limit(const ksrc *s, const ksub *k, int subs) {
  int64_t drift = k->spec->align_drift_ms;
  if (drift <= 0)
    return SL_TS_MAX;
  int64_t min = SL_TS_MAX;
  for (int i = 0; i < subs; i++) {
    int64_t w =
        atomic_load_explicit(&((ksrc *)s)->align_wm[i], memory_order_relaxed);
    if (w < min)
      min = w;
  }
  return min > SL_TS_MAX - drift ? SL_TS_MAX : min + drift;
}

/* ---- Task watermarks (group mode) ---------------------------------------
 *
 * A keyed operator of the stage keeps a watermark per task (time/taskwm.h)
 * so that a task that arrives behind the process's watermark is not
 * judged by it. With bounded out-of-orderness it derives the watermark
 * from the task's records; a user generator's cannot be derived, so the
 * source sends it: the task is its partition, and the partition's
 * generator's watermark is the task's. It is sent while the partition
 * lags, i.e. is behind what a keyed operator fed by this source may have
 * reached (every input port of such an operator is at most what the
 * subtask feeding it forwarded), and until a record of the partition was
 * read since the task's load; then the source sends SL_TS_MAX and the
 * task follows its input's watermark (time/taskwm.h), which from then on
 * is a minimum over this partition too (a subtask only forwards the
 * minimum over its partitions) unless the partition goes idle, as in one
 * process. The partition's generator starts from the watermark the
 * task's snapshot recorded. Either way a task whose partition gives no
 * record for the idle timeout after the load is released too (SL_TS_MAX,
 * the only thing sent for a task that follows its records). */

static int64_t task_wm_reach(const ksrc *s, int subs) {
  int64_t r = SL_TS_MIN;
  for (int i = 0; i < subs && i < MAX_SUBTASKS; i++) {
    int64_t w =
        atomic_load_explicit(&((ksrc *)s)->fwd_wm[i], memory_order_relaxed);
    r = w > r ? w : r;
  }
  return r;
}

/* Whether task p stays held: until a record of its partition was read
 * since the load (a watermark that reached the keyed stage before says
 * nothing about the task) or, with an idle timeout, until that long
 * passed since the load without one — the partition is idle then, and
 * an idle partition holds back nothing in one process either —; with a
 * user generator, whose watermark cannot be derived from the records,
 * also while the partition is behind what the keyed stage may have
 * reached and not idle. */
static bool task_held(sl_source_ctx_t *ctx, const ksub *k, const kpart *p,
                      int64_t now) {
  if (p->finished)
    return false;
  if (!p->tw_seen)
    return p->wm.idle_timeout <= 0 || now - p->tw_loaded < p->wm.idle_timeout;
  return k->tw && !p->wm.idle &&
         p->wm.wm < task_wm_reach(k->src, sl_source_ctx_subtasks(ctx));
}

/* Tells the keyed stage about task p when that changed (start: the task
 * was just loaded). With a user generator the source sends the task's
 * watermark while it holds the task; with records to follow the keyed
 * stage holds a loaded task itself until its first record, and the
 * source only releases one whose partition stayed idle. */
static int task_wm(sl_source_ctx_t *ctx, ksub *k, kpart *p, bool start,
                   int64_t now) {
  if (!start && !p->tw_hold)
    return 0;
  bool hold = task_held(ctx, k, p, now);
  int64_t want = hold ? p->wm.wm : SL_TS_MAX;
  k->n_hold = k->n_hold + hold - p->tw_hold;
  p->tw_hold = hold;
  if (k->tw ? !start && want == p->tw_sent : hold || p->tw_seen)
    return 0;
  p->tw_sent = want;
  return sl__task_send_wm(sl_source_op(ctx),
                          k->task_base + (uint32_t)p->partition, want);
}

/* The subtask's watermark downstream, published for task_wm_reach. */
static int forward_wm(sl_source_ctx_t *ctx, ksub *k, int64_t wm) {
  _Atomic int64_t *f = &k->src->fwd_wm[sl_source_ctx_subtask(ctx)];
  if (k->tw && wm > atomic_load_explicit(f, memory_order_relaxed))
    atomic_store_explicit(f, wm, memory_order_relaxed);
  return sl_source_watermark(ctx, wm);
}

static int one(sl_source_ctx_t *ctx, ksrc *s, ksub *k, rd_kafka_message_t *m,
               int64_t now) {
  kpart *p = find_part(s, k, m);
  /* A task loading its state: dropped, and read again from its start
   * (the first offset delivered, when the group chose it) once loaded. */
  if (p && p->loading && p->next < 0)
    p->next = m->offset;
  /* Not ours, a replay after a seek, past the partition's end marker
   * (not consumed: the position stays right after the marker), of a
   * partition paused for alignment (read again once it resumes), of a
   * task still loading or already revoked. */
  if (!p || p->finished || p->paused || p->loading || p->revoking ||
      m->offset < p->next)
    return 0;
  /* The stop offset, or (a timestamp bound) the first message at or past
   * the timestamp: the offset the broker's lookup gives, found here too
   * where the lookup found none (the mock cluster's answer). */
  bool at_ts = s->o.stop == SL_KAFKA_STOP_TIMESTAMP &&
               rd_kafka_message_timestamp(m, NULL) >= s->o.stop_ts_ms;
  if (at_ts || (p->end >= 0 && m->offset >= p->end)) {
    if (at_ts && (p->end < 0 || m->offset < p->end))
      p->end = m->offset;
    finish_part(s, k, p, NULL, now);
    return 0;
  }
  /* Alignment: a partition ahead stops before this record. */
  if (sl__wmgen_current(&p->wm) > k->limit) {
    p->paused = true;
    pause_part(s, k, p, true);
    return 0;
  }
  sl_kafka_msg_t km = {m, s->topics[p->topic], NULL, false};
  sl_record_t rec;
  char err[512] = "";
  sl__kafka_cur = &km;
  int rc = decode(s, k, &km, &rec, err, sizeof(err));
  if (rc == 0 && k->spec->ts_fn &&
      k->spec->ts_fn(&rec, &rec.ts, k->spec->ts_opaque)) {
    snprintf(err, sizeof(err), "timestamp assigner failed");
    rc = -1;
  }
  if (rc < 0) {
    rc = bad(ctx, s, m, err);
  } else if (rc == 0 && s->o.is_end &&
             s->o.is_end(&km, &rec, s->o.is_end_opaque)) {
    finish_part(s, k, p, &rec, now);
  } else if (rc == 0) {
    int64_t before = p->wm.wm;
    bool first = k->tw && !p->tw_seen;
    p->tw_seen = true;
    sl__wmgen_touch(&p->wm, now);
    if (sl__wmgen_on_record(&p->wm, &rec) && k->idle) {
      k->idle = false;
      rc = sl_source_idle(ctx, false);
    }
    if (!rc)
      rc = sl_source_emit(ctx, &rec);
    /* A user generator's punctuated watermark follows its record, the
     * task's first. */
    if (!rc && (p->wm.wm > before || first)) {
      if (p->tw_hold)
        rc = task_wm(ctx, k, p, false, now);
      if (!rc && !k->idle)
        rc = forward_wm(ctx, k, min_wm(k, NULL));
    }
  } else {
    rc = 0;
  }
  sl__kafka_cur = NULL;
  json_decref(km.json);
  if (!rc)
    p->next = m->offset + 1;
  /* The last offset before the stop: nothing more to wait for. */
  if (!rc && !p->finished && p->end >= 0 && p->next >= p->end)
    finish_part(s, k, p, NULL, now);
  return rc;
}

/* Consumer-level errors arrive as messages with err set. Everything but a
 * fatal error is retried by librdkafka; the source only fails when no
 * broker has been reachable for broker.timeout.ms. */
static int consumer_error(sl_source_ctx_t *ctx, ksrc *s, ksub *k,
                          const rd_kafka_message_t *m, int64_t now) {
  char why[512];
  if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
    /* At the end of what was written: a stop offset there (behind
     * transaction markers, which are never delivered) is reached. */
    kpart *p = m->rkt ? find_part(s, k, m) : NULL;
    if (p && !p->finished && p->end >= 0 && m->offset >= p->end)
      finish_part(s, k, p, NULL, now);
    return 0;
  }
  if (rd_kafka_fatal_error(k->rk, why, sizeof(why)))
    return sl_source_fail(ctx, SL_ERR_KAFKA, "fatal consumer error: %s", why);
  (void)k;
  (void)now;
  if (m->err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN &&
      m->err != RD_KAFKA_RESP_ERR__TRANSPORT) {
    sl__klog(s->kj, SL__LOG_WARN, "source %s: %s", s->uid,
             rd_kafka_message_errstr(m));
  }
  return 0;
}

/* Broker loss: librdkafka reconnects with backoff by itself, so the
 * source only has to notice when that has not worked for
 * broker.timeout.ms. After that long without a message it asks for
 * metadata (also what keeps an idle but healthy topic from looking
 * dead); if even that fails, the job fails with a clear message. */
static int check_down(sl_source_ctx_t *ctx, ksub *k, int64_t now) {
  const sl_conf_t *conf = sl_op_conf(sl_source_op(ctx));
  int64_t timeout = sl__conf_int(conf, "broker.timeout.ms");
  if (now - k->last_ok < timeout)
    return 0;
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t e = rd_kafka_metadata(k->rk, 0, NULL, &md, 1000);
  if (md)
    rd_kafka_metadata_destroy(md);
  if (!e) {
    k->last_ok = sl__mono_ms();
    return 0;
  }
  const char *bs = sl__kconf_get(conf, "bootstrap.servers");
  return sl_source_fail(ctx, SL_ERR_KAFKA,
                        "no Kafka broker reachable for %" PRId64
                        " ms (broker.timeout.ms; bootstrap.servers=%s): %s",
                        sl__mono_ms() - k->last_ok, bs ? bs : "?",
                        rd_kafka_err2str(e));
}

/* The subtask's watermark: the minimum over partitions that are neither
 * idle nor finished (a finished partition never advances again, so it
 * must not hold the others back: Flink drops a finished split's output
 * the same way); the subtask is idle when every partition is one or the
 * other. */
static int64_t min_wm(const ksub *k, bool *all_idle) {
  int64_t wm = SL_TS_MAX;
  bool idle = true;
  for (size_t i = 0; i < k->n_parts; i++) {
    const kpart *p = &k->parts[i];
    if (p->finished || p->wm.idle)
      continue;
    idle = false;
    int64_t w = sl__wmgen_current(&p->wm);
    if (w < wm)
      wm = w;
  }
  if (all_idle)
    *all_idle = idle;
  return wm;
}

/* A user generator's on_periodic, idleness, and alignment: partitions
 * paused for being ahead resume once within the drift of the slowest
 * (paused ones are not idle: they have records they may not read). */
static int watermarks(sl_source_ctx_t *ctx, ksub *k, int64_t now) {
  if (k->n_parts == 0)
    return 0;
  ksrc *s = k->src;
  for (size_t i = 0; i < k->n_parts; i++) {
    kpart *p = &k->parts[i];
    if (p->finished)
      continue;
    sl__wmgen_periodic(&p->wm, now);
    if (!p->wm.idle && !p->paused)
      sl__wmgen_check_idle(&p->wm, now);
  }
  for (size_t i = 0; k->n_hold && i < k->n_parts; i++) {
    int rc = task_wm(ctx, k, &k->parts[i], false, now);
    if (rc)
      return rc;
  }
  bool all_idle;
  int64_t wm = min_wm(k, &all_idle);
  if (k->spec->align_drift_ms > 0) {
    int sub = sl_source_ctx_subtask(ctx);
    atomic_store_explicit(&s->align_wm[sub], all_idle ? SL_TS_MAX : wm,
                          memory_order_relaxed);
    k->limit = align_limit(s, k, sl_source_ctx_subtasks(ctx));
    for (size_t i = 0; i < k->n_parts; i++) {
      kpart *p = &k->parts[i];
      if (p->paused && !p->finished && sl__wmgen_current(&p->wm) <= k->limit) {
        p->paused = false;
        sl__wmgen_touch(&p->wm, now);
        pause_part(s, k, p, false);
      }
    }
  }
  if (all_idle != k->idle) {
    k->idle = all_idle;
    int rc = sl_source_idle(ctx, all_idle);
    if (rc)
      return rc;
  }
  return all_idle ? 0 : forward_wm(ctx, k, wm);
}

/* After each consume: a failed rebalance step fails the job; a member
 * left without partitions is idle, so it holds no watermark back. */
static int group_poll(sl_source_ctx_t *ctx, ksub *k, int64_t now) {
  if (k->grp.fenced)
    return sl__job_fail_fenced(k->src->kj->job, k->grp.err,
                               "kafka source %s: %s", k->src->uid,
                               k->grp.errmsg);
  if (k->grp.err)
    return sl_source_fail(ctx, k->grp.err, "kafka source %s: %s", k->src->uid,
                          k->grp.errmsg);
  for (size_t i = 0; k->tasks && i < k->n_parts; i++) {
    kpart *p = &k->parts[i];
    if (!p->loading ||
        sl__task_state(sl_source_op(ctx),
                       k->task_base + (uint32_t)p->partition) != SL__TASK_READY)
      continue;
    p->loading = false;
    if (p->next >= 0) /* records were dropped meanwhile: read them again */
      pause_part(k->src, k, p, false);
    if (k->tw) {
      /* The generator goes on from where its task was. */
      uint32_t task = k->task_base + (uint32_t)p->partition;
      int64_t w = sl__task_watermark(sl_source_op(ctx), task);
      if (w > p->wm.wm)
        p->wm.wm = w;
    }
    p->tw_seen = false;
    p->tw_loaded = now;
    int rc = task_wm(ctx, k, p, true, now);
    if (rc)
      return rc;
  }
  /* A kept revocation waits for a checkpoint; ask again in case the one
   * asked for failed. */
  if (k->rev && sl__task_completed(sl_source_op(ctx)) <= k->revoke_after)
    sl__task_checkpoint(sl_source_op(ctx));
  if (k->n_parts == 0 && !k->idle) {
    k->idle = true;
    return sl_source_idle(ctx, true);
  }
  return 0;
}

/* Exactly-once in a group: whether what a poll read at mono must be
 * dropped because the member's assignment is lost. After a pause of the
 * process (a stop, a swap) the fetcher threads may run before the
 * consumer's main thread notices that the session ran out meanwhile, and
 * hand over records of partitions the group gave to another member. A
 * real broker's read_committed readers never see them (the transaction
 * that would hold their output aborts), but the dev broker's do, so after
 * a pause as long as pause_ms since the last poll the member asks first
 * (sl__kgroup_holds, which lets that thread check the deadline). */
static bool read_lost(ksrc *s, ksub *k, int64_t mono) {
  int64_t pause = mono - k->polled;
  k->polled = mono;
  if (!k->group || k->bcast || !s->kj->txn)
    return false;
  if (pause >= k->pause_ms && !atomic_load(&k->grp.lost) &&
      !sl__kgroup_holds(&k->grp))
    sl__log(k->grp.conf, k->grp.job, SL__LOG_WARN, "kafka",
            "kafka source %s[%d]: after a pause of %" PRId64 " ms this "
            "process is no longer a member of the group (its session ran "
            "out): what it read is dropped",
            s->uid, k->grp.subtask, pause);
  return atomic_load(&k->grp.lost);
}

static int ksrc_poll(sl_source_ctx_t *ctx, void *opaque) {
  ksrc *s = opaque;
  ksub *k = s->sub[sl_source_ctx_subtask(ctx)];
  size_t budget = sl_source_ctx_budget(ctx);
  if (k->cap_msgs < budget) {
    rd_kafka_message_t **m = realloc(k->msgs, budget * sizeof(*m));
    if (!m)
      return SL_ERR_NOMEM;
    k->msgs = m;
    k->cap_msgs = budget;
  }
  /* Nothing to read (restored finished, or no partitions in a bounded
   * source): the runtime sends the maximum watermark and ends it. */
  if (subtask_done(s, k))
    return SL_POLL_END;
  /* A restored watermark goes out before the first record, so records
   * read after a restore meet the watermark they met in the run that did
   * not fail (lateness decisions do not change). */
  if (!k->started) {
    k->started = true;
    int rc = watermarks(ctx, k, sl_ctx_now(sl_source_op(ctx)));
    if (rc)
      return rc;
  }
  ssize_t n = rd_kafka_consume_batch_queue(k->q, 0, k->msgs, budget);
  if (n < 0)
    return sl_source_fail(ctx, SL_ERR_KAFKA, "consume: %s",
                          rd_kafka_err2str(rd_kafka_last_error()));
  int64_t now = sl_ctx_now(sl_source_op(ctx)), mono = sl__mono_ms();
  int rc = 0;
  bool got = false, lost = read_lost(s, k, mono);
  for (ssize_t i = 0; i < n; i++) {
    rd_kafka_message_t *m = k->msgs[i];
    if (!rc && !lost) {
      if (m->err) {
        rc = consumer_error(ctx, s, k, m, mono);
      } else {
        got = true;
        rc = one(ctx, s, k, m, now);
      }
    }
    rd_kafka_message_destroy(m);
  }
  if (rc)
    return rc;
  if (k->group && (rc = group_poll(ctx, k, now)))
    return rc;
  /* What this batch emitted is downstream; the end follows it. */
  if (subtask_done(s, k))
    return SL_POLL_END;
  if (got) {
    k->last_ok = mono;
  } else if ((rc = check_down(ctx, k, mono))) {
    return rc;
  }
  if ((rc = watermarks(ctx, k, now)))
    return rc;
  if (mono - k->last_metrics >= METRICS_EVERY_MS)
    update_metrics(s, k, mono);
  return n > 0 ? SL_POLL_MORE : SL_POLL_EMPTY;
}

/* ---- Checkpoints ------------------------------------------------------------
 */

/* Group mode with checkpoints, once checkpoint id is complete: every
 * task its snapshot holds is pointed at it (the next owner restores it
 * from there), and a kept revocation that id covers is let go, its
 * tasks' state dropped. Offsets are not committed to the group: the
 * pointers are the positions, and on librdkafka's mock cluster a commit
 * that meets a rebalance (illegal generation) makes every member drop
 * its whole assignment. */
static void task_complete(ksub *k, uint64_t id) {
  ksrc *s = k->src;
  sl_ctx_t *op = sl_source_op(k->ctx);
  struct task_snap *ts = &k->snaps[id % 4];
  if (ts->id != id || id <= k->published)
    return;
  if (s->kj->txn && atomic_load(&k->grp.lost))
    return;
  k->published = id;
  char err[512];
  for (size_t i = 0; i < ts->n; i++) {
    struct task_pos *tp = &ts->pos[i];
    /* A task let go since the snapshot (a later snapshot may complete
     * after the release) is its new owner's to point at. */
    bool mine = false;
    for (size_t j = 0; j < k->n_parts && !mine; j++)
      mine = k->parts[j].topic == tp->topic &&
             k->parts[j].partition == tp->partition && !k->parts[j].loading;
    if (!mine)
      continue;
    /* Exactly-once: a member that lost its assignment points no task at
     * anything any more, also not at a checkpoint committed before: the
     * task's new owner may have published a newer pointer already. Asked
     * before each pointer as the commit asks (the rebalance callback that
     * would say so may not have run yet in a process resumed after a
     * stop); what remains is a stop between the question and the write
     * (docs/scaling.md). */
    if (s->kj->txn && !sl__kgroup_holds(&k->grp))
      return;
    sl__task_ptr ptr = {.task = k->task_base + (uint32_t)tp->partition,
                        .partition = tp->partition,
                        .offset = tp->offset};
    snprintf(ptr.source, sizeof(ptr.source), "%s", s->uid);
    snprintf(ptr.topic, sizeof(ptr.topic), "%s", s->topics[tp->topic]);
    int rc = sl__task_publish(op, id, &ptr, err, sizeof(err));
    if (rc == SL__TASK_PTR_MOVED) {
      /* Lost meanwhile: the new owner's pointer stays. */
      sl__klog(s->kj, SL__LOG_WARN, "source %s: %s", s->uid, err);
      sl__kgroup_fence(&k->grp, "%s", err);
      return;
    }
    if (rc) {
      /* Logged too: after the final checkpoint no poll reports it. */
      sl__klog(s->kj, SL__LOG_ERROR, "source %s: %s", s->uid, err);
      sl__kgroup_fail(&k->grp, rc, "%s", err);
      return;
    }
  }
  release_revoked(k, id);
}

/* Checkpoint id completed: a kept revocation it covers (triggered after
 * the revocation, so its snapshot, and with exactly-once its committed
 * transaction, hold the revoked partitions' last positions) is let go,
 * its tasks' state dropped. */
static void release_revoked(ksub *k, uint64_t id) {
  if (!k->rev || id <= k->revoke_after)
    return;
  for (size_t j = 0; j < k->n_parts;) {
    if (!k->parts[j].revoking) {
      j++;
      continue;
    }
    if (k->tasks)
      sl__task_drop(sl_source_op(k->ctx),
                    k->task_base + (uint32_t)k->parts[j].partition);
    forget(k->src, k, j);
  }
  sl__kgroup_release(k->rk, &k->grp, k->rev);
  rd_kafka_topic_partition_list_destroy(k->rev);
  k->rev = NULL;
}

static int ksrc_snapshot(sl_source_ctx_t *ctx, uint64_t id, sl_buf_t *out,
                         void *opaque) {
  ksrc *s = opaque;
  ksub *k = s->sub[sl_source_ctx_subtask(ctx)];
  char gbuf[256], err[512];
  const char *group = group_of(s, ctx, gbuf, sizeof(gbuf));
  const char **topics = calloc(k->n_parts + 1, sizeof(char *));
  int32_t *parts = calloc(k->n_parts + 1, sizeof(int32_t));
  int64_t *offs = calloc(k->n_parts + 1, sizeof(int64_t));
  sl__kpos_time *times = calloc(k->n_parts + 1, sizeof(*times));
  int rc = topics && parts && offs && times ? 0 : SL_ERR_NOMEM;
  /* Group mode: the positions of the snapshot, which its completion
   * publishes (tasks) or commits. */
  struct task_snap *ts = k->group ? &k->snaps[id % 4] : NULL;
  if (ts) {
    struct task_pos *a =
        realloc(ts->pos, (k->n_parts + 1) * sizeof(struct task_pos));
    if (!a)
      rc = SL_ERR_NOMEM;
    else
      *ts = (struct task_snap){id, 0, a};
  }
  for (size_t i = 0; i < k->n_parts && !rc; i++) {
    /* The partitions this snapshot holds: loaded, with a position. */
    const kpart *kp = &k->parts[i];
    if (ts && !kp->loading && kp->next >= 0)
      ts->pos[ts->n++] = (struct task_pos){kp->topic, kp->partition, kp->next};
    topics[i] = s->topics[k->parts[i].topic];
    parts[i] = k->parts[i].partition;
    offs[i] = k->parts[i].next;
    const kpart *p = &k->parts[i];
    bool user = p->wm.kind == SL_WM_CUSTOM;
    times[i] = (sl__kpos_time){user ? p->wm.wm : p->wm.max_ts,
                               p->wm.idle,
                               p->finished,
                               user,
                               p->end >= 0,
                               p->end};
    /* The exactly-once transaction of checkpoint id carries these; only
     * kept when there is one (they are dropped when it commits). */
    if (s->kj->txn && !k->bcast)
      rc = sl__kpos_add(s->kj, id, group, topics[i], parts[i], offs[i],
                        k->group ? k->grp.member : -1,
                        k->tasks && !kp->loading && kp->next >= 0);
  }
  if (!rc)
    rc = sl__kpos_encode_time(out, group, topics, parts, offs, times,
                              k->n_parts);
  free(times);
  free(topics);
  free(parts);
  free(offs);
  /* Dead-letter records of what this subtask emitted before the barrier
   * must be durable before the checkpoint is. */
  if (!rc && (rc = sl__kdlq_flush(s->kj, err, sizeof(err))))
    sl__klog(s->kj, SL__LOG_WARN, "source %s: checkpoint %" PRIu64 ": %s",
             s->uid, id, err);
  return rc;
}

/* Group mode without tasks (a source upstream of a repartition topic,
 * or no checkpoint.dir): the positions of checkpoint id's snapshot are
 * committed, not the ones read since. The sinks flushed at that
 * checkpoint's barrier, so the output of every record before them is
 * durable; a record after them may not be yet. */
static void group_complete(ksub *k, uint64_t id) {
  ksrc *s = k->src;
  struct task_snap *ts = &k->snaps[id % 4];
  if (ts->id != id || id <= k->published)
    return;
  k->published = id;
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)ts->n + 1);
  for (size_t i = 0; i < ts->n; i++) {
    const struct task_pos *tp = &ts->pos[i];
    size_t j = 0;
    while (j < k->n_parts && (k->parts[j].topic != tp->topic ||
                              k->parts[j].partition != tp->partition))
      j++;
    /* A partition let go since was committed when it was revoked. */
    if (j == k->n_parts || k->parts[j].committed >= tp->offset)
      continue;
    rd_kafka_topic_partition_list_add(l, s->topics[tp->topic], tp->partition)
        ->offset = tp->offset;
    k->parts[j].committed = tp->offset;
  }
  /* Async: the worker must not stall on it. */
  if (l->cnt) {
    rd_kafka_resp_err_t e = rd_kafka_commit(k->rk, l, 1);
    if (e)
      sl__klog(s->kj, SL__LOG_WARN, "source %s: committing offsets: %s", s->uid,
               rd_kafka_err2str(e));
  }
  rd_kafka_topic_partition_list_destroy(l);
}

static void ksrc_complete(sl_source_ctx_t *ctx, uint64_t id, void *opaque) {
  ksrc *s = opaque;
  ksub *k = s->sub[sl_source_ctx_subtask(ctx)];
  if (k && k->tasks) {
    task_complete(k, id);
    return;
  }
  /* Its offsets are committed with the transaction, nothing else. */
  if (k && k->eos_up) {
    if (!atomic_load(&k->grp.lost))
      release_revoked(k, id);
    return;
  }
  if (k && k->group && !s->kj->txn) {
    group_complete(k, id);
    return;
  }
  /* With an exactly_once sink the transaction commits the offsets; an
   * early commit here would make restart resolution see a transaction as
   * committed when it was not. A broadcast source in group mode commits
   * nothing: its positions are every process's own, not the group's. */
  if (!k || s->kj->txn || k->bcast)
    return;
  (void)id;
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new((int)k->n_parts);
  for (size_t i = 0; i < k->n_parts; i++) {
    kpart *p = &k->parts[i];
    if (p->next == p->committed)
      continue;
    rd_kafka_topic_partition_list_add(l, s->topics[p->topic], p->partition)
        ->offset = p->next;
    p->committed = p->next;
  }
  /* Async: lag monitoring must not stall the worker. */
  if (l->cnt) {
    rd_kafka_resp_err_t e = rd_kafka_commit(k->rk, l, 1);
    if (e)
      sl__klog(s->kj, SL__LOG_WARN, "source %s: committing offsets: %s", s->uid,
               rd_kafka_err2str(e));
  }
  rd_kafka_topic_partition_list_destroy(l);
}

/* ---- Builder
 * ----------------------------------------------------------------- */

sl_stream_t *sl_source_kafka(sl_job_t *job, const char *uid, const char *topics,
                             const sl_kafka_source_opts_t *opts) {
  return sl__ksource_new(job, uid, topics, opts, false);
}

sl_stream_t *sl__ksource_new(sl_job_t *job, const char *uid, const char *topics,
                             const sl_kafka_source_opts_t *opts, bool repart) {
  if (!job)
    return NULL;
  if (!topics || !*topics) {
    sl_job_build_error(job, SL_ERR_INVAL, "kafka source \"%s\": no topics",
                       uid ? uid : "");
    return NULL;
  }
  if (!uid || !*uid) {
    sl_job_build_error(job, SL_ERR_INVAL,
                       "kafka source: a uid is required (positions in "
                       "checkpoints belong to it)");
    return NULL;
  }
  char berr[256];
  if (sl__kconf_brokers(sl_job_conf(job), berr, sizeof(berr))) {
    sl_job_build_error(job, SL_ERR_CONF, "kafka source \"%s\": %s", uid, berr);
    return NULL;
  }
  bool bad_stop = opts && opts->stop == SL_KAFKA_STOP_OFFSETS &&
                  opts->n_stop_offsets && !opts->stop_offsets;
  for (size_t i = 0; opts && !bad_stop && opts->stop == SL_KAFKA_STOP_OFFSETS &&
                     i < opts->n_stop_offsets;
       i++)
    bad_stop = !opts->stop_offsets[i].topic || opts->stop_offsets[i].offset < 0;
  if (bad_stop || (opts && (opts->stop < SL_KAFKA_STOP_NONE ||
                            opts->stop > SL_KAFKA_STOP_TIMESTAMP))) {
    sl_job_build_error(job, SL_ERR_INVAL,
                       "kafka source \"%s\": bad stop (a stop offset needs "
                       "a topic and an offset >= 0)",
                       uid);
    return NULL;
  }
  sl__kjob *kj = sl__kjob_get(job);
  /* Group mode: the directory of who owns which task, before the job
   * runs (it is a service of the job). */
  if (kj && sl__kgroup_on(sl_job_conf(job)) && !sl__kowners_get(kj))
    return NULL;
  ksrc *s = kj ? calloc(1, sizeof(*s)) : NULL;
  if (!s)
    goto oom;
  pthread_mutex_init(&s->lock, NULL);
  s->kj = kj;
  s->repart = repart;
  if (opts)
    s->o = *opts;
  if (!(s->uid = strdup(uid)) ||
      (opts && opts->group_id && !(s->group = strdup(opts->group_id))) ||
      (opts && opts->key_pointer &&
       !(s->key_ptr = strdup(opts->key_pointer))) ||
      (opts && opts->ts_pointer && !(s->ts_ptr = strdup(opts->ts_pointer))))
    goto oom;
  /* Split "a, b,c" into sorted, distinct names. */
  for (const char *p = topics; *p;) {
    while (*p == ',' || *p == ' ')
      p++;
    size_t n = strcspn(p, ", ");
    if (!n)
      break;
    char **t = realloc(s->topics, (size_t)(s->n_topics + 1) * sizeof(char *));
    if (!t)
      goto oom;
    s->topics = t;
    if (!(s->topics[s->n_topics] = strndup(p, n)))
      goto oom;
    s->n_topics++;
    p += n;
  }
  qsort(s->topics, (size_t)s->n_topics, sizeof(char *), cmp_str);
  if (s->o.stop == SL_KAFKA_STOP_OFFSETS && s->o.n_stop_offsets) {
    if (!(s->stop_offs = calloc(s->o.n_stop_offsets, sizeof(*s->stop_offs))))
      goto oom;
    for (size_t i = 0; i < s->o.n_stop_offsets; i++) {
      const sl_kafka_offset_t *o = &s->o.stop_offsets[i];
      s->stop_offs[i] = *o;
      if (!(s->stop_offs[i].topic = strdup(o->topic)))
        goto oom;
      s->n_stop_offs++;
    }
  }
  s->o.stop_offsets = NULL;
  for (int i = 0; i < MAX_SUBTASKS; i++) {
    atomic_init(&s->align_wm[i], SL_TS_MIN);
    atomic_init(&s->fwd_wm[i], SL_TS_MIN);
  }
  s->jkey = s->jts = -1;
  if (s->o.codec == SL_KAFKA_JSON && !s->o.decode &&
      !(s->jp = calloc(2, sizeof(*s->jp))))
    goto oom;
  s->fast = s->jp != NULL;
  if (s->fast && s->key_ptr) {
    s->jkey = (int)s->n_jp;
    s->fast = !sl__jptr_compile(&s->jp[s->n_jp++], s->key_ptr);
  }
  if (s->fast && s->ts_ptr) {
    s->jts = (int)s->n_jp;
    s->fast = !sl__jptr_compile(&s->jp[s->n_jp++], s->ts_ptr);
  }
  s->ops = (sl_source_ops_t){.open = ksrc_open,
                             .poll = ksrc_poll,
                             .close = ksrc_close,
                             .parallel = true,
                             .snapshot = ksrc_snapshot,
                             .restore = ksrc_restore,
                             .checkpoint_complete = ksrc_complete};
  pthread_mutex_lock(&kj->lock);
  char **u = realloc(kj->src_uids, (kj->n_src + 1) * sizeof(char *));
  if (u)
    kj->src_uids = u;
  char *ud = u ? strdup(uid) : NULL;
  if (ud)
    kj->src_uids[kj->n_src++] = ud;
  pthread_mutex_unlock(&kj->lock);
  if (!ud)
    goto oom;
  sl__kdlq_install(kj);
  sl_stream_t *st = sl_source(job, uid, &s->ops, s);
  if (!st) {
    ksrc_free(s);
    return NULL;
  }
  s->node = st->node;
  /* In group mode it sends its tasks' watermarks (task_wm). */
  st->node->task_wm = true;
  sl_job_adopt(job, s, ksrc_free);
  return st;
oom:
  if (s)
    ksrc_free(s);
  sl_job_build_error(job, SL_ERR_NOMEM, "kafka source: out of memory");
  return NULL;
}
