/* SPDX-License-Identifier: Apache-2.0 */
/* Source subtasks: the operator instance of a source on a worker, the
 * context user sources emit through (sl_source_emit and friends), their
 * watermarks and idleness, and one poll of a subtask from the worker
 * loop. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "runtime/runtime.h"

typedef struct sl_source_ctx src_t;

/* Bytes of a source batch to begin with; a record larger than what is
 * left flushes the batch, and one larger than the buffer grows it. */
#define SRC_BATCH_BYTES (128 * 1024)

static int advance_wm(src_t *s, int64_t wm);

static int src_open(sl_ctx_t *op) {
  src_t *s = (src_t *)op;
  sl__node *n = op->node;
  sl_job_t *job = op->w->job;
  sl__wmgen_init(&s->wmgen, &n->wm_spec, sl_clock_now(job->clock));
  s->wm_emitted = SL_TS_MIN;
  if (s->rt_set) {
    /* A user generator is created anew and re-derives its watermark from
     * the records it sees; the watermark it had emitted is where it
     * starts (it only moves forward). A checkpoint of another strategy
     * gives its highest timestamp, which a user generator cannot use. */
    if (s->wmgen.kind == SL_WM_CUSTOM)
      s->wmgen.wm = s->rt_is_wm ? s->rt_max_ts : SL_TS_MIN;
    else
      s->wmgen.max_ts = s->rt_max_ts;
    s->wmgen.idle = s->rt_idle;
    s->rt_pending = true;
  }
  s->budget = job->source_budget;
  if (n->src_ops->open) {
    int rc = n->src_ops->open(s, n->src_opaque);
    if (rc)
      return sl_op_fail(op, rc < 0 ? rc : SL_ERR_USER,
                        "source open failed (%d)", rc);
  }
  if (!s->own_wm) {
    int rc = sl__wmgen_open(&s->wmgen,
                            sl__conf_int(job->conf, "watermark.interval.ms"));
    if (rc)
      return sl_op_fail(op, rc, "watermark generator: create failed (%d)", rc);
  }
  s->batching = !s->own_wm && s->wmgen.kind != SL_WM_CUSTOM;
  s->tail = op;
  s->n_steps = 0;
  if (s->batching) {
    /* The chain of steps: each the only reader of the one before. */
    while (s->n_steps < SL__MAX_STEPS && s->tail->main.n == 1 &&
           s->tail->main.e[0].to->ops->step) {
      sl_ctx_t *next = s->tail->main.e[0].to;
      struct sl__step *st = &s->steps[s->n_steps++];
      *st = (struct sl__step){.op = next};
      next->ops->step(next, &st->st);
      s->tail = next;
    }
    s->b_cap = (uint32_t)job->batch_size;
    s->b_bytes_cap = SRC_BATCH_BYTES;
    s->b_recs = malloc(s->b_cap * sizeof(*s->b_recs));
    s->b_bytes = malloc(s->b_bytes_cap);
    if (!s->b_recs || !s->b_bytes)
      return sl_op_fail(op, SL_ERR_NOMEM, "out of memory for a source batch");
  }
  return 0;
}

static void src_close(sl_ctx_t *op) {
  sl__node *n = op->node;
  src_t *s = (src_t *)op;
  sl__wmgen_close(&s->wmgen);
  if (n->src_ops->close)
    n->src_ops->close(s, n->src_opaque);
  free(s->b_recs);
  free(s->b_bytes);
  s->b_recs = NULL;
  s->b_bytes = NULL;
  s->b_n = 0;
}

static int src_process(sl_ctx_t *op, int port, const sl_record_t *rec) {
  (void)op;
  (void)port;
  (void)rec;
  return SL_ERR_INTERNAL; /* sources have no inputs */
}

const sl_operator_ops_t sl__source_ops = {
    .kind = "source",
    .open = src_open,
    .process = src_process,
    .close = src_close,
};

/* One record through the chain at once: outside a poll, or for a
 * subtask that does not batch. */
static int emit_one(src_t *s, const sl_record_t *rec) {
  sl_ctx_t *op = &s->op;
  const sl__node *n = op->node;
  sl_record_t r;
  if (s->own_wm)
    return sl_emit(op, rec);
  if (n->wm_spec.ts_fn) {
    r = *rec;
    int rc = n->wm_spec.ts_fn(rec, &r.ts, n->wm_spec.ts_opaque);
    if (rc)
      return sl_op_user_error(op, rec, rc);
    rec = &r;
  }
  if (SL__UNLIKELY(sl__wmgen_on_record(&s->wmgen, rec))) {
    int rc = sl__forward_idle(op, false);
    if (rc)
      return rc;
  }
  int rc = sl_emit(op, rec);
  /* A user generator's punctuated watermark follows its record. */
  if (SL__UNLIKELY(s->wmgen.kind == SL_WM_CUSTOM) && !rc)
    rc = advance_wm(s, s->wmgen.wm);
  return rc;
}

int sl__source_flush(src_t *s) {
  uint32_t n = s->b_n;
  if (!n)
    return 0;
  /* Nothing appends while the batch is delivered: sources emit only
   * from their own poll, and the graph is acyclic. The records were
   * counted out as they were appended. */
  int rc = sl__emit_outs_batch(&s->tail->main, s->b_recs, n);
  s->b_n = 0;
  s->b_used = 0;
  return rc;
}

/* Makes room for a record of `need` bytes: delivers the full batch, and
 * grows the byte buffer for a record larger than it. */
static int append_room(src_t *s, size_t need) {
  int rc = sl__source_flush(s);
  if (rc || need <= s->b_bytes_cap)
    return rc;
  size_t cap = s->b_bytes_cap;
  while (cap < need)
    cap *= 2;
  char *b = malloc(cap);
  if (!b)
    return sl_op_fail(&s->op, SL_ERR_NOMEM, "out of memory for a source batch");
  free(s->b_bytes);
  s->b_bytes = b;
  s->b_bytes_cap = cap;
  return 0;
}

/* Copies len bytes, len <= 64, without a libc call: fixed-size moves
 * (overlapping at the end) that compile to a few loads and stores. */
static inline void copy_small(char *d, const char *p, size_t len) {
  if (len >= 32) { /* the first 32 bytes and the last 32 */
    memcpy(d, p, 16);
    memcpy(d + 16, p + 16, 16);
    memcpy(d + len - 32, p + len - 32, 16);
    memcpy(d + len - 16, p + len - 16, 16);
  } else if (len >= 16) {
    memcpy(d, p, 16);
    memcpy(d + len - 16, p + len - 16, 16);
  } else if (len >= 8) {
    memcpy(d, p, 8);
    memcpy(d + len - 8, p + len - 8, 8);
  } else if (len >= 4) {
    memcpy(d, p, 4);
    memcpy(d + len - 4, p + len - 4, 4);
  } else {
    for (size_t o = 0; o < len; o++)
      d[o] = p[o];
  }
}

/* Copies a key or value into the batch's bytes at *used. */
static inline const void *copy_bytes(char *bytes, size_t *used, const void *p,
                                     size_t len) {
  if (!len)
    return p;
  char *d = bytes + *used;
  if (SL__LIKELY(len <= 64))
    copy_small(d, p, len);
  else
    memcpy(d, p, len);
  *used += len;
  return d;
}

/* Appends rec to the batch, which has room for it. Locals, so that
 * copying bytes (which may alias anything) does not make the compiler
 * reload the batch's fields. */
static inline void append(src_t *s, const sl_record_t *rec) {
  size_t klen = rec->key_len, vlen = rec->value_len, used = s->b_used;
  uint32_t i = s->b_n;
  char *bytes = s->b_bytes;
  sl_record_t *d = &s->b_recs[i];
  const void *key = copy_bytes(bytes, &used, rec->key, klen);
  const void *value = copy_bytes(bytes, &used, rec->value, vlen);
  d->key = key;
  d->key_len = klen;
  d->value = value;
  d->value_len = vlen;
  d->ts = rec->ts;
  s->b_n = i + 1;
  s->b_used = used;
}

/* Adds rec to the batch, first making room for it. */
static inline int add(src_t *s, const sl_record_t *rec) {
  size_t need = rec->key_len + rec->value_len;
  int rc;
  if (SL__UNLIKELY(s->b_n == s->b_cap || s->b_bytes_cap - s->b_used < need) &&
      (rc = append_room(s, need)))
    return rc;
  append(s, rec);
  return 0;
}

/* The source's record through its chain of steps, then into the batch
 * if it is still there and someone reads the last step's output. The
 * counts go to the operators' counters at the end of the poll
 * (count_steps). Out of line: inlined, its loop's registers would be
 * saved and restored on every emit of a source without steps too. */
static __attribute__((noinline)) int run_steps(src_t *s,
                                               const sl_record_t *rec) {
  sl_record_t buf[2], *out = &buf[0], *spare = &buf[1];
  const sl_record_t *cur = rec;
  s->steps_in++;
  for (struct sl__step *st = s->steps, *end = st + s->n_steps; st < end; st++) {
    int rc = sl_op_step_run(&st->st, st->op, cur, out);
    if (rc <= 0)
      return rc;
    st->passed++;
    if (rc == SL_STEP_OUT) { /* the next step writes to the other */
      cur = out;
      out = spare;
      spare = (sl_record_t *)cur;
    }
  }
  return s->tail->main.n ? add(s, cur) : 0;
}

/* The records the steps took and handed on since the last call, into
 * their operators' counters. */
static void count_steps(src_t *s) {
  uint64_t in = s->steps_in;
  s->steps_in = 0;
  for (uint32_t k = 0; k < s->n_steps; k++) {
    struct sl__step *st = &s->steps[k];
    sl__counter_add(&st->op->in, in);
    sl__counter_add(&st->op->out, st->passed);
    in = st->passed;
    st->passed = 0;
  }
}

/* An appended record, counted out of the source. */
static inline int emit_appended(src_t *s, const sl_record_t *rec) {
  if (rec->ts > s->wmgen.max_ts)
    s->wmgen.max_ts = rec->ts;
  sl__counter_add(&s->op.out, 1);
  return s->n_steps ? run_steps(s, rec) : add(s, rec);
}

/* sl_source_emit() for all but the common case: outside a poll, a
 * subtask that does not batch, a timestamp assigner, or an idle source
 * becoming active. Out of line, so that the common case makes no call
 * and saves no registers. */
static __attribute__((noinline)) int emit_slow(src_t *s,
                                               const sl_record_t *rec) {
  const sl__node *n = s->op.node;
  int rc;
  if (!s->append) {
    if (!s->in_poll || !s->batching)
      return emit_one(s, rec);
    sl_record_t r = *rec;
    if ((rc = n->wm_spec.ts_fn(rec, &r.ts, n->wm_spec.ts_opaque)))
      return sl_op_user_error(&s->op, rec, rc);
    s->append = true;
    rc = sl_source_emit(s, &r);
    s->append = false;
    return rc;
  }
  /* Active again: the status goes out after the records before this one
   * (sl__forward_idle flushes them) and before it. A subtask that batches
   * has no user generator, so the event is all the generator needs. */
  if (sl__wmgen_on_event(&s->wmgen, rec->ts) &&
      (rc = sl__forward_idle(&s->op, false)))
    return rc;
  return emit_appended(s, rec);
}

int sl_source_emit(sl_source_ctx_t *s, const sl_record_t *rec) {
  if (SL__UNLIKELY(!s->append || s->wmgen.idle))
    return emit_slow(s, rec);
  return emit_appended(s, rec);
}

/* Records the caller holds, downstream in batches of at most batch.size
 * (the size every operator's output is bounded by). */
static int emit_chunks(src_t *s, const sl_record_t *recs, size_t n) {
  for (size_t i = 0; i < n; i += s->b_cap) {
    int rc =
        sl_op_emit_batch(&s->op, &recs[i], n - i < s->b_cap ? n - i : s->b_cap);
    if (rc)
      return rc;
  }
  return 0;
}

int sl_source_emit_batch(sl_source_ctx_t *s, const sl_record_t *recs,
                         size_t n) {
  if (!s || (!recs && n))
    return SL_ERR_INVAL;
  if (!s->append) {
    for (size_t i = 0; i < n; i++) {
      int rc = sl_source_emit(s, &recs[i]);
      if (rc)
        return rc;
    }
    return 0;
  }
  /* Records appended before go first. */
  int rc = sl__source_flush(s);
  if (rc || !n)
    return rc;
  /* Active again: the status goes out before the first record. Only the
   * first can find the source idle (nothing marks it idle while it
   * emits), so the rest is a maximum over the timestamps. */
  if (SL__UNLIKELY(sl__wmgen_on_event(&s->wmgen, recs[0].ts)) &&
      (rc = sl__forward_idle(&s->op, false)))
    return rc;
  int64_t max = s->wmgen.max_ts;
  for (size_t i = 1; i < n; i++)
    max = recs[i].ts > max ? recs[i].ts : max;
  s->wmgen.max_ts = max;
  return emit_chunks(s, recs, n);
}

int sl_source_ctx_subtask(const sl_source_ctx_t *s) {
  return s->op.node->parallel ? s->op.w->index : 0;
}

int sl_source_ctx_subtasks(const sl_source_ctx_t *s) {
  return s->op.node->parallel ? s->op.w->job->par : 1;
}

size_t sl_source_ctx_budget(const sl_source_ctx_t *s) {
  return s->budget;
}

int sl_source_bad_input(sl_source_ctx_t *s, const char *where,
                        const char *why) {
  sl_ctx_t *op = &s->op;
  if (sl__job_failing(op->w->job))
    return op->w->job->err;
  if (op->w->job->skip_errors) {
    sl__counter_add(&op->errors, 1);
    return 0;
  }
  if (op->w->job->dlq_errors) {
    char msg[768];
    snprintf(msg, sizeof(msg), "malformed input at %s: %s", where, why);
    return sl__dlq(op, NULL, msg, SL_ERR_DECODE);
  }
  return sl_op_fail(op, SL_ERR_DECODE, "malformed input at %s: %s", where, why);
}

int sl_source_fail(sl_source_ctx_t *s, int err, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return sl_op_fail(&s->op, err < 0 ? err : SL_ERR_USER, "%s", msg);
}

/* ---- Sources that generate their own watermarks ------------------------ */

sl_ctx_t *sl_source_op(sl_source_ctx_t *s) {
  return &s->op;
}

const sl_watermark_spec_t *sl_source_own_watermarks(sl_source_ctx_t *s) {
  s->own_wm = true;
  return &s->op.node->wm_spec;
}

int sl_source_watermark(sl_source_ctx_t *s, int64_t wm) {
  if (wm <= s->wm_emitted)
    return 0;
  s->wm_emitted = wm;
  return sl__forward_watermark(&s->op, wm);
}

int sl_source_idle(sl_source_ctx_t *s, bool idle) {
  if (idle == s->own_idle)
    return 0;
  s->own_idle = idle;
  return sl__forward_idle(&s->op, idle);
}

/* Forwards the subtask's generated watermark when it advanced, publishing
 * it for readers on other threads. */
static int advance_wm(src_t *s, int64_t wm) {
  if (wm <= s->wm_emitted)
    return 0;
  s->wm_emitted = wm;
  atomic_store_explicit(&s->op.wm_pub, wm, memory_order_relaxed);
  return sl__forward_watermark(&s->op, wm);
}

/* Ends a source subtask. A natural end of input and a stop with drain
 * advance the watermark to the maximum; a plain stop does not, so it
 * fires no window. Only a natural end is recorded as the input's end. */
int sl__source_finish(src_t *s, bool natural, bool drain) {
  s->done = true;
  s->finished = natural;
  s->op.ended = true;
  int rc = natural || drain ? advance_wm(s, SL_WATERMARK_MAX) : 0;
  return rc ? rc : sl__forward_end(&s->op);
}

/* Polls one source subtask once. Returns 1 when it did work, 0 when it had
 * nothing, or a negative error. */
int sl__source_poll(sl__worker *w, src_t *s) {
  sl_job_t *job = w->job;
  sl__node *n = s->op.node;
  int stop = atomic_load_explicit(&job->stop, memory_order_relaxed);
  if (stop) {
    int rc = sl__source_finish(s, false, stop == SL__STOP_DRAIN);
    return rc ? rc : 1;
  }
  if (s->rt_pending) {
    /* Restored event time goes out before any record: records read after
     * a restore meet the watermark they met in the run that did not fail.
     * Whether the input ended is the source's to say from its restored
     * position (a bounded source may have been given more input). */
    s->rt_pending = false;
    if (!s->own_wm) {
      int e = s->wmgen.idle ? sl__forward_idle(&s->op, true) : 0;
      if (e || (e = advance_wm(s, sl__wmgen_current(&s->wmgen))))
        return e;
    }
  }
  uint64_t before = sl__counter_get(&s->op.out);
  /* Scratch memory the steps' functions take lasts until the poll's
   * records have gone on. */
  sl_arena_mark_t mark = sl_op_arena_mark(&s->op);
  s->in_poll = true;
  s->append = s->batching && !n->wm_spec.ts_fn;
  int rc = n->src_ops->poll(s, n->src_opaque), rc2;
  s->in_poll = s->append = false;
  /* What the poll appended goes out now (a failed poll fails the job:
   * nothing more is delivered). */
  if (rc >= 0 && s->b_n && (rc2 = sl__source_flush(s)))
    rc = rc2;
  count_steps(s);
  sl_op_arena_release(&s->op, mark);
  if (rc < 0) {
    if (!sl__job_failing(job))
      sl_op_fail(&s->op, rc, "source poll failed: %s", sl_strerror(rc));
    return job->err;
  }
  bool emitted = sl__counter_get(&s->op.out) != before;
  if (s->own_wm) {
    /* The source forwarded its own watermarks and idleness. */
  } else if (emitted || rc == SL_POLL_EMPTY || s->wmgen.kind == SL_WM_CUSTOM) {
    int64_t now = sl_clock_now(job->clock);
    if (emitted)
      sl__wmgen_touch(&s->wmgen, now);
    sl__wmgen_periodic(&s->wmgen, now);
    if (((!emitted && rc == SL_POLL_EMPTY) || s->wmgen.mark_idle) &&
        sl__wmgen_check_idle(&s->wmgen, now) &&
        (rc2 = sl__forward_idle(&s->op, true)))
      return rc2;
  }
  if (!s->own_wm && (rc2 = advance_wm(s, sl__wmgen_current(&s->wmgen))))
    return rc2;
  if (rc == SL_POLL_END) {
    int e = sl__source_finish(s, true, false);
    return e ? e : 1;
  }
  return emitted;
}
