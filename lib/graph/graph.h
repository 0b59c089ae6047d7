/* SPDX-License-Identifier: Apache-2.0 */
/* The logical job graph the builder API makes (nodes, the streams between
 * them) and its validation. The runtime owns a graph as the first member
 * of its sl_job_t, builds the physical plan from it and runs it; the
 * graph knows nothing of threads or instances. Calls back into the
 * runtime (reporting a build error) go through the hook the runtime sets
 * (DESIGN §2: function tables carry calls upward). */
#ifndef SL_GRAPH_GRAPH_H
#define SL_GRAPH_GRAPH_H

#include <stdatomic.h>
#include <stdbool.h>

#include "operator.h"
#include "sluice.h"

typedef enum sl__node_kind {
  SL__NODE_SOURCE,
  SL__NODE_OP,
  SL__NODE_KEYBY,
} sl__node_kind;

typedef struct sl__node sl__node;

/* A stream is a node's main output (tag NULL) or one of its side outputs. */
struct sl_stream {
  sl_job_t *job;
  sl__node *node;
  char *tag;
  bool keyed;
  bool broadcast; /* from sl_broadcast(): every worker gets every record */
};

typedef struct sl__input {
  sl__node *from;
  const char *tag; /* owned by the stream that named it */
} sl__input;

struct sl__node {
  int id; /* creation order, which is a topological order */
  sl__node_kind kind;
  char *uid; /* NULL for key_by */
  const sl_operator_ops_t *ops;
  void *arg;
  bool sink;
  sl__input *inputs;
  int n_inputs;
  /* Sources. */
  const sl_source_ops_t *src_ops;
  sl_source_ops_t src_ops_copy;
  void *src_opaque;
  sl_watermark_spec_t wm_spec;
  /* A source that sends, in group mode, the watermark of each task's
   * partition when a user generator makes it (a Kafka source), so that
   * the keyed stage's per-task watermarks follow it. */
  bool task_wm;
  /* key_by. */
  sl_key_fn key_fn;
  void *key_opaque;
  int xidx; /* index among key_by nodes, in topological order */
  /* Group mode with repartition topics: the keyed stage this node
   * belongs to (a key_by, and the keyed operators that read it), an
   * index into the job's repartition topics in the order
   * sl__graph_split cut them; 0 otherwise (one stage). */
  int stage;
  /* An exchange of sl_broadcast(): every record to every worker, no key. */
  bool broadcast;
  /* Whether this node has an instance on every worker or only on worker 0
   * (a non-parallel source and what is chained to it). */
  bool parallel;
};

/* Reports a build error to the graph's owner: building says whether the
 * job is still being built (then the error fails the coming run). */
typedef void (*sl__graph_report_fn)(sl_job_t *job, int err, bool building,
                                    const char *msg);

/* Group mode with a repartition topic (docs/scaling.md): replaces the
 * input of the key_by node k, whose keyed stage is named uid, by a stream
 * the layer that owns the topic builds: a sink that writes k's input to
 * the topic, keyed by k's key function, and a source that reads it back,
 * whose stream it returns (NULL after recording a build error). It adds
 * both with the ordinary builder calls; sl__graph_split moves the source
 * before k. */
typedef sl_stream_t *(*sl__graph_split_fn)(sl_job_t *job, const sl__node *k,
                                           sl_stream_t *in, const char *uid,
                                           void *arg);

typedef struct sl__graph {
  sl__node **nodes;
  int n_nodes, cap_nodes;
  sl_stream_t **streams;
  int n_streams, cap_streams;
  int n_xchg;         /* key_by nodes */
  _Atomic int sealed; /* the job started: the graph no longer changes */
  int build_err;      /* the first build error (written by report) */
  sl__graph_report_fn report;
  struct sl__adopted {
    void *ptr;
    void (*free_fn)(void *);
  } * adopted;
  int n_adopted;
  sl__graph_split_fn split; /* set: every key_by crosses a topic */
  void *split_arg;
  /* Keyed stages (sl__node.stage): the repartition topics sl__graph_split
   * cut, at least 1. A task of group mode is a partition of one stage. */
  int n_stages;
} sl__graph;

/* The graph of a job: the runtime's sl_job_t begins with it (runtime.h
 * asserts so), which lets the builder functions reach the graph from the
 * public handle without calling up into the runtime. */
static inline sl__graph *sl__graph_of(sl_job_t *job) {
  return (sl__graph *)(void *)job;
}
static inline const sl__graph *sl__graph_of_const(const sl_job_t *job) {
  return (const sl__graph *)(const void *)job;
}

/* Seals the graph when the job starts: later builder calls are refused
 * with an error that does not fail the running job. */
static inline void sl__graph_seal(sl__graph *g) {
  atomic_store(&g->sealed, 1);
}

/* Whether the graph can run: the first build error, or a graph without a
 * source or a sink. SL_OK, or the error with a message in err. */
int sl__graph_validate(const sl__graph *g, const char *job_name, char *err,
                       size_t errlen);

/* Whether every record of node n reaches only broadcast exchanges
 * (sl_broadcast()): each path downstream of n, side outputs included,
 * ends in one, through operators that are not sinks, and there is at
 * least one. Group mode reads such a source whole in every process
 * (docs/scaling.md). For a sealed graph or on the building thread. */
bool sl__graph_only_broadcasts(const sl__graph *g, const sl__node *n);

/* With a split hook: cuts the graph at every key_by (broadcasts aside),
 * so that the key_by reads the hook's source instead of its input, and
 * without its key function (the records read back carry the key). Each
 * cut key_by is a keyed stage of its own (its stage set before the hook
 * is called, numbered from 0 in topological order), and so are the
 * operators that read it; an operator that reads two of them is an
 * error (the group may give partition 3 of each to two processes). The
 * source gets the watermark strategy of the first source upstream of the
 * key_by, without its timestamp assigner (records read back carry their
 * event time). Before the graph is sealed; SL_OK or an error with the
 * message in err. */
int sl__graph_split(sl__graph *g, sl_job_t *job, char *err, size_t errlen);

/* Frees the nodes, streams and adopted objects (calling free_arg and the
 * adopters' free functions). */
void sl__graph_free(sl__graph *g);

#endif
