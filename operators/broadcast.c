/* SPDX-License-Identifier: Apache-2.0 */
/* The keyed broadcast process operator (Flink's
 * KeyedBroadcastProcessFunction): a keyed input with keyed state and
 * timers, as in a keyed process function, and a broadcast input whose
 * records every instance sees and keeps in broadcast state. Broadcast
 * state is writable only while a broadcast record is processed, so every
 * instance holds the same; the keyed side reads it. */
#include <stdlib.h>
#include <string.h>

#include "operator.h"
#include "runtime/keyed.h"
#include "state/keyed.h"
#include "state/state.h"
#include "time/timers.h"

typedef struct bproc_arg {
  sl_broadcast_process_ops_t ops;
  void *opaque;
} bproc_arg;

typedef struct bproc {
  sl__keyed k; /* first: bproc_element gets the bproc from its context */
  /* The context of the broadcast side: no key, no state, no timers (they
   * all answer SL_ERR_STATE), only the record's timestamp. */
  sl__keyed none;
  const bproc_arg *a;
  sl__bstates *bs;
  bool in_broadcast; /* on_broadcast is running */
} bproc;

static int bproc_open(sl_ctx_t *op) {
  const bproc_arg *a = sl_op_arg(op);
  bproc *p = calloc(1, sizeof(*p));
  if (!p)
    return SL_ERR_NOMEM;
  p->a = a;
  p->k.op = p->none.op = op;
  sl_op_set_data(op, p);
  sl_op_set_keyed(op, &p->k);
  int rc = sl__timers_new(&p->k.timers);
  if (!rc)
    rc = sl__kstate_open(&p->k);
  if (!rc && !(p->bs = sl__bstates_new()))
    rc = SL_ERR_NOMEM;
  if (rc)
    return sl_op_fail(op, rc, "cannot create state: %s", sl_strerror(rc));
  sl_op_set_bcast(op, p->bs);
  if (a->ops.open && (rc = a->ops.open(op, a->opaque)))
    return sl_op_fail(op, rc < 0 ? rc : SL_ERR_USER, "open() returned %d", rc);
  return 0;
}

static void bproc_close(sl_ctx_t *op) {
  bproc *p = sl_op_data(op);
  if (!p)
    return;
  sl_op_set_keyed(op, &p->k);
  if (p->a->ops.close)
    p->a->ops.close(op, p->a->opaque);
  sl__kstate_close(&p->k);
  sl__timers_free(p->k.timers);
  sl_op_set_keyed(op, NULL);
  sl_op_set_bcast(op, NULL);
  sl__bstates_free(p->bs);
  sl_op_set_data(op, NULL);
  free(p);
}

static int bproc_element(sl__keyed *k, int port, const sl_keyed_rec_t *r) {
  (void)port;
  bproc *p = (bproc *)k;
  sl_ctx_t *op = k->op;
  sl_op_set_out_ts(op, true, r->rec.ts);
  int rc = p->a->ops.on_element(op, &r->rec, p->a->opaque);
  return rc ? sl_op_user_error(op, &r->rec, rc) : 0;
}

/* A broadcast record: the only time broadcast state may change. */
static int bproc_broadcast(bproc *p, const sl_record_t *rec) {
  sl_ctx_t *op = p->k.op;
  p->none.ts = rec->ts;
  sl_op_set_keyed(op, &p->none);
  sl__bstates_set_writable(p->bs, true);
  p->in_broadcast = true;
  sl_op_set_out_ts(op, true, rec->ts);
  sl_arena_mark_t m = sl_op_arena_mark(op);
  int rc = p->a->ops.on_broadcast(op, rec, p->a->opaque);
  sl_op_arena_release(op, m);
  p->in_broadcast = false;
  sl__bstates_set_writable(p->bs, false);
  sl_op_set_keyed(op, &p->k);
  return rc ? sl_op_user_error(op, rec, rc) : 0;
}

static int bproc_process(sl_ctx_t *op, int port, const sl_keyed_rec_t *recs,
                         size_t n) {
  bproc *p = sl_op_data(op);
  if (port == 0)
    return sl__keyed_batch(&p->k, port, recs, n, sl__keyed_prefetch,
                           bproc_element);
  for (size_t i = 0; i < n; i++) {
    int rc = bproc_broadcast(p, &recs[i].rec);
    if (rc)
      return rc;
  }
  return 0;
}

static int bproc_timer(sl__keyed *k, sl_time_domain domain, int64_t ts) {
  bproc *p = sl_op_data(k->op);
  return sl__keyed_user_timer(k, domain, ts, p->a->ops.on_timer, p->a->opaque);
}

static int bproc_watermark(sl_ctx_t *op, int64_t wm) {
  bproc *p = sl_op_data(op);
  return sl__keyed_fire(&p->k, SL_EVENT_TIME, wm, bproc_timer);
}

static int bproc_time(sl_ctx_t *op, int64_t now) {
  bproc *p = sl_op_data(op);
  return sl__keyed_fire(&p->k, SL_PROC_TIME, now, bproc_timer);
}

static const sl_operator_ops_t bproc_ops = {
    .kind = "broadcast_process",
    .keyed = true,
    .broadcast_in = true,
    .open = bproc_open,
    .process_keyed = bproc_process,
    .on_watermark = bproc_watermark,
    .on_proc_time = bproc_time,
    .close = bproc_close,
    .free_arg = free,
};

sl_stream_t *sl_broadcast_process(sl_stream_t *keyed, sl_stream_t *bcast,
                                  const char *uid,
                                  const sl_broadcast_process_ops_t *ops,
                                  void *opaque) {
  if (!keyed || !bcast)
    return NULL;
  sl_job_t *job = sl_stream_job(keyed);
  if (!ops || !ops->on_element || !ops->on_broadcast) {
    sl_job_build_error(job, SL_ERR_INVAL,
                       "broadcast_process \"%s\": on_element and "
                       "on_broadcast are required",
                       uid ? uid : "");
    return NULL;
  }
  bproc_arg *a = malloc(sizeof(*a));
  if (!a) {
    sl_job_build_error(job, SL_ERR_NOMEM, "broadcast_process: out of memory");
    return NULL;
  }
  a->ops = *ops;
  a->opaque = opaque;
  sl_stream_t *in[2] = {keyed, bcast};
  return sl_op_add(in, 2, uid, &bproc_ops, a, false);
}

/* ---- Broadcast state from a context ------------------------------------- */

sl_bstate_t *sl_bstate_register(sl_ctx_t *ctx, const char *name) {
  sl__bstates *bs = ctx ? sl_op_bcast(ctx) : NULL;
  if (!bs) {
    if (ctx)
      sl_op_fail(ctx, SL_ERR_STATE,
                 "broadcast state needs a broadcast process function "
                 "(sl_broadcast_process)");
    return NULL;
  }
  if (!name || !*name) {
    sl_op_fail(ctx, SL_ERR_INVAL, "broadcast state: a name is required");
    return NULL;
  }
  sl_bstate_t *st;
  int rc = sl__bstates_find(bs, name, strlen(name), true, &st);
  if (rc) {
    sl_op_fail(ctx, rc, "broadcast state \"%s\": %s", name, sl_strerror(rc));
    return NULL;
  }
  return st;
}

/* The keys applyToKeyedState visits, copied out of the backend before the
 * first visit so the visits may change the state freely. */
typedef struct key_ref {
  uint32_t kg;
  size_t off, len;
} key_ref;

typedef struct key_list {
  uint32_t state, kg;
  key_ref *r;
  size_t n, cap;
  char *bytes;
  size_t used, bytes_cap;
} key_list;

static int collect_key(uint32_t state, const void *key, size_t key_len,
                       const void *ns, size_t ns_len, const void *mk,
                       size_t mk_len, const void *val, size_t len,
                       void *opaque) {
  (void)ns, (void)ns_len, (void)mk, (void)mk_len, (void)val, (void)len;
  key_list *l = opaque;
  if (state != l->state)
    return 0;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    key_ref *r = realloc(l->r, cap * sizeof(*r));
    if (!r)
      return SL_ERR_NOMEM;
    l->r = r;
    l->cap = cap;
  }
  if (l->bytes_cap - l->used < key_len) {
    size_t cap = l->bytes_cap ? l->bytes_cap * 2 : 1024;
    while (cap - l->used < key_len)
      cap *= 2;
    char *b = realloc(l->bytes, cap);
    if (!b)
      return SL_ERR_NOMEM;
    l->bytes = b;
    l->bytes_cap = cap;
  }
  if (key_len)
    memcpy(l->bytes + l->used, key, key_len);
  l->r[l->n++] = (key_ref){l->kg, l->used, key_len};
  l->used += key_len;
  return 0;
}

static int key_cmp(const void *a, const void *b, void *bytes) {
  const key_ref *x = a, *y = b;
  const char *sort_bytes = bytes;
  if (x->kg != y->kg)
    return x->kg < y->kg ? -1 : 1;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = n ? memcmp(sort_bytes + x->off, sort_bytes + y->off, n) : 0;
  if (c)
    return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

int sl_bstate_apply_keyed(sl_ctx_t *ctx, sl_state_t *st, sl_keyed_visit_fn fn,
                          void *opaque) {
  bproc *p = ctx && sl_op_bcast(ctx) ? sl_op_data(ctx) : NULL;
  if (!p || !p->in_broadcast || !p->k.state)
    return SL_ERR_STATE;
  if (!st || !fn)
    return SL_ERR_INVAL;
  sl__backend *be = sl__kstate_backend(p->k.state);
  key_list l = {.state = sl__state_id(st)};
  int rc = 0;
  for (uint32_t kg = be->kg_lo; !rc && kg < be->kg_hi; kg++) {
    l.kg = kg;
    rc = be->ops->kg_scan(be, kg, collect_key, &l);
  }
  if (!rc && l.n) {
    qsort_r(l.r, l.n, sizeof(*l.r), key_cmp, l.bytes);
  }
  /* The keyed context, without timers (Flink's KeyedStateFunction sees
   * the key and its state only). */
  sl__keyed *k = &p->k;
  struct sl__timers *timers = k->timers;
  k->timers = NULL;
  sl_op_set_keyed(ctx, k);
  for (size_t i = 0; !rc && i < l.n; i++) {
    /* A map state has one entry per map key: visit each key once. */
    if (i && key_cmp(&l.r[i - 1], &l.r[i], l.bytes) == 0)
      continue;
    k->key = l.bytes + l.r[i].off;
    k->key_len = l.r[i].len;
    k->hash = sl__hash64(k->key, k->key_len);
    k->kg = l.r[i].kg;
    k->ns = NULL;
    k->ns_len = 0;
    k->ts = p->none.ts;
    rc = fn(ctx, k->key, k->key_len, opaque);
  }
  k->timers = timers;
  sl_op_set_keyed(ctx, &p->none);
  free(l.r);
  free(l.bytes);
  return rc;
}
