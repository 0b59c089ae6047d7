/* SPDX-License-Identifier: Apache-2.0 */
/* The physical plan each worker gets from the graph (graph/plan.h):
 * which instances it runs and where each of their ports reads from,
 * written out as text and compared exactly. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "check_main.h"
#include "graph/plan.h"
#include "testutil.h"

static int gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)i;
  (void)opaque;
  *out = (sl_record_t){0};
  return 0;
}

static int key(const sl_record_t *rec, const void **k, size_t *len,
               void *opaque) {
  (void)opaque;
  *k = rec->value;
  *len = rec->value_len;
  return 0;
}

static int same(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                void *opaque) {
  (void)ctx;
  (void)opaque;
  *out = *in;
  return 1;
}

static int drop(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)rec;
  (void)opaque;
  return 0;
}

static int two_in(sl_ctx_t *op, int port, const sl_record_t *rec) {
  (void)port;
  return sl_emit(op, rec);
}

static const sl_operator_ops_t two_in_ops = {.kind = "two", .process = two_in};

/* "slot:kind[uid]<-port,port" per instance, in creation order; a port is
 * the slot it reads, "-" (absent) or "x" (the exchange). */
static void render(sl_job_t *job, int worker, int par, char *out, size_t cap) {
  sl__plan p;
  ck_assert_int_eq(sl__plan_worker(sl__graph_of(job), worker, par, &p), SL_OK);
  static const char *kinds[] = {"src", "op", "prod", "cons"};
  size_t n = 0;
  out[0] = '\0';
  for (int i = 0; i < p.n_inst; i++) {
    const sl__plan_inst *in = &p.inst[i];
    n += (size_t)snprintf(out + n, cap - n, "%s%d:%s[%s]", i ? " " : "",
                          in->slot, kinds[in->kind],
                          in->node->uid ? in->node->uid : "");
    for (int k = 0; k < in->n_ports; k++) {
      int f = in->ports[k].from;
      if (f >= 0)
        n += (size_t)snprintf(out + n, cap - n, "%s%d%s", k ? "," : "<-", f,
                              in->ports[k].tag ? in->ports[k].tag : "");
      else
        n += (size_t)snprintf(out + n, cap - n, "%s%s", k ? "," : "<-",
                              f == SL__PORT_ABSENT ? "-" : "x");
    }
  }
  ck_assert_int_lt(n, cap);
  sl__plan_free(&p);
}

/* A source on worker 0 only (and the map chained to it) beside a parallel
 * one, both into a two-input operator, then key_by, a map, a sink: worker
 * 1 has no instance of the first source or its map, so the two-input
 * operator's port 0 is absent there; key_by's producer runs beside the
 * operator on both workers and its consumer reads both through the
 * exchange. */
START_TEST(plan_places_instances_and_ports) {
  sl_job_t *job = tu_job(2, NULL);
  sl_generator_opts_t one = {.count = 1, .gen = gen};
  sl_generator_opts_t all = {.count = 1, .gen = gen, .parallel = true};
  sl_stream_t *a = sl_source_generator(job, "a", &one);
  sl_stream_t *m = sl_map(a, "m", same, NULL);
  sl_stream_t *b = sl_source_generator(job, "b", &all);
  sl_stream_t *in[2] = {m, b};
  sl_stream_t *t = sl_op_add(in, 2, "t", &two_in_ops, NULL, false);
  sl_stream_t *k = sl_map(sl_key_by(t, key, NULL), "k", same, NULL);
  ck_assert_msg(sl_sink(k, "s", drop, NULL) == SL_OK, "%s", sl_job_errmsg(job));
  char got[512];
  render(job, 0, 2, got, sizeof(got));
  ck_assert_str_eq(got, "0:src[a] 1:op[m]<-0 2:src[b] 3:op[t]<-1,2 "
                        "4:cons[]<-x,x 7:prod[]<-3 5:op[k]<-4 6:op[s]<-5");
  render(job, 1, 2, got, sizeof(got));
  ck_assert_str_eq(got, "2:src[b] 3:op[t]<--,2 4:cons[]<-x,x 7:prod[]<-3 "
                        "5:op[k]<-4 6:op[s]<-5");
  sl_job_destroy(job);
}
END_TEST

/* key_by straight after a source on worker 0: only worker 0 produces, so
 * every consumer's port of worker 1 is absent, and worker 1 runs the
 * keyed stage without a producer. */
START_TEST(plan_of_a_single_producer_key_by) {
  sl_job_t *job = tu_job(3, NULL);
  sl_generator_opts_t one = {.count = 1, .gen = gen};
  sl_stream_t *a = sl_source_generator(job, "a", &one);
  sl_stream_t *k = sl_map(sl_key_by(a, key, NULL), "k", same, NULL);
  ck_assert_msg(sl_sink(k, "s", drop, NULL) == SL_OK, "%s", sl_job_errmsg(job));
  char got[512];
  render(job, 0, 3, got, sizeof(got));
  ck_assert_str_eq(
      got, "0:src[a] 1:cons[]<-x,-,- 4:prod[]<-0 2:op[k]<-1 3:op[s]<-2");
  render(job, 2, 3, got, sizeof(got));
  ck_assert_str_eq(got, "1:cons[]<-x,-,- 2:op[k]<-1 3:op[s]<-2");
  sl_job_destroy(job);
}
END_TEST

/* The split hook of group.mode=repartition, without Kafka: a sink of
 * the key_by's input and a parallel source standing for the topic read
 * back, named after the keyed stage. */
static sl_stream_t *split(sl_job_t *job, const sl__node *k, sl_stream_t *in,
                          const char *uid, void *arg) {
  (void)arg;
  ck_assert_ptr_eq((void *)k->key_fn, (void *)key);
  char name[64];
  snprintf(name, sizeof(name), "%s-out", uid);
  ck_assert_int_eq(sl_sink(in, name, drop, NULL), SL_OK);
  snprintf(name, sizeof(name), "%s-back", uid);
  sl_generator_opts_t all = {.count = 1, .gen = gen, .parallel = true};
  return sl_source_generator(job, name, &all);
}

static int ts_of(const sl_record_t *rec, int64_t *ts, void *opaque) {
  (void)opaque;
  *ts = rec->ts;
  return 0;
}

/* The graph cut at a key_by (sl__graph_split): the source the hook adds
 * moves before the key_by, which reads it without a key function; the
 * sink reads the key_by's old input; the source gets the upstream
 * source's watermark strategy without its timestamp assigner; node ids
 * stay a topological order. */
START_TEST(split_cuts_the_graph_at_a_key_by) {
  sl_job_t *job = tu_job(2, NULL);
  sl_generator_opts_t all = {.count = 1, .gen = gen, .parallel = true};
  sl_stream_t *a = sl_source_generator(job, "a", &all);
  sl_watermark_spec_t wm = {.kind = SL_WM_BOUNDED,
                            .bound_ms = 7,
                            .idle_timeout_ms = 5,
                            .ts_fn = ts_of};
  sl_with_watermarks(a, &wm);
  sl_stream_t *m = sl_map(a, "m", same, NULL);
  sl_stream_t *k = sl_map(sl_key_by(m, key, NULL), "k", same, NULL);
  ck_assert_msg(sl_sink(k, "s", drop, NULL) == SL_OK, "%s", sl_job_errmsg(job));
  sl__graph *g = sl__graph_of(job);
  g->split = split;
  char err[256] = "", got[512];
  ck_assert_int_eq(sl__graph_split(g, job, err, sizeof(err)), SL_OK);
  for (int i = 0; i < g->n_nodes; i++)
    ck_assert_int_eq(g->nodes[i]->id, i);
  render(job, 0, 2, got, sizeof(got));
  ck_assert_str_eq(got, "0:src[a] 1:op[m]<-0 2:src[k-back] 3:cons[]<-x,x "
                        "7:prod[]<-2 4:op[k]<-3 5:op[s]<-4 6:op[k-out]<-1");
  const sl__node *back = g->nodes[2], *kb = g->nodes[3];
  ck_assert_ptr_null((void *)kb->key_fn);
  ck_assert_int_eq(back->wm_spec.kind, SL_WM_BOUNDED);
  ck_assert_int_eq(back->wm_spec.bound_ms, 7);
  ck_assert_int_eq(back->wm_spec.idle_timeout_ms, 5);
  ck_assert_ptr_null((void *)back->wm_spec.ts_fn);
  sl_job_destroy(job);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("plan");
  TCase *tc = tcase_create("plan");
  tcase_add_test(tc, plan_places_instances_and_ports);
  tcase_add_test(tc, plan_of_a_single_producer_key_by);
  tcase_add_test(tc, split_cuts_the_graph_at_a_key_by);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run(suite());
}
