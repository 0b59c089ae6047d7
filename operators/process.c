/* SPDX-License-Identifier: Apache-2.0 */
/* Keyed process and co-process operators: per record, make the key
 * current and call the user; on a watermark, fire due event-time timers
 * before the watermark moves on; on processing time, fire due
 * processing-time timers. One keyed context (state + timers) per instance,
 * shared by both inputs of a co-process. */
#include <stdlib.h>

#include "operator.h"
#include "runtime/keyed.h"
#include "state/keyed.h"
#include "state/state.h"
#include "time/timers.h"

typedef struct proc_arg {
  sl_co_process_ops_t ops; /* process: on_element1 is on_element */
  void *opaque;
} proc_arg;

typedef struct proc {
  sl__keyed k; /* first: proc_element gets the proc from its keyed context */
  const proc_arg *a;
  /* a's element functions and opaque, one load each per record. */
  sl_record_fn on_element1, on_element2;
  void *opaque;
} proc;

static int proc_open(sl_ctx_t *op) {
  const proc_arg *a = sl_op_arg(op);
  proc *p = calloc(1, sizeof(*p));
  if (!p)
    return SL_ERR_NOMEM;
  p->a = a;
  p->on_element1 = a->ops.on_element1;
  p->on_element2 = a->ops.on_element2;
  p->opaque = a->opaque;
  p->k.op = op;
  sl_op_set_data(op, p);
  sl_op_set_keyed(op, &p->k);
  int rc = sl__timers_new(&p->k.timers);
  if (!rc)
    rc = sl__kstate_open(&p->k);
  if (rc)
    return sl_op_fail(op, rc, "cannot create keyed state: %s", sl_strerror(rc));
  /* A failed open fails the job whatever error.policy says: there is no
   * record to skip. */
  if (a->ops.open && (rc = a->ops.open(op, a->opaque)))
    return sl_op_fail(op, rc < 0 ? rc : SL_ERR_USER, "open() returned %d", rc);
  return 0;
}

static void proc_close(sl_ctx_t *op) {
  proc *p = sl_op_data(op);
  if (!p)
    return;
  if (p->a->ops.close)
    p->a->ops.close(op, p->a->opaque);
  sl__kstate_close(&p->k);
  sl__timers_free(p->k.timers);
  sl_op_set_keyed(op, NULL);
  sl_op_set_data(op, NULL);
  free(p);
}

/* One record, its key already current in k (the proc's first member),
 * for the user's element function of input port (a constant at each
 * call, so each port's loop loads only its own function). Its output
 * carries k->ts, the record's timestamp (proc_process). */
static inline __attribute__((always_inline)) int
proc_element(sl__keyed *k, int port, const sl_keyed_rec_t *r) {
  proc *p = (proc *)k;
  sl_ctx_t *op = k->op;
  int rc = port == 0 ? p->on_element1(op, &r->rec, p->opaque)
                     : p->on_element2(op, &r->rec, p->opaque);
  return rc ? sl_op_user_error(op, &r->rec, rc) : 0;
}

static int proc_element1(sl__keyed *k, int port, const sl_keyed_rec_t *r) {
  (void)port;
  return proc_element(k, 0, r);
}

static int proc_element2(sl__keyed *k, int port, const sl_keyed_rec_t *r) {
  (void)port;
  return proc_element(k, 1, r);
}

static int proc_process(sl_ctx_t *op, int port, const sl_keyed_rec_t *recs,
                        size_t n) {
  proc *p = sl_op_data(op);
  /* Flink's TimestampedCollector: output carries the input record's
   * timestamp, the current one of k (a timer sets its own). */
  sl_op_set_out_ts_at(op, &p->k.ts);
  /* No namespace is ever set here: k's stays empty. */
  if (port == 0)
    return sl__keyed_batch_ns(&p->k, port, recs, n, sl__keyed_prefetch,
                              proc_element1, false);
  return sl__keyed_batch_ns(&p->k, port, recs, n, sl__keyed_prefetch,
                            proc_element2, false);
}

static int proc_timer(sl__keyed *k, sl_time_domain domain, int64_t ts) {
  proc *p = sl_op_data(k->op);
  return sl__keyed_user_timer(k, domain, ts, p->a->ops.on_timer, p->a->opaque);
}

static int proc_watermark(sl_ctx_t *op, int64_t wm) {
  proc *p = sl_op_data(op);
  return sl__keyed_fire(&p->k, SL_EVENT_TIME, wm, proc_timer);
}

static int proc_time(sl_ctx_t *op, int64_t now) {
  proc *p = sl_op_data(op);
  return sl__keyed_fire(&p->k, SL_PROC_TIME, now, proc_timer);
}

/* process and co_process differ only in their number of inputs. */
#define PROC_OPS(name)                                                         \
  {                                                                            \
    .kind = name, .keyed = true, .open = proc_open,                            \
    .process_keyed = proc_process, .on_watermark = proc_watermark,             \
    .on_proc_time = proc_time, .close = proc_close, .free_arg = free,          \
  }
static const sl_operator_ops_t process_ops = PROC_OPS("process");
static const sl_operator_ops_t co_process_ops = PROC_OPS("co_process");

static sl_stream_t *add(sl_stream_t *const *in, size_t n, const char *uid,
                        const sl_co_process_ops_t *ops, void *opaque,
                        const sl_operator_ops_t *kind) {
  if (!in[0] || (n > 1 && !in[1]))
    return NULL;
  sl_job_t *job = sl_stream_job(in[0]);
  if (!ops || !ops->on_element1 || (n > 1 && !ops->on_element2)) {
    sl_job_build_error(job, SL_ERR_INVAL,
                       "%s \"%s\": the element callback(s) are required",
                       kind->kind, uid ? uid : "");
    return NULL;
  }
  proc_arg *a = malloc(sizeof(*a));
  if (!a) {
    sl_job_build_error(job, SL_ERR_NOMEM, "%s: out of memory", kind->kind);
    return NULL;
  }
  a->ops = *ops;
  a->opaque = opaque;
  return sl_op_add(in, n, uid, kind, a, false);
}

sl_stream_t *sl_process(sl_stream_t *keyed, const char *uid,
                        const sl_process_ops_t *ops, void *opaque) {
  sl_co_process_ops_t co = {0};
  if (ops) {
    co.open = ops->open;
    co.on_element1 = ops->on_element;
    co.on_timer = ops->on_timer;
    co.close = ops->close;
  }
  return add(&keyed, 1, uid, ops ? &co : NULL, opaque, &process_ops);
}

sl_stream_t *sl_co_process(sl_stream_t *keyed1, sl_stream_t *keyed2,
                           const char *uid, const sl_co_process_ops_t *ops,
                           void *opaque) {
  sl_stream_t *in[2] = {keyed1, keyed2};
  return add(in, 2, uid, ops, opaque, &co_process_ops);
}
