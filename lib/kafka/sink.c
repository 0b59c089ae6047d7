/* SPDX-License-Identifier: Apache-2.0 */
/* The Kafka sink operator: one writer per instance on the job's shared
 * producer; at_least_once flushes when a checkpoint's barriers arrived,
 * exactly_once holds output after a barrier until the coordinator has
 * committed that checkpoint's transaction. Headers come from the consumed
 * message (copy_headers) and/or a user callback. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "kafka/kafka_int.h"
#include "runtime/group.h"
#include "runtime/tasks.h"
#include "sluice/checkpoint.h"

typedef struct ksink {
  sl__kjob *kj;
  char *topic;
  sl_kafka_sink_opts_t o;
  sl_kafka_delivery delivery;
  /* A repartition topic's writer (repart.c): records are keyed by key_fn
   * (NULL: their own key) and go to the murmur2 partition of that key;
   * exactly once when the job's sinks are (see repart_delivery). */
  bool repart;
  sl_key_fn key_fn;
  void *key_opaque;
  int32_t partitions;
} ksink;

typedef struct kinst {
  sl__kprod *p;
  sl__kwriter *w;
  sl_kafka_delivery delivery; /* the sink's, or a repartition topic's */
} kinst;

static void ksink_free(void *arg) {
  ksink *s = arg;
  free(s->topic);
  free(s);
}

static bool give_up(void *op) {
  return sl_op_job_failing(op);
}

/* A repartition topic is written exactly once when the job has an
 * exactly_once sink and a task store (docs/scaling.md): its records join
 * the transaction of the checkpoint that follows them, with the upstream
 * sources' offsets, and the keyed stage reads them read_committed.
 * Otherwise at least once, flushed at every barrier. Decided when the
 * instance opens: the graph is whole then, and the sinks built after the
 * key_by count too. */
static sl_kafka_delivery repart_delivery(const ksink *s, sl_ctx_t *op) {
  return s->kj->txn && sl__tasks_on(op) ? SL_KAFKA_EXACTLY_ONCE
                                        : SL_KAFKA_AT_LEAST_ONCE;
}

static int ksink_open(sl_ctx_t *op) {
  ksink *s = sl_op_arg(op);
  kinst *in = calloc(1, sizeof(*in));
  if (!in)
    return SL_ERR_NOMEM;
  sl_op_set_data(op, in);
  char err[512];
  in->delivery = s->repart ? repart_delivery(s, op) : s->delivery;
  bool eos = in->delivery == SL_KAFKA_EXACTLY_ONCE;
  in->p = sl__kprod_acquire(s->kj, eos, sl_op_conf(op), err, sizeof(err));
  if (!in->p)
    return sl_op_fail(op, SL_ERR_KAFKA, "%s", err);
  if (!(in->w = sl__kwriter_new(in->p, s->topic, eos)))
    return sl_op_fail(op, SL_ERR_NOMEM, "out of memory");
  sl__kwriter_set_partitions(in->w, s->partitions);
  /* Figures outlive the instance (read after the run); none when out of
   * memory, which is not an error. */
  sl__kwriter_set_stats(
      in->w, sl__kstats_sink(s->kj, sl_op_uid(op), sl_op_worker(op)));
  if (eos)
    sl__kwriter_set_limit(
        in->w, (size_t)sl__conf_int(sl_op_conf(op), "sink.held.max.bytes"),
        give_up, op);
  /* After a restore from checkpoint N, output continues epoch N: the
   * header then names the barrier the record came after in any run, and
   * new checkpoint ids are always > N. After a revival, it continues the
   * id that separates the runs (runtime/group.h), above every epoch of
   * the runs before. */
  sl_checkpoint_info_t info;
  uint64_t from = sl__job_revived_from(s->kj->job);
  if (eos && sl_job_checkpoint_info(s->kj->job, &info) == SL_OK &&
      info.restored_from > from)
    from = info.restored_from;
  if (eos && from)
    sl__kwriter_resume(in->w, from);
  return 0;
}

static void ksink_close(sl_ctx_t *op) {
  kinst *in = sl_op_data(op);
  if (!in)
    return;
  /* Held output belongs to transactions that never committed: a restart
   * from the last checkpoint produces it again. */
  sl__kwriter_free(in->w);
  sl__kprod_release(in->p);
  free(in);
  sl_op_set_data(op, NULL);
}

static int copy_headers(sl_ctx_t *op, rd_kafka_headers_t **hdrs) {
  const sl_kafka_msg_t *m = sl_kafka_current(op);
  rd_kafka_headers_t *src = NULL;
  if (!m || rd_kafka_message_headers((rd_kafka_message_t *)m->m, &src) || !src)
    return 0;
  *hdrs = rd_kafka_headers_copy(src);
  return *hdrs ? 0 : SL_ERR_NOMEM;
}

static int ksink_process(sl_ctx_t *op, int port, const sl_record_t *rec) {
  (void)port;
  ksink *s = sl_op_arg(op);
  kinst *in = sl_op_data(op);
  rd_kafka_headers_t *hdrs = NULL;
  char err[512];
  sl_record_t keyed;
  if (s->key_fn) {
    keyed = *rec;
    int rc = s->key_fn(rec, &keyed.key, &keyed.key_len, s->key_opaque);
    if (rc)
      return sl_op_user_error(op, rec, rc);
    rec = &keyed;
  }
  if (s->o.copy_headers && copy_headers(op, &hdrs))
    return sl_op_fail(op, SL_ERR_NOMEM, "out of memory");
  if (s->o.headers) {
    if (!hdrs)
      hdrs = rd_kafka_headers_new(4);
    int rc =
        sl__kheaders_call(s->o.headers, op, rec, hdrs, s->o.headers_opaque);
    if (rc) {
      rd_kafka_headers_destroy(hdrs);
      return sl_op_user_error(op, rec, rc);
    }
  }
  int rc = sl__kwriter_write(in->w, rec, hdrs, err, sizeof(err));
  return rc ? sl_op_fail(op, rc, "%s", err) : 0;
}

static int drain(sl_ctx_t *op) {
  kinst *in = sl_op_data(op);
  char err[512];
  int rc = sl__kwriter_drain(in->w, err, sizeof(err));
  if (!rc && sl__kprod_error(in->p))
    return sl_op_fail(op, SL_ERR_KAFKA, "%s", sl__kprod_error(in->p));
  return rc ? sl_op_fail(op, rc, "%s", err) : 0;
}

static int ksink_watermark(sl_ctx_t *op, int64_t wm) {
  (void)wm;
  return drain(op);
}

static int ksink_proc_time(sl_ctx_t *op, int64_t now) {
  (void)now;
  return drain(op);
}

static int ksink_end(sl_ctx_t *op) {
  kinst *in = sl_op_data(op);
  char err[512];
  if (in->delivery == SL_KAFKA_EXACTLY_ONCE)
    return drain(op);
  /* Bounded input: everything written must be delivered before the job
   * reports success, whatever the guarantee. */
  int rc = sl__kprod_flush(in->p, err, sizeof(err));
  return rc ? sl_op_fail(op, rc, "%s", err) : 0;
}

static int ksink_snapshot(sl_ctx_t *op, uint64_t id, sl_buf_t *out) {
  (void)out;
  ksink *s = sl_op_arg(op);
  kinst *in = sl_op_data(op);
  char err[512];
  int rc = sl__kwriter_barrier(
      in->w, id, in->delivery == SL_KAFKA_AT_LEAST_ONCE, err, sizeof(err));
  if (!rc && (rc = sl__kdlq_flush(s->kj, err, sizeof(err))) == 0)
    return 0;
  sl__klog(s->kj, SL__LOG_WARN, "sink %s: checkpoint %" PRIu64 ": %s",
           sl_op_uid(op), id, err);
  /* A failed delivery fails the job (never only the checkpoint), with the
   * delivery's own message rather than the checkpoint's. */
  return sl_op_fail(op, rc, "%s", err);
}

static int ksink_complete(sl_ctx_t *op, uint64_t id) {
  (void)id;
  return drain(op);
}

static void ksink_abort(sl_ctx_t *op, uint64_t id) {
  (void)id;
  drain(op);
}

static const sl_operator_ops_t ksink_ops = {
    .kind = "kafka_sink",
    .open = ksink_open,
    .process = ksink_process,
    .on_watermark = ksink_watermark,
    .on_proc_time = ksink_proc_time,
    .on_end = ksink_end,
    .close = ksink_close,
    .free_arg = ksink_free,
    .snapshot = ksink_snapshot,
    .checkpoint_complete = ksink_complete,
    .checkpoint_abort = ksink_abort,
};

static int sink_new(sl_stream_t *in, const char *uid, const char *topic,
                    const sl_kafka_sink_opts_t *opts, const ksink *repart);

int sl_sink_kafka(sl_stream_t *in, const char *uid, const char *topic,
                  const sl_kafka_sink_opts_t *opts) {
  return sink_new(in, uid, topic, opts, NULL);
}

int sl__ksink_repart(sl_stream_t *in, const char *uid, const char *topic,
                     sl_key_fn key_fn, void *key_opaque, int32_t partitions) {
  /* At least once unless the job's sinks are exactly once
   * (repart_delivery): the barrier's flush is what lets the upstream
   * source's positions of a checkpoint be committed. */
  sl_kafka_sink_opts_t o = {.delivery = SL_KAFKA_AT_LEAST_ONCE};
  ksink r = {.repart = true,
             .key_fn = key_fn,
             .key_opaque = key_opaque,
             .partitions = partitions};
  return sink_new(in, uid, topic, &o, &r);
}

static int sink_new(sl_stream_t *in, const char *uid, const char *topic,
                    const sl_kafka_sink_opts_t *opts, const ksink *repart) {
  if (!in)
    return SL_ERR_INVAL;
  sl_job_t *job = sl_stream_job(in);
  if (!topic || !*topic) {
    sl_job_build_error(job, SL_ERR_INVAL, "kafka sink \"%s\": no topic",
                       uid ? uid : "");
    return SL_ERR_INVAL;
  }
  char berr[256];
  if (sl__kconf_brokers(sl_job_conf(job), berr, sizeof(berr))) {
    sl_job_build_error(job, SL_ERR_CONF, "kafka sink \"%s\": %s",
                       uid ? uid : "", berr);
    return SL_ERR_CONF;
  }
  sl__kjob *kj = sl__kjob_get(job);
  ksink *s = kj ? calloc(1, sizeof(*s)) : NULL;
  if (!s || !(s->topic = strdup(topic))) {
    free(s);
    sl_job_build_error(job, SL_ERR_NOMEM, "kafka sink: out of memory");
    return SL_ERR_NOMEM;
  }
  if (repart) {
    s->repart = true;
    s->key_fn = repart->key_fn;
    s->key_opaque = repart->key_opaque;
    s->partitions = repart->partitions;
  }
  s->kj = kj;
  if (opts)
    s->o = *opts;
  s->delivery = s->o.delivery;
  if (s->delivery == SL_KAFKA_DELIVERY_DEFAULT)
    s->delivery =
        (sl_kafka_delivery)(SL_KAFKA_NONE +
                            sl__conf_enum(kj->conf, "sink.delivery.guarantee"));
  if (s->delivery == SL_KAFKA_EXACTLY_ONCE && !kj->participant) {
    sl_ckpt_participant_t part = {.commit = sl__ktxn_commit,
                                  .abort = sl__ktxn_abort,
                                  .resolve = sl__ktxn_resolve,
                                  .error = sl__ktxn_error,
                                  .opaque = kj};
    int rc = sl__ktxn_get(kj) ? sl_job_add_ckpt_participant(job, &part)
                              : SL_ERR_NOMEM;
    if (rc) {
      ksink_free(s);
      sl_job_build_error(job, rc, "kafka sink \"%s\": %s", uid ? uid : "",
                         sl_strerror(rc));
      return rc;
    }
    kj->participant = true;
  }
  sl__kdlq_install(kj);
  return sl_op_add(&in, 1, uid, &ksink_ops, s, true) ? SL_OK
                                                     : sl_job_build_err(job);
}
