/* SPDX-License-Identifier: Apache-2.0 */
/* Stateless operators: map, filter, flat_map, union and the user-function
 * sink. Each wraps one user callback; a failing callback goes through the
 * job's error policy. */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/util.h"

#include "operator.h"

typedef struct fn_arg {
  void *fn;
  void *opaque;
} fn_arg;

static fn_arg *fn_arg_new(sl_stream_t *in, void *fn, void *opaque,
                          const char *what) {
  if (!in)
    return NULL;
  if (!fn) {
    sl_job_build_error(sl_stream_job(in), SL_ERR_INVAL,
                       "%s: the function must not be NULL", what);
    return NULL;
  }
  fn_arg *a = malloc(sizeof(*a));
  if (!a) {
    sl_job_build_error(sl_stream_job(in), SL_ERR_NOMEM, "%s: out of memory",
                       what);
    return NULL;
  }
  a->fn = fn;
  a->opaque = opaque;
  return a;
}

/* The steps of map, filter and the sink (lib/operator.h): their user
 * function, which a source's emit calls straight from its loop, and
 * which their process runs record by record (step_process). */
static void fn_step(sl_ctx_t *op, sl_step_t *st, sl_step_kind_t kind) {
  const fn_arg *a = sl_op_arg(op);
  *st = (sl_step_t){kind, a->fn, a->opaque};
}

static void map_step(sl_ctx_t *op, sl_step_t *st) {
  fn_step(op, st, SL_STEP_MAP);
}

static void filter_step(sl_ctx_t *op, sl_step_t *st) {
  fn_step(op, st, SL_STEP_FILTER);
}

static void sink_step(sl_ctx_t *op, sl_step_t *st) {
  fn_step(op, st, SL_STEP_CONSUME);
}

/* One record through a step, its output handed on at once and the
 * function's scratch memory released after. */
static int step_process(sl_ctx_t *op, const sl_record_t *in,
                        sl_step_kind_t kind) {
  sl_step_t st;
  sl_record_t out;
  fn_step(op, &st, kind);
  sl_arena_mark_t m = sl_op_arena_mark(op);
  int rc = sl_op_step_run(&st, op, in, &out);
  if (rc == SL_STEP_OUT || rc == SL_STEP_IN)
    rc = sl_emit(op, rc == SL_STEP_OUT ? &out : in);
  sl_op_arena_release(op, m);
  return rc;
}

static int map_process(sl_ctx_t *op, int port, const sl_record_t *in) {
  (void)port;
  return step_process(op, in, SL_STEP_MAP);
}

static int filter_process(sl_ctx_t *op, int port, const sl_record_t *in) {
  (void)port;
  return step_process(op, in, SL_STEP_FILTER);
}

/* A map's output for a batch: up to MAP_OUT records at a time, their
 * bytes where the function pointed them when that is inside the input
 * record (borrowed until the batch call returns), else copied here, since
 * a map function's own memory need only last until its next call. */
enum { MAP_OUT = 256, MAP_BYTES = 16 * 1024 };
typedef struct map_out {
  sl_record_t out[MAP_OUT];
  sl_buf_t bytes;
} map_out;

static int map_open(sl_ctx_t *op) {
  map_out *o = calloc(1, sizeof(*o));
  if (!o || sl__buf_reserve(&o->bytes, MAP_BYTES)) {
    free(o);
    return sl_op_fail(op, SL_ERR_NOMEM, "out of memory");
  }
  sl_op_set_data(op, o);
  return 0;
}

static void map_close(sl_ctx_t *op) {
  map_out *o = sl_op_data(op);
  if (o)
    sl__buf_free(&o->bytes);
  free(o);
  sl_op_set_data(op, NULL);
}

static inline bool within(const void *p, size_t len, const void *base,
                          size_t base_len) {
  uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
  return base && a >= b && a + len <= b + base_len;
}

/* Where an output's bytes can stay: nowhere new, or inside the input. */
static inline bool borrowed(const void *p, size_t len, const sl_record_t *in) {
  return !len || within(p, len, in->value, in->value_len) ||
         within(p, len, in->key, in->key_len);
}

static int map_flush(sl_ctx_t *op, map_out *o, size_t *m) {
  int rc = sl_op_emit_batch(op, o->out, *m);
  *m = 0;
  o->bytes.len = 0;
  return rc;
}

/* Copies the bytes a map function pointed outside its input into the
 * output buffer; the records before this one go downstream first when it
 * is full. */
static int map_keep(sl_ctx_t *op, map_out *o, size_t *m,
                    const sl_record_t *in) {
  sl_record_t *out = &o->out[*m];
  bool kb = borrowed(out->key, out->key_len, in);
  bool vb = borrowed(out->value, out->value_len, in);
  size_t need = (kb ? 0 : out->key_len) + (vb ? 0 : out->value_len);
  sl_buf_t *b = &o->bytes;
  if (b->cap - b->len < need) {
    sl_record_t cur = *out; /* its bytes are not in the buffer yet */
    int rc = map_flush(op, o, m);
    out = &o->out[0];
    *out = cur;
    if (rc)
      return rc;
    if (sl__buf_reserve(b, need))
      return sl_op_fail(op, SL_ERR_NOMEM, "out of memory");
  }
  if (!kb) {
    memcpy(b->data + b->len, out->key, out->key_len);
    out->key = b->data + b->len;
    b->len += out->key_len;
  }
  if (!vb) {
    memcpy(b->data + b->len, out->value, out->value_len);
    out->value = b->data + b->len;
    b->len += out->value_len;
  }
  return 0;
}

static int map_batch(sl_ctx_t *op, int port, const sl_record_t *in, size_t n) {
  (void)port;
  const fn_arg *a = sl_op_arg(op);
  sl_map_fn fn = (sl_map_fn)a->fn;
  map_out *o = sl_op_data(op);
  size_t m = 0;
  int rc = 0;
  sl_arena_mark_t mark = sl_op_arena_mark(op);
  for (size_t i = 0; i < n && !rc; i++) {
    sl_record_t *out = &o->out[m];
    *out = in[i];
    rc = fn(op, &in[i], out, a->opaque);
    if (SL__UNLIKELY(rc)) {
      /* The outputs before it go first, as record by record they would
       * have. */
      int e = map_flush(op, o, &m);
      rc = e ? e : sl_op_user_error(op, &in[i], rc);
      continue;
    }
    /* The usual map leaves the bytes where they were. */
    bool same = out->key == in[i].key && out->value == in[i].value &&
                out->key_len <= in[i].key_len &&
                out->value_len <= in[i].value_len;
    if (SL__UNLIKELY(!same) &&
        (!borrowed(out->key, out->key_len, &in[i]) ||
         !borrowed(out->value, out->value_len, &in[i])) &&
        (rc = map_keep(op, o, &m, &in[i])))
      break;
    if (++m == MAP_OUT)
      rc = map_flush(op, o, &m);
  }
  if (!rc)
    rc = map_flush(op, o, &m);
  sl_op_arena_release(op, mark);
  return rc;
}

/* Kept records go on as runs of the input batch, without a copy. */
static int filter_batch(sl_ctx_t *op, int port, const sl_record_t *in,
                        size_t n) {
  (void)port;
  const fn_arg *a = sl_op_arg(op);
  sl_filter_fn fn = (sl_filter_fn)a->fn;
  size_t run = 0; /* first record of the current run of kept ones */
  for (size_t i = 0; i < n; i++) {
    int rc = fn(op, &in[i], a->opaque);
    if (SL__LIKELY(rc > 0))
      continue;
    int e = sl_op_emit_batch(op, &in[run], i - run);
    run = i + 1;
    if (e)
      return e;
    if (rc < 0 && (rc = sl_op_user_error(op, &in[i], rc)))
      return rc;
  }
  return sl_op_emit_batch(op, &in[run], n - run);
}

/* flat_map and sink share a body: the callback emits (or not) itself. */
static int record_fn_process(sl_ctx_t *op, int port, const sl_record_t *in) {
  (void)port;
  const fn_arg *a = sl_op_arg(op);
  sl_arena_mark_t m = sl_op_arena_mark(op);
  int rc = ((sl_record_fn)a->fn)(op, in, a->opaque);
  sl_op_arena_release(op, m);
  return rc ? sl_op_user_error(op, in, rc) : 0;
}

/* A sink's batch: one scratch-memory mark for the batch. */
static int sink_batch(sl_ctx_t *op, int port, const sl_record_t *in, size_t n) {
  (void)port;
  const fn_arg *a = sl_op_arg(op);
  sl_record_fn fn = (sl_record_fn)a->fn;
  sl_arena_mark_t m = sl_op_arena_mark(op);
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++)
    if (SL__UNLIKELY(rc = fn(op, &in[i], a->opaque)))
      rc = sl_op_user_error(op, &in[i], rc);
  sl_op_arena_release(op, m);
  return rc;
}

static const sl_operator_ops_t map_ops = {.kind = "map",
                                          .open = map_open,
                                          .process = map_process,
                                          .process_batch = map_batch,
                                          .step = map_step,
                                          .close = map_close,
                                          .free_arg = free};
static const sl_operator_ops_t filter_ops = {.kind = "filter",
                                             .process = filter_process,
                                             .process_batch = filter_batch,
                                             .step = filter_step,
                                             .free_arg = free};
static const sl_operator_ops_t flat_map_ops = {
    .kind = "flat_map", .process = record_fn_process, .free_arg = free};
static const sl_operator_ops_t sink_ops = {.kind = "sink",
                                           .process = record_fn_process,
                                           .process_batch = sink_batch,
                                           .step = sink_step,
                                           .free_arg = free};

static sl_stream_t *add_fn(sl_stream_t *in, const char *uid,
                           const sl_operator_ops_t *ops, void *fn, void *opaque,
                           bool sink) {
  fn_arg *a = fn_arg_new(in, fn, opaque, ops->kind);
  if (!a)
    return NULL;
  return sl_op_add(&in, 1, uid, ops, a, sink);
}

sl_stream_t *sl_map(sl_stream_t *in, const char *uid, sl_map_fn fn,
                    void *opaque) {
  return add_fn(in, uid, &map_ops, (void *)fn, opaque, false);
}

sl_stream_t *sl_filter(sl_stream_t *in, const char *uid, sl_filter_fn fn,
                       void *opaque) {
  return add_fn(in, uid, &filter_ops, (void *)fn, opaque, false);
}

sl_stream_t *sl_flat_map(sl_stream_t *in, const char *uid, sl_record_fn fn,
                         void *opaque) {
  return add_fn(in, uid, &flat_map_ops, (void *)fn, opaque, false);
}

int sl_sink(sl_stream_t *in, const char *uid, sl_record_fn fn, void *opaque) {
  if (!in)
    return SL_ERR_INVAL;
  return add_fn(in, uid, &sink_ops, (void *)fn, opaque, true)
             ? SL_OK
             : sl_job_build_err(sl_stream_job(in));
}

static int union_process(sl_ctx_t *op, int port, const sl_record_t *in) {
  (void)port;
  return sl_emit(op, in);
}

static const sl_operator_ops_t union_ops = {.kind = "union",
                                            .process = union_process};

sl_stream_t *sl_union(sl_stream_t *const *streams, size_t n, const char *uid) {
  if (!streams || n == 0 || !streams[0])
    return NULL;
  sl_job_t *job = sl_stream_job(streams[0]);
  if (n < 2) {
    sl_job_build_error(job, SL_ERR_INVAL,
                       "union \"%s\": needs at least 2 streams",
                       uid ? uid : "");
    return NULL;
  }
  return sl_op_add(streams, n, uid, &union_ops, NULL, false);
}
