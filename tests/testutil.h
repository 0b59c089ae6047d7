/* SPDX-License-Identifier: Apache-2.0 */
/* Shared helpers for the Check suites: a thread-safe collecting sink, an
 * operator that logs the records and watermarks it sees in order, and
 * small record builders. Header-only so each suite stays one file. */
#ifndef SL_TESTUTIL_H
#define SL_TESTUTIL_H

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "operator.h"
#include "sluice.h"

/* Room for one more element in a growable array (test data only). */
static inline void *tu_grow(void *arr, size_t n, size_t *cap, size_t elem) {
  if (n < *cap)
    return arr;
  *cap = *cap ? *cap * 2 : 256;
  arr = realloc(arr, *cap * elem);
  ck_assert_ptr_nonnull(arr);
  return arr;
}

/* ---- Collecting sink ---------------------------------------------------- */

typedef struct tu_rec {
  char key[64];
  char value[256];
  int64_t ts;
  int worker;
} tu_rec;

typedef struct tu_sink {
  pthread_mutex_t lock;
  tu_rec *recs;
  size_t n, cap;
} tu_sink;

static inline void tu_sink_init(tu_sink *s) {
  memset(s, 0, sizeof(*s));
  pthread_mutex_init(&s->lock, NULL);
}

static inline void tu_sink_free(tu_sink *s) {
  free(s->recs);
  pthread_mutex_destroy(&s->lock);
}

static inline int tu_sink_fn(sl_ctx_t *ctx, const sl_record_t *rec,
                             void *opaque) {
  tu_sink *s = opaque;
  pthread_mutex_lock(&s->lock);
  s->recs = tu_grow(s->recs, s->n, &s->cap, sizeof(*s->recs));
  tu_rec *r = &s->recs[s->n++];
  size_t kl = rec->key_len < 63 ? rec->key_len : 63;
  size_t vl = rec->value_len < 255 ? rec->value_len : 255;
  if (kl)
    memcpy(r->key, rec->key, kl);
  r->key[kl] = '\0';
  if (vl)
    memcpy(r->value, rec->value, vl);
  r->value[vl] = '\0';
  r->ts = rec->ts;
  r->worker = sl_ctx_worker(ctx);
  pthread_mutex_unlock(&s->lock);
  return 0;
}

/* ---- Event log operator: records and watermarks in arrival order ------- */

enum { TU_REC = 'R', TU_WM = 'W', TU_END = 'E' };
typedef struct tu_event {
  char kind;
  int64_t ts;
  char value[32];
} tu_event;

typedef struct tu_log {
  pthread_mutex_t lock;
  tu_event *ev;
  size_t n, cap;
} tu_log;

static inline void tu_log_init(tu_log *l) {
  memset(l, 0, sizeof(*l));
  pthread_mutex_init(&l->lock, NULL);
}

static inline void tu_log_free(tu_log *l) {
  free(l->ev);
  pthread_mutex_destroy(&l->lock);
}

static inline void tu_log_add(tu_log *l, char kind, int64_t ts, const void *v,
                              size_t vlen) {
  pthread_mutex_lock(&l->lock);
  l->ev = tu_grow(l->ev, l->n, &l->cap, sizeof(*l->ev));
  tu_event *e = &l->ev[l->n++];
  e->kind = kind;
  e->ts = ts;
  size_t n = vlen < 31 ? vlen : 31;
  if (v)
    memcpy(e->value, v, n);
  e->value[v ? n : 0] = '\0';
  pthread_mutex_unlock(&l->lock);
}

static inline int tu_log_process(sl_ctx_t *op, int port,
                                 const sl_record_t *rec) {
  (void)port;
  tu_log_add(sl_op_arg(op), TU_REC, rec->ts, rec->value, rec->value_len);
  return sl_emit(op, rec);
}
static inline int tu_log_wm(sl_ctx_t *op, int64_t wm) {
  tu_log_add(sl_op_arg(op), TU_WM, wm, NULL, 0);
  return 0;
}
static inline int tu_log_end(sl_ctx_t *op) {
  tu_log_add(sl_op_arg(op), TU_END, 0, NULL, 0);
  return 0;
}
static const sl_operator_ops_t tu_log_ops = {.kind = "log",
                                             .process = tu_log_process,
                                             .on_watermark = tu_log_wm,
                                             .on_end = tu_log_end};

static inline sl_stream_t *tu_log_op(sl_stream_t *in, const char *uid,
                                     tu_log *log) {
  return sl_op_add(&in, 1, uid, &tu_log_ops, log, false);
}

/* ---- Misc --------------------------------------------------------------- */

/* A job of parallelism par with extra settings (key, value, ..., NULL);
 * a setting that is refused fails the test. */
static inline sl_job_t *tu_job_kv(int par, const char *const *kv) {
  char err[256], p[16];
  sl_conf_t *c = sl_conf_new();
  snprintf(p, sizeof(p), "%d", par);
  ck_assert_int_eq(sl_conf_set(c, "parallelism", p, err, sizeof(err)), SL_OK);
  for (; kv && kv[0]; kv += 2)
    ck_assert_msg(sl_conf_set(c, kv[0], kv[1], err, sizeof(err)) == SL_OK, "%s",
                  err);
  sl_job_t *job = sl_job_new("test", c, err, sizeof(err));
  ck_assert_msg(job != NULL, "sl_job_new: %s", err);
  return job;
}

static inline sl_job_t *tu_job(int par, const char *policy) {
  const char *kv[] = {"error.policy", policy, NULL};
  return tu_job_kv(par, policy ? kv : NULL);
}

/* Record bytes are not NUL-terminated: parse numbers within their length. */
static inline long long tu_num(const void *p, size_t len) {
  char b[32];
  size_t n = len < 31 ? len : 31;
  memcpy(b, p, n);
  b[n] = '\0';
  return strtoll(b, NULL, 10);
}

static inline int tu_discard(sl_ctx_t *ctx, const sl_record_t *rec,
                             void *opaque) {
  (void)ctx;
  (void)rec;
  (void)opaque;
  return 0;
}

#endif
