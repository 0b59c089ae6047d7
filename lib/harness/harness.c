/* SPDX-License-Identifier: Apache-2.0 */
/* The operator test harness: a real job of parallelism 1 (sources, key_by,
 * the operator, capturing sinks) whose single worker is driven step by step
 * from the calling thread, so tests exercise the production operator,
 * state and timer code with no threads and a manual clock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/coord.h"
#include "runtime/barrier.h"
#include "runtime/runtime.h"

typedef struct cap_rec {
  sl_record_t r;
} cap_rec;

typedef struct capture {
  const char *tag; /* NULL: main output */
  cap_rec *recs;
  size_t n, cap;
  int64_t wm;
} capture;

struct sl_harness {
  sl_job_t *job;
  sl_clock_t *clock;
  sl__node *inputs[2];
  size_t n_inputs;
  capture *caps;
  size_t n_caps;
  char **tags;
};

static int cap_process(sl_ctx_t *op, int port, const sl_record_t *rec) {
  (void)port;
  capture *c = sl_op_arg(op);
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 64;
    cap_rec *r = realloc(c->recs, cap * sizeof(*r));
    if (!r)
      return sl_op_fail(op, SL_ERR_NOMEM, "out of memory");
    c->recs = r;
    c->cap = cap;
  }
  void *k = malloc(rec->key_len + 1), *v = malloc(rec->value_len + 1);
  if (!k || !v) {
    free(k);
    free(v);
    return sl_op_fail(op, SL_ERR_NOMEM, "out of memory");
  }
  /* NUL-terminated copies so tests can compare them as strings. */
  if (rec->key_len)
    memcpy(k, rec->key, rec->key_len);
  ((char *)k)[rec->key_len] = '\0';
  if (rec->value_len)
    memcpy(v, rec->value, rec->value_len);
  ((char *)v)[rec->value_len] = '\0';
  c->recs[c->n++].r =
      (sl_record_t){k, rec->key_len, v, rec->value_len, rec->ts};
  return 0;
}

static int cap_watermark(sl_ctx_t *op, int64_t wm) {
  capture *c = sl_op_arg(op);
  c->wm = wm;
  return 0;
}

static const sl_operator_ops_t cap_ops = {.kind = "harness_capture",
                                          .process = cap_process,
                                          .on_watermark = cap_watermark};

static int never_poll(sl_source_ctx_t *ctx, void *opaque) {
  (void)ctx;
  (void)opaque;
  return SL_POLL_EMPTY;
}
static const sl_source_ops_t harness_src = {.poll = never_poll};

static void cap_clear(capture *c) {
  for (size_t j = 0; j < c->n; j++) {
    free((void *)c->recs[j].r.key);
    free((void *)c->recs[j].r.value);
  }
  c->n = 0;
}

static void caps_clear(sl_harness_t *h) {
  for (size_t i = 0; i < h->n_caps; i++)
    cap_clear(&h->caps[i]);
}

void sl_harness_destroy(sl_harness_t *h) {
  if (!h)
    return;
  if (h->job && h->job->workers && h->job->workers[0].inst)
    sl__worker_close(&h->job->workers[0]);
  sl_job_destroy(h->job);
  sl_clock_destroy(h->clock);
  caps_clear(h);
  for (size_t i = 0; i < h->n_caps; i++)
    free(h->caps[i].recs);
  free(h->caps);
  if (h->tags)
    for (char **t = h->tags; *t; t++)
      free(*t);
  free(h->tags);
  free(h);
}

/* Undoes a half-built harness. The caller's conf goes back to the caller
 * (the job must not free it); one the harness made itself goes with the
 * job. */
static sl_harness_t *fail(sl_harness_t *h, bool callers_conf, char *err,
                          size_t errlen, const char *why) {
  sl__errf(err, errlen, "harness: %s", why);
  if (h && h->job && callers_conf)
    h->job->conf = NULL;
  sl_harness_destroy(h);
  return NULL;
}

sl_harness_t *sl_harness_new_opts(sl_conf_t *conf, const sl_harness_opts_t *o,
                                  char *err, size_t errlen) {
  if (!o || o->n_inputs < 1 || o->n_inputs > 2 || !o->build)
    return fail(NULL, true, err, errlen,
                "needs 1 or 2 inputs and a build function");
  size_t n_inputs = o->n_inputs;
  bool keyed = o->keyed;
  const char *const *side_tags = o->side_tags;
  const void *snap = o->snapshot;
  size_t snap_len = o->snapshot_len;
  bool callers = conf != NULL;
  char e[512];
  if (!conf && !(conf = sl_conf_new()))
    return fail(NULL, true, err, errlen, "out of memory");
  if (sl_conf_set(conf, "parallelism", "1", e, sizeof(e)) ||
      (o->state_dir &&
       sl_conf_set(conf, "state.dir", o->state_dir, e, sizeof(e)))) {
    if (!callers)
      sl_conf_destroy(conf);
    return fail(NULL, true, err, errlen, e);
  }
  sl_harness_t *h = calloc(1, sizeof(*h));
  if (!h || !(h->job = sl_job_new(o->job_name ? o->job_name : "harness", conf,
                                  e, sizeof(e)))) {
    free(h);
    if (!callers)
      sl_conf_destroy(conf);
    return fail(NULL, true, err, errlen, h ? e : "out of memory");
  }
  sl_job_t *job = h->job;
  size_t ntags = 0;
  while (side_tags && side_tags[ntags])
    ntags++;
  h->caps = calloc(ntags + 1, sizeof(*h->caps));
  h->tags = calloc(ntags + 1, sizeof(*h->tags));
  h->clock = sl_clock_new_manual(0);
  if (!h->caps || !h->tags || !h->clock)
    return fail(h, callers, err, errlen, "out of memory");
  sl_job_set_clock(job, h->clock);
  sl_stream_t *in[2];
  for (size_t i = 0; i < n_inputs; i++) {
    char uid[32];
    snprintf(uid, sizeof(uid), "harness.input%zu", i);
    in[i] = sl_source(job, uid, &harness_src, h);
    if (in[i])
      h->inputs[i] = in[i]->node;
    if (keyed)
      in[i] = sl_key_by(in[i], NULL, NULL);
  }
  h->n_inputs = n_inputs;
  sl_stream_t *out = o->build(in, n_inputs, o->opaque);
  if (!out || out->node->sink) {
    snprintf(e, sizeof(e), "building the operator failed: %s",
             sl_job_errmsg(job)[0] ? sl_job_errmsg(job)
                                   : "build returned no stream");
    return fail(h, callers, err, errlen, e);
  }
  h->caps[0].wm = SL_TS_MIN;
  sl_stream_t *s = out;
  sl_op_add(&s, 1, "harness.output", &cap_ops, &h->caps[0], true);
  for (size_t i = 0; i < ntags; i++) {
    h->tags[i] = sl__strdup(side_tags[i]);
    capture *c = &h->caps[i + 1];
    c->tag = h->tags[i];
    c->wm = SL_TS_MIN;
    char uid[64];
    snprintf(uid, sizeof(uid), "harness.side%zu", i);
    sl_stream_t *side = sl_side_output(out, side_tags[i]);
    sl_op_add(&side, 1, uid, &cap_ops, c, true);
  }
  h->n_caps = ntags + 1;
  int rc = sl__job_prepare(job);
  if (!rc && snap) {
    if ((rc = sl__ckpt_setup_image(job->ckpt, snap, snap_len, e, sizeof(e))))
      return fail(h, callers, err, errlen, e);
    rc = sl__restore_early(&job->workers[0]);
  }
  if (!rc)
    rc = sl__worker_open(&job->workers[0]);
  if (!rc && snap)
    rc = sl__restore_late(&job->workers[0]);
  if (rc)
    return fail(h, callers, err, errlen, sl_job_errmsg(job));
  return h;
}

sl_harness_t *sl_harness_new(sl_conf_t *conf, size_t n_inputs, bool keyed,
                             sl_harness_build_fn build, void *opaque,
                             const char *const *side_tags, char *err,
                             size_t errlen) {
  sl_harness_opts_t o = {.n_inputs = n_inputs,
                         .keyed = keyed,
                         .build = build,
                         .opaque = opaque,
                         .side_tags = side_tags};
  return sl_harness_new_opts(conf, &o, err, errlen);
}

sl_harness_t *sl_harness_new_restored(sl_conf_t *conf, size_t n_inputs,
                                      bool keyed, sl_harness_build_fn build,
                                      void *opaque,
                                      const char *const *side_tags,
                                      const void *snapshot, size_t len,
                                      char *err, size_t errlen) {
  if (!snapshot)
    return fail(NULL, true, err, errlen, "no snapshot given");
  sl_harness_opts_t o = {.n_inputs = n_inputs,
                         .keyed = keyed,
                         .build = build,
                         .opaque = opaque,
                         .side_tags = side_tags,
                         .snapshot = snapshot,
                         .snapshot_len = len};
  return sl_harness_new_opts(conf, &o, err, errlen);
}

int sl_harness_snapshot(sl_harness_t *h, void **data, size_t *len) {
  if (!h || !data || !len)
    return SL_ERR_INVAL;
  if (h->job->err)
    return h->job->err;
  char e[256];
  int rc =
      sl__barrier_snapshot_image(&h->job->workers[0], data, len, e, sizeof(e));
  if (rc)
    sl__job_fail(h->job, rc, "snapshot failed: %s", e);
  return rc;
}

typedef struct proc_build {
  const sl_process_ops_t *ops;
  void *opaque;
} proc_build;

static sl_stream_t *build_process(sl_stream_t *const *in, size_t n,
                                  void *opaque) {
  (void)n;
  proc_build *pb = opaque;
  return sl_process(in[0], "process", pb->ops, pb->opaque);
}

sl_harness_t *sl_harness_new_process(sl_conf_t *conf,
                                     const sl_process_ops_t *ops, void *opaque,
                                     const char *const *side_tags, char *err,
                                     size_t errlen) {
  proc_build pb = {ops, opaque};
  return sl_harness_new(conf, 1, true, build_process, &pb, side_tags, err,
                        errlen);
}

static struct sl_source_ctx *input_src(sl_harness_t *h, size_t input) {
  if (input >= h->n_inputs)
    return NULL;
  return (struct sl_source_ctx *)h->job->workers[0].inst[h->inputs[input]->id];
}

/* Every step reports the job's failure, the first one and every later. */
static int step_result(sl_harness_t *h, int rc) {
  if (sl__job_failing(h->job))
    return h->job->err;
  return rc;
}

int sl_harness_push(sl_harness_t *h, size_t input, const sl_record_t *rec) {
  struct sl_source_ctx *s = h ? input_src(h, input) : NULL;
  if (!s || !rec)
    return SL_ERR_INVAL;
  if (sl__job_failing(h->job))
    return h->job->err;
  if (s->done)
    return SL_ERR_STATE;
  int rc = sl_source_emit(s, rec);
  /* key_by may hold records back to batch them: deliver them now. */
  if (!rc)
    rc = sl__xchg_flush(&h->job->workers[0]);
  return step_result(h, rc);
}

int sl_harness_push_kv(sl_harness_t *h, size_t input, const char *key,
                       const char *value, int64_t ts) {
  sl_record_t r = {key, key ? strlen(key) : 0, value, value ? strlen(value) : 0,
                   ts};
  return sl_harness_push(h, input, &r);
}

int sl_harness_watermark(sl_harness_t *h, size_t input, int64_t wm) {
  struct sl_source_ctx *s = h ? input_src(h, input) : NULL;
  if (!s)
    return SL_ERR_INVAL;
  if (sl__job_failing(h->job))
    return h->job->err;
  if (wm <= s->wm_emitted)
    return SL_OK;
  s->wm_emitted = wm;
  return step_result(h, sl__forward_watermark(&s->op, wm));
}

int sl_harness_set_time(sl_harness_t *h, int64_t now_ms) {
  if (!h)
    return SL_ERR_INVAL;
  if (sl__job_failing(h->job))
    return h->job->err;
  sl_clock_set(h->clock, now_ms);
  return step_result(h, sl__worker_proc_time(&h->job->workers[0]));
}

int sl_harness_end(sl_harness_t *h) {
  if (!h)
    return SL_ERR_INVAL;
  int rc = 0;
  for (size_t i = 0; i < h->n_inputs && !rc; i++) {
    struct sl_source_ctx *s = input_src(h, i);
    if (!s->done)
      rc = sl__source_finish(s, true, false);
  }
  return step_result(h, rc);
}

static const capture *find_cap(const sl_harness_t *h, const char *tag) {
  for (size_t i = 0; h && i < h->n_caps; i++) {
    const char *t = h->caps[i].tag;
    if ((!tag && !t) || (tag && t && strcmp(tag, t) == 0))
      return &h->caps[i];
  }
  return NULL;
}

size_t sl_harness_count(const sl_harness_t *h, const char *tag) {
  const capture *c = find_cap(h, tag);
  return c ? c->n : 0;
}

const sl_record_t *sl_harness_get(const sl_harness_t *h, const char *tag,
                                  size_t i) {
  const capture *c = find_cap(h, tag);
  return c && i < c->n ? &c->recs[i].r : NULL;
}

void sl_harness_clear(sl_harness_t *h) {
  if (h)
    caps_clear(h);
}

int sl_harness_clear_output(sl_harness_t *h, const char *tag) {
  if (!h)
    return SL_ERR_INVAL;
  capture *c = (capture *)find_cap(h, tag);
  if (!c)
    return SL_ERR_NOTFOUND;
  cap_clear(c);
  return SL_OK;
}

int64_t sl_harness_output_watermark(const sl_harness_t *h) {
  return h ? h->caps[0].wm : SL_TS_MIN;
}

sl_job_t *sl_harness_job(sl_harness_t *h) {
  return h ? h->job : NULL;
}

const char *sl_harness_errmsg(const sl_harness_t *h) {
  return h ? sl_job_errmsg(h->job) : "";
}
