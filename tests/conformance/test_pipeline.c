/* SPDX-License-Identifier: Apache-2.0 */
/* End-to-end behaviour of the runtime: chaining, side outputs, union,
 * key_by at P=1 and P=2 (same per-key results and order), watermarks and
 * idleness, the error policy, stop (also from a signal handler),
 * backpressure with a slow sink, and graph validation. */
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#include "core/hash.h"
#include "check_main.h"
#include "testutil.h"

/* ---- Generators --------------------------------------------------------- */

typedef struct numgen {
  uint64_t keys; /* 0: no key */
} numgen;

static _Thread_local char tl_val[32], tl_key[32];

static int gen_num(uint64_t i, sl_record_t *out, void *opaque) {
  numgen *g = opaque;
  out->value_len =
      (size_t)snprintf(tl_val, sizeof(tl_val), "%llu", (unsigned long long)i);
  out->value = tl_val;
  out->ts = (int64_t)i;
  if (g && g->keys) {
    uint64_t k = sl__mix64(i * 7919 + 1) % g->keys;
    out->key_len = (size_t)snprintf(tl_key, sizeof(tl_key), "k%llu",
                                    (unsigned long long)k);
    out->key = tl_key;
  }
  return 0;
}

static int double_map(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                      void *opaque) {
  (void)opaque;
  long long v = tu_num(in->value, in->value_len);
  char *b = sl_ctx_alloc(ctx, 32);
  out->value_len = (size_t)snprintf(b, 32, "%lld", v * 2);
  out->value = b;
  return 0;
}

static int keep_mult4(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)opaque;
  return tu_num(rec->value, rec->value_len) % 4 == 0;
}

START_TEST(chain_map_filter_sink) {
  sl_job_t *job = tu_job(1, NULL);
  tu_sink sink;
  tu_sink_init(&sink);
  sl_generator_opts_t go = {.count = 1000, .gen = gen_num};
  sl_stream_t *s = sl_source_generator(job, "gen", &go);
  s = sl_map(s, "double", double_map, NULL);
  s = sl_filter(s, "mult4", keep_mult4, NULL);
  ck_assert_int_eq(sl_sink(s, "sink", tu_sink_fn, &sink), SL_OK);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  ck_assert_uint_eq(sink.n, 500);
  for (size_t i = 0; i < sink.n; i++)
    ck_assert_int_eq(strtol(sink.recs[i].value, NULL, 10), (long)(i * 4));
  sl_op_stats_t st;
  ck_assert_int_eq(sl_job_op_stats(job, "mult4", &st), SL_OK);
  ck_assert_uint_eq(st.records_in, 1000);
  ck_assert_uint_eq(st.records_out, 500);
  ck_assert_int_eq(sl_job_op_stats(job, "nope", &st), SL_ERR_NOTFOUND);
  sl_job_destroy(job);
  tu_sink_free(&sink);
}
END_TEST

static int split_odd(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  if (tu_num(rec->value, rec->value_len) % 2)
    return sl_emit_to(ctx, "odd", rec);
  int rc = sl_emit(ctx, rec);
  return rc ? rc : sl_emit(ctx, rec);
}

START_TEST(flat_map_and_side_output) {
  sl_job_t *job = tu_job(1, NULL);
  tu_sink even, odd;
  tu_sink_init(&even);
  tu_sink_init(&odd);
  sl_generator_opts_t go = {.count = 100, .gen = gen_num};
  sl_stream_t *s = sl_flat_map(sl_source_generator(job, "gen", &go), "split",
                               split_odd, NULL);
  sl_sink(s, "even", tu_sink_fn, &even);
  sl_sink(sl_side_output(s, "odd"), "odd", tu_sink_fn, &odd);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  ck_assert_uint_eq(even.n, 100); /* 50 even records, twice each */
  ck_assert_uint_eq(odd.n, 50);
  ck_assert_str_eq(odd.recs[0].value, "1");
  ck_assert_str_eq(even.recs[1].value, "0");
  sl_job_destroy(job);
  tu_sink_free(&even);
  tu_sink_free(&odd);
}
END_TEST

START_TEST(union_of_two_sources) {
  sl_job_t *job = tu_job(2, NULL);
  tu_sink sink;
  tu_sink_init(&sink);
  sl_generator_opts_t a = {.count = 300, .gen = gen_num, .parallel = true};
  sl_generator_opts_t b = {.count = 200, .gen = gen_num};
  sl_stream_t *in[2] = {sl_source_generator(job, "a", &a),
                        sl_source_generator(job, "b", &b)};
  sl_sink(sl_union(in, 2, "union"), "sink", tu_sink_fn, &sink);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  ck_assert_uint_eq(sink.n, 500);
  /* The union is an operator named by its uid like any other. */
  sl_op_stats_t st;
  ck_assert_int_eq(sl_job_op_stats(job, "union", &st), SL_OK);
  ck_assert_uint_eq(st.records_in, 500);
  ck_assert_uint_eq(st.records_out, 500);
  sl_job_destroy(job);
  tu_sink_free(&sink);
}
END_TEST

START_TEST(union_uid_is_checked_like_any_other) {
  sl_job_t *job = tu_job(1, NULL);
  sl_generator_opts_t a = {.count = 3, .gen = gen_num};
  sl_stream_t *in[2] = {sl_source_generator(job, "a", &a),
                        sl_source_generator(job, "b", &a)};
  /* Without a uid: a generated one, stable for a given graph. */
  sl_stream_t *u = sl_union(in, 2, NULL);
  ck_assert_ptr_nonnull(u);
  sl_op_stats_t st;
  ck_assert_int_eq(sl_job_op_stats(job, "union#2", &st), SL_OK);
  /* A uid taken by another operator is refused, as for a map. */
  ck_assert_ptr_null(sl_union(in, 2, "a"));
  ck_assert_str_eq(sl_job_errmsg(job),
                   "union: duplicate uid \"a\" (uids name operators and "
                   "their state, so they must be unique)");
  sl_job_destroy(job);
  job = tu_job(1, NULL);
  in[0] = sl_source_generator(job, "a", &a);
  ck_assert_ptr_null(sl_union(in, 1, "u"));
  ck_assert_str_eq(sl_job_errmsg(job), "union \"u\": needs at least 2 streams");
  sl_job_destroy(job);
}
END_TEST

/* ---- P=1 vs P=2 equivalence --------------------------------------------- */

#define NKEYS 1000
typedef struct keyed_result {
  uint64_t chain[NKEYS]; /* hash chain of values in arrival order */
  uint64_t count[NKEYS];
  int worker[NKEYS];
} keyed_result;

static int keyed_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  keyed_result *r = opaque;
  char kb[16];
  memcpy(kb, (const char *)rec->key + 1, rec->key_len - 1);
  kb[rec->key_len - 1] = '\0';
  int k = atoi(kb);
  uint64_t v = (uint64_t)tu_num(rec->value, rec->value_len);
  /* Each key lives on exactly one worker, so its slot has one writer. */
  r->chain[k] = sl__mix64(r->chain[k] ^ v) + 1;
  r->count[k]++;
  r->worker[k] = sl_ctx_worker(ctx);
  return 0;
}

static void run_keyed(int par, keyed_result *r, uint64_t n) {
  memset(r, 0, sizeof(*r));
  sl_job_t *job = tu_job(par, NULL);
  static numgen g = {.keys = NKEYS};
  sl_generator_opts_t go = {.count = n, .gen = gen_num, .opaque = &g};
  sl_stream_t *s = sl_key_by(sl_source_generator(job, "gen", &go), NULL, NULL);
  sl_sink(s, "sink", keyed_sink, r);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_job_destroy(job);
}

START_TEST(p1_p2_same_per_key_results) {
  static keyed_result r1, r2;
  run_keyed(1, &r1, 1000000);
  run_keyed(2, &r2, 1000000);
  uint64_t total = 0;
  int on_w1 = 0;
  for (int k = 0; k < NKEYS; k++) {
    ck_assert_uint_eq(r1.count[k], r2.count[k]);
    ck_assert_msg(r1.chain[k] == r2.chain[k], "key k%d: order differs", k);
    total += r2.count[k];
    char key[16];
    int len = snprintf(key, sizeof(key), "k%d", k);
    int expect =
        sl__kg_worker(sl__key_group(sl__hash64(key, (size_t)len), 128), 2, 128);
    if (r2.count[k]) {
      ck_assert_int_eq(r2.worker[k], expect);
      on_w1 += expect == 1;
    }
  }
  ck_assert_uint_eq(total, 1000000);
  ck_assert_int_gt(on_w1, NKEYS / 4); /* the work really is split */
}
END_TEST

/* The same into a keyed process function and into a sink (the
 * exchange's batch paths for keyed and other readers), at P=1..4, for
 * a power-of-two and another max.parallelism, and with batches shorter
 * than the exchange's chunks of routing: every key reaches the worker
 * its key group names, with its records in the order of P=1. */
static void run_keyed_process(int par, const char *max_par,
                              const char *batch_size, bool keyed,
                              keyed_result *r, uint64_t n) {
  memset(r, 0, sizeof(*r));
  const char *kv[] = {"max.parallelism", max_par, "batch.size", batch_size,
                      NULL};
  sl_job_t *job = tu_job_kv(par, kv);
  static numgen g = {.keys = NKEYS};
  sl_generator_opts_t go = {.count = n, .gen = gen_num, .opaque = &g};
  sl_process_ops_t po = {.on_element = keyed_sink};
  sl_stream_t *s = sl_key_by(sl_source_generator(job, "gen", &go), NULL, NULL);
  if (keyed)
    sl_sink(sl_process(s, "p", &po, r), "sink", tu_discard, NULL);
  else
    sl_sink(s, "sink", keyed_sink, r);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_job_destroy(job);
}

START_TEST(key_by_places_keys_at_any_parallelism) {
  static keyed_result r1, rp;
  const char *max_pars[] = {"128", "100", "100"};
  const char *batch_sizes[] = {"512", "512", "5"};
  for (int c = 0; c < 6; c++) {
    int m = c / 2;
    bool keyed = c % 2;
    uint32_t k_groups = (uint32_t)atoi(max_pars[m]);
    run_keyed_process(1, max_pars[m], batch_sizes[m], keyed, &r1, 200000);
    for (int par = 2; par <= 4; par++) {
      run_keyed_process(par, max_pars[m], batch_sizes[m], keyed, &rp, 200000);
      for (int k = 0; k < NKEYS; k++) {
        ck_assert_uint_eq(r1.count[k], rp.count[k]);
        ck_assert_msg(r1.chain[k] == rp.chain[k],
                      "K=%u P=%d key k%d: order differs", k_groups, par, k);
        char key[16];
        int len = snprintf(key, sizeof(key), "k%d", k);
        uint64_t h = sl__hash64(key, (size_t)len);
        int expect = sl__kg_worker((uint32_t)(h % k_groups), par, k_groups);
        if (rp.count[k])
          ck_assert_msg(rp.worker[k] == expect, "K=%u P=%d key k%d: worker %d",
                        k_groups, par, k, rp.worker[k]);
      }
    }
  }
}
END_TEST

START_TEST(parallel_source_through_exchange) {
  sl_job_t *job = tu_job(2, NULL);
  static numgen g = {.keys = 97};
  static keyed_result r;
  memset(&r, 0, sizeof(r));
  sl_generator_opts_t go = {
      .count = 200000, .gen = gen_num, .opaque = &g, .parallel = true};
  sl_stream_t *s = sl_key_by(sl_source_generator(job, "gen", &go), NULL, NULL);
  sl_sink(s, "sink", keyed_sink, &r);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  uint64_t total = 0;
  for (int k = 0; k < NKEYS; k++)
    total += r.count[k];
  ck_assert_uint_eq(total, 200000);
  sl_job_destroy(job);
}
END_TEST

/* Records of 100 KB through key_by into a keyed process function and a
 * sink: a batch's byte buffer grows past its 256 KiB with records
 * already in it, and every record must still read its own bytes. */
#define BIG_LEN (100 * 1024)
#define BIG_N 300

static _Thread_local unsigned char tl_big[BIG_LEN];

static int gen_big(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  for (size_t j = 0; j < BIG_LEN; j += 64)
    tl_big[j] = (unsigned char)(i * 31 + j / 64);
  tl_big[BIG_LEN - 1] = (unsigned char)i;
  snprintf(tl_key, sizeof(tl_key), "k%llu", (unsigned long long)(i % 7));
  *out = (sl_record_t){tl_key, strlen(tl_key), tl_big, BIG_LEN, (int64_t)i};
  return 0;
}

typedef struct big_result {
  _Atomic uint64_t seen, bad;
} big_result;

static int big_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  big_result *r = opaque;
  uint64_t i = (uint64_t)rec->ts;
  const unsigned char *v = rec->value;
  bool ok = rec->value_len == BIG_LEN && v[BIG_LEN - 1] == (unsigned char)i;
  for (size_t j = 0; ok && j < BIG_LEN; j += 64)
    ok = v[j] == (unsigned char)(i * 31 + j / 64);
  char key[32];
  snprintf(key, sizeof(key), "k%llu", (unsigned long long)(i % 7));
  ok =
      ok && rec->key_len == strlen(key) && !memcmp(rec->key, key, rec->key_len);
  atomic_fetch_add(ok ? &r->seen : &r->bad, 1);
  return 0;
}

START_TEST(large_records_through_keyed_batches) {
  for (int c = 0; c < 4; c++) {
    int par = 1 + c / 2;
    bool keyed = c % 2; /* else a sink reads key_by: plain batches */
    static big_result r;
    atomic_store(&r.seen, 0);
    atomic_store(&r.bad, 0);
    sl_job_t *job = tu_job(par, NULL);
    sl_generator_opts_t go = {.count = BIG_N, .gen = gen_big, .parallel = true};
    sl_process_ops_t po = {.on_element = big_element};
    sl_stream_t *k =
        sl_key_by(sl_source_generator(job, "gen", &go), NULL, NULL);
    if (keyed)
      sl_sink(sl_process(k, "check", &po, &r), "sink", tu_discard, NULL);
    else
      sl_sink(k, "check", big_element, &r);
    int rc = sl_job_run(job);
    ck_assert_msg(rc == SL_OK, "P=%d keyed=%d: %s", par, keyed,
                  sl_job_errmsg(job));
    sl_job_destroy(job);
    ck_assert_uint_eq(atomic_load(&r.bad), 0);
    ck_assert_uint_eq(atomic_load(&r.seen), BIG_N);
  }
}
END_TEST

/* Records with keys and values of every length from 0 to 70 bytes, and
 * 8-byte keys, through key_by at P=2 into a keyed process function and a
 * sink: every short length the source and the exchange copy in their own
 * ways reaches the reader byte for byte. */
#define SHORT_MAX 70
#define SHORT_N 20000

static _Thread_local unsigned char tl_short_k[SHORT_MAX], tl_short_v[SHORT_MAX];

static size_t short_len(uint64_t i, int which) {
  /* Half the keys 8 bytes long (the exchange's own case), the rest and
   * the values of every length. */
  return which == 0 && i % 2
             ? 8
             : (size_t)((i / 2 + (uint64_t)which * 17) % (SHORT_MAX + 1));
}

static unsigned char short_byte(uint64_t i, int which, size_t j) {
  return (unsigned char)(i * 131 + (uint64_t)which * 7 + j);
}

static int gen_short(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  size_t kl = short_len(i, 0), vl = short_len(i, 1);
  for (size_t j = 0; j < kl; j++)
    tl_short_k[j] = short_byte(i, 0, j);
  for (size_t j = 0; j < vl; j++)
    tl_short_v[j] = short_byte(i, 1, j);
  *out = (sl_record_t){tl_short_k, kl, tl_short_v, vl, (int64_t)i};
  return 0;
}

static int short_element(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  big_result *r = opaque;
  uint64_t i = (uint64_t)rec->ts;
  bool ok =
      rec->key_len == short_len(i, 0) && rec->value_len == short_len(i, 1);
  for (size_t j = 0; ok && j < rec->key_len; j++)
    ok = ((const unsigned char *)rec->key)[j] == short_byte(i, 0, j);
  for (size_t j = 0; ok && j < rec->value_len; j++)
    ok = ((const unsigned char *)rec->value)[j] == short_byte(i, 1, j);
  atomic_fetch_add(ok ? &r->seen : &r->bad, 1);
  return 0;
}

START_TEST(short_records_of_every_length_cross_intact) {
  for (int keyed = 0; keyed <= 1; keyed++) {
    static big_result r;
    atomic_store(&r.seen, 0);
    atomic_store(&r.bad, 0);
    sl_job_t *job = tu_job(2, NULL);
    sl_generator_opts_t go = {
        .count = SHORT_N, .gen = gen_short, .parallel = true};
    sl_process_ops_t po = {.on_element = short_element};
    sl_stream_t *k =
        sl_key_by(sl_source_generator(job, "gen", &go), NULL, NULL);
    if (keyed)
      sl_sink(sl_process(k, "check", &po, &r), "sink", tu_discard, NULL);
    else
      sl_sink(k, "check", short_element, &r);
    int rc = sl_job_run(job);
    ck_assert_msg(rc == SL_OK, "keyed=%d: %s", keyed, sl_job_errmsg(job));
    sl_job_destroy(job);
    ck_assert_uint_eq(atomic_load(&r.bad), 0);
    ck_assert_uint_eq(atomic_load(&r.seen), SHORT_N);
  }
}
END_TEST

/* A key function whose key lives in its own buffer, overwritten by its
 * next call, as the key_by contract allows: "k<value % 13>" padded to a
 * length that varies with the value, and every 1000th key 70 KB long
 * (past what the exchange keeps of keys between two batches). */
enum { KEYFN_BIG = 70 * 1024 };
static size_t keyfn_key(long long v, char *buf) {
  size_t len = v % 1000 == 999 ? KEYFN_BIG : 2 + (size_t)(v % 7) * 5;
  memset(buf, 'a' + (int)(v % 13), len);
  buf[0] = 'k';
  return len;
}

static int own_buffer_key(const sl_record_t *rec, const void **key,
                          size_t *key_len, void *opaque) {
  static _Thread_local char buf[KEYFN_BIG];
  (void)opaque;
  *key_len = keyfn_key(tu_num(rec->value, rec->value_len), buf);
  *key = buf;
  return 0;
}

typedef struct keyfn_check {
  _Atomic uint64_t seen, bad;
} keyfn_check;

static int keyfn_record(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  keyfn_check *c = opaque;
  static _Thread_local char want[KEYFN_BIG];
  size_t len = keyfn_key(tu_num(rec->value, rec->value_len), want);
  bool ok = rec->key_len == len && !memcmp(rec->key, want, len);
  atomic_fetch_add(ok ? &c->seen : &c->bad, 1);
  return 0;
}

/* Every record reaches the sink (no keyed reader) and a keyed process
 * function with the key its key function gave it, at P=1 and P=2,
 * although the function's buffer is overwritten by the next record's key
 * before the batch is delivered. */
START_TEST(key_function_keys_in_its_own_buffer_survive_batches) {
  for (int par = 1; par <= 2; par++) {
    for (int keyed = 0; keyed <= 1; keyed++) {
      static keyfn_check c;
      atomic_store(&c.seen, 0);
      atomic_store(&c.bad, 0);
      sl_job_t *job = tu_job(par, NULL);
      sl_generator_opts_t go = {
          .count = 20000, .gen = gen_num, .parallel = true};
      sl_stream_t *s =
          sl_key_by(sl_source_generator(job, "gen", &go), own_buffer_key, NULL);
      if (keyed) {
        sl_process_ops_t po = {.on_element = keyfn_record};
        sl_sink(sl_process(s, "check", &po, &c), "sink", tu_discard, NULL);
      } else {
        sl_sink(s, "sink", keyfn_record, &c);
      }
      int rc = sl_job_run(job);
      ck_assert_msg(rc == SL_OK, "P=%d: %s", par, sl_job_errmsg(job));
      sl_job_destroy(job);
      ck_assert_msg(
          atomic_load(&c.bad) == 0,
          "P=%d keyed=%d: %llu of %llu records with another key", par, keyed,
          (unsigned long long)atomic_load(&c.bad),
          (unsigned long long)(atomic_load(&c.bad) + atomic_load(&c.seen)));
      ck_assert_uint_eq(atomic_load(&c.seen), 20000);
    }
  }
}
END_TEST

/* ---- Batches from the source on ----------------------------------------- */

/* A map whose output lives in its own buffer, overwritten by its next
 * call, as the map contract allows: records handed on in a batch must
 * each keep their own bytes. */
static int own_buffer_map(sl_ctx_t *ctx, const sl_record_t *in,
                          sl_record_t *out, void *opaque) {
  static _Thread_local char buf[32];
  (void)ctx;
  (void)opaque;
  out->value_len = (size_t)snprintf(buf, sizeof(buf), "v%lld",
                                    tu_num(in->value, in->value_len));
  out->value = buf;
  return 0;
}

START_TEST(map_output_in_its_own_buffer_survives_batches) {
  sl_job_t *job = tu_job(1, NULL);
  tu_sink sink;
  tu_sink_init(&sink);
  sl_generator_opts_t go = {.count = 5000, .gen = gen_num};
  sl_stream_t *s = sl_source_generator(job, "gen", &go);
  s = sl_map(s, "own", own_buffer_map, NULL);
  ck_assert_int_eq(sl_sink(s, "sink", tu_sink_fn, &sink), SL_OK);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  ck_assert_uint_eq(sink.n, 5000);
  for (size_t i = 0; i < sink.n; i++) {
    char want[32];
    snprintf(want, sizeof(want), "v%zu", i);
    ck_assert_str_eq(sink.recs[i].value, want);
  }
  sl_job_destroy(job);
  tu_sink_free(&sink);
}
END_TEST

/* Outputs larger than a map's batch buffer start with: each still keeps
 * its own bytes. */
enum { BIG_VALUE = 40000 };
static int own_big_map(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                       void *opaque) {
  static _Thread_local char buf[BIG_VALUE];
  (void)ctx;
  (void)opaque;
  long long v = tu_num(in->value, in->value_len);
  memset(buf, 'a' + (int)(v % 26), sizeof(buf));
  out->value_len = sizeof(buf) - (size_t)(v % 3);
  out->value = buf;
  return 0;
}

typedef struct big_check {
  size_t n, bad;
} big_check;

static int big_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  big_check *c = opaque;
  size_t i = c->n++;
  const char *p = rec->value;
  bool ok = rec->value_len == BIG_VALUE - i % 3;
  for (size_t k = 0; ok && k < rec->value_len; k++)
    ok = p[k] == (char)('a' + (int)(i % 26));
  c->bad += !ok;
  return 0;
}

START_TEST(map_output_larger_than_its_buffer_survives_batches) {
  sl_job_t *job = tu_job(1, NULL);
  big_check c = {0};
  sl_generator_opts_t go = {.count = 2000, .gen = gen_num};
  sl_stream_t *s = sl_source_generator(job, "gen", &go);
  s = sl_map(s, "big", own_big_map, NULL);
  ck_assert_int_eq(sl_sink(s, "sink", big_sink, &c), SL_OK);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  ck_assert_uint_eq(c.n, 2000);
  ck_assert_uint_eq(c.bad, 0);
  sl_job_destroy(job);
}
END_TEST

/* A source that holds its records in an array and hands them on with
 * sl_source_emit_batch() in chunks of uneven size (or one by one with
 * sl_source_emit()), then scribbles over the array: the records are
 * borrowed for the call only. Every subtask reads i = w, w+P, ... */
#define HELD_N 20000
typedef struct held_src {
  bool batch;
  uint64_t next[2];
} held_src;

static _Thread_local sl_record_t tl_held[700];
static _Thread_local char tl_held_bytes[700][2][16];

static int held_open(sl_source_ctx_t *ctx, void *opaque) {
  held_src *h = opaque;
  h->next[sl_source_ctx_subtask(ctx)] = (uint64_t)sl_source_ctx_subtask(ctx);
  return 0;
}

static int held_poll(sl_source_ctx_t *ctx, void *opaque) {
  held_src *h = opaque;
  int sub = sl_source_ctx_subtask(ctx);
  uint64_t step = (uint64_t)sl_source_ctx_subtasks(ctx), i = h->next[sub];
  /* 1, 2, ..., 699 records per poll: batches cut anywhere. */
  size_t want = 1 + (size_t)(i * 7 % 699), n = 0;
  for (; n < want && i < HELD_N; n++, i += step) {
    char *k = tl_held_bytes[n][0], *v = tl_held_bytes[n][1];
    int kl = snprintf(k, 16, "k%llu", (unsigned long long)(i * 31 % 101));
    int vl = snprintf(v, 16, "%llu", (unsigned long long)i);
    tl_held[n] = (sl_record_t){k, (size_t)kl, v, (size_t)vl, (int64_t)i};
  }
  int rc = 0;
  if (h->batch)
    rc = sl_source_emit_batch(ctx, tl_held, n);
  for (size_t j = 0; !h->batch && !rc && j < n; j++)
    rc = sl_source_emit(ctx, &tl_held[j]);
  memset(tl_held_bytes, 'x', sizeof(tl_held_bytes));
  h->next[sub] = i;
  return rc ? rc : i >= HELD_N ? SL_POLL_END : SL_POLL_MORE;
}

static int drop_mult5(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)opaque;
  return tu_num(rec->value, rec->value_len) % 5 != 0;
}

/* Per key: the values in the order they arrived, as "key:value" lines. */
static int keyed_echo(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  char *b = sl_ctx_alloc(ctx, 64);
  int n =
      snprintf(b, 64, "%.*s:%.*s", (int)rec->key_len, (const char *)rec->key,
               (int)rec->value_len, (const char *)rec->value);
  sl_record_t out = {rec->key, rec->key_len, b, (size_t)n, rec->ts};
  return sl_emit(ctx, &out);
}

static void run_held(int par, bool batch, tu_sink *sink) {
  sl_job_t *job = tu_job(par, NULL);
  static held_src h;
  memset(&h, 0, sizeof(h));
  h.batch = batch;
  sl_source_ops_t so = {.open = held_open, .poll = held_poll, .parallel = true};
  sl_process_ops_t po = {.on_element = keyed_echo};
  sl_stream_t *s = sl_source(job, "held", &so, &h);
  s = sl_filter(s, "drop5", drop_mult5, NULL);
  s = sl_map(s, "own", own_buffer_map, NULL);
  s = sl_process(sl_key_by(s, NULL, NULL), "echo", &po, NULL);
  ck_assert_int_eq(sl_sink(s, "sink", tu_sink_fn, sink), SL_OK);
  int rc = sl_job_run(job);
  ck_assert_msg(rc == SL_OK, "%s", sl_job_errmsg(job));
  sl_job_destroy(job);
}

static int cmp_line(const void *a, const void *b) {
  const tu_rec *x = a, *y = b;
  int c = strcmp(x->key, y->key);
  return c ? c : (x->ts > y->ts) - (x->ts < y->ts);
}

START_TEST(emit_batch_is_emit_of_each_record) {
  /* The model: every i not a multiple of 5, as "k<i*31%101>:v<i>". */
  static tu_rec model[HELD_N];
  size_t m = 0;
  for (uint64_t i = 0; i < HELD_N; i++) {
    if (i % 5 == 0)
      continue;
    tu_rec *r = &model[m++];
    unsigned long long k = i * 31 % 101;
    snprintf(r->key, sizeof(r->key), "k%llu", k);
    snprintf(r->value, sizeof(r->value), "k%llu:v%llu", k,
             (unsigned long long)i);
    r->ts = (int64_t)i;
  }
  for (int par = 1; par <= 2; par++) {
    for (int batch = 0; batch <= 1; batch++) {
      tu_sink sink;
      tu_sink_init(&sink);
      run_held(par, batch, &sink);
      ck_assert_uint_eq(sink.n, m);
      /* At P=1 the output is in input order; at P=2 a key's records
       * come from both workers, so the output is compared as a set. */
      if (par == 2) {
        qsort(sink.recs, sink.n, sizeof(*sink.recs), cmp_line);
        qsort(model, m, sizeof(*model), cmp_line);
      }
      for (size_t i = 0; i < m; i++) {
        ck_assert_str_eq(sink.recs[i].key, model[i].key);
        ck_assert_str_eq(sink.recs[i].value, model[i].value);
      }
      tu_sink_free(&sink);
    }
  }
}
END_TEST

/* Watermarks fall between the same records whether a source emits one by
 * one or in batches: after each poll that advanced it. */
static void held_log(bool batch, tu_log *log) {
  sl_job_t *job = tu_job(1, NULL);
  static held_src h;
  memset(&h, 0, sizeof(h));
  h.batch = batch;
  sl_source_ops_t so = {.open = held_open, .poll = held_poll};
  sl_watermark_spec_t ws = {.kind = SL_WM_BOUNDED, .bound_ms = 3};
  sl_stream_t *s = sl_with_watermarks(sl_source(job, "held", &so, &h), &ws);
  s = tu_log_op(sl_map(s, "own", own_buffer_map, NULL), "log", log);
  ck_assert_int_eq(sl_sink(s, "sink", tu_discard, NULL), SL_OK);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_job_destroy(job);
}

START_TEST(emit_batch_keeps_watermarks_between_the_same_records) {
  tu_log a, b;
  tu_log_init(&a);
  tu_log_init(&b);
  held_log(false, &a);
  held_log(true, &b);
  ck_assert_uint_eq(a.n, b.n);
  size_t wms = 0, recs = 0;
  int64_t max_ts = SL_TS_MIN;
  for (size_t i = 0; i < a.n; i++) {
    ck_assert_int_eq(a.ev[i].kind, b.ev[i].kind);
    ck_assert_int_eq(a.ev[i].ts, b.ev[i].ts);
    ck_assert_str_eq(a.ev[i].value, b.ev[i].value);
    if (a.ev[i].kind == TU_REC) {
      recs++;
      max_ts = a.ev[i].ts;
    } else if (a.ev[i].kind == TU_WM && a.ev[i].ts != SL_WATERMARK_MAX) {
      /* Each poll's watermark follows its last record. */
      ck_assert_int_eq(a.ev[i].ts, max_ts - 3 - 1);
      wms++;
    }
  }
  ck_assert_uint_eq(recs, HELD_N);
  ck_assert_uint_gt(wms, 30);
  tu_log_free(&a);
  tu_log_free(&b);
}
END_TEST

/* Under error.policy=skip, a map and a filter that take batches skip
 * exactly the records their functions failed on, in order. */
static int map_fail_mult13(sl_ctx_t *ctx, const sl_record_t *in,
                           sl_record_t *out, void *opaque) {
  (void)opaque;
  long long v = tu_num(in->value, in->value_len);
  if (v % 13 == 0)
    return -1;
  char *b = sl_ctx_alloc(ctx, 32);
  out->value_len = (size_t)snprintf(b, 32, "m%lld", v);
  out->value = b;
  return 0;
}

static int filter_fail_mult7(sl_ctx_t *ctx, const sl_record_t *rec,
                             void *opaque) {
  (void)ctx;
  (void)opaque;
  long long v = tu_num((const char *)rec->value + 1, rec->value_len - 1);
  return v % 7 == 0 ? -1 : v % 2 == 0;
}

START_TEST(batch_operators_skip_exactly_the_failing_records) {
  sl_job_t *job = tu_job(1, "skip");
  tu_sink sink;
  tu_sink_init(&sink);
  sl_generator_opts_t go = {.count = 3000, .gen = gen_num};
  sl_stream_t *s = sl_source_generator(job, "gen", &go);
  s = sl_map(s, "m13", map_fail_mult13, NULL);
  s = sl_filter(s, "f7", filter_fail_mult7, NULL);
  ck_assert_int_eq(sl_sink(s, "sink", tu_sink_fn, &sink), SL_OK);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  size_t n = 0, e13 = 0, e7 = 0;
  for (long long v = 0; v < 3000; v++) {
    if (v % 13 == 0) {
      e13++;
      continue;
    }
    if (v % 7 == 0) {
      e7++;
      continue;
    }
    if (v % 2)
      continue;
    char want[32];
    snprintf(want, sizeof(want), "m%lld", v);
    ck_assert_uint_lt(n, sink.n);
    ck_assert_str_eq(sink.recs[n].value, want);
    n++;
  }
  ck_assert_uint_eq(sink.n, n);
  sl_op_stats_t st;
  ck_assert_int_eq(sl_job_op_stats(job, "m13", &st), SL_OK);
  ck_assert_uint_eq(st.errors, e13);
  ck_assert_uint_eq(st.records_out, 3000 - e13);
  ck_assert_int_eq(sl_job_op_stats(job, "f7", &st), SL_OK);
  ck_assert_uint_eq(st.errors, e7);
  ck_assert_uint_eq(st.records_out, n);
  sl_job_destroy(job);
  tu_sink_free(&sink);
}
END_TEST

/* ---- Chains run inside the source's emit -------------------------------- */

/* The held source's three ways into a chain of maps, filters and sinks:
 * sl_source_emit() in a poll runs the chain inside the emit (the
 * operators' step), sl_source_emit_batch() hands it the array
 * (process_batch), and a source with a user watermark generator emits
 * record by record (process). Each must give the same output and the
 * same per-operator counts. */
enum { FEED_STEP, FEED_BATCH, FEED_RECORD, FEEDS };
enum { TAIL_SINK, TAIL_FLAT_MAP, TAIL_KEYED, TAIL_LONG, TAILS };
enum { LONG_MAPS = 11 }; /* more than a source's emit chains */

static int echo_fm(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)opaque;
  return sl_emit(ctx, rec);
}

/* value + 1, in scratch memory. */
static int inc_map(sl_ctx_t *ctx, const sl_record_t *in, sl_record_t *out,
                   void *opaque) {
  (void)opaque;
  char *b = sl_ctx_alloc(ctx, 24);
  out->value_len =
      (size_t)snprintf(b, 24, "%lld", tu_num(in->value, in->value_len) + 1);
  out->value = b;
  return 0;
}

static const sl_watermark_gen_t no_wm_gen = {0};

static const char *const chain_uids[] = {"drop5", "m13",  "f7",
                                         "fm",    "echo", "sink"};

static void run_chain(int par, int feed, int tail, tu_sink *sink,
                      sl_op_stats_t *st) {
  sl_job_t *job = tu_job(par, "skip");
  static held_src h;
  memset(&h, 0, sizeof(h));
  h.batch = feed == FEED_BATCH;
  sl_source_ops_t so = {.open = held_open, .poll = held_poll, .parallel = true};
  sl_stream_t *s = sl_source(job, "held", &so, &h);
  if (feed == FEED_RECORD) {
    sl_watermark_spec_t ws = {.kind = SL_WM_CUSTOM, .gen = &no_wm_gen};
    s = sl_with_watermarks(s, &ws);
  }
  if (tail == TAIL_LONG) {
    for (int k = 0; k < LONG_MAPS; k++) {
      char uid[16];
      snprintf(uid, sizeof(uid), "inc%d", k);
      s = sl_map(s, uid, inc_map, NULL);
    }
  } else {
    s = sl_filter(s, "drop5", drop_mult5, NULL);
    s = sl_map(s, "m13", map_fail_mult13, NULL);
    s = sl_filter(s, "f7", filter_fail_mult7, NULL);
    if (tail == TAIL_FLAT_MAP)
      s = sl_flat_map(s, "fm", echo_fm, NULL);
    if (tail == TAIL_KEYED) {
      sl_process_ops_t po = {.on_element = keyed_echo};
      s = sl_process(sl_key_by(s, NULL, NULL), "echo", &po, NULL);
    }
  }
  ck_assert_int_eq(sl_sink(s, "sink", tu_sink_fn, sink), SL_OK);
  int rc = sl_job_run(job);
  ck_assert_msg(rc == SL_OK, "%s", sl_job_errmsg(job));
  for (size_t i = 0; i < sizeof(chain_uids) / sizeof(*chain_uids); i++)
    if (sl_job_op_stats(job, chain_uids[i], &st[i]) != SL_OK)
      memset(&st[i], 0, sizeof(st[i]));
  sl_job_destroy(job);
}

static int cmp_value(const void *a, const void *b) {
  const tu_rec *x = a, *y = b;
  int c = strcmp(x->key, y->key);
  return c ? c : strcmp(x->value, y->value);
}

START_TEST(chain_in_the_emit_is_the_chain_of_batches_and_of_records) {
  for (int par = 1; par <= 2; par++) {
    for (int tail = 0; tail < TAILS; tail++) {
      /* The model: filtered in the source's order (every subtask's
       * records in order at P=1); the keyed tail echoes key:value. */
      size_t m = 0;
      static tu_rec model[HELD_N];
      for (long long v = 0; v < HELD_N; v++) {
        tu_rec *r = &model[m];
        memset(r, 0, sizeof(*r));
        snprintf(r->key, sizeof(r->key), "k%lld", v * 31 % 101);
        if (tail == TAIL_LONG) {
          snprintf(r->value, sizeof(r->value), "%lld", v + LONG_MAPS);
        } else {
          if (v % 5 == 0 || v % 13 == 0 || v % 7 == 0 || v % 2)
            continue;
          if (tail == TAIL_KEYED)
            snprintf(r->value, sizeof(r->value), "k%lld:m%lld", v * 31 % 101,
                     v);
          else
            snprintf(r->value, sizeof(r->value), "m%lld", v);
        }
        m++;
      }
      sl_op_stats_t st[FEEDS][6];
      for (int feed = 0; feed < FEEDS; feed++) {
        tu_sink sink;
        tu_sink_init(&sink);
        run_chain(par, feed, tail, &sink, st[feed]);
        ck_assert_msg(sink.n == m, "P=%d feed %d tail %d: %zu records, not %zu",
                      par, feed, tail, sink.n, m);
        /* Within a subtask the order is the source's; across two the
         * records interleave, and a keyed tail mixes them per key. */
        bool sorted = par == 2 || tail == TAIL_KEYED;
        if (sorted) {
          qsort(sink.recs, sink.n, sizeof(*sink.recs), cmp_value);
          qsort(model, m, sizeof(*model), cmp_value);
        }
        for (size_t i = 0; i < m; i++) {
          ck_assert_str_eq(sink.recs[i].key, model[i].key);
          ck_assert_msg(!strcmp(sink.recs[i].value, model[i].value),
                        "P=%d feed %d tail %d, record %zu: \"%s\", not \"%s\"",
                        par, feed, tail, i, sink.recs[i].value, model[i].value);
        }
        tu_sink_free(&sink);
        for (size_t k = 0; k < 6; k++) {
          ck_assert_msg(st[feed][k].records_in == st[0][k].records_in &&
                            st[feed][k].records_out == st[0][k].records_out &&
                            st[feed][k].errors == st[0][k].errors,
                        "P=%d tail %d, %s: in/out/errors %llu/%llu/%llu by "
                        "feed %d, %llu/%llu/%llu in the emit",
                        par, tail, chain_uids[k],
                        (unsigned long long)st[feed][k].records_in,
                        (unsigned long long)st[feed][k].records_out,
                        (unsigned long long)st[feed][k].errors, feed,
                        (unsigned long long)st[0][k].records_in,
                        (unsigned long long)st[0][k].records_out,
                        (unsigned long long)st[0][k].errors);
        }
      }
      if (tail != TAIL_LONG) {
        /* The counts themselves, once. */
        uint64_t n5 = HELD_N - HELD_N / 5, e13 = 0, e7 = 0;
        for (long long v = 0; v < HELD_N; v++)
          if (v % 5 && v % 13 == 0)
            e13++;
          else if (v % 5 && v % 7 == 0)
            e7++;
        ck_assert_uint_eq(st[0][0].records_in, HELD_N);
        ck_assert_uint_eq(st[0][0].records_out, n5);
        ck_assert_uint_eq(st[0][1].records_in, n5);
        ck_assert_uint_eq(st[0][1].errors, e13);
        ck_assert_uint_eq(st[0][1].records_out, n5 - e13);
        ck_assert_uint_eq(st[0][2].records_in, n5 - e13);
        ck_assert_uint_eq(st[0][2].errors, e7);
        ck_assert_uint_eq(st[0][2].records_out, m);
        ck_assert_uint_eq(st[0][5].records_in, m);
      }
    }
  }
}
END_TEST

START_TEST(emit_batch_rejects_null_records) {
  ck_assert_int_eq(sl_source_emit_batch(NULL, NULL, 0), SL_ERR_INVAL);
}
END_TEST

/* ---- Watermarks --------------------------------------------------------- */

static const int64_t ooo_ts[] = {100, 90, 150, 120, 300, 250, 260, 400, 399};

static int ooo_gen(uint64_t i, sl_record_t *out, void *opaque) {
  (void)opaque;
  out->ts = ooo_ts[i];
  out->value = "x";
  out->value_len = 1;
  return 0;
}

static sl_job_t *wm_job(int par) {
  const char *kv[] = {"source.batch.size", "1", NULL};
  return tu_job_kv(par, kv);
}

START_TEST(bounded_watermarks_follow_max_ts) {
  sl_job_t *job = wm_job(1);
  tu_log log;
  tu_log_init(&log);
  sl_generator_opts_t go = {.count = 9, .gen = ooo_gen};
  sl_watermark_spec_t spec = {.kind = SL_WM_BOUNDED, .bound_ms = 10};
  sl_stream_t *s =
      sl_with_watermarks(sl_source_generator(job, "g", &go), &spec);
  sl_sink(tu_log_op(s, "log", &log), "sink", tu_discard, NULL);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  /* After each record (one per poll) the watermark is max_ts - 11 when it
   * advanced; it never goes back; the end of input brings the maximum. */
  int64_t max = SL_TS_MIN, last_wm = SL_TS_MIN;
  size_t recs = 0;
  for (size_t i = 0; i < log.n; i++) {
    tu_event *e = &log.ev[i];
    if (e->kind == TU_REC) {
      if (e->ts > max)
        max = e->ts;
      recs++;
    } else if (e->kind == TU_WM) {
      ck_assert_int_gt(e->ts, last_wm);
      if (e->ts != SL_WATERMARK_MAX)
        ck_assert_int_eq(e->ts, max - 11);
      last_wm = e->ts;
    }
  }
  ck_assert_uint_eq(recs, 9);
  ck_assert_int_eq(log.ev[log.n - 2].kind, TU_WM);
  ck_assert_int_eq(log.ev[log.n - 2].ts, SL_WATERMARK_MAX);
  ck_assert_int_eq(log.ev[log.n - 1].kind, TU_END);
  /* 100,90 -> 89; 150 -> 139; 120 no change; 300 -> 289; 250,260 no
   * change; 400 -> 389; 399 no change; then MAX. */
  int64_t want[] = {89, 139, 289, 389, SL_WATERMARK_MAX};
  size_t w = 0;
  for (size_t i = 0; i < log.n; i++)
    if (log.ev[i].kind == TU_WM) {
      ck_assert_uint_lt(w, 5);
      ck_assert_int_eq(log.ev[i].ts, want[w++]);
    }
  ck_assert_uint_eq(w, 5);
  sl_job_destroy(job);
  tu_log_free(&log);
}
END_TEST

/* An operator that emits a record from on_watermark: it must reach
 * downstream before the watermark that caused it. */
static int fire_process(sl_ctx_t *op, int port, const sl_record_t *rec) {
  (void)port;
  (void)rec;
  (void)op;
  return 0;
}
static int fire_wm(sl_ctx_t *op, int64_t wm) {
  char b[32];
  int n = snprintf(b, sizeof(b), "fired@%lld", (long long)wm);
  sl_record_t r = {NULL, 0, b, (size_t)n, wm};
  return sl_emit(op, &r);
}
static const sl_operator_ops_t fire_ops = {
    .kind = "fire", .process = fire_process, .on_watermark = fire_wm};

START_TEST(watermark_outputs_precede_watermark) {
  sl_job_t *job = wm_job(2);
  tu_log log;
  tu_log_init(&log);
  sl_generator_opts_t go = {.count = 9, .gen = ooo_gen};
  sl_watermark_spec_t spec = {.kind = SL_WM_BOUNDED, .bound_ms = 10};
  sl_stream_t *s =
      sl_with_watermarks(sl_source_generator(job, "g", &go), &spec);
  s = sl_key_by(s, NULL, NULL);
  sl_stream_t *f = sl_op_add(&s, 1, "fire", &fire_ops, NULL, false);
  sl_sink(tu_log_op(f, "log", &log), "sink", tu_discard, NULL);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  /* Per worker instance of "log", every W is preceded by its fired@ R;
   * the log is shared, so check pairs by value: each watermark's record
   * appears earlier in the log. */
  size_t wms = 0;
  for (size_t i = 0; i < log.n; i++) {
    if (log.ev[i].kind != TU_WM)
      continue;
    wms++;
    char want[32];
    snprintf(want, sizeof(want), "fired@%lld", (long long)log.ev[i].ts);
    bool found = false;
    for (size_t j = 0; j < i && !found; j++)
      found = log.ev[j].kind == TU_REC && strcmp(log.ev[j].value, want) == 0;
    ck_assert_msg(found, "watermark %lld forwarded before its output",
                  (long long)log.ev[i].ts);
  }
  /* Both workers see the watermarks, though only worker 0 has the source. */
  size_t maxes = 0;
  for (size_t i = 0; i < log.n; i++)
    maxes += log.ev[i].kind == TU_WM && log.ev[i].ts == SL_WATERMARK_MAX;
  ck_assert_uint_eq(maxes, 2);
  ck_assert_uint_ge(wms, 4);
  sl_job_destroy(job);
  tu_log_free(&log);
}
END_TEST

/* Idleness: source "busy" emits slowly; source "quiet" never emits and
 * moves a manual clock on each empty poll. */
typedef struct idle_ctx {
  sl_clock_t *clock;
  _Atomic int busy_done;
  int busy_next;
  /* After going idle, emit one record (1) or an array of three with
   * sl_source_emit_batch (2), timestamps 7, 5, 6. */
  int quiet_late_record;
  int quiet_polls;
} idle_ctx;

static int busy_poll(sl_source_ctx_t *ctx, void *opaque) {
  idle_ctx *ic = opaque;
  if (ic->busy_next >= 200) {
    atomic_store(&ic->busy_done, 1);
    return SL_POLL_END;
  }
  sl_record_t r = {NULL, 0, "b", 1, 1000 + ic->busy_next * 10};
  ic->busy_next++;
  return sl_source_emit(ctx, &r);
}

static int quiet_poll(sl_source_ctx_t *ctx, void *opaque) {
  idle_ctx *ic = opaque;
  sl_clock_advance(ic->clock, 10);
  if (ic->quiet_late_record && ++ic->quiet_polls == 100) {
    sl_record_t r[3] = {
        {NULL, 0, "q1", 2, 7}, {NULL, 0, "q2", 2, 5}, {NULL, 0, "q3", 2, 6}};
    int rc = ic->quiet_late_record == 2 ? sl_source_emit_batch(ctx, r, 3)
                                        : sl_source_emit(ctx, &r[1]);
    return rc ? rc : SL_POLL_MORE;
  }
  return atomic_load(&ic->busy_done) ? SL_POLL_END : SL_POLL_EMPTY;
}

static void run_idle(int64_t timeout, int late, tu_log *log) {
  sl_job_t *job = wm_job(1);
  idle_ctx ic = {.clock = sl_clock_new_manual(0), .quiet_late_record = late};
  sl_job_set_clock(job, ic.clock);
  sl_source_ops_t busy = {.poll = busy_poll}, quiet = {.poll = quiet_poll};
  sl_watermark_spec_t spec = {.kind = SL_WM_MONOTONOUS,
                              .idle_timeout_ms = timeout};
  sl_stream_t *in[2] = {
      sl_with_watermarks(sl_source(job, "busy", &busy, &ic), &spec),
      sl_with_watermarks(sl_source(job, "quiet", &quiet, &ic), &spec)};
  sl_sink(tu_log_op(sl_union(in, 2, "union"), "log", log), "sink", tu_discard,
          NULL);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_job_destroy(job);
  sl_clock_destroy(ic.clock);
}

START_TEST(idle_input_does_not_hold_watermark) {
  tu_log log;
  tu_log_init(&log);
  run_idle(100, 0, &log);
  size_t mid = 0;
  for (size_t i = 0; i < log.n; i++)
    mid += log.ev[i].kind == TU_WM && log.ev[i].ts != SL_WATERMARK_MAX;
  ck_assert_uint_gt(mid, 100);
  tu_log_free(&log);
}
END_TEST

START_TEST(without_idleness_watermark_waits) {
  tu_log log;
  tu_log_init(&log);
  run_idle(0, 0, &log);
  for (size_t i = 0; i < log.n; i++)
    if (log.ev[i].kind == TU_WM)
      ck_assert_int_eq(log.ev[i].ts, SL_WATERMARK_MAX);
  tu_log_free(&log);
}
END_TEST

/* late: 1 for one record, 2 for an array of records (quiet_poll). */
static void check_reactivated(int late) {
  tu_log log;
  tu_log_init(&log);
  run_idle(100, late, &log);
  int64_t last = SL_TS_MIN;
  size_t saw_q = 0;
  size_t wms_after_q = 0;
  for (size_t i = 0; i < log.n; i++) {
    if (log.ev[i].kind == TU_REC && log.ev[i].value[0] == 'q') {
      /* In the order emitted: q2 alone, or q1 q2 q3. */
      char want[3] = {'q', (char)('1' + (late == 2 ? saw_q : 1)), 0};
      ck_assert_str_eq(log.ev[i].value, want);
      saw_q++;
    }
    if (log.ev[i].kind != TU_WM)
      continue;
    ck_assert_int_gt(log.ev[i].ts, last);
    last = log.ev[i].ts;
    wms_after_q += saw_q && last != SL_WATERMARK_MAX;
  }
  ck_assert_uint_eq(saw_q, late == 2 ? 3 : 1);
  /* The late record made the quiet input active at watermark 4 (6 for
   * the array, whose highest timestamp is 7), below the union's: the
   * union's watermark held still (never regressed) until the quiet input
   * went idle again, then followed the busy one. */
  ck_assert_uint_gt(wms_after_q, 0);
  tu_log_free(&log);
}

START_TEST(record_reactivates_idle_input_watermark_never_regresses) {
  check_reactivated(1);
}
END_TEST

START_TEST(record_array_reactivates_idle_input) {
  check_reactivated(2);
}
END_TEST

/* ---- Error policy ------------------------------------------------------- */

static int fail_on_mult_of_100(sl_ctx_t *ctx, const sl_record_t *in,
                               sl_record_t *out, void *opaque) {
  (void)ctx;
  (void)out;
  (void)opaque;
  return tu_num(in->value, in->value_len) % 100 == 42 ? -1 : 0;
}

START_TEST(user_error_fails_job_with_context) {
  sl_job_t *job = tu_job(2, "fail");
  static numgen g = {.keys = 10};
  sl_generator_opts_t go = {.count = 1000, .gen = gen_num, .opaque = &g};
  sl_stream_t *s = sl_key_by(sl_source_generator(job, "gen", &go), NULL, NULL);
  sl_sink(sl_map(s, "mapper", fail_on_mult_of_100, NULL), "sink", tu_discard,
          NULL);
  ck_assert_int_eq(sl_job_run(job), SL_ERR_USER);
  const char *msg = sl_job_errmsg(job);
  ck_assert_msg(strstr(msg, "\"mapper\"") && strstr(msg, "42\"") &&
                    strstr(msg, "ts=") && strstr(msg, "key=\"k"),
                "message lacks context: %s", msg);
  sl_job_destroy(job);
}
END_TEST

START_TEST(user_error_skipped_and_counted) {
  sl_job_t *job = tu_job(2, "skip");
  static numgen g = {.keys = 10};
  tu_sink sink;
  tu_sink_init(&sink);
  sl_generator_opts_t go = {.count = 1000, .gen = gen_num, .opaque = &g};
  sl_stream_t *s = sl_key_by(sl_source_generator(job, "gen", &go), NULL, NULL);
  sl_sink(sl_map(s, "mapper", fail_on_mult_of_100, NULL), "sink", tu_sink_fn,
          &sink);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_op_stats_t st;
  sl_job_op_stats(job, "mapper", &st);
  ck_assert_uint_eq(st.errors, 10);
  ck_assert_uint_eq(sink.n, 990);
  sl_job_destroy(job);
  tu_sink_free(&sink);
}
END_TEST

/* ---- Stop --------------------------------------------------------------- */

static sl_job_t *stop_target;
static _Atomic uint64_t stop_seen;

static void on_usr1(int sig) {
  (void)sig;
  sl_job_stop(stop_target);
}

static int stop_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)rec;
  uint64_t n = atomic_fetch_add(&stop_seen, 1) + 1;
  if (opaque && n == 300000)
    raise(SIGUSR1);
  return 0;
}

static void *stopper(void *arg) {
  while (atomic_load(&stop_seen) < 300000)
    usleep(1000);
  sl_job_stop(arg);
  return NULL;
}

static void run_unbounded(bool by_signal) {
  sl_job_t *job = tu_job(2, NULL);
  static numgen g = {.keys = 1000};
  atomic_store(&stop_seen, 0);
  stop_target = job;
  sl_generator_opts_t go = {
      .count = 0, .gen = gen_num, .opaque = &g, .parallel = true};
  sl_watermark_spec_t wm = {.kind = SL_WM_MONOTONOUS};
  sl_stream_t *s =
      sl_key_by(sl_with_watermarks(sl_source_generator(job, "gen", &go), &wm),
                NULL, NULL);
  sl_sink(s, "sink", stop_sink, by_signal ? &g : NULL);
  pthread_t t;
  if (by_signal)
    signal(SIGUSR1, on_usr1);
  else
    pthread_create(&t, NULL, stopper, job);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  if (!by_signal)
    pthread_join(t, NULL);
  /* Everything read before the stop was processed. */
  sl_op_stats_t src, snk;
  sl_job_op_stats(job, "gen", &src);
  sl_job_op_stats(job, "sink", &snk);
  ck_assert_uint_ge(snk.records_in, 300000);
  ck_assert_uint_eq(snk.records_in, src.records_out);
  /* Watermarks flowed, but a stop is not the end of the input: the
   * maximum watermark (which would fire every window) was never sent. */
  ck_assert_int_gt(snk.watermark, SL_TS_MIN);
  ck_assert_int_ne(snk.watermark, SL_WATERMARK_MAX);
  sl_job_destroy(job);
}

START_TEST(stop_under_load_from_thread) {
  run_unbounded(false);
}
END_TEST

START_TEST(stop_under_load_from_signal_handler) {
  run_unbounded(true);
}
END_TEST

/* ---- Backpressure -------------------------------------------------------- */

typedef struct bp {
  sl_job_t *job;
  uint64_t max_inflight;
  uint64_t seen;
} bp;

static int slow_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)rec;
  bp *b = opaque;
  if (sl_ctx_worker(ctx) != 1)
    return 0;
  for (volatile int i = 0; i < 2000; i++) {
  }
  if (++b->seen % 64 == 0) {
    sl_op_stats_t src, snk;
    sl_job_op_stats(b->job, "gen", &src);
    sl_job_op_stats(b->job, "sink", &snk);
    /* The source counts a batch once it has handed all of it on, so the
     * sink, which may take a channel batch of it whole, can be counted
     * ahead of it for a moment: that reading says nothing of the
     * backlog. */
    int64_t inflight = (int64_t)(src.records_out - snk.records_in);
    if (inflight > 0 && (uint64_t)inflight > b->max_inflight)
      b->max_inflight = (uint64_t)inflight;
  }
  return 0;
}

START_TEST(slow_sink_backpressures_bounded_memory) {
  const char *kv[] = {"channel.capacity",  "4",   "batch.size", "64",
                      "source.batch.size", "128", NULL};
  sl_job_t *job = tu_job_kv(2, kv);
  static numgen g = {.keys = 1000};
  bp b = {.job = job};
  sl_generator_opts_t go = {.count = 100000, .gen = gen_num, .opaque = &g};
  sl_stream_t *s = sl_key_by(sl_source_generator(job, "gen", &go), NULL, NULL);
  sl_sink(s, "sink", slow_sink, &b);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_op_stats_t snk;
  sl_job_op_stats(job, "sink", &snk);
  ck_assert_uint_eq(snk.records_in, 100000);
  /* Channel ring (4 batches of 64) + the open batch + the batch being
   * consumed + one source poll: the source never runs further ahead. */
  ck_assert_uint_le(b.max_inflight, 4 * 64 + 64 + 64 + 128);
  ck_assert_uint_gt(b.max_inflight, 64); /* the test did fill the channel */
  sl_job_destroy(job);
}
END_TEST

static int count_sink(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)rec;
  (void)opaque;
  return 0;
}

/* Both workers produce into each other's full channels at once: each
 * producer must keep consuming its own inputs of the same exchange while
 * it waits, or the two wait for each other forever. */
START_TEST(cross_traffic_on_full_channels_does_not_deadlock) {
  const char *kv[] = {"channel.capacity",  "2",   "batch.size", "16",
                      "source.batch.size", "256", NULL};
  sl_job_t *job = tu_job_kv(2, kv);
  static numgen g = {.keys = 1000};
  sl_generator_opts_t go = {
      .count = 200000, .gen = gen_num, .opaque = &g, .parallel = true};
  sl_stream_t *s = sl_key_by(sl_source_generator(job, "gen", &go), NULL, NULL);
  s = sl_key_by(sl_map(s, "m", double_map, NULL), NULL, NULL);
  sl_sink(s, "sink", count_sink, NULL);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  sl_op_stats_t snk;
  sl_job_op_stats(job, "sink", &snk);
  ck_assert_uint_eq(snk.records_in, 200000);
  sl_job_destroy(job);
}
END_TEST

/* ---- Graph validation --------------------------------------------------- */

static const sl_operator_ops_t keyed_ops = {
    .kind = "keyed", .keyed = true, .process = tu_log_process};

START_TEST(bad_graphs_are_rejected_clearly) {
  sl_generator_opts_t go = {.count = 1, .gen = gen_num};
  /* duplicate uid */
  sl_job_t *job = tu_job(1, NULL);
  sl_stream_t *s = sl_source_generator(job, "x", &go);
  ck_assert_ptr_null(sl_map(s, "x", double_map, NULL));
  ck_assert_ptr_nonnull(strstr(sl_job_errmsg(job), "duplicate uid \"x\""));
  ck_assert_int_eq(sl_job_run(job), SL_ERR_GRAPH);
  sl_job_destroy(job);
  /* keyed operator without key_by */
  job = tu_job(1, NULL);
  s = sl_source_generator(job, "g", &go);
  ck_assert_ptr_null(sl_op_add(&s, 1, "k", &keyed_ops, NULL, false));
  ck_assert_ptr_nonnull(strstr(sl_job_errmsg(job), "not keyed"));
  ck_assert_int_eq(sl_job_run(job), SL_ERR_GRAPH);
  sl_job_destroy(job);
  /* keyed operator that cannot take the exchange's batches */
  job = tu_job(1, NULL);
  s = sl_key_by(sl_source_generator(job, "g", &go), NULL, NULL);
  ck_assert_ptr_null(sl_op_add(&s, 1, "k", &keyed_ops, NULL, false));
  ck_assert_ptr_nonnull(
      strstr(sl_job_errmsg(job), "has no process_keyed callback"));
  ck_assert_int_eq(sl_job_run(job), SL_ERR_GRAPH);
  sl_job_destroy(job);
  /* missing sink */
  job = tu_job(1, NULL);
  sl_map(sl_source_generator(job, "g", &go), "m", double_map, NULL);
  ck_assert_int_eq(sl_job_run(job), SL_ERR_GRAPH);
  ck_assert_ptr_nonnull(strstr(sl_job_errmsg(job), "no sink"));
  sl_job_destroy(job);
  /* no source */
  job = tu_job(1, NULL);
  ck_assert_int_eq(sl_job_run(job), SL_ERR_GRAPH);
  ck_assert_ptr_nonnull(strstr(sl_job_errmsg(job), "no source"));
  sl_job_destroy(job);
  /* NULL function; NULL propagates without crashing */
  job = tu_job(1, NULL);
  s = sl_map(sl_source_generator(job, "g", &go), "m", NULL, NULL);
  ck_assert_ptr_null(s);
  ck_assert_int_eq(
      sl_sink(sl_filter(s, "f", keep_mult4, NULL), "s", tu_discard, NULL),
      SL_ERR_INVAL);
  ck_assert_int_eq(sl_job_run(job), SL_ERR_INVAL);
  sl_job_destroy(job);
  /* parallelism > max.parallelism */
  char err[256];
  sl_conf_t *c = sl_conf_new();
  sl_conf_set(c, "parallelism", "8", err, sizeof(err));
  sl_conf_set(c, "max.parallelism", "4", err, sizeof(err));
  ck_assert_ptr_null(sl_job_new("j", c, err, sizeof(err)));
  ck_assert_ptr_nonnull(strstr(err, "max.parallelism"));
  sl_conf_destroy(c);
  sl_job_destroy(NULL);
}
END_TEST

static int add_during_run(sl_ctx_t *ctx, const sl_record_t *rec, void *opaque) {
  (void)ctx;
  (void)rec;
  sl_stream_t **s = opaque;
  if (*s && sl_map(*s, "late", double_map, NULL) == NULL)
    *s = NULL; /* refused, as it must be */
  return 0;
}

START_TEST(job_cannot_change_after_start) {
  sl_job_t *job = tu_job(1, NULL);
  sl_generator_opts_t go = {.count = 3, .gen = gen_num};
  sl_stream_t *s = sl_source_generator(job, "g", &go);
  sl_stream_t *probe = s;
  sl_sink(s, "sink", add_during_run, &probe);
  ck_assert_int_eq(sl_job_run(job), SL_OK);
  ck_assert_ptr_null(probe);
  ck_assert_ptr_null(sl_filter(s, "after", keep_mult4, NULL));
  ck_assert_ptr_nonnull(strstr(sl_job_errmsg(job), "already started"));
  ck_assert_int_eq(sl_sink(s, "late-sink", tu_discard, NULL), SL_ERR_STATE);
  ck_assert_int_eq(sl_job_run(job), SL_ERR_STATE);
  sl_job_destroy(job);
}
END_TEST

int main(void) {
  Suite *s = suite_create("pipeline");
  TCase *tc = tcase_create("runtime");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, chain_map_filter_sink);
  tcase_add_test(tc, flat_map_and_side_output);
  tcase_add_test(tc, union_of_two_sources);
  tcase_add_test(tc, union_uid_is_checked_like_any_other);
  tcase_add_test(tc, p1_p2_same_per_key_results);
  tcase_add_test(tc, parallel_source_through_exchange);
  tcase_add_test(tc, key_by_places_keys_at_any_parallelism);
  tcase_add_test(tc, large_records_through_keyed_batches);
  tcase_add_test(tc, short_records_of_every_length_cross_intact);
  tcase_add_test(tc, key_function_keys_in_its_own_buffer_survive_batches);
  tcase_add_test(tc, map_output_in_its_own_buffer_survives_batches);
  tcase_add_test(tc, map_output_larger_than_its_buffer_survives_batches);
  tcase_add_test(tc, emit_batch_is_emit_of_each_record);
  tcase_add_test(tc, emit_batch_keeps_watermarks_between_the_same_records);
  tcase_add_test(tc, batch_operators_skip_exactly_the_failing_records);
  tcase_add_test(tc, chain_in_the_emit_is_the_chain_of_batches_and_of_records);
  tcase_add_test(tc, emit_batch_rejects_null_records);
  tcase_add_test(tc, bounded_watermarks_follow_max_ts);
  tcase_add_test(tc, watermark_outputs_precede_watermark);
  tcase_add_test(tc, idle_input_does_not_hold_watermark);
  tcase_add_test(tc, without_idleness_watermark_waits);
  tcase_add_test(tc, record_reactivates_idle_input_watermark_never_regresses);
  tcase_add_test(tc, record_array_reactivates_idle_input);
  tcase_add_test(tc, user_error_fails_job_with_context);
  tcase_add_test(tc, user_error_skipped_and_counted);
  tcase_add_test(tc, stop_under_load_from_thread);
  tcase_add_test(tc, stop_under_load_from_signal_handler);
  tcase_add_test(tc, slow_sink_backpressures_bounded_memory);
  tcase_add_test(tc, cross_traffic_on_full_channels_does_not_deadlock);
  tcase_add_test(tc, bad_graphs_are_rejected_clearly);
  tcase_add_test(tc, job_cannot_change_after_start);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
