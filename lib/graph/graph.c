/* SPDX-License-Identifier: Apache-2.0 */
/* The logical job graph: nodes and streams created by the builder API, the
 * checks that catch a bad graph where it is built (duplicate uid, keyed
 * operator without key_by, changes after start), and the validation of the
 * whole before it runs. Errors are sticky: the first is kept in the job
 * and returned again by sl_job_run(). */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "graph/graph.h"

sl_job_t *sl_stream_job(const sl_stream_t *s) {
  return s ? s->job : NULL;
}

/* Before the start, the first build error fails the coming sl_job_run().
 * Once running, a refused change only explains itself in the message: it
 * must not fail the job that is running fine. */
void sl_job_build_error(sl_job_t *job, int err, const char *fmt, ...) {
  if (!job)
    return;
  sl__graph *g = sl__graph_of(job);
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  g->report(job, err, !atomic_load(&g->sealed), msg);
}

/* Builder calls are only allowed before sl_job_run(). */
static bool job_editable(sl_job_t *job, const char *what) {
  if (atomic_load(&sl__graph_of(job)->sealed)) {
    sl_job_build_error(job, SL_ERR_STATE,
                       "%s: the job was already started; a running job "
                       "cannot be changed",
                       what);
    return false;
  }
  return true;
}

static bool uid_ok(sl_job_t *job, const char *uid, const char *what) {
  sl__graph *g = sl__graph_of(job);
  if (!uid || !*uid) {
    sl_job_build_error(job, SL_ERR_INVAL, "%s: uid must be a non-empty string",
                       what);
    return false;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    if (g->nodes[i]->uid && strcmp(g->nodes[i]->uid, uid) == 0) {
      sl_job_build_error(job, SL_ERR_GRAPH,
                         "%s: duplicate uid \"%s\" (uids name operators and "
                         "their state, so they must be unique)",
                         what, uid);
      return false;
    }
  }
  return true;
}

static sl_stream_t *new_stream(sl_job_t *job, sl__node *n, const char *tag,
                               bool keyed) {
  sl__graph *g = sl__graph_of(job);
  if (g->n_streams == g->cap_streams) {
    int cap = g->cap_streams ? g->cap_streams * 2 : 16;
    sl_stream_t **s = realloc(g->streams, (size_t)cap * sizeof(*s));
    if (!s)
      return NULL;
    g->streams = s;
    g->cap_streams = cap;
  }
  sl_stream_t *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  s->job = job;
  s->node = n;
  s->keyed = keyed;
  if (tag && !(s->tag = sl__strdup(tag))) {
    free(s);
    return NULL;
  }
  g->streams[g->n_streams++] = s;
  return s;
}

static sl__node *new_node(sl_job_t *job, sl__node_kind kind, const char *uid,
                          sl_stream_t *const *inputs, size_t n_inputs) {
  sl__graph *g = sl__graph_of(job);
  if (g->n_nodes == g->cap_nodes) {
    int cap = g->cap_nodes ? g->cap_nodes * 2 : 16;
    sl__node **nn = realloc(g->nodes, (size_t)cap * sizeof(*nn));
    if (!nn)
      return NULL;
    g->nodes = nn;
    g->cap_nodes = cap;
  }
  sl__node *n = calloc(1, sizeof(*n));
  if (!n)
    return NULL;
  n->kind = kind;
  n->id = g->n_nodes;
  if (uid && !(n->uid = sl__strdup(uid)))
    goto oom;
  if (n_inputs) {
    n->inputs = calloc(n_inputs, sizeof(*n->inputs));
    if (!n->inputs)
      goto oom;
    n->parallel = false;
    for (size_t i = 0; i < n_inputs; i++) {
      n->inputs[i].from = inputs[i]->node;
      n->inputs[i].tag = inputs[i]->tag;
      /* An instance exists on every worker as soon as one input has one. */
      if (inputs[i]->node->parallel || inputs[i]->node->kind == SL__NODE_KEYBY)
        n->parallel = true;
    }
    n->n_inputs = (int)n_inputs;
  }
  g->nodes[g->n_nodes++] = n;
  return n;
oom:
  free(n->uid);
  free(n);
  return NULL;
}

static sl_stream_t *oom(sl_job_t *job, const char *what) {
  sl_job_build_error(job, SL_ERR_NOMEM, "%s: out of memory", what);
  return NULL;
}

/* Inputs must all be non-NULL streams of one job, and consumable. */
static sl_job_t *check_inputs(sl_stream_t *const *in, size_t n,
                              const char *what) {
  if (!in || n == 0 || !in[0])
    return NULL; /* an earlier call failed and recorded why */
  sl_job_t *job = in[0]->job;
  for (size_t i = 0; i < n; i++) {
    if (!in[i])
      return NULL;
    if (in[i]->job != job) {
      sl_job_build_error(job, SL_ERR_GRAPH,
                         "%s: inputs belong to different jobs", what);
      return NULL;
    }
    if (in[i]->node->sink) {
      sl_job_build_error(job, SL_ERR_GRAPH,
                         "%s: a sink has no output stream to read", what);
      return NULL;
    }
  }
  return job;
}

int sl_job_build_err(const sl_job_t *job) {
  if (!job)
    return SL_ERR_INVAL;
  const sl__graph *g = sl__graph_of_const(job);
  if (g->build_err)
    return g->build_err;
  /* A change refused while running is not recorded as a build error. */
  return atomic_load(&((sl__graph *)g)->sealed) ? SL_ERR_STATE : SL_OK;
}

sl_stream_t *sl_op_add(sl_stream_t *const *inputs, size_t n, const char *uid,
                       const sl_operator_ops_t *ops, void *arg, bool sink) {
  const char *what = ops && ops->kind ? ops->kind : "operator";
  sl_job_t *job = check_inputs(inputs, n, what);
  sl__node *node = NULL;
  char gen[64];
  if (job && !uid) {
    snprintf(gen, sizeof(gen), "%s#%d", what, sl__graph_of(job)->n_nodes);
    uid = gen;
  }
  if (!job || !job_editable(job, what) || !uid_ok(job, uid, what))
    goto fail;
  for (size_t i = 0; i < n; i++) {
    bool want = ops->broadcast_in && i == n - 1;
    if (inputs[i]->broadcast != want) {
      sl_job_build_error(job, SL_ERR_GRAPH,
                         want ? "%s \"%s\": input %zu must be a broadcast "
                                "stream (sl_broadcast())"
                              : "%s \"%s\": input %zu is a broadcast stream, "
                                "which only sl_broadcast_process() reads",
                         what, uid, i);
      goto fail;
    }
  }
  if (ops->keyed) {
    for (size_t i = 0; i < n - (ops->broadcast_in ? 1 : 0); i++) {
      if (!inputs[i]->keyed) {
        sl_job_build_error(job, SL_ERR_GRAPH,
                           "%s \"%s\": input %zu is not keyed; a keyed "
                           "operator must read a stream from sl_key_by()",
                           what, uid, i);
        goto fail;
      }
    }
  }
  if (ops->keyed ? !ops->process_keyed : !ops->process) {
    sl_job_build_error(job, SL_ERR_GRAPH,
                       "%s \"%s\": the operator has no %s callback", what, uid,
                       ops->keyed ? "process_keyed" : "process");
    goto fail;
  }
  node = new_node(job, SL__NODE_OP, uid, inputs, n);
  if (!node) {
    oom(job, what);
    goto fail;
  }
  node->ops = ops;
  node->arg = arg;
  node->sink = sink;
  sl_stream_t *s = new_stream(job, node, NULL, false);
  if (!s)
    return oom(job, what);
  return s;
fail:
  if (ops && ops->free_arg && arg)
    ops->free_arg(arg);
  return NULL;
}

sl_stream_t *sl_source(sl_job_t *job, const char *uid,
                       const sl_source_ops_t *ops, void *opaque) {
  if (!job)
    return NULL;
  if (!job_editable(job, "source") || !uid_ok(job, uid, "source"))
    return NULL;
  if (!ops || !ops->poll) {
    sl_job_build_error(job, SL_ERR_INVAL,
                       "source \"%s\": ops->poll is required", uid);
    return NULL;
  }
  sl__node *n = new_node(job, SL__NODE_SOURCE, uid, NULL, 0);
  if (!n)
    return oom(job, "source");
  n->src_ops_copy = *ops;
  n->src_ops = &n->src_ops_copy;
  n->src_opaque = opaque;
  n->parallel = ops->parallel;
  n->wm_spec.kind = SL_WM_NONE;
  sl_stream_t *s = new_stream(job, n, NULL, false);
  return s ? s : oom(job, "source");
}

sl_stream_t *sl_with_watermarks(sl_stream_t *src,
                                const sl_watermark_spec_t *spec) {
  if (!src)
    return NULL;
  sl_job_t *job = src->job;
  if (!job_editable(job, "with_watermarks"))
    return NULL;
  if (src->node->kind != SL__NODE_SOURCE || !spec) {
    sl_job_build_error(job, SL_ERR_GRAPH,
                       "with_watermarks: a watermark strategy belongs on a "
                       "source stream");
    return NULL;
  }
  if (spec->kind == SL_WM_BOUNDED && spec->bound_ms < 0) {
    sl_job_build_error(job, SL_ERR_INVAL,
                       "with_watermarks \"%s\": bound_ms must be >= 0, got "
                       "%lld",
                       src->node->uid, (long long)spec->bound_ms);
    return NULL;
  }
  if (spec->idle_timeout_ms < 0) {
    sl_job_build_error(job, SL_ERR_INVAL,
                       "with_watermarks \"%s\": idle_timeout_ms must be >= "
                       "0, got %lld",
                       src->node->uid, (long long)spec->idle_timeout_ms);
    return NULL;
  }
  if (spec->kind == SL_WM_CUSTOM && !spec->gen) {
    sl_job_build_error(job, SL_ERR_INVAL,
                       "with_watermarks \"%s\": SL_WM_CUSTOM needs a "
                       "generator (gen)",
                       src->node->uid);
    return NULL;
  }
  if (spec->align_drift_ms < 0) {
    sl_job_build_error(job, SL_ERR_INVAL,
                       "with_watermarks \"%s\": align_drift_ms must be >= "
                       "0, got %lld",
                       src->node->uid, (long long)spec->align_drift_ms);
    return NULL;
  }
  src->node->wm_spec = *spec;
  return src;
}

sl_stream_t *sl_key_by(sl_stream_t *in, sl_key_fn fn, void *opaque) {
  sl_job_t *job = check_inputs(&in, 1, "key_by");
  if (!job || !job_editable(job, "key_by"))
    return NULL;
  if (in->broadcast) {
    sl_job_build_error(job, SL_ERR_GRAPH,
                       "key_by: a broadcast stream is read only by "
                       "sl_broadcast_process()");
    return NULL;
  }
  sl__node *n = new_node(job, SL__NODE_KEYBY, NULL, &in, 1);
  if (!n)
    return oom(job, "key_by");
  n->key_fn = fn;
  n->key_opaque = opaque;
  n->xidx = sl__graph_of(job)->n_xchg++;
  n->parallel = true;
  sl_stream_t *s = new_stream(job, n, NULL, true);
  return s ? s : oom(job, "key_by");
}

sl_stream_t *sl_broadcast(sl_stream_t *in) {
  sl_job_t *job = check_inputs(&in, 1, "broadcast");
  if (!job || !job_editable(job, "broadcast"))
    return NULL;
  if (in->broadcast) {
    sl_job_build_error(job, SL_ERR_GRAPH,
                       "broadcast: the stream is already a broadcast stream");
    return NULL;
  }
  /* An exchange like key_by's, whose producer sends each record to every
   * consumer. */
  sl__node *n = new_node(job, SL__NODE_KEYBY, NULL, &in, 1);
  if (!n)
    return oom(job, "broadcast");
  n->broadcast = true;
  n->xidx = sl__graph_of(job)->n_xchg++;
  n->parallel = true;
  sl_stream_t *s = new_stream(job, n, NULL, false);
  if (!s)
    return oom(job, "broadcast");
  s->broadcast = true;
  return s;
}

sl_stream_t *sl_side_output(sl_stream_t *op, const char *tag) {
  if (!op)
    return NULL;
  sl_job_t *job = op->job;
  if (!job_editable(job, "side_output"))
    return NULL;
  if (!tag || !*tag || op->node->kind != SL__NODE_OP || op->node->sink ||
      op->tag) {
    sl_job_build_error(job, SL_ERR_GRAPH,
                       "side_output: needs a non-empty tag and the main "
                       "output stream of an operator");
    return NULL;
  }
  sl_stream_t *s = new_stream(job, op->node, tag, false);
  return s ? s : oom(job, "side_output");
}

void sl_job_adopt(sl_job_t *job, void *ptr, void (*free_fn)(void *)) {
  sl__graph *g = sl__graph_of(job);
  struct sl__adopted *a =
      realloc(g->adopted, (size_t)(g->n_adopted + 1) * sizeof(*a));
  if (!a) {
    free_fn(ptr);
    sl_job_build_error(job, SL_ERR_NOMEM, "out of memory");
    return;
  }
  g->adopted = a;
  a[g->n_adopted].ptr = ptr;
  a[g->n_adopted].free_fn = free_fn;
  g->n_adopted++;
}

/* Recursion over readers: the graph is a DAG, so it ends; the nodes
 * between a source and its broadcasts are few (parsing, filtering). */
bool sl__graph_only_broadcasts(const sl__graph *g, const sl__node *n) {
  if (n->kind == SL__NODE_KEYBY)
    return n->broadcast;
  if (n->sink)
    return false;
  bool read = false;
  for (int i = 0; i < g->n_nodes; i++) {
    const sl__node *r = g->nodes[i];
    for (int j = 0; j < r->n_inputs; j++) {
      if (r->inputs[j].from != n)
        continue;
      if (!sl__graph_only_broadcasts(g, r))
        return false;
      read = true;
      break;
    }
  }
  return read;
}

int sl__graph_validate(const sl__graph *g, const char *job_name, char *err,
                       size_t errlen) {
  if (g->build_err)
    return g->build_err; /* its message is already the job's */
  int sources = 0, sinks = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    sources += g->nodes[i]->kind == SL__NODE_SOURCE;
    sinks += g->nodes[i]->sink;
  }
  if (!sources) {
    sl__errf(err, errlen, "job \"%s\" has no source", job_name);
    return SL_ERR_GRAPH;
  }
  if (!sinks) {
    sl__errf(err, errlen,
             "job \"%s\" has no sink: add one with sl_sink(), "
             "sl_sink_jsonl() or sl_sink_stdout()",
             job_name);
    return SL_ERR_GRAPH;
  }
  return SL_OK;
}

/* The stream that names node n's output tag (tags are compared by
 * pointer: an input keeps the one its stream owns). */
static sl_stream_t *stream_of(const sl__graph *g, const sl__node *n,
                              const char *tag) {
  for (int i = 0; i < g->n_streams; i++)
    if (g->streams[i]->node == n && g->streams[i]->tag == tag)
      return g->streams[i];
  return NULL;
}

/* The first source upstream of n, depth first along its inputs. */
static const sl__node *source_above(const sl__node *n) {
  if (n->kind == SL__NODE_SOURCE)
    return n;
  for (int i = 0; i < n->n_inputs; i++) {
    const sl__node *s = source_above(n->inputs[i].from);
    if (s)
      return s;
  }
  return NULL;
}

/* Whether node k is a key_by that a repartition topic cuts: not a
 * broadcast, and something reads it. */
static bool cut_key_by(const sl__graph *g, const sl__node *k) {
  if (k->kind != SL__NODE_KEYBY || k->broadcast)
    return false;
  for (int j = k->id + 1; j < g->n_nodes; j++)
    for (int p = 0; p < g->nodes[j]->n_inputs; p++)
      if (g->nodes[j]->inputs[p].from == k)
        return true;
  return false;
}

/* An operator reading two cut key_bys would be one task made of
 * partition N of two topics, which the group may give to two processes
 * (Kafka Streams' co-partitioning needs its own assignor). */
static int check_stages(const sl__graph *g, char *err, size_t errlen) {
  for (int i = 0; i < g->n_nodes; i++) {
    const sl__node *n = g->nodes[i], *first = NULL;
    for (int p = 0; p < n->n_inputs; p++) {
      const sl__node *k = n->inputs[p].from;
      if (!cut_key_by(g, k) || k == first)
        continue;
      if (first) {
        sl__errf(err, errlen,
                 "operator \"%s\" reads two key_by streams: with "
                 "group.mode=repartition each crosses processes through a "
                 "topic of its own, whose partition N the group may give to "
                 "another process than the other's; a keyed operator reads "
                 "one key_by (use group.mode=copartitioned for a join of "
                 "co-partitioned topics)",
                 n->uid ? n->uid : "");
        return SL_ERR_GRAPH;
      }
      first = k;
    }
  }
  return SL_OK;
}

int sl__graph_split(sl__graph *g, sl_job_t *job, char *err, size_t errlen) {
  g->n_stages = 1;
  int rc = g->split ? check_stages(g, err, errlen) : SL_OK;
  if (rc)
    return rc;
  int stages = 0;
  for (int i = 0; g->split && i < g->n_nodes; i++) {
    sl__node *k = g->nodes[i];
    if (k->kind != SL__NODE_KEYBY || k->broadcast)
      continue;
    /* The keyed stage: the first reader of the key_by. */
    const char *uid = NULL;
    for (int j = i + 1; j < g->n_nodes && !uid; j++)
      for (int p = 0; p < g->nodes[j]->n_inputs && !uid; p++)
        if (g->nodes[j]->inputs[p].from == k)
          uid = g->nodes[j]->uid;
    if (!uid)
      continue; /* nothing reads it: nothing to carry */
    k->stage = stages++;
    for (int j = i + 1; j < g->n_nodes; j++)
      for (int p = 0; p < g->nodes[j]->n_inputs; p++)
        if (g->nodes[j]->inputs[p].from == k)
          g->nodes[j]->stage = k->stage;
    sl_stream_t *in = stream_of(g, k->inputs[0].from, k->inputs[0].tag);
    sl_stream_t *src = in ? g->split(job, k, in, uid, g->split_arg) : NULL;
    if (!src) {
      if (g->build_err)
        return g->build_err; /* its message is already the job's */
      sl__errf(err, errlen, "key_by before \"%s\": out of memory", uid);
      return SL_ERR_NOMEM;
    }
    /* The source was added last: move it before the key_by, which keeps
     * creation order a topological order. */
    sl__node *r = src->node;
    int at = r->id;
    assert(r->kind == SL__NODE_SOURCE && at == g->n_nodes - 1 && at > i);
    memmove(&g->nodes[i + 1], &g->nodes[i],
            (size_t)(at - i) * sizeof(*g->nodes));
    g->nodes[i] = r;
    for (int j = i; j <= at; j++)
      g->nodes[j]->id = j;
    const sl__node *up = source_above(k->inputs[0].from);
    if (up) {
      r->wm_spec = up->wm_spec;
      r->wm_spec.ts_fn = NULL;
      r->wm_spec.ts_opaque = NULL;
    }
    k->inputs[0] = (sl__input){r, NULL};
    k->key_fn = NULL;
    k->key_opaque = NULL;
    i++; /* the key_by moved one place on */
  }
  if (stages > 1)
    g->n_stages = stages;
  return SL_OK;
}

void sl__graph_free(sl__graph *g) {
  for (int i = 0; i < g->n_adopted; i++)
    g->adopted[i].free_fn(g->adopted[i].ptr);
  free(g->adopted);
  for (int i = 0; i < g->n_nodes; i++) {
    sl__node *n = g->nodes[i];
    if (n->ops && n->ops->free_arg && n->arg)
      n->ops->free_arg(n->arg);
    free(n->uid);
    free(n->inputs);
    free(n);
  }
  for (int i = 0; i < g->n_streams; i++) {
    free(g->streams[i]->tag);
    free(g->streams[i]);
  }
  free(g->nodes);
  free(g->streams);
}
