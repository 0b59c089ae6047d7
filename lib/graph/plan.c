/* SPDX-License-Identifier: Apache-2.0 */
/* The physical plan of one worker (plan.h). */
#include "graph/plan.h"

#include <stdlib.h>

static sl__plan_inst *add(sl__plan *p, int slot, sl__inst_kind kind,
                          sl__node *n, int n_ports) {
  sl__plan_inst *in = &p->inst[p->n_inst];
  *in = (sl__plan_inst){.slot = slot, .kind = kind, .node = n};
  if (n_ports) {
    in->ports = calloc((size_t)n_ports, sizeof(*in->ports));
    if (!in->ports)
      return NULL;
    in->n_ports = n_ports;
  }
  p->n_inst++;
  return in;
}

int sl__plan_worker(const sl__graph *g, int worker, int par, sl__plan *p) {
  int nn = g->n_nodes;
  *p = (sl__plan){.n_slots = nn + g->n_xchg};
  /* Whether each slot has an instance here, as instances are added. */
  bool *here = calloc((size_t)p->n_slots + 1, sizeof(*here));
  p->inst = calloc((size_t)p->n_slots + 1, sizeof(*p->inst));
  if (!here || !p->inst)
    goto oom;
  for (int i = 0; i < nn; i++) {
    sl__node *n = g->nodes[i];
    bool placed = n->parallel || worker == 0;
    sl__plan_inst *in;
    if (n->kind == SL__NODE_SOURCE) {
      if (!placed)
        continue;
      if (!add(p, i, SL__INST_SOURCE, n, 0))
        goto oom;
      here[i] = true;
      continue;
    }
    if (n->kind == SL__NODE_KEYBY) {
      /* The consumer half runs everywhere; of its ports (one per
       * worker), only those of workers with the upstream carry records. */
      if (!(in = add(p, i, SL__INST_KEYBY_CONS, n, par)))
        goto oom;
      here[i] = true;
      bool up_everywhere = n->inputs[0].from->parallel;
      for (int w = 0; w < par; w++)
        in->ports[w].from =
            up_everywhere || w == 0 ? SL__PORT_EXCHANGE : SL__PORT_ABSENT;
      int up = n->inputs[0].from->id;
      if (here[up]) {
        int slot = nn + n->xidx;
        if (!(in = add(p, slot, SL__INST_KEYBY_PROD, n, 1)))
          goto oom;
        here[slot] = true;
        in->ports[0] = (sl__plan_port){up, n->inputs[0].tag};
      }
      continue;
    }
    if (!placed)
      continue;
    if (!(in = add(p, i, SL__INST_OP, n, n->n_inputs)))
      goto oom;
    here[i] = true;
    for (int port = 0; port < n->n_inputs; port++) {
      int up = n->inputs[port].from->id;
      in->ports[port] = here[up] ? (sl__plan_port){up, n->inputs[port].tag}
                                 : (sl__plan_port){SL__PORT_ABSENT, NULL};
    }
  }
  free(here);
  return SL_OK;
oom:
  free(here);
  sl__plan_free(p);
  return SL_ERR_NOMEM;
}

void sl__plan_free(sl__plan *p) {
  for (int i = 0; p->inst && i < p->n_inst; i++)
    free(p->inst[i].ports);
  free(p->inst);
  *p = (sl__plan){0};
}
