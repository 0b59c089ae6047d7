/* SPDX-License-Identifier: Apache-2.0 */
/* The owners directory of group mode (owners_int.h). A process announces
 * its tasks as one record per change, key = instance id, value =
 * {"instance", "endpoint", "tasks": [...]}, on partition 0 of the owners
 * topic, and reads that partition from the beginning. The newest record
 * of each instance is its claim; a task belongs to the instance whose
 * claim names it and is the newest (highest offset) of those that do.
 * Newest wins because a task is revoked from its old owner before the
 * group assigns it to the new one, so the new owner's claim is always
 * written after the old owner's claim of it: a graceful owner withdraws
 * it in a later record, and a dead one's stale claim is older than its
 * successor's. The one moment this misses is a claim of our own that we
 * no longer hold: then the task is moving, never ours. Tasks are numbered
 * as the runtime numbers them (runtime/tasks.h): stage *
 * group.partitions + partition. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/conf.h"
#include "kafka/owners_int.h"
#include "runtime/group.h"
#include "runtime/runtime.h"

/* How often the service publishes a pending claim and reads the topic,
 * at most; a rebalance wakes it at once. */
#define TICK_MS 100

typedef struct claim {
  char *instance, *endpoint;
  int64_t offset;
  uint8_t *has; /* per task */
} claim;

struct sl__kowners {
  sl__kjob *kj;
  sl_job_t *job;
  uint32_t tasks;
  char *topic;
  pthread_mutex_t mu;
  /* Guarded by mu: the members' partitions per task (several topics, or
   * several members during a move, may hold one task), the distinct
   * tasks held, whether a claim is to be published, and the claims read. */
  uint32_t *held;
  int n_held;
  bool dirty;
  claim *claims;
  size_t n_claims;
  /* Supervisor thread only (the delivery report runs in the producer's
   * poll, on it too). */
  rd_kafka_t *prod, *cons;
  bool warned, read_warned; /* a publish, a read failed: logged once */
};

/* A claim that did not reach the topic: the other processes keep the
 * previous one, so the current claim is published again on the next
 * tick (one more send per failed one: a broker that stays away costs no
 * more than one claim in flight per change). Logged once. */
static void delivered(rd_kafka_t *rk, const rd_kafka_message_t *m,
                      void *opaque) {
  (void)rk;
  sl__kowners *o = opaque;
  if (!m->err)
    return;
  pthread_mutex_lock(&o->mu);
  o->dirty = true;
  pthread_mutex_unlock(&o->mu);
  if (o->warned)
    return;
  o->warned = true;
  sl__klog(o->kj, SL__LOG_WARN,
           "owners topic %s: a claim was not delivered (%s): other "
           "processes name this one's keys late or not at all",
           o->topic, rd_kafka_err2str(m->err));
}

static void claims_free(sl__kowners *o) {
  for (size_t i = 0; i < o->n_claims; i++) {
    free(o->claims[i].instance);
    free(o->claims[i].endpoint);
    free(o->claims[i].has);
  }
  free(o->claims);
}

/* ---- Who owns a task (any thread) ---------------------------------------- */

static void owner_of(void *opaque, uint32_t task, sl_query_owner_t *out) {
  sl__kowners *o = opaque;
  const char *self = sl__job_instance(o->job);
  pthread_mutex_lock(&o->mu);
  if (task < o->tasks && o->held[task]) {
    out->where = SL_QUERY_LOCAL;
    pthread_mutex_unlock(&o->mu);
    return;
  }
  const claim *best = NULL;
  for (size_t i = 0; i < o->n_claims; i++)
    if (task < o->tasks && o->claims[i].has[task] &&
        (!best || o->claims[i].offset > best->offset))
      best = &o->claims[i];
  if (!best || strcmp(best->instance, self) == 0) {
    out->where = SL_QUERY_MOVING;
  } else {
    out->where = SL_QUERY_REMOTE;
    snprintf(out->instance, sizeof(out->instance), "%s", best->instance);
    snprintf(out->endpoint, sizeof(out->endpoint), "%s", best->endpoint);
  }
  pthread_mutex_unlock(&o->mu);
}

/* ---- Members' events (their polling threads) ----------------------------- */

/* Adds d to the count of every task of l; returns how many tasks l
 * names. */
static int hold(sl__kowners *o, const rd_kafka_topic_partition_list_t *l,
                int d) {
  int n = 0;
  for (int i = 0; l && i < l->cnt; i++) {
    int64_t p = sl__ktask_of(o->kj, l->elems[i].topic, l->elems[i].partition);
    if (p < 0 || (uint64_t)p >= o->tasks)
      continue;
    bool was = o->held[p] != 0;
    if (d < 0 && !o->held[p])
      continue;
    o->held[p] = (uint32_t)((int64_t)o->held[p] + d);
    o->n_held += (o->held[p] != 0) - was;
    n++;
  }
  return n;
}

void sl__kowners_event(sl__kowners *o, int64_t *since, rd_kafka_resp_err_t e,
                       const rd_kafka_topic_partition_list_t *l) {
  if (!o)
    return;
  int64_t now = sl__mono_ms();
  pthread_mutex_lock(&o->mu);
  int n = 0;
  if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
    n = hold(o, l, 1);
  else if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
    n = hold(o, l, -1);
  o->dirty = true;
  /* Under the lock: two members' events publish in the order they
   * counted. */
  sl__group_set_tasks(o->job, o->n_held);
  pthread_mutex_unlock(&o->mu);
  if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    sl__group_assigned(o->job, n,
                       *since ? (double)(now - *since) / 1000.0 : -1);
    *since = 0;
    sl__job_wake(o->job);
    return;
  }
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
    sl__group_revoked(o->job, n);
  /* A join or a revocation: the member's tasks stop until its next
   * assignment; a second revocation before it extends the same pause. */
  if (!*since) {
    *since = now > 0 ? now : 1;
    sl__group_rebalance_begin(o->job);
  }
  sl__job_wake(o->job);
}

/* ---- The service: publish and read claims (supervisor thread) ------------ */

static int publish(sl__kowners *o, char *err, size_t errlen) {
  pthread_mutex_lock(&o->mu);
  json_t *tasks = json_array();
  for (uint32_t t = 0; tasks && t < o->tasks; t++)
    if (o->held[t])
      json_array_append_new(tasks, json_integer(t));
  o->dirty = false;
  pthread_mutex_unlock(&o->mu);
  char endpoint[256];
  sl__job_endpoint(o->job, endpoint, sizeof(endpoint));
  const char *self = sl__job_instance(o->job);
  char *v = NULL;
  json_t *doc = tasks ? json_pack("{s:s,s:s,s:o}", "instance", self, "endpoint",
                                  endpoint, "tasks", tasks)
                      : NULL;
  if (doc)
    v = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  if (!v) {
    snprintf(err, errlen, "owners topic: out of memory");
    return SL_ERR_NOMEM;
  }
  rd_kafka_resp_err_t e = rd_kafka_producev(
      o->prod, RD_KAFKA_V_TOPIC(o->topic), RD_KAFKA_V_PARTITION(0),
      RD_KAFKA_V_KEY(self, strlen(self)), RD_KAFKA_V_VALUE(v, strlen(v)),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
  free(v);
  if (e) {
    /* Queries of other processes name this one late: not a failure of
     * the job. Try again on the next tick. */
    pthread_mutex_lock(&o->mu);
    o->dirty = true;
    pthread_mutex_unlock(&o->mu);
    if (!o->warned)
      sl__klog(o->kj, SL__LOG_WARN, "owners topic %s: %s", o->topic,
               rd_kafka_err2str(e));
    o->warned = true;
  }
  return SL_OK;
}

static void read_claim(sl__kowners *o, const rd_kafka_message_t *m) {
  json_t *doc = json_loadb(m->payload, m->len, 0, NULL);
  const char *inst = NULL, *ep = NULL;
  json_t *tasks = NULL;
  if (!doc ||
      json_unpack(doc, "{s:s,s:s,s:o}", "instance", &inst, "endpoint", &ep,
                  "tasks", &tasks) ||
      !json_is_array(tasks)) {
    sl__klog(o->kj, SL__LOG_WARN,
             "owners topic %s: offset %lld is not a claim; ignored", o->topic,
             (long long)m->offset);
    json_decref(doc);
    return;
  }
  pthread_mutex_lock(&o->mu);
  claim *c = NULL;
  for (size_t i = 0; i < o->n_claims && !c; i++)
    if (strcmp(o->claims[i].instance, inst) == 0)
      c = &o->claims[i];
  if (!c) {
    claim *a = realloc(o->claims, (o->n_claims + 1) * sizeof(*a));
    if (a) {
      o->claims = a;
      c = &a[o->n_claims];
      memset(c, 0, sizeof(*c));
      if ((c->instance = strdup(inst)) && (c->has = calloc(o->tasks, 1)))
        o->n_claims++;
      else {
        free(c->instance);
        c = NULL;
      }
    }
  }
  char *e2 = c ? strdup(ep) : NULL;
  if (c && e2) {
    free(c->endpoint);
    c->endpoint = e2;
    c->offset = m->offset;
    memset(c->has, 0, o->tasks);
    size_t i;
    json_t *t;
    json_array_foreach(tasks, i, t) {
      json_int_t v = json_integer_value(t);
      if (json_is_integer(t) && v >= 0 && (uint64_t)v < o->tasks)
        c->has[v] = 1;
    }
  }
  pthread_mutex_unlock(&o->mu);
  json_decref(doc);
}

/* A read error is not a failure of the job (the claims read stay, and
 * the consumer reads on once it clears), but this process names owners
 * late meanwhile: logged once. Not the owners topic missing until the
 * first claim creates it. */
static void read_claims(sl__kowners *o) {
  for (int i = 0; i < 1000; i++) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(o->cons, 0);
    if (!m)
      return;
    if (!m->err) {
      read_claim(o, m);
    } else if (!o->read_warned &&
               m->err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART &&
               m->err != RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC &&
               m->err != RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION) {
      o->read_warned = true;
      sl__klog(o->kj, SL__LOG_WARN,
               "owners topic %s: reading claims: %s: other processes' "
               "keys are named late",
               o->topic, rd_kafka_message_errstr(m));
    }
    rd_kafka_message_destroy(m);
  }
}

static int svc_start(void *svc, char *err, size_t errlen) {
  sl__kowners *o = svc;
  const sl_conf_t *conf = o->kj->conf;
  /* The graph is cut by now: a task per partition of each keyed stage
   * (sl__ktask_of), before any member is assigned one. */
  uint32_t stages = o->kj->n_repart > 1 ? (uint32_t)o->kj->n_repart : 1;
  if (stages > 1) {
    uint32_t *held = calloc(o->tasks * stages, sizeof(*held));
    if (!held) {
      snprintf(err, errlen, "owners topic: out of memory");
      return SL_ERR_NOMEM;
    }
    pthread_mutex_lock(&o->mu);
    free(o->held);
    o->held = held;
    o->tasks *= stages;
    pthread_mutex_unlock(&o->mu);
  }
  char cid[300];
  snprintf(cid, sizeof(cid), "sluice-%s-owners", o->kj->name);
  const char *pd[] = {"client.id", cid, "linger.ms", "5",
                      /* claims of one process stay in order */
                      "max.in.flight.requests.per.connection", "1", NULL};
  const char *cd[] = {"client.id",
                      cid,
                      "group.id",
                      cid, /* never joined: only assigned */
                      "enable.auto.commit",
                      "false",
                      "enable.partition.eof",
                      "false",
                      "fetch.wait.max.ms",
                      "100",
                      NULL};
  rd_kafka_conf_t *pc = NULL, *cc = NULL;
  int rc = sl__kconf(conf, pd, &pc, err, errlen);
  if (!rc && (rc = sl__kconf(conf, cd, &cc, err, errlen)))
    rd_kafka_conf_destroy(pc);
  if (rc)
    return rc;
  char e[512];
  rd_kafka_conf_set_dr_msg_cb(pc, delivered);
  rd_kafka_conf_set_opaque(pc, o);
  if (!(o->prod = rd_kafka_new(RD_KAFKA_PRODUCER, pc, e, sizeof(e)))) {
    rd_kafka_conf_destroy(pc);
    rd_kafka_conf_destroy(cc);
    snprintf(err, errlen, "owners topic: producer: %s", e);
    return SL_ERR_KAFKA;
  }
  if (!(o->cons = rd_kafka_new(RD_KAFKA_CONSUMER, cc, e, sizeof(e)))) {
    rd_kafka_conf_destroy(cc);
    snprintf(err, errlen, "owners topic: consumer: %s", e);
    return SL_ERR_KAFKA;
  }
  rd_kafka_poll_set_consumer(o->cons);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, o->topic, 0)->offset =
      RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_resp_err_t ke = rd_kafka_assign(o->cons, l);
  rd_kafka_topic_partition_list_destroy(l);
  if (ke) {
    snprintf(err, errlen, "owners topic %s: assign: %s", o->topic,
             rd_kafka_err2str(ke));
    return SL_ERR_KAFKA;
  }
  /* Announce this process (no tasks yet): the first record also
   * creates the topic where the broker creates topics on first use. */
  pthread_mutex_lock(&o->mu);
  o->dirty = true;
  pthread_mutex_unlock(&o->mu);
  return SL_OK;
}

static int svc_tick(void *svc, const sl__tick *t, int64_t *next_due, char *err,
                    size_t errlen) {
  sl__kowners *o = svc;
  if (!o->prod)
    return SL__SVC_IDLE;
  pthread_mutex_lock(&o->mu);
  bool dirty = o->dirty;
  pthread_mutex_unlock(&o->mu);
  int rc = dirty ? publish(o, err, errlen) : SL_OK;
  rd_kafka_poll(o->prod, 0);
  read_claims(o);
  if (t->now + TICK_MS < *next_due)
    *next_due = t->now + TICK_MS;
  return rc < 0 ? rc : SL__SVC_IDLE;
}

/* After the workers: the sources left the group and gave their tasks up,
 * so the last claim names none and the others need not wait for this
 * process's session to time out to stop naming it. */
static void svc_stop(void *svc) {
  sl__kowners *o = svc;
  if (o->prod) {
    char err[256];
    if (!publish(o, err, sizeof(err)) && rd_kafka_flush(o->prod, 2000))
      sl__klog(o->kj, SL__LOG_WARN,
               "owners topic %s: the last claim was not delivered", o->topic);
    rd_kafka_destroy(o->prod);
    o->prod = NULL;
  }
  if (o->cons) {
    rd_kafka_consumer_close(o->cons);
    rd_kafka_destroy(o->cons);
    o->cons = NULL;
  }
}

/* A revival: the members of the run that ended are gone with their
 * tasks (a lost one was not always told of each); the new ones count
 * from nothing, and the next claim names no task until they are
 * assigned. */
static int svc_restart(void *svc, char *err, size_t errlen) {
  (void)err, (void)errlen;
  sl__kowners *o = svc;
  pthread_mutex_lock(&o->mu);
  memset(o->held, 0, o->tasks * sizeof(*o->held));
  o->n_held = 0;
  o->dirty = true;
  sl__group_set_tasks(o->job, 0);
  pthread_mutex_unlock(&o->mu);
  return SL_OK;
}

static void svc_destroy(void *svc) {
  sl__kowners *o = svc;
  svc_stop(o);
  claims_free(o);
  free(o->held);
  free(o->topic);
  pthread_mutex_destroy(&o->mu);
  free(o);
}

static const sl__service_ops owners_ops = {.name = "owners",
                                           .start = svc_start,
                                           .tick = svc_tick,
                                           .stop = svc_stop,
                                           .restart = svc_restart,
                                           .destroy = svc_destroy};

sl__kowners *sl__kowners_get(sl__kjob *kj) {
  if (kj->owners)
    return kj->owners;
  sl__kowners *o = calloc(1, sizeof(*o));
  uint32_t tasks = (uint32_t)sl__conf_int(kj->conf, "group.partitions");
  const char *t = sl__conf_str(kj->conf, "group.owners.topic");
  char def[512];
  snprintf(def, sizeof(def), "sluice-%s-owners", kj->name);
  if (!o || !(o->held = calloc(tasks ? tasks : 1, sizeof(*o->held))) ||
      !(o->topic = strdup(*t ? t : def))) {
    if (o)
      free(o->held);
    free(o);
    sl_job_build_error(kj->job, SL_ERR_NOMEM, "kafka: out of memory");
    return NULL;
  }
  o->kj = kj;
  o->job = kj->job;
  o->tasks = tasks;
  pthread_mutex_init(&o->mu, NULL);
  if (sl__job_add_service(kj->job, &owners_ops, o)) {
    svc_destroy(o);
    sl_job_build_error(kj->job, SL_ERR_NOMEM, "kafka: out of memory");
    return NULL;
  }
  sl__job_set_owner_fn(kj->job, owner_of, o);
  kj->owners = o;
  return o;
}
