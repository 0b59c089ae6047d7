/* SPDX-License-Identifier: Apache-2.0 */
/* What an operator instance sees of the runtime: emitting records,
 * watermark / idleness / end-of-input propagation through input ports, the
 * error policy, and the accessors of lib/operator.h and sl_ctx_*. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/conf.h"
#include "core/log.h"
#include "runtime/runtime.h"
#include "runtime/keyed.h"
#include "state/keyed.h"
#include "time/taskwm.h"

static int emit(sl_ctx_t *ctx, const sl__outs *o, const sl_record_t *rec) {
  sl__counter_add(&ctx->out, 1);
  if (SL__UNLIKELY(ctx->out_ts_at != NULL) && rec->ts != *ctx->out_ts_at) {
    sl_record_t r = *rec;
    r.ts = *ctx->out_ts_at;
    return sl__emit_outs(ctx, o, &r);
  }
  return sl__emit_outs(ctx, o, rec);
}

int sl_emit(sl_ctx_t *ctx, const sl_record_t *rec) {
  return emit(ctx, &ctx->main, rec);
}

int sl_op_emit_batch(sl_ctx_t *op, const sl_record_t *recs, size_t n) {
  if (!n)
    return 0;
  sl__counter_add(&op->out, n);
  return sl__emit_outs_batch(&op->main, recs, n);
}

int sl_emit_to(sl_ctx_t *ctx, const char *tag, const sl_record_t *rec) {
  for (int i = 0; i < ctx->n_side; i++)
    if (strcmp(ctx->side[i].tag, tag) == 0)
      return emit(ctx, &ctx->side[i].outs, rec);
  return 0; /* nobody reads this tag */
}

void sl_op_set_out_ts(sl_ctx_t *op, bool fixed, int64_t ts) {
  op->out_ts = ts;
  op->out_ts_at = fixed ? &op->out_ts : NULL;
}

void sl_op_set_out_ts_at(sl_ctx_t *op, const int64_t *at) {
  op->out_ts_at = at;
}

void *sl_ctx_alloc(sl_ctx_t *ctx, size_t size) {
  return sl__arena_alloc(&ctx->w->arena, size);
}

sl_arena_mark_t sl_op_arena_mark(sl_ctx_t *op) {
  sl__arena *a = &op->w->arena;
  sl_arena_mark_t m = {a->head, a->head ? a->head->used : 0};
  return m;
}

void sl_op_arena_release(sl_ctx_t *op, sl_arena_mark_t mark) {
  sl__arena_release(&op->w->arena, mark.chunk, mark.used);
}

int64_t sl_ctx_watermark(const sl_ctx_t *ctx) {
  return ctx->wm;
}

int64_t sl_ctx_now(const sl_ctx_t *ctx) {
  return sl_clock_now(ctx->w->job->clock);
}

void sl_ctx_set_local(sl_ctx_t *ctx, void *data) {
  ctx->local = data;
}

void *sl_ctx_local(const sl_ctx_t *ctx) {
  return ctx->local;
}

int sl_ctx_worker(const sl_ctx_t *ctx) {
  return ctx->w->index;
}

int sl_ctx_parallelism(const sl_ctx_t *ctx) {
  return ctx->w->job->par;
}

void *sl_op_arg(const sl_ctx_t *op) {
  return op->node->arg;
}
void *sl_op_data(const sl_ctx_t *op) {
  return op->data;
}
void sl_op_set_data(sl_ctx_t *op, void *data) {
  op->data = data;
}
const char *sl_op_uid(const sl_ctx_t *op) {
  return op->node->uid ? op->node->uid : "key_by";
}
int sl_op_worker(const sl_ctx_t *op) {
  return op->w->index;
}
const sl_conf_t *sl_op_conf(const sl_ctx_t *op) {
  return op->w->job->conf;
}
uint32_t sl_op_max_parallelism(const sl_ctx_t *op) {
  return op->w->job->max_par;
}
/* Group mode's keyed stage (docs/scaling.md): where input port i of the
 * keyed operator n takes its tasks' watermarks from.
 * - RECORDS: the port reads a key_by whose input comes, through
 *   operators of one input that are not keyed, from a source whose
 *   partitions are the tasks, with bounded out-of-orderness (or
 *   monotonous) event time; *bound is its bound. A task's watermark on
 *   the port is derived from its records as its partition's would be:
 *   max ts - bound - 1.
 * - SOURCE: the same, from a source with a user watermark generator
 *   that sends the watermark of each task's partition (node->task_wm: a
 *   Kafka source in group mode, which runs a generator per partition);
 *   a generator's watermark cannot be derived from the records.
 * - SENT: the same, from a keyed operator of the stage that has per-task
 *   watermarks itself, through a key_by by the records' own key (a
 *   task's records stay in their task): that operator sends them.
 * - OP: anything else (a broadcast input, a key function, a user
 *   watermark generator of a source that does not send): the port's
 *   watermark. */
static int port_kind(const sl__node *n, int i, int64_t *bound) {
  const sl__node *k = n->inputs[i].from;
  if (k->kind != SL__NODE_KEYBY || k->broadcast || k->stage != n->stage)
    return SL__TASKWM_PORT_OP;
  for (const sl__node *u = k->inputs[0].from;; u = u->inputs[0].from) {
    if (u->kind == SL__NODE_SOURCE) {
      if (u->wm_spec.kind == SL_WM_MONOTONOUS)
        *bound = 0;
      else if (u->wm_spec.kind == SL_WM_BOUNDED && u->wm_spec.bound_ms >= 0)
        *bound = u->wm_spec.bound_ms;
      else if (u->wm_spec.kind == SL_WM_CUSTOM && u->task_wm)
        return SL__TASKWM_PORT_SOURCE;
      else
        return SL__TASKWM_PORT_OP;
      return SL__TASKWM_PORT_RECORDS;
    }
    if (u->kind != SL__NODE_OP || !u->ops)
      return SL__TASKWM_PORT_OP;
    /* Records that come out of a keyed operator carry its output
     * timestamps, not their partition's event time: their task's
     * watermark is the one that operator keeps, if it keeps one. */
    if (u->ops->keyed) {
      int64_t b;
      bool tasks = false;
      for (int j = 0; j < u->n_inputs && j < SL__TASKWM_PORTS; j++)
        tasks |= port_kind(u, j, &b) != SL__TASKWM_PORT_OP;
      return !k->key_fn && u->stage == n->stage &&
                     u->n_inputs <= SL__TASKWM_PORTS && tasks
                 ? SL__TASKWM_PORT_SENT
                 : SL__TASKWM_PORT_OP;
    }
    if (u->n_inputs != 1)
      return SL__TASKWM_PORT_OP;
  }
}

/* The per-task watermarks of keyed instance op, or NULL when none of its
 * inputs carries them (or outside group mode with a store). */
static struct sl__taskwm *task_table(sl_ctx_t *op) {
  const sl__node *n = op->node;
  if (!op->w || !op->w->job->tasks || !n || n->n_inputs < 1 ||
      n->n_inputs > SL__TASKWM_PORTS)
    return NULL;
  int kinds[SL__TASKWM_PORTS];
  int64_t bounds[SL__TASKWM_PORTS] = {0};
  bool any = false;
  for (int i = 0; i < n->n_inputs; i++)
    any |= (kinds[i] = port_kind(n, i, &bounds[i])) != SL__TASKWM_PORT_OP;
  if (!any)
    return NULL;
  sl__taskwm *tw = sl__taskwm_new(op->w->job->max_par, n->n_inputs);
  for (int i = 0; tw && i < n->n_inputs; i++)
    if (sl__taskwm_port_set(tw, i, kinds[i], bounds[i])) {
      sl__taskwm_free(tw);
      tw = NULL;
    }
  if (!tw)
    sl_op_fail(op, SL_ERR_NOMEM, "out of memory for per-task watermarks");
  return tw;
}

void sl_op_set_keyed(sl_ctx_t *op, struct sl__keyed *keyed) {
  op->keyed = keyed;
  if (!keyed) {
    sl__taskwm_free(op->tw);
    op->tw = NULL;
    op->tw_checked = false;
    return;
  }
  keyed->wm = &op->wm;
  if (!op->tw_checked) {
    op->tw_checked = true;
    op->tw = task_table(op);
  }
  if (op->tw)
    keyed->tw = op->tw;
}
struct sl__keyed *sl_op_keyed(const sl_ctx_t *op) {
  return op->keyed;
}
void sl_op_set_bcast(sl_ctx_t *op, struct sl__bstates *bs) {
  op->bcast = bs;
}
struct sl__bstates *sl_op_bcast(const sl_ctx_t *op) {
  return op->bcast;
}

void sl_op_count_late(sl_ctx_t *op) {
  sl__counter_add(&op->late, 1);
}

void sl_op_log(const sl_ctx_t *op, int level, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  sl_job_t *job = op->w->job;
  sl__log(job->conf, job->name, level, "operator",
          "operator \"%s\" (%s) on worker %d: %s", sl_op_uid(op), op->ops->kind,
          op->w->index, msg);
}

int sl_op_fail(sl_ctx_t *op, int err, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return sl__job_fail(op->w->job, err, "operator \"%s\" (%s) on worker %d: %s",
                      sl_op_uid(op), op->ops->kind, op->w->index, msg);
}

int sl_ctx_reject(sl_ctx_t *ctx, const char *fmt, ...) {
  if (!ctx || !fmt)
    return SL_ERR_USER;
  sl__worker *w = ctx->w;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->reject, sizeof(w->reject), fmt, ap);
  va_end(ap);
  w->reject_op = ctx;
  return SL_ERR_USER;
}

int sl_op_user_error(sl_ctx_t *op, const sl_record_t *rec, int rc) {
  sl_job_t *job = op->w->job;
  /* The reason sl_ctx_reject() gave for this error, taken either way. */
  const char *reason = op->w->reject_op == op ? op->w->reject : NULL;
  op->w->reject_op = NULL;
  if (sl__job_failing(job))
    return job->err ? job->err : SL_ERR_STOPPED;
  if (job->skip_errors) {
    sl__counter_add(&op->errors, 1);
    return 0;
  }
  if (job->dlq_errors) {
    char msg[160];
    if (!reason)
      snprintf(msg, sizeof(msg), "user function of %s returned %d",
               op->node->uid ? op->node->uid : op->ops->kind, rc);
    return sl__dlq(op, rec, reason ? reason : msg, SL_ERR_USER);
  }
  char key[96], val[160];
  sl__escape(key, sizeof(key), rec ? rec->key : NULL, rec ? rec->key_len : 0,
             64);
  sl__escape(val, sizeof(val), rec ? rec->value : NULL,
             rec ? rec->value_len : 0, 96);
  return sl_op_fail(op, SL_ERR_USER,
                    "user function returned %d on record key=\"%s\" ts=%lld "
                    "value=\"%s\"%s%s",
                    rc, key, rec ? (long long)rec->ts : 0LL, val,
                    reason ? ": " : "", reason ? reason : "");
}

/* error.policy=dlq: hands the record to the dead-letter hook a Kafka
 * source or sink installed; counts it like a skipped record on success. */
int sl__dlq(sl_ctx_t *op, const sl_record_t *rec, const char *why, int err) {
  sl_job_t *job = op->w->job;
  if (!job->dlq_fn)
    return sl_op_fail(op, err,
                      "%s; error.policy=dlq but the job has no Kafka "
                      "dead-letter queue (it needs a Kafka source or sink)",
                      why);
  int rc = job->dlq_fn(op, rec, why, job->dlq_opaque);
  if (rc)
    return sl__job_failing(job) ? job->err
                                : sl_op_fail(op, rc,
                                             "%s; dead-letter write "
                                             "failed",
                                             why);
  sl__counter_add(&op->errors, 1);
  return 0;
}

void sl_job_set_dlq(sl_job_t *job, sl_dlq_fn fn, void *opaque) {
  job->dlq_fn = fn;
  job->dlq_opaque = opaque;
}

const char *sl_job_name(const sl_job_t *job) {
  return job->name;
}

const sl_conf_t *sl_job_conf(const sl_job_t *job) {
  return job->conf;
}

bool sl_op_job_failing(const sl_ctx_t *op) {
  return sl__job_failing(op->w->job);
}

/* No key_by between op and its sources: every record op sees is processed
 * synchronously inside the emit of a source subtask on this thread. */
static bool node_chained(const sl__node *n) {
  if (n->kind == SL__NODE_KEYBY)
    return false;
  for (int i = 0; i < n->n_inputs; i++)
    if (!node_chained(n->inputs[i].from))
      return false;
  return true;
}

bool sl_op_chained_to_sources(const sl_ctx_t *op) {
  return node_chained(op->node);
}

/* ---- Watermarks, idleness and end of input ----------------------------- */

static int forward_all(sl_ctx_t *op, int (*fn)(sl_ctx_t *, int, int64_t),
                       int64_t arg) {
  for (int i = 0; i < op->main.n; i++) {
    int rc = fn(op->main.e[i].to, op->main.e[i].port, arg);
    if (rc)
      return rc;
  }
  for (int s = 0; s < op->n_side; s++) {
    for (int i = 0; i < op->side[s].outs.n; i++) {
      sl__edge *e = &op->side[s].outs.e[i];
      int rc = fn(e->to, e->port, arg);
      if (rc)
        return rc;
    }
  }
  return 0;
}

static int port_wm_cb(sl_ctx_t *to, int port, int64_t wm) {
  return sl__port_watermark(to, port, wm);
}
static int port_idle_cb(sl_ctx_t *to, int port, int64_t idle) {
  return sl__port_idle(to, port, idle != 0);
}
static int port_end_cb(sl_ctx_t *to, int port, int64_t unused) {
  (void)unused;
  return sl__port_end(to, port);
}
static int port_bar_cb(sl_ctx_t *to, int port, int64_t id) {
  return sl__port_barrier(to, port, (uint64_t)id);
}

/* Records a source appended go out before any control element it
 * forwards. */
static inline int flush_source(sl_ctx_t *op) {
  if (SL__UNLIKELY(sl__is_source(op)) && ((struct sl_source_ctx *)op)->b_n)
    return sl__source_flush((struct sl_source_ctx *)op);
  return 0;
}

/* A key_by producer's outputs are the exchange channels. */
int sl__forward_watermark(sl_ctx_t *op, int64_t wm) {
  int rc = flush_source(op);
  if (rc)
    return rc;
  if (op->xchg)
    return sl__xchg_broadcast(op, SL__CTL_WATERMARK, wm);
  return forward_all(op, port_wm_cb, wm);
}
int sl__forward_idle(sl_ctx_t *op, bool idle) {
  int rc = flush_source(op);
  if (rc)
    return rc;
  if (op->xchg)
    return sl__xchg_broadcast(op, SL__CTL_IDLE, idle);
  return forward_all(op, port_idle_cb, idle);
}
int sl__forward_end(sl_ctx_t *op) {
  int rc = flush_source(op);
  if (rc)
    return rc;
  if (op->xchg)
    return sl__xchg_broadcast(op, SL__CTL_END, 0);
  return forward_all(op, port_end_cb, 0);
}
int sl__forward_barrier(sl_ctx_t *op, uint64_t id) {
  int rc = flush_source(op);
  if (rc)
    return rc;
  if (op->xchg)
    return sl__xchg_broadcast(op, SL__CTL_BARRIER, (int64_t)id);
  return forward_all(op, port_bar_cb, (int64_t)id);
}

int sl__forward_task_wm(sl_ctx_t *op, uint32_t kg, int64_t wm) {
  int rc = flush_source(op);
  if (rc)
    return rc;
  if (op->xchg)
    return sl__xchg_task_wm(op, kg, wm);
  for (int i = 0; !rc && i < op->main.n; i++)
    rc = sl__port_task_wm(op->main.e[i].to, op->main.e[i].port, kg, wm);
  for (int s = 0; !rc && s < op->n_side; s++)
    for (int i = 0; !rc && i < op->side[s].outs.n; i++) {
      sl__edge *e = &op->side[s].outs.e[i];
      rc = sl__port_task_wm(e->to, e->port, kg, wm);
    }
  return rc;
}

int sl__port_task_wm(sl_ctx_t *op, int port, uint32_t kg, int64_t wm) {
  if (op->tw && op->keyed && op->keyed->tw == op->tw)
    return sl__keyed_task_wm(op->keyed, port, kg, wm);
  /* A keyed operator without them judges by its own watermark. */
  if (op->ops->keyed || sl__is_source(op))
    return 0;
  return sl__forward_task_wm(op, kg, wm);
}

/* Forwards the worker's checkpoint barrier once every input that has not
 * ended delivered it. Inputs that ended count as aligned: nothing can
 * follow their end. */
static int try_align(sl_ctx_t *op) {
  uint64_t id = op->w->ckpt_id;
  if (!id || op->bar_done == id || op->ended)
    return 0;
  for (int i = 0; i < op->n_ports; i++)
    if (!op->ports[i].ended && op->ports[i].bar != id)
      return 0;
  op->bar_done = id;
  return sl__forward_barrier(op, id);
}

int sl__port_barrier(sl_ctx_t *op, int port, uint64_t id) {
  sl__worker *w = op->w;
  /* A barrier may reach a worker before it saw the trigger itself; a
   * newer one supersedes a checkpoint some producer skipped. */
  if (id > w->ckpt_id && id > w->ckpt_done)
    w->ckpt_id = id;
  if (id != w->ckpt_id)
    return 0; /* of a checkpoint this worker already finished or dropped */
  op->ports[port].bar = id;
  return try_align(op);
}

/* Recomputes the combined input state after a port changed. Idleness is
 * forwarded before a watermark so that downstream never sees a watermark
 * from an input it still considers idle. Watermarks only advance. */
static int recompute(sl_ctx_t *op) {
  sl__wm_min m = sl__wm_merge(op->ports, op->n_ports);
  if (m.all_idle != op->idle_out) {
    op->idle_out = m.all_idle;
    int rc = sl__forward_idle(op, m.all_idle);
    if (rc)
      return rc;
  }
  if (m.all_idle || m.wm <= op->wm)
    return 0;
  op->wm = m.wm;
  atomic_store_explicit(&op->wm_pub, m.wm, memory_order_relaxed);
  if (op->ops->on_watermark) {
    int rc = op->ops->on_watermark(op, m.wm);
    if (rc)
      return rc;
  }
  return sl__forward_watermark(op, m.wm);
}

int sl__port_watermark(sl_ctx_t *op, int port, int64_t wm) {
  sl__wmport *p = &op->ports[port];
  if (wm <= p->wm)
    return 0;
  p->wm = wm;
  return p->idle ? 0 : recompute(op);
}

int sl__port_idle(sl_ctx_t *op, int port, bool idle) {
  sl__wmport *p = &op->ports[port];
  if (p->idle == idle || p->ended)
    return 0;
  p->idle = idle;
  return recompute(op);
}

int sl__port_end(sl_ctx_t *op, int port) {
  sl__wmport *p = &op->ports[port];
  if (p->ended)
    return 0;
  p->ended = true;
  p->idle = false;
  int rc = recompute(op);
  if (!rc)
    rc = try_align(op);
  if (rc)
    return rc;
  if (++op->n_ended < op->n_ports || op->ended)
    return 0;
  op->ended = true;
  if (op->ops->on_end && (rc = op->ops->on_end(op)))
    return rc;
  return sl__forward_end(op);
}
