/* SPDX-License-Identifier: Apache-2.0 */
/* Queryable state (sluice/query.h) against a reference model: a job whose
 * source emits scripted commands one phase at a time and then waits for
 * the test, so at every quiescent point each key's value, list, map and
 * reducing state must equal the model exactly; queries made while a phase
 * runs must each see the key's list as it was after some prefix of its
 * commands, never going back. On both backends, at P = 1 and P = 2 (keys
 * on both workers), with TTL, opt-out, timeouts, and the HTTP endpoint's
 * status codes and JSON bodies. */
#include <ftw.h>
#include <stdatomic.h>

#include "check_main.h"
#include "core/hash.h"
#include "httpget.h"
#include "testutil.h"

static const char *const backends[] = {"hashmap", "rocksdb"};
#define N_BACKENDS ((int)(sizeof(backends) / sizeof(backends[0])))
static char g_state_dir[64];

/* ---- A gated source: phase i is emitted once the test allows it -------- */

typedef struct cmd {
  char key[16];
  char val[48];
} cmd;

typedef struct gate {
  cmd *cmds;
  size_t n;                 /* the test's thread only */
  _Atomic size_t allowed;   /* commands the source may emit */
  size_t sent;              /* worker 0 only */
  _Atomic size_t processed; /* by the process function, any worker */
  _Atomic int finish;       /* end the source once everything is sent */
  _Atomic int polled;       /* the worker loop runs */
  /* Block the worker inside poll (timeout test). */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool block, blocked;
} gate;

/* Commands are added while the source reads the ones released before:
 * the array never moves. */
#define GATE_CAP 4096

static void gate_init(gate *g) {
  memset(g, 0, sizeof(*g));
  g->cmds = calloc(GATE_CAP, sizeof(*g->cmds));
  ck_assert_ptr_nonnull(g->cmds);
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
}

static void gate_free(gate *g) {
  free(g->cmds);
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
}

static void gate_add(gate *g, const char *key, const char *val) {
  ck_assert_uint_lt(g->n, GATE_CAP);
  cmd *c = &g->cmds[g->n++];
  snprintf(c->key, sizeof(c->key), "%s", key);
  snprintf(c->val, sizeof(c->val), "%s", val);
}

static int gate_poll(sl_source_ctx_t *ctx, void *opaque) {
  gate *g = opaque;
  pthread_mutex_lock(&g->mu);
  if (g->block) {
    g->blocked = true;
    pthread_cond_broadcast(&g->cv);
    while (g->block)
      pthread_cond_wait(&g->cv, &g->mu);
    g->blocked = false;
  }
  pthread_mutex_unlock(&g->mu);
  atomic_store(&g->polled, 1);
  /* finish is set after the last release: seen set, allowed is final. */
  int finish = atomic_load(&g->finish);
  size_t allowed = atomic_load(&g->allowed);
  if (g->sent >= allowed && finish)
    return SL_POLL_END;
  if (g->sent >= allowed)
    return SL_POLL_EMPTY;
  size_t budget = sl_source_ctx_budget(ctx);
  for (size_t i = 0; i < budget && g->sent < allowed; i++, g->sent++) {
    const cmd *c = &g->cmds[g->sent];
    sl_record_t r = {c->key, strlen(c->key), c->val, strlen(c->val), 0};
    int rc = sl_source_emit(ctx, &r);
    if (rc)
      return rc;
  }
  return SL_POLL_MORE;
}

/* Lets the source emit everything added so far and waits until the
 * process function has handled it: a quiescent point. */
static void gate_release_and_wait(gate *g) {
  atomic_store(&g->allowed, g->n);
  while (atomic_load(&g->processed) < g->n)
    hg_nap();
  ck_assert_uint_eq(atomic_load(&g->processed), g->n);
}

/* ---- The process function ---------------------------------------------- *
 * "v:<s>"       value := s
 * "l:<s>"       append s to the list
 * "m:<k>=<v>"   map[k] := v          "d:<k>"  remove map key k
 * "c"           clear the value and the list
 * "r:<n>"       add n to the reducing sum (int64)
 * "s:<s>"       secret := s (a state that did not opt in)
 * "t:<k>=<v>"   TTL state: tmap[k] := v and tval := v (100 ms, processing
 *               time, returning expired values once to the job)          */

typedef struct pf_local {
  sl_state_t *val, *list, *map, *sum, *secret, *tmap, *tval;
} pf_local;

static int add64(void *acc, const void *in, size_t len, void *opaque) {
  (void)len, (void)opaque;
  int64_t a, b;
  memcpy(&a, acc, 8);
  memcpy(&b, in, 8);
  a += b;
  memcpy(acc, &a, 8);
  return 0;
}

static int pf_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  pf_local *l = calloc(1, sizeof(*l));
  sl_ctx_set_local(ctx, l);
  sl_state_ttl_t ttl = {.ttl_ms = 100,
                        .visibility = SL_TTL_RETURN_EXPIRED_IF_NOT_CLEANED_UP,
                        .cleanup_per_access = -1};
  sl_state_desc_t d[] = {
      {.name = "val", .kind = SL_STATE_VALUE, .queryable = true},
      {.name = "list", .kind = SL_STATE_LIST, .queryable = true},
      {.name = "map", .kind = SL_STATE_MAP, .queryable = true},
      {.name = "sum",
       .kind = SL_STATE_REDUCING,
       .value_size = 8,
       .reduce = add64,
       .queryable = true},
      {.name = "secret", .kind = SL_STATE_VALUE},
      {.name = "tmap", .kind = SL_STATE_MAP, .ttl = ttl, .queryable = true},
      {.name = "tval", .kind = SL_STATE_VALUE, .ttl = ttl, .queryable = true},
  };
  sl_state_t **h[] = {&l->val,    &l->list, &l->map, &l->sum,
                      &l->secret, &l->tmap, &l->tval};
  for (size_t i = 0; i < sizeof(h) / sizeof(h[0]); i++)
    if (!(*h[i] = sl_state_register(ctx, &d[i])))
      return -1;
  return 0;
}

static void pf_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static int pf_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  gate *g = opaque;
  pf_local *l = sl_ctx_local(ctx);
  char v[64];
  snprintf(v, sizeof(v), "%.*s", (int)rec->value_len, (const char *)rec->value);
  const char *a = v + 2, *eq = strchr(v, '=');
  int rc = 0;
  switch (v[0]) {
  case 'v':
    rc = sl_value_put(ctx, l->val, a, strlen(a));
    break;
  case 'l':
    rc = sl_list_add(ctx, l->list, a, strlen(a));
    break;
  case 'm':
  case 't':
    rc = sl_map_put(ctx, v[0] == 'm' ? l->map : l->tmap, a, (size_t)(eq - a),
                    eq + 1, strlen(eq + 1));
    if (!rc && v[0] == 't')
      rc = sl_value_put(ctx, l->tval, eq + 1, strlen(eq + 1));
    break;
  case 'd':
    rc = sl_map_remove(ctx, l->map, a, strlen(a));
    rc = rc < 0 ? rc : 0;
    break;
  case 'c':
    rc = sl_state_clear(ctx, l->val);
    if (!rc)
      rc = sl_state_clear(ctx, l->list);
    break;
  case 'r': {
    int64_t n = atoll(a);
    rc = sl_reducing_add(ctx, l->sum, &n, 8);
    break;
  }
  case 's':
    rc = sl_value_put(ctx, l->secret, a, strlen(a));
    break;
  }
  atomic_fetch_add(&g->processed, 1);
  return rc;
}

static int key_of(const sl_record_t *in, const void **key, size_t *len,
                  void *opaque) {
  (void)opaque;
  *key = in->key;
  *len = in->key_len;
  return 0;
}

static int drop(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx, (void)rec, (void)opaque;
  return 0;
}

/* ---- Running a job on its own thread ------------------------------------ */

typedef struct run {
  sl_job_t *job;
  pthread_t t;
  int rc;
  gate g;
} run;

static void *run_main(void *arg) {
  run *r = arg;
  r->rc = sl_job_run(r->job);
  return NULL;
}

static void run_build(run *r, int bi, int par, const char *name,
                      const char *const *kv) {
  char err[256];
  sl_conf_t *c = sl_conf_new();
  char p[8];
  snprintf(p, sizeof(p), "%d", par);
  const char *base[] = {"state.backend",
                        backends[bi],
                        "state.dir",
                        g_state_dir,
                        "parallelism",
                        p,
                        NULL};
  for (int i = 0; base[i]; i += 2)
    ck_assert_int_eq(sl_conf_set(c, base[i], base[i + 1], err, sizeof(err)),
                     SL_OK);
  for (int i = 0; kv && kv[i]; i += 2)
    ck_assert_msg(sl_conf_set(c, kv[i], kv[i + 1], err, sizeof(err)) == SL_OK,
                  "%s", err);
  gate_init(&r->g);
  r->job = sl_job_new(name, c, err, sizeof(err));
  ck_assert_msg(r->job != NULL, "%s", err);
  sl_source_ops_t so = {.poll = gate_poll};
  sl_process_ops_t po = {
      .open = pf_open, .on_element = pf_element, .close = pf_close};
  sl_stream_t *s = sl_source(r->job, "src", &so, &r->g);
  sl_stream_t *k = sl_key_by(s, key_of, NULL);
  sl_stream_t *o = sl_process(k, "proc", &po, &r->g);
  ck_assert_int_eq(sl_sink(o, "sink", drop, NULL), SL_OK);
}

static void run_start(run *r) {
  ck_assert_int_eq(pthread_create(&r->t, NULL, run_main, r), 0);
  while (!atomic_load(&r->g.polled))
    hg_nap();
}

static void run_finish(run *r) {
  atomic_store(&r->g.finish, 1);
  atomic_store(&r->g.allowed, r->g.n);
  pthread_join(r->t, NULL);
  ck_assert_msg(r->rc == SL_OK, "%s", sl_job_errmsg(r->job));
}

static void run_free(run *r) {
  sl_job_destroy(r->job);
  gate_free(&r->g);
}

/* ---- The reference model ------------------------------------------------ */

#define NK 12
#define MAXI 64

typedef struct mkey {
  bool has_val;
  char val[48];
  char list[MAXI][48];
  int n_list;
  char mk[MAXI][16], mv[MAXI][48];
  int n_map;
  bool has_sum;
  int64_t sum;
} mkey;

static void model_apply(mkey *m, const char *v) {
  const char *a = v + 2, *eq = strchr(v, '=');
  switch (v[0]) {
  case 'v':
    m->has_val = true;
    snprintf(m->val, sizeof(m->val), "%s", a);
    break;
  case 'l':
    ck_assert_int_lt(m->n_list, MAXI);
    snprintf(m->list[m->n_list++], 48, "%s", a);
    break;
  case 'm': {
    int i = 0;
    while (i < m->n_map && (strlen(m->mk[i]) != (size_t)(eq - a) ||
                            memcmp(m->mk[i], a, (size_t)(eq - a)) != 0))
      i++;
    if (i == m->n_map) {
      ck_assert_int_lt(m->n_map, MAXI);
      snprintf(m->mk[m->n_map++], 16, "%.*s", (int)(eq - a), a);
    }
    snprintf(m->mv[i], 48, "%s", eq + 1);
    break;
  }
  case 'd':
    for (int i = 0; i < m->n_map; i++)
      if (strcmp(m->mk[i], a) == 0) {
        m->n_map--;
        memmove(m->mk[i], m->mk[m->n_map], 16);
        memmove(m->mv[i], m->mv[m->n_map], 48);
        break;
      }
    break;
  case 'c':
    m->has_val = false;
    m->n_list = 0;
    break;
  case 'r':
    m->has_sum = true;
    m->sum += atoll(a);
    break;
  }
}

/* A result as text: items joined by '|', map entries as k=v sorted by key
 * (the model's order is sorted here; the query's must already be), "-"
 * for no entry. */
static void res_text(const sl_query_result_t *res, int rc, char *out,
                     size_t len) {
  ck_assert_int_ge(rc, 0);
  size_t o = 0;
  out[0] = 0;
  if (rc == 0) {
    ck_assert_ptr_null(res);
    snprintf(out, len, "-");
    return;
  }
  ck_assert_uint_gt(res->n, 0);
  for (size_t i = 0; i < res->n; i++) {
    const sl_query_item_t *it = &res->items[i];
    ck_assert_uint_eq((uintptr_t)it->value % 8, 0);
    if (res->kind == SL_STATE_REDUCING) {
      int64_t n;
      ck_assert_uint_eq(it->value_len, 8);
      memcpy(&n, it->value, 8);
      o += (size_t)snprintf(out + o, len - o, "%lld", (long long)n);
      continue;
    }
    if (res->kind == SL_STATE_MAP)
      o += (size_t)snprintf(out + o, len - o, "%.*s=", (int)it->map_key_len,
                            (const char *)it->map_key);
    o += (size_t)snprintf(out + o, len - o, "%.*s", (int)it->value_len,
                          (const char *)it->value);
    if (i + 1 < res->n)
      o += (size_t)snprintf(out + o, len - o, "|");
  }
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void model_text(const mkey *m, const char *state, char *out,
                       size_t len) {
  size_t o = 0;
  out[0] = 0;
  if (strcmp(state, "val") == 0) {
    snprintf(out, len, "%s", m->has_val ? m->val : "-");
  } else if (strcmp(state, "sum") == 0) {
    if (m->has_sum)
      snprintf(out, len, "%lld", (long long)m->sum);
    else
      snprintf(out, len, "-");
  } else if (strcmp(state, "list") == 0) {
    for (int i = 0; i < m->n_list; i++)
      o += (size_t)snprintf(out + o, len - o, "%s%s", i ? "|" : "", m->list[i]);
    if (!m->n_list)
      snprintf(out, len, "-");
  } else {
    const char *keys[MAXI];
    for (int i = 0; i < m->n_map; i++)
      keys[i] = m->mk[i];
    qsort(keys, (size_t)m->n_map, sizeof(*keys), cmp_str);
    for (int i = 0; i < m->n_map; i++) {
      int j = 0;
      while (m->mk[j] != keys[i])
        j++;
      o += (size_t)snprintf(out + o, len - o, "%s%s=%s", i ? "|" : "", m->mk[j],
                            m->mv[j]);
    }
    if (!m->n_map)
      snprintf(out, len, "-");
  }
}

static int query_text(sl_job_t *job, const char *state, const char *key,
                      const sl_query_opts_t *o, char *out, size_t len) {
  sl_query_result_t *res = NULL;
  char err[256];
  int rc = sl_job_query(job, "proc", state, key, strlen(key), o, &res, err,
                        sizeof(err));
  ck_assert_msg(rc >= 0, "query %s/%s: %s (job: %s)", state, key, err,
                sl_job_errmsg(job));
  res_text(res, rc, out, len);
  sl_query_result_free(res);
  return rc;
}

/* ---- Tests --------------------------------------------------------------- */

static const char *const states[] = {"val", "list", "map", "sum"};

/* Rounds of random commands on NK keys; after each, every key's every
 * state equals the model; during each, list answers follow the model's
 * history of that key. */
static void model_rounds(int bi, int par) {
  run r;
  char name[64];
  snprintf(name, sizeof(name), "query-model-%d-%d", bi, par);
  run_build(&r, bi, par, name, NULL);
  char keys[NK][16];
  int workers_seen = 0;
  for (int k = 0; k < NK; k++) {
    snprintf(keys[k], sizeof(keys[k]), "user-%d", k);
    uint64_t h = sl__hash64(keys[k], strlen(keys[k]));
    workers_seen |= 1 << (sl__key_group(h, 128) * (uint32_t)par / 128);
  }
  ck_assert_int_eq(workers_seen, (1 << par) - 1); /* keys on every worker */
  mkey model[NK];
  memset(model, 0, sizeof(model));
  run_start(&r);
  unsigned seed = 7u + (unsigned)(bi * 10 + par);
  char got[4096], want[4096];
  for (int round = 0; round < 8; round++) {
    /* The list history of key 0 in this round, to check answers made
     * while the round runs. */
    static char hist[512][4096];
    int n_hist = 0;
    model_text(&model[0], "list", hist[n_hist++], sizeof(hist[0]));
    for (int i = 0; i < 300; i++) {
      int k = rand_r(&seed) % NK;
      int op = rand_r(&seed) % 10;
      char v[48];
      int x = rand_r(&seed) % 100;
      if (op < 2)
        snprintf(v, sizeof(v), "v:val-%d-%d", round, x);
      else if (op < 4 && model[k].n_list < MAXI - 1)
        snprintf(v, sizeof(v), "l:e%d", x);
      else if (op < 6)
        snprintf(v, sizeof(v), "m:mk%d=v%d", x % 8, x);
      else if (op < 7)
        snprintf(v, sizeof(v), "d:mk%d", x % 8);
      else if (op < 8 && round % 3 == 2)
        snprintf(v, sizeof(v), "c");
      else
        snprintf(v, sizeof(v), "r:%d", x - 50);
      gate_add(&r.g, keys[k], v);
      model_apply(&model[k], v);
      if (k == 0 && (v[0] == 'l' || v[0] == 'c') && n_hist < 512)
        model_text(&model[0], "list", hist[n_hist++], sizeof(hist[0]));
    }
    /* Release, and query key 0's list until the round is processed: each
     * answer is the list after some prefix of key 0's commands, and the
     * prefixes never go back. */
    atomic_store(&r.g.allowed, r.g.n);
    int at = 0;
    while (atomic_load(&r.g.processed) < r.g.n) {
      query_text(r.job, "list", keys[0], NULL, got, sizeof(got));
      int j = at;
      while (j < n_hist && strcmp(hist[j], got) != 0)
        j++;
      ck_assert_msg(j < n_hist, "round %d: list of %s is \"%s\": no prefix",
                    round, keys[0], got);
      at = j;
    }
    gate_release_and_wait(&r.g);
    for (int k = 0; k < NK; k++)
      for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
        query_text(r.job, states[s], keys[k], NULL, got, sizeof(got));
        model_text(&model[k], states[s], want, sizeof(want));
        ck_assert_msg(strcmp(got, want) == 0,
                      "round %d, %s of %s: got \"%s\", want \"%s\"", round,
                      states[s], keys[k], got, want);
      }
    /* One map key at a time, present and absent. */
    for (int k = 0; k < NK; k++)
      for (int i = 0; i < 8; i++) {
        char mk[16];
        snprintf(mk, sizeof(mk), "mk%d", i);
        sl_query_opts_t o = {.map_key = mk, .map_key_len = strlen(mk)};
        query_text(r.job, "map", keys[k], &o, got, sizeof(got));
        snprintf(want, sizeof(want), "-");
        for (int j = 0; j < model[k].n_map; j++)
          if (strcmp(model[k].mk[j], mk) == 0)
            snprintf(want, sizeof(want), "%s=%s", mk, model[k].mv[j]);
        ck_assert_str_eq(got, want);
      }
  }
  run_finish(&r);
  run_free(&r);
}

START_TEST(quiescent_answers_equal_model_p1) {
  model_rounds(_i, 1);
}
END_TEST

START_TEST(quiescent_answers_equal_model_p2) {
  model_rounds(_i, 2);
}
END_TEST

/* Errors: opt-out refused, unknown names, a job not running. */
START_TEST(refusals_are_clear) {
  run r;
  run_build(&r, _i, 2, "query-refusals", NULL);
  char err[256];
  sl_query_result_t *res = (void *)1;
  ck_assert_int_eq(
      sl_job_query(r.job, "proc", "val", "a", 1, NULL, &res, err, sizeof(err)),
      SL_ERR_STATE);
  ck_assert_ptr_null(res);
  ck_assert_str_eq(err, "job \"query-refusals\" is not running");
  gate_add(&r.g, "a", "s:hidden");
  gate_add(&r.g, "a", "v:shown");
  run_start(&r);
  gate_release_and_wait(&r.g);
  ck_assert_int_eq(sl_job_query(r.job, "proc", "secret", "a", 1, NULL, &res,
                                err, sizeof(err)),
                   SL_ERR_INVAL);
  ck_assert_str_eq(err, "state \"secret\" of operator \"proc\" is not "
                        "queryable (its descriptor does not set queryable)");
  ck_assert_int_eq(
      sl_job_query(r.job, "proc", "nope", "a", 1, NULL, &res, err, sizeof(err)),
      SL_ERR_NOTFOUND);
  ck_assert_str_eq(err, "operator \"proc\" has no state \"nope\"");
  ck_assert_int_eq(
      sl_job_query(r.job, "nope", "val", "a", 1, NULL, &res, err, sizeof(err)),
      SL_ERR_NOTFOUND);
  ck_assert_str_eq(err, "operator \"nope\" has no keyed state");
  ck_assert_int_eq(
      sl_job_query(r.job, "src", "val", "a", 1, NULL, &res, err, sizeof(err)),
      SL_ERR_NOTFOUND);
  ck_assert_int_eq(
      sl_job_query(r.job, "proc", "val", NULL, 1, NULL, &res, err, sizeof(err)),
      SL_ERR_INVAL);
  char got[64];
  ck_assert_int_eq(query_text(r.job, "val", "a", NULL, got, sizeof(got)), 1);
  ck_assert_str_eq(got, "shown");
  ck_assert_int_eq(query_text(r.job, "val", "b", NULL, got, sizeof(got)), 0);
  /* One process owns every key: its task is the key group. */
  sl_query_owner_t o;
  ck_assert_int_eq(sl_job_query_owner(r.job, "a", 1, &o, err, sizeof(err)),
                   SL_OK);
  ck_assert_int_eq(o.where, SL_QUERY_LOCAL);
  ck_assert_uint_eq(o.task, sl__key_group(sl__hash64("a", 1), 128));
  ck_assert_str_eq(o.instance, "");
  ck_assert_int_eq(sl_job_query_owner(r.job, NULL, 1, &o, err, sizeof(err)),
                   SL_ERR_INVAL);
  run_finish(&r);
  ck_assert_int_eq(
      sl_job_query(r.job, "proc", "val", "a", 1, NULL, &res, err, sizeof(err)),
      SL_ERR_STATE);
  ck_assert_int_eq(sl_job_query_owner(r.job, "a", 1, &o, err, sizeof(err)),
                   SL_ERR_STATE);
  ck_assert_str_eq(err, "job \"query-refusals\" is not running");
  run_free(&r);
}
END_TEST

/* Expired items are never returned, though the job's own reads would
 * return them once (RETURN_EXPIRED_IF_NOT_CLEANED_UP), and a query does
 * not remove them: expiry follows the job's clock. */
START_TEST(ttl_expired_not_returned) {
  run r;
  run_build(&r, _i, 1, "query-ttl", NULL);
  sl_clock_t *clk = sl_clock_new_manual(1000);
  ck_assert_int_eq(sl_job_set_clock(r.job, clk), SL_OK);
  gate_add(&r.g, "a", "t:x=1");
  run_start(&r);
  gate_release_and_wait(&r.g);
  sl_clock_set(clk, 1080);
  gate_add(&r.g, "a", "t:y=2");
  gate_release_and_wait(&r.g);
  char got[128];
  query_text(r.job, "tmap", "a", NULL, got, sizeof(got));
  ck_assert_str_eq(got, "x=1|y=2");
  sl_clock_set(clk, 1100); /* x: 1000 + 100 <= 1100, expired */
  query_text(r.job, "tmap", "a", NULL, got, sizeof(got));
  ck_assert_str_eq(got, "y=2");
  sl_query_opts_t o = {.map_key = "x", .map_key_len = 1};
  ck_assert_int_eq(query_text(r.job, "tmap", "a", &o, got, sizeof(got)), 0);
  query_text(r.job, "tval", "a", NULL, got, sizeof(got));
  ck_assert_str_eq(got, "2");
  sl_clock_set(clk, 1179);
  query_text(r.job, "tval", "a", NULL, got, sizeof(got));
  ck_assert_str_eq(got, "2");
  sl_clock_set(clk, 1180);
  ck_assert_int_eq(query_text(r.job, "tval", "a", NULL, got, sizeof(got)), 0);
  ck_assert_int_eq(query_text(r.job, "tmap", "a", NULL, got, sizeof(got)), 0);
  run_finish(&r);
  run_free(&r);
  sl_clock_destroy(clk);
}
END_TEST

/* A worker that cannot answer (blocked in a callback) makes the query
 * time out with SL_ERR_TIMEOUT; once it runs again, queries are answered
 * (the abandoned request left its queue). */
START_TEST(timeout_when_worker_blocked) {
  run r;
  const char *kv[] = {"query.timeout.ms", "40", NULL};
  run_build(&r, _i, 1, "query-timeout", kv);
  gate_add(&r.g, "a", "v:1");
  run_start(&r);
  gate_release_and_wait(&r.g);
  pthread_mutex_lock(&r.g.mu);
  r.g.block = true;
  while (!r.g.blocked)
    pthread_cond_wait(&r.g.cv, &r.g.mu);
  pthread_mutex_unlock(&r.g.mu);
  char err[256];
  sl_query_result_t *res = NULL;
  ck_assert_int_eq(
      sl_job_query(r.job, "proc", "val", "a", 1, NULL, &res, err, sizeof(err)),
      SL_ERR_TIMEOUT);
  ck_assert_ptr_null(res);
  ck_assert_str_eq(err, "query of state \"val\" of \"proc\": worker 0 did not "
                        "answer within 40 ms");
  sl_query_opts_t o = {.timeout_ms = 10};
  ck_assert_int_eq(
      sl_job_query(r.job, "proc", "val", "a", 1, &o, &res, err, sizeof(err)),
      SL_ERR_TIMEOUT);
  ck_assert_str_eq(err, "query of state \"val\" of \"proc\": worker 0 did not "
                        "answer within 10 ms");
  pthread_mutex_lock(&r.g.mu);
  r.g.block = false;
  pthread_cond_broadcast(&r.g.cv);
  pthread_mutex_unlock(&r.g.mu);
  char got[64];
  ck_assert_int_eq(query_text(r.job, "val", "a", NULL, got, sizeof(got)), 1);
  ck_assert_str_eq(got, "1");
  run_finish(&r);
  run_free(&r);
}
END_TEST

/* ---- HTTP ---------------------------------------------------------------- */

static void expect(int port, const char *path, const char *hdr, int status,
                   const char *body) {
  char *b = NULL;
  int st = hg_get_hdr(port, path, hdr, &b);
  ck_assert_msg(st == status && b && strcmp(b, body) == 0,
                "GET %s: %d %s, want %d %s", path, st, b ? b : "(null)", status,
                body);
  free(b);
}

START_TEST(http_status_and_json) {
  run r;
  const char *kv[] = {"metrics.listen", "127.0.0.1:0", NULL};
  run_build(&r, _i, 2, "query-http", kv);
  gate_add(&r.g, "k1", "v:hello");
  gate_add(&r.g, "k1", "l:a");
  gate_add(&r.g, "k1", "l:b c");
  gate_add(&r.g, "k1", "m:z=26");
  gate_add(&r.g, "k1", "m:a=1");
  gate_add(&r.g, "k1", "r:5");
  gate_add(&r.g, "k1", "s:x");
  run_start(&r);
  gate_release_and_wait(&r.g);
  int port = sl_job_metrics_port(r.job);
  ck_assert_int_gt(port, 0);
  const char *v = "{\"uid\":\"proc\",\"state\":\"val\",\"key\":\"k1\","
                  "\"key_enc\":\"utf8\",\"kind\":\"value\",\"value\":"
                  "\"hello\",\"value_enc\":\"utf8\"}\n";
  expect(port, "/state/proc/val?key=k1", NULL, 200, v);
  expect(port, "/state/proc/val?key_hex=6b31", NULL, 200, v);
  expect(port, "/state/proc/val?key_b64=azE=", NULL, 200, v);
  expect(port, "/state/proc/val?key_b64=azE", NULL, 200, v);
  expect(port, "/state/proc/list?key=k1", NULL, 200,
         "{\"uid\":\"proc\",\"state\":\"list\",\"key\":\"k1\",\"key_enc\":"
         "\"utf8\",\"kind\":\"list\",\"items\":[{\"value\":\"a\",\"value_"
         "enc\":\"utf8\"},{\"value\":\"b c\",\"value_enc\":\"utf8\"}]}\n");
  expect(port, "/state/proc/map?key=k1", NULL, 200,
         "{\"uid\":\"proc\",\"state\":\"map\",\"key\":\"k1\",\"key_enc\":"
         "\"utf8\",\"kind\":\"map\",\"entries\":[{\"map_key\":\"a\",\"map_"
         "key_enc\":\"utf8\",\"value\":\"1\",\"value_enc\":\"utf8\"},{\"map_"
         "key\":\"z\",\"map_key_enc\":\"utf8\",\"value\":\"26\",\"value_"
         "enc\":\"utf8\"}]}\n");
  expect(port, "/state/proc/map?key=k1&map_key=z", NULL, 200,
         "{\"uid\":\"proc\",\"state\":\"map\",\"key\":\"k1\",\"key_enc\":"
         "\"utf8\",\"kind\":\"map\",\"entries\":[{\"map_key\":\"z\",\"map_"
         "key_enc\":\"utf8\",\"value\":\"26\",\"value_enc\":\"utf8\"}]}\n");
  /* An int64 is not text: base64 of 5 little-endian. */
  expect(port, "/state/proc/sum?key=k1", NULL, 200,
         "{\"uid\":\"proc\",\"state\":\"sum\",\"key\":\"k1\",\"key_enc\":"
         "\"utf8\",\"kind\":\"reducing\",\"value\":\"BQAAAAAAAAA=\","
         "\"value_enc\":\"base64\"}\n");
  expect(port, "/state/proc/map?key=k1&map_key=q", NULL, 404,
         "{\"error\":\"no entry for this key\"}\n");
  expect(port, "/state/proc/val?key=k2", NULL, 404,
         "{\"error\":\"no entry for this key\"}\n");
  expect(port, "/state/proc/nope?key=k1", NULL, 404,
         "{\"error\":\"operator \\\"proc\\\" has no state \\\"nope\\\"\"}\n");
  expect(port, "/state/other/val?key=k1", NULL, 404,
         "{\"error\":\"operator \\\"other\\\" has no keyed state\"}\n");
  expect(port, "/state/proc/secret?key=k1", NULL, 403,
         "{\"error\":\"state \\\"secret\\\" of operator \\\"proc\\\" is not "
         "queryable (its descriptor does not set queryable)\"}\n");
  expect(port, "/state/proc/val", NULL, 400,
         "{\"error\":\"give exactly one of key (UTF-8 text), key_hex or "
         "key_b64\"}\n");
  expect(port, "/state/proc/val?key=k1&key_hex=00", NULL, 400,
         "{\"error\":\"give exactly one of key (UTF-8 text), key_hex or "
         "key_b64\"}\n");
  expect(port, "/state/proc/val?key_hex=6b3", NULL, 400,
         "{\"error\":\"key_hex is not hexadecimal\"}\n");
  expect(port, "/state/proc/val?key_b64=a*E=", NULL, 400,
         "{\"error\":\"key_b64 is not base64\"}\n");
  expect(port, "/state/proc/map?key=k1&map_key=a&map_key_b64=YQ==", NULL, 400,
         "{\"error\":\"give at most one of map_key (UTF-8 text), map_key_hex "
         "or map_key_b64\"}\n");
  expect(port, "/state/proc?key=k1", NULL, 400,
         "{\"error\":\"expected /state/<uid>/<state>?key=...\"}\n");
  run_finish(&r);
  expect(port, "/state/proc/val?key=k1", NULL, 503,
         "{\"error\":\"job \\\"query-http\\\" is not running\"}\n");
  run_free(&r);
}
END_TEST

START_TEST(http_bearer_token) {
  run r;
  const char *kv[] = {"metrics.listen", "127.0.0.1:0", "query.http.token",
                      "s3cret", NULL};
  run_build(&r, _i, 1, "query-token", kv);
  gate_add(&r.g, "k", "v:1");
  run_start(&r);
  gate_release_and_wait(&r.g);
  int port = sl_job_metrics_port(r.job);
  const char *no = "{\"error\":\"unauthorized: this endpoint needs the "
                   "bearer token of query.http.token\"}\n";
  expect(port, "/state/proc/val?key=k", NULL, 401, no);
  expect(port, "/state/proc/val?key=k", "Authorization: Bearer s3cre", 401, no);
  expect(port, "/state/proc/val?key=k", "Authorization: Bearer s3cret!", 401,
         no);
  expect(port, "/state/proc/val?key=k", "Authorization: Basic s3cret", 401, no);
  expect(port, "/state/proc/val?key=k", "Authorization: Bearer s3cret", 200,
         "{\"uid\":\"proc\",\"state\":\"val\",\"key\":\"k\",\"key_enc\":"
         "\"utf8\",\"kind\":\"value\",\"value\":\"1\",\"value_enc\":"
         "\"utf8\"}\n");
  /* The token guards state only: /healthz needs none. */
  char *b = NULL;
  ck_assert_int_eq(hg_get(port, "/healthz", &b), 200);
  free(b);
  run_finish(&r);
  run_free(&r);
}
END_TEST

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

int main(void) {
  snprintf(g_state_dir, sizeof(g_state_dir), "/tmp/sluice-test-query-XXXXXX");
  if (!mkdtemp(g_state_dir)) {
    perror("state.dir");
    return EXIT_FAILURE;
  }
  Suite *s = suite_create("query");
  TCase *tc = tcase_create("query");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, quiescent_answers_equal_model_p1, 0, N_BACKENDS);
  tcase_add_loop_test(tc, quiescent_answers_equal_model_p2, 0, N_BACKENDS);
  tcase_add_loop_test(tc, refusals_are_clear, 0, N_BACKENDS);
  tcase_add_loop_test(tc, ttl_expired_not_returned, 0, N_BACKENDS);
  tcase_add_loop_test(tc, timeout_when_worker_blocked, 0, 1);
  tcase_add_loop_test(tc, http_status_and_json, 0, N_BACKENDS);
  tcase_add_loop_test(tc, http_bearer_token, 0, 1);
  suite_add_tcase(s, tc);
  int rc = tu_run(s);
  nftw(g_state_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  return rc;
}
