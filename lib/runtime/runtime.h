/* SPDX-License-Identifier: Apache-2.0 */
/* Internal structures of a job: the logical graph (nodes, streams), the
 * per-worker operator instances (sl_ctx) with their input ports, and the
 * functions that move records, watermarks, idleness and end-of-input
 * between instances. */
#ifndef SL_RUNTIME_H
#define SL_RUNTIME_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/arena.h"
#include "core/hash.h"
#include "core/service.h"
#include "core/util.h"
#include "graph/graph.h"
#include "operator.h"
#include "runtime/stats.h"
#include "state/backend.h"
#include "time/watermark.h"

typedef struct sl__worker sl__worker;
typedef struct sl__xchg sl__xchg;

typedef struct sl__edge {
  sl_ctx_t *to;
  int port;
} sl__edge;

typedef struct sl__outs {
  sl__edge *e;
  int n;
} sl__outs;

typedef struct sl__side {
  const char *tag;
  sl__outs outs;
} sl__side;

/* One operator instance on one worker; also the sl_ctx_t handed to user
 * callbacks, and (embedded) the source context. */
struct sl_ctx {
  const sl_operator_ops_t *ops;
  sl__node *node;
  sl__worker *w;
  void *data;
  sl__outs main;
  sl__side *side;
  int n_side;
  sl__wmport *ports;
  int n_ports;
  int n_ended;
  bool opened;
  bool ended;             /* end forwarded */
  bool idle_out;          /* idle status forwarded */
  int64_t wm;             /* combined input watermark (last forwarded) */
  _Atomic int64_t wm_pub; /* wm, for readers on other threads */
  sl__counter in, out, errors, late;
  /* Set on a key_by producer only: the exchange it feeds. */
  sl__xchg *xchg;
  /* Set by keyed operators: state, timers and current key. */
  struct sl__keyed *keyed;
  /* Group mode's keyed stage: the instance's per-task watermarks
   * (time/taskwm.h), made at its first sl_op_set_keyed() when its inputs
   * carry them (tw_checked), freed by sl_op_set_keyed(op, NULL). */
  struct sl__taskwm *tw;
  bool tw_checked;
  /* Set by broadcast process operators: their broadcast states. */
  struct sl__bstates *bcast;
  void *local; /* sl_ctx_set_local() */
  /* When set, records emitted through this instance carry *out_ts_at as
   * it is when they are emitted (Flink's TimestampedCollector: a process
   * function's output has the input's or the event-time timer's
   * timestamp): &out_ts for a fixed timestamp, or the keyed context's
   * current timestamp, which then follows each record with no store. */
  const int64_t *out_ts_at;
  int64_t out_ts;
  /* Some main output's operator is keyed: it takes batches (set at
   * open; key_by consumers). */
  bool keyed_outs;
  /* Checkpoint whose barrier this instance has received on every live
   * input and forwarded (aligned). */
  uint64_t bar_done;
  /* State and timer sizes of a keyed instance, published by its worker
   * about once a second for metrics readers (runtime/stats.c). */
  struct {
    _Atomic bool keyed;
    _Atomic uint64_t entries, bytes, timers_event, timers_proc;
  } pub;
};

/* A source subtask: its operator instance plus the generator of
 * watermarks and the source's own state. */
/* The most operators chained into a source's emit; a longer chain goes
 * on from there in batches. */
#define SL__MAX_STEPS 8

struct sl_source_ctx {
  struct sl_ctx op;
  sl__wmgen wmgen;
  int64_t wm_emitted;
  bool done;
  bool finished; /* done because the input ended (not stopped) */
  size_t budget;
  /* Event time restored from a checkpoint (runtime/restore.c), put in
   * place at open and forwarded by the first poll, before any record. */
  bool rt_set, rt_pending;
  int64_t rt_max_ts;
  bool rt_idle;
  bool rt_is_wm; /* rt_max_ts is a user generator's watermark */
  /* The source drives its own watermark and idleness (e.g. per Kafka
   * partition): the worker's generator above is not used. */
  bool own_wm;
  bool own_idle;
  /* Records sl_source_emit() appended during a poll, their bytes copied
   * into bytes: handed downstream as one batch when full, before any
   * control element the source forwards, and at the end of the poll
   * (runtime/source.c). Only while in_poll, and only for a subtask that
   * batches (not one driving its own watermarks, whose readers may look
   * at the message being emitted, nor a user generator's punctuated
   * watermarks, which follow their record). */
  bool batching, in_poll;
  bool append; /* in_poll, batching and no timestamp assigner */
  uint32_t b_n, b_cap;
  sl_record_t *b_recs;
  char *b_bytes;
  size_t b_used, b_bytes_cap;
  /* While batching: the chain of operators with a step (lib/operator.h)
   * that is the source's only reader, run on each appended record before
   * it is appended; the batch goes to the readers of tail, the last of
   * them (the source itself when there is none). */
  struct sl__step {
    sl_step_t st;
    sl_ctx_t *op;
    uint64_t passed; /* records it handed on, not yet in op->in/out */
  } steps[SL__MAX_STEPS];
  uint32_t n_steps;
  uint64_t steps_in; /* records into the first, not yet in its op->in */
  sl_ctx_t *tail;
};

/* Workers sit side by side in job->workers; each is written by its own
 * thread (arena, rounds, checkpoint fields) and read by the others only
 * rarely, so each starts on a cache line of its own. */
struct sl__worker {
  _Alignas(SL__CACHELINE) sl_job_t *job;
  int index;
  pthread_t thread;
  sl_ctx_t **inst; /* per node id; NULL where the node has no instance */
  sl__arena arena;
  /* Instances with an on_proc_time hook, called every round. */
  sl_ctx_t **proc_time;
  int n_proc_time;
  /* Keyed state of every keyed instance on this worker (sl_op_backend). */
  struct sl__backend *be;
  /* Checkpoints (runtime/barrier.c): the checkpoint being aligned
   * (0: none), the last one snapshotted, the one whose barrier the
   * worker's sources emitted, and the last completion passed on to the
   * instances. While ckpt_id is set the worker's sources and
   * processing-time callbacks wait, and every input that delivered the
   * barrier is blocked, so the worker's state stops exactly at it. */
  uint64_t ckpt_id, ckpt_done, ckpt_injected, ckpt_notified;
  struct sl__wsnap *snap; /* the snapshot being collected */
  /* Chains of incremental keyed state (checkpoint/incr.h), for a backend
   * with kg_changes; NULL until the first snapshot or restore uses it. */
  struct sl__incr *incr;
  const char *restore_dir; /* native state snapshot to start from */
  int rc;
  /* runtime/stats.c: loop rounds and when sizes are next published. */
  unsigned pub_rounds;
  int64_t pub_next_ms;
  /* sl_ctx_reject(): the reason of the instance whose user function
   * rejected a record, until sl_op_user_error() takes it. */
  const sl_ctx_t *reject_op;
  char reject[256];
  /* Queries for keys this worker owns (runtime/query.c): the queue and
   * closed are guarded by job->q_mu; pending is what the loop checks, one
   * relaxed load per round. */
  struct sl__qreq *q_head;
  _Atomic int q_pending;
  bool q_closed;
};

enum { SL__JOB_NEW, SL__JOB_RUNNING, SL__JOB_DONE };
/* job->stop: not stopped, sl_job_stop(), sl_job_stop_drain(). */
enum { SL__STOP_NONE, SL__STOP_PLAIN, SL__STOP_DRAIN };

struct sl_job {
  sl__graph g; /* first: sl__graph_of() (graph/graph.h) */
  char *name;
  sl_conf_t *conf;
  sl_clock_t *clock;
  sl_clock_t *own_clock;
  _Atomic int phase;
  _Atomic int stop;   /* SL__STOP_*: sl_job_stop() or its drain form */
  _Atomic int failed; /* a worker failed: everyone unwinds */
  /* Settings resolved at sl_job_new. */
  int par;
  uint32_t max_par;
  uint16_t *kg_worker; /* key group -> worker, precomputed */
  sl__divisor kg_div;  /* max_par, for key groups without a division */
  /* Group mode: a key's key group is its Kafka partition (murmur2 modulo
   * max_par), not its hash modulo max_par (docs/scaling.md). */
  bool kg_murmur2;
  bool skip_errors;
  bool dlq_errors; /* error.policy=dlq: bad records go to dlq_fn */
  sl_dlq_fn dlq_fn;
  void *dlq_opaque;
  size_t batch_size;
  size_t chan_cap;
  size_t source_budget;
  /* Runtime. */
  sl__worker *workers;
  sl__xchg **xchgs;
  /* What the workers' state backends share (RocksDB: block cache, the
   * job's directory lock), made by the first backend that opens. */
  sl__backend_shared backend_shared;
  pthread_mutex_t err_lock;
  int err;
  char errmsg[1024];
  /* Group mode: the first error is a fence (sl__job_fail_fenced), which
   * the process survives by reviving its tasks (job.c); under err_lock. */
  bool fenced;
  /* Revivals (job.c, supervisor thread): when the newest ones happened
   * (monotonic ms, at most group.revive.max of them, oldest first), and
   * the checkpoint id no checkpoint takes that separates the current
   * run's output epochs from those of the runs before it (0: the first
   * run; sl__job_revived_from). */
  int64_t *revived_at;
  int n_revived;
  _Atomic uint64_t revived_from;
  /* Services (core/service.h), in registration order. */
  struct sl__svc {
    const sl__service_ops *ops;
    void *svc;
  } * svcs;
  int n_svcs;
  /* The supervisor of sl_job_run() waits on cv; workers (finishing,
   * acking a checkpoint) and services wake it. Guarded by mu: */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool woken;
  int n_finished, n_unclean; /* workers past their loop */
  bool release;              /* parked workers may close */
  /* The checkpoint coordinator the worker side of barriers (barrier.c,
   * restore.c) talks to: a service like any other, given to the runtime
   * by the assembly of the job (sl_job_new). */
  struct sl__ckpt *ckpt;
  /* Group mode with checkpoints: per-task load and drop requests
   * (tasks.c); NULL otherwise. */
  struct sl__tasks *tasks;
  /* Set (release) once every service started: only then may another
   * thread call into them (sl_job_checkpoint, sl_job_checkpoint_info). */
  _Atomic int svcs_started;
  /* Metrics (lib/metrics) and what they read of the run (stats.c). */
  struct sl__jmetrics *metrics;
  _Atomic int planned;  /* the plan may be read from other threads */
  _Atomic int n_opened; /* workers past open, in their loop */
  /* Figures other modules keep and metrics read (stats.c), and the user
   * metrics operators registered in open (umetrics.c); each list is
   * guarded by stat_lock, never taken on the per-record path. */
  pthread_mutex_t stat_lock;
  struct sl__reporter {
    sl__stat_reporter fn;
    void *opaque;
  } * reporters;
  int n_reporters;
  struct sl__umetric *umetrics;
  /* Queryable state (runtime/query.c): callers wait on q_cv for the
   * workers' answers; both guard every worker's queue. */
  pthread_mutex_t q_mu;
  pthread_cond_t q_cv;
  int64_t q_timeout_ms;
  _Atomic uint64_t q_served, q_timeouts;
  /* Group mode (runtime/group.c): the instance id, the endpoint the
   * metrics service listens on (under stat_lock), who owns a task, and
   * the rebalance figures. */
  char *instance;
  char endpoint[256];
  void (*owner_fn)(void *opaque, uint32_t task, struct sl_query_owner *out);
  void *owner_opaque;
  struct {
    _Atomic int tasks, rebalancing;
    _Atomic uint64_t revoked, assigned, tasks_revoked, tasks_assigned;
    _Atomic uint64_t pause_buckets[14]; /* SL__GROUP_PAUSE_N + 1 */
    _Atomic uint64_t pause_us;
    _Atomic uint64_t revivals;
  } grp;
};

_Static_assert(offsetof(struct sl_job, g) == 0,
               "sl__graph_of() needs the graph first in sl_job_t");

/* Adds a service (core/service.h) before the job runs: the assembly of a
 * job in sl_job_new() does, the job itself names none. The job keeps ops
 * and svc until sl_job_destroy(). SL_OK or SL_ERR_NOMEM. */
int sl__job_add_service(sl_job_t *job, const sl__service_ops *ops, void *svc);
/* Any thread: something a service waits for happened; tick them now. */
void sl__job_wake(sl_job_t *job);
/* sl_job_new() without its services: the runtime's part of a job. */
sl_job_t *sl__job_create(const char *name, sl_conf_t *conf, char *err,
                         size_t errlen);

/* Records the job's first error and makes every worker unwind. */
int sl__job_fail(sl_job_t *job, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline bool sl__job_failing(const sl_job_t *job) {
  return atomic_load_explicit(&((sl_job_t *)job)->failed,
                              memory_order_relaxed) != 0;
}

/* ---- Moving elements between instances -------------------------------- */

static inline int sl__deliver(sl_ctx_t *to, int port, const sl_record_t *rec) {
  sl__counter_add(&to->in, 1);
  return to->ops->process(to, port, rec);
}

static inline int sl__emit_outs(sl_ctx_t *op, const sl__outs *o,
                                const sl_record_t *rec) {
  (void)op;
  /* One reader, the usual case: a tail call, no frame kept per hop. */
  if (SL__LIKELY(o->n == 1))
    return sl__deliver(o->e[0].to, o->e[0].port, rec);
  for (int i = 0; i < o->n; i++) {
    int rc = sl__deliver(o->e[i].to, o->e[i].port, rec);
    if (SL__UNLIKELY(rc))
      return rc;
  }
  return 0;
}

/* A batch on one input: whole to an operator that takes batches, else
 * record by record. */
static inline int sl__deliver_batch(sl_ctx_t *to, int port,
                                    const sl_record_t *r, size_t n) {
  sl__counter_add(&to->in, n);
  if (to->ops->process_batch)
    return to->ops->process_batch(to, port, r, n);
  int (*process)(sl_ctx_t *, int, const sl_record_t *) = to->ops->process;
  for (size_t i = 0; i < n; i++) {
    int rc = process(to, port, &r[i]);
    if (SL__UNLIKELY(rc))
      return rc;
  }
  return 0;
}

/* A batch on the outputs o (counted by the caller): whole to a single
 * reader; to several, record by record, each to every reader before the
 * next, so that readers that meet again downstream (a union) see the
 * records interleaved exactly as sl__emit_outs() would deliver them. */
static inline int sl__emit_outs_batch(const sl__outs *o, const sl_record_t *r,
                                      size_t n) {
  if (SL__LIKELY(o->n == 1))
    return sl__deliver_batch(o->e[0].to, o->e[0].port, r, n);
  for (size_t i = 0; i < n; i++) {
    for (int k = 0; k < o->n; k++) {
      int rc = sl__deliver(o->e[k].to, o->e[k].port, &r[i]);
      if (SL__UNLIKELY(rc))
        return rc;
    }
  }
  return 0;
}

extern const sl_operator_ops_t sl__source_ops;
/* Whether an instance is a source subtask (struct sl_source_ctx). */
static inline bool sl__is_source(const sl_ctx_t *c) {
  return c->node->kind == SL__NODE_SOURCE && c->ops == &sl__source_ops;
}

/* error.policy=dlq for one record (rec may be NULL); 0 or the error. */
int sl__dlq(sl_ctx_t *op, const sl_record_t *rec, const char *why, int err);

/* Input-port events: update the port, recompute the combined watermark /
 * idleness / end, call the operator and forward downstream. */
int sl__port_watermark(sl_ctx_t *op, int port, int64_t wm);
int sl__port_idle(sl_ctx_t *op, int port, bool idle);
int sl__port_end(sl_ctx_t *op, int port);
/* Barrier of checkpoint id on an input port (alignment, then forwarding
 * once every live input delivered it). */
int sl__port_barrier(sl_ctx_t *op, int port, uint64_t id);

/* Output events of an instance, to every main and side output. */
int sl__forward_watermark(sl_ctx_t *op, int64_t wm);
int sl__forward_idle(sl_ctx_t *op, bool idle);
int sl__forward_end(sl_ctx_t *op);
int sl__forward_barrier(sl_ctx_t *op, uint64_t id);
/* Group mode's keyed stage (docs/scaling.md): the watermark w of task kg
 * as a keyed operator, or a source for the task's partition, sends it
 * downstream (SL_TS_MAX: the task follows the forwarded watermark
 * again). It passes operators that are not keyed and key_by exchanges
 * that keep a task's records in the task, in order with the records,
 * and stops at anything else; a keyed operator with per-task watermarks
 * takes it on its port (sl__keyed_task_wm). */
int sl__forward_task_wm(sl_ctx_t *op, uint32_t kg, int64_t w);
int sl__port_task_wm(sl_ctx_t *op, int port, uint32_t kg, int64_t w);

/* ---- Job and worker steps (job.c, worker.c) ---------------------------- */

/* Validates the graph and builds the plan: everything sl_job_run() does
 * before starting threads (the harness drives worker 0 itself). */
int sl__job_prepare(sl_job_t *job);
/* A revival, while no worker runs: every instance, channel, worker and
 * task back to what sl__job_prepare() made, as if the job had not run
 * (the plan stays: other threads read it). SL_OK or SL_ERR_NOMEM. */
int sl__plan_reset(sl_job_t *job);
/* After the workers of a run joined (revive.c): whether the run ended in
 * a fence that the process survives (group.revive.max); then the run is
 * started over (services restarted, plan reset, error cleared) and the
 * caller starts the workers again. Supervisor thread. */
bool sl__job_revive(sl_job_t *job);
int sl__worker_open(sl__worker *w);
void sl__worker_close(sl__worker *w);
int sl__worker_proc_time(sl__worker *w);
/* A worker finished its loop (clean: its input ended or the job was
 * stopped): counted for the supervisor, which it wakes. */
void sl__worker_finished(sl__worker *w, bool clean);
/* The worker's state backend, opened on first use (sl_op_backend). */
struct sl__backend *sl__worker_backend(sl__worker *w, char *err, size_t errlen);
/* Source subtasks (source.c). Polls one subtask once: 1 when it did
 * work, 0 when it had nothing, or a negative error. */
int sl__source_poll(sl__worker *w, struct sl_source_ctx *s);
/* Hands the records a source subtask appended during its poll
 * downstream as one batch. 0 or an error. */
int sl__source_flush(struct sl_source_ctx *s);
/* Ends a source subtask; a natural end (recorded as the input's end) and
 * a stop with drain first advance the watermark to the maximum. */
int sl__source_finish(struct sl_source_ctx *s, bool natural, bool drain);

/* ---- Exchange (exchange.c) --------------------------------------------- */

int sl__xchg_create(sl_job_t *job, sl__node *n, sl__xchg **out);
void sl__xchg_destroy(sl__xchg *x);
/* Empties every channel of x as a new exchange has them (what was in
 * flight is dropped), while no worker runs: a revival (job.c). */
void sl__xchg_reset(sl__xchg *x);
extern const sl_operator_ops_t sl__keyby_prod_ops;
enum { SL__CTL_WATERMARK = 1, SL__CTL_IDLE, SL__CTL_END, SL__CTL_BARRIER };
/* Sends a control element from a key_by producer to every consumer. */
int sl__xchg_broadcast(sl_ctx_t *prod, int kind, int64_t arg);
/* sl__forward_task_wm() from a key_by producer: to the consumer on the
 * worker of key group kg, after the records sent to it before, when the
 * key_by keeps a task's records in the task: it keys by the records' own
 * key (from a keyed operator: a key keeps its key group, so the producer
 * is on that worker too), or it reads a source's records (a source's
 * partition is its task: group mode's declaration, or a repartition
 * topic); else nowhere. */
int sl__xchg_task_wm(sl_ctx_t *prod, uint32_t kg, int64_t w);
extern const sl_operator_ops_t sl__keyby_cons_ops;
/* Delivers waiting input of exchanges with xidx >= min_xidx to worker w,
 * most downstream first. Returns the number of elements handled, or a
 * negative error. */
int sl__xchg_drain(sl__worker *w, int min_xidx);
/* Pushes every partially filled batch of w's producers. */
int sl__xchg_flush(sl__worker *w);
/* Whether w has received end-of-input on every exchange channel. */
bool sl__xchg_inputs_ended(sl__worker *w);
/* Batches queued in the channel from worker `from` to worker `to`, its
 * capacity, and the ns its producer waited for room; false when there is
 * no such channel (P = 1, from == to). Safe from any thread. */
bool sl__xchg_chan_fill(const sl__xchg *x, int from, int to, uint32_t *queued,
                        uint32_t *capacity, uint64_t *full_ns);

/* ---- Queryable state (query.c) ----------------------------------------- */

/* The instance id (group.c); SL_OK or SL_ERR_NOMEM. */
int sl__group_init(sl_job_t *job);

void sl__query_init(sl_job_t *job);
void sl__query_fini(sl_job_t *job);
/* Worker thread: answers the queries queued for w (call it when
 * w->q_pending is set), between batches. */
void sl__query_serve(sl__worker *w);
static inline void sl__query_poll(sl__worker *w) {
  if (SL__UNLIKELY(atomic_load_explicit(&w->q_pending, memory_order_relaxed)))
    sl__query_serve(w);
}
/* Worker thread, leaving its loop (and the job, for workers that never
 * started): queued and later queries are refused (SL_ERR_STATE). */
void sl__query_close(sl__worker *w);
/* Any thread: queries answered by workers and queries that timed out. */
void sl__query_counts(sl_job_t *job, uint64_t *served, uint64_t *timeouts);

/* Backoff for a worker with nothing to do: spin, yield, then sleep up to
 * 1 ms. *spins counts the idle rounds; reset it to 0 on progress. */
void sl__backoff(unsigned *spins);

#endif
