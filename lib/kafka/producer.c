/* SPDX-License-Identifier: Apache-2.0 */
/* The job's shared producers: a plain idempotent one (none and
 * at_least_once sinks, the dead-letter queue) and the one transactional
 * producer of exactly_once sinks, with the exactly-once protocol steps the
 * checkpoint coordinator calls (commit, abort, restart resolution).
 * Delivery reports are served on librdkafka's background thread, so no
 * worker has to poll and a failed delivery is seen by every sink. */
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/conf.h"
#include "core/hash.h"
#include "kafka/group_int.h"
#include "kafka/kafka_int.h"
#include "runtime/group.h"
#include "runtime/tasks.h"

#define LOG_CAP 1024

struct sl__kprod {
  sl__kjob *kj;
  bool txn;
  rd_kafka_t *rk;
  int refs; /* under kj->lock */
  /* Serializes transaction steps; never taken on the per-record path. */
  pthread_mutex_t lock;
  _Atomic int failed;
  _Atomic int stop; /* poller thread */
  pthread_t thread;
  bool polling;
  char err[512]; /* written once, before failed is set */
  /* Records after barrier b may join the open transaction iff
   * b <= released: the checkpoint ids committed or given up. */
  _Atomic uint64_t released;
  bool txn_open;
  int timeout_ms;
  sl__ktxn_event log[LOG_CAP];
  uint64_t log_id[LOG_CAP];
  size_t n_log;
  /* For the metrics reporter: the client once created (rk is written
   * under lock, which a long transaction step holds), and what the last
   * statistics said, under st_lock. */
  _Atomic(rd_kafka_t *) rk_pub;
  pthread_mutex_t st_lock;
  sl__kprod_stat st;
};

static void log_event(sl__kprod *p, sl__ktxn_event e, uint64_t id) {
  if (p->n_log < LOG_CAP) {
    p->log[p->n_log] = e;
    p->log_id[p->n_log++] = id;
  }
}

size_t sl__ktxn_log(sl__kprod *p, sl__ktxn_event *ev, uint64_t *ids,
                    size_t cap) {
  pthread_mutex_lock(&p->lock);
  size_t n = p->n_log < cap ? p->n_log : cap;
  memcpy(ev, p->log, n * sizeof(*ev));
  memcpy(ids, p->log_id, n * sizeof(*ids));
  pthread_mutex_unlock(&p->lock);
  return n;
}

static void set_failed(sl__kprod *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_failed(sl__kprod *p, const char *fmt, ...) {
  static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&once);
  if (!atomic_load(&p->failed)) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof(p->err), fmt, ap);
    va_end(ap);
    atomic_store(&p->failed, 1);
    sl__klog(p->kj, SL__LOG_ERROR, "%s", p->err);
  }
  pthread_mutex_unlock(&once);
}

const char *sl__kprod_error(sl__kprod *p) {
  return atomic_load_explicit(&p->failed, memory_order_acquire) ? p->err : NULL;
}

rd_kafka_t *sl__kprod_handle(sl__kprod *p) {
  return p->rk;
}

uint64_t sl__ktxn_released(sl__kprod *p) {
  return atomic_load_explicit(&p->released, memory_order_acquire);
}

/* Delivery reports and errors, served by the producer's poller thread
 * (and by flush). A failed delivery (after librdkafka's own retries)
 * fails the job: never silent. A sink's records carry its figures as
 * their opaque (dead letters carry &sl__kdlq_tag). */
static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  bool purged = m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
                m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT;
  sl__ksink_stat *st =
      m->_private && m->_private != &sl__kdlq_tag ? m->_private : NULL;
  if (st && !purged)
    atomic_fetch_add_explicit(m->err ? &st->failed : &st->delivered, 1,
                              memory_order_relaxed);
  /* Purges come only from aborting a transaction on purpose; a dead
   * letter the broker found too large is retried smaller (dlq.c). */
  if (m->err && !purged &&
      !sl__kdlq_redeliver(((sl__kprod *)opaque)->kj, rk, m))
    set_failed(opaque, "delivery to %s[%" PRId32 "] failed: %s",
               m->rkt ? rd_kafka_topic_name(m->rkt) : "?", m->partition,
               rd_kafka_err2str(m->err));
}

/* librdkafka's statistics (kafka.statistics.interval.ms): request retries
 * over all brokers, and each broker's average round trip and throttle
 * time over the last window. Brokers without a node id (bootstrap
 * addresses) are left out. */
static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
  (void)rk;
  sl__kprod *p = opaque;
  json_t *root = json_loadb(json, len, 0, NULL);
  json_t *brokers = root ? json_object_get(root, "brokers") : NULL;
  if (!json_is_object(brokers)) {
    json_decref(root);
    return 0;
  }
  sl__kprod_stat st = {.have_stats = true};
  const char *name;
  json_t *b;
  json_object_foreach(brokers, name, b) {
    json_int_t id = json_integer_value(json_object_get(b, "nodeid"));
    st.retries += (uint64_t)json_integer_value(json_object_get(b, "txretries"));
    if (id < 0 || st.n_brokers == sizeof(st.brokers) / sizeof(st.brokers[0]))
      continue;
    json_t *rtt = json_object_get(json_object_get(b, "rtt"), "avg");
    json_t *thr = json_object_get(json_object_get(b, "throttle"), "avg");
    st.brokers[st.n_brokers++] =
        (sl__kbroker_stat){(int32_t)id, (double)json_integer_value(rtt) / 1e6,
                           (double)json_integer_value(thr) / 1e3};
  }
  json_decref(root);
  pthread_mutex_lock(&p->st_lock);
  p->st.have_stats = true;
  p->st.retries = st.retries;
  memcpy(p->st.brokers, st.brokers, sizeof(st.brokers));
  p->st.n_brokers = st.n_brokers;
  pthread_mutex_unlock(&p->st_lock);
  return 0; /* librdkafka frees json */
}

/* The client is read under st_lock: a revival replaces it
 * (sl__ktxn_restart). */
void sl__kprod_stats(sl__kprod *p, sl__kprod_stat *out) {
  pthread_mutex_lock(&p->st_lock);
  *out = p->st;
  rd_kafka_t *rk = atomic_load_explicit(&p->rk_pub, memory_order_acquire);
  out->live = rk != NULL;
  out->queue = rk ? rd_kafka_outq_len(rk) : 0;
  pthread_mutex_unlock(&p->st_lock);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason,
                     void *opaque) {
  char buf[512];
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    rd_kafka_fatal_error(rk, buf, sizeof(buf));
    set_failed(opaque, "fatal producer error: %s", buf);
  } else if (err != RD_KAFKA_RESP_ERR__TRANSPORT &&
             err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    sl__klog(((sl__kprod *)opaque)->kj, SL__LOG_WARN, "producer: %s", reason);
  }
}

/* Workers never poll the producer: this thread serves its callbacks. */
static void *poller(void *arg) {
  sl__kprod *p = arg;
  while (!atomic_load_explicit(&p->stop, memory_order_relaxed))
    rd_kafka_poll(p->rk, 50);
  return NULL;
}

static sl__kprod *kprod_new(sl__kjob *kj, bool txn) {
  sl__kprod *p = calloc(1, sizeof(*p));
  if (!p)
    return NULL;
  p->kj = kj;
  p->txn = txn;
  pthread_mutex_init(&p->lock, NULL);
  pthread_mutex_init(&p->st_lock, NULL);
  return p;
}

/* The transactional producer exists from graph-build time (the
 * participant points at it); its client is created by the first sink. */
sl__kprod *sl__ktxn_get(sl__kjob *kj) {
  pthread_mutex_lock(&kj->lock);
  if (!kj->txn)
    kj->txn = kprod_new(kj, true);
  sl__kprod *p = kj->txn;
  pthread_mutex_unlock(&kj->lock);
  return p;
}

void sl__kprod_destroy(sl__kprod *p) {
  if (!p)
    return;
  /* Whatever is still queued (e.g. dead-letter records of a stopped job)
   * gets its chance; rd_kafka_destroy alone would drop it. */
  if (p->rk && !p->txn && rd_kafka_flush(p->rk, p->timeout_ms))
    sl__klog(p->kj, SL__LOG_WARN,
             "%d messages undelivered when the job was destroyed",
             rd_kafka_outq_len(p->rk));
  if (p->polling) {
    atomic_store(&p->stop, 1);
    pthread_join(p->thread, NULL);
  }
  if (p->rk)
    rd_kafka_destroy(p->rk);
  pthread_mutex_destroy(&p->lock);
  pthread_mutex_destroy(&p->st_lock);
  free(p);
}

/* Aborts the open transaction, if any (p->lock held); logged with id.
 * Its failure leaves nothing to do: the job fails either way. */
static void abort_open(sl__kprod *p, uint64_t id) {
  if (!p->txn_open)
    return;
  rd_kafka_error_t *e = rd_kafka_abort_transaction(p->rk, p->timeout_ms);
  log_event(p, SL__KTXN_ABORT, id);
  p->txn_open = false;
  if (e)
    rd_kafka_error_destroy(e);
}

/* A failed transactional call: retriable errors are retried by the
 * caller, abortable ones abort the transaction; the message is kept. */
static int txn_error(sl__kprod *p, const char *what, rd_kafka_error_t *e) {
  set_failed(p, "%s: %s", what, rd_kafka_error_string(e));
  bool abortable = rd_kafka_error_txn_requires_abort(e);
  rd_kafka_error_destroy(e);
  if (abortable)
    abort_open(p, 0);
  return SL_ERR_KAFKA;
}

/* Opens the transaction that follows checkpoint `after` (logged). */
static int begin(sl__kprod *p, uint64_t after) {
  rd_kafka_error_t *e = rd_kafka_begin_transaction(p->rk);
  if (e)
    return txn_error(p, "begin_transaction", e);
  p->txn_open = true;
  log_event(p, SL__KTXN_BEGIN, after);
  return 0;
}

static int create(sl__kprod *p, const sl_conf_t *conf, char *err,
                  size_t errlen) {
  char tmo[32], txn_tmo[32], tid[512], cid[300];
  int64_t bt = sl__conf_int(conf, "broker.timeout.ms");
  p->timeout_ms = (int)bt;
  snprintf(tmo, sizeof(tmo), "%" PRId64, bt);
  snprintf(txn_tmo, sizeof(txn_tmo), "%" PRId64, bt > 60000 ? bt : 60000);
  snprintf(tid, sizeof(tid), "%s-%s",
           sl__conf_str(conf, "sink.transactional.id.prefix"), p->kj->name);
  snprintf(cid, sizeof(cid), "sluice-%s-%s", p->kj->name,
           p->txn ? "txn" : "producer");
  const char *defaults[] = {"client.id",
                            cid,
                            "enable.idempotence",
                            "true",
                            "partitioner",
                            "murmur2_random",
                            "message.timeout.ms",
                            tmo,
                            "transaction.timeout.ms",
                            p->txn ? txn_tmo : NULL,
                            "transactional.id",
                            p->txn ? tid : NULL,
                            NULL};
  rd_kafka_conf_t *rc;
  int r = sl__kconf(conf, defaults, &rc, err, errlen);
  if (r)
    return r;
  rd_kafka_conf_set_dr_msg_cb(rc, on_dr);
  rd_kafka_conf_set_error_cb(rc, on_error);
  rd_kafka_conf_set_stats_cb(rc, on_stats);
  rd_kafka_conf_set_opaque(rc, p);
  char e[512];
  p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, e, sizeof(e));
  if (!p->rk) {
    rd_kafka_conf_destroy(rc);
    snprintf(err, errlen, "cannot create producer: %s", e);
    return SL_ERR_KAFKA;
  }
  if (pthread_create(&p->thread, NULL, poller, p)) {
    rd_kafka_destroy(p->rk);
    p->rk = NULL;
    snprintf(err, errlen, "cannot start the producer's poller thread");
    return SL_ERR_NOMEM;
  }
  p->polling = true;
  atomic_store_explicit(&p->rk_pub, p->rk, memory_order_release);
  if (!p->txn)
    return SL_OK;
  rd_kafka_error_t *ie = rd_kafka_init_transactions(p->rk, p->timeout_ms);
  if (ie) {
    snprintf(err, errlen, "init_transactions (transactional.id %s): %s", tid,
             rd_kafka_error_string(ie));
    set_failed(p, "%s", err);
    rd_kafka_error_destroy(ie);
    return SL_ERR_KAFKA; /* the client is freed with the job */
  }
  log_event(p, SL__KTXN_INIT, 0);
  if (begin(p, atomic_load(&p->released))) {
    snprintf(err, errlen, "%s", p->err);
    return SL_ERR_KAFKA;
  }
  return SL_OK;
}

/* Lock order: p->lock is never held while kj->lock is taken for long
 * (commit takes kj->lock inside p->lock to read positions), so creation
 * happens under p->lock alone. A failed creation marks the producer
 * failed, so later instances report the same error. */
sl__kprod *sl__kprod_acquire(sl__kjob *kj, bool txn, const sl_conf_t *conf,
                             char *err, size_t errlen) {
  sl__kprod *p = txn ? sl__ktxn_get(kj) : NULL;
  if (!txn) {
    pthread_mutex_lock(&kj->lock);
    if (!kj->plain)
      kj->plain = kprod_new(kj, false);
    p = kj->plain;
    pthread_mutex_unlock(&kj->lock);
  }
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  int rc = SL_OK;
  pthread_mutex_lock(&p->lock);
  if (!p->rk && !sl__kprod_error(p)) {
    rc = create(p, conf, err, errlen);
    if (rc && !sl__kprod_error(p))
      set_failed(p, "%s", err);
  } else if (sl__kprod_error(p)) {
    snprintf(err, errlen, "%s", sl__kprod_error(p));
    rc = SL_ERR_KAFKA;
  }
  pthread_mutex_unlock(&p->lock);
  if (rc)
    return NULL;
  pthread_mutex_lock(&kj->lock);
  p->refs++;
  pthread_mutex_unlock(&kj->lock);
  return p;
}

/* The last sink of a transactional producer aborts the open transaction:
 * its records come after the last completed checkpoint, so a restart
 * replays them (committing here would duplicate them). */
void sl__kprod_release(sl__kprod *p) {
  if (!p)
    return;
  pthread_mutex_lock(&p->kj->lock);
  bool last = --p->refs == 0;
  pthread_mutex_unlock(&p->kj->lock);
  if (!last || !p->rk)
    return;
  pthread_mutex_lock(&p->lock);
  if (p->txn) {
    abort_open(p, atomic_load(&p->released));
  } else {
    rd_kafka_flush(p->rk, p->timeout_ms);
  }
  pthread_mutex_unlock(&p->lock);
}

int sl__kprod_flush(sl__kprod *p, char *err, size_t errlen) {
  rd_kafka_resp_err_t e = rd_kafka_flush(p->rk, p->timeout_ms);
  const char *f = sl__kprod_error(p);
  if (f) {
    snprintf(err, errlen, "%s", f);
    return SL_ERR_KAFKA;
  }
  if (e) {
    snprintf(err, errlen,
             "flush: %s (%d messages undelivered after broker.timeout.ms)",
             rd_kafka_err2str(e), rd_kafka_outq_len(p->rk));
    return SL_ERR_KAFKA;
  }
  return SL_OK;
}

int sl__kprod_flush_plain(sl__kjob *kj, char *err, size_t errlen) {
  pthread_mutex_lock(&kj->lock);
  sl__kprod *p = kj->plain;
  pthread_mutex_unlock(&kj->lock);
  return p && atomic_load_explicit(&p->rk_pub, memory_order_acquire)
             ? sl__kprod_flush(p, err, errlen)
             : SL_OK;
}

int sl__kprod_send(sl__kprod *p, const char *topic, const void *key,
                   size_t key_len, const void *value, size_t value_len,
                   int64_t ts, rd_kafka_headers_t *hdrs, char *err,
                   size_t errlen) {
  return sl__kprod_sendv(p, topic, RD_KAFKA_PARTITION_UA, key, key_len, value,
                         value_len, ts, hdrs, NULL, err, errlen);
}

int sl__kprod_sendv(sl__kprod *p, const char *topic, int32_t partition,
                    const void *key, size_t key_len, const void *value,
                    size_t value_len, int64_t ts, rd_kafka_headers_t *hdrs,
                    void *msg_opaque, char *err, size_t errlen) {
  const char *f = sl__kprod_error(p);
  if (f) {
    if (hdrs)
      rd_kafka_headers_destroy(hdrs);
    snprintf(err, errlen, "%s", f);
    return SL_ERR_KAFKA;
  }
  for (;;) {
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, key_len),
        RD_KAFKA_V_VALUE((void *)value, value_len),
        RD_KAFKA_V_TIMESTAMP(ts >= 0 ? ts : 0), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
    if (!e)
      return SL_OK;
    if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      if (hdrs)
        rd_kafka_headers_destroy(hdrs);
      snprintf(err, errlen, "produce to %s: %s", topic, rd_kafka_err2str(e));
      return SL_ERR_KAFKA;
    }
    /* Backpressure from librdkafka's queue: the background thread drains
     * it as the broker acknowledges. */
    if ((f = sl__kprod_error(p))) {
      if (hdrs)
        rd_kafka_headers_destroy(hdrs);
      snprintf(err, errlen, "%s", f);
      return SL_ERR_KAFKA;
    }
    struct timespec t = {0, 1000 * 1000};
    nanosleep(&t, NULL);
  }
}

/* ---- Exactly-once protocol
 * --------------------------------------------------- */

/* Errors of send_offsets_to_transaction by which the group coordinator
 * says that the member is not (or no longer) one of the current
 * generation: its partitions may be another member's. */
static bool refused_member(rd_kafka_resp_err_t e) {
  return e == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
         e == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
         e == RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID ||
         e == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS;
}

/* Adds the source positions of checkpoint id to the transaction, one
 * send_offsets_to_transaction per consumer group and member. In group
 * mode each member's offsets go with its own group metadata (md, from
 * sl__kgroup_check_members: generation and member id, EOS v2), so a
 * broker refuses them from a member it no longer counts; outside group
 * mode the source's consumers are not members and the group id is all
 * there is. In group mode each offset's commit metadata is the name the
 * task pointers give checkpoint id, so that whoever resolves it pending
 * can tell its commit from an abort even where the offset is the one of
 * the checkpoint before (nothing read in the epoch). */
static int send_offsets(sl__kprod *p, uint64_t id,
                        rd_kafka_consumer_group_metadata_t *const *md,
                        size_t n_md) {
  sl__kjob *kj = p->kj;
  char name[512];
  sl__task_ckpt_name(kj->job, id, name, sizeof(name));
  for (;;) {
    const char *group = NULL;
    int member = -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    char gbuf[512];
    pthread_mutex_lock(&kj->lock);
    for (size_t i = 0; i < kj->n_pos; i++) {
      sl__kpos *q = &kj->pos[i];
      if (q->id != id || q->offset < 0)
        continue;
      if (!group) {
        snprintf(gbuf, sizeof(gbuf), "%s", q->group);
        group = gbuf;
        member = q->member;
      }
      if (strcmp(q->group, group) == 0 && q->member == member) {
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_add(l, q->topic, q->partition);
        tp->offset = q->offset;
        /* Freed with the list; without it the offset goes alone. */
        if (name[0] && (tp->metadata = strdup(name)))
          tp->metadata_size = strlen(name);
        q->offset = -1; /* sent */
      }
    }
    pthread_mutex_unlock(&kj->lock);
    if (!group) {
      rd_kafka_topic_partition_list_destroy(l);
      return 0;
    }
    rd_kafka_consumer_group_metadata_t *own = NULL;
    if (member >= 0 && ((size_t)member >= n_md || !md[member])) {
      /* Its consumer is gone: nothing says it still owns what it read. */
      rd_kafka_topic_partition_list_destroy(l);
      set_failed(p,
                 "checkpoint %" PRIu64 ": a member of group %s that read "
                 "its positions has left: the transaction is aborted",
                 id, group);
      return SL_ERR_KAFKA;
    }
    if (member < 0)
      own = rd_kafka_consumer_group_metadata_new(group);
    rd_kafka_error_t *e = rd_kafka_send_offsets_to_transaction(
        p->rk, l, member >= 0 ? md[member] : own, p->timeout_ms);
    if (own)
      rd_kafka_consumer_group_metadata_destroy(own);
    rd_kafka_topic_partition_list_destroy(l);
    if (e && member >= 0 && refused_member(rd_kafka_error_code(e)))
      /* A real broker checked the member's metadata (KIP-447) and no
       * longer counts it: the process is fenced. */
      sl__job_fail_fenced(kj->job, SL_ERR_KAFKA,
                          "checkpoint %" PRIu64 ": fenced: the group "
                          "coordinator refused the offsets of group %s: %s",
                          id, group, rd_kafka_error_string(e));
    if (e)
      return txn_error(p, "send_offsets_to_transaction", e);
    log_event(p, SL__KTXN_SEND_OFFSETS, id);
  }
}

/* Group mode: every member of this process must still hold its
 * assignment, or the transaction holds output of records another member
 * may be processing again from the task's pointer (group.c). Fills md
 * (*n entries, freed by the caller). */
static int check_members(sl__kprod *p, uint64_t id,
                         rd_kafka_consumer_group_metadata_t ***md, size_t *n) {
  sl__kjob *kj = p->kj;
  char err[512];
  int rc = 0;
  pthread_mutex_lock(&kj->lock);
  *n = kj->n_members;
  *md = *n ? calloc(*n, sizeof(**md)) : NULL;
  if (*n && !*md) {
    snprintf(err, sizeof(err), "out of memory");
    rc = SL_ERR_NOMEM;
  } else if (*n) {
    rc = sl__kgroup_check_members(kj, *md, err, sizeof(err));
  }
  pthread_mutex_unlock(&kj->lock);
  if (rc)
    set_failed(p, "checkpoint %" PRIu64 ": %s", id, err);
  /* A member that lost its assignment: the process is fenced. */
  if (rc == SL_ERR_KAFKA)
    sl__job_fail_fenced(kj->job, rc, "checkpoint %" PRIu64 ": %s", id, err);
  return rc;
}

/* Group mode with checkpoints: each task whose offset this transaction
 * carries names checkpoint id pending in its pointer before the commit
 * (runtime/tasks.h), so that whoever takes the task next can tell,
 * should this process die before it points the task at id, whether the
 * transaction committed, and restore the snapshot the output matches
 * (docs/scaling.md). After check_members: a member that lost its tasks
 * writes nothing into their pointers. */
static int prepare_tasks(sl__kprod *p, uint64_t id) {
  sl__kjob *kj = p->kj;
  int32_t *tasks = NULL;
  int64_t *offs = NULL;
  size_t n = 0;
  int rc = 0;
  pthread_mutex_lock(&kj->lock);
  for (size_t i = 0; i < kj->n_pos; i++)
    n += kj->pos[i].id == id && kj->pos[i].task;
  if (n && (!(tasks = malloc(n * sizeof(*tasks))) ||
            !(offs = malloc(n * sizeof(*offs)))))
    rc = SL_ERR_NOMEM;
  for (size_t i = 0, j = 0; !rc && i < kj->n_pos; i++)
    if (kj->pos[i].id == id && kj->pos[i].task) {
      int64_t t = sl__ktask_of(kj, kj->pos[i].topic, kj->pos[i].partition);
      tasks[j] = t < 0 ? INT32_MAX : (int32_t)t; /* not a task: skipped */
      offs[j++] = kj->pos[i].offset;
    }
  pthread_mutex_unlock(&kj->lock);
  char err[512] = "out of memory";
  for (size_t i = 0; i < n && !rc; i++)
    rc = sl__task_prepare(kj->job, id, (uint32_t)tasks[i], offs[i], err,
                          sizeof(err));
  if (rc == SL__TASK_PTR_MOVED) {
    /* Another process wrote the pointer since this one did: it owns the
     * task, and this transaction must not commit. */
    rc = SL_ERR_KAFKA;
    sl__job_fail_fenced(kj->job, rc, "checkpoint %" PRIu64 ": %s", id, err);
  }
  if (rc)
    set_failed(p, "checkpoint %" PRIu64 ": %s", id, err);
  free(tasks);
  free(offs);
  return rc;
}

static void free_md(rd_kafka_consumer_group_metadata_t **md, size_t n) {
  for (size_t i = 0; md && i < n; i++)
    if (md[i])
      rd_kafka_consumer_group_metadata_destroy(md[i]);
  free(md);
}

int sl__ktxn_commit(uint64_t id, void *arg) {
  sl__kjob *kj = arg;
  sl__kprod *p = kj->txn;
  int rc = 0;
  pthread_mutex_lock(&p->lock);
  if (!p->rk) {
    /* No exactly_once sink opened in this process. */
    atomic_store(&p->released, id);
    goto out;
  }
  if (sl__kprod_error(p) || !p->txn_open) {
    abort_open(p, id);
    rc = SL_ERR_KAFKA;
    goto out;
  }
  int64_t t0 = sl__mono_ms();
  rd_kafka_consumer_group_metadata_t **md = NULL;
  size_t n_md = 0;
  rc = check_members(p, id, &md, &n_md);
  if (!rc)
    rc = prepare_tasks(p, id);
  if (!rc)
    rc = send_offsets(p, id, md, n_md);
  free_md(md, n_md);
  /* Once more right before the commit: writing the pending pointers and
   * sending the offsets take a few round trips, and a process stopped in
   * them for a session timeout (its tasks restored elsewhere from the
   * pointers meanwhile) must not commit once resumed. What remains is
   * the commit's own request (docs/scaling.md). */
  if (!rc) {
    rc = check_members(p, id, &md, &n_md);
    free_md(md, n_md);
  }
  if (rc) {
    /* Fenced, or the offsets were refused: nothing of this transaction
     * may become visible, and no pointer names checkpoint id. */
    abort_open(p, id);
    goto out;
  }
  for (int attempt = 0;; attempt++) {
    rd_kafka_error_t *e = rd_kafka_commit_transaction(p->rk, p->timeout_ms);
    if (!e) {
      sl__kstats_commit(kj, (double)(sl__mono_ms() - t0) / 1000.0);
      break;
    }
    if (rd_kafka_error_is_retriable(e) && attempt < 3) {
      rd_kafka_error_destroy(e);
      continue;
    }
    rc = txn_error(p, "commit_transaction", e);
    goto out;
  }
  p->txn_open = false;
  log_event(p, SL__KTXN_COMMIT, id);
  /* Writers see released >= id and produce directly: only once the next
   * transaction is open (a produce between commit and begin fails with
   * "Erroneous state"). */
  if (!(rc = begin(p, id)))
    atomic_store_explicit(&p->released, id, memory_order_release);
out:
  pthread_mutex_unlock(&p->lock);
  sl__kpos_drop(kj, id);
  if (rc)
    sl__klog(kj, SL__LOG_ERROR,
             "checkpoint %" PRIu64 ": exactly-once commit failed: %s", id,
             p->err);
  return rc;
}

void sl__ktxn_restart(sl__kjob *kj) {
  sl__kprod *p = kj->txn;
  if (p) {
    pthread_mutex_lock(&p->lock);
    if (p->polling) {
      atomic_store(&p->stop, 1);
      pthread_join(p->thread, NULL);
      atomic_store(&p->stop, 0);
      p->polling = false;
    }
    if (p->rk) {
      /* Not under st_lock: destroying serves the client's callbacks. */
      pthread_mutex_lock(&p->st_lock);
      atomic_store_explicit(&p->rk_pub, NULL, memory_order_release);
      pthread_mutex_unlock(&p->st_lock);
      rd_kafka_destroy(p->rk);
      p->rk = NULL;
    }
    p->txn_open = false;
    p->err[0] = '\0';
    atomic_store(&p->failed, 0);
    pthread_mutex_unlock(&p->lock);
  }
  sl__kpos_drop(kj, UINT64_MAX);
}

const char *sl__ktxn_error(void *arg) {
  sl__kjob *kj = arg;
  return kj->txn ? sl__kprod_error(kj->txn) : NULL;
}

/* A checkpoint given up: its records stay in the open transaction, which
 * the next completed checkpoint commits (as Flink's two-phase sinks do). */
void sl__ktxn_abort(uint64_t id, void *arg) {
  sl__kjob *kj = arg;
  sl__kprod *p = kj->txn;
  pthread_mutex_lock(&p->lock);
  if (atomic_load(&p->released) < id)
    atomic_store_explicit(&p->released, id, memory_order_release);
  pthread_mutex_unlock(&p->lock);
  /* The next commit carries its own, later positions. */
  sl__kpos_drop(kj, id);
}

/* ---- Restart resolution
 * ------------------------------------------------------ */

typedef struct rentry {
  char *group, *topic;
  int32_t partition;
  int64_t offset;
  char *meta; /* lookup_cluster: the committed metadata (NULL: none) */
} rentry;

typedef struct rlist {
  rentry *e;
  size_t n;
} rlist;

static int collect(const char *group, const char *topic, int32_t partition,
                   int64_t offset, void *arg) {
  rlist *l = arg;
  rentry *e = realloc(l->e, (l->n + 1) * sizeof(*e));
  if (!e)
    return SL_ERR_NOMEM;
  l->e = e;
  e[l->n] = (rentry){strdup(group), strdup(topic), partition, offset, NULL};
  if (!e[l->n].group || !e[l->n].topic) {
    free(e[l->n].group);
    free(e[l->n].topic);
    return SL_ERR_NOMEM;
  }
  l->n++;
  return 0;
}

/* The default lookup: the group's committed offsets from the cluster. */
static int lookup_cluster(sl__kjob *kj, rlist *l, int64_t *committed) {
  char err[512];
  for (size_t i = 0; i < l->n; i++) {
    if (committed[i] != INT64_MIN)
      continue;
    const char *group = l->e[i].group;
    const char *defaults[] = {"group.id", group, "enable.auto.commit", "false",
                              NULL};
    rd_kafka_conf_t *rc;
    if (sl__kconf(kj->conf, defaults, &rc, err, sizeof(err))) {
      sl__klog(kj, SL__LOG_WARN, "resolve: %s", err);
      return SL_ERR_CONF;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, err, sizeof(err));
    if (!rk) {
      rd_kafka_conf_destroy(rc);
      sl__klog(kj, SL__LOG_WARN, "resolve: %s", err);
      return SL_ERR_KAFKA;
    }
    rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(8);
    for (size_t j = i; j < l->n; j++)
      if (strcmp(l->e[j].group, group) == 0)
        rd_kafka_topic_partition_list_add(tl, l->e[j].topic, l->e[j].partition);
    rd_kafka_resp_err_t e = rd_kafka_committed(
        rk, tl, (int)sl__conf_int(kj->conf, "broker.timeout.ms"));
    for (size_t j = i; j < l->n && !e; j++) {
      if (strcmp(l->e[j].group, group) != 0)
        continue;
      rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(
          tl, l->e[j].topic, l->e[j].partition);
      committed[j] = tp && !tp->err && tp->offset >= 0 ? tp->offset : -1;
      if (committed[j] >= 0 && tp->metadata_size &&
          (l->e[j].meta = malloc(tp->metadata_size + 1))) {
        memcpy(l->e[j].meta, tp->metadata, tp->metadata_size);
        l->e[j].meta[tp->metadata_size] = '\0';
      }
    }
    rd_kafka_topic_partition_list_destroy(tl);
    rd_kafka_destroy(rk);
    if (e) {
      sl__klog(kj, SL__LOG_WARN, "resolve: committed offsets of group %s: %s",
               group, rd_kafka_err2str(e));
      return SL_ERR_KAFKA;
    }
  }
  return 0;
}

static void rlist_free(rlist *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->e[i].group);
    free(l->e[i].topic);
    free(l->e[i].meta);
  }
  free(l->e);
}

int sl__ktxn_committed(sl__kjob *kj, const char *group, const char *topic,
                       int32_t partition, int64_t *offset, char *meta,
                       size_t metalen) {
  char none[1];
  if (!meta || !metalen)
    meta = none, metalen = sizeof(none);
  *offset = INT64_MIN;
  meta[0] = '\0';
  if (kj->committed) {
    int rc = kj->committed(group, topic, partition, offset, meta, metalen,
                           kj->committed_opaque);
    meta[metalen - 1] = '\0'; /* whatever the lookup did */
    return rc;
  }
  rlist l = {NULL, 0};
  int rc = collect(group, topic, partition, -1, &l);
  if (!rc)
    rc = lookup_cluster(kj, &l, offset);
  if (!rc && l.n && l.e[0].meta)
    snprintf(meta, metalen, "%s", l.e[0].meta);
  rlist_free(&l);
  return rc;
}

int sl__ktxn_pending_committed(sl__kjob *kj, const char *group,
                               const char *topic, int32_t partition,
                               const char *pending, int64_t pending_offset) {
  int64_t off;
  char meta[600];
  int rc =
      sl__ktxn_committed(kj, group, topic, partition, &off, meta, sizeof(meta));
  if (rc)
    return rc;
  /* Every transaction of this build names its checkpoint: the last one
   * that carried the partition is the pending one or not. Metadata
   * absent (offsets committed by an older build): the offset is all
   * there is, and equal offsets count as committed. */
  if (meta[0])
    return strcmp(meta, pending) == 0;
  return off == pending_offset;
}

/* Checkpoint id has metadata but no _COMMITTED mark: its transaction
 * committed iff the group's committed offsets equal its positions (the
 * transaction carried exactly those). */
int sl__ktxn_resolve(uint64_t id, const char *const *uids,
                     const sl_blob_t *const *positions, const size_t *n,
                     size_t n_uids, void *arg) {
  sl__kjob *kj = arg;
  rlist l = {NULL, 0};
  int rc = 0;
  for (size_t u = 0; u < n_uids && !rc; u++) {
    bool kafka = false;
    for (size_t k = 0; k < kj->n_src; k++)
      kafka = kafka || strcmp(kj->src_uids[k], uids[u]) == 0;
    for (size_t b = 0; kafka && b < n[u] && !rc; b++)
      rc = sl__kpos_decode(&positions[u][b], collect, &l);
  }
  int64_t *committed = l.n ? malloc(l.n * sizeof(int64_t)) : NULL;
  if (!rc && l.n && !committed)
    rc = SL_ERR_NOMEM;
  for (size_t i = 0; i < l.n && !rc; i++) {
    char meta[1] = "";
    committed[i] = INT64_MIN;
    if (kj->committed)
      rc = kj->committed(l.e[i].group, l.e[i].topic, l.e[i].partition,
                         &committed[i], meta, sizeof(meta),
                         kj->committed_opaque);
  }
  if (!rc && !kj->committed && l.n)
    rc = lookup_cluster(kj, &l, committed);
  int result = rc ? rc : l.n > 0;
  for (size_t i = 0; i < l.n; i++) {
    if (!rc && committed[i] != l.e[i].offset) {
      sl__klog(kj, SL__LOG_WARN,
               "checkpoint %" PRIu64 ": %s[%" PRId32 "] committed %" PRId64
               " != checkpoint position %" PRId64
               ": its transaction did not commit",
               id, l.e[i].topic, l.e[i].partition, committed[i], l.e[i].offset);
      result = 0;
    }
  }
  rlist_free(&l);
  free(committed);
  return result;
}

/* ---- Writer
 * --------------------------------------------------------------------- */

typedef struct held {
  uint64_t after; /* barrier the record came after */
  size_t off;     /* key then value bytes in the writer's byte buffer */
  size_t key_len, value_len;
  bool null_key;
  int64_t ts;
  rd_kafka_headers_t *hdrs;
} held;

struct sl__kwriter {
  sl__kprod *p;
  char *topic;
  bool eos;
  uint64_t barrier; /* last barrier passed */
  char epoch[24];   /* barrier as the sluice.epoch header value */
  int epoch_len;
  held *h;
  size_t head, n, cap;
  /* Bytes of held records, one growing buffer instead of an allocation
   * per record; emptied whenever nothing is held. */
  char *bytes;
  size_t bytes_len, bytes_cap;
  /* Key and value bytes of the records held now, and the bound past
   * which a write waits for the commit (0: none). */
  size_t held_bytes, max_held;
  bool (*give_up)(void *arg);
  void *give_up_arg;
  sl__ksink_stat *st; /* NULL: no figures */
  int32_t partitions; /* > 0: murmur2 partition of the key among them */
};

static void set_held(sl__kwriter *w, size_t bytes) {
  w->held_bytes = bytes;
  if (w->st)
    atomic_store_explicit(&w->st->held_bytes, bytes, memory_order_relaxed);
}

void sl__kwriter_set_partitions(sl__kwriter *w, int32_t partitions) {
  w->partitions = partitions;
}

static int32_t partition_of(const sl__kwriter *w, const void *key, size_t len) {
  return w->partitions > 0
             ? (int32_t)sl__murmur2_partition(key, len, (uint32_t)w->partitions)
             : RD_KAFKA_PARTITION_UA;
}

void sl__kwriter_set_stats(sl__kwriter *w, sl__ksink_stat *st) {
  w->st = st;
}

void sl__kwriter_set_limit(sl__kwriter *w, size_t max_held_bytes,
                           bool (*give_up)(void *arg), void *arg) {
  w->max_held = max_held_bytes;
  w->give_up = give_up;
  w->give_up_arg = arg;
}

static void set_epoch(sl__kwriter *w, uint64_t id) {
  w->barrier = id;
  w->epoch_len = snprintf(w->epoch, sizeof(w->epoch), "%" PRIu64, id);
}

sl__kwriter *sl__kwriter_new(sl__kprod *p, const char *topic, bool eos) {
  sl__kwriter *w = calloc(1, sizeof(*w));
  if (!w || !(w->topic = strdup(topic))) {
    free(w);
    return NULL;
  }
  w->p = p;
  w->eos = eos;
  set_epoch(w, 0);
  return w;
}

void sl__kwriter_resume(sl__kwriter *w, uint64_t id) {
  if (!w->eos || id <= w->barrier)
    return;
  set_epoch(w, id);
  /* Checkpoint id is the restored one: committed (or resolved as such)
   * by the run that took it, so output after it joins the open
   * transaction at once. */
  uint64_t rel = atomic_load_explicit(&w->p->released, memory_order_acquire);
  while (rel < id && !atomic_compare_exchange_weak_explicit(
                         &w->p->released, &rel, id, memory_order_acq_rel,
                         memory_order_acquire))
    ;
}

void sl__kwriter_free(sl__kwriter *w) {
  if (!w)
    return;
  for (size_t i = w->head; i < w->n; i++)
    if (w->h[i].hdrs)
      rd_kafka_headers_destroy(w->h[i].hdrs);
  free(w->h);
  free(w->bytes);
  free(w->topic);
  free(w);
}

size_t sl__kwriter_held(const sl__kwriter *w) {
  return w->n - w->head;
}

static int hold(sl__kwriter *w, const sl_record_t *rec,
                rd_kafka_headers_t *hdrs) {
  if (w->n == w->cap) {
    if (w->head > 0) {
      memmove(w->h, w->h + w->head, (w->n - w->head) * sizeof(held));
      w->n -= w->head;
      w->head = 0;
    }
    if (w->n == w->cap) {
      size_t cap = w->cap ? w->cap * 2 : 256;
      held *h = realloc(w->h, cap * sizeof(*h));
      if (!h)
        return SL_ERR_NOMEM;
      w->h = h;
      w->cap = cap;
    }
  }
  size_t need = rec->key_len + rec->value_len;
  if (w->bytes_cap - w->bytes_len < need) {
    size_t cap = w->bytes_cap ? w->bytes_cap : 65536;
    while (cap - w->bytes_len < need)
      cap *= 2;
    char *b = realloc(w->bytes, cap);
    if (!b)
      return SL_ERR_NOMEM;
    w->bytes = b;
    w->bytes_cap = cap;
  }
  held *x = &w->h[w->n];
  x->off = w->bytes_len;
  if (rec->key_len)
    memcpy(w->bytes + w->bytes_len, rec->key, rec->key_len);
  if (rec->value_len)
    memcpy(w->bytes + w->bytes_len + rec->key_len, rec->value, rec->value_len);
  w->bytes_len += need;
  x->null_key = rec->key == NULL;
  x->key_len = rec->key_len;
  x->value_len = rec->value_len;
  x->ts = rec->ts;
  x->hdrs = hdrs;
  x->after = w->barrier;
  w->n++;
  set_held(w, w->held_bytes + need);
  return 0;
}

int sl__kwriter_drain(sl__kwriter *w, char *err, size_t errlen) {
  if (w->head == w->n)
    return 0;
  uint64_t rel = sl__ktxn_released(w->p);
  while (w->head < w->n && w->h[w->head].after <= rel) {
    held *x = &w->h[w->head++];
    const char *k = w->bytes + x->off;
    int rc = sl__kprod_sendv(w->p, w->topic, partition_of(w, k, x->key_len),
                             x->null_key ? NULL : k, x->key_len, k + x->key_len,
                             x->value_len, x->ts, x->hdrs, w->st, err, errlen);
    x->hdrs = NULL;
    set_held(w, w->held_bytes - x->key_len - x->value_len);
    if (rc)
      return rc;
  }
  if (w->head == w->n) {
    w->head = w->n = w->bytes_len = 0;
    set_held(w, 0);
  }
  return 0;
}

/* Backpressure on held output: while holding need more bytes would pass
 * max_held, waits for the commit that releases what is held (the
 * coordinator's thread commits; this worker has already acked the
 * checkpoint, so nothing it could do would bring the commit sooner). One
 * record is always let in, however large. The time waited is counted. */
static int room(sl__kwriter *w, size_t need, char *err, size_t errlen) {
  if (!w->max_held || w->held_bytes == 0 || w->held_bytes + need <= w->max_held)
    return 0;
  int64_t t0 = sl__mono_ns();
  int rc = 0;
  unsigned spins = 0;
  for (;;) {
    if ((rc = sl__kwriter_drain(w, err, errlen)))
      break;
    if (w->held_bytes == 0 || w->held_bytes + need <= w->max_held)
      break;
    const char *f = sl__kprod_error(w->p);
    if (f) {
      snprintf(err, errlen, "%s", f);
      rc = SL_ERR_KAFKA;
      break;
    }
    if (w->give_up && w->give_up(w->give_up_arg)) {
      snprintf(err, errlen, "stopped while waiting for a commit");
      rc = SL_ERR_STOPPED;
      break;
    }
    struct timespec t = {0, spins++ < 100 ? 100 * 1000 : 1000 * 1000};
    nanosleep(&t, NULL);
  }
  if (w->st)
    atomic_store_explicit(
        &w->st->blocked_ns,
        atomic_load_explicit(&w->st->blocked_ns, memory_order_relaxed) +
            (uint64_t)(sl__mono_ns() - t0),
        memory_order_relaxed);
  return rc;
}

int sl__kwriter_write(sl__kwriter *w, const sl_record_t *rec,
                      rd_kafka_headers_t *hdrs, char *err, size_t errlen) {
  if (w->eos) {
    if (!hdrs)
      hdrs = rd_kafka_headers_new(1);
    rd_kafka_header_add(hdrs, "sluice.epoch", 12, w->epoch, w->epoch_len);
    /* After a barrier whose transaction is not committed yet, output
     * waits: it belongs to the next transaction (DESIGN §8). */
    if (w->head < w->n || w->barrier > sl__ktxn_released(w->p)) {
      int rc = room(w, rec->key_len + rec->value_len, err, errlen);
      if (rc) {
        rd_kafka_headers_destroy(hdrs);
        return rc;
      }
      if (w->head == w->n && w->barrier <= sl__ktxn_released(w->p))
        goto send; /* the commit came while waiting */
      rc = hold(w, rec, hdrs);
      if (rc) {
        rd_kafka_headers_destroy(hdrs);
        snprintf(err, errlen, "out of memory holding output");
      }
      return rc;
    }
  }
send:
  return sl__kprod_sendv(w->p, w->topic,
                         partition_of(w, rec->key, rec->key_len), rec->key,
                         rec->key_len, rec->value, rec->value_len, rec->ts,
                         hdrs, w->st, err, errlen);
}

int sl__kwriter_barrier(sl__kwriter *w, uint64_t id, bool flush, char *err,
                        size_t errlen) {
  if (w->eos) {
    int rc = sl__kwriter_drain(w, err, errlen);
    if (id > w->barrier)
      set_epoch(w, id);
    return rc;
  }
  return flush ? sl__kprod_flush(w->p, err, errlen) : 0;
}
