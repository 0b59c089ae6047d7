/* SPDX-License-Identifier: Apache-2.0 */
/* Group mode's consumer-group membership (group_int.h): the rebalance
 * callback over librdkafka's cooperative protocol, with the eager one as
 * a fallback when the job chose an eager assignor, and the check of the
 * declared co-partitioning. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/log.h"
#include "kafka/group_int.h"
#include "kafka/kafka_int.h"
#include "kafka/owners_int.h"

bool sl__kgroup_on(const sl_conf_t *conf) {
  return sl__conf_enum(conf, "group.mode") != 0;
}

bool sl__kgroup_repartition(const sl_conf_t *conf) {
  return strcmp(sl__conf_str(conf, "group.mode"), "repartition") == 0;
}

int sl__kgroup_check(const sl_conf_t *conf, const char *topic, int partitions,
                     char *err, size_t errlen) {
  int64_t declared = sl__conf_int(conf, "group.partitions");
  if (partitions == declared)
    return SL_OK;
  snprintf(err, errlen,
           "topic %s has %d partitions but group.partitions declares %lld: "
           "group.mode=%s needs the topic partitioned by the key into "
           "exactly the declared number of partitions",
           topic, partitions, (long long)declared,
           sl__conf_str(conf, "group.mode"));
  return SL_ERR_CONF;
}

void sl__kgroup_fail(sl__kgroup *g, int err, const char *fmt, ...) {
  if (g->err)
    return;
  g->err = err;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g->errmsg, sizeof(g->errmsg), fmt, ap);
  va_end(ap);
}

void sl__kgroup_fence(sl__kgroup *g, const char *fmt, ...) {
  if (g->err)
    return;
  g->err = SL_ERR_KAFKA;
  g->fenced = true;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g->errmsg, sizeof(g->errmsg), fmt, ap);
  va_end(ap);
}

/* librdkafka calls this from the consumer's poll (and from its close):
 * with the cooperative protocol each event names only the partitions
 * that move, so the partitions a member keeps are never interrupted. A
 * revoked partition is kept until a snapshot of its task completes
 * (sl__kgroup_release), so the next owner starts where this member
 * stopped. */
static void settle(sl__kgroup *g, bool assigned, int n, int reads,
                   rd_kafka_error_t *ke, rd_kafka_resp_err_t re);

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                         rd_kafka_topic_partition_list_t *l, void *opaque) {
  sl__kgroup *g = opaque;
  rd_kafka_error_t *ke = NULL;
  rd_kafka_resp_err_t re = RD_KAFKA_RESP_ERR_NO_ERROR;
  /* The owners' view and the rebalance figures follow each event, also
   * a revocation whose release waits for its snapshot. */
  sl__kowners_event(g->owners, &g->since, e, l);
  /* Before the source hears of it: from here on no transaction of this
   * process commits (sl__kgroup_check_members). */
  if (e != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS &&
      (e != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS ||
       rd_kafka_assignment_lost(rk)))
    atomic_store(&g->lost, 1);
  if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    g->synced = true;
    g->assigned(g->sub, l);
    if (g->coop)
      ke = rd_kafka_incremental_assign(rk, l);
    else
      re = rd_kafka_assign(rk, l);
  } else if (e == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
    /* Kept: librdkafka waits for the unassign (sl__kgroup_release).
     * Also when librdkafka calls the assignment lost: the mock cluster
     * does on any commit that meets a rebalance (illegal generation),
     * and a snapshot taken before letting go is safe either way. */
    if (g->revoked(g->sub, l, false))
      return;
    if (g->coop)
      ke = rd_kafka_incremental_unassign(rk, l);
    else
      re = rd_kafka_assign(rk, NULL);
  } else {
    /* A rebalance error: give everything up, as librdkafka asks. */
    sl__log(g->conf, g->job, SL__LOG_WARN, "kafka",
            "source %s: group rebalance: %s", g->uid, rd_kafka_err2str(e));
    if (l)
      g->revoked(g->sub, l, true);
    re = rd_kafka_assign(rk, NULL);
  }
  int n = l ? l->cnt : 0;
  bool assigned = e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
  bool failed = !assigned && e != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS;
  int reads = failed     ? 0 /* everything was given up */
              : !g->coop ? (assigned ? n : 0)
                         : g->reads + (assigned ? n : -n);
  settle(g, assigned, n, reads, ke, re);
}

void sl__kgroup_release(rd_kafka_t *rk, sl__kgroup *g,
                        rd_kafka_topic_partition_list_t *l) {
  rd_kafka_error_t *ke = g->coop ? rd_kafka_incremental_unassign(rk, l) : NULL;
  rd_kafka_resp_err_t re =
      g->coop ? RD_KAFKA_RESP_ERR_NO_ERROR : rd_kafka_assign(rk, NULL);
  settle(g, false, l->cnt, g->coop ? g->reads - l->cnt : 0, ke, re);
}

void sl__kgroup_leave(rd_kafka_t *rk, sl__kgroup *g) {
  rd_kafka_topic_partition_list_t *l = NULL;
  if (!g->reads || atomic_load(&g->lost) || rd_kafka_assignment(rk, &l) || !l)
    return;
  if (l->cnt)
    on_rebalance(rk, RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, l, g);
  rd_kafka_topic_partition_list_destroy(l);
}

/* Consumers left allocated (sl__kgroup_destroy): kept reachable, so leak
 * checkers do not report them. */
static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static rd_kafka_t *parked[64];
static size_t n_parked;

void sl__kgroup_destroy(rd_kafka_t *rk, sl__kgroup *g) {
  bool unsafe = g->coop && !g->synced && rd_kafka_version() < 0x020300ff;
  if (unsafe) {
    pthread_mutex_lock(&parked_lock);
    if (n_parked < sizeof(parked) / sizeof(parked[0]))
      parked[n_parked++] = rk;
    pthread_mutex_unlock(&parked_lock);
    rd_kafka_set_log_level(rk, 0); /* its reconnects are of no interest */
    sl__log(g->conf, g->job, SL__LOG_WARN, "kafka",
            "source %s[%d]: stopped before the group gave it an assignment: "
            "its consumer is closed but not freed (librdkafka %s aborts "
            "freeing it; fixed in 2.3.0)",
            g->uid, g->subtask, rd_kafka_version_str());
    return;
  }
  rd_kafka_destroy(rk);
}

/* Logs the assignment a rebalance step left and records its failure. The
 * count is the member's own (reads: what the step leaves when it
 * succeeds): librdkafka's rd_kafka_assignment() was seen to lag an
 * incremental assign, and may not answer at all for a lost assignment
 * (seen in the consumer's close, which then never returns). */
static void settle(sl__kgroup *g, bool assigned, int n, int reads,
                   rd_kafka_error_t *ke, rd_kafka_resp_err_t re) {
  if (!ke && !re)
    g->reads = reads < 0 ? 0 : reads;
  sl__log(g->conf, g->job, SL__LOG_INFO, "kafka",
          "source %s[%d]: group rebalance: %s %d partition(s); reads %d",
          g->uid, g->subtask,
          assigned                ? "assigned"
          : atomic_load(&g->lost) ? "lost"
                                  : "revoked",
          n, g->reads);
  if (ke) {
    sl__kgroup_fail(g, SL_ERR_KAFKA, "rebalance: %s",
                    rd_kafka_error_string(ke));
    rd_kafka_error_destroy(ke);
  } else if (re) {
    sl__kgroup_fail(g, SL_ERR_KAFKA, "rebalance: %s", rd_kafka_err2str(re));
  }
}

int sl__kgroup_conf(rd_kafka_conf_t *c, const sl_conf_t *conf, sl__kgroup *g,
                    char *err, size_t errlen) {
  const char *strategy = sl__kconf_get(conf, "partition.assignment.strategy");
  if (!strategy &&
      rd_kafka_conf_set(c, "partition.assignment.strategy",
                        "cooperative-sticky", err, errlen) != RD_KAFKA_CONF_OK)
    return SL_ERR_CONF;
  /* librdkafka refuses to mix cooperative and eager assignors. */
  g->coop = !strategy || strstr(strategy, "cooperative");
  rd_kafka_conf_set_rebalance_cb(c, on_rebalance);
  rd_kafka_conf_set_opaque(c, g);
  /* The member joins the group: a rebalance until its first assignment. */
  sl__kowners_event(g->owners, &g->since, RD_KAFKA_RESP_ERR_NO_ERROR, NULL);
  return SL_OK;
}

int sl__kgroup_register(sl__kjob *kj, sl__kgroup *g) {
  pthread_mutex_lock(&kj->lock);
  int rc = SL_OK;
  if (kj->n_members == kj->cap_members) {
    size_t cap = kj->cap_members ? kj->cap_members * 2 : 8;
    sl__kgroup **m = realloc(kj->members, cap * sizeof(*m));
    if (!m)
      rc = SL_ERR_NOMEM;
    else
      kj->members = m, kj->cap_members = cap;
  }
  if (!rc) {
    g->member = (int)kj->n_members;
    kj->members[kj->n_members++] = g;
  }
  pthread_mutex_unlock(&kj->lock);
  return rc;
}

void sl__kgroup_unregister(sl__kjob *kj, sl__kgroup *g) {
  pthread_mutex_lock(&kj->lock);
  if (g->member >= 0 && (size_t)g->member < kj->n_members &&
      kj->members[g->member] == g)
    kj->members[g->member] = NULL;
  pthread_mutex_unlock(&kj->lock);
}

/* Whether a member still holds its assignment, asked right before its
 * offsets and the output they produced are committed.
 *
 * The group gives a member's partitions to another member in two ways
 * only: after the member itself revoked them (both rebalance protocols
 * wait for its unassign, and the source keeps a revoked partition until
 * a checkpoint covering it committed), or after the coordinator expelled
 * it, which it does when it heard no heartbeat from it for
 * session.timeout.ms (a process stopped, swapped out, cut off). librdkafka
 * keeps that lease on its side: each successful heartbeat response moves
 * the member's session deadline to now + session.timeout.ms, and its
 * main thread calls the assignment lost (and resets the member id) once
 * the deadline passed without one (rd_kafka_cgrp_session_timeout_check,
 * run between two batches of the operations it serves), as it does on a
 * heartbeat answered "unknown member" or "illegal generation".
 *
 * The metadata is asked for twice: each request is one operation served
 * by the consumer's main thread, and the second is served only after
 * that thread checked the session deadline once after serving the first,
 * i.e. after this check began. So if the member's session had run out by
 * then, the lost flag is already set. A process resumed after a stop
 * longer than the session timeout therefore cannot commit before it
 * noticed, whichever of its threads runs first.
 *
 * What remains (docs/scaling.md): librdkafka counts the session from a
 * heartbeat's response, the coordinator from its request (one round trip
 * of optimism), and a stop between this check and the end of the commit
 * is not seen. A real broker closes both: it checks the metadata sent
 * with the offsets against the group (EOS v2), and fails the commit of a
 * member it expelled. */
static int still_member(sl__kgroup *g,
                        rd_kafka_consumer_group_metadata_t **out) {
  *out = NULL;
  if (atomic_load(&g->lost))
    return 0;
  rd_kafka_consumer_group_metadata_t *md =
      rd_kafka_consumer_group_metadata(g->rk);
  if (md)
    rd_kafka_consumer_group_metadata_destroy(md);
  md = rd_kafka_consumer_group_metadata(g->rk);
  if (!md || atomic_load(&g->lost) || rd_kafka_assignment_lost(g->rk)) {
    if (md)
      rd_kafka_consumer_group_metadata_destroy(md);
    atomic_store(&g->lost, 1);
    return 0;
  }
  *out = md;
  return 1;
}

bool sl__kgroup_holds(sl__kgroup *g) {
  rd_kafka_consumer_group_metadata_t *md;
  if (!still_member(g, &md))
    return false;
  rd_kafka_consumer_group_metadata_destroy(md);
  return true;
}

int sl__kgroup_check_members(sl__kjob *kj,
                             rd_kafka_consumer_group_metadata_t **md, char *err,
                             size_t errlen) {
  for (size_t i = 0; i < kj->n_members; i++) {
    sl__kgroup *g = kj->members[i];
    md[i] = NULL;
    if (g && !still_member(g, &md[i])) {
      for (size_t j = 0; j < i; j++)
        if (md[j])
          rd_kafka_consumer_group_metadata_destroy(md[j]);
      snprintf(err, errlen,
               "fenced: source %s[%d] lost its partitions (its group session "
               "timed out or the coordinator no longer knows it), so another "
               "member may own them: the transaction is aborted",
               g->uid, g->subtask);
      return SL_ERR_KAFKA;
    }
  }
  return 0;
}

int sl__kgroup_join(rd_kafka_t *rk, char *const *topics, int n, char *err,
                    size_t errlen) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
  for (int i = 0; i < n; i++)
    rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  if (e) {
    snprintf(err, errlen, "subscribe: %s", rd_kafka_err2str(e));
    return SL_ERR_KAFKA;
  }
  return SL_OK;
}
