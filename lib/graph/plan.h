/* SPDX-License-Identifier: Apache-2.0 */
/* The physical plan of one worker, derived from the logical graph: which
 * instances the worker runs and where each input port of each instance
 * reads from. The runtime creates the instances and connects them as the
 * plan says; the decisions (a non-parallel node lives on worker 0 only, a
 * key_by is split into a producer half beside its upstream and a consumer
 * half on every worker, a port whose upstream has no instance here is
 * born ended) are made here, once.
 *
 * Instances are numbered by slot: node i is slot i; the producer half of
 * the key_by node with index x among key_by nodes is slot n_nodes + x. */
#ifndef SL_GRAPH_PLAN_H
#define SL_GRAPH_PLAN_H

#include "graph/graph.h"

typedef enum sl__inst_kind {
  SL__INST_SOURCE,     /* a source subtask */
  SL__INST_OP,         /* an operator: the node's ops */
  SL__INST_KEYBY_PROD, /* key_by's producer half: partitions into the
                          exchange */
  SL__INST_KEYBY_CONS, /* key_by's consumer half: one port per worker */
} sl__inst_kind;

/* Where a port reads from: an instance of the same worker (its slot, and
 * the tag of the side output, NULL for the main output), the exchange
 * (the consumer half's ports), or nothing (absent: the upstream has no
 * instance on this worker, so the port is born ended). */
enum { SL__PORT_ABSENT = -1, SL__PORT_EXCHANGE = -2 };
typedef struct sl__plan_port {
  int from; /* a slot, SL__PORT_ABSENT or SL__PORT_EXCHANGE */
  const char *tag;
} sl__plan_port;

typedef struct sl__plan_inst {
  int slot;
  sl__inst_kind kind;
  sl__node *node;
  int n_ports;
  sl__plan_port *ports;
} sl__plan_inst;

/* The instances of one worker in creation order, which is the order their
 * ports must be connected in (an upstream's outputs are delivered in the
 * order they were connected). */
typedef struct sl__plan {
  int n_slots; /* n_nodes + n_xchg */
  sl__plan_inst *inst;
  int n_inst;
} sl__plan;

/* The plan of worker `worker` of `par`. SL_OK or SL_ERR_NOMEM (then *p
 * is empty). Free with sl__plan_free. */
int sl__plan_worker(const sl__graph *g, int worker, int par, sl__plan *p);
void sl__plan_free(sl__plan *p);

#endif
