/* SPDX-License-Identifier: Apache-2.0 */
/* Stateless operators: map, filter, flat_map, union and the user-function
 * sink. Each wraps one user callback; a failing callback goes through the
 * job's error policy. */
#include <stdio.h>
#include <stdlib.h>

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

static int map_process(sl_ctx_t *op, int port, const sl_record_t *in) {
  (void)port;
  const fn_arg *a = sl_op_arg(op);
  sl_record_t out = *in;
  sl_arena_mark_t m = sl_op_arena_mark(op);
  int rc = ((sl_map_fn)a->fn)(op, in, &out, a->opaque);
  rc = rc ? sl_op_user_error(op, in, rc) : sl_emit(op, &out);
  sl_op_arena_release(op, m);
  return rc;
}

static int filter_process(sl_ctx_t *op, int port, const sl_record_t *in) {
  (void)port;
  const fn_arg *a = sl_op_arg(op);
  int rc = ((sl_filter_fn)a->fn)(op, in, a->opaque);
  if (rc > 0)
    return sl_emit(op, in);
  return rc == 0 ? 0 : sl_op_user_error(op, in, rc);
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

static const sl_operator_ops_t map_ops = {
    .kind = "map", .process = map_process, .free_arg = free};
static const sl_operator_ops_t filter_ops = {
    .kind = "filter", .process = filter_process, .free_arg = free};
static const sl_operator_ops_t flat_map_ops = {
    .kind = "flat_map", .process = record_fn_process, .free_arg = free};
static const sl_operator_ops_t sink_ops = {
    .kind = "sink", .process = record_fn_process, .free_arg = free};

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
