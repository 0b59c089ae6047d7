/* SPDX-License-Identifier: Apache-2.0 */
/* Broadcast state (sluice/broadcast.h): through the harness, a rule set by
 * a broadcast record changes what the keyed side decides from then on,
 * the keyed side cannot write it, the broadcast side visits every key's
 * state; in real jobs at parallelism 2, every key on every worker sees
 * the rules, and broadcast state survives a restore at P 1 -> 2 and
 * 2 -> 1, the outputs equal to a reference model's. */
#include <check.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "operator.h"
#include "testutil.h"

static const char *const backends[] = {"hashmap", "rocksdb"};
#define N_BACKENDS ((int)(sizeof(backends) / sizeof(backends[0])))
static char g_state_dir[64];

static sl_conf_t *backend_conf(int bi) {
  char err[256];
  sl_conf_t *c = sl_conf_new();
  ck_assert_int_eq(
      sl_conf_set(c, "state.backend", backends[bi], err, sizeof(err)), SL_OK);
  ck_assert_int_eq(sl_conf_set(c, "state.dir", g_state_dir, err, sizeof(err)),
                   SL_OK);
  return c;
}

/* ---- A broadcast process function driven by its records ----------------
 * keyed "<n>"        count the key; emit "<key>:<n>:alert|ok|none" against
 *                    the broadcast rule "limit" (none: no rule)
 * keyed "write"      try to write broadcast state; emit the return codes
 * keyed "et:<ts>"    set an event-time timer; on_timer emits
 *                    "<key>@<ts>:<limit>:<rc of a write>"
 * bcast "set:<n>"    rule limit = n
 * bcast "del"        remove the rule
 * bcast "visit"      emit "<key>=<count>" for every counted key, reset it
 * bcast "probe"      emit the return codes of keyed state, timer and key
 *                    calls on the broadcast side                          */

typedef struct inst {
  sl_state_t *count;
  sl_bstate_t *rules;
} inst;

static int emitf(sl_ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int emitf(sl_ctx_t *ctx, const char *fmt, ...) {
  char buf[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  const void *key = NULL;
  size_t kl = 0;
  sl_ctx_key(ctx, &key, &kl);
  sl_record_t r = {key, key ? kl : 0, buf, (size_t)n, sl_ctx_timestamp(ctx)};
  return sl_emit(ctx, &r);
}

static int rf_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  inst *in = calloc(1, sizeof(*in));
  sl_ctx_set_local(ctx, in);
  sl_state_desc_t d = {.name = "count", .kind = SL_STATE_VALUE};
  in->count = sl_state_register(ctx, &d);
  in->rules = sl_bstate_register(ctx, "rules");
  /* Registering again finds the same state. */
  if (!in->count || !in->rules || sl_bstate_register(ctx, "rules") != in->rules)
    return SL_ERR_STATE;
  return 0;
}

static void rf_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static int limit_of(sl_ctx_t *ctx, inst *in, long long *limit) {
  const void *v;
  size_t len;
  int rc = sl_bstate_get(ctx, in->rules, "limit", 5, &v, &len);
  if (rc == 1)
    *limit = tu_num(v, len);
  return rc;
}

static int rf_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  inst *in = sl_ctx_local(ctx);
  const void *key;
  size_t kl;
  ck_assert_int_eq(sl_ctx_key(ctx, &key, &kl), SL_OK);
  if (rec->value_len == 5 && memcmp(rec->value, "write", 5) == 0) {
    int a = sl_bstate_put(ctx, in->rules, "limit", 5, "1", 1);
    int b = sl_bstate_remove(ctx, in->rules, "limit", 5);
    int c = sl_bstate_clear(ctx, in->rules);
    int d = sl_bstate_apply_keyed(ctx, in->count, NULL, NULL);
    return emitf(ctx, "%.*s:ro:%d,%d,%d,%d", (int)kl, (const char *)key, a, b,
                 c, d);
  }
  if (rec->value_len > 3 && memcmp(rec->value, "et:", 3) == 0)
    return sl_timer_set(
        ctx, SL_EVENT_TIME,
        tu_num((const char *)rec->value + 3, rec->value_len - 3));
  bool created;
  int64_t *n = sl_value_ptr(ctx, in->count, sizeof(*n), &created);
  if (!n)
    return SL_ERR_NOMEM;
  ++*n;
  long long amount = tu_num(rec->value, rec->value_len), limit;
  int rc = limit_of(ctx, in, &limit);
  return emitf(ctx, "%.*s:%lld:%s", (int)kl, (const char *)key, (long long)*n,
               rc != 1          ? "none"
               : amount > limit ? "alert"
                                : "ok");
}

static int visit_fn(sl_ctx_t *ctx, const void *key, size_t len, void *opaque) {
  inst *in = opaque;
  const void *v;
  size_t vl;
  const void *ck;
  size_t ckl;
  /* The visited key is current: sl_ctx_key and keyed state agree. */
  ck_assert_int_eq(sl_ctx_key(ctx, &ck, &ckl), SL_OK);
  ck_assert(ckl == len && memcmp(ck, key, len) == 0);
  ck_assert_int_eq(sl_value_get(ctx, in->count, &v, &vl), 1);
  int64_t n;
  memcpy(&n, v, sizeof(n));
  /* No timers from a visit (Flink's KeyedStateFunction). */
  ck_assert_int_eq(sl_timer_set(ctx, SL_EVENT_TIME, 5), SL_ERR_STATE);
  int rc = emitf(ctx, "%.*s=%lld", (int)len, (const char *)key, (long long)n);
  return rc ? rc : sl_state_clear(ctx, in->count);
}

static int rf_broadcast(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  inst *in = sl_ctx_local(ctx);
  const char *v = rec->value;
  size_t n = rec->value_len;
  if (n > 4 && memcmp(v, "set:", 4) == 0)
    return sl_bstate_put(ctx, in->rules, "limit", 5, v + 4, n - 4);
  if (n == 3 && memcmp(v, "del", 3) == 0)
    return sl_bstate_remove(ctx, in->rules, "limit", 5) == 1 ? 0 : SL_ERR_USER;
  if (n == 5 && memcmp(v, "visit", 5) == 0)
    return sl_bstate_apply_keyed(ctx, in->count, visit_fn, in);
  if (n == 5 && memcmp(v, "probe", 5) == 0) {
    const void *val, *key;
    size_t len;
    int a = sl_value_get(ctx, in->count, &val, &len);
    int b = sl_timer_set(ctx, SL_EVENT_TIME, 10);
    int c = sl_ctx_key(ctx, &key, &len);
    return emitf(ctx, "probe:%d,%d,%d,%lld", a, b, c,
                 (long long)sl_ctx_timestamp(ctx));
  }
  return SL_ERR_USER;
}

static int rf_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *opaque) {
  (void)d;
  (void)opaque;
  inst *in = sl_ctx_local(ctx);
  long long limit = -1;
  limit_of(ctx, in, &limit);
  int rc = sl_bstate_put(ctx, in->rules, "limit", 5, "1", 1);
  const void *key;
  size_t kl;
  sl_ctx_key(ctx, &key, &kl);
  return emitf(ctx, "%.*s@%lld:%lld:%d", (int)kl, (const char *)key,
               (long long)ts, limit, rc);
}

static const sl_broadcast_process_ops_t rf_ops = {
    .open = rf_open,
    .on_element = rf_element,
    .on_broadcast = rf_broadcast,
    .on_timer = rf_timer,
    .close = rf_close,
};

/* Harness inputs are keyed: input 1 becomes the broadcast stream. */
static sl_stream_t *build_rf(sl_stream_t *const *in, size_t n, void *opaque) {
  (void)n;
  (void)opaque;
  return sl_broadcast_process(in[0], sl_broadcast(in[1]), "rules", &rf_ops,
                              NULL);
}

static sl_harness_t *rf_harness(int bi) {
  char err[256];
  sl_harness_t *h = sl_harness_new(backend_conf(bi), 2, true, build_rf, NULL,
                                   NULL, err, sizeof(err));
  ck_assert_msg(h != NULL, "harness: %s", err);
  return h;
}

/* Compares the main outputs with want (NULL-terminated), then clears. */
static void expect(sl_harness_t *h, const char *const *want) {
  size_t n = 0;
  while (want[n])
    n++;
  size_t got = sl_harness_count(h, NULL);
  for (size_t i = 0; i < got || i < n; i++) {
    const sl_record_t *r = sl_harness_get(h, NULL, i);
    char v[128] = "(none)";
    if (r)
      snprintf(v, sizeof(v), "%.*s", (int)r->value_len, (const char *)r->value);
    ck_assert_msg(i < n && r && strcmp(v, want[i]) == 0,
                  "output #%zu: got \"%s\", want \"%s\"", i, v,
                  i < n ? want[i] : "(none)");
  }
  sl_harness_clear(h);
}

#define PUSH(h, in, k, v, ts)                                                  \
  ck_assert_int_eq(sl_harness_push_kv(h, in, k, v, ts), SL_OK)

START_TEST(rule_update_mid_stream_changes_decisions) {
  sl_harness_t *h = rf_harness(_i);
  PUSH(h, 0, "a", "70", 1);
  PUSH(h, 1, "", "set:50", 2);
  PUSH(h, 0, "a", "70", 3);
  PUSH(h, 0, "b", "40", 4);
  PUSH(h, 1, "", "set:100", 5);
  PUSH(h, 0, "a", "70", 6);
  PUSH(h, 0, "b", "140", 7);
  PUSH(h, 1, "", "del", 8);
  PUSH(h, 0, "b", "140", 9);
  const char *want[] = {"a:1:none",  "a:2:alert", "b:1:ok", "a:3:ok",
                        "b:2:alert", "b:3:none",  NULL};
  expect(h, want);
  sl_harness_destroy(h);
}
END_TEST

START_TEST(keyed_side_cannot_write_broadcast_state) {
  sl_harness_t *h = rf_harness(_i);
  PUSH(h, 1, "", "set:50", 1);
  PUSH(h, 0, "a", "write", 2);
  PUSH(h, 0, "a", "et:10", 3);
  ck_assert_int_eq(sl_harness_watermark(h, 0, 10), SL_OK);
  ck_assert_int_eq(sl_harness_watermark(h, 1, 10), SL_OK);
  char ro[64], tm[64];
  snprintf(ro, sizeof(ro), "a:ro:%d,%d,%d,%d", SL_ERR_STATE, SL_ERR_STATE,
           SL_ERR_STATE, SL_ERR_STATE);
  snprintf(tm, sizeof(tm), "a@10:50:%d", SL_ERR_STATE);
  const char *want[] = {ro, tm, NULL};
  expect(h, want);
  /* The rule is unchanged. */
  PUSH(h, 0, "a", "60", 11);
  const char *want2[] = {"a:1:alert", NULL};
  expect(h, want2);
  sl_harness_destroy(h);
}
END_TEST

START_TEST(broadcast_side_has_no_current_key) {
  sl_harness_t *h = rf_harness(_i);
  PUSH(h, 0, "a", "1", 1);
  PUSH(h, 1, "", "probe", 7);
  char want0[64];
  snprintf(want0, sizeof(want0), "probe:%d,%d,%d,7", SL_ERR_STATE, SL_ERR_STATE,
           SL_ERR_STATE);
  const char *want[] = {"a:1:none", want0, NULL};
  expect(h, want);
  sl_harness_destroy(h);
}
END_TEST

START_TEST(apply_keyed_visits_every_key) {
  sl_harness_t *h = rf_harness(_i);
  const char *keys[] = {"k1", "k2", "k3", "k4", "k5"};
  for (int i = 0; i < 5; i++)
    for (int j = 0; j <= i; j++)
      PUSH(h, 0, keys[i], "1", i);
  sl_harness_clear(h);
  PUSH(h, 1, "", "visit", 10);
  /* Every key once, each with its count; order: key group, then bytes. */
  size_t n = sl_harness_count(h, NULL);
  ck_assert_uint_eq(n, 5);
  bool seen[5] = {0};
  for (size_t i = 0; i < n; i++) {
    const sl_record_t *r = sl_harness_get(h, NULL, i);
    int k = ((const char *)r->value)[1] - '1';
    ck_assert(k >= 0 && k < 5 && !seen[k]);
    seen[k] = true;
    char want[16];
    snprintf(want, sizeof(want), "k%d=%d", k + 1, k + 1);
    ck_assert_msg(r->value_len == strlen(want) &&
                      memcmp(r->value, want, r->value_len) == 0,
                  "got %.*s want %s", (int)r->value_len, (const char *)r->value,
                  want);
  }
  sl_harness_clear(h);
  /* The visit cleared the counts: they start again, and a second visit
   * finds only the keys counted since. */
  PUSH(h, 0, "k3", "1", 11);
  PUSH(h, 1, "", "visit", 12);
  const char *want[] = {"k3:1:none", "k3=1", NULL};
  expect(h, want);
  sl_harness_destroy(h);
}
END_TEST

START_TEST(harness_snapshot_keeps_broadcast_state) {
  sl_harness_t *h = rf_harness(_i);
  PUSH(h, 1, "", "set:50", 1);
  PUSH(h, 0, "a", "70", 2);
  void *snap;
  size_t len;
  ck_assert_int_eq(sl_harness_snapshot(h, &snap, &len), SL_OK);
  sl_harness_destroy(h);
  char err[256];
  h = sl_harness_new_restored(backend_conf(_i), 2, true, build_rf, NULL, NULL,
                              snap, len, err, sizeof(err));
  ck_assert_msg(h != NULL, "restore: %s", err);
  free(snap);
  PUSH(h, 0, "a", "70", 3);
  PUSH(h, 0, "a", "20", 4);
  const char *want[] = {"a:2:alert", "a:3:ok", NULL};
  expect(h, want);
  sl_harness_destroy(h);
}
END_TEST

/* ---- Graph errors ------------------------------------------------------- */

static int nop_el(sl_ctx_t *c, const sl_record_t *r, void *o) {
  (void)c, (void)r, (void)o;
  return 0;
}

static int gen_one(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  out->key = "k";
  out->key_len = 1;
  out->value = "v";
  out->value_len = 1;
  out->ts = (int64_t)i;
  return 0;
}

static int reg_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  return sl_bstate_register(ctx, "rules") ? 0 : SL_ERR_STATE;
}

START_TEST(broadcast_stream_only_feeds_broadcast_process) {
  sl_generator_opts_t go = {.count = 1, .gen = gen_one};
  sl_process_ops_t pops = {.on_element = nop_el};
  sl_broadcast_process_ops_t bops = {.on_element = nop_el,
                                     .on_broadcast = nop_el};
  /* A keyed process reading a broadcast stream. */
  sl_job_t *job = tu_job(1, NULL);
  sl_stream_t *s = sl_source_generator(job, "g", &go);
  ck_assert_ptr_null(sl_process(sl_broadcast(s), "p", &pops, NULL));
  ck_assert_int_eq(sl_job_run(job), SL_ERR_GRAPH);
  ck_assert_ptr_nonnull(strstr(sl_job_errmsg(job), "broadcast stream"));
  sl_job_destroy(job);
  /* A broadcast process whose second input is not broadcast. */
  job = tu_job(1, NULL);
  s = sl_key_by(sl_source_generator(job, "g", &go), NULL, NULL);
  ck_assert_ptr_null(sl_broadcast_process(s, s, "b", &bops, NULL));
  ck_assert_int_eq(sl_job_run(job), SL_ERR_GRAPH);
  ck_assert_ptr_nonnull(strstr(sl_job_errmsg(job), "must be a broadcast"));
  sl_job_destroy(job);
  /* key_by of a broadcast stream. */
  job = tu_job(1, NULL);
  s = sl_source_generator(job, "g", &go);
  ck_assert_ptr_null(sl_key_by(sl_broadcast(s), NULL, NULL));
  ck_assert_int_eq(sl_job_run(job), SL_ERR_GRAPH);
  sl_job_destroy(job);
  /* Broadcast state outside a broadcast process function. */
  job = tu_job(1, NULL);
  s = sl_key_by(sl_source_generator(job, "g", &go), NULL, NULL);
  sl_process_ops_t reg = {.open = reg_open, .on_element = nop_el};
  sl_sink(sl_process(s, "p", &reg, NULL), "sink", tu_discard, NULL);
  ck_assert_int_eq(sl_job_run(job), SL_ERR_STATE);
  ck_assert_ptr_nonnull(
      strstr(sl_job_errmsg(job), "needs a broadcast process function"));
  sl_job_destroy(job);
}
END_TEST

/* ---- Real jobs: rules versioned by event time --------------------------
 * Transactions i = 0..N-1 (key "k<i % KEYS>", amount (i * 7919) % 100,
 * ts i) from one generator (a parallel one cannot rescale); rule versions (ts,
 * limit) from a non-parallel one. The keyed side holds each transaction until
 * the watermark passes its ts, then judges it by the latest rule version at or
 * before ts: once the watermark, the minimum of both inputs, has reached
 * ts, every version up to ts has arrived, so the result depends on event
 * time only, not on how the inputs interleave. */

#define KEYS 37
#define N_TX 30000
static const int64_t rule_ts[] = {0, 9000, 21000};
static const int64_t rule_limit[] = {90, 40, 75};
#define N_RULES 3

static int64_t amount_of(uint64_t i) {
  return (int64_t)((i * 7919) % 100);
}

static int64_t limit_at(int64_t ts) {
  int64_t l = -1;
  for (int r = 0; r < N_RULES; r++)
    if (rule_ts[r] <= ts)
      l = rule_limit[r];
  return l;
}

typedef struct jrun {
  int par;
  const char *backend;
  const char *dir;
  const char *restore;
  uint64_t stop_after;
  _Atomic uint64_t seen;
  sl_job_t *job;
  tu_sink out;
  sl_checkpoint_info_t info;
} jrun;

static int tx_gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  static __thread char key[8];
  static __thread int64_t amount;
  snprintf(key, sizeof(key), "k%d", (int)(i % KEYS));
  amount = amount_of(i);
  out->key = key;
  out->key_len = strlen(key);
  out->value = &amount;
  out->value_len = sizeof(amount);
  out->ts = (int64_t)i;
  return 0;
}

static int rule_gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  static __thread int64_t limit;
  limit = rule_limit[i];
  out->key = NULL;
  out->key_len = 0;
  out->value = &limit;
  out->value_len = sizeof(limit);
  out->ts = rule_ts[i];
  return 0;
}

typedef struct jinst {
  sl_state_t *pending;   /* ts -> amount */
  sl_bstate_t *versions; /* big-endian ts -> limit */
} jinst;

static void be64(int64_t v, unsigned char b[8]) {
  uint64_t u = (uint64_t)v ^ (1ULL << 63); /* signed order, bytewise */
  for (int i = 7; i >= 0; i--, u >>= 8)
    b[i] = (unsigned char)u;
}

static int j_open(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  jinst *in = calloc(1, sizeof(*in));
  sl_ctx_set_local(ctx, in);
  sl_state_desc_t d = {.name = "pending", .kind = SL_STATE_MAP};
  in->pending = sl_state_register(ctx, &d);
  in->versions = sl_bstate_register(ctx, "versions");
  return in->pending && in->versions ? 0 : SL_ERR_STATE;
}

static void j_close(sl_ctx_t *ctx, void *opaque) {
  (void)opaque;
  free(sl_ctx_local(ctx));
}

static int j_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  jrun *r = opaque;
  jinst *in = sl_ctx_local(ctx);
  int rc = sl_map_put(ctx, in->pending, &rec->ts, sizeof(rec->ts), rec->value,
                      rec->value_len);
  if (!rc)
    rc = sl_timer_set(ctx, SL_EVENT_TIME, rec->ts);
  /* Stop once this instance holds every rule version: they were emitted
   * before the stop, so before the final checkpoint's barrier. */
  if (!rc && r->stop_after && sl_bstate_size(ctx, in->versions) == N_RULES &&
      atomic_fetch_add(&r->seen, 1) + 1 == r->stop_after)
    sl_job_stop(r->job);
  return rc;
}

static int j_broadcast(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  jinst *in = sl_ctx_local(ctx);
  unsigned char k[8];
  be64(rec->ts, k);
  return sl_bstate_put(ctx, in->versions, k, 8, rec->value, rec->value_len);
}

static int j_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *opaque) {
  (void)d;
  (void)opaque;
  jinst *in = sl_ctx_local(ctx);
  const void *v;
  size_t len;
  int rc = sl_map_get(ctx, in->pending, &ts, sizeof(ts), &v, &len);
  if (rc != 1)
    return rc < 0 ? rc : SL_ERR_STATE;
  int64_t amount;
  memcpy(&amount, v, sizeof(amount));
  /* The latest version at or before ts. */
  unsigned char want[8];
  be64(ts, want);
  int64_t limit = -1;
  sl_bstate_iter_t it;
  const void *mk, *val;
  size_t mkl, vl;
  sl_bstate_iter(ctx, in->versions, &it);
  while (sl_bstate_next(&it, &mk, &mkl, &val, &vl) == 1 &&
         memcmp(mk, want, 8) <= 0)
    memcpy(&limit, val, sizeof(limit));
  if ((rc = sl_map_remove(ctx, in->pending, &ts, sizeof(ts))) < 0)
    return rc;
  if (limit >= 0 && amount > limit) {
    const void *key;
    size_t kl;
    sl_ctx_key(ctx, &key, &kl);
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%.*s:%lld", (int)kl, (const char *)key,
                     (long long)ts);
    sl_record_t o = {key, kl, buf, (size_t)n, ts};
    return sl_emit(ctx, &o);
  }
  return 0;
}

static int run_rules_job(jrun *r) {
  char p[16];
  snprintf(p, sizeof(p), "%d", r->par);
  char state_dir[512];
  snprintf(state_dir, sizeof(state_dir), "%s/state", r->dir);
  const char *kv[16] = {"checkpoint.dir", r->dir,     "log.level", "warn",
                        "state.backend",  r->backend, "state.dir", state_dir};
  int n = 8;
  if (r->restore) {
    kv[n++] = "restore.from";
    kv[n++] = r->restore;
  }
  kv[n] = NULL;
  sl_job_t *job = r->job = tu_job_kv(r->par, kv);
  tu_sink_init(&r->out);
  sl_watermark_spec_t wm = {.kind = SL_WM_MONOTONOUS};
  sl_generator_opts_t tg = {.count = N_TX, .gen = tx_gen, .opaque = r};
  sl_stream_t *tx =
      sl_with_watermarks(sl_source_generator(job, "tx", &tg), &wm);
  sl_generator_opts_t rg = {.count = N_RULES, .gen = rule_gen};
  sl_stream_t *rules =
      sl_with_watermarks(sl_source_generator(job, "rules", &rg), &wm);
  sl_broadcast_process_ops_t ops = {.open = j_open,
                                    .on_element = j_element,
                                    .on_broadcast = j_broadcast,
                                    .on_timer = j_timer,
                                    .close = j_close};
  sl_stream_t *s = sl_broadcast_process(sl_key_by(tx, NULL, NULL),
                                        sl_broadcast(rules), "judge", &ops, r);
  ck_assert_int_eq(sl_sink(s, "sink", tu_sink_fn, &r->out), SL_OK);
  int rc = sl_job_run(job);
  sl_job_checkpoint_info(job, &r->info);
  if (rc)
    fprintf(stderr, "job: %s\n", sl_job_errmsg(job));
  sl_job_destroy(job);
  r->job = NULL;
  return rc;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Outputs of the runs (in any order) against the model's alerts, exactly:
 * nothing missing, nothing twice, nothing else. */
static void expect_alerts(jrun *const *runs, int n_runs, bool *workers_seen) {
  size_t cap = N_TX, nw = 0, ng = 0;
  char **want = calloc(cap, sizeof(*want)),
       **got = calloc(cap * 2, sizeof(*got));
  for (uint64_t i = 0; i < N_TX; i++) {
    if (amount_of(i) > limit_at((int64_t)i)) {
      char b[64];
      snprintf(b, sizeof(b), "k%d:%lld", (int)(i % KEYS), (long long)i);
      want[nw++] = strdup(b);
    }
  }
  for (int k = 0; k < n_runs; k++) {
    for (size_t i = 0; i < runs[k]->out.n; i++) {
      ck_assert_uint_lt(ng, cap * 2);
      got[ng++] = strdup(runs[k]->out.recs[i].value);
      if (workers_seen)
        workers_seen[runs[k]->out.recs[i].worker] = true;
    }
  }
  qsort(want, nw, sizeof(*want), cmp_str);
  qsort(got, ng, sizeof(*got), cmp_str);
  for (size_t i = 0; i < nw || i < ng; i++)
    ck_assert_msg(i < nw && i < ng && strcmp(want[i], got[i]) == 0,
                  "alert #%zu: got %s, want %s (%zu alerts, want %zu)", i,
                  i < ng ? got[i] : "(none)", i < nw ? want[i] : "(none)", ng,
                  nw);
  for (size_t i = 0; i < nw; i++)
    free(want[i]);
  for (size_t i = 0; i < ng; i++)
    free(got[i]);
  free(want);
  free(got);
}

static char *tmpdir(void) {
  char *d = strdup("/tmp/sluice-bcast-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(d));
  return d;
}

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

START_TEST(every_key_on_every_worker_sees_rules) {
  char *dir = tmpdir();
  jrun r = {.par = 2, .backend = backends[_i], .dir = dir};
  ck_assert_int_eq(run_rules_job(&r), SL_OK);
  bool workers[2] = {false, false};
  jrun *runs[] = {&r};
  expect_alerts(runs, 1, workers);
  /* Keys of both workers alerted under rules that changed mid-stream. */
  ck_assert(workers[0] && workers[1]);
  tu_sink_free(&r.out);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  free(dir);
}
END_TEST

/* Runs sluice-ckpt with args; its stdout, malloc'd. */
static char *ckpt_tool(const char *args) {
  const char *build = getenv("SLUICE_BUILD_ROOT");
  char cmd[2048];
  snprintf(cmd, sizeof(cmd), "%s/tools/sluice-ckpt %s 2>&1",
           build ? build : "build", args);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  size_t cap = 1 << 16, n = 0;
  char *text = malloc(cap);
  for (size_t got; (got = fread(text + n, 1, cap - n - 1, p)) > 0;) {
    n += got;
    if (n + 1 == cap)
      text = realloc(text, cap *= 2);
  }
  text[n] = 0;
  ck_assert_int_eq(pclose(p), 0);
  return text;
}

/* sluice-ckpt shows the broadcast state of checkpoint id once, with the
 * number of copies, and dumps its entries from one copy. */
static void expect_tool_sees_rules(const char *dir, uint64_t id, int par) {
  char args[600];
  snprintf(args, sizeof(args), "--json inspect %s/chk-%llu", dir,
           (unsigned long long)id);
  char *text = ckpt_tool(args);
  char want[256];
  snprintf(want, sizeof(want),
           "\"broadcast_state\": [\n    {\n      \"uid\": \"judge\",\n      "
           "\"state\": \"versions\",\n      \"entries\": %d,\n      "
           "\"bytes\": %d,\n      \"copies\": %d\n    }\n  ]",
           N_RULES, N_RULES * 16, par);
  ck_assert_msg(strstr(text, want), "inspect: %s\nwant %s", text, want);
  free(text);
  snprintf(args, sizeof(args), "dump %s/chk-%llu --uid judge --state versions",
           dir, (unsigned long long)id);
  text = ckpt_tool(args);
  int lines = 0;
  for (const char *l = text; (l = strstr(l, "\"type\":\"broadcast\"")); l++)
    lines++;
  ck_assert_msg(lines == N_RULES, "dump: %s", text);
  free(text);
}

/* Stop after a third of the input (final checkpoint), restore at another
 * parallelism: the rules source is done, so every rule the second run
 * applies comes from the restored broadcast state. */
static void restore_rescaled(int bi, int from, int to) {
  char *dir = tmpdir();
  jrun a = {.par = from,
            .backend = backends[bi],
            .dir = dir,
            .stop_after = N_TX / 3 / (uint64_t)from};
  ck_assert_int_eq(run_rules_job(&a), SL_OK);
  ck_assert_uint_gt(a.info.id, 0);
  expect_tool_sees_rules(dir, a.info.id, from);
  jrun b = {
      .par = to, .backend = backends[bi], .dir = dir, .restore = "latest"};
  ck_assert_int_eq(run_rules_job(&b), SL_OK);
  ck_assert_uint_eq(b.info.restored_from, a.info.id);
  /* The second run had work left that needed the rules. */
  ck_assert_uint_gt(b.out.n, 0);
  jrun *runs[] = {&a, &b};
  expect_alerts(runs, 2, NULL);
  tu_sink_free(&a.out);
  tu_sink_free(&b.out);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  free(dir);
}

START_TEST(restore_broadcast_state_1_to_2) {
  restore_rescaled(_i, 1, 2);
}
END_TEST

START_TEST(restore_broadcast_state_2_to_1) {
  restore_rescaled(_i, 2, 1);
}
END_TEST

/* ---- An input that ended while the other was idle --------------------
 * The keyed input is idle from its open (as a Kafka source in group mode
 * is until the group assigns it partitions), the broadcast input ends at
 * once (an empty rules input, non-parallel): the operator's watermark
 * must not go to the maximum with it, or the keyed records that come
 * later set timers behind the watermark, which never fire. */

static int late_polls;

static int idle_open(sl_source_ctx_t *ctx, void *opaque) {
  (void)opaque;
  sl_source_own_watermarks(ctx);
  return sl_source_idle(ctx, true);
}

static int idle_then_records(sl_source_ctx_t *ctx, void *opaque) {
  (void)opaque;
  if (++late_polls < 50)
    return SL_POLL_EMPTY;
  int rc = sl_source_idle(ctx, false);
  for (int i = 0; i < 3 && !rc; i++) {
    char key[8];
    snprintf(key, sizeof(key), "k%d", i);
    sl_record_t r = {key, strlen(key), "x", 1, 10 * (i + 1)};
    rc = sl_source_emit(ctx, &r);
  }
  return rc ? rc : SL_POLL_END;
}

static int ends_at_once(sl_source_ctx_t *ctx, void *opaque) {
  (void)ctx, (void)opaque;
  return SL_POLL_END;
}

static int t_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  return sl_timer_set(ctx, SL_EVENT_TIME, rec->ts);
}

static int t_broadcast(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx, (void)rec, (void)opaque;
  return 0;
}

static int t_timer(sl_ctx_t *ctx, sl_time_domain d, int64_t ts, void *opaque) {
  (void)d, (void)opaque;
  return emitf(ctx, "fired@%lld", (long long)ts);
}

START_TEST(ended_broadcast_input_waits_for_idle_keyed_input) {
  late_polls = 0;
  char err[256];
  sl_job_t *job = sl_job_new("ended-idle", backend_conf(_i), err, sizeof(err));
  ck_assert_ptr_nonnull(job);
  sl_source_ops_t keyed = {.open = idle_open, .poll = idle_then_records};
  sl_source_ops_t none = {.poll = ends_at_once};
  sl_broadcast_process_ops_t ops = {.on_element = t_element,
                                    .on_broadcast = t_broadcast,
                                    .on_timer = t_timer};
  sl_stream_t *s = sl_broadcast_process(
      sl_key_by(sl_source(job, "keyed", &keyed, NULL), NULL, NULL),
      sl_broadcast(sl_source(job, "no-rules", &none, NULL)), "judge", &ops,
      NULL);
  tu_sink out = {0};
  ck_assert_int_eq(sl_sink(s, "sink", tu_sink_fn, &out), SL_OK);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_job_destroy(job);
  const char *want[] = {"fired@10", "fired@20", "fired@30"};
  ck_assert_uint_eq(out.n, 3);
  for (size_t i = 0; i < 3; i++)
    ck_assert_str_eq(out.recs[i].value, want[i]);
  tu_sink_free(&out);
}
END_TEST

int main(void) {
  snprintf(g_state_dir, sizeof(g_state_dir), "/tmp/sluice-test-bcast-XXXXXX");
  if (!mkdtemp(g_state_dir)) {
    perror("state.dir");
    return EXIT_FAILURE;
  }
  Suite *s = suite_create("broadcast");
  TCase *tc = tcase_create("broadcast");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, rule_update_mid_stream_changes_decisions, 0,
                      N_BACKENDS);
  tcase_add_loop_test(tc, keyed_side_cannot_write_broadcast_state, 0,
                      N_BACKENDS);
  tcase_add_loop_test(tc, broadcast_side_has_no_current_key, 0, N_BACKENDS);
  tcase_add_loop_test(tc, apply_keyed_visits_every_key, 0, N_BACKENDS);
  tcase_add_loop_test(tc, harness_snapshot_keeps_broadcast_state, 0,
                      N_BACKENDS);
  tcase_add_test(tc, broadcast_stream_only_feeds_broadcast_process);
  tcase_add_loop_test(tc, every_key_on_every_worker_sees_rules, 0, N_BACKENDS);
  tcase_add_loop_test(tc, restore_broadcast_state_1_to_2, 0, N_BACKENDS);
  tcase_add_loop_test(tc, restore_broadcast_state_2_to_1, 0, N_BACKENDS);
  tcase_add_loop_test(tc, ended_broadcast_input_waits_for_idle_keyed_input, 0,
                      N_BACKENDS);
  suite_add_tcase(s, tc);
  int rc = tu_run(s);
  nftw(g_state_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  return rc;
}
